"""Point sampling: the pixel under each point in every record that covers it (DESIGN.md §4).

One task per partition of (spatially partitioned) points. In a task, points are matched to record
coverage boxes (a longitude-sorted slice of the points per box), carried into each record's CRS (once
per CRS), and grouped by the tile holding their pixel; each tile is fetched and decoded once for all
points and all bands that need it. Nodata, masked and sparse-tile pixels are missing values (pandas NA),
never numbers.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import dask
import dask.dataframe as dd
import dask_geopandas
import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import shapely
from affine import Affine

from ..cog import WindowRead, iter_masked_windows, plan_mask_read, plan_window_read
from ..errors import PlanError, SchemaError
from ..geo.hilbert import hilbert_keys
from ..geo.points import fractional_indices, nearest_valid, ring_offsets
from ..geo.warp import transformer
from ..geo.windows import PixelWindow
from ..io.config import IOConfig
from .point_files import read_points_parquet, table_to_frame
from .records import RecordSource, record_sources
from .validity import valid_pixels

MATCHES = ("all", "latest")
LAYOUTS = ("wide", "long")
OUTPUT_COLUMNS = ("record_id", "datetime", "band", "value")


@dataclass(frozen=True)
class SampleSpec:
    """What every sampling task needs (small and picklable: no collection, no client)."""

    bands: tuple[str, ...]
    dtypes: tuple[str, ...]
    point_crs: str
    x_column: str | None
    y_column: str | None
    geometry_column: str | None
    match: str = "all"
    max_distance_pixels: int = 0
    layout: str = "wide"
    errors: str = "warn"
    storage_options: dict | None = field(default=None, compare=False)
    config: IOConfig | None = None


def nullable_dtype(dtype: str):
    """The pandas nullable extension dtype of a numpy dtype name (uint16 -> UInt16, float32 -> Float32)."""
    kind = np.dtype(dtype)
    if kind.kind == "f":
        return pd.Float32Dtype() if kind.itemsize <= 4 else pd.Float64Dtype()
    return pd.api.types.pandas_dtype(
        dtype.replace("uint", "UInt").replace("int", "Int").replace("UInt", "UInt")
    )


def _coordinates(points: pd.DataFrame, spec: SampleSpec) -> tuple[np.ndarray, np.ndarray]:
    if spec.geometry_column is not None:
        geoms = np.asarray(points[spec.geometry_column].array)
        kinds = shapely.get_type_id(geoms)
        others = (kinds != shapely.GeometryType.POINT) & (kinds != shapely.GeometryType.MISSING)
        if others.any():
            raise PlanError(
                f"points must be Point geometries; {int(others.sum())} in this partition are not (the first"
                f" is a {geoms[others][0].geom_type}): sample areas with get_gdf/get_numpy, or take their centroids first"
            )
        return shapely.get_x(geoms), shapely.get_y(geoms)
    return (
        points[spec.x_column].to_numpy(dtype=np.float64, na_value=np.nan),
        points[spec.y_column].to_numpy(dtype=np.float64, na_value=np.nan),
    )


def _to_crs(xs: np.ndarray, ys: np.ndarray, src: str, dst: str) -> tuple[np.ndarray, np.ndarray]:
    tr = transformer(src, dst)
    if tr is None:
        return xs, ys
    x, y = tr.transform(xs, ys, errcheck=False)
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


@dataclass(frozen=True)
class _Chunk:
    """The samples of one tile of one record-band: per point its value in the band's output dtype,
    whether it is valid, and (with ``max_distance_pixels``) the pixel used."""

    points: np.ndarray
    record: int
    band: int
    values: np.ndarray
    valid: np.ndarray
    rows: np.ndarray | None
    cols: np.ndarray | None


@dataclass
class _Samples:
    """The sampled chunks of one task. They are added in any order (tiles arrive in completion order),
    each with its plan's ``key``, and are read in key order, so the output does not depend on arrival."""

    chunks: dict = field(default_factory=dict)

    def add(self, key: int, chunk: _Chunk) -> None:
        self.chunks[key] = chunk

    def ordered(self, band: int | None = None) -> list[_Chunk]:
        """The chunks in key order (of one band only when ``band`` is given)."""
        chunks = [self.chunks[k] for k in sorted(self.chunks)]
        return chunks if band is None else [c for c in chunks if c.band == band]


def _concat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)


