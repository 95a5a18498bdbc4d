"""Reads from S3 (moto's server) and GCS (the gcp-storage-emulator) through s3fs and gcsfs."""

from __future__ import annotations

import os
import urllib.request

import pytest

from rasteret_dask.errors import RangeRequestError, RemoteFileChangedError
from rasteret_dask.io import FileIdentity, IOConfig, RangeRequest, read_many, read_prefix, read_ranges
from rasteret_dask.io.loop import run_sync
from rasteret_dask.io.reader import read_info_async
from rasteret_dask.io.stores import _http_date

RANGES = [(0, 10), (100, 5000), (90_000, 100_000), (120, 130), (4000, 4000)]


@pytest.fixture
def data():
    return os.urandom(100_000)


def _bytes(bodies):
    return [bytes(b) for b in bodies]


# ------------------------------------------------------------------------------------------------ S3


def test_s3_reads_exact_bytes(s3_server, data, io_stats):
    url = s3_server.put("io-bytes", "dir/a.tif", data)
    options = s3_server.storage_options
    assert _bytes(read_ranges(url, RANGES, storage_options=options)) == [data[a:b] for a, b in RANGES]
    assert io_stats.snapshot().requests == 2  # (90_000, 100_000) is far from the others
    io_stats.reset()
    bodies = read_many([RangeRequest(url, [(0, 5)]), RangeRequest(url, [(50, 60)])], storage_options=options)
    assert [_bytes(b) for b in bodies] == [[data[:5]], [data[50:60]]]
    assert io_stats.snapshot().requests == 2


def test_s3_large_ranges_arrive_whole(s3_server):
    """A body arrives in pieces (the stream's read(n) returns what has come so far): every byte is read."""
    data = os.urandom(6_000_000)
    url = s3_server.put("io-bytes", "dir/large.tif", data)
    ranges = [(0, 3_000_000), (3_500_000, 6_000_000)]
    config = IOConfig(max_gap=0)
    bodies = read_ranges(url, ranges, storage_options=s3_server.storage_options, config=config)
    assert _bytes(bodies) == [data[a:b] for a, b in ranges]


def test_s3_prefix_identity_matches_head_object(s3_server, data):
    url = s3_server.put("io-identity", "a.tif", data)
    head = s3_server.client.head_object(Bucket="io-identity", Key="a.tif")
    prefix, identity = read_prefix(url, 1000, storage_options=s3_server.storage_options)
    assert prefix == data[:1000]
    assert identity == FileIdentity(len(data), head["ETag"], _http_date(head["LastModified"]))
    whole, again = read_prefix(url, 10**6, storage_options=s3_server.storage_options)
    assert whole == data and again == identity
    assert run_sync(read_info_async(url, storage_options=s3_server.storage_options)) == identity


def test_s3_missing_key_fails_at_once(s3_server, io_stats):
    s3_server.create_bucket("io-missing")
    with pytest.raises(RangeRequestError, match="file not found") as info:
        read_ranges("s3://io-missing/nope.tif", [(0, 10)], storage_options=s3_server.storage_options)
    assert info.value.status == 404 and info.value.url == "s3://io-missing/nope.tif"
    assert io_stats.snapshot().requests == 1 and io_stats.snapshot().retries == 0


def test_s3_changed_object_is_detected(s3_server, data):
    url = s3_server.put("io-changed", "a.tif", data)
    options = s3_server.storage_options
    _, identity = read_prefix(url, 10, storage_options=options)
    s3_server.put("io-changed", "a.tif", os.urandom(len(data)))  # same size, new ETag: If-Match fails
    with pytest.raises(RemoteFileChangedError, match=r"s3://io-changed/a\.tif"):
        read_ranges(url, [(0, 10)], storage_options=options, expect=identity)
    s3_server.put("io-changed", "a.tif", data + b"x")
    with pytest.raises(RemoteFileChangedError, match="size"):
        read_ranges(url, [(0, 10)], storage_options=options, expect=FileIdentity(len(data)))


def test_s3_range_past_the_end(s3_server, data):
    url = s3_server.put("io-end", "a.tif", data)
    for start in (len(data) - 5, len(data) + 5):
        with pytest.raises(RangeRequestError, match="past the end"):
            read_ranges(url, [(start, start + 10)], storage_options=s3_server.storage_options)
    s3_server.put("io-end", "empty", b"")
    body, identity = read_prefix("s3://io-end/empty", 10, storage_options=s3_server.storage_options)
    assert body == b"" and identity.size == 0


def test_s3_secrets_stay_out_of_errors(s3_server):
    options = {**s3_server.storage_options, "secret": "hunter2-wrong"}
    with pytest.raises(RangeRequestError) as info:
        read_ranges("s3://io-nobucket-here/a.tif", [(0, 10)], storage_options=options)
    assert "hunter2" not in str(info.value) + repr(info.value)


# ----------------------------------------------------------------------------------------------- GCS


def test_gcs_reads_exact_bytes(gcs_server, data, io_stats):
    url = gcs_server.put("io-bytes", "dir/a b.tif", data)
    options = gcs_server.storage_options
    assert _bytes(read_ranges(url, RANGES, storage_options=options)) == [data[a:b] for a, b in RANGES]
    assert io_stats.snapshot().requests == 2


def test_gcs_prefix_identity(gcs_server, data):
    url = gcs_server.put("io-identity", "a.tif", data)
    media = f"{gcs_server.endpoint_url}/download/storage/v1/b/io-identity/o/a.tif?alt=media"
    with urllib.request.urlopen(urllib.request.Request(media, headers={"Range": "bytes=0-0"})) as response:
        etag, last_modified = response.headers.get("ETag"), response.headers.get("Last-Modified")
    prefix, identity = read_prefix(url, 1000, storage_options=gcs_server.storage_options)
    assert prefix == data[:1000]
    assert identity == FileIdentity(len(data), etag, last_modified)
    whole, again = read_prefix(url, 10**6, storage_options=gcs_server.storage_options)
    assert whole == data and again == identity


def test_gcs_missing_object_fails_at_once(gcs_server, io_stats):
    gcs_server.create_bucket("io-missing")
    with pytest.raises(RangeRequestError, match="file not found") as info:
        read_ranges("gs://io-missing/nope.tif", [(0, 10)], storage_options=gcs_server.storage_options)
    assert info.value.status == 404
    assert io_stats.snapshot().requests == 1


def test_gcs_changed_size_is_detected(gcs_server, data):
    url = gcs_server.put("io-changed", "a.tif", data)
    _, identity = read_prefix(url, 10, storage_options=gcs_server.storage_options)
    gcs_server.put("io-changed", "a.tif", data[:-1])
    with pytest.raises(RemoteFileChangedError, match="size"):
        read_ranges(url, [(0, 10)], storage_options=gcs_server.storage_options, expect=identity)
