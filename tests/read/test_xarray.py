"""Lazy stacks (``Collection.get_xarray`` / ``get_dask_array``) against rasterio and GDAL.

Oracles: ``rasterio.warp.reproject`` of each whole record onto the whole output grid (target grids);
GDAL's own ``gdalwarp`` (the GDAL rasterio runs on) where an overview must be chosen; rasterio windowed
reads (native grids); numpy over those arrays (time steps and fusing). Scenes: ``stack_data.py``.
"""

from __future__ import annotations

import dataclasses
import re
import warnings

import dask
import numpy as np
import pandas as pd
import pytest
import rasterio.features
import shapely
from affine import Affine
from dask._task_spec import Task

import rasteret_dask as rd
from rasteret_dask.read.arrays import StackGraph
from tests.gdal_api import gdal_version

from .stack_data import (
    UTM32,
    UTM33,
    WGS84,
    agreement,
    build,
    dataset_grid,
    gdalwarp_file,
    make_masked_scene,
    make_scenes,
    native_read,
    reproject_band,
    reproject_file,
    synthetic_collection,
    to_crs,
)

ALL_METHODS = ("nearest", "bilinear", "cubic", "average", "mode", "min", "max")
# Target grids that warp every kind of record: zone 33 at 10 m (zone-33 records lie on its lattice and are
# copied; zone-32 and EPSG:4326 ones are warped) and zone 32 at 12.5 m (everything is warped).
TARGETS = {"utm33-10m": (UTM33, 10.0), "utm32-12.5m": (UTM32, 12.5)}
# Coarser targets, read from overviews: levels 1, 1 and 2 of the UTM records; at 30 m the EPSG:4326
# records (7.4 x 11 m pixels) read level 1 under GDAL 3.10's rule, where GDAL 3.6 took level 2.
COARSE = {"utm33-25m": (UTM33, 25.0), "utm32-30m": (UTM32, 30.0), "utm33-45m": (UTM33, 45.0)}


def compute(ds, scheduler="threads"):
    with dask.config.set(scheduler=scheduler):
        return ds.compute()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return make_scenes(tmp_path_factory.mktemp("stack-scenes"))


@pytest.fixture(scope="module")
def by_id(scenes):
    return {s.id: s for s in scenes}


@pytest.fixture(scope="module")
def collection(scenes):
    return build(scenes)


def stack(collection, **kwargs):
    """A read with an explicit grid (no 'records are on different grids' warning expected)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return collection.get_xarray(**kwargs)


def compare_records(ds, got, by_id, method, fill, oracle) -> list[tuple[str, str, dict]]:
    """``(band, record, agreement)`` of every record's time step against ``oracle(path, grid)``."""
    grid = dataset_grid(ds)
    out = []
    for band in ds.data_vars:
        for k, record_id in enumerate(ds.id.values):
            theirs = oracle(by_id[record_id].paths[band], grid)
            out.append((band, record_id, agreement(got[band].values[k], theirs, fill)))
    return out


def report(title: str, rows) -> None:
    """Print the agreement per band and record (shown with ``pytest -rP``)."""
    pixels = sum(a["pixels"] for _, _, a in rows)
    same = sum(a["identical"] for _, _, a in rows)
    print(f"{title}: {same}/{pixels} identical ({100 * same / max(pixels, 1):.4f}%)")
    for band, record_id, a in rows:
        if a["identical"] < a["pixels"]:
            print(f"  {band} {record_id}: {a}")


# ------------------------------------------------------------------------------------ target grids


# Every method on the grid that warps every record; the interpolating ones on the other too. The rest of
# the matrix (and more grids) is marked slow.
FAST_PAIRS = [("utm32-12.5m", m) for m in ALL_METHODS] + [
    ("utm33-10m", m) for m in ("nearest", "bilinear", "cubic", "average")
]
SLOW_PAIRS = [(t, m) for t in sorted(TARGETS) for m in ALL_METHODS if (t, m) not in FAST_PAIRS]


