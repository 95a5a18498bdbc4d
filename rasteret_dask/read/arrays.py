"""Lazy stacks: the Dask graph of a ``(time, y, x)`` read, as dask arrays and an xarray Dataset.

The graph has one read task per (time chunk, y chunk, x chunk) that some record overlaps, annotated
as a data producer; every other block is a constant made on demand (:class:`_BandLayer`), so building
the graph costs what the non-empty chunks cost. Building it sends no request.
"""

from __future__ import annotations

import math
import operator
from bisect import bisect_right
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

import dask.array as da
import numpy as np
import pandas as pd
import shapely
import xarray as xr
from dask._task_spec import Task, TaskRef
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph, Layer, MaterializedLayer
from pyproj import CRS

from ..errors import PlanError
from ..geo.aoi import reproject_geometry
from ..geo.grid import Grid
from ..geo.rasterize import geometry_mask
from ..io.config import IOConfig
from ..io.ranges import coalesce
from .grids import bounds_in, pixel_offset, raster_outline
from .records import RecordSource
from .stack import ChunkPlan, SourcePlanner, band_types, read_chunk


@dataclass(frozen=True)
class TimeStep:
    """Records fused into one time step, in fuse order, with the step's label and record ids."""

    time: pd.Timestamp
    records: tuple[int, ...]
    ids: str


def time_steps(records: list[RecordSource], groupby, frame: pd.DataFrame | None = None) -> list[TimeStep]:
    """Group records (already in (datetime, id) order) into time steps.

    ``groupby``: None (one step per record), ``"time"`` (equal datetimes), ``"solar_day"`` (the local
    solar day at the footprint's centre longitude), a column name of the records, or a callable taking a
    record's row (a pandas Series) and returning its group key. A step's time is its first record's.
    """
    if groupby is None:
        keys = list(range(len(records)))
    elif groupby == "time":
        keys = [r.datetime for r in records]
    elif groupby == "solar_day":
        # Planar centroids of the CRS84 footprints (degrees): plenty for a time zone, and without the
        # warning geopandas gives for centroids in a geographic CRS.
        lons = (
            shapely.get_x(shapely.centroid(np.asarray(frame.geometry.array)))
            if frame is not None
            else np.zeros(len(records))
        )
        keys = [
            (r.datetime + pd.Timedelta(hours=float(lon) / 15.0)).date()
            for r, lon in zip(records, lons, strict=True)
        ]
    elif callable(groupby):
        keys = [groupby(row) for _, row in frame.iterrows()]
    elif frame is not None and groupby in frame.columns:
        keys = list(frame[groupby])
    else:
        raise PlanError(
            f"groupby must be None, 'time', 'solar_day', a column name or a callable, got {groupby!r}"
        )
    steps: dict = {}
    for index, key in enumerate(keys):
        steps.setdefault(key, []).append(index)
    out = [
        TimeStep(
            records[members[0]].datetime, tuple(members), ",".join(records[i].record_id for i in members)
        )
        for members in steps.values()
    ]
    return sorted(out, key=lambda s: (s.time, s.ids))


def _chunk_edges(size: int, chunk: int, phase: int = 0) -> list[int]:
    """Edges of chunks of ``chunk`` pixels whose inner edges fall on ``phase`` modulo ``chunk``."""
    return [0, *range(phase % chunk or chunk, size, chunk), size]


def _default_chunk(records: list[RecordSource]) -> int:
    """Whole source tiles: the largest tile side among the records' bands (1024 without any)."""
    sides = [
        max(s.header.levels[0].tile_height, s.header.levels[0].tile_width)
        for r in records
        for s in r.bands
        if s is not None
    ]
    return max(sides, default=1024)


def _tile_phase(records: list[RecordSource], grid: Grid, size: int) -> tuple[int, int]:
    """(row, col) phase that puts default chunk edges on the source tile edges of the first record whose
    raster lies on ``grid``'s lattice with tiles of ``size``, so a chunk reads whole tiles and no tile is
    read by two chunks; (0, 0) when none does."""
    for record in records:
        for source in record.bands:
            if source is None or source.header.geo.transform is None:
                continue
            level = source.header.levels[0]
            if (level.tile_height, level.tile_width) != (size, size):
                continue
            offset = pixel_offset(grid, record.crs, source.header.geo.transform)
            if offset is not None:
                return offset[0] % size, offset[1] % size
    return 0, 0


