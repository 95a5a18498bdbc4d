"""Reads over HTTP from the loopback range server: bytes, merging, retries, failures, changes, limits."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import urllib.request

import pytest

from rasteret_dask.errors import RangeRequestError, RemoteFileChangedError
from rasteret_dask.io import (
    FileIdentity,
    IOConfig,
    RangeRequest,
    read_many,
    read_prefix,
    read_ranges,
    read_ranges_async,
)
from rasteret_dask.io.loop import run_sync

SIZE = 200_000


@pytest.fixture
def data():
    return os.urandom(SIZE)


@pytest.fixture
def url(range_server, data):
    return range_server.put("data.bin", data)


def _bytes(bodies):
    return [bytes(b) for b in bodies]


def _headers(url):
    """ETag and Last-Modified as an independent client (urllib) sees them."""
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10) as response:
        return response.headers["ETag"], response.headers["Last-Modified"]


def test_reads_exactly_the_requested_bytes(url, data):
    ranges = [(0, 1), (100, 50_000), (199_990, SIZE), (100, 200), (7, 7), (150_000, 150_100)]
    assert _bytes(read_ranges(url, ranges)) == [data[a:b] for a, b in ranges]


def test_merging_saves_requests(range_server, url, data):
    ranges = [(i * 1000, i * 1000 + 600) for i in range(100)]  # gaps of 400 bytes
    assert _bytes(read_ranges(url, ranges)) == [data[a:b] for a, b in ranges]
    assert range_server.requests("data.bin") == 1
    range_server.reset_stats()
    assert _bytes(read_ranges(url, ranges, config=IOConfig(max_gap=100))) == [data[a:b] for a, b in ranges]
    assert range_server.requests("data.bin") == 100
    range_server.reset_stats()
    read_ranges(url, ranges, config=IOConfig(max_merged_size=10_000))  # 10 ranges fit in 10 kB
    assert range_server.requests("data.bin") == 10


def test_counters_match_the_server(range_server, url, io_stats):
    read_ranges(url, [(0, 1000), (50_000, 60_000)], config=IOConfig(max_gap=0))
    server, client = range_server.stats(), io_stats.snapshot()
    assert client.requests == server["requests"] == 2
    assert client.bytes == server["bytes"] == 11_000


def test_prefix_returns_the_identity_of_the_same_response(range_server, url, data):
    etag, last_modified = _headers(url)
    range_server.reset_stats()
    prefix, identity = read_prefix(url, 1000)
    assert prefix == data[:1000]
    assert identity == FileIdentity(SIZE, etag, last_modified)
    whole, identity_whole = read_prefix(url, 10**6)  # longer than the file: fewer bytes
    assert whole == data and identity_whole == identity
    assert range_server.stats()["statuses"] == {"206": 2}


def test_prefix_of_an_empty_file(range_server):
    url = range_server.put("empty.bin", b"")
    body, identity = read_prefix(url, 100)
    assert body == b"" and identity.size == 0


def test_server_ignoring_range_still_gives_the_right_bytes(range_server, url, data):
    range_server.add_fault("ignore_range", times=2)
    assert _bytes(read_ranges(url, [(10, 20)])) == [data[10:20]]
    assert read_prefix(url, 50) == (data[:50], read_prefix(url, 50)[1])
    assert range_server.stats()["statuses"]["200"] == 2


@pytest.mark.parametrize(
    ("kind", "options", "times"),
    [
        ("status", {"status": 503}, 2),
        ("status", {"status": 500}, 1),
        ("status", {"status": 429, "retry_after": 0.05}, 1),
        ("reset", {}, 3),  # aiohttp itself retries a reset reused connection once; we do the rest
        ("truncate", {}, 2),
        ("short", {}, 2),
    ],
)
def test_transient_failures_are_retried(range_server, url, data, fast_config, io_stats, kind, options, times):
    range_server.add_fault(kind, times=times, path="data.bin", **options)
    if options.get("retry_after"):  # Retry-After lengthens the backoff up to max_delay
        fast_config = dataclasses.replace(fast_config, max_delay=1.0)
    start = time.monotonic()
    assert _bytes(read_ranges(url, [(1000, 60_000)], config=fast_config)) == [data[1000:60_000]]
    assert range_server.requests("data.bin") == times + 1
    assert 1 <= io_stats.snapshot().retries <= times
    assert io_stats.snapshot().failures == 0
    if options.get("retry_after"):
        assert time.monotonic() - start >= options["retry_after"]


def test_gives_up_after_max_attempts(range_server, url, io_stats):
    range_server.add_fault("status", status=503, times=-1)
    config = IOConfig(max_attempts=3, base_delay=0.001, max_delay=0.005)
    with pytest.raises(RangeRequestError, match="gave up after 3 attempts") as info:
        read_ranges(url, [(10, 20)], config=config)
    assert (info.value.url, info.value.start, info.value.stop, info.value.status) == (url, 10, 20, 503)
    assert range_server.requests("data.bin") == 3
    assert io_stats.snapshot().retries == 2 and io_stats.snapshot().failures == 1


def test_gives_up_when_the_total_time_is_spent(range_server, url):
    range_server.add_fault("status", status=502, times=-1)
    config = IOConfig(max_attempts=1000, base_delay=0.05, max_delay=0.1, total_timeout=0.5)
    start = time.monotonic()
    with pytest.raises(RangeRequestError, match=r"total timeout of 0\.5 s") as info:
        read_ranges(url, [(10, 20)], config=config)
    assert time.monotonic() - start < 2.0
    assert info.value.status == 502  # the last answer, even when the deadline cut a later attempt
    assert 2 <= range_server.requests("data.bin") < 100


def test_slow_responses_time_out_and_are_retried(range_server, url, data):
    range_server.add_fault("delay", delay_ms=2000, times=1)
    config = IOConfig(request_timeout=0.3, base_delay=0.001, max_delay=0.01)
    assert _bytes(read_ranges(url, [(0, 100)], config=config)) == [data[:100]]
    range_server.add_fault("delay", delay_ms=2000, times=-1)
    with pytest.raises(RangeRequestError, match="timed out") as info:
        read_ranges(url, [(0, 100)], config=IOConfig(request_timeout=0.2, max_attempts=2, base_delay=0.001))
    assert info.value.status is None and "after 2 attempts" in str(info.value)


@pytest.mark.parametrize(
    ("status", "reason"), [(404, "file not found"), (403, "access denied"), (400, "status 400")]
)
def test_client_errors_fail_at_once(range_server, url, fast_config, io_stats, status, reason):
    range_server.add_fault("status", status=status, times=-1)
    with pytest.raises(RangeRequestError, match=reason) as info:
        read_ranges(url, [(0, 10)], config=fast_config)
    assert info.value.status == status
    assert range_server.requests() == 1 and io_stats.snapshot().retries == 0


def test_missing_file_is_one_request(range_server, fast_config):
    url = range_server.url_for("missing.bin")
    with pytest.raises(RangeRequestError, match="file not found") as info:
        read_ranges(url, [(0, 10)], config=fast_config)
    assert info.value.status == 404 and info.value.url == url
    assert range_server.requests("missing.bin") == 1


def test_range_past_the_end_fails_without_retry(range_server, url, fast_config):
    for start, stop in [(SIZE - 10, SIZE + 10), (SIZE + 10, SIZE + 20)]:
        with pytest.raises(RangeRequestError, match=f"past the end of the file \\({SIZE} bytes\\)"):
            read_ranges(url, [(start, stop)], config=fast_config)
    assert range_server.requests() == 2


def test_changed_etag_fails_through_if_match(range_server, url, data):
    _, identity = read_prefix(url, 100)
    assert _bytes(read_ranges(url, [(0, 10)], expect=identity)) == [data[:10]]
    range_server.put("data.bin", os.urandom(SIZE))  # same size, new content and ETag
    with pytest.raises(RemoteFileChangedError, match=r"data\.bin"):
        read_ranges(url, [(0, 10)], expect=identity)
    assert range_server.stats()["statuses"].get("412") == 1


def test_changed_size_fails(range_server, url, data):
    _, identity = read_prefix(url, 100)
    range_server.put("data.bin", data + b"appended")
    size_only = FileIdentity(identity.size)
    with pytest.raises(RemoteFileChangedError, match=f"size {SIZE + 8} bytes, expected {SIZE}"):
        read_ranges(url, [(0, 10)], expect=size_only)


def test_per_host_concurrency_is_respected(range_server, url, data):
    range_server.set_latency(40)
    ranges = [(i * 1000, i * 1000 + 10) for i in range(24)]
    config = IOConfig(max_gap=0, per_host_concurrency=3)
    assert _bytes(read_ranges(url, ranges, config=config)) == [data[a:b] for a, b in ranges]
    stats = range_server.stats()
    assert stats["requests"] == 24
    assert stats["max_in_flight"] == 3


def test_concurrency_limit_is_shared_by_concurrent_calls(range_server, url):
    range_server.set_latency(40)
    config = IOConfig(max_gap=0, per_host_concurrency=4)

    async def many():
        calls = [read_ranges_async(url, [(0, 10), (50, 60)], config=config)]  # 2 requests
        calls.append(read_ranges_async(url, [(j, j + 1) for j in range(0, 5000, 1000)], config=config))  # 5
        calls += [read_ranges_async(url, [(i * 7000, i * 7000 + 10)], config=config) for i in range(6)]
        return await asyncio.gather(*calls)

    run_sync(many())
    stats = range_server.stats()
    assert stats["requests"] == 13 and stats["max_in_flight"] == 4


def test_read_many_fetches_several_files_in_one_call(range_server, data):
    names = [f"many-{i}.bin" for i in range(5)]
    urls = [range_server.put(name, data[i * 1000 :]) for i, name in enumerate(names)]
    requests = [RangeRequest(u, [(0, 10), (500, 600)]) for u in urls]
    results = read_many(requests)
    for i, bodies in enumerate(results):
        assert _bytes(bodies) == [data[i * 1000 : i * 1000 + 10], data[i * 1000 + 500 : i * 1000 + 600]]
    assert all(range_server.requests(name) == 1 for name in names)


def test_read_many_raises_the_first_failure(range_server, url):
    missing = range_server.url_for("not-there.bin")
    with pytest.raises(RangeRequestError, match=r"not-there\.bin"):
        read_many([RangeRequest(url, [(0, 1)]), RangeRequest(missing, [(0, 1)])])


@pytest.mark.parametrize("where", ["url", "query", "header"])
def test_credentials_never_appear_in_errors(range_server, where):
    url, options = range_server.url_for("missing.bin"), None
    if where == "url":
        url = url.replace("http://", "http://alice:hunter2@")
    elif where == "query":
        url += "?X-Amz-Signature=hunter2&part=2"
    else:
        options = {"headers": {"Authorization": "Bearer hunter2"}}
    with pytest.raises(RangeRequestError) as info:
        read_ranges(url, [(0, 10)], storage_options=options)
    text = str(info.value) + repr(info.value) + repr(info.value.__cause__) + repr(info.value.__context__)
    assert "hunter2" not in text
    assert "missing.bin" in text and info.value.status == 404