@pytest.mark.parametrize(
    ("target", "method"), FAST_PAIRS + [pytest.param(*p, marks=pytest.mark.slow) for p in SLOW_PAIRS]
)
def test_target_grid_equals_rasterio_reproject(collection, by_id, target, method):
    crs, resolution = TARGETS[target]
    ds = stack(collection, bands=["B04", "B05"], crs=crs, resolution=resolution, resampling=method)
    got = compute(ds)
    rows = compare_records(
        ds, got, by_id, method, 0, lambda path, grid: reproject_file(path, grid, method, 0)
    )
    report(f"{target} {method} vs rasterio.warp.reproject", rows)
    for band, record_id, a in rows:
        assert a["pixels"] > 1000, (band, record_id)
        # Identical on >= 99.9% of the pixels either side has a value (the rest are printed above); for
        # the interpolating kernels, within 1e-3 relative on as many.
        assert a["fraction"] >= 0.999, (band, record_id, a)
        if method in ("bilinear", "cubic"):
            assert a["close_fraction"] >= 0.999, (band, record_id, a)


@pytest.mark.parametrize(
    "method",
    ["bilinear", "cubic", "average", pytest.param("nearest", marks=pytest.mark.slow)]
    + [pytest.param(m, marks=pytest.mark.slow) for m in ("mode", "min", "max")],
)
def test_chunked_reads_equal_one_chunk(collection, method):
    """GDAL's chunks and scanlines are those of the whole grid whatever the Dask chunks."""
    kwargs = {"bands": ["B04", "B05"], "crs": UTM32, "resolution": 12.5, "resampling": method}
    whole = compute(stack(collection, chunks={"x": 4096, "y": 4096}, **kwargs))
    assert whole.B04.data.shape[1] < 4096 and whole.B04.data.shape[2] < 4096
    for chunks in (None, {"x": 37, "y": 53, "time": 4}):
        ds = stack(collection, chunks=chunks, **kwargs)
        assert ds.B04.data.numblocks[1] > 2 and ds.B04.data.numblocks[2] > 2
        got = compute(ds)
        for band in ("B04", "B05"):
            np.testing.assert_array_equal(got[band].values, whole[band].values, err_msg=f"{chunks} {band}")


@pytest.mark.parametrize("method", ["nearest", "bilinear", "average"])
@pytest.mark.parametrize("target", sorted(COARSE))
def test_coarse_targets_read_the_overview_gdalwarp_reads(collection, by_id, target, method, tmp_path):
    crs, resolution = COARSE[target]
    ds = stack(collection, bands=["B04"], crs=crs, resolution=resolution, resampling=method)
    got = compute(ds)
    rows = compare_records(
        ds, got, by_id, method, 0, lambda path, grid: gdalwarp_file(path, grid, method, 0, tmp_path)
    )
    report(f"{target} {method} vs gdalwarp (GDAL {gdal_version()})", rows)
    for band, record_id, a in rows:
        assert a["pixels"] > 500
        assert a["fraction"] == 1.0, (band, record_id, a)
    # And it is an overview read: the full-resolution warp differs.
    grid = dataset_grid(ds)
    full = reproject_file(by_id["a32"].paths["B04"], grid, method, 0)
    a32 = list(ds.id.values).index("a32")
    assert agreement(got.B04.values[a32], full, 0)["fraction"] < 0.5


