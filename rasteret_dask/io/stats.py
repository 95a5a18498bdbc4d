"""Per-process counters of storage requests, for tests and benchmarks (thread-safe, resettable).

>>> from rasteret_dask.io import stats
>>> stats.reset()
>>> stats.snapshot().requests
0
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Snapshot:
    """Counts since the last :func:`reset` in this process.

    Attributes
    ----------
    requests
        Requests sent to storage, every attempt counted (local reads included).
    bytes
        Body bytes received by successful requests.
    retries
        Attempts that failed transiently and were retried.
    failures
        Requests that failed for good (after retries, or at once for a permanent error).
    """

    requests: int = 0
    bytes: int = 0
    retries: int = 0
    failures: int = 0


_lock = threading.Lock()
_counts = {"requests": 0, "bytes": 0, "retries": 0, "failures": 0}


def _reinit_after_fork() -> None:
    global _lock
    _lock = threading.Lock()  # the parent's lock may have been held by another thread at fork time


os.register_at_fork(after_in_child=_reinit_after_fork)


def add(requests: int = 0, nbytes: int = 0, retries: int = 0, failures: int = 0) -> None:
    """Add to the counters."""
    with _lock:
        _counts["requests"] += requests
        _counts["bytes"] += nbytes
        _counts["retries"] += retries
        _counts["failures"] += failures


def snapshot() -> Snapshot:
    """The counters now."""
    with _lock:
        return Snapshot(**_counts)


def reset() -> None:
    """Set every counter to zero."""
    with _lock:
        for key in _counts:
            _counts[key] = 0
