"""Stacks on one grid: per-chunk read plans (pure) and their execution (one Dask task per chunk).

A chunk of the output ``(time, y, x)`` is read from every record of its time steps that overlaps it.
Records on the output grid's own pixel lattice are copied, others are warped with the ``geo.warp``
kernels from the overview level GDAL's warper would choose. Records of one time step are fused in
(datetime, id) order; nodata never bleeds.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from affine import Affine

from ..cog import WindowRead, plan_mask_read, plan_window_read, read_windows
from ..errors import PlanError
from ..geo.grid import Grid
from ..geo.warp import choose_overview, overview_target_resolution, warp
from ..geo.windows import PixelWindow
from ..io.config import IOConfig
from .grids import bounds_in, pixel_offset, raster_outline
from .records import BandSource
from .validity import valid_pixels

FUSE_METHODS = ("first", "last", "min", "max", "mean", "median")
RESAMPLING_METHODS = ("nearest", "bilinear", "cubic", "average", "mode", "min", "max")
# Source pixels read beyond a warped chunk's footprint: enough for the cubic kernel (2) and rounding.
_WARP_MARGIN = 3


@dataclass(frozen=True)
class SourceRead:
    """One record-band's contribution to one chunk: the window to read and how it lands on the chunk.

    ``offset`` is the window's (row, col) in the chunk when the source lies on the chunk's lattice
    (a copy); otherwise the window is warped from ``window_crs``/``window_transform`` with ``method``.
    """

    step: int
    band: int
    sample: int
    read: WindowRead
    mask: WindowRead | None
    nodata: float | None
    offset: tuple[int, int] | None
    window_crs: str
    window_transform: tuple[float, ...]


@dataclass(frozen=True)
class ChunkPlan:
    """Everything one chunk task needs: its grid, output types and fill values, and its sources."""

    grid: Grid
    steps: int
    dtypes: tuple[str, ...]
    fills: tuple[float, ...]
    sources: tuple[SourceRead, ...]
    fuse: str
    method: str


def _window_transform(transform, window: PixelWindow) -> tuple[float, ...]:
    a, b, c, d, e, f = transform
    return (
        a,
        b,
        c + a * window.col_start + b * window.row_start,
        d,
        e,
        f + d * window.col_start + e * window.row_start,
    )


def plan_source(
    chunk: Grid, source: BandSource, crs: str, *, step: int, band: int, method: str
) -> SourceRead | None:
    """How ``source`` (one band of one record, in ``crs``) contributes to ``chunk``; None if it does not."""
    header = source.header
    if header.geo.transform is None:
        return None
    offset = pixel_offset(chunk, crs, header.geo.transform)
    level = 0
    if offset is not None:
        row0, col0 = -offset[0], -offset[1]
        window = _clip(row0, row0 + chunk.height, col0, col0 + chunk.width, header.width, header.height)
        if window is None:
            return None
        place = (window.row_start - row0, window.col_start - col0)
        transform = header.geo.transform
    else:
        resolutions = [abs(header.level_transform(i)[0]) for i in range(len(header.levels))]
        wanted = overview_target_resolution(chunk, crs, header.geo.transform)
        if len(resolutions) > 1 and math.isfinite(wanted):
            level = choose_overview(resolutions, wanted)
        transform = header.level_transform(level)
        lvl = header.levels[level]
        outline = raster_outline(chunk.transform, chunk.width, chunk.height)
        box = bounds_in(outline, chunk.crs, crs)
        if box is None:
            return None
        inverse = ~Affine(*transform)
        corners = np.array([(box[0], box[1]), (box[0], box[3]), (box[2], box[1]), (box[2], box[3])])
        cols, rows = inverse * (corners[:, 0], corners[:, 1])
        window = _clip(
            math.floor(min(rows)) - _WARP_MARGIN,
            math.ceil(max(rows)) + _WARP_MARGIN,
            math.floor(min(cols)) - _WARP_MARGIN,
            math.ceil(max(cols)) + _WARP_MARGIN,
            lvl.width,
            lvl.height,
        )
        if window is None:
            return None
        place = None
    samples = (source.sample,)
    return SourceRead(
        step=step,
        band=band,
        sample=0,
        read=plan_window_read(source.url, header, window, samples=samples, level=level),
        mask=plan_mask_read(source.url, header, window, level=level),
        nodata=header.nodata,
        offset=place,
        window_crs=crs,
        window_transform=_window_transform(transform, window),
    )


def _clip(r0: int, r1: int, c0: int, c1: int, width: int, height: int) -> PixelWindow | None:
    r0, r1, c0, c1 = max(r0, 0), min(r1, height), max(c0, 0), min(c1, width)
    if r0 >= r1 or c0 >= c1:
        return None
    return PixelWindow(r0, r1, c0, c1)


# -- execution ------------------------------------------------------------------------------------


def _contribution(source: SourceRead, pixels: np.ndarray, mask, grid: Grid, method: str, fill):
    """(values, valid) of one source on the chunk grid."""
    data = pixels[source.sample]
    valid = valid_pixels(data, source.nodata, source.read.codec, mask)
    if source.offset is not None:
        values = np.full(grid.shape, fill, dtype=data.dtype)
        ok = np.zeros(grid.shape, dtype=bool)
        r, c = source.offset
        values[r : r + data.shape[0], c : c + data.shape[1]] = data
        ok[r : r + data.shape[0], c : c + data.shape[1]] = valid
        return values, ok
    return warp(
        data,
        source.window_crs,
        source.window_transform,
        grid,
        method=method,
        nodata=source.nodata,
        source_valid=valid,
        fill_value=fill,
    )


_REDUCERS = {"min": np.nanmin, "max": np.nanmax, "mean": np.nanmean, "median": np.nanmedian}


def fuse(values: list[np.ndarray], valid: list[np.ndarray], how: str, fill, dtype) -> np.ndarray:
    """Merge the sources of one time step: ``first``/``last`` valid pixel in order, or a reduction over
    the valid pixels (integer results rounded); pixels no source covers get ``fill``."""
    out = np.full(values[0].shape, fill, dtype=dtype)
    if how in ("first", "last"):
        done = np.zeros(out.shape, dtype=bool)
        for i in range(len(values)) if how == "first" else reversed(range(len(values))):
            take = valid[i] & ~done
            out[take] = values[i][take]
            done |= take
        return out
    ok = np.stack(valid)
    covered = ok.any(axis=0)
    masked = np.where(ok, np.stack(values).astype(np.float64), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels are the uncovered ones
        reduced = _REDUCERS[how](masked, axis=0)
    if np.dtype(dtype).kind in "iu":
        reduced = np.round(reduced)
    out[covered] = reduced[covered].astype(dtype)
    return out


def read_chunk(plan: ChunkPlan, storage_options: dict | None = None, config: IOConfig | None = None) -> tuple:
    """Execute a chunk plan: one ``(steps, rows, cols)`` array per band, in the bands' own dtypes."""
    reads = []
    for source in plan.sources:
        reads.append(source.read)
        if source.mask is not None:
            reads.append(source.mask)
    pixels = iter(read_windows(reads, storage_options=storage_options, config=config) if reads else [])
    contributions: dict[tuple[int, int], list] = {}
    for source in plan.sources:
        data = next(pixels)
        mask = next(pixels) if source.mask is not None else None
        fill = np.asarray(plan.fills[source.band]).astype(plan.dtypes[source.band])[()]
        part = _contribution(source, data, mask, plan.grid, plan.method, fill)
        contributions.setdefault((source.step, source.band), []).append(part)
    out = []
    for band, dtype in enumerate(plan.dtypes):
        block = np.full((plan.steps, *plan.grid.shape), plan.fills[band], dtype=dtype)
        for step in range(plan.steps):
            parts = contributions.get((step, band))
            if parts:
                values, valid = zip(*parts, strict=True)
                block[step] = fuse(list(values), list(valid), plan.fuse, plan.fills[band], dtype)
        out.append(block)
    return tuple(out)


def check_methods(resampling: str, fuse: str) -> None:
    if resampling not in RESAMPLING_METHODS:
        raise PlanError(f"resampling must be one of {RESAMPLING_METHODS}, got {resampling!r}")
    if fuse not in FUSE_METHODS:
        raise PlanError(f"fuse must be one of {FUSE_METHODS}, got {fuse!r}")
