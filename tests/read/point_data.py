"""Rasters, collections, point strategies and the rasterio oracle for the point-sampling tests.

Rasters are written by GDAL (rasterio) in pytest tmp dirs. The oracle for a (point, record, band) is
rasterio: the point moved to the raster's CRS by pyproj (as DESIGN.md §4 says), inside when
``rasterio.transform.rowcol`` falls in the raster, its value ``DatasetReader.sample(masked=True)`` (GDAL's
mask band: nodata, internal mask), and missing too where GDAL reports the block as unwritten
(``BLOCK_OFFSET_x_y`` absent: a sparse block). ``max_distance_pixels`` and ``match="latest"`` are checked
against brute-force numpy searches over the full arrays rasterio reads.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from affine import Affine
from hypothesis import strategies as st
from pyproj import Transformer
from rasterio.transform import rowcol

import rasteret_dask as rd

WGS84, UTM32, UTM33 = "EPSG:4326", "EPSG:32632", "EPSG:32633"
T0 = pd.Timestamp("2024-05-01", tz="UTC")
NULLABLE = {
    "int8": "Int8",
    "uint8": "UInt8",
    "uint16": "UInt16",
    "int16": "Int16",
    "int32": "Int32",
    "uint32": "UInt32",
    "int64": "Int64",
    "uint64": "UInt64",
    "float32": "Float32",
    "float64": "Float64",
}


def to_crs(xs, ys, src: str, dst: str) -> tuple[np.ndarray, np.ndarray]:
    """Points from ``src`` to ``dst`` with pyproj (x/easting/longitude first), for building inputs."""
    if src == dst:
        return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    x, y = Transformer.from_crs(src, dst, always_xy=True).transform(xs, ys)
    return np.asarray(x, dtype=float), np.asarray(y, dtype=float)


# ------------------------------------------------------------------------------------------- rasters


@dataclass(frozen=True)
class BandFile:
    """One band of a record: the file, its 1-based rasterio band index, and the file's grid."""

    path: Path
    index: int
    crs: str
    transform: Affine
    width: int
    height: int

    @property
    def band_index(self) -> int | None:
        """The 0-based ``band_index`` of the collection's assets (None for a single-band file)."""
        with rasterio.open(self.path) as ds:
            return None if ds.count == 1 else self.index - 1

    def outline_lonlat(self) -> shapely.Polygon:
        """The raster's exact outline (no margin), densified, in CRS84."""
        n = 32
        t = np.linspace(0.0, 1.0, n, endpoint=False)
        w, h = self.width, self.height
        cols = np.concatenate([w * t, np.full(n, w), w - w * t, np.zeros(n)])
        rows = np.concatenate([np.zeros(n), h * t, np.full(n, h), h - h * t])
        x, y = self.transform @ (cols, rows)
        lon, lat = to_crs(x, y, self.crs, "OGC:CRS84")
        return shapely.Polygon(np.column_stack([lon, lat]))


@dataclass(frozen=True)
class Scene:
    """One record: id, time, CRS and band -> BandFile."""

    id: str
    datetime: pd.Timestamp
    crs: str
    bands: dict[str, BandFile]

    def footprint(self) -> shapely.Geometry:
        return shapely.union_all([f.outline_lonlat() for f in self.bands.values()])


def write_tiff(
    path: Path,
    data: np.ndarray,
    *,
    crs: str,
    transform: Affine,
    nodata=None,
    driver: str = "GTiff",
    blocksize: int = 32,
    tiled: bool = True,
    mask: np.ndarray | None = None,
    holes: np.ndarray | None = None,
) -> None:
    """Write ``data`` (bands, rows, cols) with GDAL.

    ``mask`` (rows, cols; True valid) becomes an internal mask. ``holes`` (block rows, block cols; True =
    leave unwritten) makes a sparse file (``SPARSE_OK=TRUE``): only the other blocks are written.
    ``tiled=False`` writes strips of ``blocksize`` rows.
    """
    count, height, width = data.shape
    profile = {
        "driver": driver,
        "width": width,
        "height": height,
        "count": count,
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "compress": "deflate",
    }
    if driver == "COG":
        profile.update(blocksize=blocksize, overview_resampling="nearest")
    elif tiled:
        profile.update(tiled=True, blockxsize=blocksize, blockysize=blocksize)
    else:
        profile.update(tiled=False, blockysize=blocksize)
    if holes is not None:
        profile["sparse_ok"] = True
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as ds:
        if holes is None:
            ds.write(data)
        else:
            for (br, bc), window in ds.block_windows(1):
                if not holes[br, bc]:
                    ds.write(data[:, window.toslices()[0], window.toslices()[1]], window=window)
        if mask is not None:
            ds.write_mask(np.where(mask, 255, 0).astype("uint8"))


