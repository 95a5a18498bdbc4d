"""Rasteret 0.4.1 compatibility, both directions, with Rasteret itself run in its own venv.

- Rasteret -> us: collections built and exported by Rasteret load with ``rasteret_dask.load``; every
  ``{band}_metadata`` becomes a header equal to our parser's on Rasteret's fields, and windowed reads
  driven by it equal rasterio's.
- us -> Rasteret: collections built and exported by us load with ``rasteret.load``; its ``get_numpy``
  and ``sample_points`` return rasterio's pixels, so our extra struct fields do not disturb it.
- Planar-separate and chunky 4-band GTiffs mapped as four bands (band_index 0..3), both ways.
- Older Rasteret files (``width``/``height``, no fields from ``nodata`` on) load and read.

Rasteret is driven through ``tests/compat/run_rasteret.py`` (see ``rasteret_env.py``). Oracles:
``read_cog_header`` for headers (itself tested against GDAL/tifffile elsewhere), rasterio for pixels.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
import rasterio.mask
import shapely
from pyproj import Transformer
from rasterio.transform import from_origin
from rasterio.windows import Window

import rasteret_dask as rd
from rasteret_dask.cog import CogHeader
from rasteret_dask.tiff.arrow import RASTERET_FIELDS, dict_to_header
from rasteret_dask.tiff.model import TiffHeader
from tests.compat import rasteret_env
from tests.scenes import footprint_lonlat, make_scenes

BANDS = ("B02", "B04")
MULTI_BANDS = ("b1", "b2", "b3", "b4")
CASES = ("scenes", "planar", "chunky")
# Older Rasteret files had no samples_per_pixel: chunky multi-band files never worked with them.
LEGACY_CASES = ("scenes", "planar")
ASSET_TYPE = pa.struct([("href", pa.string()), ("band_index", pa.int64())])
# Fields from nodata on are missing in older Rasteret files.
_RASTERET_NAMES = [f.name for f in RASTERET_FIELDS]
LEGACY_DROPPED = _RASTERET_NAMES[_RASTERET_NAMES.index("nodata") :]
# Windows ((row_start, row_stop), (col_start, col_stop)) as fractions of the raster: whole, across
# tile edges, the bottom-right partial tiles, one row.
WINDOWS = (
    ((0.0, 1.0), (0.0, 1.0)),
    ((0.15, 0.71), (0.23, 0.98)),
    ((0.97, 1.0), (0.96, 1.0)),
    ((0.5, 0.505), (0.0, 1.0)),
)


@dataclass
class Case:
    """One collection's records: rows with shapely CRS84 footprints and their record table file."""

    name: str
    rows: list[dict]
    bands: tuple[str, ...]
    table: Path


@pytest.fixture(scope="module")
def rasteret_python() -> Path:
    try:
        return rasteret_env.rasteret_python()
    except rasteret_env.RasteretUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Rasteret compatibility tests need Rasteret in CI: {exc}")
        pytest.skip(f"Rasteret is not available: {exc}")


def _run(python: Path, jobs: list[dict]) -> list[dict]:
    results = rasteret_env.run_jobs(python, jobs)
    failed = [r for r in results if "error" in r]
    if failed:
        pytest.fail(f"Rasteret failed: {failed[0]['error']}\n{failed[0]['stderr']}")
    return results


def _records_table(rows: list[dict], bands: tuple[str, ...]) -> pa.Table:
    return pa.table(
        {
            "id": pa.array([r["id"] for r in rows], pa.string()),
            "datetime": pa.array([r["datetime"] for r in rows], pa.timestamp("us", tz="UTC")),
            "geometry": pa.array(shapely.to_wkb([r["geometry"] for r in rows]), pa.binary()),
            "assets": pa.array([r["assets"] for r in rows], pa.struct([(b, ASSET_TYPE) for b in bands])),
            "eo:cloud_cover": pa.array([r["eo:cloud_cover"] for r in rows], pa.float64()),
            "proj:epsg": pa.array([r["proj:epsg"] for r in rows], pa.int32()),
        }
    )