@pytest.mark.parametrize(
    ("side", "resolution", "dtype"),
    [(300, 12.5, "uint16"), (4096, 12.5, "uint16"), (6000, 10.0, "float64"), (20000, 30.0, "uint8")],
)
def test_lazy_layout_has_gdals_chunks(side, resolution, dtype):
    """The lazily split layout ends in exactly the chunks ``_gdal_chunks`` lists for the whole target
    (fill-ratio splits around a small source, memory splits of large targets)."""
    from rasteret_dask.geo import warp as geowarp
    from rasteret_dask.geo.grid import Grid

    x, y = to_crs(11.98, 48.31, "OGC:CRS84", UTM33)
    source = (10.0, 0.0, float(x) - 960.0, 0.0, -10.0, float(y) + 960.0)
    cx, cy = to_crs(11.98, 48.31, "OGC:CRS84", UTM32)
    half = side * resolution / 2
    target = Grid(UTM32, (resolution, 0.0, float(cx) - half, 0.0, -resolution, float(cy) + half), side, side)
    layout = geowarp.warp_layout(target, UTM33, source, 192, 192, method="bilinear", dtype=dtype, nodata=0)
    leaves = layout.chunks_meeting((0, side, 0, side))
    bits = np.dtype(dtype).itemsize * 8
    expected = geowarp._gdal_chunks(layout.base, target, 192, 192, 1, bits + 1, bits + 1)
    assert [(rect, w) for rect, w in leaves] == [(rect, w) for rect, w in expected]
    assert any(not w.empty for _, w in leaves)
    assert len(leaves) > 1 or side == 300


def test_capped_scanlines_stay_within_the_transformers_error(collection, by_id, monkeypatch):
    """GDAL chunks wider than MAX_SCANLINE interpolate along each block's own columns: positions move by
    at most the approximate transformer's error, so bilinear values move by a unit or so."""
    from rasteret_dask.geo import warp as geowarp

    monkeypatch.setattr(geowarp, "MAX_SCANLINE", 40)
    ds = stack(collection, bands="B04", crs=UTM32, resolution=12.5, resampling="bilinear")
    got = compute(ds)
    grid = dataset_grid(ds)
    fractions = []
    for k, record_id in enumerate(ds.id.values):
        theirs = reproject_file(by_id[record_id].paths["B04"], grid, "bilinear", 0)
        ours = got.B04.values[k]
        both = (ours != 0) & (theirs != 0)
        assert ((ours != 0) == (theirs != 0)).mean() > 0.9999
        assert np.abs(ours[both].astype(int) - theirs[both]).max() <= 2
        fractions.append(agreement(ours, theirs, 0)["fraction"])
    assert min(fractions) < 0.99  # the cap was in force ...
    assert np.mean(fractions) > 0.9  # ... and moved few values


# ------------------------------------------------------------------------------------- native grid


@pytest.fixture(scope="module")
def zone33(scenes):
    """Records of one UTM zone, on one pixel lattice."""
    return build([s for s in scenes if s.crs == UTM33])


def test_native_grid_is_the_records_own_pixels(zone33, by_id):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one lattice: no "different grids" warning
        ds = zone33.get_xarray(bands=["B04", "B05"])
    got = compute(ds)
    grid = dataset_grid(ds)
    assert grid.crs == UTM33 and grid.transform[0] == 10.0 and grid.transform[4] == -10.0
    assert list(ds.id.values) == ["b33", "e33"]
    for k, record_id in enumerate(ds.id.values):
        path = by_id[record_id].paths["B04"]
        np.testing.assert_array_equal(got.B04.values[k], native_read(path, grid, 0))
        # The 20 m band lands on the same 10 m grid: each of its pixels repeated 2 x 2 (nearest).
        b05 = by_id[record_id].paths["B05"]
        np.testing.assert_array_equal(got.B05.values[k], reproject_file(b05, grid, "nearest", 0))
        assert (got.B05.values[k][::2, ::2] == got.B05.values[k][1::2, 1::2]).mean() > 0.99
    # Nothing outside any record, and no resampling of the 10 m band anywhere: every value is a source value.
    b33 = native_read(by_id["b33"].paths["B04"], grid, 0)
    assert set(np.unique(got.B04.values[0])) == set(np.unique(b33))