def random_data(rng: np.random.Generator, dtype, shape, nodata=None, share: float = 0.1) -> np.ndarray:
    """Values spread over ``dtype``'s range, ``nodata`` (when set) in about ``share`` of the pixels."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        data = (rng.standard_normal(shape) * 1000).astype(dtype)
    else:
        info = np.iinfo(dtype)
        data = rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    if nodata is not None:
        if dtype.kind != "f":
            data[data == nodata] ^= 1  # nodata only where put on purpose
        data[rng.random(shape) < share] = nodata
    return data


BANDS = ("u16", "f32", "i16", "u8", "c20", "m2")
DTYPES = {"u16": "uint16", "f32": "float32", "i16": "int16", "u8": "uint8", "c20": "int32", "m2": "uint16"}
# The scenes: (id, zone CRS, day, origin x, origin y, width, height). Zone 32's first two share one grid
# with round numbers (edges exactly representable); the third is shifted by a fraction of a metre. Zone 33's
# sit over the same ground, so records of both zones cover the same points.
SCENES = (
    ("A0", UTM32, 0, 700_000.0, 5_350_000.0, 77, 61),
    ("A1", UTM32, 4, 700_000.0, 5_350_000.0, 77, 61),
    ("A2", UTM32, 9, 700_035.37, 5_349_984.91, 70, 66),
    ("B0", UTM33, 2, None, None, 73, 64),
    ("B1", UTM33, 7, None, None, 69, 58),
)


def _zone33_origin(shift: float) -> tuple[float, float]:
    x, y = to_crs([700_000.0], [5_350_000.0], UTM32, UTM33)
    return float(np.round(x[0] / 10) * 10 + shift), float(np.round(y[0] / 10) * 10 - shift)


def make_scenes(directory: Path, seed: int = 0) -> list[Scene]:
    """Write the records of :data:`SCENES`, one file per band (``m2`` is band 2 of a 3-band file).

    Bands: ``u16`` uint16 COG, nodata 0; ``f32`` float32 strips, nodata NaN (zone 32) or -9999 (zone 33);
    ``i16`` int16 with an internal mask, no nodata; ``u8`` uint8 sparse (unwritten blocks), no nodata
    (zone 32) or nodata 255 (zone 33); ``c20`` int32 on a 20 m grid larger than the others, nodata -1;
    ``m2`` the second sample of a pixel-interleaved 3-band uint16 file, nodata 7.
    """
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    scenes = []
    for k, (sid, crs, day, x0, y0, w, h) in enumerate(SCENES):
        if x0 is None:
            x0, y0 = _zone33_origin(20.0 * k)
        t10 = Affine(10.0, 0.0, x0, 0.0, -10.0, y0)
        t20 = Affine(20.0, 0.0, x0 - 40.0, 0.0, -20.0, y0 + 20.0)
        w20, h20 = w // 2 + 5, h // 2 + 4
        files: dict[str, BandFile] = {}

        def put(name, data, transform=t10, index=1, sid=sid, crs=crs, **kw):
            path = directory / f"{sid}_{name}.tif"
            write_tiff(path, data, crs=crs, transform=transform, **kw)
            return BandFile(path, index, crs, transform, data.shape[2], data.shape[1])

        files["u16"] = put("u16", random_data(rng, "uint16", (1, h, w), 0), nodata=0, driver="COG")
        f32_nodata = float("nan") if crs == UTM32 else -9999.0
        files["f32"] = put(
            "f32",
            random_data(rng, "float32", (1, h, w), f32_nodata),
            nodata=f32_nodata,
            tiled=False,
            blocksize=8,
        )
        files["i16"] = put("i16", random_data(rng, "int16", (1, h, w)), mask=rng.random((h, w)) > 0.15)
        u8_nodata = None if crs == UTM32 else 255
        holes = rng.random((-(-h // 32), -(-w // 32))) < 0.4
        holes[0, 0] = False
        files["u8"] = put(
            "u8", random_data(rng, "uint8", (1, h, w), u8_nodata), nodata=u8_nodata, holes=holes
        )
        files["c20"] = put("c20", random_data(rng, "int32", (1, h20, w20), -1), transform=t20, nodata=-1)
        files["m2"] = put("m", random_data(rng, "uint16", (3, h, w), 7), index=2, nodata=7, blocksize=16)
        stamp = T0 + pd.Timedelta(days=day)
        scenes.append(Scene(sid, stamp, crs, files))
    return scenes


def records_table(scenes: list[Scene], href=lambda path: str(path)) -> gpd.GeoDataFrame:
    """The records as a table for ``build_from_table``: exact raster outlines as footprints."""
    rows = [
        {
            "id": s.id,
            "datetime": s.datetime,
            "geometry": s.footprint(),
            "assets": {b: {"href": href(f.path), "band_index": f.band_index} for b, f in s.bands.items()},
        }
        for s in scenes
    ]
    return gpd.GeoDataFrame(rows, geometry="geometry", crs="OGC:CRS84")


def build(scenes: list[Scene], *, href=lambda path: str(path), **kwargs) -> rd.Collection:
    """A Collection of ``scenes`` with enriched headers."""
    return rd.build_from_table(records_table(scenes, href), progress=False, **kwargs)


# ------------------------------------------------------------------------------------------ the oracle


def sparse_blocks(ds, index: int = 1) -> np.ndarray:
    """(block rows, block cols) bool: True where GDAL reports the block unwritten (no BLOCK_OFFSET)."""
    bh, bw = ds.block_shapes[index - 1]
    out = np.zeros((-(-ds.height // bh), -(-ds.width // bw)), dtype=bool)
    for br in range(out.shape[0]):
        for bc in range(out.shape[1]):
            out[br, bc] = ds.get_tag_item(f"BLOCK_OFFSET_{bc}_{br}", "TIFF", bidx=index) is None
    return out


def in_crs_of(ds, xs: np.ndarray, ys: np.ndarray, crs: str) -> tuple[np.ndarray, np.ndarray]:
    """Points moved from ``crs`` to the dataset's CRS with pyproj, as DESIGN.md §4 specifies.

    (GDAL's own transformer, ``rasterio.warp.transform``, can differ from pyproj's in the last bits, which
    decides the pixel of points that a transform carries to within 1e-10 of a pixel edge.)
    """
    if rasterio.crs.CRS.from_user_input(crs) == ds.crs:
        return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    return to_crs(xs, ys, crs, ds.crs.to_string())


def oracle_samples(scenes: list[Scene], bands, xs, ys, crs: str, *, many: bool = False) -> dict:
    """``{(point position, record id, band): value or None (missing)}`` for every inside triple.

    Inside: ``rowcol`` in range. Value: ``sample(masked=True)``; missing where masked or in a sparse block.
    ``many=True`` indexes the arrays ``read(masked=True)`` returns with ``rowcol`` instead of calling
    ``sample`` per point: the same rule (``sample`` is exactly that, one 1 x 1 window at a time), fast.
    """
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    out = {}
    for scene in scenes:
        for band in bands:
            f = scene.bands[band]
            with rasterio.open(f.path) as ds:
                x, y = in_crs_of(ds, xs, ys, crs)
                rows, cols = rowcol(ds.transform, x, y)
                rows, cols = np.asarray(rows), np.asarray(cols)
                inside = np.flatnonzero((rows >= 0) & (rows < ds.height) & (cols >= 0) & (cols < ds.width))
                if not len(inside):
                    continue
                r, c = rows[inside], cols[inside]
                if many:
                    full = read_full(f)
                    values, valid = full.values[r, c], full.valid[r, c]
                else:
                    found = list(
                        ds.sample(zip(x[inside], y[inside], strict=True), indexes=f.index, masked=True)
                    )
                    bh, bw = ds.block_shapes[f.index - 1]
                    valid = ~np.array([bool(np.ma.getmaskarray(v)[0]) for v in found], dtype=bool)
                    valid &= ~sparse_blocks(ds, f.index)[r // bh, c // bw]
                    values = np.array([v.data[0] for v in found], dtype=ds.dtypes[f.index - 1])
                for i, v, ok in zip(inside, values, valid, strict=True):
                    out[(int(i), scene.id, band)] = v.item() if ok else None
    return out


@dataclass(frozen=True)
class FullBand:
    """A band read whole by rasterio: values, GDAL validity (mask band and sparse blocks), transform."""

    values: np.ndarray
    valid: np.ndarray
    transform: Affine


@functools.lru_cache(maxsize=64)
def read_full(f: BandFile) -> FullBand:
    """The band read whole (cached per file: tests never change their files)."""
    with rasterio.open(f.path) as ds:
        data = ds.read(f.index, masked=True)
        bh, bw = ds.block_shapes[f.index - 1]
        holes = np.repeat(np.repeat(sparse_blocks(ds, f.index), bh, axis=0), bw, axis=1)
        valid = ~np.ma.getmaskarray(data) & ~holes[: ds.height, : ds.width]
        return FullBand(data.data, valid, ds.transform)


def brute_nearest(full: FullBand, x: float, y: float, k: int) -> tuple[int, int, object] | None:
    """The pixel a point in the raster's CRS samples with ``max_distance_pixels=k``, by brute force.

    Returns ``(row, col, value or None)``, None when the point is outside. The point's own pixel when
    valid; else among valid pixels at Chebyshev distance <= k the one nearest (Euclidean distance, in
    pixels, from the point to the pixel's rectangle), ties to the first in row-major order; else the
    point's own pixel with a missing value.
    """
    h, w = full.values.shape
    (fr,), (fc,) = rowcol(full.transform, [x], [y], op=np.positive)  # rasterio's fractional position
    r0, c0 = math.floor(fr), math.floor(fc)
    if not (0 <= r0 < h and 0 <= c0 < w):
        return None
    if full.valid[r0, c0]:
        return r0, c0, full.values[r0, c0].item()
    best = None
    for r in range(max(r0 - k, 0), min(r0 + k + 1, h)):
        for c in range(max(c0 - k, 0), min(c0 + k + 1, w)):
            if not full.valid[r, c]:
                continue
            dy = max(max(r - fr, 0.0), fr - (r + 1))
            dx = max(max(c - fc, 0.0), fc - (c + 1))
            d = math.hypot(dx, dy)
            if best is None or d < best[0]:  # strict: the first in row-major order keeps a tie
                best = (d, r, c)
    if best is None:
        return r0, c0, None
    return best[1], best[2], full.values[best[1], best[2]].item()


def brute_samples(scenes: list[Scene], bands, xs, ys, crs: str, k: int) -> dict:
    """``{(point, record id, band): (row, col, value or None)}`` for every inside triple, by brute force."""
    out = {}
    for scene in scenes:
        for band in bands:
            f = scene.bands[band]
            full = read_full(f)
            with rasterio.open(f.path) as ds:
                x, y = in_crs_of(ds, xs, ys, crs)
            for i in range(len(x)):
                found = brute_nearest(full, x[i], y[i], k)
                if found is not None:
                    out[(i, scene.id, band)] = found
    return out


def brute_latest(scenes: list[Scene], samples: dict, n_points: int, bands) -> dict:
    """``{(point, band): (record id, (row, col, value))}``: the newest record with a valid value, else
    the newest record covering the point; only for points some record covers in some band."""
    order = sorted(scenes, key=lambda s: (s.datetime, s.id), reverse=True)
    covered = {p for (p, _, _) in samples}
    out = {}
    for p in range(n_points):
        if p not in covered:
            continue
        for band in bands:
            there = [(s.id, samples[(p, s.id, band)]) for s in order if (p, s.id, band) in samples]
            if not there:
                out[(p, band)] = None
                continue
            valid = [t for t in there if t[1][2] is not None]
            out[(p, band)] = valid[0] if valid else there[0]
    return out


# ------------------------------------------------------------------------------------ result checks


def is_missing(v) -> bool:
    """None, NA or NaN (``to_dict`` turns NA into None in some columns)."""
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def same_value(got, expected) -> bool:
    if is_missing(expected) or is_missing(got):
        return is_missing(expected) and is_missing(got)
    return type(got)(expected) == got if not isinstance(got, float) else float(expected) == got


def wide_rows(frame: pd.DataFrame, key=("pid", "record_id")) -> dict:
    rows = {}
    for row in frame.to_dict("records"):
        k = tuple(int(row[c]) if c == "pid" else row[c] for c in key)
        assert k not in rows, f"{k} appears twice"
        rows[k] = row
    return rows


def assert_wide_matches(frame: pd.DataFrame, expected: dict, bands, pids) -> None:
    """Wide ``match="all"``: one row per (point, record) with any band inside, band values as expected."""
    want_keys = {(int(pids[p]), r) for (p, r, _) in expected}
    got = wide_rows(frame)
    assert set(got) == want_keys, (
        f"missing {sorted(want_keys - set(got))[:5]}, extra {sorted(set(got) - want_keys)[:5]}"
    )
    by_pid = {int(pid): p for p, pid in enumerate(pids)}
    for (pid, rid), row in got.items():
        for band in bands:
            key = (by_pid[pid], rid, band)
            want = expected.get(key)
            assert same_value(row[band], want), (key, row[band], want)


def assert_long_matches(frame: pd.DataFrame, expected: dict, pids) -> None:
    """Long layout: one row per inside (point, record, band), float64 ``value``, NA where missing."""
    got = {}
    for row in frame.to_dict("records"):
        k = (int(row["pid"]), row["record_id"], row["band"])
        assert k not in got, f"{k} appears twice"
        got[k] = row["value"]
    want = {(int(pids[p]), r, b): v for (p, r, b), v in expected.items()}
    assert set(got) == set(want), (
        f"missing {sorted(set(want) - set(got))[:5]}, extra {sorted(set(got) - set(want))[:5]}"
    )
    for k, v in want.items():
        assert same_value(got[k], None if v is None else float(v)), (k, got[k], v)


# ------------------------------------------------------------------------------------ point strategies

KINDS = ("random", "vertical_edge", "horizontal_edge", "corner", "raster_edge", "outside")


@st.composite
def pixel_points(draw, f: BandFile):
    """(col, row) in ``f``'s pixel space, of one of :data:`KINDS`."""
    kind = draw(st.sampled_from(KINDS))
    w, h = f.width, f.height
    if kind == "random":
        return draw(st.floats(-0.2 * w, 1.2 * w)), draw(st.floats(-0.2 * h, 1.2 * h))
    frac = st.sampled_from([0.0, 0.25, 0.5, 0.75])
    if kind == "vertical_edge":
        return float(draw(st.integers(0, w))), draw(st.integers(0, h - 1)) + draw(frac)
    if kind == "horizontal_edge":
        return draw(st.integers(0, w - 1)) + draw(frac), float(draw(st.integers(0, h)))
    if kind == "corner":
        return float(draw(st.integers(-1, w + 1))), float(draw(st.integers(-1, h + 1)))
    if kind == "raster_edge":  # first/last row/col, and exactly on each outer edge
        col = draw(st.sampled_from([0.0, 0.5, w - 1.0, w - 0.5, float(w), w * 0.5]))
        row = draw(st.sampled_from([0.0, 0.5, h - 1.0, h - 0.5, float(h), h * 0.5]))
        return col, row
    side = draw(st.sampled_from(["left", "right", "top", "bottom"]))
    far = draw(st.floats(1.01, 40.0))
    along = draw(st.floats(0, 1))
    return {
        "left": (-far, along * h),
        "right": (w + far, along * h),
        "top": (along * w, -far),
        "bottom": (along * w, h + far),
    }[side]


@st.composite
def point_sets(draw, scenes: list[Scene], max_points: int = 40):
    """``(xs, ys, crs)``: points built from pixel positions of the scenes' bands, given in ``crs``.

    Exact pixel edges stay exact when the points are given in the anchor raster's own CRS.
    """
    crs = draw(st.sampled_from([UTM32, UTM33, WGS84]))
    files = [f for s in scenes for f in s.bands.values()]
    n = draw(st.integers(1, max_points))
    xs, ys = [], []
    for _ in range(n):
        same_crs = [f for f in files if f.crs == crs]
        f = draw(st.sampled_from(same_crs if same_crs and draw(st.booleans()) else files))
        col, row = draw(pixel_points(f))
        x, y = f.transform @ (col, row)
        (x,), (y,) = to_crs([x], [y], f.crs, crs)
        xs.append(float(x))
        ys.append(float(y))
    return np.asarray(xs), np.asarray(ys), crs
