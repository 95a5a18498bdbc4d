"""Async byte ranges over local files and fsspec/object stores: merge, fetch, retry, verify (no TIFF here).

The entry points are in :mod:`rasteret_dask.io.reader`; :mod:`rasteret_dask.io.stats` counts requests.
"""

from . import stats
from .config import FileIdentity, IOConfig
from .loop import run_sync
from .reader import (
    RangeRequest,
    read_info,
    read_info_async,
    read_many,
    read_many_async,
    read_prefix,
    read_prefix_async,
    read_ranges,
    read_ranges_async,
)
from .stores import close_stores

__all__ = [
    "FileIdentity",
    "IOConfig",
    "RangeRequest",
    "close_stores",
    "read_info",
    "read_info_async",
    "read_many",
    "read_many_async",
    "read_prefix",
    "read_prefix_async",
    "read_ranges",
    "read_ranges_async",
    "run_sync",
    "stats",
]