def _write_multiband(path: Path, record_id: str, interleave: str, width: int, height: int) -> dict:
    """A tiled GTiff with 4 uint16 bands, INTERLEAVE=BAND (planar separate) or PIXEL (chunky); its record."""
    epsg = 32632
    transform = from_origin(702_013.0, 5_345_007.0, 20.0, 20.0)
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:height, 0:width]
    data = np.stack(
        [
            (
                500
                + 300 * b
                + 200 * np.sin((xx + 11 * b) / 13.0) * np.cos(yy / 17.0)
                + rng.integers(0, 40, xx.shape)
            )
            for b in range(4)
        ]
    ).astype("uint16")
    data[:, :, :9] = 0  # nodata along the west edge
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 4,
        "dtype": "uint16",
        "crs": f"EPSG:{epsg}",
        "transform": transform,
        "nodata": 0,
        "tiled": True,
        "blockxsize": 128,
        "blockysize": 128,
        "interleave": interleave,
        "compress": "deflate",
        "predictor": 2,
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    with rasterio.open(path) as ds:
        assert ds.interleaving.value.lower() == interleave and ds.block_shapes[0] == (128, 128)
    return {
        "id": record_id,
        "datetime": pd.Timestamp("2024-06-03T10:30:00Z"),
        "geometry": footprint_lonlat(epsg, transform, width, height),
        "assets": {band: {"href": str(path), "band_index": i} for i, band in enumerate(MULTI_BANDS)},
        "eo:cloud_cover": 12.5,
        "proj:epsg": epsg,
    }


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, Case]:
    root = tmp_path_factory.mktemp("compat")
    scenes = make_scenes(root / "scenes", dates=2, bands=BANDS, size=256, blocksize=128)
    scene_rows = [
        {
            "id": row["id"],
            "datetime": row["datetime"],
            "geometry": row["geometry"],
            "assets": {band: {"href": row[f"{band}_href"], "band_index": None} for band in BANDS},
            "eo:cloud_cover": row["eo:cloud_cover"],
            "proj:epsg": int(row["proj:epsg"]),
        }
        for _, row in scenes.iterrows()
    ]
    planar_rows = [_write_multiband(root / "planar.tif", "P0", "band", 300, 200)]
    chunky_rows = [_write_multiband(root / "chunky.tif", "C0", "pixel", 270, 190)]
    out = {}
    for name, rows, bands in (
        ("scenes", scene_rows, BANDS),
        ("planar", planar_rows, MULTI_BANDS),
        ("chunky", chunky_rows, MULTI_BANDS),
    ):
        table = root / f"{name}.parquet"
        pq.write_table(_records_table(rows, bands), table)
        out[name] = Case(name, rows, bands, table)
    return out


@pytest.fixture(scope="module")
def rasteret_exports(rasteret_python, cases, tmp_path_factory) -> dict[str, Path]:
    """Each case built (COG headers enriched) and exported by Rasteret."""
    root = tmp_path_factory.mktemp("by_rasteret")
    jobs = [
        {
            "command": "build",
            "table": str(case.table),
            "workspace": str(root / f"{case.name}_workspace"),
            "export": str(root / f"{case.name}_export"),
        }
        for case in cases.values()
    ]
    results = _run(rasteret_python, jobs)
    for case, result in zip(cases.values(), results, strict=True):
        assert result["records"] == len(case.rows)
        assert sorted(result["bands"]) == sorted(case.bands)
        assert result["export_files"], f"Rasteret wrote no files for {case.name}"
    return {case.name: root / f"{case.name}_export" for case in cases.values()}


@pytest.fixture(scope="module")
def our_exports(cases, tmp_path_factory) -> dict[str, Path]:
    """Each case built and exported by rasteret_dask."""
    root = tmp_path_factory.mktemp("by_us")
    out = {}
    for case in cases.values():
        collection = rd.build_from_table(str(case.table), progress=False)
        assert collection.build_report.failed_total == 0, str(collection.build_report)
        out[case.name] = Path(collection.export(str(root / case.name)))
    return out


def _legacy_copy(source: Path, target: Path) -> Path:
    """Rewrite a Rasteret export as older Rasteret wrote it: ``width``/``height``, no fields from nodata."""
    for path in sorted(source.rglob("*.parquet")):
        table = pq.read_table(path, partitioning=None)
        for i, field in enumerate(table.schema):
            if not field.name.endswith("_metadata"):
                continue
            column = table.column(i).combine_chunks()
            names = [f.name for f in field.type]
            kept = [n for n in names if n not in LEGACY_DROPPED]
            renamed = [{"image_width": "width", "image_height": "height"}.get(n, n) for n in kept]
            legacy = pa.StructArray.from_arrays(
                [column.field(n) for n in kept], names=renamed, mask=column.is_null()
            )
            table = table.set_column(i, field.name, legacy)
        out = target / path.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, out, compression="zstd")
    return target


