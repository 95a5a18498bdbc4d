"""Scenes, collections and the rasterio/GDAL oracle for the lazy stack tests (``test_xarray.py``).

Scenes are small COGs written by GDAL (rasterio) around one place near 12° E / 48.3° N, where UTM zones
32 and 33 meet, in three CRSs (both zones and EPSG:4326), so that one output grid meets records that
are warped across zones, from geographic coordinates, and copied. Each record has a 10 m band ``B04``
and a 20 m band ``B05`` (uint16, nodata 0, holes of nodata inside). The oracle for a record on a grid
is ``rasterio.warp.reproject`` of the whole record onto the whole grid (DESIGN.md §4).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import rasterio.warp
import shapely
from affine import Affine
from pyproj import Transformer
from rasterio.enums import Resampling

import rasteret_dask as rd
from rasteret_dask.geo.grid import Grid
from tests.gdal_api import gdal_warp

WGS84, UTM32, UTM33 = "EPSG:4326", "EPSG:32632", "EPSG:32633"
CENTRE = (11.98, 48.31)  # lon, lat: 15 km west of the zone boundary at 12° E
T0 = pd.Timestamp("2024-05-01 10:00", tz="UTC")
BANDS = ("B04", "B05")
# Pixel size of B04 per CRS (B05 is twice as coarse). 4326: about 7.4 m east-west by 11 m north-south.
RESOLUTION = {UTM32: 10.0, UTM33: 10.0, WGS84: 0.0001}


@functools.lru_cache(maxsize=16)
def _transformer(src: str, dst: str) -> Transformer:
    return Transformer.from_crs(src, dst, always_xy=True)


def to_crs(x, y, src: str, dst: str):
    """Points from ``src`` to ``dst`` (x/easting/longitude first)."""
    if src == dst:
        return np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    tx, ty = _transformer(src, dst).transform(x, y)
    return np.asarray(tx), np.asarray(ty)


@dataclass(frozen=True)
class Scene:
    """One record: its bands' files share an origin; ``B05`` has half as many pixels of twice the size."""

    id: str
    datetime: pd.Timestamp
    crs: str
    transform: Affine
    size: int
    paths: dict[str, Path]
    extra: dict = field(default_factory=dict)

    def footprint(self) -> shapely.Polygon:
        """The outline in CRS84, densified (covers every pixel)."""
        t = np.linspace(0.0, 1.0, 33)
        n = self.size
        cols = np.concatenate([t * n, np.full_like(t, n), (1 - t) * n, np.zeros_like(t)])
        rows = np.concatenate([np.zeros_like(t), t * n, np.full_like(t, n), (1 - t) * n])
        x, y = self.transform @ (cols, rows)
        lon, lat = to_crs(x, y, self.crs, "OGC:CRS84")
        return shapely.Polygon(np.column_stack([lon, lat]))


def pattern(rng: np.random.Generator, size: int, phase: float) -> np.ndarray:
    """Smooth values with noise in 1..3000 (never 0, the nodata), with holes and a west stripe of 0."""
    yy, xx = np.mgrid[0:size, 0:size]
    base = 1500 + 900 * np.sin((xx + phase) / 9.0) * np.cos((yy - phase) / 13.0)
    data = np.clip(base + rng.integers(0, 300, (size, size)), 1, 3000).astype("uint16")
    data[:, : 3 + int(phase) % 5] = 0
    for _ in range(4):
        r, c = rng.integers(0, size - 12, 2)
        h, w = rng.integers(2, 12, 2)
        data[r : r + h, c : c + w] = 0
    return data


def write_cog(path: Path, data: np.ndarray, crs: str, transform: Affine, *, blocksize: int, nodata=0) -> Path:
    """``data`` (rows, cols) as a deflate COG with GDAL's COG driver (overviews by nearest)."""
    profile = {
        "driver": "COG",
        "width": data.shape[1],
        "height": data.shape[0],
        "count": 1,
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform,
        "blocksize": blocksize,
        "compress": "deflate",
        "nodata": nodata,
        "overview_resampling": "nearest",
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data[None])
    return path


