"""Stacks on one grid: per-chunk read plans (pure) and their execution (one Dask task per chunk).

A chunk of the output ``(time, y, x)`` is read from every record of its time steps that overlaps it.
Records on the output grid's own pixel lattice are copied; others are warped with the ``geo.warp``
kernels, from the overview level GDAL's warper would choose, so that every chunk holds exactly what
``rasterio.warp.reproject`` of the whole record onto the whole grid holds there (GDAL's warp chunks, source
windows, kernel scales and scanlines are those of the whole-grid warp; see :class:`SourcePlanner`).
Records of one time step are fused in (datetime, id) order; nodata never bleeds."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..cog import WindowRead, iter_masked_windows, plan_mask_read, plan_window_read
from ..errors import PlanError
from ..geo.grid import Grid
from ..geo.warp import (
    BlockWarp,
    choose_overview,
    overview_target_resolution,
    plan_block_warp,
    warp_block,
    warp_layout,
)
from ..geo.windows import PixelWindow
from ..io.config import IOConfig
from .grids import pixel_offset
from .records import BandSource, RecordSource
from .validity import band_fill, valid_pixels

FUSE_METHODS = ("first", "last", "min", "max", "mean", "median")
RESAMPLING_METHODS = ("nearest", "bilinear", "cubic", "average", "mode", "min", "max")


@dataclass(frozen=True)
class SourceRead:
    """One record-band's contribution to one chunk: the window to read and how it lands on the chunk.

    ``offset`` is the window's (row, col) in the chunk when the source lies on the chunk's lattice (a
    copy, no resampling); otherwise ``warp`` says how the window is warped onto the chunk.
    """

    step: int
    band: int
    sample: int
    read: WindowRead
    mask: WindowRead | None
    nodata: float | None
    offset: tuple[int, int] | None
    warp: BlockWarp | None = None


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


def band_types(
    records: Sequence[RecordSource], bands: Sequence[str], fill_value=None
) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """The output dtype and fill value of each band: those of the first record with a header for it."""
    headers = [
        next((s.header for r in records if (s := r.bands[b]) is not None), None) for b in range(len(bands))
    ]
    if any(h is None for h in headers):
        missing = [b for b, h in zip(bands, headers, strict=True) if h is None]
        raise PlanError(f"no selected record has a header for band(s) {missing}")
    return tuple(h.dtype for h in headers), tuple(band_fill(h, fill_value).item() for h in headers)


class SourcePlanner:
    """Plans one band of one record (``source``, in ``crs``) onto the chunks of the output ``grid``.

    A source on the grid's pixel lattice is copied. Any other is warped as ``rasterio.warp.reproject``
    warps the whole source onto the whole grid: from the overview level GDAL's warper picks for the whole
    grid (gdalwarp's rule, :func:`~rasteret_dask.geo.warp.choose_overview`), with GDAL's warp chunks of the
    whole grid (:func:`~rasteret_dask.geo.warp.warp_layout`), so that a chunk's pixels are bit for bit
    those of the whole-grid warp: each chunk computes source positions along whole GDAL scanlines, with
    GDAL's kernel scale and source window. Both are worked out once per (record, band), not per chunk.
    """

    def __init__(self, grid: Grid, source: BandSource, crs: str, *, method: str, fill):
        self.grid, self.source, self.crs = grid, source, crs
        header = source.header
        self.offset = None
        self.layout = None
        self.level = 0
        if header.geo.transform is None:
            return
        self.offset = pixel_offset(grid, crs, header.geo.transform)
        if self.offset is not None:
            return
        resolutions = [math.hypot(*header.level_transform(i)[0:4:3]) for i in range(len(header.levels))]
        if len(resolutions) > 1:
            wanted = overview_target_resolution(grid, crs, header.geo.transform)
            if math.isfinite(wanted):
                self.level = choose_overview(resolutions, wanted)
        lvl = header.levels[self.level]
        self.layout = warp_layout(
            grid,
            crs,
            header.level_transform(self.level),
            lvl.width,
            lvl.height,
            method=method,
            dtype=header.dtype,
            nodata=header.nodata,
            fill_value=fill,
        )

    def plan(
        self, row0: int, col0: int, height: int, width: int, *, step: int, band: int
    ) -> SourceRead | None:
        """The source's part in the chunk of ``grid`` at ``(row0, col0)``; None when it has none."""
        header = self.source.header
        block_warp = None
        if self.offset is not None:
            r0, c0 = row0 - self.offset[0], col0 - self.offset[1]
            window = _clip(r0, r0 + height, c0, c0 + width, header.width, header.height)
            if window is None:
                return None
            place = (window.row_start - r0, window.col_start - c0)
        elif self.layout is not None:
            block_warp = plan_block_warp(self.layout, (row0, row0 + height, col0, col0 + width))
            if block_warp is None:
                return None
            window = PixelWindow(*block_warp.source_window)
            place = None
        else:
            return None
        url = self.source.url
        return SourceRead(
            step=step,
            band=band,
            sample=0,
            read=plan_window_read(url, header, window, samples=(self.source.sample,), level=self.level),
            mask=plan_mask_read(url, header, window, level=self.level),
            nodata=header.nodata,
            offset=place,
            warp=block_warp,
        )


def _clip(r0: int, r1: int, c0: int, c1: int, width: int, height: int) -> PixelWindow | None:
    r0, r1, c0, c1 = max(r0, 0), min(r1, height), max(c0, 0), min(c1, width)
    if r0 >= r1 or c0 >= c1:
        return None
    return PixelWindow(r0, r1, c0, c1)


# -- execution ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Part:
    """One source's pixels on a chunk: ``values`` and ``valid`` cover the chunk's rows ``rows`` and
    columns ``cols`` (a copied window covers part of the chunk, a warp all of it)."""

    values: np.ndarray
    valid: np.ndarray
    rows: slice
    cols: slice


def _contribution(source: SourceRead, pixels: np.ndarray, mask, grid: Grid, fill) -> _Part:
    data = pixels[source.sample]
    valid = valid_pixels(data, source.nodata, source.read.codec, mask)
    if source.offset is not None:
        r, c = source.offset
        return _Part(data, valid, slice(r, r + data.shape[0]), slice(c, c + data.shape[1]))
    window = source.read.window
    values, ok = warp_block(
        source.warp,
        data,
        (window.row_start, window.col_start),
        nodata=source.nodata,
        source_valid=valid,
        fill_value=fill,
    )
    return _Part(values, ok, slice(0, grid.height), slice(0, grid.width))


_REDUCERS = {"min": np.nanmin, "max": np.nanmax, "mean": np.nanmean, "median": np.nanmedian}


def fuse_into(out: np.ndarray, parts: list[_Part], how: str) -> None:
    """Merge the sources of one time step into ``out`` (which holds the fill value): ``first``/``last``
    valid pixel in order, or a reduction over the valid pixels (integer results rounded); pixels no
    source covers keep the fill."""
    if how in ("first", "last"):
        ordered = parts if how == "first" else parts[::-1]
        if len(ordered) == 1:  # the common case: one record per step, no bookkeeping
            part = ordered[0]
            np.copyto(out[part.rows, part.cols], part.values, where=part.valid, casting="unsafe")
            return
        done = np.zeros(out.shape, dtype=bool)
        for part in ordered:
            taken = done[part.rows, part.cols]
            take = part.valid & ~taken
            np.copyto(out[part.rows, part.cols], part.values, where=take, casting="unsafe")
            taken |= take
        return
    values = np.full((len(parts), *out.shape), np.nan)
    for k, part in enumerate(parts):
        np.copyto(values[k, part.rows, part.cols], part.values, where=part.valid, casting="unsafe")
    covered = ~np.isnan(values).all(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels are the uncovered ones
        reduced = _REDUCERS[how](values, axis=0)
    if out.dtype.kind in "iu":
        reduced = np.round(reduced)
    out[covered] = reduced[covered].astype(out.dtype)


def _fuse_chunk(plan: ChunkPlan, parts: dict[int, _Part]) -> tuple:
    """One ``(steps, rows, cols)`` array per band from the parts of the plan's sources (by source index)."""
    by_layer: dict[tuple[int, int], list[_Part]] = {}
    for index, source in enumerate(plan.sources):  # in plan order: the fuse order
        if index in parts:
            by_layer.setdefault((source.step, source.band), []).append(parts[index])
    out = []
    for band, dtype in enumerate(plan.dtypes):
        block = np.full((plan.steps, *plan.grid.shape), plan.fills[band], dtype=dtype)
        for step in range(plan.steps):
            if (step, band) in by_layer:
                fuse_into(block[step], by_layer[(step, band)], plan.fuse)
        out.append(block)
    return tuple(out)


def read_chunks(
    plans: Sequence[ChunkPlan], storage_options: dict | None = None, config: IOConfig | None = None
) -> list[tuple]:
    """Execute chunk plans together: every tile they need fetched and decoded once (a tile two plans
    share too), each source placed on its chunk as its file arrives, then each plan's
    ``(steps, rows, cols)`` array per band, in the bands' own dtypes."""
    owners = [(p, s) for p, plan in enumerate(plans) for s in range(len(plan.sources))]
    pairs = [(plans[p].sources[s].read, plans[p].sources[s].mask) for p, s in owners]
    parts: list[dict[int, _Part]] = [{} for _ in plans]
    # Streamed within the default byte budget: tiles are dropped once cut into windows, so memory stays
    # bounded (and is reused) however many files the chunks read.
    for index, data, mask in iter_masked_windows(pairs, storage_options=storage_options, config=config):
        p, s = owners[index]
        plan, source = plans[p], plans[p].sources[s]
        fill = np.asarray(plan.fills[source.band]).astype(plan.dtypes[source.band])[()]
        parts[p][s] = _contribution(source, data, mask, plan.grid, fill)
    return [_fuse_chunk(plan, found) for plan, found in zip(plans, parts, strict=True)]


def read_chunk(plan: ChunkPlan, storage_options: dict | None = None, config: IOConfig | None = None) -> tuple:
    """Execute one chunk plan (a Dask task): one ``(steps, rows, cols)`` array per band."""
    return read_chunks([plan], storage_options, config)[0]


def check_methods(resampling: str, fuse: str) -> None:
    if resampling not in RESAMPLING_METHODS:
        raise PlanError(f"resampling must be one of {RESAMPLING_METHODS}, got {resampling!r}")
    if fuse not in FUSE_METHODS:
        raise PlanError(f"fuse must be one of {FUSE_METHODS}, got {fuse!r}")