@pytest.fixture(scope="module")
def legacy_exports(rasteret_exports, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("legacy")
    return {name: _legacy_copy(rasteret_exports[name], root / name) for name in LEGACY_CASES}


# ---------------------------------------------------------------- helpers


def _loaded(path: Path) -> pd.DataFrame:
    frame = rd.load(str(path)).frame.compute()
    return frame.sort_values("id").reset_index(drop=True)


def _structs(frame: pd.DataFrame, column: str) -> list[dict | None]:
    return pa.array(frame[column].array).to_pylist()


def _same_float(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return (math.isnan(a) and math.isnan(b)) or a == b


def _assert_rasteret_fields_equal(got: TiffHeader, want: TiffHeader, plane: int | None, legacy: bool) -> None:
    """``got`` (from a Rasteret struct holding ``plane``'s tiles) equals ``want`` on Rasteret's fields."""
    g, w = got.levels[0], want.levels[0]
    assert (g.width, g.height) == (w.width, w.height)
    assert (g.tile_width, g.tile_height) == (w.tile_width, w.tile_height)
    assert got.dtype == want.dtype
    assert got.geo.transform == want.geo.transform
    assert got.geo.pixel_scale == want.geo.pixel_scale
    assert got.geo.tiepoint == want.geo.tiepoint
    assert (g.codec.compression, g.codec.predictor) == (w.codec.compression, w.codec.predictor)
    tiles = slice(None)
    if plane is not None and want.planar_configuration == 2:
        per_plane = w.tiles_across * w.tiles_down
        tiles = slice(plane * per_plane, (plane + 1) * per_plane)
    assert g.tile_offsets.tolist() == w.tile_offsets[tiles].tolist()
    assert g.tile_byte_counts.tolist() == w.tile_byte_counts[tiles].tolist()
    if legacy:  # Rasteret's defaults for files without these fields
        assert got.nodata is None
        assert (got.samples_per_pixel, got.planar_configuration) == (1, 1)
    else:
        assert _same_float(got.nodata, want.nodata)
        assert got.samples_per_pixel == want.samples_per_pixel
        assert got.planar_configuration == want.planar_configuration
        assert got.photometric == want.photometric
        assert got.extra_samples == want.extra_samples


def _pixel_window(fractions, width: int, height: int) -> tuple[tuple[int, int], tuple[int, int]]:
    (r0, r1), (c0, c1) = fractions
    rows = (int(r0 * height), max(int(r0 * height) + 1, int(r1 * height)))
    cols = (int(c0 * width), max(int(c0 * width) + 1, int(c1 * width)))
    return rows, cols


def _assert_reads_match_rasterio(url: str, header: TiffHeader, band_index: int | None) -> None:
    """Windowed reads through ``CogHeader(url, header)`` equal rasterio's reads of the band."""
    reader = CogHeader(url, header)
    for fractions in WINDOWS:
        window = _pixel_window(fractions, header.width, header.height)
        ours = reader.read(window=window)
        with rasterio.open(url) as ds:
            want = ds.read((band_index or 0) + 1, window=Window.from_slices(*window))
        if header.planar_configuration == 1 and header.samples_per_pixel > 1:
            ours = ours[band_index : band_index + 1]  # a chunky header reads every sample
        assert ours.shape == (1, *want.shape), (url, window)
        np.testing.assert_array_equal(ours[0], want, err_msg=f"{url} window {window}")


def _aois(href: str) -> list[shapely.Polygon]:
    """AOIs in CRS84 for the raster at ``href``: inside across tile edges, over the west edge, over the
    south-east corner. Vertices sit off pixel edges, so floor/ceil never hinge on rounding."""
    with rasterio.open(href) as ds:
        t, w, h, crs = ds.transform, ds.width, ds.height, ds.crs
    shapes = [
        [(100.37, 90.41), (170.73, 112.29), (150.61, 177.83), (95.19, 160.57)],
        [(-10.3, 40.7), (30.6, 20.2), (25.4, 140.9)],
        [(w - 40.3, h - 30.6), (w + 25.2, h - 35.1), (w + 20.7, h + 15.3), (w - 45.9, h + 10.8)],
    ]
    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    out = []
    for ring in shapes:
        xs, ys = zip(*(t @ vertex for vertex in ring), strict=True)
        lon, lat = to_lonlat.transform(xs, ys)
        out.append(shapely.Polygon(np.column_stack([lon, lat])))
    return out


def _rasterio_chip(href: str, aoi_lonlat: shapely.Polygon, band_index: int | None) -> np.ndarray:
    """rasterio.mask.mask(crop=True, filled=True) with the AOI's vertices taken to the raster's CRS, as
    Rasteret's get_numpy does (no densification)."""
    with rasterio.open(href) as ds:
        to_raster = Transformer.from_crs("EPSG:4326", ds.crs, always_xy=True)
        ring = np.asarray(aoi_lonlat.exterior.coords)
        x, y = to_raster.transform(ring[:, 0], ring[:, 1])
        shape = {"type": "Polygon", "coordinates": [list(zip(x, y, strict=True))]}
        data, _ = rasterio.mask.mask(ds, [shape], crop=True, filled=True, indexes=(band_index or 0) + 1)
    return data


# ---------------------------------------------------------------- Rasteret -> us


@pytest.mark.parametrize("name", CASES)
def test_rasteret_collection_loads_with_our_records(name, cases, rasteret_exports):
    case = cases[name]
    frame = _loaded(rasteret_exports[name])
    rows = sorted(case.rows, key=lambda r: r["id"])
    assert frame["id"].tolist() == [r["id"] for r in rows]
    assert frame["datetime"].tolist() == [r["datetime"] for r in rows]
    assert frame["datetime"].dt.tz is not None
    for geometry, row in zip(frame.geometry, rows, strict=True):
        assert shapely.equals_exact(geometry, row["geometry"], 0.0)
    assert _structs(frame, "assets") == [r["assets"] for r in rows]
    assert frame["proj:epsg"].tolist() == [r["proj:epsg"] for r in rows]
    assert frame["crs"].tolist() == [f"EPSG:{r['proj:epsg']}" for r in rows]


@pytest.mark.parametrize("name", CASES)
def test_rasteret_headers_convert_and_read(name, cases, rasteret_exports):
    case = cases[name]
    frame = _loaded(rasteret_exports[name])
    checked = 0
    for assets, row_index in zip(_structs(frame, "assets"), range(len(frame)), strict=True):
        for band in case.bands:
            struct = _structs(frame, f"{band}_metadata")[row_index]
            href, band_index = assets[band]["href"], assets[band]["band_index"]
            header = dict_to_header(struct, band_index)
            want = rd.read_cog_header(href).tiff
            _assert_rasteret_fields_equal(header, want, band_index, legacy=False)
            with rasterio.open(href) as ds:
                assert header.geo.transform == tuple(ds.transform)[:6]
            _assert_reads_match_rasterio(href, header, band_index)
            checked += 1
    assert checked == len(case.rows) * len(case.bands)


@pytest.mark.parametrize("name", CASES)
def test_our_structs_hold_rasterets_values(name, cases, rasteret_exports, our_exports):
    """Our ``{band}_metadata`` starts with Rasteret's fields, in its order and types, with its values."""
    theirs, ours = _loaded(rasteret_exports[name]), _loaded(our_exports[name])
    for band in cases[name].bands:
        column = f"{band}_metadata"
        their_type = pa.array(theirs[column].array).type
        our_type = pa.array(ours[column].array).type
        assert [our_type.field(i) for i in range(their_type.num_fields)] == list(their_type)
        names = [f.name for f in their_type]
        for a, b in zip(_structs(theirs, column), _structs(ours, column), strict=True):
            for field in names:
                if field == "nodata":
                    assert _same_float(a[field], b[field])
                else:
                    assert a[field] == b[field], (band, field)


@pytest.mark.parametrize("name", LEGACY_CASES)
def test_older_rasteret_files_load_and_read(name, cases, legacy_exports):
    case = cases[name]
    files = list(legacy_exports[name].rglob("*.parquet"))
    struct_type = pq.read_schema(files[0]).field(f"{case.bands[0]}_metadata").type
    assert {"width", "height"} <= {f.name for f in struct_type}
    assert not {"image_width", "nodata", "planar_configuration"} & {f.name for f in struct_type}
    frame = _loaded(legacy_exports[name])
    assert frame["id"].tolist() == sorted(r["id"] for r in case.rows)
    for row_index, assets in enumerate(_structs(frame, "assets")):
        for band in case.bands:
            struct = _structs(frame, f"{band}_metadata")[row_index]
            href, band_index = assets[band]["href"], assets[band]["band_index"]
            header = dict_to_header(struct, band_index)
            _assert_rasteret_fields_equal(header, rd.read_cog_header(href).tiff, band_index, legacy=True)
            _assert_reads_match_rasterio(href, header, band_index)


def test_single_plane_header_reads_one_band(cases, rasteret_exports):
    """A header holding one plane of a planar-separate file reads that one band: (1, rows, cols)."""
    frame = _loaded(rasteret_exports["planar"])
    assets = _structs(frame, "assets")[0]
    struct = _structs(frame, "b3_metadata")[0]
    header = dict_to_header(struct, assets["b3"]["band_index"])
    assert header.stored_plane == 2
    out = CogHeader(assets["b3"]["href"], header).read(window=((0, 10), (0, 20)))
    with rasterio.open(assets["b3"]["href"]) as ds:
        want = ds.read(3, window=Window.from_slices((0, 10), (0, 20)))
    np.testing.assert_array_equal(out[0], want)
    assert out.shape == (1, 10, 20)


# ---------------------------------------------------------------- us -> Rasteret


@pytest.fixture(scope="module")
def rasteret_reads(rasteret_python, cases, our_exports, legacy_exports, tmp_path_factory) -> dict:
    """Rasteret's get_numpy over our exports (and the legacy copies), and sample_points over ours."""
    root = tmp_path_factory.mktemp("rasteret_reads")
    jobs, expected = [], {}
    for source, exports in (("ours", our_exports), ("legacy", legacy_exports)):
        for name in exports:
            case, requests = cases[name], []
            for row in case.rows:
                href = row["assets"][case.bands[0]]["href"]
                for k, aoi in enumerate(_aois(href)):
                    for bands in (list(case.bands), [case.bands[-1]]):
                        out = root / f"{source}_{case.name}_{row['id']}_{k}_{len(bands)}.npy"
                        requests.append({"id": row["id"], "wkb": shapely.to_wkb(aoi, hex=True)})
                        requests[-1].update(bands=bands, out=str(out))
                        expected[str(out)] = (row, aoi, bands)
            jobs.append({"command": "get_numpy", "collection": str(exports[case.name]), "requests": requests})
    points = _sample_points(cases["scenes"])
    jobs.append(
        {
            "command": "sample_points",
            "collection": str(our_exports["scenes"]),
            "points": points,
            "bands": list(BANDS),
            "out": str(root / "points.parquet"),
        }
    )
    results = _run(rasteret_python, jobs)
    chips = [r for result in results[:-1] for r in result["requests"]]
    return {"chips": chips, "expected": expected, "points": points, "samples": results[-1]}


def _sample_points(case: Case) -> list[list[float]]:
    """Points in CRS84 at pixel centres (off-centre by a fraction) of each record, and one far away."""
    points = []
    for i, row in enumerate(case.rows):
        with rasterio.open(row["assets"][BANDS[0]]["href"]) as ds:
            to_lonlat = Transformer.from_crs(ds.crs, "EPSG:4326", always_xy=True)
            for col, line in ((7.3 + 40 * i, 11.6), (128.2, 127.7), (200.45, 60.15 + 20 * i), (3.5, 250.5)):
                points.append(list(to_lonlat.transform(*(ds.transform @ (col, line)))))
    points.append([-40.0, 10.0])
    return points


def test_rasteret_get_numpy_reads_our_collections(rasteret_reads):
    """get_numpy over our exports (and the legacy files) equals rasterio.mask.mask(crop=True)."""
    compared = 0
    for chip in rasteret_reads["chips"]:
        assert "error" not in chip, chip
        row, aoi, bands = rasteret_reads["expected"][chip["out"]]
        got = np.load(chip["out"])
        want = np.stack(
            [_rasterio_chip(row["assets"][b]["href"], aoi, row["assets"][b]["band_index"]) for b in bands]
        )
        expected_shape = (1, *want.shape) if len(bands) > 1 else (1, *want.shape[1:])
        assert got.shape == expected_shape, chip["out"]
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got.reshape(want.shape), want, err_msg=chip["out"])
        compared += 1
    assert compared == len(rasteret_reads["expected"])


def test_rasteret_sample_points_reads_our_collection(cases, rasteret_reads):
    """sample_points over our export: every (point, record, band) inside a raster, rasterio's value."""
    table = pq.read_table(rasteret_reads["samples"]["out"]).to_pylist()
    got = {(r["point_index"], r["record_id"], r["band"]): r["value"] for r in table}
    want = {}
    for index, (lon, lat) in enumerate(rasteret_reads["points"]):
        for row in cases["scenes"].rows:
            for band in BANDS:
                with rasterio.open(row["assets"][band]["href"]) as ds:
                    to_raster = Transformer.from_crs("EPSG:4326", ds.crs, always_xy=True)
                    line, col = ds.index(*to_raster.transform(lon, lat))
                    if 0 <= line < ds.height and 0 <= col < ds.width:
                        value = ds.read(1, window=Window(col, line, 1, 1))[0, 0]
                        want[(index, row["id"], band)] = float(value)
    assert len(want) > len(rasteret_reads["points"])
    assert got == want