@dataclass(frozen=True)
class _TilePlan:
    """The points of one record-band that fall in one tile (the tile plus ``k`` pixels around it)."""

    record: int
    band: int
    points: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    frac_r: np.ndarray
    frac_c: np.ndarray
    read: WindowRead
    mask: WindowRead | None
    nodata: float | None


def _plan_record(
    record: RecordSource, r: int, idx: np.ndarray, xs: np.ndarray, ys: np.ndarray, k: int
) -> list[_TilePlan]:
    """Plan the reads of every band of one record at points ``idx`` (coordinates in the record's CRS)."""
    plans = []
    pixels: dict[tuple, tuple] = {}  # bands on one grid share their pixel positions
    for b, source in enumerate(record.bands):
        if source is None or source.header.geo.transform is None:
            continue
        header = source.header
        grid = tuple(header.geo.transform[:6])
        if grid not in pixels:
            frac_r, frac_c = fractional_indices(grid, xs, ys)
            with np.errstate(invalid="ignore"):
                pixels[grid] = (frac_r, frac_c, np.floor(frac_r), np.floor(frac_c))
        frac_r, frac_c, rows, cols = pixels[grid]
        inside = (rows >= 0) & (rows < header.height) & (cols >= 0) & (cols < header.width)
        if not inside.any():
            continue
        rows, cols = rows[inside].astype(np.int64), cols[inside].astype(np.int64)
        points, frac_r, frac_c = idx[inside], frac_r[inside], frac_c[inside]
        th, tw = header.levels[0].tile_height, header.levels[0].tile_width
        tile_key = (rows // th) * (header.levels[0].tiles_across + 1) + cols // tw
        order = np.argsort(tile_key, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(tile_key[order]) != 0])
        for sel in np.split(order, starts[1:]):
            tr, tc = int(rows[sel[0]] // th), int(cols[sel[0]] // tw)
            window = PixelWindow(
                max(tr * th - k, 0),
                min((tr + 1) * th + k, header.height),
                max(tc * tw - k, 0),
                min((tc + 1) * tw + k, header.width),
            )
            plans.append(
                _TilePlan(
                    r,
                    b,
                    points[sel],
                    rows[sel],
                    cols[sel],
                    frac_r[sel],
                    frac_c[sel],
                    plan_window_read(source.url, header, window, samples=(source.sample,)),
                    plan_mask_read(source.url, header, window),
                    header.nodata,
                )
            )
    return plans


def _sparse_at(read: WindowRead, wr: np.ndarray, wc: np.ndarray) -> np.ndarray:
    """Whether each window pixel ``(wr, wc)`` lies in a sparse (never written) tile."""
    th, tw = read.codec.tile_height, read.codec.tile_width
    sparse = {(t.tile_row, t.tile_col) for t in read.tiles if t.sparse}
    if not sparse:
        return np.zeros(wr.shape, dtype=bool)
    tile_rows, tile_cols = (wr + read.window.row_start) // th, (wc + read.window.col_start) // tw
    return np.array(
        [(a, b) in sparse for a, b in zip(tile_rows.ravel(), tile_cols.ravel(), strict=True)]
    ).reshape(wr.shape)


def _valid_at(plan: _TilePlan, data: np.ndarray, mask, wr: np.ndarray, wc: np.ndarray) -> np.ndarray:
    """GDAL's mask band at window pixels ``(wr, wc)`` only (not over the whole tile)."""
    at_mask = None if mask is None else mask[:, wr, wc]
    return valid_pixels(data[wr, wc], plan.nodata, plan.read.codec, at_mask) & ~_sparse_at(plan.read, wr, wc)


def _sample_tile(key: int, plan: _TilePlan, data: np.ndarray, mask, spec: SampleSpec, out: _Samples) -> None:
    """Sample one tile's points (nearest valid pixel within ``k`` where the pixel is invalid)."""
    k = spec.max_distance_pixels
    wr, wc = plan.rows - plan.read.window.row_start, plan.cols - plan.read.window.col_start
    value, ok = data[wr, wc], _valid_at(plan, data, mask, wr, wc)
    used_r, used_c = (plan.rows.copy(), plan.cols.copy()) if k else (None, None)
    if k and (~ok).any():
        offsets = ring_offsets(k)
        bad = np.flatnonzero(~ok)
        nr = wr[bad, None] + offsets[None, :, 0]
        nc = wc[bad, None] + offsets[None, :, 1]
        within = (nr >= 0) & (nr < data.shape[0]) & (nc >= 0) & (nc < data.shape[1])
        cand = np.zeros(nr.shape, dtype=bool)
        cand[within] = _valid_at(plan, data, mask, nr[within], nc[within])
        best = nearest_valid(
            plan.frac_r[bad], plan.frac_c[bad], plan.rows[bad], plan.cols[bad], cand, offsets
        )
        found = best >= 0
        pick = bad[found]
        br, bc = nr[found, best[found]], nc[found, best[found]]
        value[pick], ok[pick] = data[br, bc], True
        used_r[pick], used_c[pick] = br + plan.read.window.row_start, bc + plan.read.window.col_start
    with np.errstate(invalid="ignore"):  # a record whose band has another dtype: cast to the output's
        values = value.astype(spec.dtypes[plan.band], copy=False)
    out.add(key, _Chunk(plan.points, plan.record, plan.band, values, ok, used_r, used_c))


def _sample_plans(plans: list[_TilePlan], spec: SampleSpec, out: _Samples) -> None:
    """Fetch the planned tiles (each once, files concurrently) and sample each as soon as it is decoded:
    streamed within the reader's default byte budget, tiles dropped once sampled, so memory stays bounded
    (and is reused) however many tiles a partition of points touches."""
    for k, data, mask in iter_masked_windows(
        [(plan.read, plan.mask) for plan in plans],
        storage_options=spec.storage_options,
        config=spec.config,
    ):
        _sample_tile(k, plans[k], data[0], mask, spec, out)


def _padded(box, share: float = 0.01) -> tuple[float, float, float, float]:
    """``box`` grown on every side by ``share`` of its larger side (and a hair, for boxes of zero size)."""
    w, s, e, n = box
    pad = share * max(e - w, n - s) + 1e-7
    return w - pad, s - pad, e + pad, n + pad


def _coverage_box(record: RecordSource, footprint) -> tuple[float, float, float, float] | None:
    """A CRS84 box holding the record's footprint and every pixel of its bands' rasters, padded a little.

    The footprint alone does not do: it is often drawn with few vertices, or is the outline of the valid
    data, while a point belongs to a record whenever it lies in the raster (rasterio's rule), first and
    last rows and columns included.
    """
    boxes = []
    if footprint is not None and not shapely.is_empty(footprint):
        boxes.append(shapely.bounds(footprint))
    grids = {
        (tuple(s.header.geo.transform[:6]), s.header.width, s.header.height)
        for s in record.bands
        if s is not None and s.header.geo.transform is not None
    }
    t = np.linspace(0.0, 1.0, 17)
    for transform, w, h in grids if record.crs else ():
        cols = np.concatenate([w * t, np.full(t.size, w), w * t, np.zeros(t.size)])
        rows = np.concatenate([np.zeros(t.size), h * t, np.full(t.size, h), h * t])
        x, y = Affine(*transform) @ (cols, rows)
        lon, lat = _to_crs(np.asarray(x), np.asarray(y), record.crs, "OGC:CRS84")
        ok = np.isfinite(lon) & np.isfinite(lat)
        if ok.any():
            boxes.append((lon[ok].min(), lat[ok].min(), lon[ok].max(), lat[ok].max()))
    if not boxes:
        return None
    boxes = np.asarray(boxes, dtype=np.float64)
    return _padded((*boxes[:, :2].min(axis=0), *boxes[:, 2:].max(axis=0)))


def _points_in_boxes(lon: np.ndarray, lat: np.ndarray, boxes: list) -> list[np.ndarray]:
    """Per box (west, south, east, north; None for none): the ascending indices of the points in it,
    edges included. The points are sorted by longitude once; each box takes its slice of them."""
    order = np.argsort(lon, kind="stable")
    lon_sorted = lon[order]
    out = []
    for box in boxes:
        if box is None:
            out.append(np.empty(0, dtype=np.int64))
            continue
        west, south, east, north = box
        start = np.searchsorted(lon_sorted, west, side="left")
        stop = np.searchsorted(lon_sorted, east, side="right")
        candidates = order[start:stop]
        in_lat = (lat[candidates] >= south) & (lat[candidates] <= north)
        out.append(np.sort(candidates[in_lat]))
    return out


def _in_record_crs(
    xs: np.ndarray, ys: np.ndarray, point_crs: str, records: list[RecordSource], matched: list[np.ndarray]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The matched points of each record in the record's CRS, each point transformed once per CRS."""
    by_crs: dict[str, list[int]] = {}
    for r, idx in enumerate(matched):
        if len(idx):
            by_crs.setdefault(records[r].crs, []).append(r)
    local: list = [None] * len(records)
    for crs, members in by_crs.items():
        union = np.unique(np.concatenate([matched[r] for r in members]))
        ux, uy = _to_crs(xs[union], ys[union], point_crs, crs)
        for r in members:
            at = np.searchsorted(union, matched[r])
            local[r] = (ux[at], uy[at])
    return local


def sample_partition(points: pd.DataFrame, *records_parts: pd.DataFrame, spec: SampleSpec) -> pd.DataFrame:
    """Sample one partition of points against the records partitions that may cover it."""
    points = points.reset_index(drop=True)
    xs, ys = _coordinates(points, spec)
    keep = np.isfinite(xs) & np.isfinite(ys)
    if not keep.all():  # documented: rows without coordinates are dropped
        points, xs, ys = points[keep].reset_index(drop=True), xs[keep], ys[keep]
    parts = [p for p in records_parts if len(p)]
    frame = pd.concat(parts, ignore_index=True) if parts else None
    samples = _Samples()
    records: list[RecordSource] = []
    if frame is not None and len(points):
        frame = frame.sort_values(["datetime", "id"], kind="stable").reset_index(drop=True)
        records = record_sources(frame, list(spec.bands), errors=spec.errors)
        lon, lat = _to_crs(xs, ys, spec.point_crs, "OGC:CRS84")
        footprints = np.asarray(frame.geometry.array)
        boxes = [_coverage_box(rec, fp) for rec, fp in zip(records, footprints, strict=True)]
        # A coarse match only: whether a point lies in a record's raster is decided in its CRS below.
        matched = _points_in_boxes(lon, lat, boxes)
        local = _in_record_crs(xs, ys, spec.point_crs, records, matched)
        plans = []
        for r, idx in enumerate(matched):
            if len(idx):
                plans += _plan_record(records[r], r, idx, *local[r], spec.max_distance_pixels)
        _sample_plans(plans, spec, samples)
    return _assemble(points, records, samples, spec)


@dataclass(frozen=True)
class _Picked:
    """Samples as columns: per sample its point, record, value, validity and (with
    ``max_distance_pixels``) the pixel used."""

    points: np.ndarray
    records: np.ndarray
    values: np.ndarray
    valid: np.ndarray
    rows: np.ndarray | None
    cols: np.ndarray | None

    def take(self, index: np.ndarray) -> _Picked:
        return _Picked(*(None if v is None else v[index] for v in vars(self).values()))


def _gather(chunks: list[_Chunk], dtype, nearest: bool) -> _Picked:
    """The samples of ``chunks`` as columns, in chunk order, values cast to ``dtype``."""
    return _Picked(
        _concat([c.points for c in chunks], np.int64),
        _concat([np.full(len(c.points), c.record) for c in chunks], np.int64),
        _concat([c.values.astype(dtype, copy=False) for c in chunks], dtype),
        _concat([c.valid for c in chunks], bool),
        *(
            _concat([getattr(c, name) for c in chunks], np.int64) if nearest else None
            for name in ("rows", "cols")
        ),
    )


def _newest_valid(picked: _Picked, bands: np.ndarray | None = None) -> np.ndarray:
    """Per point (and band, when given): the index of the newest sample with a valid value, else of the
    newest sample; ordered by point, then band."""
    groups = (picked.points,) if bands is None else (bands, picked.points)
    # Records are in (datetime, id) order, so a higher record index is newer.
    order = np.lexsort((-picked.records, ~picked.valid, *groups))
    first = np.ones(len(order), dtype=bool)
    first[1:] = (np.diff(np.stack([g[order] for g in groups]), axis=1) != 0).any(axis=0)
    return order[first]


def _masked(values: np.ndarray, missing: np.ndarray, dtype: str):
    if np.dtype(dtype).kind == "f":
        return pd.arrays.FloatingArray(
            values.astype(np.float64 if np.dtype(dtype).itemsize > 4 else np.float32), missing
        )
    return pd.arrays.IntegerArray(values.astype(dtype), missing)


def _strings_at(labels: np.ndarray, index: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """``pd.array(labels[index], dtype="string")``, NA where ``index`` is negative, without a Python
    object per row (Arrow's take)."""
    positions = pa.array(index, pa.int64(), mask=index < 0)
    return pd.arrays.ArrowStringArray(pa.array(labels, pa.large_string()).take(positions))


def _row_index(keys, total: int, bound: int) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """The distinct keys (non-negative, below ``bound``) of the arrays ``keys()`` yields (``total`` keys
    in all), ascending, and a function giving the positions of keys in them. A dense table of ``bound``
    flags when it is not much larger than the keys (linear time, no sort, no array of all the keys at
    once), else a sort."""
    if bound > 4 * total + 1_000_000:
        unique = np.unique(_concat(list(keys()), np.int64))
        return unique, lambda k: np.searchsorted(unique, k)
    seen = np.zeros(bound, dtype=bool)
    for k in keys():
        seen[k] = True
    position = np.cumsum(seen, dtype=np.int64) - 1
    return np.flatnonzero(seen), position.__getitem__


def _pixel_columns(out: pd.DataFrame, band: str, n: int, placed: list[tuple]) -> None:
    """``{band}_row``/``{band}_col``: the pixel each value came from (NA where none), from the
    ``(positions, rows, cols)`` of each placed group of samples."""
    used_rows, used_cols = np.full(n, -1, dtype=np.int64), np.full(n, -1, dtype=np.int64)
    for at, rows, cols in placed:
        used_rows[at], used_cols[at] = rows, cols
    out[f"{band}_row"] = pd.arrays.IntegerArray(used_rows, used_rows < 0)
    out[f"{band}_col"] = pd.arrays.IntegerArray(used_cols, used_cols < 0)


def _long_samples(samples: _Samples, spec: SampleSpec) -> tuple[_Picked, np.ndarray]:
    """The long layout's samples (float64 values) and their bands: every sample in plan order, or with
    ``match="latest"`` the chosen one per (point, band), in that order."""
    chunks = samples.ordered()
    picked = _gather(chunks, np.float64, spec.max_distance_pixels > 0)
    bands = _concat([np.full(len(c.points), c.band) for c in chunks], np.int64)
    if spec.match == "latest":
        chosen = _newest_valid(picked, bands)
        picked, bands = picked.take(chosen), bands[chosen]
    return picked, bands


def _assemble(
    points: pd.DataFrame, records: list[RecordSource], samples: _Samples, spec: SampleSpec
) -> pd.DataFrame:
    ids = np.array([r.record_id for r in records] or [""], dtype=object)
    stamps = pd.DatetimeIndex([r.datetime for r in records] or [pd.NaT], tz="UTC").as_unit("us")
    nearest = spec.max_distance_pixels > 0
    if spec.layout == "long":
        picked, bands = _long_samples(samples, spec)
        out = points.iloc[picked.points].reset_index(drop=True)
        out["record_id"] = _strings_at(ids, picked.records)
        out["datetime"] = stamps[picked.records]
        out["band"] = _strings_at(np.asarray(spec.bands, dtype=object), bands)
        out["value"] = pd.arrays.FloatingArray(picked.values, ~picked.valid)
        if nearest:
            out["row"], out["col"] = picked.rows, picked.cols
        return out
    if spec.match == "latest":
        return _assemble_latest(points, ids, stamps, samples, spec)
    # wide, every record: one row per (point, record), in that order
    n_records = max(len(records), 1)
    chunks = samples.ordered()
    unique, row_of = _row_index(
        lambda: (c.points * n_records + c.record for c in chunks),
        sum(len(c.points) for c in chunks),
        len(points) * n_records,
    )
    n = len(unique)
    out = points.iloc[unique // n_records].reset_index(drop=True)
    record = unique % n_records
    out["record_id"] = _strings_at(ids, record)
    out["datetime"] = stamps[record] if n else pd.DatetimeIndex([], tz="UTC").as_unit("us")
    for b, (band, dtype) in enumerate(zip(spec.bands, spec.dtypes, strict=True)):
        values = np.zeros(n, dtype=dtype)
        missing = np.ones(n, dtype=bool)
        placed = []
        for chunk in chunks:
            if chunk.band == b:
                at = row_of(chunk.points * n_records + chunk.record)
                values[at] = chunk.values
                missing[at] = ~chunk.valid
                placed.append((at, chunk.rows, chunk.cols))
        out[band] = _masked(values, missing, dtype)
        if nearest:
            _pixel_columns(out, band, n, placed)
    return out


def _assemble_latest(
    points: pd.DataFrame, ids: np.ndarray, stamps: pd.DatetimeIndex, samples: _Samples, spec: SampleSpec
) -> pd.DataFrame:
    """Wide, newest valid record per point and band: one row per point any record covers."""
    nearest = spec.max_distance_pixels > 0
    chosen = []
    for b, dtype in enumerate(spec.dtypes):
        picked = _gather(samples.ordered(b), dtype, nearest)
        chosen.append(picked.take(_newest_valid(picked)))
    unique, row_of = _row_index(
        lambda: (c.points for c in chosen), sum(len(c.points) for c in chosen), len(points)
    )
    n = len(unique)
    out = points.iloc[unique].reset_index(drop=True)
    for band, dtype, picked in zip(spec.bands, spec.dtypes, chosen, strict=True):
        at = row_of(picked.points)
        column = np.zeros(n, dtype=dtype)
        missing = np.ones(n, dtype=bool)
        column[at], missing[at] = picked.values, ~picked.valid
        out[band] = _masked(column, missing, dtype)
        rec = np.full(n, -1, dtype=np.int64)
        rec[at] = picked.records
        out[f"{band}_record_id"] = _strings_at(ids, rec)
        # NaT where no record covers the point; tz-aware UTC like ``datetime`` (and the meta) always
        out[f"{band}_datetime"] = stamps.take(np.maximum(rec, 0)).where(rec >= 0)
        if nearest:
            _pixel_columns(out, band, n, [(at, picked.rows, picked.cols)])
    return out


def output_columns(spec: SampleSpec) -> list[str]:
    """The columns sampling adds to the points' own columns, for ``spec``'s match, layout and bands."""
    nearest = spec.max_distance_pixels > 0
    if spec.layout == "long":
        return ["record_id", "datetime", "band", "value", *(["row", "col"] if nearest else [])]
    out = ["record_id", "datetime"] if spec.match == "all" else []
    for band in spec.bands:
        out.append(band)
        if spec.match == "latest":
            out += [f"{band}_record_id", f"{band}_datetime"]
        if nearest:
            out += [f"{band}_row", f"{band}_col"]
    return out


def check_sample_args(match: str, layout: str, max_distance_pixels: int) -> None:
    if match not in MATCHES:
        raise PlanError(f"match must be one of {MATCHES}, got {match!r}")
    if layout not in LAYOUTS:
        raise PlanError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if not isinstance(max_distance_pixels, int) or max_distance_pixels < 0:
        raise PlanError(f"max_distance_pixels must be a non-negative integer, got {max_distance_pixels!r}")


# -- graph ----------------------------------------------------------------------------------------

POINTS_PER_PARTITION = 250_000
_HILBERT = "__rasteret_hilbert__"


def points_frame(points, *, storage_options: dict | None = None) -> dd.DataFrame:
    """Points of any supported kind as a dask (geo)dataframe, lazily where the input is lazy."""
    if isinstance(points, str | os.PathLike):
        return read_points_parquet(str(points), storage_options, POINTS_PER_PARTITION)
    if isinstance(points, dd.DataFrame):
        return points
    if isinstance(points, pa.Table):
        points = table_to_frame(points)
    if isinstance(points, gpd.GeoDataFrame):
        return dask_geopandas.from_geopandas(
            points, npartitions=max(1, -(-len(points) // POINTS_PER_PARTITION))
        )
    if isinstance(points, pd.DataFrame):
        return dd.from_pandas(points, npartitions=max(1, -(-len(points) // POINTS_PER_PARTITION)))
    raise PlanError(
        f"points must be a pandas/geopandas/dask frame, a pyarrow Table or a Parquet path, not {type(points).__name__}"
    )


def _xy_of(part: pd.DataFrame, spec: SampleSpec) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = _coordinates(part, spec)
    return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)


def _partition_box(part: pd.DataFrame, spec: SampleSpec) -> pd.DataFrame:
    xs, ys = _xy_of(part, spec)
    ok = np.isfinite(xs) & np.isfinite(ys)
    if not ok.any():
        return pd.DataFrame({"x0": [np.nan], "y0": [np.nan], "x1": [np.nan], "y1": [np.nan], "n": [0]})
    return pd.DataFrame(
        {
            "x0": [xs[ok].min()],
            "y0": [ys[ok].min()],
            "x1": [xs[ok].max()],
            "y1": [ys[ok].max()],
            "n": [int(ok.sum())],
        }
    )


def _with_hilbert(part: pd.DataFrame, spec: SampleSpec, bounds) -> pd.DataFrame:
    xs, ys = _xy_of(part, spec)
    return part.assign(**{_HILBERT: hilbert_keys(xs, ys, bounds).astype(np.int64) >> 1})


def spatially_sorted(frame: dd.DataFrame, spec: SampleSpec) -> tuple[dd.DataFrame, np.ndarray]:
    """Points shuffled into partitions along a Hilbert curve (kept as they are when already spatially
    partitioned), and each output partition's extent ``(x0, y0, x1, y1)`` in the points' CRS (NaN when it
    has no point), learnt from small summaries of the input without running the shuffle itself."""
    boxes = frame.map_partitions(
        _partition_box, spec, meta=_partition_box(frame._meta, spec).iloc[:0]
    ).compute()
    extents = boxes[["x0", "y0", "x1", "y1"]].to_numpy()
    if getattr(frame, "spatial_partitions", None) is not None or boxes["x0"].isna().all():
        return frame, extents
    bounds = (boxes["x0"].min(), boxes["y0"].min(), boxes["x1"].max(), boxes["y1"].max())
    keyed = frame.map_partitions(
        _with_hilbert, spec, bounds, meta=frame._meta.assign(**{_HILBERT: np.int64(0)})
    )
    # Inputs read from files come in partitions of whatever size the files had: one task per
    # POINTS_PER_PARTITION points at most keeps a task's memory bounded and every worker busy.
    npartitions = max(frame.npartitions, -(-int(boxes["n"].sum()) // POINTS_PER_PARTITION))
    sample, cells = dask.compute(
        keyed.map_partitions(_key_sample, meta=_key_sample(keyed._meta)),
        keyed.map_partitions(_cell_boxes, spec, meta=_cell_boxes(keyed._meta, spec)),
    )
    # Our own divisions: dask's set_index(npartitions=) fails (an AssertionError in its repartition) when
    # its quantiles repeat, e.g. all points in one Hilbert cell or a few points in several partitions.
    divisions = _divisions(sample, npartitions)
    shuffled = keyed.set_index(_HILBERT, divisions=divisions).reset_index(drop=True)
    return shuffled, _division_extents(cells, divisions)


# Extents of shuffled partitions are unions of the extents of the points in coarse Hilbert cells (of
# 2**_CELL_BITS along the curve), so the summary of a partition has at most that many rows.
_CELL_BITS = 12
_CELL_SHIFT = 31 - _CELL_BITS  # keys are 31 bits: level-16 Hilbert distances halved (see _with_hilbert)


def _cell_boxes(part: pd.DataFrame, spec: SampleSpec) -> pd.DataFrame:
    """Per coarse Hilbert cell holding finite points of the partition, their extent."""
    xs, ys = _xy_of(part, spec)
    ok = np.isfinite(xs) & np.isfinite(ys)
    cell = part[_HILBERT].to_numpy(dtype=np.int64)[ok] >> _CELL_SHIFT
    order = np.argsort(cell, kind="stable")
    cell, xs, ys = cell[order], xs[ok][order], ys[ok][order]
    if not len(cell):
        return pd.DataFrame({"cell": cell, "x0": xs, "y0": ys, "x1": xs, "y1": ys})
    starts = np.flatnonzero(np.r_[True, cell[1:] != cell[:-1]])
    return pd.DataFrame(
        {
            "cell": cell[starts],
            "x0": np.minimum.reduceat(xs, starts),
            "y0": np.minimum.reduceat(ys, starts),
            "x1": np.maximum.reduceat(xs, starts),
            "y1": np.maximum.reduceat(ys, starts),
        }
    )


def _division_extents(cells: pd.DataFrame, divisions: list[int]) -> np.ndarray:
    """``(x0, y0, x1, y1)`` per partition between ``divisions``: the union of the cells its key range
    meets (a cell cut by a division counts for both sides)."""
    out = np.full((len(divisions) - 1, 4), np.nan)
    cell = cells["cell"].to_numpy(dtype=np.int64)
    values = cells[["x0", "y0", "x1", "y1"]].to_numpy()
    for i, (lo, hi) in enumerate(itertools.pairwise(divisions)):
        meets = (cell >= lo >> _CELL_SHIFT) & (cell <= hi >> _CELL_SHIFT)
        if meets.any():
            out[i] = [*values[meets, :2].min(axis=0), *values[meets, 2:].max(axis=0)]
    return out


def _key_sample(part: pd.DataFrame, size: int = 64) -> pd.DataFrame:
    """Up to ``size`` evenly spaced Hilbert keys of a partition (its least and greatest included), each
    weighted by the share of the partition's points it stands for."""
    keys = np.sort(part[_HILBERT].to_numpy(dtype=np.int64))
    if not len(keys):
        return pd.DataFrame({"key": np.empty(0, np.int64), "weight": np.empty(0, np.float64)})
    picks = keys[np.linspace(0, len(keys) - 1, min(size, len(keys))).round().astype(np.int64)]
    return pd.DataFrame({"key": picks, "weight": np.full(len(picks), len(keys) / len(picks))})


def _divisions(sample: pd.DataFrame, npartitions: int) -> list[int]:
    """Dask divisions cutting the sampled keys into at most ``npartitions`` ranges of about equal counts.

    Repeated cut points are merged (fewer partitions), so the divisions always increase; the last range
    includes the greatest key.
    """
    order = np.argsort(sample["key"].to_numpy(), kind="stable")
    keys = sample["key"].to_numpy()[order]
    weight = np.cumsum(sample["weight"].to_numpy()[order])
    cuts = keys[np.searchsorted(weight, weight[-1] * np.arange(1, npartitions) / npartitions)]
    inner = sorted({int(k) for k in cuts if keys[0] < k < keys[-1]})
    return [int(keys[0]), *inner, int(keys[-1])]


def _box_lonlat(box, crs: str) -> tuple[float, float, float, float] | None:
    """(west, south, east, north) in CRS84 of a box of the points' CRS, None when it has no finite part.

    The box's edges are densified before moving them, and a box of one point (or of points on one line)
    is fine: shapely's boxes of zero width cannot be densified.
    """
    x0, y0, x1, y1 = box
    if not np.isfinite([x0, y0, x1, y1]).all():
        return None
    t = np.linspace(0.0, 1.0, 17)
    xs = np.concatenate([x0 + (x1 - x0) * t, np.full(t.size, x1), x0 + (x1 - x0) * t, np.full(t.size, x0)])
    ys = np.concatenate([np.full(t.size, y0), y0 + (y1 - y0) * t, np.full(t.size, y1), y0 + (y1 - y0) * t])
    lon, lat = _to_crs(xs, ys, crs, "OGC:CRS84")
    ok = np.isfinite(lon) & np.isfinite(lat)
    if not ok.any():
        return None
    return float(lon[ok].min()), float(lat[ok].min()), float(lon[ok].max()), float(lat[ok].max())


def _records_box(part: pd.DataFrame) -> pd.DataFrame:
    geoms = np.asarray(part.geometry.array)
    box = shapely.total_bounds(geoms) if len(geoms) else [np.nan] * 4
    if np.isfinite(box).all():  # footprints only approximate the rasters: see _coverage_box
        box = _padded(box)
    return pd.DataFrame({"x0": [box[0]], "y0": [box[1]], "x1": [box[2]], "y1": [box[3]]})


def sample_graph(
    records: dd.DataFrame, points: dd.DataFrame, spec: SampleSpec, meta: pd.DataFrame
) -> dd.DataFrame:
    """One task per points partition, fed the records partitions whose extents meet the points' extent."""
    clash = [c for c in output_columns(spec) if c in points.columns]
    if clash:
        raise SchemaError(f"point column(s) {clash} clash with output columns; rename them first")
    points, point_boxes = spatially_sorted(points, spec)
    record_boxes = records.map_partitions(_records_box, meta=_records_box(records._meta).iloc[:0]).compute()
    rboxes = record_boxes[["x0", "y0", "x1", "y1"]].to_numpy()
    point_parts, record_parts = points.to_delayed(), records.to_delayed()
    tasks = []
    for p, row in enumerate(point_boxes):
        area = _box_lonlat(row, spec.point_crs)
        if area is None:
            continue
        w, s, e, n = area
        meets = (rboxes[:, 0] <= e) & (rboxes[:, 2] >= w) & (rboxes[:, 1] <= n) & (rboxes[:, 3] >= s)
        feeding = [record_parts[r] for r in np.flatnonzero(meets)]
        if feeding:
            tasks.append(dask.delayed(sample_partition)(point_parts[p], *feeding, spec=spec))
    if not tasks:
        return dd.from_pandas(meta, npartitions=1)
    return dd.from_delayed(tasks, meta=meta, verify_meta=False)