def _pixel_box(grid: Grid, record: RecordSource, source) -> tuple[int, int, int, int] | None:
    """(row0, row1, col0, col1) of ``grid`` pixels a source raster may touch (clipped; None if none)."""
    h = source.header
    if h.geo.transform is None:
        return None
    box = bounds_in(raster_outline(h.geo.transform, h.width, h.height), record.crs, grid.crs)
    if box is None:
        return None
    a, _, c, _, e, f = grid.transform
    cols = sorted(((box[0] - c) / a, (box[2] - c) / a))
    rows = sorted(((box[3] - f) / e, (box[1] - f) / e))
    r0, r1 = max(math.floor(rows[0]) - 1, 0), min(math.ceil(rows[1]) + 1, grid.height)
    c0, c1 = max(math.floor(cols[0]) - 1, 0), min(math.ceil(cols[1]) + 1, grid.width)
    if r0 >= r1 or c0 >= c1:
        return None
    return r0, r1, c0, c1


class _BandLayer(Layer):
    """One band's blocks of a stack, made on demand: that band of the read task's output where a chunk
    has sources, a constant block of the fill value elsewhere.

    Only the chunks with sources are stored, so building the graph, culling it and computing a slice of it
    cost what the non-empty chunks cost, not what the whole ``(time, y, x)`` block grid holds (DESIGN.md
    §5). Culling returns a materialized layer of the requested blocks only.
    """

    has_legacy_tasks = False

    def __init__(
        self, name: str, read_name: str, producers: frozenset, chunks: tuple, dtype, fill, band: int
    ):
        super().__init__()
        self.name, self.read_name, self.producers = name, read_name, producers
        self.chunks, self.dtype, self.fill, self.band = chunks, dtype, fill, band
        self.numblocks = tuple(len(c) for c in chunks)

    def __contains__(self, key) -> bool:
        return (
            isinstance(key, tuple)
            and len(key) == 4
            and key[0] == self.name
            and all(isinstance(i, int) and 0 <= i < n for i, n in zip(key[1:], self.numblocks, strict=True))
        )

    def __getitem__(self, key) -> Task:
        if key not in self:
            raise KeyError(key)
        index = key[1:]
        if index in self.producers:
            return Task(key, operator.getitem, TaskRef((self.read_name, *index)), self.band)
        shape = tuple(c[i] for c, i in zip(self.chunks, index, strict=True))
        return Task(key, np.full, shape, self.fill, self.dtype)

    def __iter__(self):
        return ((self.name, *index) for index in np.ndindex(*self.numblocks))

    def __len__(self) -> int:
        return math.prod(self.numblocks)

    def is_materialized(self) -> bool:
        return False

    def get_output_keys(self):
        return _LayerKeys(self)

    def cull(self, keys, all_hlg_keys):
        out = {k: self[k] for k in keys if k in self}
        return MaterializedLayer(out, annotations=self.annotations), {
            k: set(v.dependencies) for k, v in out.items()
        }


class _LayerKeys(AbstractSet):
    """The keys of a :class:`_BandLayer` as a set that is never built."""

    def __init__(self, layer: _BandLayer):
        self.layer = layer

    def __contains__(self, key) -> bool:
        return key in self.layer

    def __iter__(self):
        return iter(self.layer)

    def __len__(self) -> int:
        return len(self.layer)


@dataclass
class StackGraph:
    """The planned read: per-band dask arrays ``(time, y, x)`` on ``grid``, the time steps, and the
    chunk plans (keyed by graph key) with the record ids of each source in plan order."""

    grid: Grid
    steps: list[TimeStep]
    bands: list[str]
    fills: tuple
    arrays: list[da.Array]
    plans: dict

    def explain(self, config: IOConfig | None = None) -> pd.DataFrame:
        """The read plan as a table, from cached headers alone: per record and band, the chunks it feeds,
        distinct tiles, GETs after merging ranges of one file within a chunk task, and bytes; with a
        final ``TOTAL`` row.

        A chunk task fetches each file's tiles (pixels and internal mask alike) in merged ranges, as the
        reader does; a file's GETs in a chunk count for the first record and band that reads it there.
        """
        config = config or IOConfig()
        rows: dict[tuple[str, str], dict] = {}
        for plan, ids in self.plans.values():
            per_file: dict[str, set] = {}
            owner: dict[str, dict] = {}
            for source, record_id in zip(plan.sources, ids, strict=True):
                row = rows.setdefault(
                    (record_id, self.bands[source.band]),
                    {
                        "record_id": record_id,
                        "band": self.bands[source.band],
                        "chunks": 0,
                        "tiles": 0,
                        "gets": 0,
                        "bytes": 0,
                    },
                )
                row["chunks"] += 1
                for read in (source.read, source.mask):
                    if read is None:
                        continue
                    ranges = {(t.offset, t.offset + t.count) for t in read.tiles if not t.sparse}
                    new = ranges - per_file.setdefault(read.url, set())
                    per_file[read.url] |= new
                    owner.setdefault(read.url, row)
                    row["tiles"] += len(new)
                    row["bytes"] += sum(b - a for a, b in new)
            for url, ranges in per_file.items():
                if ranges:
                    owner[url]["gets"] += len(
                        coalesce(sorted(ranges), config.max_gap, config.max_merged_size)
                    )
        table = pd.DataFrame(
            list(rows.values()), columns=["record_id", "band", "chunks", "tiles", "gets", "bytes"]
        )
        total = {
            "record_id": "TOTAL",
            "band": "",
            **table[["chunks", "tiles", "gets", "bytes"]].sum().to_dict(),
        }
        return pd.concat([table, pd.DataFrame([total])], ignore_index=True)


