"""URL signing at read time: Planetary-Computer SAS tokens from a loopback stand-in, custom signers."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import pickle
import time
import uuid

import numpy as np
import pytest
from rasterio.transform import from_origin

from rasteret_dask import read_cog_header
from rasteret_dask.errors import RangeRequestError
from rasteret_dask.io import RangeRequest, close_stores, read_info, read_many, read_prefix, read_ranges
from rasteret_dask.io.loop import loop_state, run_sync
from rasteret_dask.io.reader import read_ranges_async
from rasteret_dask.io.signing import PlanetaryComputerSigner, register_signer, signer_names, store_options
from tests.scenes import write_cog

pytest_plugins = ["tests.servers.stac"]

SIZE = 150_000


@pytest.fixture
def sas(sas_server):
    sas_server.reset()
    yield sas_server
    sas_server.reset()


def _options(sas, **extra) -> dict:
    return {
        "signer": "planetary_computer",
        "signer_options": {"token_url": sas.token_url, "path_style_hosts": [sas.host], **extra},
    }


def _container() -> tuple[str, str]:
    """A fresh (account, container): tokens are cached per container for the life of the process."""
    return f"acct{uuid.uuid4().hex[:8]}", "data"


def test_every_get_carries_a_valid_token_and_bytes_match(sas):
    account, container = _container()
    data = os.urandom(SIZE)
    url = sas.put(account, container, "a/b.bin", data)
    ranges = [(0, 10), (5000, 90_000), (149_000, SIZE)]
    with pytest.raises(RangeRequestError) as unsigned:
        read_ranges(url, ranges)
    assert unsigned.value.status == 403  # the stand-in really refuses unsigned GETs
    sas.reset()
    bodies = read_ranges(url, ranges, storage_options=_options(sas))
    assert [bytes(b) for b in bodies] == [data[a:b] for a, b in ranges]
    assert read_prefix(url, 100, storage_options=_options(sas))[0] == data[:100]
    assert read_info(url, storage_options=_options(sas)).size == SIZE
    assert sas.rejected == 0 and sas.gets >= 3
    assert sas.token_requests == {(account, container): 1}


def test_one_token_per_container_for_many_concurrent_reads(sas):
    accounts = [_container(), _container()]
    files = {}
    for account, container in accounts:
        for i in range(12):
            data = os.urandom(5000 + i)
            files[sas.put(account, container, f"f{i}.bin", data)] = data
    requests = [RangeRequest(url, ((0, 100), (4000, 5000))) for url in files]
    results = read_many(requests, storage_options=_options(sas))
    for request, bodies in zip(requests, results, strict=True):
        data = files[request.url]
        assert [bytes(b) for b in bodies] == [data[0:100], data[4000:5000]]
    assert sas.token_requests == {where: 1 for where in accounts}
    read_many(requests, storage_options=_options(sas))  # cached: no new token
    assert sas.token_requests == {where: 1 for where in accounts}
    assert len(set(sas.sigs_seen)) == 2


def test_a_token_is_renewed_before_it_expires(sas):
    account, container = _container()
    data = os.urandom(1000)
    url = sas.put(account, container, "x.bin", data)
    options = _options(sas, refresh_margin=1.0)
    sas.token_lifetime = 3.0
    try:
        assert bytes(read_ranges(url, [(0, 1000)], storage_options=options)[0]) == data
        time.sleep(3.2)  # the first token has expired at the server: only a renewed one is accepted
        assert bytes(read_ranges(url, [(0, 1000)], storage_options=options)[0]) == data
    finally:
        sas.token_lifetime = 3600.0
    assert sas.token_requests[(account, container)] == 2
    assert sas.rejected == 0
    assert len(set(sas.sigs_seen)) == 2


def test_token_service_errors_are_retried_or_reported(sas, fast_config):
    account, container = _container()
    data = os.urandom(1000)
    url = sas.put(account, container, "x.bin", data)
    sas.fail_tokens(503, times=2)
    assert (
        bytes(read_ranges(url, [(0, 10)], storage_options=_options(sas), config=fast_config)[0]) == data[:10]
    )
    assert sas.token_requests[(account, container)] == 3
    other, _ = _container()
    url2 = sas.put(other, container, "x.bin", data)
    sas.fail_tokens(403, times=1)
    with pytest.raises(RangeRequestError) as failed:
        read_ranges(url2, [(0, 10)], storage_options=_options(sas), config=fast_config)
    assert failed.value.status == 403 and "SAS token" in str(failed.value)
    assert sas.token_requests[(other, container)] == 1  # a 403 is not retried
    assert sas.gets == 1


def test_tokens_never_reach_messages_or_logs(sas, caplog):
    account, container = _container()
    sas.put(account, container, "present.bin", b"x" * 10)
    missing = sas.blob_url(account, container, "missing.bin")
    with caplog.at_level(logging.DEBUG), pytest.raises(RangeRequestError) as failed:
        read_ranges(missing, [(0, 10)], storage_options=_options(sas))
    assert failed.value.status == 404
    assert sas.sigs_seen, "the GET was signed"
    texts = [str(failed.value), failed.value.url, caplog.text, repr(failed.value)]
    for sig in sas.sigs_seen:
        for quoted in (sig, sig.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")):
            assert all(quoted not in text for text in texts)
    assert failed.value.url == missing  # the unsigned URL


def test_only_blob_urls_are_signed():
    signer = PlanetaryComputerSigner({"token_url": "http://127.0.0.1:1/never", "path_style_hosts": ["h:1"]})
    assert signer.container_of("https://acct.blob.core.windows.net/cont/a/b.tif") == ("acct", "cont")
    assert signer.container_of("http://h:1/acct/cont/b.tif") == ("acct", "cont")
    assert signer.container_of("http://h:1/acct/cont") is None  # no blob
    for url in (
        "https://example.com/a.tif",
        "s3://bucket/key.tif",
        "/local/file.tif",
        "https://acct.blob.core.windows.net/cont/a.tif?se=2030&sig=abc",  # signed already
    ):
        assert run_sync(signer.sign(url)) == url  # the token service (nothing listens) is never asked


def test_signing_keys_never_reach_a_store(tmp_path, s3_server, sas):
    data = os.urandom(3000)
    local = tmp_path / "f.bin"
    local.write_bytes(data)
    assert bytes(read_ranges(str(local), [(0, 3000)], storage_options=_options(sas))[0]) == data
    s3_url = s3_server.put("signing-bucket", "f.bin", data)
    options = {**s3_server.storage_options, **_options(sas)}
    assert bytes(read_ranges(s3_url, [(10, 20)], storage_options=options)[0]) == data[10:20]
    assert store_options(options) == s3_server.storage_options
    assert pickle.loads(pickle.dumps(options)) == options
    assert sum(sas.token_requests.values()) == 0


def test_subscription_key_comes_from_the_environment(sas, monkeypatch):
    account, container = _container()
    url = sas.put(account, container, "x.bin", b"abc")
    monkeypatch.setenv("PC_SDK_SUBSCRIPTION_KEY", "worker-secret")
    assert bytes(read_ranges(url, [(0, 3)], storage_options=_options(sas))[0]) == b"abc"
    assert sas.subscription_keys == ["worker-secret"]


class _Redirect:
    """A custom signer: requests for ``http://signed.invalid/...`` go to a real server instead."""

    def __init__(self, options: dict):
        self.base = options["base"]

    async def sign(self, url: str) -> str:
        return url.replace("http://signed.invalid/", self.base)

    async def close(self) -> None:
        pass


