"""Pixel indices of points, and nearest-valid-pixel search: pure numpy, rasterio's rules."""

from __future__ import annotations

import numpy as np
from affine import Affine


def pixel_indices(transform, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the pixels containing points ``(xs, ys)`` given in the raster's CRS.

    Exactly ``rasterio``'s ``DatasetReader.index`` (``rowcol`` with floor): the inverse affine applied as
    one 3 x 3 matrix product, then floor, so a point on a pixel edge belongs to the pixel east/south of
    it. Returns float arrays of fractional positions' floors as int64; NaN inputs give -1 rows/cols.
    """
    rows, cols = fractional_indices(transform, xs, ys)
    bad = ~(np.isfinite(rows) & np.isfinite(cols))
    r = np.where(bad, -1, np.floor(np.where(bad, 0, rows))).astype(np.int64)
    c = np.where(bad, -1, np.floor(np.where(bad, 0, cols))).astype(np.int64)
    return r, c


def fractional_indices(transform, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fractional (row, col) pixel positions of points, computed as rasterio computes them."""
    inverse = np.empty((3, 3), dtype="float64")
    inverse.flat[:] = ~Affine(*transform[:6])
    xs, ys = np.broadcast_arrays(np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64))
    matrix = np.empty((3, xs.size))
    matrix[0] = xs.ravel()
    matrix[1] = ys.ravel()
    matrix[2] = 1
    inverse.dot(matrix, out=matrix)
    return matrix[1].reshape(xs.shape), matrix[0].reshape(xs.shape)


def ring_offsets(k: int) -> np.ndarray:
    """Every (dr, dc) with Chebyshev distance 1..k, in row-major order: (n, 2) int64."""
    span = np.arange(-k, k + 1)
    dr, dc = np.meshgrid(span, span, indexing="ij")
    keep = np.maximum(np.abs(dr), np.abs(dc)) > 0
    return np.column_stack([dr[keep], dc[keep]])


def nearest_valid(
    frac_rows: np.ndarray,
    frac_cols: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    candidates_valid: np.ndarray,
    offsets: np.ndarray,
) -> np.ndarray:
    """For each point, the index into ``offsets`` of the nearest valid neighbour, or -1.

    ``candidates_valid[i, j]`` says whether neighbour ``offsets[j]`` of point ``i`` is a valid pixel.
    Nearest is by Euclidean distance from the point to the neighbour pixel's rectangle; ties go to the
    first in ``offsets`` (row-major) order.
    """
    r0 = rows[:, None] + offsets[None, :, 0]
    c0 = cols[:, None] + offsets[None, :, 1]
    dy = np.maximum(np.maximum(r0 - frac_rows[:, None], 0.0), frac_rows[:, None] - (r0 + 1))
    dx = np.maximum(np.maximum(c0 - frac_cols[:, None], 0.0), frac_cols[:, None] - (c0 + 1))
    distance = np.where(candidates_valid, np.hypot(dx, dy), np.inf)
    best = np.argmin(distance, axis=1)  # first minimum: row-major tie break
    return np.where(np.isfinite(distance[np.arange(len(best)), best]), best, -1)