def build_stack(
    records: list[RecordSource],
    bands: list[str],
    grid: Grid,
    steps: list[TimeStep],
    *,
    chunks: dict | None = None,
    resampling: str = "nearest",
    fuse: str = "first",
    fill_value: float | None = None,
    storage_options: dict | None = None,
    config: IOConfig | None = None,
) -> StackGraph:
    """Plan every chunk and build the graph (no request is sent)."""
    chunks = dict(chunks or {})
    size = _default_chunk(records)
    t_chunk = int(chunks.get("time", 1))
    y_chunk, x_chunk = int(chunks.get("y", size)), int(chunks.get("x", size))
    if min(t_chunk, y_chunk, x_chunk) < 1:
        raise PlanError(f"chunk sizes must be positive, got {chunks}")
    dtypes, fills = band_types(records, bands, fill_value)
    y_phase, x_phase = _tile_phase(records, grid, size)
    y_edges = _chunk_edges(grid.height, y_chunk, y_phase if "y" not in chunks else 0)
    x_edges = _chunk_edges(grid.width, x_chunk, x_phase if "x" not in chunks else 0)
    t_edges = _chunk_edges(len(steps), t_chunk)
    step_of = {}
    for s, step in enumerate(steps):
        for r in step.records:
            step_of[r] = s
    # Which (time chunk, y chunk, x chunk) each record-band may touch.
    touched: dict[tuple[int, int, int], list[tuple[int, int]]] = {}
    for r, record in enumerate(records):
        if r not in step_of:
            continue
        tc = step_of[r] // t_chunk
        for b, source in enumerate(record.bands):
            if source is None:
                continue
            box = _pixel_box(grid, record, source)
            if box is None:
                continue
            r0, r1, c0, c1 = box
            for i in range(bisect_right(y_edges, r0) - 1, bisect_right(y_edges, r1 - 1)):
                for j in range(bisect_right(x_edges, c0) - 1, bisect_right(x_edges, c1 - 1)):
                    touched.setdefault((tc, i, j), []).append((r, b))
    sources_id = [
        (s.url, s.header.file_size, s.header.etag, s.header.last_modified)
        for r in records
        for s in r.bands
        if s is not None
    ]
    token = tokenize(
        grid, [s.ids for s in steps], bands, chunks, resampling, fuse, fill_value, sources_id, storage_options
    )
    name = f"rasteret-read-{token}"
    layer: dict = {}
    plans: dict = {}
    planners: dict[tuple[int, int], SourcePlanner] = {}
    for tc, i, j in sorted(touched):
        key = (name, tc, i, j)
        shape = (t_edges[tc + 1] - t_edges[tc], y_edges[i + 1] - y_edges[i], x_edges[j + 1] - x_edges[j])
        sources, ids = [], []
        for r, b in sorted(touched[(tc, i, j)], key=lambda rb: (step_of[rb[0]], rb[1], rb[0])):
            planner = planners.get((r, b))
            if planner is None:
                planner = planners[(r, b)] = SourcePlanner(
                    grid, records[r].bands[b], records[r].crs, method=resampling, fill=fills[b]
                )
            planned = planner.plan(
                y_edges[i], x_edges[j], shape[1], shape[2], step=step_of[r] - t_edges[tc], band=b
            )
            if planned is not None:
                sources.append(planned)
                ids.append(records[r].record_id)
        if sources:
            chunk = grid.window_grid(y_edges[i], x_edges[j], shape[1], shape[2])
            plan = ChunkPlan(chunk, shape[0], dtypes, fills, tuple(sources), fuse, resampling)
            plans[key] = (plan, ids)
            layer[key] = Task(key, read_chunk, plan, storage_options, config, _data_producer=True)
    chunks_spec = (
        tuple(int(v) for v in np.diff(t_edges)),
        tuple(int(v) for v in np.diff(y_edges)),
        tuple(int(v) for v in np.diff(x_edges)),
    )
    arrays = []
    for b, band in enumerate(bands):
        band_name = f"rasteret-{band}-{token}"
        band_layer = _BandLayer(
            band_name, name, frozenset(k[1:] for k in layer), chunks_spec, dtypes[b], fills[b], b
        )
        graph = HighLevelGraph(
            {name: MaterializedLayer(layer), band_name: band_layer}, {name: set(), band_name: {name}}
        )
        arrays.append(da.Array(graph, band_name, chunks_spec, dtype=np.dtype(dtypes[b])))
    return StackGraph(grid, steps, bands, fills, arrays, plans)


