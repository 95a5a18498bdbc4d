"""Resampling kernels for target-grid reads: GDAL's warper, as ``rasterio.warp.reproject`` runs it, in numpy.

The oracle is GDAL 3.10 (the GDAL of the rasterio 1.4 wheels) with the options rasterio sets: source nodata
unified over bands (``UNIFIED_SRC_NODATA=YES``), the destination initialised to its nodata, GDAL's default
64 MiB warp memory and its approximate coordinate transformer (0.125 pixel). The rules were learnt by
reading GDAL's ``alg/gdalwarpkernel.cpp``, ``alg/gdalwarpoperation.cpp``, ``alg/gdaltransformer.cpp``
and ``apps/gdalwarp_lib.cpp`` (nothing copied) and are checked pixel by pixel against rasterio and
gdalwarp in ``tests/geo/test_warp.py``.

Coordinates
    Every target pixel *centre* ``(i + 0.5, j + 0.5)`` goes through the target transform, pyproj
    (``always_xy``) and the inverse source transform to fractional source ``(col, row)``
    (:func:`source_coordinates`); area methods use each pixel's top-left and bottom-right *corners*
    (:func:`source_footprints`). By default, as GDAL's approximate transformer does for rasterio, points
    are transformed exactly only where needed along each target row and interpolated linearly between
    (error at most 0.125 source pixel); ``max_error=0`` transforms every point.

Nodata never bleeds
    A source pixel is valid when ``source_valid`` says so and it is not the nodata value. A target pixel
    whose centre falls on an invalid source pixel, or off the source, is invalid (nearest, bilinear,
    cubic). Bilinear weights are renormalised over the valid pixels of the 2 x 2 neighbourhood; cubic
    falls back to that bilinear when any of its 4 x 4 pixels is invalid or off the source (GDAL's rule,
    not a renormalised cubic); when downsampling, bilinear and cubic become GDAL's filters widened by the
    scale, renormalised over valid pixels. Average, mode, min and max use only the valid source pixels
    in the target pixel's footprint. A target pixel with no valid source holds ``fill_value``. (Values
    are only as valid as the caller says: NaNs in a float raster without a NaN nodata are data, and
    spread through bilinear and cubic as in GDAL.)

Source windows
    ``cols`` and ``rows`` are relative to the array handed in, which may be a window of the raster. Pixels
    outside that array count as off the raster, as GDAL treats its chunk's source window, so a window
    must cover what :func:`required_window` says (clipped only by the raster's own edges).

Entry points: :func:`resample` (the kernels, for a planner that brings its own coordinates and window),
:func:`warp` (a whole in-memory raster onto a grid, exactly as rasterio does it), :func:`kernel_scale`,
:func:`choose_overview`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from ..errors import PlanError
from .grid import Grid

__all__ = [
    "DEFAULT_MAX_ERROR",
    "METHODS",
    "choose_overview",
    "is_pixel_translation",
    "kernel_scale",
    "nodata_valid",
    "overview_target_resolution",
    "required_window",
    "resample",
    "source_coordinates",
    "source_footprints",
    "transformer",
    "warp",
]

METHODS = ("nearest", "bilinear", "cubic", "average", "mode", "min", "max")
_AREA_METHODS = frozenset({"average", "mode", "min", "max"})
# GDAL's anGWKFilterRadius: half-width, in source pixels, of each kernel at scale 1.
_FILTER_RADIUS = {"nearest": 0, "bilinear": 1, "cubic": 2, "average": 0, "mode": 0, "min": 0, "max": 0}

# GDAL nudges coordinates by this much before taking the source pixel (GWKCheckAndComputeSrcOffsets), so a
# centre a hair's breadth left of a pixel edge lands in the pixel to the right.
_EDGE_EPS = 1e-10
# Bilinear gives up below this total weight of valid pixels (GWKBilinearResample4Sample); the scaled
# filters below _FILTER_MIN_WEIGHT and skip renormalising within _UNIT_WEIGHT_TOL of 1 (GWKResample).
_BILINEAR_MIN_WEIGHT = 0.00001
_FILTER_MIN_WEIGHT = 0.000001
_UNIT_WEIGHT_TOL = 0.00001
# Bilinear and cubic use the 2 x 2 / 4 x 4 formulas unless the scale is below this (PerformWarp).
_FOUR_SAMPLE_SCALE = 0.95
# Target pixels processed at once: small enough for a kernel's temporaries to stay in cache.
_BLOCK = 1 << 16
# Gathered (pixels x taps) or (pixels x footprint cells) elements per step: bounds temporaries.
_TAP_BLOCK = 1 << 18
# Filters with more taps than this gather a row of taps at a time (a tap at a time below).
_MANY_TAPS = 256
# Footprints with at most this many source cells are visited cell by cell, in GDAL's order.
_SMALL_FOOTPRINT = 64
# Coordinates are clipped to +-this before integer casts (far outside any raster a TIFF can describe).
_FAR = float(1 << 40)
# Types with GDAL's dedicated nearest kernels (GWKNearestByte/Short/Float), which store values unchanged.
_GDAL_NEAREST_KERNEL_TYPES = frozenset(np.dtype(t) for t in ("uint8", "int16", "uint16", "float32"))
# Types with GDAL's dedicated no-mask bilinear kernels (GWKBilinearNoMasksOrDstDensityOnly*).
_GDAL_NO_MASK_BILINEAR_TYPES = frozenset(np.dtype(t) for t in ("uint8", "int16", "uint16", "float32"))
# Points per edge GDAL samples to find a chunk's source window (DEFAULT_STEP_COUNT).
_STEP_COUNT = 21
# GDAL's default warp memory (dfWarpMemoryLimit); rasterio.warp.reproject keeps it (warp_mem_limit=0).
_WARP_MEMORY_LIMIT = 64.0 * 1024 * 1024
# GDAL's (and rasterio.warp.reproject's) default error of the approximate coordinate transformer, pixels.
DEFAULT_MAX_ERROR = 0.125


# --------------------------------------------------------------------------------------------------------
# Coordinates


def _crs_key(crs) -> str:
    if isinstance(crs, str):
        return crs
    if isinstance(crs, CRS):
        return crs.to_wkt()
    raise PlanError(f"a CRS must be given as 'EPSG:n' or WKT text, got {crs!r}")


@functools.lru_cache(maxsize=256)
def _cached_transformer(src: str, dst: str) -> Transformer | None:
    try:
        src_crs, dst_crs = CRS.from_user_input(src), CRS.from_user_input(dst)
    except CRSError as exc:
        raise PlanError(f"unknown CRS: {exc}") from None
    if src_crs == dst_crs:
        return None
    return Transformer.from_crs(src_crs, dst_crs, always_xy=True)


def transformer(src_crs: str, dst_crs: str) -> Transformer | None:
    """The pyproj ``Transformer`` from ``src_crs`` to ``dst_crs`` (x/y order), or None when they are equal.

    Cached per (src, dst) pair in each process; pyproj transformers are safe to share between threads.
    """
    return _cached_transformer(_crs_key(src_crs), _crs_key(dst_crs))


def _gdal_geotransform(transform) -> tuple[float, float, float, float, float, float]:
    a, b, c, d, e, f = (float(v) for v in tuple(transform)[:6])
    return (c, a, b, f, d, e)


def _invert_geotransform(gt: tuple[float, ...]) -> tuple[float, ...]:
    """Inverse of a GDAL-order geotransform, with GDAL's exact special case for north-up grids."""
    if gt[2] == 0.0 and gt[4] == 0.0 and gt[1] != 0.0 and gt[5] != 0.0:
        return (-gt[0] / gt[1], 1.0 / gt[1], 0.0, -gt[3] / gt[5], 0.0, 1.0 / gt[5])
    det = gt[1] * gt[5] - gt[2] * gt[4]
    magnitude = max(abs(gt[1]), abs(gt[2]), abs(gt[4]), abs(gt[5]))
    if abs(det) <= 1e-10 * magnitude * magnitude:
        raise PlanError(f"the source transform {gt!r} cannot be inverted")
    inv = 1.0 / det
    return (
        (gt[2] * gt[3] - gt[0] * gt[5]) * inv,
        gt[5] * inv,
        -gt[2] * inv,
        (-gt[1] * gt[3] + gt[0] * gt[4]) * inv,
        -gt[4] * inv,
        gt[1] * inv,
    )


def _pixels_to_source(
    px: np.ndarray, py: np.ndarray, target: Grid, source_crs, source_transform
) -> tuple[np.ndarray, np.ndarray]:
    """Target pixel coordinates -> source pixel coordinates, in the order of operations GDAL uses."""
    gt = _gdal_geotransform(target.transform)
    x = gt[0] + px * gt[1] + py * gt[2]
    y = gt[3] + px * gt[4] + py * gt[5]
    tr = transformer(target.crs, source_crs)
    if tr is not None:
        x, y = tr.transform(x, y, errcheck=False)
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    inv = _invert_geotransform(_gdal_geotransform(source_transform))
    cols = inv[0] + x * inv[1] + y * inv[2]
    rows = inv[3] + x * inv[4] + y * inv[5]
    bad = ~(np.isfinite(cols) & np.isfinite(rows))
    if bad.any():
        cols, rows = np.where(bad, np.nan, cols), np.where(bad, np.nan, rows)
    return cols, rows


def _exact_rows(xs: np.ndarray, ys: np.ndarray, base) -> tuple[np.ndarray, np.ndarray]:
    return base(xs[np.newaxis, :], ys[:, np.newaxis])


