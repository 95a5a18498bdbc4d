"""Windows on a fixed output grid, read synchronously, without Dask: ``Collection.read_window`` and the
TorchGeo dataset.

A window's grid is ``rasterio.merge``'s: ``bounds`` in a CRS, ``round(width / res)`` x
``round(height / res)`` pixels from the top-left corner. Each record is planned onto it as the lazy
stacks plan a chunk (:class:`~rasteret_dask.read.stack.SourcePlanner`: a copy on the grid's lattice, a
GDAL-exact warp otherwise) and records are mosaicked first valid pixel first, in the order given.
A batch of windows is planned first and read in one go: every tile they need is fetched once (tiles shared
by windows too), ranges of a file merged, all files concurrently, tiles decoded in a thread pool.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import shapely

from ..errors import PlanError
from ..geo.grid import Grid
from ..io.config import IOConfig
from .arrays import time_steps
from .grids import bounds_in, raster_outline
from .records import record_sources
from .stack import ChunkPlan, SourcePlanner, band_types, check_methods, read_chunks

# Footprints only approximate the rasters (and a window's edges curve in CRS84): records whose footprint
# is within this many window pixels of the window are planned, and planning decides exactly.
_MARGIN_PIXELS = 2


def record_times(values) -> tuple[np.ndarray, np.ndarray]:
    """Each record's time interval ``(start, stop)`` in ns since 1970 (UTC): its datetime, or all time
    for a record without one."""
    stamps = pd.DatetimeIndex(pd.to_datetime(values, utc=True)).tz_convert(None).as_unit("ns")
    missing = np.asarray(stamps.isna())
    start = np.where(missing, pd.Timestamp.min.value, stamps.asi8)
    stop = np.where(missing, pd.Timestamp.max.value, stamps.asi8)
    return start, stop


def merge_grid(bounds, res, crs: str) -> Grid:
    """The output grid ``rasterio.merge.merge(bounds=, res=)`` makes: ``bounds`` (left, bottom, right,
    top) in ``crs``, ``res`` a number or ``(xres, yres)`` in CRS units."""
    try:
        left, bottom, right, top = (float(v) for v in bounds)
        xres, yres = (float(res), float(res)) if np.isscalar(res) else (float(res[0]), float(res[1]))
    except (TypeError, ValueError, IndexError):
        raise PlanError(
            f"bounds must be (left, bottom, right, top) and res a number or (x, y): {bounds}, {res}"
        ) from None
    if not (xres > 0 and yres > 0 and np.isfinite([xres, yres]).all()):
        raise PlanError(f"res must be positive, got {res}")
    if not (right > left and top > bottom and np.isfinite([left, bottom, right, top]).all()):
        raise PlanError(f"bounds must have right > left and top > bottom, got {tuple(bounds)}")
    width, height = round((right - left) / xres), round((top - bottom) / yres)
    if width < 1 or height < 1:
        raise PlanError(f"bounds {tuple(bounds)} are smaller than one pixel of {res}")
    return Grid(crs, (xres, 0.0, left, 0.0, -yres, top), width, height)


class WindowReader:
    """Reads windows from a fixed table of records (ordered: the mosaic order, first valid pixel wins).

    Holds plain data only (records, headers, options), so it pickles small and works in any process.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        bands: Sequence[str],
        *,
        resampling: str = "nearest",
        fuse: str = "first",
        fill_value=None,
        storage_options: dict | None = None,
        config: IOConfig | None = None,
        errors: str = "warn",
    ):
        check_methods(resampling, fuse)
        self.frame = frame.reset_index(drop=True)
        self.bands = list(bands)
        self.records = record_sources(self.frame, self.bands, errors=errors)
        if not self.records:
            raise PlanError("no record to read windows from")
        self.dtypes, self.fills = band_types(self.records, self.bands, fill_value)
        self.dtype = np.result_type(*self.dtypes)
        self.resampling, self.fuse = resampling, fuse
        self.storage_options, self.config = storage_options, config
        self._footprints = np.asarray(self.frame.geometry.array)
        self._tree = None
        self.times = record_times(self.frame["datetime"])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tree": None}  # STRtrees do not pickle; rebuilt on first use

    @property
    def first_crs(self) -> str:
        """The CRS of the first record."""
        return self.records[0].crs

    def overlapping(self, grid: Grid, times: tuple[int, int] | None = None) -> np.ndarray:
        """Indices of the records whose footprint may meet ``grid`` (and whose datetime lies in
        ``times``, ``(tmin, tmax)`` in ns since 1970 UTC, both included), in mosaic order."""
        if self._tree is None:
            self._tree = shapely.STRtree(self._footprints)
        margin = _MARGIN_PIXELS * max(abs(grid.transform[0]), abs(grid.transform[4]))
        left, bottom, right, top = grid.bounds
        unit = (1.0, 0.0, left - margin, 0.0, -1.0, top + margin)
        outline = raster_outline(unit, right - left + 2 * margin, top - bottom + 2 * margin)
        box = bounds_in(outline, grid.crs, "OGC:CRS84")
        if box is None:
            return np.empty(0, dtype=np.int64)
        hits = np.sort(self._tree.query(shapely.box(*box), predicate="intersects"))
        if times is not None:
            start, stop = self.times
            hits = hits[(start[hits] <= times[1]) & (stop[hits] >= times[0])]
        return hits

    def plan(self, grid: Grid, groupby=None, times: tuple[int, int] | None = None) -> ChunkPlan:
        """The read plan of one window: one step (all records fused) or one per group of ``groupby``."""
        selected = self.overlapping(grid, times)
        if groupby is None:
            steps = [list(range(len(selected)))] if len(selected) else []
        else:
            chosen = [self.records[i] for i in selected]
            steps = [list(s.records) for s in time_steps(chosen, groupby, self.frame.iloc[selected])]
        sources = []
        for step, members in enumerate(steps):
            for b in range(len(self.bands)):
                for member in members:
                    record = self.records[selected[member]]
                    source = record.bands[b]
                    if source is None:
                        continue
                    planner = SourcePlanner(
                        grid, source, record.crs, method=self.resampling, fill=self.fills[b]
                    )
                    planned = planner.plan(0, 0, grid.height, grid.width, step=step, band=b)
                    if planned is not None:
                        sources.append(planned)
        return ChunkPlan(
            grid, len(steps), self.dtypes, self.fills, tuple(sources), self.fuse, self.resampling
        )

    def read(
        self,
        grids: Sequence[Grid],
        groupby=None,
        times: Sequence[tuple[int, int] | None] | None = None,
        dtype=None,
    ) -> list[np.ndarray]:
        """Each window as ``[C, H, W]`` (``groupby=None``) or ``[T, C, H, W]``, in one fetch for all;
        ``times`` restricts each window's records to a time interval (see :meth:`overlapping`); ``dtype``
        (default: the bands' common dtype) is that of the arrays, cast as they are stacked."""
        dtype = self.dtype if dtype is None else np.dtype(dtype)
        times = times if times is not None else [None] * len(grids)
        plans = [self.plan(grid, groupby, t) for grid, t in zip(grids, times, strict=True)]
        blocks = read_chunks(plans, self.storage_options, self.config)
        out = []
        for grid, plan, bands in zip(grids, plans, blocks, strict=True):
            if groupby is None and plan.steps == 0:
                out.append(
                    np.stack([np.full(grid.shape, f, dtype=self.dtype) for f in self.fills], dtype=dtype)
                )
                continue
            stacked = np.stack(bands, axis=1, dtype=dtype)  # each band cast once, straight to dtype
            out.append(stacked[0] if groupby is None else stacked)
        return out
