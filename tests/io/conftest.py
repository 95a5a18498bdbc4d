"""Fixtures for the io tests (the servers themselves come from tests/servers/fixtures.py)."""

from __future__ import annotations

import pytest

from rasteret_dask.io import IOConfig, stats


@pytest.fixture
def fast_config() -> IOConfig:
    """Retries with millisecond backoff, so fault tests stay fast."""
    return IOConfig(base_delay=0.002, max_delay=0.02, max_attempts=5, total_timeout=10.0, request_timeout=5.0)


@pytest.fixture
def io_stats():
    """The process's io counters, zeroed for this test."""
    stats.reset()
    return stats