def _approx_rows(xs: np.ndarray, ys: np.ndarray, base, max_error: float) -> tuple[np.ndarray, np.ndarray]:
    """Transform the lattice ``xs`` x ``ys`` row by row with GDAL's approximate transformer.

    ``GDALApproxTransform`` takes one scanline (points sharing y) at a time: it transforms the first,
    middle and last points exactly; if linear interpolation between the ends misses the middle by at most
    ``max_error`` (sum of the x and y misses, in output units), every point of the scanline is
    interpolated, otherwise each half is treated the same way (halves of at most 5 points are transformed
    exactly). This reproduces that recursion, batched over all rows that share a segment, so the result
    equals GDAL's to the last bit of the arithmetic it performs.
    """
    m, n = ys.size, xs.size
    out_x = np.empty((m, n))
    out_y = np.empty((m, n))
    middle = (n - 1) // 2
    if max_error <= 0 or n <= 5 or xs[0] == xs[n - 1] or xs[0] == xs[middle]:
        return _exact_rows(xs, ys, base)

    def exact(rows: np.ndarray, cols: np.ndarray) -> None:
        if rows.size and cols.size:
            cx, cy = base(xs[cols][np.newaxis, :], ys[rows][:, np.newaxis])
            out_x[np.ix_(rows, cols)] = cx
            out_y[np.ix_(rows, cols)] = cy

    all_rows = np.arange(m)
    sx, sy = base(xs[[0, middle, n - 1]][np.newaxis, :], ys[:, np.newaxis])
    good = np.isfinite(sx).all(axis=1) & np.isfinite(sy).all(axis=1)
    exact(all_rows[~good], np.arange(n))
    # Pending segments: (start, length) -> list of (rows, start/middle/end transformed x and y (k, 3)).
    tasks: dict[tuple[int, int], list] = {(0, n): [(all_rows[good], sx[good], sy[good])]}
    while tasks:
        pending: dict[tuple[int, int], list] = {}
        for (s, length), parts in tasks.items():
            rows = np.concatenate([p[0] for p in parts])
            tx = np.concatenate([p[1] for p in parts])
            ty = np.concatenate([p[2] for p in parts])
            if rows.size == 0:
                continue
            mid = (length - 1) // 2
            x0, xm, xe = xs[s], xs[s + mid], xs[s + length - 1]
            dx = (tx[:, 2] - tx[:, 0]) / (xe - x0)
            dy = (ty[:, 2] - ty[:, 0]) / (xe - x0)
            error = np.abs((tx[:, 0] + dx * (xm - x0)) - tx[:, 1]) + np.abs(
                (ty[:, 0] + dy * (xm - x0)) - ty[:, 1]
            )
            leaf = ~(error > max_error)
            if leaf.any():
                dist = xs[s : s + length] - x0
                out_x[rows[leaf], s : s + length] = tx[leaf, :1] + dx[leaf, np.newaxis] * dist
                out_y[rows[leaf], s : s + length] = ty[leaf, :1] + dy[leaf, np.newaxis] * dist
            split = ~leaf
            if not split.any():
                continue
            rows, tx, ty = rows[split], tx[split], ty[split]
            small1, small2 = mid <= 5, length - mid <= 5
            picks = [s + (mid - 1) // 2, s + mid - 1, s + mid + (length - mid - 1) // 2]
            mx = np.full((rows.size, 3), 0.0)
            my = np.full((rows.size, 3), 0.0)
            need = ([0, 1] if not small1 else []) + ([2] if not small2 else [])
            if need:
                bx, by = base(xs[[picks[k] for k in need]][np.newaxis, :], ys[rows][:, np.newaxis])
                mx[:, need], my[:, need] = bx, by
                failed = ~(np.isfinite(bx).all(axis=1) & np.isfinite(by).all(axis=1))
            else:
                failed = np.zeros(rows.size, dtype=bool)
            # A middle point that fails to transform: GDAL transforms the whole segment exactly.
            exact(rows[failed], np.arange(s + 1, s + mid))
            exact(rows[failed], np.arange(s + mid + 1, s + length - 1))
            for k, col in enumerate((s, s + mid, s + length - 1)):
                out_x[rows[failed], col] = tx[failed, k]
                out_y[rows[failed], col] = ty[failed, k]
            ok = ~failed
            rows, tx, ty, mx, my = rows[ok], tx[ok], ty[ok], mx[ok], my[ok]
            if small1:
                exact(rows, np.arange(s + 1, s + mid))
                out_x[rows, s], out_y[rows, s] = tx[:, 0], ty[:, 0]
            else:
                first = (
                    rows,
                    np.stack([tx[:, 0], mx[:, 0], mx[:, 1]], 1),
                    np.stack([ty[:, 0], my[:, 0], my[:, 1]], 1),
                )
                pending.setdefault((s, mid), []).append(first)
            if small2:
                exact(rows, np.arange(s + mid + 1, s + length - 1))
                out_x[rows, s + mid], out_y[rows, s + mid] = tx[:, 1], ty[:, 1]
                out_x[rows, s + length - 1], out_y[rows, s + length - 1] = tx[:, 2], ty[:, 2]
            else:
                second = (
                    rows,
                    np.stack([tx[:, 1], mx[:, 2], tx[:, 2]], 1),
                    np.stack([ty[:, 1], my[:, 2], ty[:, 2]], 1),
                )
                pending.setdefault((s + mid, length - mid), []).append(second)
        tasks = pending
    return out_x, out_y


def _check_max_error(max_error: float) -> float:
    value = float(max_error)
    if not (math.isfinite(value) and value >= 0):
        raise PlanError(f"max_error must be a finite number >= 0 (pixels), got {max_error!r}")
    return value


def source_coordinates(
    target: Grid, source_crs: str, source_transform, *, max_error: float = DEFAULT_MAX_ERROR
) -> tuple[np.ndarray, np.ndarray]:
    """Fractional source ``(cols, rows)`` of every target pixel centre.

    Parameters
    ----------
    target : Grid
        The output grid (or one chunk of it, see :meth:`Grid.window_grid`).
    source_crs : str
        CRS of the source raster, ``"EPSG:n"`` or WKT.
    source_transform : affine 6-tuple or ``affine.Affine``
        The source raster's transform (rasterio order). Use a window's transform to get coordinates
        relative to that window.
    max_error : float
        Largest error, in source pixels, allowed when interpolating along each target row instead of
        transforming every point: GDAL's approximate transformer, which ``rasterio.warp.reproject`` always
        uses with 0.125 (the default here, so results match rasterio's). 0 transforms every centre
        exactly with pyproj.

    Returns
    -------
    cols, rows : ndarray of float64, shape ``target.shape``
        Source pixel coordinates of the centres ``(i + 0.5, j + 0.5)``: ``(0, 0)`` is the top-left
        corner of the source's top-left pixel, so pixel ``(r, c)`` spans ``[c, c + 1) x [r, r + 1)``.
        Points that fail to transform are NaN.
    """
    base = _base_transform(target, source_crs, source_transform)
    px = np.arange(target.width, dtype=np.float64) + 0.5
    py = np.arange(target.height, dtype=np.float64) + 0.5
    return _approx_rows(px, py, base, _check_max_error(max_error))


def source_footprints(
    target: Grid, source_crs: str, source_transform, *, max_error: float = DEFAULT_MAX_ERROR
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source coordinates of each target pixel's top-left and bottom-right corners (area methods).

    GDAL's average, mode, min and max take a target pixel's footprint in the source as the box spanned by
    its top-left corner ``(i, j)`` and bottom-right corner ``(i + 1, j + 1)``, each transformed along its
    own row (so with ``max_error > 0`` the two corners shared by neighbouring pixels may differ by the
    interpolation error, as in GDAL). Parameters as :func:`source_coordinates`.

    Returns
    -------
    x1, y1, x2, y2 : ndarray of float64, shape ``target.shape``
        Source ``(col, row)`` of the top-left (``x1, y1``) and bottom-right (``x2, y2``) corners.
    """
    base = _base_transform(target, source_crs, source_transform)
    err = _check_max_error(max_error)
    px = np.arange(target.width, dtype=np.float64)
    py = np.arange(target.height, dtype=np.float64)
    x1, y1 = _approx_rows(px, py, base, err)
    x2, y2 = _approx_rows(px + 1.0, py + 1.0, base, err)
    return x1, y1, x2, y2


def is_pixel_translation(target: Grid, source_crs: str, source_transform) -> bool:
    """True when the target grid is the source grid shifted by whole pixels (same CRS, same pixel shape).

    GDAL then copies pixels whatever the resampling method (its translation-on-pixel-boundaries
    optimisation), and so does :func:`warp`. Offsets within 1e-6 pixel of an integer count as whole.
    """
    if transformer(target.crs, source_crs) is not None:
        return False
    sgt, dgt = _gdal_geotransform(source_transform), _gdal_geotransform(target.transform)
    if (sgt[1], sgt[2], sgt[4], sgt[5]) != (dgt[1], dgt[2], dgt[4], dgt[5]):
        return False
    inv = _invert_geotransform(sgt)
    col = inv[0] + dgt[0] * inv[1] + dgt[3] * inv[2]
    row = inv[3] + dgt[0] * inv[4] + dgt[3] * inv[5]
    return abs(col - round(col)) <= 1e-6 and abs(row - round(row)) <= 1e-6


# --------------------------------------------------------------------------------------------------------
# Kernel scale and source windows


def _snap_scale(scale: float) -> float:
    # A downsampling factor within 0.05 of a whole number is taken as that number (PerformWarp).
    if scale < 1.0:
        reciprocal = 1.0 / scale
        whole = int(reciprocal + 0.5)
        if abs(reciprocal - whole) < 0.05:
            return 1.0 / whole
    return scale


@dataclass(frozen=True)
class _SourceWindow:
    """GDAL's source window for one warp chunk (``GDALWarpOperation::ComputeSourceWindow``)."""

    x_off: int
    y_off: int
    x_size: int
    y_size: int
    x_extra: float
    y_extra: float
    fill_ratio: float

    @property
    def empty(self) -> bool:
        return self.x_size <= 0 or self.y_size <= 0


_EMPTY_WINDOW = _SourceWindow(0, 0, 0, 0, 0.0, 0.0, 0.0)


def _edge_samples(dx: int, dy: int, dw: int, dh: int, every_pixel: bool) -> tuple[np.ndarray, np.ndarray]:
    """GDAL's sample points on the outline of a target window, in target pixel coordinates."""
    if every_pixel:
        ix = np.arange(dw + 1, dtype=np.float64) + dx
        iy = np.arange(1, dh, dtype=np.float64) + dy
        xs = np.concatenate([ix, ix, np.full(iy.size, float(dx)), np.full(iy.size, float(dx + dw))])
        ys = np.concatenate([np.full(ix.size, float(dy)), np.full(ix.size, float(dy + dh)), iy, iy])
        return xs, ys
    ratios, ratio, step = [], 0.0, 1.0 / (_STEP_COUNT - 1)
    while ratio <= 1.0 + step * 0.5:  # accumulated as GDAL does, rounding included
        ratios.append(ratio)
        ratio += step
    r = np.array(ratios)
    along_x, along_y = r * dw + dx, r * dh + dy
    xs = np.concatenate([along_x, along_x, np.full(r.size, float(dx)), np.full(r.size, float(dx + dw))])
    ys = np.concatenate([np.full(r.size, float(dy)), np.full(r.size, float(dy + dh)), along_y, along_y])
    return xs, ys


def _source_window(
    base, dst: tuple[int, int, int, int], src_w: int, src_h: int, radius: int
) -> _SourceWindow:
    """The source window GDAL reads for target window ``dst`` = (x_off, y_off, width, height).

    ``base`` maps target pixel coordinates to source pixel coordinates; ``radius`` is the kernel's
    (0 for the translation shortcut).
    """
    dx, dy, dw, dh = dst
    corners = base(
        np.array([dx, dx + dw, dx, dx + dw], dtype=np.float64),
        np.array([dy, dy, dy + dh, dy + dh], dtype=np.float64),
    )
    every_pixel = not (np.isfinite(corners[0]).all() and np.isfinite(corners[1]).all())
    sx, sy = base(*_edge_samples(dx, dy, dw, dh, every_pixel))
    ok = np.isfinite(sx) & np.isfinite(sy)
    failed = int((~ok).sum())
    if failed > ok.size - 5:
        return _EMPTY_WINDOW
    sx, sy = sx[ok], sy[ok]

    def near_int(v: float) -> float:
        r = round(v)
        return float(r) if abs(r - v) < 1e-6 else float(v)

    xmin, xmax = near_int(float(sx.min())), near_int(float(sx.max()))
    ymin, ymax = near_int(float(sy.min())), near_int(float(sy.max()))
    if xmin > src_w or xmax < 0 or ymin > src_h or ymax < 0:
        return _EMPTY_WINDOW

    def axis(lo: float, hi: float, n_dst: int, n_src: int) -> tuple[int, int, float, int]:
        span = hi - lo
        window_scale = max(1e-3, n_dst / span) if span > 0 else math.inf
        pad = math.ceil(radius / window_scale) if window_scale < _FOUR_SAMPLE_SCALE else radius
        if failed:
            pad += 10
        lo_c = int(max(0.0, lo))
        hi_c = int(min(math.ceil(hi), float(n_src)))
        raw = max(0.0, min(float(n_src - lo_c), span))
        if hi_c - lo_c > 0.9 * n_src:
            off, size = 0, n_src
        else:
            off = max(0, min(lo_c - pad, n_src))
            size = max(0, min(n_src - off, hi_c - off + pad))
        return off, size, size - raw, pad

    x_off, x_size, x_extra, x_pad = axis(xmin, xmax, dw, src_w)
    y_off, y_size, y_extra, y_pad = axis(ymin, ymax, dh, src_h)
    fill = x_size * y_size / max(1.0, (xmax - xmin + 2 * x_pad) * (ymax - ymin + 2 * y_pad))
    return _SourceWindow(x_off, y_off, x_size, y_size, x_extra, y_extra, fill)


def _window_scale(dw: int, dh: int, window: _SourceWindow) -> tuple[float, float]:
    """GDAL's kernel scale for a chunk (``GDALWarpKernel::PerformWarp``)."""

    def axis(n_dst: int, size: int, extra: float) -> float:
        raw = size - extra
        if size <= 0 or raw <= 0:
            return 1.0
        scale = n_dst / raw
        if n_dst <= size <= n_dst + extra:
            scale = 1.0
        return _snap_scale(scale)

    return (axis(dw, window.x_size, window.x_extra), axis(dh, window.y_size, window.y_extra))


def _base_transform(target: Grid, source_crs: str, source_transform):
    return functools.partial(
        _pixels_to_source, target=target, source_crs=source_crs, source_transform=source_transform
    )


def kernel_scale(
    target: Grid,
    source_crs: str,
    source_transform,
    source_width: int,
    source_height: int,
    *,
    method: str = "bilinear",
) -> tuple[float, float]:
    """The ``(x, y)`` scale (target pixels per source pixel) GDAL 3.10's warper gives its kernels.

    It decides whether bilinear and cubic use their 2 x 2 / 4 x 4 formulas (scale >= 0.95 on both axes)
    or filters widened by ``1 / scale`` (downsampling), and the footprint margins of the area methods.
    GDAL computes it once per warp chunk (``GDALWarpOperation::ComputeSourceWindow`` and
    ``GDALWarpKernel::PerformWarp``); this reproduces that computation for a chunk equal to ``target``
    (pass :meth:`Grid.window_grid` of a larger grid for one chunk of it):

    1. the chunk's outline (21 points per edge; every edge pixel corner when a corner fails to
       transform) goes to source pixel coordinates; their extent, rounded to integers within 1e-6, is
       the raw source window;
    2. the raw width is clipped to the raster (``min(width - floor(max(0, xmin)), xmax - xmin)``), and the
       scale is ``target width / raw width`` (likewise for y);
    3. the scale is 1 when the padded integer source window is at least as wide as the target but the raw
       one is not; below 1, a factor within 0.05 of a whole number ``n`` becomes exactly ``1 / n``.

    Because of step 2 a chunk that reaches beyond the source's edge gets a larger scale than the grids'
    resolution ratio (GDAL 3.13 changed this rule; rasterio 1.4's GDAL 3.10 uses it). GDAL's special
    cases for grids wrapping the antimeridian (``XSCALE=FROM_GRID_SAMPLING``) and for points near
    projection singularities are not reproduced. When the chunk lies wholly outside the source GDAL warps
    nothing and this returns ``(1.0, 1.0)``.
    """
    _check_method(method)
    base = _base_transform(target, source_crs, source_transform)
    radius = 0 if is_pixel_translation(target, source_crs, source_transform) else _FILTER_RADIUS[method]
    window = _source_window(base, (0, 0, target.width, target.height), source_width, source_height, radius)
    if window.empty:
        return (1.0, 1.0)
    return _window_scale(target.width, target.height, window)


def _gdal_chunks(
    base,
    target: Grid,
    src_w: int,
    src_h: int,
    radius: int,
    src_pixel_bits: int,
    dst_pixel_bits: int,
) -> list[tuple[tuple[int, int, int, int], _SourceWindow]]:
    """GDAL's warp chunks (``CollectChunkListInternal``) for a MEM destination, rasterio's case.

    A target window is halved along its longer side (x on ties goes to y) while its working memory
    exceeds GDAL's default 64 MiB, or while it reads under half of its clamped source window and is
    more than 100 pixels on a side (the source fill-ratio heuristic); chunks run top to bottom, then
    left to right.
    """
    chunks: list[tuple[tuple[int, int, int, int], _SourceWindow]] = []

    def collect(dx: int, dy: int, dw: int, dh: int) -> None:
        window = _source_window(base, (dx, dy, dw, dh), src_w, src_h, radius)
        memory = (src_pixel_bits * window.x_size * window.y_size + dst_pixel_bits * dw * dh) / 8.0
        if (memory > _WARP_MEMORY_LIMIT and (dw > 2 or dh > 2)) or (
            0 < window.fill_ratio < 0.5 and (dw > 100 or dh > 100)
        ):
            if dw > dh:
                half = dw // 2
                collect(dx, dy, half, dh)
                collect(dx + half, dy, dw - half, dh)
            else:
                half = dh // 2
                collect(dx, dy, dw, half)
                collect(dx, dy + half, dw, dh - half)
            return
        chunks.append(((dx, dy, dw, dh), window))

    collect(0, 0, target.width, target.height)
    chunks.sort(key=lambda c: (c[0][1], c[0][0]))
    return chunks


def _estimate_scale(cols: np.ndarray, rows: np.ndarray) -> tuple[float, float]:
    """A kernel scale from the centres alone: one over the median source step between neighbours."""
    if cols.ndim != 2:
        return (1.0, 1.0)

    def one(step_a: np.ndarray, step_b: np.ndarray) -> float:
        step = np.hypot(step_a, step_b)
        step = step[np.isfinite(step)]
        if step.size == 0:
            return 1.0
        median = float(np.median(step))
        return _snap_scale(max(1e-3, 1.0 / median)) if median > 0 else 1.0

    with np.errstate(invalid="ignore", over="ignore"):
        xs = one(np.diff(cols, axis=1), np.diff(rows, axis=1))
        ys = one(np.diff(cols, axis=0), np.diff(rows, axis=0))
    return (xs, ys)


def _radius(method: str, scale: float) -> int:
    filt = _FILTER_RADIUS[method]
    return math.ceil(filt / scale) if scale < 1.0 else filt


def required_window(
    cols: np.ndarray,
    rows: np.ndarray,
    *,
    method: str,
    width: int,
    height: int,
    scale: tuple[float, float] | None = None,
) -> tuple[int, int, int, int] | None:
    """The source window ``(row_off, col_off, height, width)`` a resample needs, clipped to the raster.

    ``cols``/``rows`` are source coordinates of target pixel centres (nearest, bilinear, cubic) or, for
    the area methods, of target pixel corners (e.g. the concatenated ``x1, x2`` and ``y1, y2`` of
    :func:`source_footprints`), both relative to the whole ``width`` x ``height`` raster.
    Returns None when no source pixel is needed. Pass ``cols - col_off`` and ``rows - row_off`` with the
    windowed array to :func:`resample`.
    """
    _check_method(method)
    ok = np.isfinite(cols) & np.isfinite(rows)
    if not ok.any():
        return None
    c, r = np.asarray(cols)[ok], np.asarray(rows)[ok]
    if method in _AREA_METHODS:
        c0, c1 = math.floor(c.min() + _EDGE_EPS), math.ceil(c.max() - _EDGE_EPS) + 1
        r0, r1 = math.floor(r.min() + _EDGE_EPS), math.ceil(r.max() - _EDGE_EPS) + 1
    else:
        xs, ys = scale if scale is not None else _estimate_scale(np.asarray(cols), np.asarray(rows))
        rx, ry = _radius(method, xs), _radius(method, ys)
        c0, c1 = math.floor(c.min() - 0.5) - rx, math.floor(c.max() + _EDGE_EPS) + rx + 2
        r0, r1 = math.floor(r.min() - 0.5) - ry, math.floor(r.max() + _EDGE_EPS) + ry + 2
    c0, c1 = max(c0, 0), min(c1, int(width))
    r0, r1 = max(r0, 0), min(r1, int(height))
    if c0 >= c1 or r0 >= r1:
        return None
    return (r0, c0, r1 - r0, c1 - c0)


# --------------------------------------------------------------------------------------------------------
# Validity and output values


def nodata_valid(source: np.ndarray, nodata) -> np.ndarray:
    """Where ``source`` is not ``nodata``, by GDAL 3.10's warper rule (``GDALWarpNoDataMasker``).

    8- and 16-bit integers (int8 is warped as int16): equal to ``floor(nodata + 1e-6)`` is nodata, and a
    nodata outside the type's range marks nothing. Other types: a NaN nodata marks NaNs; otherwise a
    value ``v`` is nodata when ``v == nodata`` or ``|v - nodata| < 2 * eps32 * |v + nodata|`` (eps32 is
    float32's machine epsilon), computed in float32 for float32 data and in float64 for the rest, so
    32- and 64-bit integers within that relative distance of the nodata count as nodata too.
    """
    a = np.asarray(source)
    if nodata is None:
        return np.ones(a.shape, dtype=bool)
    if a.dtype.kind not in "iuf":
        raise PlanError(f"cannot resample arrays of dtype {a.dtype}")
    nd = float(nodata)
    work = _working_dtype(a.dtype)
    if work.kind in "iu" and work.itemsize <= 2:
        info = np.iinfo(work)
        if math.isnan(nd) or nd < info.min or nd > info.max + 0.000001:
            return np.ones(a.shape, dtype=bool)
        return a != math.floor(nd + 0.000001)
    ft = np.float32 if work == np.dtype(np.float32) else np.float64
    v = a.astype(ft, copy=False)
    if math.isnan(nd):
        return ~np.isnan(v)
    ndv = ft(nd)
    with np.errstate(over="ignore", invalid="ignore"):
        close = (v == ndv) | (np.abs(v - ndv) < ft(np.finfo(np.float32).eps) * np.abs(v + ndv) * ft(2))
    return ~close


def _working_dtype(dtype: np.dtype) -> np.dtype:
    """The type GDAL 3.10's warper computes in for ``dtype`` data (``GDALWarpResolveWorkingDataType``)."""
    return np.dtype(np.int16) if dtype == np.dtype(np.int8) else dtype


def _to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """float64 results -> ``dtype`` as GDAL stores them: clamp, then round half up (floor(v + 0.5))."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        lo, hi = float(info.min), float(info.max)
        v = np.where(np.isnan(values), 0.0, values)
        rounded = np.floor(v + 0.5)
        out = np.where(v < lo, lo, np.where(v > hi, hi, rounded))
        # float(info.max) rounds up for 64-bit types; clip in the integer domain after the cast.
        with np.errstate(invalid="ignore"):
            res = out.astype(dtype)
        if dtype.itemsize == 8:
            res = np.where(v > hi, info.max, np.where(v < lo, info.min, res)).astype(dtype)
        return res
    with np.errstate(over="ignore"):  # GDAL's static_cast<float>: out-of-range doubles become infinities
        return values.astype(dtype)


def _avoid_value(out: np.ndarray, valid: np.ndarray, dst_nodata, method: str) -> None:
    """Move valid integers that equal the destination nodata one step away from it, as GDAL 3.10 does.

    GDAL's general kernels store a result equal to the destination nodata as one less (or the type's
    minimum plus one); its dedicated nearest kernels for 8- and 16-bit integers, and every kernel for
    floating-point data, store it unchanged (GDAL 3.11 extended the rule to those).
    """
    dtype = out.dtype
    if dst_nodata is None or dtype.kind not in "iu" or math.isnan(float(dst_nodata)):
        return
    if method == "nearest" and dtype in _GDAL_NEAREST_KERNEL_TYPES:
        return
    info = np.iinfo(dtype)
    hit = valid & (out.astype(np.float64) == float(dst_nodata))
    if hit.any():
        out[hit] = info.min + 1 if float(dst_nodata) == info.min else int(dst_nodata) - 1


# --------------------------------------------------------------------------------------------------------
# Kernels. Each takes the (bands, h, w) source, a (1 or bands, h, w) validity mask and flat coordinates,
# and returns (float64 or native values of shape (bands, n), validity of shape (bands, n)).


class _Pixels:
    """A (bands, h, w) source and its validity, read at integer positions through flat indices."""

    def __init__(self, src: np.ndarray, valid: np.ndarray):
        self.bands, self.h, self.w = src.shape
        self.dtype = src.dtype
        self.values = src.reshape(self.bands, -1)
        self.all_valid = bool(valid.all())
        self.valid = None if self.all_valid else valid.reshape(valid.shape[0], -1)
        # With only finite values a zero weight contributes exactly nothing, so masked taps can be
        # multiplied by zero instead of selected out (NaN * 0 would not vanish).
        self.finite = src.dtype.kind != "f" or bool(np.isfinite(src).all())

    def take(self, flat: np.ndarray):
        """Values at in-range ``flat`` indices, and their validity (None when every pixel is valid)."""
        vals = np.take(self.values, flat, axis=-1)
        return vals, None if self.valid is None else np.take(self.valid, flat, axis=-1)


def _centre_pixels(px: _Pixels, x: np.ndarray, y: np.ndarray):
    """The source pixel containing each centre, and whether the target pixel may be valid at all."""
    w, h = px.w, px.h
    inside = (x >= 0) & (y >= 0) & (x + _EDGE_EPS <= w) & (y + _EDGE_EPS <= h)
    ix = np.minimum((np.where(inside, x, 0.0) + _EDGE_EPS).astype(np.intp), w - 1)
    iy = np.minimum((np.where(inside, y, 0.0) + _EDGE_EPS).astype(np.intp), h - 1)
    vals, ok = px.take(iy * w + ix)
    return vals, inside[np.newaxis] if ok is None else ok & inside


def _accumulate(px: _Pixels, acc, div, vals, ok, weight, inside):
    """Add ``vals * weight`` over valid in-raster taps to ``acc``, and their weights to ``div``, as GDAL does.

    ``weight`` is already zero off the raster; ``inside`` (only read for non-finite data) says which taps
    are on it, since GDAL adds a NaN with weight zero when the pixel is on the raster.
    """
    if px.finite:
        if ok is not None:
            weight = weight * ok
        term = vals * weight
    else:
        keep = inside() if ok is None else ok & inside()
        weight = np.where(keep, weight, 0.0)
        term = np.where(keep, vals * weight, 0.0)
    acc = term if acc is None else acc + term
    div = weight if div is None else div + weight
    return acc, div


def _finish(acc, div, min_weight: float, unit_tolerance: float):
    div = np.broadcast_to(div, acc.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        if unit_tolerance == 0.0:
            out = np.where(div == 1.0, acc, acc / div)
        else:
            out = np.where(np.abs(div - 1.0) <= unit_tolerance, acc, acc / div)
    return out, div >= min_weight


def _bilinear4(px: _Pixels, x, y):
    """GDAL's 2 x 2 bilinear with weights renormalised over valid, in-raster neighbours."""
    fx = np.floor(x - 0.5)
    fy = np.floor(y - 0.5)
    rx = 1.5 - (x - fx)
    ry = 1.5 - (y - fy)
    # A centre in the first half of pixel 0 weights pixel 0 alone (GDAL clamps, not extrapolates).
    left, top = fx == -1, fy == -1
    fx, rx = np.where(left, 0.0, fx), np.where(left, 1.0, rx)
    fy, ry = np.where(top, 0.0, fy), np.where(top, 1.0, ry)
    ix, iy = fx.astype(np.intp), fy.astype(np.intp)
    # Off-source taps read a clamped pixel with weight zero, which adds exactly nothing.
    cols = [np.clip(ix + k, 0, px.w - 1) for k in (0, 1)]
    rows = [np.clip(iy + k, 0, px.h - 1) * px.w for k in (0, 1)]
    in_x = [(ix + k >= 0) & (ix + k < px.w) for k in (0, 1)]
    in_y = [(iy + k >= 0) & (iy + k < px.h) for k in (0, 1)]
    wx = [np.where(in_x[0], rx, 0.0), np.where(in_x[1], 1.0 - rx, 0.0)]
    wy = [np.where(in_y[0], ry, 0.0), np.where(in_y[1], 1.0 - ry, 0.0)]
    acc = div = None
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        vals, ok = px.take(rows[dy] + cols[dx])
        inside = functools.partial(np.logical_and, in_x[dx], in_y[dy])
        acc, div = _accumulate(px, acc, div, vals, ok, wx[dx] * wy[dy], inside)
    return _finish(acc, div, _BILINEAR_MIN_WEIGHT, 0.0)


def _cubic_weights(d: np.ndarray) -> tuple[np.ndarray, ...]:
    # Catmull-Rom (Keys, a = -0.5) weights of the 4 pixels around a point d in [0, 1) past the second.
    half = 0.5 * d
    three = 3.0 * d
    half2 = half * d
    return (
        half * (-1 + d * (2 - d)),
        1 + half2 * (-5 + three),
        half * (1 + d * (4 - three)),
        half2 * (-1 + d),
    )


def _cubic4(px: _Pixels, x, y):
    """GDAL's 4 x 4 cubic; the bilinear above where the 4 x 4 block is not wholly valid and in-raster."""
    values, valid = _bilinear4(px, x, y)
    ix = np.trunc(x - 0.5)  # C cast: towards zero
    iy = np.trunc(y - 0.5)
    dx, dy = x - 0.5 - ix, y - 0.5 - iy
    ix, iy = ix.astype(np.intp), iy.astype(np.intp)
    interior = (ix - 1 >= 0) & (ix + 2 < px.w) & (iy - 1 >= 0) & (iy + 2 < px.h)
    if not interior.any():
        return values, valid
    wx, wy = _cubic_weights(dx), _cubic_weights(dy)
    corner = np.where(interior, (iy - 1) * px.w + (ix - 1), 0)
    all_ok = interior
    total = None
    for j in range(4):
        row = None
        for i in range(4):
            vals, ok = px.take(corner + (j * px.w + i))
            if ok is not None:
                all_ok = all_ok & ok
            row = vals * wx[i] if row is None else row + vals * wx[i]
        total = row * wy[j] if total is None else total + row * wy[j]
    use = np.broadcast_to(all_ok, values.shape)
    return np.where(use, total, values), np.where(use, True, valid)


def _bilinear_filter(t: np.ndarray) -> np.ndarray:
    a = np.abs(t)
    return np.where(a <= 1.0, 1.0 - a, 0.0)


def _cubic_filter(t: np.ndarray) -> np.ndarray:
    a = np.abs(t)
    t2 = t * t
    return np.where(
        a <= 1.0, t2 * (1.5 * a - 2.5) + 1.0, np.where(a <= 2.0, t2 * (-0.5 * a + 2.5) - 4.0 * a + 2.0, 0.0)
    )


def _sum_in_order(terms: np.ndarray) -> np.ndarray:
    """Sum over the last axis one term after another, as GDAL's loops add (np.sum pairs them up)."""
    if terms.shape[-1] > 32:  # long rows: accumulate is sequential and vectorised along the row
        return np.add.accumulate(terms, axis=-1)[..., -1]
    total = terms[..., 0]
    for k in range(1, terms.shape[-1]):
        total = total + terms[..., k]
    return total


def _filtered(px: _Pixels, x, y, method: str, scale: tuple[float, float], no_masks: bool):
    """GDAL's general kernel (GWKResample): the filter stretched by 1/scale, renormalised over valid pixels.

    Taps are added in GDAL's order (along each row, then row by row). With ``no_masks`` (GDAL's dedicated
    kernels for sources without invalid pixels) the bilinear window starts one tap later; that tap's
    weight is zero, which only matters for NaN or infinite values.
    """
    xs, ys = scale
    filt = _FILTER_RADIUS[method]
    func = _bilinear_filter if method == "bilinear" else _cubic_filter
    rx, ry = _radius(method, xs), _radius(method, ys)
    first = 1 if no_masks else (filt + 1) % 2
    taps_x = np.arange(first - rx, rx + 1)
    taps_y = range(first - ry, ry + 1)
    if taps_x.size * len(taps_y) > _MANY_TAPS:
        # A very wide filter: gather a whole row of taps per step instead of one tap per step.
        step = max(1, _TAP_BLOCK // taps_x.size)
        if x.size > step:
            parts = [
                _filtered(px, x[i : i + step], y[i : i + step], method, scale, no_masks)
                for i in range(0, x.size, step)
            ]
            return np.concatenate([p[0] for p in parts], axis=-1), np.concatenate(
                [p[1] for p in parts], axis=-1
            )
    ix, iy = np.floor(x - 0.5), np.floor(y - 0.5)
    dx, dy = x - 0.5 - ix, y - 0.5 - iy
    ix, iy = ix.astype(np.intp), iy.astype(np.intp)
    wide = taps_x.size * len(taps_y) > _MANY_TAPS
    tx = ix[:, np.newaxis] + taps_x
    in_x = (tx >= 0) & (tx < px.w)
    dist_x = taps_x - dx[:, np.newaxis]
    wx = np.where(in_x, func(dist_x * xs) if xs < 1.0 else func(dist_x), 0.0)
    cols = np.clip(tx, 0, px.w - 1)
    if not wide:  # per-tap columns: contiguous vectors are faster than strided ones
        wx, in_x, cols = wx.T.copy(), in_x.T.copy(), cols.T.copy()
    acc = wacc = None
    for j in taps_y:
        weight = func((j - dy) * ys) if ys < 1.0 else func(j - dy)
        in_y = (iy + j >= 0) & (iy + j < px.h)
        wy = np.where(in_y, weight, 0.0)
        row_base = np.clip(iy + j, 0, px.h - 1) * px.w
        if wide:
            vals, ok = px.take(row_base[:, np.newaxis] + cols)
            inside = functools.partial(np.logical_and, in_x, in_y[:, np.newaxis])
            terms, weights = _accumulate(px, None, None, vals, ok, wx, inside)
            row, wrow = _sum_in_order(terms), _sum_in_order(weights)
        else:
            row = wrow = None
            for k in range(taps_x.size):
                vals, ok = px.take(row_base + cols[k])
                inside = functools.partial(np.logical_and, in_x[k], in_y)
                row, wrow = _accumulate(px, row, wrow, vals, ok, wx[k], inside)
        acc = row * wy if acc is None else acc + row * wy
        wacc = wrow * wy if wacc is None else wacc + wrow * wy
    return _finish(acc, wacc, _FILTER_MIN_WEIGHT, _UNIT_WEIGHT_TOL)


def _footprints(x1, y1, x2, y2, w: int, h: int, scale):
    """Integer footprint [ix0, ix1) x [iy0, iy1) and its fractional edges for each target pixel."""
    xs, ys = scale
    mx = 2 * max(1, math.ceil(1.0 / xs))
    my = 2 * max(1, math.ceil(1.0 / ys))
    # GDAL skips target pixels whose corners lie far off the source (a guard against wild transforms).
    with np.errstate(invalid="ignore"):
        ok = (
            np.isfinite(x1)
            & np.isfinite(x2)
            & np.isfinite(y1)
            & np.isfinite(y2)
            & (x1 >= -mx)
            & (x2 >= -mx)
            & (y1 >= -my)
            & (y2 >= -my)
            & (x1 - w <= mx)
            & (x2 - w <= mx)
            & (y1 - h <= my)
            & (y2 - h <= my)
        )
    xmin, xmax = np.fmin(x1, x2), np.fmax(x1, x2)
    ymin, ymax = np.fmin(y1, y2), np.fmax(y1, y2)
    ok &= (xmax > -_EDGE_EPS) & (xmin < w + _EDGE_EPS) & (ymax > -_EDGE_EPS) & (ymin < h + _EDGE_EPS)
    xmin, xmax = np.where(ok, xmin, 0.0), np.where(ok, xmax, 0.0)
    ymin, ymax = np.where(ok, ymin, 0.0), np.where(ok, ymax, 0.0)
    ix0 = np.maximum(np.floor(xmin + _EDGE_EPS), 0.0).astype(np.intp)
    ix1 = np.minimum(np.ceil(xmax - _EDGE_EPS), float(w)).astype(np.intp)
    ix1 = np.where((ix0 == ix1) & (ix1 < w), ix1 + 1, ix1)
    iy0 = np.maximum(np.floor(ymin + _EDGE_EPS), 0.0).astype(np.intp)
    iy1 = np.minimum(np.ceil(ymax - _EDGE_EPS), float(h)).astype(np.intp)
    iy1 = np.where((iy0 == iy1) & (iy1 < h), iy1 + 1, iy1)
    ix1, iy1 = np.where(ok, ix1, ix0), np.where(ok, iy1, iy0)
    return ok, ix0, ix1, iy0, iy1, xmin, xmax, ymin, ymax


def _area_weights(i0, i1, lo, hi, offsets):
    """GDAL's partial-pixel factors of footprint cells ``i0 + offsets`` along one axis (COMPUTE_WEIGHT):
    the first and last cells count the fraction inside ``[lo, hi]``, a single cell counts fully."""
    i = i0[:, np.newaxis] + offsets
    first = np.where((i0 + 1 == i1)[:, np.newaxis], 1.0, 1 - (lo - i0)[:, np.newaxis])
    last = 1 - (i1[:, np.newaxis] - hi[:, np.newaxis])
    return np.where(i == i0[:, np.newaxis], first, np.where(i + 1 == i1[:, np.newaxis], last, 1.0))


def _area(px: _Pixels, footprints, method: str, scale):
    """Average, mode, min and max over each target pixel's footprint.

    Pixels are grouped by footprint size so no group loops over more cells than its own footprints
    have. Footprints of up to ``_SMALL_FOOTPRINT`` cells visit their cells one by one in GDAL's order
    (row by row), keeping its incremental weighted mean bit for bit; larger ones are gathered whole.
    """
    ok, ix0, ix1, iy0, iy1, xmin, xmax, ymin, ymax = _footprints(*footprints, px.w, px.h, scale)
    n = ix0.size
    if method == "average":
        values = np.zeros((px.bands, n))
    elif method == "mode" or px.dtype.kind != "f":
        values = np.zeros((px.bands, n), dtype=px.dtype)
    else:
        values = np.zeros((px.bands, n))
    found = np.zeros((px.bands, n), dtype=bool)
    span_x, span_y = ix1 - ix0, iy1 - iy0
    small = span_x * span_y <= _SMALL_FOOTPRINT
    # Small footprints group by their exact size, large ones by powers of two (bounded padding).
    gx = np.where(small, span_x, 1 << np.ceil(np.log2(np.maximum(span_x, 1))).astype(np.int64))
    gy = np.where(small, span_y, 1 << np.ceil(np.log2(np.maximum(span_y, 1))).astype(np.int64))
    key = np.where(ok, gy * (int(gx.max(initial=0)) + 1) + gx, -1)
    order = np.argsort(key, kind="stable")
    bounds = np.flatnonzero(np.diff(key[order])) + 1
    for idx in np.split(order, bounds):
        if idx.size == 0 or key[idx[0]] < 0:
            continue
        sy, sx = int(gy[idx[0]]), int(gx[idx[0]])
        if sy == 0 or sx == 0:
            continue
        box = (ix0[idx], ix1[idx], iy0[idx], iy1[idx], xmin[idx], xmax[idx], ymin[idx], ymax[idx])
        step = max(1, _TAP_BLOCK // (sy * sx))
        for start in range(0, idx.size, step):
            part = idx[start : start + step]
            sub = tuple(a[start : start + step] for a in box)
            if method == "mode":
                v, f = _mode(px, sub, sy, sx)
            elif small[idx[0]]:
                v, f = _area_in_order(px, sub, sy, sx, method)
            else:
                v, f = _area_gathered(px, sub, sy, sx, method)
            values[:, part] = v
            found[:, part] = f
    return values, found


def _area_in_order(px: _Pixels, box, sy: int, sx: int, method: str):
    """Footprints of at most ``sy`` x ``sx`` cells, visited cell by cell in GDAL's row-major order."""
    ix0, ix1, iy0, iy1, xmin, xmax, ymin, ymax = box
    n = ix0.size
    nv = 1 if px.valid is None else px.valid.shape[0]
    wys = _area_weights(iy0, iy1, ymin, ymax, np.arange(sy))
    wxs = _area_weights(ix0, ix1, xmin, xmax, np.arange(sx))
    if method == "average":
        total = np.zeros((nv, n))
        mean = np.zeros((px.bands, n))
    else:
        found = np.zeros((nv, n), dtype=bool)
        if px.dtype.kind == "f":
            big = np.finfo(np.float64).max
            acc = np.full((px.bands, n), -big if method == "max" else big)
        else:
            info = np.iinfo(px.dtype)
            acc = np.full((px.bands, n), info.min if method == "max" else info.max, dtype=px.dtype)
    for oy in range(sy):
        iy = iy0 + oy
        for ox in range(sx):
            ix = ix0 + ox
            inside = (iy < iy1) & (ix < ix1)
            vals, ok_px = px.take(np.where(inside, iy * px.w + ix, 0))
            active = inside if ok_px is None else ok_px & inside
            if method == "average":
                # COMPUTE_WEIGHT: the row factor times the column factor, in GDAL's order.
                weight = wys[:, oy] * wxs[:, ox]
                active = active & (weight > 0)
                new_total = np.where(active, total + weight, total)
                with np.errstate(invalid="ignore", divide="ignore"):
                    # GDAL's incremental weighted mean, kept step for step so integer rounding ties agree.
                    step = (weight / new_total) * (vals - mean)
                mean = np.where(active, mean + step, mean)
                total = new_total
            else:
                found |= active
                v = vals.astype(np.float64) if px.dtype.kind == "f" else vals
                better = (v > acc) if method == "max" else (v < acc)
                acc = np.where(active & better, v, acc)
    if method == "average":
        return mean, np.broadcast_to(total > 0, mean.shape)
    return acc, np.broadcast_to(found, acc.shape)


def _area_gathered(px: _Pixels, box, sy: int, sx: int, method: str):
    """Footprints of up to ``sy`` x ``sx`` cells, gathered whole. Averages are sums over weights: the
    same terms as GDAL's incremental mean, added in another order (last-bit differences only)."""
    ix0, ix1, iy0, iy1, xmin, xmax, ymin, ymax = box
    oy, ox = np.arange(sy), np.arange(sx)
    iy = iy0[:, np.newaxis] + oy
    ix = ix0[:, np.newaxis] + ox
    inside = (iy < iy1[:, np.newaxis])[:, :, np.newaxis] & (ix < ix1[:, np.newaxis])[:, np.newaxis, :]
    flat = np.where(inside, (iy * px.w)[:, :, np.newaxis] + ix[:, np.newaxis, :], 0)
    vals, ok_px = px.take(flat)
    active = inside if ok_px is None else ok_px & inside
    if method == "average":
        weight = (
            _area_weights(iy0, iy1, ymin, ymax, oy)[:, :, np.newaxis]
            * _area_weights(ix0, ix1, xmin, xmax, ox)[:, np.newaxis, :]
        )
        active = active & (weight > 0)
        total = np.where(active, weight, 0.0).sum(axis=(-2, -1))
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(active, vals * weight, 0.0).sum(axis=(-2, -1)) / total
        return np.broadcast_to(mean, (px.bands, ix0.size)), np.broadcast_to(total > 0, (px.bands, ix0.size))
    found = np.broadcast_to(active.any(axis=(-2, -1)), (px.bands, ix0.size))
    if px.dtype.kind == "f":
        big = np.finfo(np.float64).max
        start = -big if method == "max" else big
        # GDAL compares with < and >, so NaNs never win.
        v = np.where(active & ~np.isnan(vals), vals.astype(np.float64), start)
    else:
        info = np.iinfo(px.dtype)
        v = np.where(active, vals, info.min if method == "max" else info.max)
    best = v.max(axis=(-2, -1)) if method == "max" else v.min(axis=(-2, -1))
    return np.broadcast_to(best, (px.bands, ix0.size)), found


def _mode(px: _Pixels, box, sy: int, sx: int):
    """Most frequent valid value in each footprint; ties go to the value that reached the top count first."""
    ix0, ix1, iy0, iy1 = box[:4]
    n, k = ix0.size, sy * sx
    oy = np.repeat(np.arange(sy), sx)
    ox = np.tile(np.arange(sx), sy)
    iy = iy0[:, np.newaxis] + oy
    ix = ix0[:, np.newaxis] + ox
    inside = (iy < iy1[:, np.newaxis]) & (ix < ix1[:, np.newaxis])
    all_vals, ok_px = px.take(np.where(inside, iy * px.w + ix, 0))
    all_inc = inside[np.newaxis] if ok_px is None else ok_px & inside
    values = np.zeros((px.bands, n), dtype=px.dtype)
    found = np.zeros((px.bands, n), dtype=bool)
    positions = np.arange(k)
    for b in range(px.bands):
        vals = all_vals[b]
        inc = all_inc[min(b, all_inc.shape[0] - 1)]
        # Sort each footprint (stably, included values first) so equal values form runs; a value's
        # running count at each position is its rank within its run.
        order = np.lexsort((vals, ~inc), axis=-1)
        sv = np.take_along_axis(vals, order, axis=-1)
        sinc = np.take_along_axis(inc, order, axis=-1)
        new_run = np.ones(sv.shape, dtype=bool)
        with np.errstate(invalid="ignore"):
            new_run[:, 1:] = (sv[:, 1:] != sv[:, :-1]) | (sinc[:, 1:] != sinc[:, :-1])
        run_start = np.maximum.accumulate(np.where(new_run, positions, 0), axis=-1)
        rank = positions - run_start + 1
        counts = np.empty_like(rank)
        np.put_along_axis(counts, order, rank, axis=-1)
        counts[~inc] = 0
        top = counts.max(axis=-1)
        first = np.argmax(counts == top[:, np.newaxis], axis=-1)
        values[b] = np.take_along_axis(vals, first[:, np.newaxis], axis=-1)[:, 0]
        found[b] = top > 0
    return values, found


# --------------------------------------------------------------------------------------------------------
# Public entry points


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise PlanError(f"unknown resampling method {method!r}; use one of {', '.join(METHODS)}")


def resample(
    source: np.ndarray,
    source_valid: np.ndarray | None,
    cols: np.ndarray,
    rows: np.ndarray,
    *,
    method: str = "nearest",
    nodata: float | None = None,
    fill_value: float | None = None,
    scale: tuple[float, float] | None = None,
    footprints: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``source`` at target pixels given by their source coordinates, as GDAL's warper does.

    Parameters
    ----------
    source : ndarray, shape (rows, cols) or (bands, rows, cols)
        A source raster or window of it; integer or floating dtype.
    source_valid : ndarray of bool or None
        True where a source pixel holds data, shape (rows, cols) (shared by all bands, like GDAL's
        unified mask) or the shape of ``source`` (one mask per band). None: every pixel is valid unless
        it is ``nodata``. Internal TIFF masks belong here.
    cols, rows : ndarray of float
        Fractional source coordinates of each target pixel centre, relative to ``source`` (see
        :func:`source_coordinates`); NaN marks a point that failed to transform. Their shape is the
        output's spatial shape.
    method : {"nearest", "bilinear", "cubic", "average", "mode", "min", "max"}
    nodata : number or None
        The source nodata value (NaN allowed): pixels equal to it are invalid (GDAL's comparison, see
        :func:`nodata_valid`). For several bands a pixel is invalid only when every band is nodata, as
        rasterio's warp (``UNIFIED_SRC_NODATA=YES``).
    fill_value : number or None
        The destination nodata: the value of invalid output pixels. Defaults to ``nodata``, else 0 (as
        rasterio's ``dst_nodata`` and ``init_dest_nodata``). Where a destination nodata is known, GDAL
        3.10 stores an *integer* result that equals it as one less (the type's minimum plus one at the
        minimum), except in its nearest kernels for uint8, int16 and uint16; float results are stored
        unchanged. This does the same, so ``valid`` can be True where the value equals the nodata.
    scale : (float, float) or None
        GDAL's kernel scale, target pixels per source pixel on x and y (:func:`kernel_scale` gives
        GDAL's value for a chunk). Below 0.95 on either axis bilinear and cubic become GDAL's widened
        filters. None: one over the median source distance between neighbouring centres.
    footprints : (x1, y1, x2, y2) of ndarray, or None
        For average, mode, min and max: source coordinates of each target pixel's top-left and
        bottom-right corners, each of ``cols.shape`` (:func:`source_footprints`). A target pixel's
        footprint is the box they span, as in GDAL. None: corners extrapolated linearly from the centres
        (exact when the grids are related by an affine map).

    Returns
    -------
    values : ndarray
        ``source.dtype``, shape ``cols.shape`` (or ``(bands,) + cols.shape``). Interpolated integers are
        rounded half up and clamped to the type's range.
    valid : ndarray of bool
        Same shape: False where no valid source pixel contributed (filled with ``fill_value``).

    Notes
    -----
    Average weights each valid source pixel by the fraction of it inside the footprint (GDAL >= 3.1)
    and keeps GDAL's incremental mean, so integer rounding ties agree (footprints of more than 64 cells
    sum the same terms in another order: last-bit differences); min and max take every valid pixel
    the footprint touches, unweighted; mode counts them unweighted, ties going to the value that reached
    the top count first. int8 data is computed in int16 and clamped back, as GDAL's working type.
    Deliberate differences from GDAL 3.10, both GDAL defects fixed in later versions: GDAL's mode
    compares float32 casts for types other than 8/16-bit integers and returns the float32 value (this
    keeps exact values: int32 beyond 2**24 and float64 differ), and it leaves a target pixel empty when
    an int8/int16 mode is -1 (this returns -1).
    """
    _check_method(method)
    src = np.asarray(source)
    if src.dtype.kind not in "iuf":
        raise PlanError(f"cannot resample arrays of dtype {src.dtype}")
    if src.ndim not in (2, 3) or 0 in src.shape:
        raise PlanError(f"source must be a non-empty 2-D or 3-D array, got shape {src.shape}")
    squeeze = src.ndim == 2
    src3 = src[np.newaxis] if squeeze else src
    bands, h, w = src3.shape
    if source_valid is None:
        valid3 = np.ones((1, h, w), dtype=bool)
    else:
        sv = np.asarray(source_valid, dtype=bool)
        if sv.shape == (h, w):
            valid3 = sv[np.newaxis]
        elif sv.shape == src3.shape:
            valid3 = sv
        else:
            raise PlanError(f"source_valid has shape {sv.shape}; expected {(h, w)} or {src3.shape}")
    if nodata is not None:
        not_nodata = nodata_valid(src3, nodata).any(axis=0, keepdims=True)
        valid3 = valid3 & not_nodata
    cols = np.asarray(cols, dtype=np.float64)
    rows = np.asarray(rows, dtype=np.float64)
    if cols.shape != rows.shape:
        raise PlanError(f"cols and rows differ in shape: {cols.shape} and {rows.shape}")
    out_shape = cols.shape
    if scale is None:
        scale = _estimate_scale(cols, rows)
    scale = (float(scale[0]), float(scale[1]))
    if not (scale[0] > 0 and scale[1] > 0):
        raise PlanError(f"scale must be positive, got {scale!r}")
    dst_nodata = fill_value if fill_value is not None else nodata
    fill = dst_nodata if dst_nodata is not None else 0

    x, y = _sanitize(cols.ravel()), _sanitize(rows.ravel())
    px = _Pixels(src3, valid3)
    parts = None
    if method in _AREA_METHODS:
        if footprints is None:
            cc, cr = _extrapolate_corners(cols), _extrapolate_corners(rows)
            footprints = (cc[:-1, :-1], cr[:-1, :-1], cc[1:, 1:], cr[1:, 1:])
        parts = [np.asarray(a, dtype=np.float64) for a in footprints]
        if len(parts) != 4 or any(a.shape != out_shape for a in parts):
            raise PlanError(f"footprints must be 4 arrays (x1, y1, x2, y2) of shape {out_shape}")
        parts = [np.where(np.isfinite(a), np.clip(a, -_FAR, _FAR), np.nan).ravel() for a in parts]
    no_masks = (
        method == "bilinear"
        and dst_nodata is None
        and src3.dtype in _GDAL_NO_MASK_BILINEAR_TYPES
        and px.all_valid
    )
    # GDAL warps int8 data in int16 (its working type starts as Byte, and Byte with Int8 needs Int16):
    # rounding, clamping and the nodata nudge happen there, then values are clamped into int8.
    work = _working_dtype(src3.dtype)
    fill_scalar = _fill_scalar(fill, src3.dtype).astype(work)
    out = np.empty((bands, x.size), dtype=work)
    valid_out = np.empty((bands, x.size), dtype=bool)
    # Work through the target pixels in blocks whose temporaries stay in cache: about twice as fast.
    for start in range(0, x.size, _BLOCK):
        sl = slice(start, start + _BLOCK)
        if method == "nearest":
            values, valid = _centre_pixels(px, x[sl], y[sl])
        elif parts is not None:
            values, valid = _area(px, [p[sl] for p in parts], method, scale)
        else:
            centre_ok = _centre_pixels(px, x[sl], y[sl])[1]
            if scale[0] >= _FOUR_SAMPLE_SCALE and scale[1] >= _FOUR_SAMPLE_SCALE:
                kernel = _bilinear4 if method == "bilinear" else _cubic4
                values, valid = kernel(px, x[sl], y[sl])
            else:
                values, valid = _filtered(px, x[sl], y[sl], method, scale, no_masks)
            valid = valid & centre_ok
        values = _to_dtype(values, work) if values.dtype.kind == "f" else values.astype(work, copy=False)
        valid = np.broadcast_to(valid, values.shape)
        out[:, sl] = np.where(valid, values, fill_scalar)
        valid_out[:, sl] = valid
    _avoid_value(out, valid_out, dst_nodata, method)
    if work != src3.dtype:
        info = np.iinfo(src3.dtype)
        out = np.clip(out, info.min, info.max).astype(src3.dtype)
    out = out.reshape((bands, *out_shape))
    valid_out = valid_out.reshape((bands, *out_shape))
    if squeeze:
        return out[0], valid_out[0]
    return out, valid_out


def _sanitize(coords: np.ndarray) -> np.ndarray:
    # Points that failed to transform, or lie absurdly far away, become a point well off the source, so
    # that integer casts stay defined; such target pixels are invalid whatever the kernel.
    return np.where(np.isfinite(coords), np.clip(coords, -_FAR, _FAR), -_FAR)


def _fill_scalar(fill, dtype: np.dtype):
    value = float(fill)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if not (value.is_integer() and info.min <= value <= info.max):
            raise PlanError(f"fill value / nodata {fill!r} is not an integer in the range of {dtype}")
        return np.array(int(value)).astype(dtype)
    return np.array(value).astype(dtype)


def _extrapolate_corners(centres: np.ndarray) -> np.ndarray:
    """Corner coordinates from centre coordinates, assuming the map is affine across each pixel."""
    c = np.asarray(centres, dtype=np.float64)
    if c.ndim != 2:
        raise PlanError("area methods need 2-D coordinate arrays (or explicit corners)")
    h, w = c.shape
    if h < 2 or w < 2:
        raise PlanError("area methods on a grid narrower than 2 pixels need explicit corners")
    # Pad by linear extrapolation, then average the four centres around each corner.
    p = np.empty((h + 2, w + 2))
    p[1:-1, 1:-1] = c
    p[0, 1:-1] = 2 * c[0] - c[1]
    p[-1, 1:-1] = 2 * c[-1] - c[-2]
    p[:, 0] = 2 * p[:, 1] - p[:, 2]
    p[:, -1] = 2 * p[:, -2] - p[:, -3]
    return 0.25 * (p[:-1, :-1] + p[1:, :-1] + p[:-1, 1:] + p[1:, 1:])


def warp(
    source: np.ndarray,
    source_crs: str,
    source_transform,
    target: Grid,
    *,
    method: str = "nearest",
    nodata: float | None = None,
    source_valid: np.ndarray | None = None,
    fill_value: float | None = None,
    max_error: float = DEFAULT_MAX_ERROR,
) -> tuple[np.ndarray, np.ndarray]:
    """Warp a whole in-memory raster onto ``target``: ``rasterio.warp.reproject``, step for step, in numpy.

    ``source`` is the complete raster (``(rows, cols)`` or ``(bands, rows, cols)``) that ``source_crs``
    and ``source_transform`` place; other parameters are as :func:`resample` and
    :func:`source_coordinates`. As GDAL's warper does for rasterio, this

    * switches to nearest when the grids differ by whole pixels (the translation shortcut);
    * splits the target into GDAL's warp chunks (64 MiB of working memory, source fill ratio >= 0.5);
    * for each chunk, reads GDAL's source window, computes GDAL's kernel scale, transforms the chunk's
      pixel centres (or footprint corners) row by row, and resamples.

    Returns ``(values, valid)`` as :func:`resample` does, on ``target``'s shape.
    """
    _check_method(method)
    src = np.asarray(source)
    if src.ndim not in (2, 3) or 0 in src.shape:
        raise PlanError(f"source must be a non-empty 2-D or 3-D array, got shape {src.shape}")
    if src.dtype.kind not in "iuf":
        raise PlanError(f"cannot resample arrays of dtype {src.dtype}")
    err = _check_max_error(max_error)
    src3 = src[np.newaxis] if src.ndim == 2 else src
    bands, src_h, src_w = src3.shape
    valid3 = None
    if source_valid is not None:
        valid3 = np.asarray(source_valid, dtype=bool)
        if valid3.ndim == 2:
            valid3 = valid3[np.newaxis]
        if valid3.shape[1:] != (src_h, src_w) or valid3.shape[0] not in (1, bands):
            raise PlanError(f"source_valid has shape {np.shape(source_valid)}; it must match the source")
    if is_pixel_translation(target, source_crs, source_transform):
        method, radius = "nearest", 0
    else:
        radius = _FILTER_RADIUS[method]
    base = _base_transform(target, source_crs, source_transform)
    dst_nodata = fill_value if fill_value is not None else nodata
    fill = _fill_scalar(dst_nodata if dst_nodata is not None else 0, src3.dtype)
    bits = src3.dtype.itemsize * 8 * bands
    chunks = _gdal_chunks(
        base,
        target,
        src_w,
        src_h,
        radius,
        bits + (bands if nodata is not None else 0),
        bits + (bands if dst_nodata is not None else 0),
    )
    out = np.full((bands, target.height, target.width), fill, dtype=src3.dtype)
    out_valid = np.zeros(out.shape, dtype=bool)
    for (dx, dy, dw, dh), window in chunks:
        if window.empty:
            continue
        ys = slice(window.y_off, window.y_off + window.y_size)
        xs = slice(window.x_off, window.x_off + window.x_size)
        footprints = None
        if method in _AREA_METHODS:
            px, py = np.arange(dw, dtype=np.float64) + dx, np.arange(dh, dtype=np.float64) + dy
            x1, y1 = _approx_rows(px, py, base, err)
            x2, y2 = _approx_rows((np.arange(dw) + 1.0) + dx, (np.arange(dh) + 1.0) + dy, base, err)
            footprints = (x1 - window.x_off, y1 - window.y_off, x2 - window.x_off, y2 - window.y_off)
        cols, rows = _approx_rows((np.arange(dw) + 0.5) + dx, (np.arange(dh) + 0.5) + dy, base, err)
        values, valid = resample(
            src3[:, ys, xs],
            None if valid3 is None else valid3[:, ys, xs],
            cols - window.x_off,
            rows - window.y_off,
            method=method,
            nodata=nodata,
            fill_value=fill_value,
            scale=_window_scale(dw, dh, window),
            footprints=footprints,
        )
        out[:, dy : dy + dh, dx : dx + dw] = values
        out_valid[:, dy : dy + dh, dx : dx + dw] = valid
    if src.ndim == 2:
        return out[0], out_valid[0]
    return out, out_valid


# --------------------------------------------------------------------------------------------------------
# Overviews


def overview_target_resolution(target: Grid, source_crs: str, source_transform) -> float:
    """The target's resolution measured in the source CRS, as gdalwarp measures it to pick an overview.

    gdalwarp (``GDALWarpDirect`` with explicit target bounds and size) sends a 10 x 10 lattice of target
    pixel corners, evenly spaced from edge to edge, into source pixel space, and takes the smaller of the
    x and y ratios (source pixels spanned / target pixels). This returns that ratio times the source
    pixel width, for :func:`choose_overview`. NaN when fewer than two points transform.
    """
    steps = np.arange(10, dtype=np.float64) / 9
    px = (target.width * steps)[:, np.newaxis] + np.zeros(10)[np.newaxis, :]
    py = np.zeros(10)[:, np.newaxis] + (target.height * steps)[np.newaxis, :]
    cols, rows = _pixels_to_source(px.ravel(), py.ravel(), target, source_crs, source_transform)
    ok = np.isfinite(cols) & np.isfinite(rows)
    if ok.sum() < 2:
        return math.nan
    c, r = cols[ok], rows[ok]
    ratio_x = (c.max() - c.min()) / target.width if c.max() > c.min() else 0.0
    ratio_y = (r.max() - r.min()) / target.height if r.max() > r.min() else 0.0
    a, _, _, d = (float(v) for v in tuple(source_transform)[:4])
    return float(min(ratio_x, ratio_y) * math.hypot(a, d))


def choose_overview(
    source_resolutions: Sequence[float], target_resolution: float, *, oversampling_threshold: float = 1.0
) -> int:
    """Which level of an overview pyramid GDAL's warper reads for a target of ``target_resolution``.

    ``source_resolutions`` lists the pixel size of the full-resolution image first, then of each overview
    (any order; GDAL's are coarser and coarser), in source CRS units; the result indexes that list, 0
    being the full-resolution image. ``target_resolution`` is the target pixel size in the same units
    (see :func:`overview_target_resolution`).

    The rule is gdalwarp's ``-ovr AUTO`` (the default), as of GDAL 3.10 (``GDALWarpDirect`` in
    ``apps/gdalwarp_lib.cpp``, made consistent with ``GDALBandGetBestOverviewLevel2`` by GDAL commit
    160b1dca, GDAL issue #10873): with ratios taken to the full resolution, and ``target`` the target's,

    * if ``target <= 1``, the full-resolution image;
    * else walk the levels, full resolution first; skip a level whose ratio is at least
      ``target * oversampling_threshold + 0.1`` (too coarse) or not above the best so far; otherwise take
      it, and stop at once if it is within 0.1 of ``target``.

    So the coarsest level still at least as fine as the target wins, where "at least as fine" tolerates
    0.1 of a full-resolution pixel. ``oversampling_threshold`` is GDAL's
    ``GDALWARP_OVERSAMPLING_THRESHOLD`` configuration option (default 1). GDAL takes ratios from image
    widths (full width / overview width); for overviews whose transforms scale by the width ratio, as GDAL
    and COG writers make them, that equals the resolution ratio used here.
    """
    res = [float(r) for r in source_resolutions]
    if not res or not all(math.isfinite(r) and r > 0 for r in res):
        raise PlanError(f"source resolutions must be positive numbers, got {list(source_resolutions)!r}")
    target = float(target_resolution) / res[0]
    if not target > 1.0:
        return 0
    epsilon = 0.1
    best, best_ratio = 0, 0.0
    for index, r in enumerate(res):
        ratio = r / res[0]
        if ratio >= target * oversampling_threshold + epsilon or ratio <= best_ratio:
            continue
        best, best_ratio = index, ratio
        if abs(target - ratio) < epsilon:
            break
    return best


# --------------------------------------------------------------------------------------------------------
# Blocks of a larger warp
#
# A lazy stack warps each output block (a Dask chunk) on its own, yet must equal ``rasterio.warp.reproject``
# of the whole source onto the whole output. Block-by-block results differ from GDAL's unless each block
# repeats what GDAL did for the pixels it holds: GDAL splits the output into its own warp chunks, reads each
# chunk's source window (pixels outside it count as outside the raster), derives the chunk's kernel
# scale, and transforms coordinates along each of the chunk's scanlines, whose length decides where the
# approximate transformer interpolates. :class:`WarpLayout` works out GDAL's chunks lazily (only those a
# block meets, each once); :func:`plan_block_warp` cuts them to one block and says which source pixels the
# block needs; :func:`warp_block` warps those pixels into the block.

# GDAL chunks wider than this (outputs of tens of thousands of pixels that GDAL would not split, e.g. a
# long thin strip) are not transformed along their whole scanlines, which would cost rows x width
# coordinates per block: each block then interpolates along its own part of the scanline, so values may
# differ from a whole-output warp by the approximate transformer's error (at most ``max_error`` source
# pixels of position). GDAL's chunks are otherwise bounded by its 64 MiB working memory (a few thousand
# pixels a side).
MAX_SCANLINE = 16384
# Source pixels read beyond the kernel's reach around a piece's outline: the outline's own sampling, the
# approximate transformer's error and the 2 x 2 / 4 x 4 kernels' extra row and column.
_NEED_MARGIN = 3
# Source pixels by which a piece's pixel centres may miss GDAL's window and still need reading: above the
# approximate transformer's error (0.125 px by default) and the outline's sampling error.
_REACH_TOLERANCE = 0.5


class WarpLayout:
    """GDAL's warp chunks of ``target`` for one whole source raster, as ``rasterio.warp.reproject`` makes
    them (``_gdal_chunks``), worked out lazily: :meth:`chunks_meeting` splits only the chunks that meet a
    block, and remembers each split, so planning every block of a large output costs what GDAL's own
    chunking costs near the source, once.

    Parameters are those of :func:`warp`, with the source's size instead of its pixels (``dtype`` and
    ``bands`` describe the source array, which GDAL's memory budget depends on). ``method`` becomes
    nearest for the translation shortcut, as in :func:`warp`. Planning only: no pixel is needed; this
    object stays on the client (the per-block :class:`BlockWarp` plans travel to the workers).
    """

    def __init__(
        self,
        target: Grid,
        source_crs: str,
        source_transform,
        source_width: int,
        source_height: int,
        *,
        method: str = "nearest",
        dtype="uint8",
        bands: int = 1,
        nodata: float | None = None,
        fill_value: float | None = None,
        max_error: float = DEFAULT_MAX_ERROR,
    ):
        _check_method(method)
        self.max_error = _check_max_error(max_error)
        self.target, self.source_crs = target, source_crs
        self.source_transform = tuple(float(v) for v in tuple(source_transform)[:6])
        self.source_width, self.source_height = int(source_width), int(source_height)
        if is_pixel_translation(target, source_crs, self.source_transform):
            self.method, self.radius = "nearest", 0
        else:
            self.method, self.radius = method, _FILTER_RADIUS[method]
        self.base = _base_transform(target, source_crs, self.source_transform)
        dst_nodata = fill_value if fill_value is not None else nodata
        bits = np.dtype(dtype).itemsize * 8 * bands
        self._src_bits = bits + (bands if nodata is not None else 0)
        self._dst_bits = bits + (bands if dst_nodata is not None else 0)
        self._splits: dict[tuple[int, int, int, int], tuple[_SourceWindow, tuple | None]] = {}

    def _split(self, rect: tuple[int, int, int, int]) -> tuple[_SourceWindow, tuple | None]:
        """GDAL's decision for one target window: its source window, and its two halves if it splits.

        The rule is ``_gdal_chunks``'s (``CollectChunkListInternal``); a test checks that the leaves of
        the whole target equal ``_gdal_chunks``'s chunks.
        """
        found = self._splits.get(rect)
        if found is not None:
            return found
        dx, dy, dw, dh = rect
        window = _source_window(self.base, rect, self.source_width, self.source_height, self.radius)
        memory = (self._src_bits * window.x_size * window.y_size + self._dst_bits * dw * dh) / 8.0
        halves = None
        if (memory > _WARP_MEMORY_LIMIT and (dw > 2 or dh > 2)) or (
            0 < window.fill_ratio < 0.5 and (dw > 100 or dh > 100)
        ):
            if dw > dh:
                half = dw // 2
                halves = ((dx, dy, half, dh), (dx + half, dy, dw - half, dh))
            else:
                half = dh // 2
                halves = ((dx, dy, dw, half), (dx, dy + half, dw, dh - half))
        self._splits[rect] = (window, halves)
        return window, halves

    def chunks_meeting(self, block: tuple[int, int, int, int]) -> list[tuple[tuple, _SourceWindow]]:
        """GDAL's chunks ``((col_off, row_off, width, height), source window)`` that meet ``block =
        (row0, row1, col0, col1)``, top to bottom then left to right."""
        r0, r1, c0, c1 = block
        out, pending = [], [(0, 0, self.target.width, self.target.height)]
        while pending:
            rect = pending.pop()
            dx, dy, dw, dh = rect
            if dx >= c1 or dx + dw <= c0 or dy >= r1 or dy + dh <= r0:
                continue
            window, halves = self._split(rect)
            if halves is None:
                out.append((rect, window))
            else:
                pending.extend(halves)
        return sorted(out, key=lambda c: (c[0][1], c[0][0]))


def warp_layout(
    target: Grid,
    source_crs: str,
    source_transform,
    source_width: int,
    source_height: int,
    **kwargs,
) -> WarpLayout:
    """:class:`WarpLayout` of a whole ``source_width`` x ``source_height`` raster warped onto ``target``."""
    return WarpLayout(target, source_crs, source_transform, source_width, source_height, **kwargs)


@dataclass(frozen=True)
class WarpPiece:
    """The part of one GDAL chunk inside a block.

    ``chunk`` is the GDAL chunk ``(col_off, row_off, width, height)`` (target pixels; its width is the
    scanline length), ``rows`` and ``cols`` the block's target pixels in it (half-open, whole-target
    numbering), ``need`` the source pixels ``(row0, row1, col0, col1)`` its kernels can touch (within
    GDAL's window of the chunk), ``scale`` the chunk's kernel scale.
    """

    chunk: tuple[int, int, int, int]
    rows: tuple[int, int]
    cols: tuple[int, int]
    need: tuple[int, int, int, int]
    scale: tuple[float, float]


@dataclass(frozen=True)
class BlockWarp:
    """How to warp one block ``(row0, row1, col0, col1)`` of a layout's target: a small picklable plan."""

    target: Grid
    block: tuple[int, int, int, int]
    source_crs: str
    source_transform: tuple[float, ...]
    method: str
    max_error: float
    pieces: tuple[WarpPiece, ...]

    @property
    def source_window(self) -> tuple[int, int, int, int]:
        """``(row0, row1, col0, col1)``: the source pixels :func:`warp_block` needs, all pieces together."""
        needs = np.array([p.need for p in self.pieces])
        return (
            int(needs[:, 0].min()),
            int(needs[:, 1].max()),
            int(needs[:, 2].min()),
            int(needs[:, 3].max()),
        )


def plan_block_warp(layout: WarpLayout, block: tuple[int, int, int, int]) -> BlockWarp | None:
    """Cut ``layout`` to the target pixels ``block = (row0, row1, col0, col1)``; None if none gets a value.

    Each piece's ``need`` is the box around its outline's source positions, widened by the kernel's
    radius at the chunk's scale and a margin, and clipped to GDAL's window of the chunk: what GDAL would
    read for those pixels. Pieces whose pixel centres all miss the window (chunks that merely border the
    source) are dropped.
    """
    r0, r1, c0, c1 = (int(v) for v in block)
    pieces = []
    for (dx, dy, dw, dh), w in layout.chunks_meeting((r0, r1, c0, c1)):
        if w.empty:
            continue
        pr0, pr1, pc0, pc1 = max(r0, dy), min(r1, dy + dh), max(c0, dx), min(c1, dx + dw)
        scale = _window_scale(dw, dh, w)
        window = (w.x_off, w.y_off, w.x_size, w.y_size)
        need = _piece_need(layout.base, (pc0, pr0, pc1 - pc0, pr1 - pr0), window, layout.method, scale)
        if need is not None:
            pieces.append(WarpPiece((dx, dy, dw, dh), (pr0, pr1), (pc0, pc1), need, scale))
    if not pieces:
        return None
    return BlockWarp(
        layout.target,
        (r0, r1, c0, c1),
        layout.source_crs,
        layout.source_transform,
        layout.method,
        layout.max_error,
        tuple(pieces),
    )


def _piece_need(base, rect, window, method: str, scale) -> tuple[int, int, int, int] | None:
    wx, wy, ww, wh = window
    dx, dy, dw, dh = rect
    sx, sy = base(*_edge_samples(dx, dy, dw, dh, False))
    ok = np.isfinite(sx) & np.isfinite(sy)
    if not ok.all():  # part of the outline does not transform: the whole window may be needed
        return (wy, wy + wh, wx, wx + ww)
    if method not in _AREA_METHODS:
        # No pixel gets a value unless its centre falls in the window (GDAL's kernels need it).
        cx, cy = base(*_edge_samples(dx + 0.5, dy + 0.5, dw - 1, dh - 1, False))
        if np.isfinite(cx).all() and np.isfinite(cy).all():
            tol = _REACH_TOLERANCE
            if (
                cx.max() < wx - tol
                or cx.min() > wx + ww + tol
                or cy.max() < wy - tol
                or cy.min() > wy + wh + tol
            ):
                return None
    pad_x = _radius(method, scale[0]) + _NEED_MARGIN
    pad_y = _radius(method, scale[1]) + _NEED_MARGIN
    col0 = max(math.floor(float(np.clip(sx.min(), -_FAR, _FAR))) - pad_x, wx)
    col1 = min(math.ceil(float(np.clip(sx.max(), -_FAR, _FAR))) + pad_x, wx + ww)
    row0 = max(math.floor(float(np.clip(sy.min(), -_FAR, _FAR))) - pad_y, wy)
    row1 = min(math.ceil(float(np.clip(sy.max(), -_FAR, _FAR))) + pad_y, wy + wh)
    if col0 >= col1 or row0 >= row1:
        return None
    return (row0, row1, col0, col1)


def warp_block(
    plan: BlockWarp,
    source: np.ndarray,
    source_offset: tuple[int, int],
    *,
    nodata: float | None = None,
    source_valid: np.ndarray | None = None,
    fill_value: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Warp the pixels of ``plan``'s block: ``warp(whole source, ..., target)`` cut to the block.

    ``source`` (``(rows, cols)`` or ``(bands, rows, cols)``) is a window of the raster whose top-left pixel
    is ``source_offset = (row, col)``; it must hold ``plan.source_window``. ``source_valid``, ``nodata``
    and ``fill_value`` are as for :func:`warp`. Equal to the whole-output warp, except on GDAL chunks wider
    than :data:`MAX_SCANLINE`, and except that GDAL's no-mask bilinear shortcut is decided over the piece's
    pixels rather than the whole chunk's (it changes only NaN or infinite results).
    """
    src = np.asarray(source)
    if src.ndim not in (2, 3):
        raise PlanError(f"source must be a 2-D or 3-D array, got shape {src.shape}")
    src3 = src[np.newaxis] if src.ndim == 2 else src
    valid3 = None
    if source_valid is not None:
        valid3 = np.asarray(source_valid, dtype=bool)
        valid3 = valid3[np.newaxis] if valid3.ndim == 2 else valid3
    row_off, col_off = (int(v) for v in source_offset)
    need_r0, need_r1, need_c0, need_c1 = plan.source_window
    if (
        need_r0 < row_off
        or need_c0 < col_off
        or need_r1 > row_off + src3.shape[1]
        or need_c1 > col_off + src3.shape[2]
    ):
        raise PlanError(
            f"the source window rows {row_off}..{row_off + src3.shape[1]}, cols {col_off}.."
            f"{col_off + src3.shape[2]} does not hold the pixels the block needs {plan.source_window}"
        )
    r0, r1, c0, c1 = plan.block
    dst_nodata = fill_value if fill_value is not None else nodata
    fill = _fill_scalar(dst_nodata if dst_nodata is not None else 0, src3.dtype)
    out = np.full((src3.shape[0], r1 - r0, c1 - c0), fill, dtype=src3.dtype)
    out_valid = np.zeros(out.shape, dtype=bool)
    base = _base_transform(plan.target, plan.source_crs, plan.source_transform)
    for piece in plan.pieces:
        dx, _, dw, _ = piece.chunk
        pr0, pr1 = piece.rows
        pc0, pc1 = piece.cols
        nr0, nr1, nc0, nc1 = piece.need
        ys = slice(nr0 - row_off, nr1 - row_off)
        xs = slice(nc0 - col_off, nc1 - col_off)
        # Whole scanlines of the GDAL chunk, so the approximate transformer interpolates as GDAL's did
        # (up to MAX_SCANLINE pixels; longer ones are cut to the block's columns).
        if dw > MAX_SCANLINE:
            dx, dw = pc0, pc1 - pc0
        take = slice(pc0 - dx, pc1 - dx)
        line = np.arange(dw, dtype=np.float64) + dx
        lines = np.arange(pr0, pr1, dtype=np.float64)
        footprints = None
        if plan.method in _AREA_METHODS:
            x1, y1 = _approx_rows(line, lines, base, plan.max_error)
            x2, y2 = _approx_rows(line + 1.0, lines + 1.0, base, plan.max_error)
            footprints = (x1[:, take] - nc0, y1[:, take] - nr0, x2[:, take] - nc0, y2[:, take] - nr0)
        cols, rows = _approx_rows(line + 0.5, lines + 0.5, base, plan.max_error)
        values, valid = resample(
            src3[:, ys, xs],
            None if valid3 is None else valid3[:, ys, xs],
            cols[:, take] - nc0,
            rows[:, take] - nr0,
            method=plan.method,
            nodata=nodata,
            fill_value=fill_value,
            scale=piece.scale,
            footprints=footprints,
        )
        out[:, pr0 - r0 : pr1 - r0, pc0 - c0 : pc1 - c0] = values
        out_valid[:, pr0 - r0 : pr1 - r0, pc0 - c0 : pc1 - c0] = valid
    if src.ndim == 2:
        return out[0], out_valid[0]
    return out, out_valid
