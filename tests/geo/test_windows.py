"""Pixel windows and the tiles they touch, checked against brute force over every pixel."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rasteret_dask.errors import PlanError
from rasteret_dask.geo.windows import PixelWindow, tile_overlap, tiles_touched


@settings(max_examples=200, deadline=None)
@given(
    width=st.integers(1, 90),
    height=st.integers(1, 90),
    tile_w=st.integers(1, 40),
    tile_h=st.integers(1, 40),
    data=st.data(),
)
def test_tiles_and_overlaps_cover_the_window_exactly(width, height, tile_w, tile_h, data):
    r0 = data.draw(st.integers(0, height - 1))
    r1 = data.draw(st.integers(r0 + 1, height))
    c0 = data.draw(st.integers(0, width - 1))
    c1 = data.draw(st.integers(c0 + 1, width))
    window = PixelWindow.from_slices(((r0, r1), (c0, c1)), width, height)
    image = np.arange(width * height).reshape(height, width)
    out = np.full((window.height, window.width), -1)
    rows, cols = tiles_touched(window, tile_h, tile_w)
    expected_rows = {r // tile_h for r in range(r0, r1)}
    expected_cols = {c // tile_w for c in range(c0, c1)}
    assert set(rows) == expected_rows and set(cols) == expected_cols
    for tr in rows:
        for tc in cols:
            tile = image[tr * tile_h : (tr + 1) * tile_h, tc * tile_w : (tc + 1) * tile_w]
            in_r, in_c, out_r, out_c = tile_overlap(window, tr, tc, tile_h, tile_w)
            out[out_r, out_c] = tile[in_r, in_c]
    assert (out == image[r0:r1, c0:c1]).all()


@pytest.mark.parametrize("window", [((0, 0), (0, 5)), ((0, 11), (0, 5)), ((-1, 3), (0, 5)), "bad", ((1, 2),)])
def test_bad_windows_raise_plan_errors(window):
    with pytest.raises(PlanError):
        PixelWindow.from_slices(window, 10, 10)
