"""Hilbert keys: a bijection onto 0..4**level-1 whose consecutive keys are neighbouring cells."""

from __future__ import annotations

import numpy as np
import pytest

from rasteret_dask.errors import PlanError
from rasteret_dask.geo.hilbert import hilbert_keys


@pytest.mark.parametrize("level", [1, 2, 5, 8])
def test_keys_walk_the_grid_one_step_at_a_time(level):
    side = 2**level
    xs, ys = (a.ravel() for a in np.meshgrid(np.arange(side), np.arange(side)))
    keys = hilbert_keys(xs + 0.5, ys + 0.5, (0, 0, side, side), level=level)
    assert sorted(keys.tolist()) == list(range(side * side))
    order = np.argsort(keys)
    steps = np.abs(np.diff(xs[order])) + np.abs(np.diff(ys[order]))
    assert (steps == 1).all()


def test_outside_points_clamp_and_nan_sorts_last():
    keys = hilbert_keys(np.array([-5.0, 0.0, np.nan]), np.array([-5.0, 0.0, 1.0]), (0, 0, 10, 10), level=4)
    assert keys[0] == keys[1]
    assert keys[2] == np.iinfo(np.uint64).max


def test_bad_level():
    with pytest.raises(PlanError):
        hilbert_keys(np.zeros(1), np.zeros(1), (0, 0, 1, 1), level=40)
