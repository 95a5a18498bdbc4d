"""Coalescing and splitting byte ranges (pure)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rasteret_dask.io.ranges import Merged, coalesce, split


@st.composite
def data_and_ranges(draw):
    data = draw(st.binary(min_size=0, max_size=3000))
    bound = st.integers(0, len(data))
    ranges = [tuple(sorted(pair)) for pair in draw(st.lists(st.tuples(bound, bound), max_size=40))]
    return data, ranges


@settings(max_examples=300, deadline=None)
@given(data_and_ranges(), st.integers(0, 200), st.integers(1, 4000))
def test_split_of_merge_returns_exactly_the_requested_slices(case, max_gap, max_size):
    data, ranges = case
    merged = coalesce(ranges, max_gap, max_size)
    bodies = split(merged, [data[m.start : m.stop] for m in merged])
    assert [bytes(b) for b in bodies] == [data[a:b] for a, b in ranges]


@settings(max_examples=300, deadline=None)
@given(data_and_ranges(), st.integers(0, 200), st.integers(1, 4000))
def test_merged_requests_respect_the_limits(case, max_gap, max_size):
    _, ranges = case
    merged = coalesce(ranges, max_gap, max_size)
    served = sorted(index for m in merged for index, _, _ in m.members)
    assert served == list(range(len(ranges)))  # every input exactly once
    for m in merged:
        longest = max(length for _, _, length in m.members)
        assert m.length <= max(max_size, longest)  # only a single over-long range may exceed max_size
        for index, offset, length in m.members:
            assert (m.start + offset, m.start + offset + length) == ranges[index]
            assert offset >= 0 and offset + length <= m.length
    for before, after in itertools.pairwise(merged):
        assert before.start <= after.start
        # a new request starts only when the gap is too wide or the merged request would be too big
        assert after.start - before.stop > max_gap or max(before.stop, after.stop) - before.start > max_size


def test_gap_decides_merging():
    assert [(m.start, m.stop) for m in coalesce([(0, 10), (20, 30)], 10, 100)] == [(0, 30)]
    assert [(m.start, m.stop) for m in coalesce([(0, 10), (20, 30)], 9, 100)] == [(0, 10), (20, 30)]
    assert [(m.start, m.stop) for m in coalesce([(0, 10), (10, 30)], 0, 100)] == [(0, 30)]


def test_size_limit_starts_a_new_request_and_never_cuts_a_range():
    merged = coalesce([(0, 60), (60, 120), (120, 500)], 0, 100)
    assert [(m.start, m.stop) for m in merged] == [(0, 60), (60, 120), (120, 500)]


def test_duplicates_and_overlaps_share_one_request():
    ranges = [(5, 15), (0, 10), (5, 15), (8, 9)]
    (merged,) = coalesce(ranges, 0, 100)
    assert (merged.start, merged.stop) == (0, 15)
    data = bytes(range(15))
    assert [bytes(b) for b in split([merged], [data])] == [data[a:b] for a, b in ranges]


def test_split_returns_the_body_itself_or_views_without_copies():
    merged = coalesce([(0, 4), (4, 8), (10, 20)], 0, 100)
    bodies = [bytes(range(8)), bytes(range(10, 20))]
    first, second, whole = split(merged, bodies)
    assert whole is bodies[1]
    assert isinstance(first, memoryview) and first.readonly and first.obj is bodies[0]
    assert bytes(second) == bytes(range(4, 8))


def test_empty_ranges_are_served_empty():
    merged = coalesce([(5, 5), (0, 3)], 0, 100)
    assert [(m.start, m.stop) for m in merged] == [(0, 3), (5, 5)]
    assert [bytes(b) for b in split(merged, [b"abc", b""])] == [b"", b"abc"]
    assert [(m.start, m.stop) for m in coalesce([(5, 5), (0, 3)], 2, 100)] == [(0, 5)]
    only_empty = coalesce([(7, 7)], 0, 100)
    assert only_empty == [Merged(7, 7, ((0, 0, 0),))]
    assert split(only_empty, [b""]) == [b""]


@pytest.mark.parametrize("bad", [[(-1, 3)], [(5, 4)], [(0.5, 3)]])
def test_invalid_ranges_are_rejected(bad):
    with pytest.raises((ValueError, TypeError)):
        coalesce(bad, 0, 100)


def test_split_checks_body_lengths():
    merged = coalesce([(0, 4)], 0, 100)
    with pytest.raises(ValueError, match="3 bytes"):
        split(merged, [b"abc"])
    with pytest.raises(ValueError):
        split(merged, [])
