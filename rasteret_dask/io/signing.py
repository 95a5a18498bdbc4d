"""URL signing at read time: storage options name a signer, the reader signs each URL just before each GET.

Some stores hand out short-lived credentials per request URL instead of keys, e.g. Microsoft's Planetary
Computer, whose Azure Blob assets need a SAS token appended to the URL. Collections keep unsigned hrefs;
signing happens on the worker, in the byte-range reader, so tokens never enter a collection, a Parquet
file, a Dask graph or a log line.

>>> opts = {"signer": "planetary_computer"}                                   # doctest: +SKIP
>>> read_ranges("https://acct.blob.core.windows.net/cont/a.tif", [(0, 16)], storage_options=opts)

Storage options keys (removed before the options reach a storage adapter):

- ``signer``: a registered signer name (``"planetary_computer"``, or one added with
  :func:`register_signer`), or a picklable factory ``options -> Signer`` (a class defined in an
  importable module), so that worker processes can build it.
- ``signer_options``: a dict of plain values given to the factory (URLs, margins; no secrets: secrets
  come from the worker's environment).

A :class:`Signer` has ``async sign(url) -> url`` and ``async close()``. Signers are created once per
event loop and options (so their token caches are shared by every task of a process) and closed with the
loop's storage adapters (:func:`~rasteret_dask.io.stores.close_stores`, and at exit). ``sign`` raises
:class:`~rasteret_dask.io.stores.StoreError` when it cannot sign; the reader retries it like a failed
GET when ``retryable`` is set.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable
from urllib.parse import parse_qsl, urlsplit

from .config import KiB
from .loop import loop_state
from .stores import SIGNING_KEYS, StoreError, _describe, _freeze

SIGNER_KEY, SIGNER_OPTIONS_KEY = SIGNING_KEYS


@runtime_checkable
class Signer(Protocol):
    """Turns a URL into one the store accepts right now (e.g. with a fresh token appended)."""

    async def sign(self, url: str) -> str:
        """The URL to request; ``url`` itself when it needs no signature."""

    async def close(self) -> None:
        """Release sessions (called when the loop's adapters are closed)."""


_FACTORIES: dict[str, Callable[[dict], Signer]] = {}


def register_signer(name: str, factory: Callable[[dict], Signer], *, overwrite: bool = False) -> None:
    """Make ``{"signer": name}`` in storage options use ``factory(signer_options)``.

    Registration is per process: on a cluster, register in a module every worker imports (or pass the
    factory itself as the ``signer`` value, which pickles by reference).
    """
    if not overwrite and name in _FACTORIES and _FACTORIES[name] is not factory:
        raise ValueError(f"a signer named {name!r} is registered already; pass overwrite=True to replace it")
    _FACTORIES[name] = factory


def signer_names() -> list[str]:
    """Names usable as ``storage_options["signer"]``."""
    return sorted(_FACTORIES)


def store_options(storage_options: dict | None) -> dict:
    """``storage_options`` without the signing keys (what a storage adapter is given)."""
    return {k: v for k, v in (storage_options or {}).items() if k not in SIGNING_KEYS}


def _factory(spec) -> Callable[[dict], Signer]:
    if isinstance(spec, str):
        try:
            return _FACTORIES[spec]
        except KeyError:
            raise ValueError(
                f"unknown signer {spec!r}; known signers: {', '.join(signer_names()) or 'none'}"
            ) from None
    if callable(spec):
        return spec
    raise ValueError(f"storage_options['signer'] must be a signer name or factory, not {type(spec).__name__}")


def check_options(storage_options: dict | None) -> None:
    """Raise ValueError now (not on a worker later) when the signing keys are unusable."""
    options = storage_options or {}
    if options.get(SIGNER_KEY) is not None:
        _factory(options[SIGNER_KEY])
    extra = options.get(SIGNER_OPTIONS_KEY)
    if extra is not None and not isinstance(extra, dict):
        raise ValueError("storage_options['signer_options'] must be a dict")


async def get_signer(storage_options: dict | None) -> Signer | None:
    """The running loop's signer for these storage options, or None when they name none."""
    options = storage_options or {}
    spec = options.get(SIGNER_KEY)
    if spec is None:
        return None
    extra = dict(options.get(SIGNER_OPTIONS_KEY) or {})
    key = (_freeze(spec), _freeze(extra))
    signers = loop_state().setdefault("signers", {})
    signer = signers.get(key)
    if signer is None:
        check_options(options)
        signer = signers[key] = _factory(spec)(extra)
    return signer


# ------------------------------------------------------------------------------- Planetary Computer

PC_TOKEN_URL = "https://planetarycomputer.microsoft.com/api/sas/v1/token"
PC_SUBSCRIPTION_KEY_ENV = "PC_SDK_SUBSCRIPTION_KEY"
_AZURE_BLOB_SUFFIX = ".blob.core.windows.net"
_TOKEN_BODY_LIMIT = 64 * KiB


@dataclass(frozen=True)
class _Token:
    token: str
    expiry: float  # POSIX seconds
    renew_at: float  # POSIX seconds


def _parse_expiry(value) -> float:
    try:
        stamp = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise StoreError(
            None, False, f"SAS token endpoint sent an unreadable msft:expiry {value!r}"
        ) from None
    if stamp.tzinfo is None:
        raise StoreError(None, False, f"SAS token endpoint sent msft:expiry without a time zone: {value!r}")
    return stamp.timestamp()


class PlanetaryComputerSigner:
    """Appends Planetary Computer SAS tokens to Azure Blob URLs, one token per (account, container).

    Options (``storage_options["signer_options"]``):

    - ``token_url``: base of the token service, default ``PC_TOKEN_URL``; the token of a container is
      ``GET {token_url}/{account}/{container}`` answering ``{"token": ..., "msft:expiry": ...}``.
    - ``refresh_margin``: seconds before its expiry a token is renewed (default 300; at most half of a
      token's lifetime, so short-lived tokens are still reused).
    - ``path_style_hosts``: ``host:port`` values of Azure emulators (Azurite) and stand-ins whose URLs
      are ``http://host/{account}/{container}/{blob}``; otherwise only ``https://{account}.blob.core.
      windows.net/{container}/{blob}`` URLs are signed.
    - ``timeout``: seconds for one token request (default 30).

    A subscription key, if any, comes from the worker's ``PC_SDK_SUBSCRIPTION_KEY`` environment variable
    and is sent as ``Ocp-Apim-Subscription-Key``. URLs that carry a ``sig`` parameter already and URLs of
    other hosts are returned unchanged.
    """

    def __init__(self, options: dict | None = None):
        options = dict(options or {})
        unknown = set(options) - {"token_url", "refresh_margin", "path_style_hosts", "timeout"}
        if unknown:
            raise ValueError(f"unknown planetary_computer signer option(s): {sorted(unknown)}")
        self.token_url = str(options.get("token_url") or PC_TOKEN_URL).rstrip("/")
        self.refresh_margin = float(options.get("refresh_margin", 300.0))
        self.path_style_hosts = frozenset(str(h).lower() for h in options.get("path_style_hosts") or ())
        self.timeout = float(options.get("timeout", 30.0))
        self._tokens: dict[tuple[str, str], _Token] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._session = None

    def container_of(self, url: str) -> tuple[str, str] | None:
        """``(account, container)`` of a blob URL this signer signs, None for any other URL."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            return None
        host = parts.netloc.rpartition("@")[2].lower()
        segments = [s for s in parts.path.split("/") if s]
        if host.split(":")[0].endswith(_AZURE_BLOB_SUFFIX) and len(segments) >= 2:
            return host.split(".", 1)[0], segments[0]
        if host in self.path_style_hosts and len(segments) >= 3:
            return segments[0], segments[1]
        return None

    async def sign(self, url: str) -> str:
        where = self.container_of(url)
        if where is None:
            return url
        query = urlsplit(url).query
        if any(k == "sig" for k, _ in parse_qsl(query, keep_blank_values=True)):
            return url
        token = await self._token(where)
        return f"{url}{'&' if query else '?'}{token}"

    async def _token(self, where: tuple[str, str]) -> str:
        cached = self._tokens.get(where)
        if cached is not None and time.time() < cached.renew_at:
            return cached.token
        lock = self._locks.setdefault(where, asyncio.Lock())
        async with lock:  # one request per container, however many reads wait for it
            cached = self._tokens.get(where)
            if cached is not None and time.time() < cached.renew_at:
                return cached.token
            fetched = await self._fetch(*where)
            self._tokens[where] = fetched
            return fetched.token

    async def _fetch(self, account: str, container: str) -> _Token:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        headers = {}
        key = os.environ.get(PC_SUBSCRIPTION_KEY_ENV)
        if key:
            headers["Ocp-Apim-Subscription-Key"] = key
        asked = time.time()
        try:
            async with self._session.get(f"{self.token_url}/{account}/{container}", headers=headers) as resp:
                body = await resp.content.read(_TOKEN_BODY_LIMIT + 1)
                status = resp.status
        except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
            raise StoreError(None, True, f"SAS token request failed: {_describe(exc)}") from None
        if status != 200:
            retryable = status in (408, 429) or status >= 500
            raise StoreError(status, retryable, f"SAS token request for {account}/{container}: HTTP {status}")
        if len(body) > _TOKEN_BODY_LIMIT:
            raise StoreError(None, False, "SAS token endpoint sent an oversized answer")
        try:
            payload = json.loads(body)
            token, expiry = str(payload["token"]), _parse_expiry(payload["msft:expiry"])
        except (ValueError, KeyError, TypeError):
            raise StoreError(None, False, "SAS token endpoint sent no token and msft:expiry") from None
        token = token.lstrip("?")
        margin = min(self.refresh_margin, max(0.0, (expiry - asked) / 2))
        return _Token(token, expiry, expiry - margin)

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


register_signer("planetary_computer", PlanetaryComputerSigner)
