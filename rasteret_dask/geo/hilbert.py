"""Hilbert-curve order of points: nearby points get nearby keys, so sorted data is spatially clustered."""

from __future__ import annotations

import numpy as np

from ..errors import PlanError


def hilbert_keys(
    x: np.ndarray, y: np.ndarray, bounds: tuple[float, float, float, float], level: int = 16
) -> np.ndarray:
    """Hilbert distance (uint64) of each (x, y) on a 2**level x 2**level grid over ``bounds``.

    Points outside ``bounds`` are clamped to its edge; NaN coordinates get the largest key.
    """
    if not 1 <= level <= 31:
        raise PlanError(f"Hilbert level must be 1..31, got {level}")
    x0, y0, x1, y1 = bounds
    cells = 1 << level
    width, height = max(x1 - x0, 1e-300), max(y1 - y0, 1e-300)
    fx = np.clip((np.asarray(x, dtype=np.float64) - x0) / width, 0.0, 1.0)
    fy = np.clip((np.asarray(y, dtype=np.float64) - y0) / height, 0.0, 1.0)
    missing = ~(np.isfinite(fx) & np.isfinite(fy))
    ix = np.minimum(np.where(missing, 0, fx * cells), cells - 1).astype(np.uint64)
    iy = np.minimum(np.where(missing, 0, fy * cells), cells - 1).astype(np.uint64)
    last = np.uint64(cells - 1)
    keys = np.zeros(ix.shape, dtype=np.uint64)
    s = np.uint64(1 << (level - 1))
    one, zero = np.uint64(1), np.uint64(0)
    while s > 0:
        rx = ((ix & s) > 0).astype(np.uint64)
        ry = ((iy & s) > 0).astype(np.uint64)
        keys += s * s * ((np.uint64(3) * rx) ^ ry)
        # Rotate the quadrant so the curve stays continuous at the next level.
        flip = (ry == zero) & (rx == one)
        ix = np.where(flip, last - ix, ix)
        iy = np.where(flip, last - iy, iy)
        swap = ry == zero
        ix, iy = np.where(swap, iy, ix), np.where(swap, ix, iy)
        s >>= one
    keys[missing] = np.iinfo(np.uint64).max
    return keys
