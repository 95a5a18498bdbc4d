"""IOConfig and FileIdentity values."""

from __future__ import annotations

import pickle

import pytest

from rasteret_dask.io import FileIdentity, IOConfig


def test_config_and_identity_are_frozen_and_picklable():
    config = IOConfig(max_gap=1, per_host_concurrency=3)
    identity = FileIdentity(10, '"abc"', "Mon, 01 Jan 2024 00:00:00 GMT")
    assert pickle.loads(pickle.dumps(config)) == config
    assert pickle.loads(pickle.dumps(identity)) == identity
    with pytest.raises(AttributeError):
        config.max_gap = 2
    with pytest.raises(AttributeError):
        identity.size = 2


def test_concurrency_defaults_per_protocol():
    assert IOConfig().concurrency_for("file") < IOConfig().concurrency_for("s3")
    assert IOConfig().concurrency_for("unknown-protocol") >= 1
    assert IOConfig(per_host_concurrency=5).concurrency_for("s3") == 5


@pytest.mark.parametrize(
    "kwargs", [{"max_gap": -1}, {"max_merged_size": 0}, {"per_host_concurrency": 0}, {"max_attempts": 0}]
)
def test_config_rejects_nonsense(kwargs):
    with pytest.raises(ValueError):
        IOConfig(**kwargs)


def test_identity_mismatch_compares_known_fields_only():
    recorded = FileIdentity(100, '"a"', "d1")
    assert recorded.mismatch(FileIdentity(100, '"a"', "d2")) is None  # the ETag rules over the date
    assert recorded.mismatch(FileIdentity(None, None, None)) is None
    assert "size 101" in recorded.mismatch(FileIdentity(101, '"a"', "d1"))
    assert "ETag" in recorded.mismatch(FileIdentity(100, '"b"', "d1"))
    assert "last modified" in FileIdentity(100, None, "d1").mismatch(FileIdentity(100, None, "d2"))