def to_dataset(stack: StackGraph) -> xr.Dataset:
    """The stack as an xarray Dataset with CF georeferencing that rioxarray reads."""
    grid = stack.grid
    a, b, c, d, e, f = grid.transform
    xs = c + a * (np.arange(grid.width) + 0.5)
    ys = f + e * (np.arange(grid.height) + 0.5)
    crs = CRS.from_user_input(grid.crs)
    spatial_ref = xr.DataArray(
        0,
        attrs={
            **crs.to_cf(),
            "crs_wkt": crs.to_wkt(),
            "spatial_ref": crs.to_wkt(),
            "GeoTransform": " ".join(str(v) for v in (c, a, b, f, d, e)),
        },
    )
    data_vars = {}
    for band, array in zip(stack.bands, stack.arrays, strict=True):
        var = xr.DataArray(array, dims=("time", "y", "x"))
        data_vars[band] = var
    times = pd.DatetimeIndex([s.time for s in stack.steps]).tz_convert("UTC").tz_localize(None)
    ds = xr.Dataset(
        data_vars,
        coords={
            "time": ("time", times.values),
            "id": ("time", [s.ids for s in stack.steps]),
            "y": ("y", ys, {"axis": "Y", "units": _units(crs)}),
            "x": ("x", xs, {"axis": "X", "units": _units(crs)}),
            "spatial_ref": spatial_ref,
        },
    )
    for band, fill in zip(stack.bands, stack.fills, strict=True):
        ds[band].attrs.update(grid_mapping="spatial_ref", _FillValue=fill)
    return ds


def _units(crs: CRS) -> str:
    return "degrees" if crs.is_geographic else (crs.axis_info[0].unit_name if crs.axis_info else "metre")


def _aoi_block(block_info=None, *, grid: Grid, aoi_local, all_touched: bool) -> np.ndarray:
    """The AOI mask of one chunk. A chunk whose whole extent lies strictly inside the AOI (every pixel
    centre at least half a pixel in) or more than a pixel away from it needs no rasterizing: its mask is
    a constant, broadcast without memory, which :func:`_keep_inside` recognises."""
    (r0, _), (c0, _) = block_info[None]["array-location"][-2:]
    shape = block_info[None]["chunk-shape"][-2:]
    chunk = grid.window_grid(r0, c0, shape[0], shape[1])
    extent = shapely.box(*chunk.bounds)
    if shapely.contains_properly(aoi_local, extent):
        return np.broadcast_to(np.True_, shape)
    if not shapely.intersects(aoi_local, shapely.buffer(extent, max(map(abs, chunk.res)))):
        return np.broadcast_to(np.False_, shape)
    return geometry_mask(aoi_local, chunk.transform, chunk.shape, all_touched=all_touched)


def _keep_inside(block: np.ndarray, inside: np.ndarray, *, fill) -> np.ndarray:
    """``block`` with pixels outside the AOI set to ``fill``; untouched (no copy) when all are inside."""
    if inside.all():
        return block
    if not inside.any():
        return np.full(block.shape, fill, dtype=block.dtype)
    return np.where(inside, block, np.asarray(fill, dtype=block.dtype))


def mask_outside(ds: xr.Dataset, stack: StackGraph, aoi, *, all_touched: bool = False) -> xr.Dataset:
    """Set pixels outside the AOI (CRS84) to each band's fill value, lazily (GDAL's rasterize rule)."""
    grid = stack.grid
    aoi_local = reproject_geometry(shapely.segmentize(aoi, _segment(aoi)), "OGC:CRS84", grid.crs)
    template = stack.arrays[0][0]
    inside = da.map_blocks(
        _aoi_block,
        dtype=bool,
        chunks=template.chunks,
        grid=grid,
        aoi_local=aoi_local,
        all_touched=all_touched,
    )
    out = ds.copy()
    for band, fill in zip(stack.bands, stack.fills, strict=True):
        array = out[band].data
        out[band] = (
            ("time", "y", "x"),
            da.map_blocks(_keep_inside, array, inside[None], fill=fill, dtype=array.dtype),
            out[band].attrs,
        )
    return out


def _segment(aoi) -> float:
    west, south, east, north = aoi.bounds
    return max(east - west, north - south) / 256 or 1.0
