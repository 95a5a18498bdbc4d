"""Point sampling: the pixel under each point in every record that covers it (DESIGN.md §4).

One task per partition of (spatially partitioned) points. In a task, points are matched to record
coverage boxes (a longitude-sorted slice of the points per box); records with one box and CRS (the dates
of one grid tile, typically) share a point set: its points carried into that CRS once and grouped by the
tile holding their pixel once per raster grid. Each tile is fetched and decoded once for all points and
all bands that need it; the frame is assembled in :mod:`.point_rows`. Nodata, masked and sparse-tile
pixels are missing values (pandas NA), never numbers.
"""

from __future__ import annotations

import itertools
import os
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
from .point_files import read_points_parquet, table_to_frame
from .point_rows import Samples, TileSamples, assemble
from .records import RecordSource, record_sources
from .sample_spec import SampleSpec, output_columns
from .validity import valid_pixels


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
class _TilePoints:
    """The points of a point set whose pixel lies in one tile of a raster grid."""

    tile_row: int
    tile_col: int
    points: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    frac_r: np.ndarray
    frac_c: np.ndarray


@dataclass
class _PointSet:
    """Points that several records share (one coverage box and CRS: the dates of one tile of a grid,
    typically): their indices, their coordinates in that CRS, and their split into the tiles of each
    raster grid, worked out once for all those records and bands."""

    points: np.ndarray
    xs: np.ndarray
    ys: np.ndarray
    _tiles: dict = field(default_factory=dict)

    def tiles(self, transform: tuple, height: int, width: int, tile_height: int, tile_width: int):
        key = (transform, height, width, tile_height, tile_width)
        if key not in self._tiles:
            self._tiles[key] = self._split(*key)
        return self._tiles[key]

    def _split(self, transform, height, width, th, tw) -> list[_TilePoints]:
        frac_r, frac_c = fractional_indices(transform, self.xs, self.ys)
        with np.errstate(invalid="ignore"):
            rows, cols = np.floor(frac_r), np.floor(frac_c)
        inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        if not inside.any():
            return []
        rows, cols = rows[inside].astype(np.int64), cols[inside].astype(np.int64)
        points, frac_r, frac_c = self.points[inside], frac_r[inside], frac_c[inside]
        tile_row, tile_col = rows // th, cols // tw
        key = tile_row * -(-width // tw) + tile_col
        order = np.argsort(key, kind="stable")
        key = key[order]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        return [
            _TilePoints(
                int(tile_row[sel[0]]),
                int(tile_col[sel[0]]),
                points[sel],
                rows[sel],
                cols[sel],
                frac_r[sel],
                frac_c[sel],
            )
            for sel in np.split(order, starts[1:])
        ]


@dataclass(frozen=True)
class _TilePlan:
    """The read of one tile of one record-band (the tile plus ``k`` pixels around it) for its points."""

    record: int
    band: int
    at: _TilePoints
    read: WindowRead
    mask: WindowRead | None
    nodata: float | None


def _plan_record(record: RecordSource, r: int, points: _PointSet, k: int) -> list[_TilePlan]:
    """Plan the reads of every band of one record at the points it may cover."""
    plans = []
    for b, source in enumerate(record.bands):
        if source is None or source.header.geo.transform is None:
            continue
        header = source.header
        th, tw = header.levels[0].tile_height, header.levels[0].tile_width
        grid = tuple(header.geo.transform[:6])
        for at in points.tiles(grid, header.height, header.width, th, tw):
            window = PixelWindow(
                max(at.tile_row * th - k, 0),
                min((at.tile_row + 1) * th + k, header.height),
                max(at.tile_col * tw - k, 0),
                min((at.tile_col + 1) * tw + k, header.width),
            )
            plans.append(
                _TilePlan(
                    r,
                    b,
                    at,
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


def _pick(plan: _TilePlan, data: np.ndarray, mask, wr: np.ndarray, wc: np.ndarray):
    """The values at window pixels ``(wr, wc)`` and whether they are valid (GDAL's mask band there,
    not over the whole tile)."""
    flat = wr * data.shape[1] + wc
    values = data.ravel().take(flat)
    at_mask = None if mask is None else mask.reshape(mask.shape[0], -1).take(flat, axis=1)
    valid = valid_pixels(values, plan.nodata, plan.read.codec, at_mask)
    return values, valid & ~_sparse_at(plan.read, wr, wc)


def _sample_tile(key: int, plan: _TilePlan, data: np.ndarray, mask, spec: SampleSpec, out: Samples) -> None:
    """Sample one tile's points (nearest valid pixel within ``k`` where the pixel is invalid)."""
    k, at = spec.max_distance_pixels, plan.at
    wr, wc = at.rows - plan.read.window.row_start, at.cols - plan.read.window.col_start
    value, ok = _pick(plan, data, mask, wr, wc)
    used_r, used_c = (at.rows.copy(), at.cols.copy()) if k else (None, None)
    if k and (~ok).any():
        offsets = ring_offsets(k)
        bad = np.flatnonzero(~ok)
        nr = wr[bad, None] + offsets[None, :, 0]
        nc = wc[bad, None] + offsets[None, :, 1]
        within = (nr >= 0) & (nr < data.shape[0]) & (nc >= 0) & (nc < data.shape[1])
        cand = np.zeros(nr.shape, dtype=bool)
        cand[within] = _pick(plan, data, mask, nr[within], nc[within])[1]
        best = nearest_valid(at.frac_r[bad], at.frac_c[bad], at.rows[bad], at.cols[bad], cand, offsets)
        found = best >= 0
        pick = bad[found]
        br, bc = nr[found, best[found]], nc[found, best[found]]
        value[pick], ok[pick] = data[br, bc], True
        used_r[pick], used_c[pick] = br + plan.read.window.row_start, bc + plan.read.window.col_start
    with np.errstate(invalid="ignore"):  # a record whose band has another dtype: cast to the output's
        values = value.astype(spec.dtypes[plan.band], copy=False)
    out.add(key, TileSamples(at.points, plan.record, plan.band, values, ok, used_r, used_c))


def _sample_plans(plans: list[_TilePlan], spec: SampleSpec, out: Samples) -> None:
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


def _points_in_boxes(lon: np.ndarray, lat: np.ndarray, boxes: list) -> dict[tuple, np.ndarray]:
    """Per distinct box (west, south, east, north; None skipped): the ascending indices of the points in
    it, edges included. The points are sorted by longitude once; each box takes its slice of them."""
    order = np.argsort(lon, kind="stable")
    lon_sorted = lon[order]
    out = {}
    for box in boxes:
        if box is None or box in out:
            continue
        west, south, east, north = box
        start = np.searchsorted(lon_sorted, west, side="left")
        stop = np.searchsorted(lon_sorted, east, side="right")
        candidates = order[start:stop]
        in_lat = (lat[candidates] >= south) & (lat[candidates] <= north)
        out[box] = np.sort(candidates[in_lat])
    return out


def _point_sets(
    xs: np.ndarray, ys: np.ndarray, point_crs: str, records: list[RecordSource], boxes: list
) -> list[_PointSet | None]:
    """Per record, the points in its coverage box as a point set in its CRS (None when there are none):
    records with one box and CRS share one set, and each point is transformed once per CRS."""
    lon, lat = _to_crs(xs, ys, point_crs, "OGC:CRS84")
    # A coarse match only: whether a point lies in a record's raster is decided in its CRS later.
    matched = _points_in_boxes(lon, lat, boxes)
    by_crs: dict[str, set] = {}
    for record, box in zip(records, boxes, strict=True):
        if box is not None and len(matched[box]):
            by_crs.setdefault(record.crs, set()).add(box)
    sets: dict[tuple, _PointSet] = {}
    for crs, crs_boxes in by_crs.items():
        union = np.unique(np.concatenate([matched[box] for box in crs_boxes]))
        ux, uy = _to_crs(xs[union], ys[union], point_crs, crs)
        for box in crs_boxes:
            at = np.searchsorted(union, matched[box])
            sets[crs, box] = _PointSet(matched[box], ux[at], uy[at])
    return [sets.get((record.crs, box)) for record, box in zip(records, boxes, strict=True)]


def sample_partition(points: pd.DataFrame, *records_parts: pd.DataFrame, spec: SampleSpec) -> pd.DataFrame:
    """Sample one partition of points against the records partitions that may cover it."""
    points = points.reset_index(drop=True)
    xs, ys = _coordinates(points, spec)
    keep = np.isfinite(xs) & np.isfinite(ys)
    if not keep.all():  # documented: rows without coordinates are dropped
        points, xs, ys = points[keep].reset_index(drop=True), xs[keep], ys[keep]
    parts = [p for p in records_parts if len(p)]
    frame = pd.concat(parts, ignore_index=True) if parts else None
    samples = Samples()
    records: list[RecordSource] = []
    if frame is not None and len(points):
        frame = frame.sort_values(["datetime", "id"], kind="stable").reset_index(drop=True)
        records = record_sources(frame, list(spec.bands), errors=spec.errors)
        footprints = np.asarray(frame.geometry.array)
        boxes = [_coverage_box(rec, fp) for rec, fp in zip(records, footprints, strict=True)]
        plans = []
        for r, point_set in enumerate(_point_sets(xs, ys, spec.point_crs, records, boxes)):
            if point_set is not None:
                plans += _plan_record(records[r], r, point_set, spec.max_distance_pixels)
        _sample_plans(plans, spec, samples)
    return assemble(points, records, samples, spec)


# -- graph ----------------------------------------------------------------------------------------

# A task of this many points over 12 records (1.2 M rows) peaks near 1 GB with its tiles in flight and
# its frame written to Parquet: 2 GB workers hold it without spilling (10 M points, benchmarks/points).
POINTS_PER_PARTITION = 100_000
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
    has no point), learnt from small summaries of the input without running the shuffle itself. One
    partition that is to stay one is kept as it is (in its own order): there is nothing to sort it into."""
    boxes = frame.map_partitions(
        _partition_box, spec, meta=_partition_box(frame._meta, spec).iloc[:0]
    ).compute()
    extents = boxes[["x0", "y0", "x1", "y1"]].to_numpy()
    npartitions = _task_count(int(boxes["n"].sum()), frame.npartitions)
    if (
        getattr(frame, "spatial_partitions", None) is not None
        or boxes["x0"].isna().all()
        or frame.npartitions == npartitions == 1
    ):
        return frame, extents
    bounds = (boxes["x0"].min(), boxes["y0"].min(), boxes["x1"].max(), boxes["y1"].max())
    keyed = frame.map_partitions(
        _with_hilbert, spec, bounds, meta=frame._meta.assign(**{_HILBERT: np.int64(0)})
    )
    sample, cells = dask.compute(
        keyed.map_partitions(_key_sample, meta=_key_sample(keyed._meta)),
        keyed.map_partitions(_cell_boxes, spec, meta=_cell_boxes(keyed._meta, spec)),
    )
    # Our own divisions: dask's set_index(npartitions=) fails (an AssertionError in its repartition) when
    # its quantiles repeat, e.g. all points in one Hilbert cell or a few points in several partitions.
    divisions = _divisions(sample, npartitions)
    shuffled = keyed.set_index(_HILBERT, divisions=divisions).reset_index(drop=True)
    return shuffled, _division_extents(cells, divisions)


def _task_count(n_points: int, n_input_partitions: int) -> int:
    """How many partitions to sort ``n_points`` into: one per POINTS_PER_PARTITION points (bounded task
    memory), more when that leaves worker threads idle and the input has more partitions. Not one per
    input partition: every task reads each tile its points touch, so many small tasks over one area read
    the same tiles many times (10 M points from 200 files: 16 GB fetched for 0.5 GB of tiles)."""
    return max(-(-n_points // POINTS_PER_PARTITION), min(n_input_partitions, _worker_threads()), 1)


def _worker_threads() -> int:
    """The threads tasks will run on: the distributed client's, else the local scheduler's."""
    from distributed import get_client

    try:
        return sum(get_client().nthreads().values()) or 1
    except ValueError:  # no client
        return dask.config.get("num_workers", None) or os.cpu_count() or 1


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
