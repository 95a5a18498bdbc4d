"""Merge nearby byte ranges into fewer requests, and split the answers back (pure, no I/O).

Ranges are half-open ``(start, stop)`` byte offsets, as Python slices: ``(0, 4)`` is bytes 0..3.

>>> merged = coalesce([(0, 4), (10, 12), (2, 6)], max_gap=8, max_size=1 << 20)
>>> [(m.start, m.stop) for m in merged]
[(0, 12)]
>>> [bytes(b) for b in split(merged, [bytes(range(12))])]
[b'\\x00\\x01\\x02\\x03', b'\\n\\x0b', b'\\x02\\x03\\x04\\x05']
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

# What split() returns for each input range: the merged body itself when the range is all of it, else a
# read-only memoryview slice of it (no copy; ``bytes(x)`` makes one).
Buffer = bytes | memoryview


@dataclass(frozen=True, slots=True)
class Merged:
    """One request serving one or more input ranges.

    Attributes
    ----------
    start, stop
        The half-open byte range to fetch.
    members
        ``(input index, offset in this request's body, length)`` for every input range it serves.
    """

    start: int
    stop: int
    members: tuple[tuple[int, int, int], ...]

    @property
    def length(self) -> int:
        """Number of bytes this request asks for."""
        return self.stop - self.start


def _validated(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for i, pair in enumerate(ranges):
        start, stop = pair
        start, stop = operator.index(start), operator.index(stop)
        if start < 0 or stop < start:
            raise ValueError(f"byte range {i} is ({start}, {stop}); need 0 <= start <= stop")
        out.append((start, stop))
    return out


def coalesce(ranges: Sequence[tuple[int, int]], max_gap: int, max_size: int) -> list[Merged]:
    """Group byte ranges into as few requests as the limits allow.

    Ranges are sorted by start; a range joins the current request when the gap between them is at most
    ``max_gap`` bytes (overlapping and adjacent ranges have gap <= 0) and the grown request stays within
    ``max_size`` bytes. A single range longer than ``max_size`` is never cut: it becomes a request of its
    own. Duplicates and overlaps are allowed; each input is served exactly once. Empty ranges
    (``start == stop``) are members like any other and may yield a zero-length request, which a reader
    answers with ``b""`` without asking storage.

    Parameters
    ----------
    ranges
        Half-open ``(start, stop)`` byte ranges, in any order.
    max_gap
        Largest number of unrequested bytes worth fetching to save a request (>= 0).
    max_size
        Largest merged request in bytes (> 0).

    Returns
    -------
    list of Merged
        Sorted by start, non-empty members only; ``split`` maps their bodies back to input order.
    """
    if max_gap < 0 or max_size <= 0:
        raise ValueError(f"need max_gap >= 0 and max_size > 0, got {max_gap} and {max_size}")
    valid = _validated(ranges)
    order = sorted(range(len(valid)), key=lambda i: valid[i])
    merged: list[Merged] = []
    group: list[int] = []
    group_start = group_stop = 0

    def close() -> None:
        members = tuple((i, valid[i][0] - group_start, valid[i][1] - valid[i][0]) for i in group)
        merged.append(Merged(group_start, group_stop, members))

    for i in order:
        start, stop = valid[i]
        if group and start - group_stop <= max_gap and max(group_stop, stop) - group_start <= max_size:
            group.append(i)
            group_stop = max(group_stop, stop)
            continue
        if group:
            close()
        group, group_start, group_stop = [i], start, stop
    if group:
        close()
    return merged


def split(merged: Sequence[Merged], bodies: Sequence[bytes]) -> list[Buffer]:
    """The body of every input range, in input order.

    Parameters
    ----------
    merged
        What :func:`coalesce` returned.
    bodies
        One body per merged request, each exactly ``merged[k].length`` bytes long.

    Returns
    -------
    list of bytes or memoryview
        A body that one range spans entirely is returned as is; other ranges get read-only memoryview
        slices of their request's body (no copy). Both are bytes-like: ``bytes(x)`` copies if needed.
    """
    if len(merged) != len(bodies):
        raise ValueError(f"{len(bodies)} bodies for {len(merged)} merged requests")
    n = sum(len(m.members) for m in merged)
    out: list[Buffer | None] = [None] * n
    for m, body in zip(merged, bodies, strict=True):
        if len(body) != m.length:
            raise ValueError(f"body of {len(body)} bytes for request {m.start}-{m.stop} ({m.length} bytes)")
        view = memoryview(body).toreadonly()
        for index, offset, length in m.members:
            out[index] = body if length == len(body) else view[offset : offset + length]
    return out  # type: ignore[return-value]