def make_scene(
    directory: Path,
    scene_id: str,
    crs: str,
    when: pd.Timestamp,
    *,
    shift=(0, 0),
    size: int = 192,
    blocksize: int = 64,
    seed: int = 0,
    extra: dict | None = None,
) -> Scene:
    """A record centred near CENTRE, moved by ``shift`` B04 pixels (x, y), with bands B04 and B05."""
    rng = np.random.default_rng(seed)
    res = RESOLUTION[crs]
    cx, cy = to_crs(CENTRE[0], CENTRE[1], "OGC:CRS84", crs)
    # Origins on whole multiples of the 20 m pixel, so every scene of a zone shares one lattice.
    step = 2 * res
    x0 = round((float(cx) - size / 2 * res) / step) * step + shift[0] * res
    y0 = round((float(cy) + size / 2 * res) / step) * step - shift[1] * res
    transform = Affine(res, 0.0, x0, 0.0, -res, y0)
    paths = {
        "B04": write_cog(
            directory / f"{scene_id}_B04.tif",
            pattern(rng, size, seed),
            crs,
            transform,
            blocksize=blocksize,
        ),
        "B05": write_cog(
            directory / f"{scene_id}_B05.tif",
            pattern(rng, size // 2, seed + 2),
            crs,
            transform @ Affine.scale(2),
            blocksize=blocksize,
        ),
    }
    return Scene(scene_id, when, crs, transform, size, paths, extra or {})


def make_masked_scene(directory: Path, *, size: int = 192, blocksize: int = 64) -> Scene:
    """A zone-33 record whose B04 has no nodata but an internal mask (GDAL_TIFF_INTERNAL_MASK) with holes;
    a COG, so each mask tile sits right after its data tile."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    x, y = to_crs(CENTRE[0], CENTRE[1], "OGC:CRS84", UTM33)
    transform = Affine(10.0, 0.0, round(float(x)), 0.0, -10.0, round(float(y)))
    data = rng.integers(1, 3000, (1, size, size)).astype("uint16")
    mask = np.full((size, size), 255, dtype="uint8")
    mask[50:90, 60:120] = 0
    mask[:, :7] = 0
    path = directory / "masked_B04.tif"
    profile = {
        "driver": "COG",
        "width": size,
        "height": size,
        "count": 1,
        "dtype": "uint16",
        "crs": UTM33,
        "transform": transform,
        "blocksize": blocksize,
        "compress": "deflate",
    }
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        ds.write_mask(mask)
    return Scene("masked", T0, UTM33, transform, size, {"B04": path})


def reproject_band(path: Path, grid: Grid, method: str, fill) -> np.ndarray:
    """``rasterio.warp.reproject`` of the file's first band as a dataset band, so GDAL applies its mask."""
    with rasterio.open(path) as src:
        out = np.full(grid.shape, fill, dtype=src.dtypes[0])
        rasterio.warp.reproject(
            rasterio.band(src, 1),
            out,
            dst_transform=Affine(*grid.transform),
            dst_crs=grid.crs,
            dst_nodata=fill,
            resampling=Resampling[method],
        )
    return out


def make_scenes(directory: Path) -> list[Scene]:
    """Six records: two per CRS (zone 32, zone 33, EPSG:4326), overlapping one another in part."""
    directory.mkdir(parents=True, exist_ok=True)
    layout = [
        ("a32", UTM32, T0, (0, 0)),
        ("b33", UTM33, T0, (20, -14)),
        ("c84", WGS84, T0 + pd.Timedelta(minutes=5), (-30, 16)),
        ("d32", UTM32, T0 + pd.Timedelta(days=1), (44, 30)),
        ("e33", UTM33, T0 + pd.Timedelta(days=1), (-36, 0)),
        ("f84", WGS84, T0 + pd.Timedelta(days=2), (10, -40)),
    ]
    return [
        make_scene(directory, sid, crs, when, shift=shift, seed=k)
        for k, (sid, crs, when, shift) in enumerate(layout)
    ]


def records_table(scenes: list[Scene], href=lambda path: str(path)) -> gpd.GeoDataFrame:
    """The scenes as a table ``build_from_table`` takes (``href`` maps a local path to the asset URL)."""
    rows = [
        {
            "id": s.id,
            "datetime": s.datetime,
            "geometry": s.footprint(),
            "assets": {b: {"href": href(p), "band_index": None} for b, p in s.paths.items()},
            **s.extra,
        }
        for s in scenes
    ]
    return gpd.GeoDataFrame(rows, geometry="geometry", crs="OGC:CRS84")


def build(scenes: list[Scene], *, href=lambda path: str(path), **kwargs) -> rd.Collection:
    return rd.build_from_table(records_table(scenes, href), progress=False, **kwargs)


# ------------------------------------------------------------------------------------------- the oracle


def dataset_grid(ds) -> Grid:
    """The output grid of a stack Dataset, from its CF ``spatial_ref`` (GDAL geotransform order)."""
    c, a, b, f, d, e = (float(v) for v in ds.spatial_ref.attrs["GeoTransform"].split())
    crs = ds.spatial_ref.attrs["crs_wkt"]
    epsg = rasterio.crs.CRS.from_wkt(crs).to_epsg()
    return Grid(f"EPSG:{epsg}" if epsg else crs, (a, b, c, d, e, f), ds.sizes["x"], ds.sizes["y"])


def reproject_file(path: Path, grid: Grid, method: str, fill, *, level: int | None = None) -> np.ndarray:
    """``rasterio.warp.reproject`` of the whole file (or its overview ``level``, 0-based) onto ``grid``."""
    kwargs = {} if level is None else {"overview_level": level}
    with rasterio.open(path, **kwargs) as src:
        data, transform, crs, nodata = src.read(1), src.transform, src.crs, src.nodata
    out = np.full(grid.shape, fill, dtype=data.dtype)
    rasterio.warp.reproject(
        data,
        out,
        src_transform=transform,
        src_crs=crs,
        src_nodata=nodata,
        dst_transform=Affine(*grid.transform),
        dst_crs=grid.crs,
        dst_nodata=fill,
        resampling=Resampling[method],
    )
    return out


def gdalwarp_file(path: Path, grid: Grid, method: str, fill, workdir: Path) -> np.ndarray:
    """``gdalwarp`` of the file onto ``grid``, run by the GDAL that rasterio uses (its ``GDALWarp`` C API, the
    ``gdalwarp`` program's body): unlike ``reproject``, it picks the overview level to read itself
    (``-ovr AUTO``). The Debian ``gdalwarp`` command is an older GDAL whose overview rule differs."""
    left, bottom, right, top = grid.bounds
    out = workdir / f"gdalwarp_{path.stem}_{method}_{grid.width}x{grid.height}.tif"
    args = [
        "-q",
        "-overwrite",
        "-of",
        "GTiff",
        "-t_srs",
        grid.crs,
        "-te",
        *(repr(v) for v in (left, bottom, right, top)),
        "-ts",
        str(grid.width),
        str(grid.height),
        "-r",
        method,
        "-dstnodata",
        str(fill),
    ]
    gdal_warp(path, out, args)
    with rasterio.open(out) as ds:
        return ds.read(1)


def native_read(path: Path, grid: Grid, fill) -> np.ndarray:
    """A rasterio windowed read of the file placed on ``grid`` (which shares its pixel lattice)."""
    with rasterio.open(path) as src:
        window = rasterio.windows.from_bounds(*grid.bounds, transform=src.transform)
        window = window.round_offsets().round_lengths()
        return src.read(1, window=window, boundless=True, fill_value=fill)


def agreement(ours: np.ndarray, theirs: np.ndarray, fill) -> dict:
    """Where either side has a value: how many pixels, how many (and which fraction) are identical or
    within 1e-3 relative, and the largest differences."""
    considered = (ours != fill) | (theirs != fill)
    same = (ours == theirs) & considered
    diff = np.abs(ours.astype(np.float64) - theirs.astype(np.float64))
    scale = np.maximum(np.abs(theirs.astype(np.float64)), 1.0)
    close = (diff / scale <= 1e-3) & (ours != fill) & (theirs != fill) | same
    n = max(int(considered.sum()), 1)
    return {
        "pixels": int(considered.sum()),
        "identical": int(same.sum()),
        "fraction": float(same.sum() / n),
        "close_fraction": float((close & considered).sum() / n),
        "max_abs": float(diff[considered].max(initial=0.0)),
        "max_rel": float((diff / scale)[considered].max(initial=0.0)),
    }


# ------------------------------------------------------------------------------ many synthetic records


@dataclass(frozen=True)
class Synthetic:
    """A collection of records whose headers are copies of one small COG's, moved to many places.

    ``boxes[k] = (step, row0, col0)``: record ``k``'s time step and top-left pixel on the common grid
    (``transform``, in ``crs``); every record is ``size`` x ``size`` pixels.
    """

    collection: rd.Collection
    crs: str
    transform: Affine
    size: int
    boxes: list[tuple[int, int, int]]


def synthetic_collection(
    template_dir: Path, n: int, *, per_row: int = 50, spacing: int = 150, dates: int = 4, seed: int = 0
) -> Synthetic:
    """``n`` records on one UTM zone 33 lattice, ``spacing`` pixels apart (jittered by whole pixels) in rows
    of ``per_row``, over ``dates`` datetimes; built with ``enrich=False`` and headers filled in from one
    generated 64 x 64 COG (``rasteret_dask.tiff.arrow.header_to_dict``) with moved transforms."""
    import dataclasses

    from rasteret_dask.tiff.arrow import header_to_dict

    rng = np.random.default_rng(seed)
    size, res = 64, 10.0
    x0, y0 = 300_000.0, 5_400_000.0
    template_dir.mkdir(parents=True, exist_ok=True)
    path = write_cog(
        template_dir / "template.tif",
        np.arange(1, size * size + 1, dtype="uint16").reshape(size, size),
        UTM33,
        Affine(res, 0.0, x0, 0.0, -res, y0),
        blocksize=32,
    )
    header = rd.read_cog_header(str(path)).tiff
    rows, metadata, boxes = [], [], []
    for k in range(n):
        row0 = (k // per_row) * spacing + int(rng.integers(0, spacing - size))
        col0 = (k % per_row) * spacing + int(rng.integers(0, spacing - size))
        step = k % dates
        transform = Affine(res, 0.0, x0 + col0 * res, 0.0, -res, y0 - row0 * res)
        moved = dataclasses.replace(
            header, geo=dataclasses.replace(header.geo, transform=tuple(transform)[:6])
        )
        metadata.append(header_to_dict(moved))
        scene = Scene(f"r{k:05d}", T0 + pd.Timedelta(days=step), UTM33, transform, size, {"B04": path})
        rows.append(
            {
                "id": scene.id,
                "datetime": scene.datetime,
                "geometry": shapely.box(*shapely.bounds(scene.footprint())),
                "assets": {"B04": {"href": str(path), "band_index": None}},
                "proj:epsg": 32633,
            }
        )
        boxes.append((step, row0, col0))
    table = gpd.GeoDataFrame(rows, geometry="geometry", crs="OGC:CRS84")
    frame = rd.build_from_table(table, enrich=False, progress=False).frame.compute()
    frame["B04_metadata"] = [metadata[int(i[1:])] for i in frame["id"]]
    collection = rd.as_collection(frame)
    return Synthetic(collection, UTM33, Affine(res, 0.0, x0, 0.0, -res, y0), size, boxes)