def test_custom_signers_by_name_or_factory(range_server):
    data = os.urandom(2000)
    range_server.put("custom.bin", data)
    options = {"signer_options": {"base": range_server.url}}
    register_signer("test-redirect", _Redirect, overwrite=True)
    assert "test-redirect" in signer_names()
    for signer in ("test-redirect", _Redirect):
        opts = {**options, "signer": signer}
        body = read_ranges("http://signed.invalid/custom.bin", [(5, 500)], storage_options=opts)[0]
        assert bytes(body) == data[5:500]
        assert pickle.loads(pickle.dumps(opts))["signer"] == signer
    with pytest.raises(ValueError, match=r"known signers: .*planetary_computer"):
        read_ranges("http://signed.invalid/custom.bin", [(0, 1)], storage_options={"signer": "nope"})
    with pytest.raises(ValueError, match="registered already"):
        register_signer("test-redirect", lambda options: _Redirect(options))


def test_cog_header_through_a_signer_matches_the_file(tmp_path, sas):

    path = tmp_path / "cog.tif"
    data = (np.arange(256 * 256, dtype="uint16") % 977).reshape(1, 256, 256)
    write_cog(path, data, 32633, from_origin(500_000, 5_000_000, 10, 10), nodata=0, blocksize=128)
    account, container = _container()
    url = sas.put(account, container, "scene/cog.tif", path.read_bytes())
    remote = read_cog_header(url, storage_options=_options(sas))
    local = read_cog_header(str(path))
    identity = {"etag": None, "last_modified": None}
    assert dataclasses.replace(remote.tiff, **identity) == dataclasses.replace(local.tiff, **identity)
    assert remote.url == url and "sig" not in remote.url
    assert (remote.read(window=((100, 200), (0, 256))) == data[:, 100:200, :]).all()
    assert sas.token_requests == {(account, container): 1} and sas.rejected == 0


def test_signers_are_per_loop_and_close_with_the_stores(sas):
    account, container = _container()
    url = sas.put(account, container, "x.bin", b"0123456789")

    async def main():
        body = (await read_ranges_async(url, [(2, 6)], storage_options=_options(sas)))[0]
        signers = list(loop_state()["signers"].values())
        await close_stores()
        return bytes(body), signers

    body, signers = asyncio.run(main())
    assert body == b"2345"
    assert len(signers) == 1 and signers[0]._session.closed
    assert bytes(read_ranges(url, [(0, 2)], storage_options=_options(sas))[0]) == b"01"
    assert sas.token_requests == {(account, container): 2}  # the I/O loop has its own signer and token