@pytest.mark.parametrize("chunks", [None, {"y": 16, "x": 16}])
def test_native_grid_with_aoi_masks_outside(zone33, by_id, chunks):
    b33 = by_id["b33"]
    x0, y0 = b33.transform @ (40.3, 30.6)
    x1, y1 = b33.transform @ (150.2, 171.9)
    poly = shapely.Polygon([(x0, y0), (x1, y0 - 300), (x1 - 200, y1), (x0 + 50, y1 + 100)])
    lon, lat = to_crs(*np.asarray(poly.exterior.coords).T, UTM33, "OGC:CRS84")
    aoi = shapely.Polygon(np.column_stack([lon, lat]))
    ds = zone33.get_xarray(aoi, bands="B04", chunks=chunks)
    got = compute(ds)
    grid = dataset_grid(ds)
    left, _, right, _ = grid.bounds
    assert left <= x0 and right >= x1 and grid.transform[2] % 10 == 0
    local = shapely.Polygon(np.column_stack(to_crs(lon, lat, "OGC:CRS84", UTM33)))
    outside = rasterio.features.geometry_mask([local], grid.shape, Affine(*grid.transform))
    if chunks:  # small chunks: some lie wholly inside the AOI, some wholly outside, some across its edge
        blocks = outside[: outside.shape[0] // 16 * 16, : outside.shape[1] // 16 * 16]
        blocks = blocks.reshape(blocks.shape[0] // 16, 16, -1, 16).mean(axis=(1, 3))
        assert (blocks == 0).any() and (blocks == 1).any() and ((blocks > 0) & (blocks < 1)).any()
    for k, record_id in enumerate(ds.id.values):
        expected = np.where(outside, 0, native_read(by_id[record_id].paths["B04"], grid, 0))
        np.testing.assert_array_equal(got.B04.values[k], expected)


def test_default_chunks_sit_on_the_source_tiles(zone33, by_id):
    b33 = by_id["b33"]
    x0, y0 = b33.transform @ (37.5, 21.5)  # an area starting inside a tile
    x1, y1 = b33.transform @ (301.5, 203.5)
    lon, lat = to_crs([x0, x1], [y0, y1], UTM33, "OGC:CRS84")
    aoi = shapely.box(min(lon), min(lat), max(lon), max(lat))
    ds = zone33.get_xarray(aoi, bands="B04")
    grid = dataset_grid(ds)
    with rasterio.open(b33.paths["B04"]) as src:
        tile = src.block_shapes[0][0]
        row0, col0 = src.index(grid.transform[2] + 1, grid.transform[5] - 1)
    ys, xs = ds.B04.data.chunks[1:]
    assert len(ys) > 1 and len(xs) > 1 and (row0 % tile, col0 % tile) != (0, 0)
    assert all((row0 + e) % tile == 0 for e in np.cumsum(ys)[:-1])
    assert all((col0 + e) % tile == 0 for e in np.cumsum(xs)[:-1])
    # No tile of the first record (b33) is read by two chunks: as many tile reads as one chunk over the
    # whole area makes. (e33 lies on the same lattice with other tile edges: its edge tiles are shared.)
    whole = {"y": grid.height, "x": grid.width}
    tiles = zone33.get_xarray(aoi, bands="B04", explain=True).set_index("record_id")
    one_chunk = zone33.get_xarray(aoi, bands="B04", chunks=whole, explain=True).set_index("record_id")
    assert tiles.loc["b33", "tiles"] == one_chunk.loc["b33", "tiles"]
    assert tiles.loc["b33", "bytes"] == one_chunk.loc["b33", "bytes"]
    assert tiles.loc["e33", "tiles"] > one_chunk.loc["e33", "tiles"]
    np.testing.assert_array_equal(
        compute(ds).B04.values, compute(zone33.get_xarray(aoi, bands="B04", chunks=whole)).B04.values
    )


# -------------------------------------------------------------------------------- laziness and GETs


def test_building_sends_nothing_and_a_chunk_sends_its_gets(scenes, range_server):
    urls = {}
    for s in scenes:
        for p in s.paths.values():
            urls[str(p)] = range_server.put(f"lazy/{p.name}", p.read_bytes())
    col = build(scenes, href=lambda p: urls[str(p)])
    range_server.reset_stats()
    kwargs = {"bands": ["B04", "B05"], "crs": UTM33, "resolution": 10.0, "resampling": "bilinear"}
    ds = stack(col, **kwargs)
    plan = col.get_xarray(explain=True, **kwargs)
    assert range_server.requests() == 0
    total = plan.set_index("record_id").loc["TOTAL"]
    assert total["gets"] > 0 and total["bytes"] > 0

    producers = {k: v for layer in ds.B04.data.dask.layers.values() for k, v in layer.items() if _producer(v)}
    for key in sorted(producers)[3:6]:
        chunk_plan = producers[key].args[0]
        predicted = StackGraph(
            None, [], ["B04", "B05"], (), [], {key: (chunk_plan, ["?"] * len(chunk_plan.sources))}
        ).explain()
        _, t, i, j = key
        ys, xs = ds.B04.data.chunks[1], ds.B04.data.chunks[2]
        y0, x0 = sum(ys[:i]), sum(xs[:j])
        range_server.reset_stats()
        ds.B04[t, y0 : y0 + ys[i], x0 : x0 + xs[j]].compute(scheduler="threads")
        stats = range_server.stats()
        assert stats["requests"] == predicted.iloc[-1]["gets"], (key, stats, predicted)
        wanted = {s.read.url.rsplit("/", 1)[1] for s in chunk_plan.sources}
        assert {p.rsplit("/", 1)[1] for p in stats["by_path"]} == wanted
    range_server.reset_stats()
    compute(ds)
    assert range_server.requests() == total["gets"]


def test_internal_masks_are_nodata_and_explain_counts_merged_gets(tmp_path, range_server):
    scene = make_masked_scene(tmp_path)
    path = scene.paths["B04"]
    url = range_server.put(f"masked/{path.name}", path.read_bytes())
    col = build([scene], href=lambda p: url)
    for method in ("nearest", "bilinear", "average"):
        kwargs = {"bands": "B04", "crs": UTM32, "resolution": 10.0, "resampling": method}
        ds = stack(col, **kwargs)
        predicted = col.get_xarray(explain=True, **kwargs).iloc[-1]
        range_server.reset_stats()
        got = compute(ds).B04.values[0]
        # Pixel and mask tiles of one file are fetched together: one GET per merged run.
        assert range_server.requests() == predicted["gets"]
        theirs = reproject_band(path, dataset_grid(ds), method, 0)
        a = agreement(got, theirs, 0)
        assert a["fraction"] == 1.0, (method, a)
        assert (got == 0).sum() > 5000  # the masked holes are filled, not read as values


def _producer(value) -> bool:
    return isinstance(value, Task) and value.data_producer


def test_graph_has_one_read_task_per_non_empty_chunk(tmp_path):
    syn = synthetic_collection(tmp_path, 2000, spacing=300)
    chunk = 128
    ds = syn.collection.get_xarray(bands="B04", groupby="time", chunks={"x": chunk, "y": chunk})
    assert ds.sizes["time"] == 4
    graph = ds.B04.data.dask
    producers = [k for layer in graph.layers.values() for k, v in layer.items() if _producer(v)]
    rows0 = min(r for _, r, _ in syn.boxes)
    cols0 = min(c for _, _, c in syn.boxes)
    expected = set()
    for step, row0, col0 in syn.boxes:
        r, c = row0 - rows0, col0 - cols0
        for i in range(r // chunk, (r + syn.size - 1) // chunk + 1):
            for j in range(c // chunk, (c + syn.size - 1) // chunk + 1):
                expected.add((step, i, j))
    assert ds.B04.data.npartitions > 8 * len(expected)  # a sparse grid: most chunks are empty
    assert len(producers) == len(expected)
    assert {k[1:] for k in producers} == expected
    # The empty chunks are made on demand, not stored: the stored tasks are the read tasks.
    stored = sum(len(layer) for layer in graph.layers.values() if layer.is_materialized())
    assert stored == len(producers)
    # A slice computes from the chunks it needs only, and returns the records' pixels.
    step, row0, col0 = syn.boxes[7]
    r, c = row0 - rows0, col0 - cols0
    block = ds.B04[step, r : r + syn.size, c : c + syn.size].values
    np.testing.assert_array_equal(block, np.arange(1, syn.size**2 + 1, dtype="uint16").reshape(64, 64))


# ------------------------------------------------------------------------------ time steps and fusing


@pytest.fixture(scope="module")
def fuse_collection(scenes):
    orbit = {"a32": 1, "b33": 2, "c84": 1, "d32": 2, "e33": 1, "f84": 2}
    return build([dataclasses.replace(s, extra={"orbit": orbit[s.id]}) for s in scenes])


@pytest.fixture(scope="module")
def per_record(fuse_collection, by_id):
    """Each record's rasterio reprojection (nearest) onto the UTM 32 12.5 m grid (where every record's own
    warp equals rasterio's, so that these tests test fusing alone), and the grid."""
    ds = stack(fuse_collection, bands="B04", crs=UTM32, resolution=12.5)
    grid = dataset_grid(ds)
    return grid, {rid: reproject_file(by_id[rid].paths["B04"], grid, "nearest", 0) for rid in by_id}


def _solar_day(record) -> object:
    lon = record["geometry"].centroid.x
    return (record["datetime"] + pd.Timedelta(hours=lon / 15.0)).date()


GROUPINGS = {
    "none": (None, lambda rec: rec["id"]),
    "time": ("time", lambda rec: rec["datetime"]),
    "solar_day": ("solar_day", _solar_day),
    "column": ("orbit", lambda rec: rec["orbit"]),
    "callable": (lambda row: row["id"][-2:], lambda rec: rec["id"][-2:]),
}


def _fuse(arrays: list[np.ndarray], how: str) -> np.ndarray:
    stacked = np.stack(arrays).astype(np.float64)
    valid = stacked != 0  # nodata and fill are 0; data values are 1..3000
    if how in ("first", "last"):
        order = range(len(arrays)) if how == "first" else reversed(range(len(arrays)))
        out = np.zeros(stacked.shape[1:])
        done = np.zeros(out.shape, dtype=bool)
        for k in order:
            take = valid[k] & ~done
            out[take], done = stacked[k][take], done | take
        return out.astype("uint16")
    masked = np.where(valid, stacked, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        reduced = {"min": np.nanmin, "max": np.nanmax, "mean": np.nanmean, "median": np.nanmedian}[how](
            masked, axis=0
        )
    return np.where(valid.any(axis=0), np.round(reduced), 0).astype("uint16")


@pytest.mark.parametrize("fuse", ["first", "last", "min", "max", "mean", "median"])
@pytest.mark.parametrize("grouping", sorted(GROUPINGS))
def test_groupby_and_fuse_equal_numpy_over_rasterio(fuse_collection, per_record, grouping, fuse):
    groupby, key_of = GROUPINGS[grouping]
    _, arrays = per_record
    frame = fuse_collection.frame.compute().sort_values(["datetime", "id"])
    groups: dict = {}
    for _, record in frame.iterrows():
        groups.setdefault(key_of(record), []).append(record)
    expected = sorted(
        (
            (members[0]["datetime"], ",".join(m["id"] for m in members), members)
            for members in groups.values()
        ),
        key=lambda g: g[:2],
    )
    ds = stack(
        fuse_collection,
        bands="B04",
        crs=UTM32,
        resolution=12.5,
        groupby=groupby,
        fuse=fuse,
        chunks={"x": 100},
    )
    assert list(ds.id.values) == [ids for _, ids, _ in expected]
    times = pd.DatetimeIndex([t for t, _, _ in expected]).tz_convert("UTC").tz_localize(None)
    np.testing.assert_array_equal(ds.time.values, times.values)
    got = compute(ds).B04.values
    for k, (_, ids, members) in enumerate(expected):
        want = _fuse([arrays[m["id"]] for m in members], fuse)
        np.testing.assert_array_equal(got[k], want, err_msg=f"step {ids}")
    if grouping == "solar_day":
        assert [ids for _, ids, _ in expected] == ["a32,b33,c84", "d32,e33", "f84"]


def test_fill_value_and_nodata_never_bleed(collection, by_id):
    ds = stack(
        collection,
        bands="B04",
        crs=UTM32,
        resolution=12.5,
        resampling="bilinear",
        fill_value=65535,
        fuse="mean",
    )
    assert ds.B04.attrs["_FillValue"] == 65535
    got = compute(ds)
    grid = dataset_grid(ds)
    for k, record_id in enumerate(ds.id.values):
        theirs = reproject_file(by_id[record_id].paths["B04"], grid, "bilinear", 65535)
        ours = got.B04.values[k]
        assert (ours == 65535).sum() > 1000  # holes, stripes and the area outside the record
        assert agreement(ours, theirs, 65535)["fraction"] >= 0.999
        # A valid pixel never mixes in nodata: no value below the data's minimum appears.
        assert ours[ours != 65535].min() >= 1
    default = stack(collection, bands="B04", crs=UTM32, resolution=12.5)
    assert default.B04.attrs["_FillValue"] == 0


def test_dataset_georeferencing_for_rioxarray(collection, scenes):
    import rioxarray  # noqa: F401  (registers the .rio accessor)

    ds = stack(collection, bands=["B04", "B05"], crs=UTM32, resolution=12.5)
    grid = dataset_grid(ds)
    a, b, c, d, e, f = grid.transform
    assert ds.rio.crs.to_epsg() == 32632
    assert tuple(ds.rio.transform())[:6] == pytest.approx((a, b, c, d, e, f), abs=1e-9)
    assert ds.B04.rio.crs.to_epsg() == 32632
    np.testing.assert_allclose(ds.x.values, c + a * (np.arange(grid.width) + 0.5))
    np.testing.assert_allclose(ds.y.values, f + e * (np.arange(grid.height) + 0.5))
    order = sorted(scenes, key=lambda s: (s.datetime, s.id))
    assert list(ds.id.values) == [s.id for s in order]
    assert np.issubdtype(ds.time.dtype, np.datetime64)  # tz-naive UTC
    expected = pd.DatetimeIndex([s.datetime for s in order]).tz_convert("UTC").tz_localize(None)
    np.testing.assert_array_equal(ds.time.values, expected.values)
    array = collection.get_dask_array(bands=["B04", "B05"], crs=UTM32, resolution=12.5)
    assert array.shape == (6, 2, grid.height, grid.width)
    np.testing.assert_array_equal(array[:, 1].compute(), compute(ds).B05.values)


# ----------------------------------------------------------------------------------------- errors


def test_errors_name_the_problem(collection, scenes):
    with pytest.raises(rd.PlanError, match="B99"):
        collection.get_xarray(bands="B99", crs=UTM33, resolution=10.0)
    with pytest.raises(rd.PlanError, match="overlap"):
        collection.get_xarray(shapely.box(30.0, 10.0, 30.1, 10.1), bands="B04")
    with pytest.raises(rd.PlanError, match="resampling"):
        collection.get_xarray(bands="B04", crs=UTM33, resolution=10.0, resampling="lanczos")
    with pytest.raises(rd.PlanError, match="fuse"):
        collection.get_xarray(bands="B04", crs=UTM33, resolution=10.0, fuse="sum")


def test_records_without_header_are_skipped_with_a_warning(collection, by_id):
    frame = collection.frame.compute().copy()  # a one-partition frame computes to the same object
    frame["B05_metadata"] = frame["B05_metadata"].where(~frame["id"].isin(["b33", "f84"]), None)
    broken = rd.as_collection(frame)
    with pytest.warns(UserWarning, match=r"b33/B05.*f84/B05|f84/B05.*b33/B05"):
        ds = broken.get_xarray(bands=["B04", "B05"], crs=UTM32, resolution=12.5)
    got = compute(ds)
    grid = dataset_grid(ds)
    for k, record_id in enumerate(ds.id.values):
        b05 = got.B05.values[k]
        if record_id in ("b33", "f84"):
            assert (b05 == 0).all()
        else:
            np.testing.assert_array_equal(
                b05, reproject_file(by_id[record_id].paths["B05"], grid, "nearest", 0)
            )
        np.testing.assert_array_equal(
            got.B04.values[k], reproject_file(by_id[record_id].paths["B04"], grid, "nearest", 0)
        )
    with pytest.raises(rd.PlanError, match="b33/B05"):
        broken.get_xarray(bands=["B04", "B05"], crs=UTM32, resolution=12.5, errors="raise")


def test_a_file_changed_since_the_build_fails_naming_it(scenes, range_server):
    scene = scenes[0]
    urls = {str(p): range_server.put(f"changed/{p.name}", p.read_bytes()) for p in scene.paths.values()}
    col = build([scene], href=lambda p: urls[str(p)])
    ds = stack(col, bands=["B04", "B05"], crs=UTM33, resolution=10.0)
    url = urls[str(scene.paths["B04"])]
    range_server.put(f"changed/{scene.paths['B04'].name}", scenes[1].paths["B04"].read_bytes())
    with pytest.raises(rd.RemoteFileChangedError, match=re.escape(url)):
        compute(ds)


# ------------------------------------------------------------------------------------- schedulers


@pytest.fixture(scope="module")
def cluster_client():
    import distributed

    with (
        distributed.LocalCluster(
            processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.mark.parametrize(
    "bands",
    [
        pytest.param(["B04"], id="one-band-part"),
        pytest.param(["B04", "B05"], id="two-bands-all", marks=pytest.mark.slow),
    ],
)
def test_threads_and_a_process_cluster_agree_on_disk_http_and_s3(
    scenes, collection, range_server, s3_server, cluster_client, bands
):
    kwargs = {"bands": bands, "crs": UTM32, "resolution": 12.5, "resampling": "bilinear"}
    if len(bands) == 1:  # part of the area: the records' middle, where all six meet
        kwargs["bbox"] = (11.965, 48.300, 11.995, 48.320)
    expected = compute(stack(collection, **kwargs))
    assert (expected.B04.values != 0).sum() > 10_000
    http, s3 = {}, {}
    for s in scenes:
        for p in s.paths.values():
            http[str(p)] = range_server.put(f"cluster/{p.name}", p.read_bytes())
            s3[str(p)] = s3_server.put("stacks", f"cluster/{p.name}", p.read_bytes())
    sources = {
        "disk": collection,
        "http": build(scenes, href=lambda p: http[str(p)]),
        "s3": build(scenes, href=lambda p: s3[str(p)], storage_options=s3_server.storage_options),
    }
    for name, col in sources.items():
        ds = stack(col, **kwargs)
        on_cluster = cluster_client.compute(ds).result()
        threaded = compute(ds)
        for band in bands:
            np.testing.assert_array_equal(on_cluster[band].values, expected[band].values, err_msg=name)
            np.testing.assert_array_equal(threaded[band].values, expected[band].values, err_msg=name)


# -------------------------------------------------------------------------------------- slow matrix


@pytest.mark.slow
@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("target", [(WGS84, 0.00012), (UTM33, 7.0), (UTM32, 10.0)])
def test_more_grids_equal_rasterio_reproject(collection, by_id, target, method):
    crs, resolution = target
    ds = stack(collection, bands=["B04", "B05"], crs=crs, resolution=resolution, resampling=method)
    got = compute(ds)
    rows = compare_records(
        ds, got, by_id, method, 0, lambda path, grid: reproject_file(path, grid, method, 0)
    )
    report(f"{crs} {resolution} {method} vs rasterio.warp.reproject", rows)
    for band, record_id, a in rows:
        assert a["fraction"] >= 0.999, (band, record_id, a)
