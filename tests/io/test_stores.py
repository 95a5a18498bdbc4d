"""URL handling of the storage adapters (no I/O)."""

from __future__ import annotations

import pytest

from rasteret_dask.io.config import FileIdentity
from rasteret_dask.io.stores import _freeze, _strong_etag, locate, safe_url


@pytest.mark.parametrize(
    ("url", "protocol", "path", "host"),
    [
        ("/data/a.tif", "file", "/data/a.tif", "file"),
        ("relative/a.tif", "file", "relative/a.tif", "file"),
        ("file:///data/a.tif", "file", "/data/a.tif", "file"),
        ("memory://x/a.tif", "memory", "x/a.tif", "memory"),
        (
            "https://u:p@h.example:8443/a.tif?x=1",
            "https",
            "https://u:p@h.example:8443/a.tif?x=1",
            "https://h.example:8443",
        ),
        ("s3://bucket/k/a.tif", "s3", "bucket/k/a.tif", "s3://bucket"),
        ("s3a://bucket/a.tif", "s3", "bucket/a.tif", "s3://bucket"),
        ("gs://bucket/a.tif", "gs", "bucket/a.tif", "gs://bucket"),
        ("gcs://bucket/a.tif", "gs", "bucket/a.tif", "gs://bucket"),
    ],
)
def test_locate(url, protocol, path, host):
    where = locate(url)
    assert (where.protocol, where.path, where.host) == (protocol, path, host)


@pytest.mark.parametrize("url", ["ftp://h/a.tif", "s3://bucket-only", "gs://"])
def test_locate_rejects_what_it_cannot_read(url):
    with pytest.raises(ValueError):
        locate(url)


def test_safe_url_hides_credentials():
    url = "https://user:hunter2@h.example/a.tif?X-Amz-Signature=abc123&X-Amz-Credential=AKIA9&part=1"
    shown = safe_url(url)
    assert "hunter2" not in shown and "abc123" not in shown and "AKIA9" not in shown
    assert shown.startswith("https://h.example/a.tif?") and "part=1" in shown
    assert safe_url("/local/path.tif") == "/local/path.tif"


def test_options_freeze_to_equal_keys_whatever_the_order():
    a = {"key": "k", "client_kwargs": {"region_name": "r", "x": [1, 2]}}
    b = {"client_kwargs": {"x": [1, 2], "region_name": "r"}, "key": "k"}
    assert _freeze(a) == _freeze(b)
    assert hash(_freeze(a)) == hash(_freeze(b))
    assert _freeze(a) != _freeze({**a, "key": "other"})


def test_only_strong_etags_are_sent_as_if_match():
    assert _strong_etag(FileIdentity(1, '"abc"')) == '"abc"'
    assert _strong_etag(FileIdentity(1, 'W/"abc"')) is None
    assert _strong_etag(FileIdentity(1, None)) is None
    assert _strong_etag(None) is None
