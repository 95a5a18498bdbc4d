"""Reads of local files and fsspec memory files."""

from __future__ import annotations

import os

import fsspec
import pytest

from rasteret_dask.errors import RangeRequestError, RemoteFileChangedError
from rasteret_dask.io import FileIdentity, IOConfig, read_prefix, read_ranges
from rasteret_dask.io.loop import run_sync
from rasteret_dask.io.reader import read_info_async

RANGES = [(0, 10), (4000, 4100), (5, 9), (4000, 4100), (65_000, 70_000), (100, 100)]


@pytest.fixture
def data():
    return os.urandom(70_000)


@pytest.fixture
def local_file(tmp_path, data):
    path = tmp_path / "file.bin"
    path.write_bytes(data)
    return path


@pytest.fixture
def memory_url(data, request):
    url = f"memory://io-tests/{request.node.name}.bin"
    fs = fsspec.filesystem("memory")
    fs.pipe_file(url, data)
    yield url
    fs.rm_file(url)


def test_local_path_and_file_url(local_file, data, io_stats):
    expected = [data[a:b] for a, b in RANGES]
    assert [bytes(b) for b in read_ranges(str(local_file), RANGES)] == expected
    assert [bytes(b) for b in read_ranges(f"file://{local_file}", RANGES)] == expected
    assert [bytes(b) for b in read_ranges(local_file, RANGES, config=IOConfig(max_gap=0))] == expected
    assert io_stats.snapshot().requests > 0 and io_stats.snapshot().failures == 0


def test_memory_url(memory_url, data):
    assert [bytes(b) for b in read_ranges(memory_url, RANGES)] == [data[a:b] for a, b in RANGES]
    prefix, identity = read_prefix(memory_url, 1000)
    assert prefix == data[:1000] and identity == FileIdentity(len(data))


def test_prefix_and_identity_of_a_local_file(local_file, data):
    st = os.stat(local_file)
    prefix, identity = read_prefix(str(local_file), 100)
    assert prefix == data[:100]
    assert identity.size == st.st_size == len(data)
    assert identity.etag is None and identity.last_modified
    whole, again = read_prefix(str(local_file), 10**7)
    assert whole == data and again == identity
    assert run_sync(read_info_async(str(local_file))) == identity


def test_prefix_of_an_empty_file(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    body, identity = read_prefix(str(tmp_path / "empty"), 100)
    assert body == b"" and identity.size == 0


def test_missing_file_is_404(tmp_path, io_stats):
    with pytest.raises(RangeRequestError, match="file not found") as info:
        read_ranges(str(tmp_path / "nope.bin"), [(0, 10)])
    assert info.value.status == 404 and info.value.url.endswith("nope.bin")
    assert io_stats.snapshot().requests == 1 and io_stats.snapshot().retries == 0


def test_range_past_the_end_fails(local_file, data, memory_url):
    for url in (str(local_file), memory_url):
        with pytest.raises(RangeRequestError, match="past the end of the file") as info:
            read_ranges(url, [(len(data) - 5, len(data) + 5)])
        assert (info.value.start, info.value.stop) == (len(data) - 5, len(data) + 5)


def test_changed_local_file_is_detected(local_file, data):
    _, identity = read_prefix(str(local_file), 10)
    assert bytes(read_ranges(str(local_file), [(0, 10)], expect=identity)[0]) == data[:10]
    local_file.write_bytes(data + b"more")
    with pytest.raises(RemoteFileChangedError, match="size"):
        read_ranges(str(local_file), [(0, 10)], expect=identity)
    local_file.write_bytes(data)  # same size again, but a new modification time
    st = os.stat(local_file)
    os.utime(local_file, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(RemoteFileChangedError, match="last modified"):
        read_ranges(str(local_file), [(0, 10)], expect=identity)


def test_changed_memory_file_is_detected(memory_url, data):
    _, identity = read_prefix(memory_url, 10)
    fsspec.filesystem("memory").pipe_file(memory_url, data[:-1])
    with pytest.raises(RemoteFileChangedError, match="size"):
        read_ranges(memory_url, [(0, 10)], expect=identity)
