"""Storage adapters: one ranged GET (or local read) per call, answering bytes and the file's identity.

Every adapter has

- ``async get_range(path, start, stop, expect) -> (body, FileIdentity)``: the bytes
  ``[start, min(stop, size))``. A body may come back shorter (end of file, or a truncated response):
  the caller checks lengths. ``expect`` with a strong ETag is sent as ``If-Match`` (HTTP, S3, GCS).
- ``async info(path) -> FileIdentity``.

Failures are raised as :class:`StoreError` (HTTP-like status, whether a retry may help, a reason
free of credentials and URLs); the reader turns them into the public errors. Adapters never retry:
the reader does, once, for every protocol (s3fs's and botocore's own retries are switched off).

Adapters are cached per event loop, keyed by protocol and the (frozen) storage options, so a
process reuses connections. Storage options are plain dicts resolved here, where the read runs.

Protocols and their storage options:

- local paths and ``file://`` (options ignored); the path after ``file://`` is used as is (no
  percent-decoding), as fsspec does.
- ``memory://``: fsspec's process-global ``MemoryFileSystem`` (options ignored).
- ``http://``, ``https://``: our own aiohttp session (not fsspec's ``HTTPFileSystem``, whose reads hide
  ``Content-Range`` and ``ETag``); options ``headers`` (dict sent with every request) and
  ``client_kwargs`` (passed to ``aiohttp.ClientSession``); other keys are ignored.
- ``s3://``, ``s3a://``: s3fs ``S3FileSystem(**options)`` (``anon``, ``key``/``secret``/``token``,
  ``endpoint_url``, ``client_kwargs``, ``config_kwargs``, ``requester_pays``, ...), reads through
  its ``_call_s3("get_object", ...)``.
- ``gs://``, ``gcs://``: gcsfs ``GCSFileSystem(**options)`` (``token``, ``project``, ``endpoint_url``,
  ``requester_pays``, ...); its aiohttp session and auth headers, our ranged GET of the media URL.
- any protocol: ``signer`` and ``signer_options`` configure URL signing at read time
  (:mod:`rasteret_dask.io.signing`); they are removed before an adapter sees the options.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import pickle
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

from .config import FileIdentity, KiB
from .loop import loop_state, on_shutdown


class StoreError(Exception):
    """One attempt failed (internal: the reader retries or converts it).

    Attributes
    ----------
    status
        HTTP status (404 for a missing local file), None for transport failures.
    retryable
        Whether the same request may succeed later (5xx, 429, timeouts, resets).
    reason
        A short text without URL or credentials.
    retry_after
        Seconds the server asked to wait (``Retry-After``), if it did.
    """

    def __init__(self, status: int | None, retryable: bool, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.status, self.retryable, self.reason, self.retry_after = status, retryable, reason, retry_after


@dataclass(frozen=True)
class Location:
    """Where a URL points: ``protocol`` family, ``path`` for the adapter, ``host`` for concurrency limits."""

    protocol: str
    path: str
    host: str


_SCHEMES = {"file": "file", "memory": "memory", "http": "http", "https": "https"}
_SCHEMES.update({"s3": "s3", "s3a": "s3", "gs": "gs", "gcs": "gs"})


def locate(url: str) -> Location:
    """Split a URL or local path into the adapter protocol, its path, and the host to throttle."""
    url = os.fspath(url)
    scheme, sep, rest = url.partition("://")
    if not sep or len(scheme) == 1:  # a plain path (or a Windows drive letter)
        return Location("file", url, "file")
    protocol = _SCHEMES.get(scheme.lower())
    if protocol is None:
        raise ValueError(f"unsupported URL scheme {scheme!r}: use a path, file, memory, http(s), s3 or gs")
    if protocol in ("http", "https"):
        netloc = urlsplit(url).netloc.rpartition("@")[2]
        return Location(protocol, url, f"{protocol}://{netloc}")
    if protocol in ("s3", "gs"):
        bucket = rest.split("/", 1)[0]
        if not bucket or "/" not in rest:
            raise ValueError(f"{scheme}:// URL needs a bucket and a key: {safe_url(url)}")
        return Location(protocol, rest, f"{protocol}://{bucket}")
    return Location(protocol, rest, protocol)


_SECRET_QUERY = re.compile(r"sig|token|key|cred|secret|auth|pass|policy", re.IGNORECASE)


def safe_url(url: str) -> str:
    """``url`` fit for messages: no user:password, and secret-looking query values replaced by ``***``."""
    url = os.fspath(url)
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("?", 1)[0]
    netloc = parts.netloc.rpartition("@")[2]
    query = "&".join(
        f"{k}=***" if sep and _SECRET_QUERY.search(k) else f"{k}{sep}{v}"
        for k, sep, v in (item.partition("=") for item in parts.query.split("&") if item)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _freeze(value):
    """A hashable stand-in for a storage-options value (dicts order-insensitive)."""
    if isinstance(value, dict):
        return ("dict", tuple(sorted((str(k), _freeze(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return ("seq", tuple(_freeze(v) for v in value))
    try:
        hash(value)
        return value
    except TypeError:
        try:
            return ("pickle", pickle.dumps(value))
        except Exception:  # unpicklable: cache per object
            return ("id", id(value))


def _strong_etag(expect: FileIdentity | None) -> str | None:
    """The ETag to send as If-Match: weak ETags never match under If-Match's strong comparison."""
    if expect is None or not expect.etag or expect.etag.startswith("W/"):
        return None
    return expect.etag


def _http_date(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return email.utils.format_datetime(value.astimezone(UTC), usegmt=True)


def _describe(exc: BaseException) -> str:
    """Type and OS error text of a transport exception, never its URL or request headers."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    return type(exc).__name__


# ----------------------------------------------------------------------------------------- local files


def _iso_mtime(st: os.stat_result) -> str:
    return datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=UTC).isoformat()


def _local_error(exc: OSError) -> StoreError:
    if isinstance(exc, FileNotFoundError):
        return StoreError(404, False, "file not found")
    if isinstance(exc, PermissionError):
        return StoreError(403, False, "permission denied")
    return StoreError(None, False, _describe(exc))


def _read_local(path: str, start: int, stop: int) -> tuple[bytes, FileIdentity]:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise _local_error(exc) from None
    try:
        st = os.fstat(fd)
        n = max(0, min(stop, st.st_size) - start)
        chunks, got = [], 0
        while got < n:  # pread may return less than asked (signals, odd filesystems)
            chunk = os.pread(fd, n - got, start + got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    except OSError as exc:
        raise _local_error(exc) from None
    finally:
        os.close(fd)
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    return body, FileIdentity(st.st_size, None, _iso_mtime(st))


def _stat_local(path: str) -> FileIdentity:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _local_error(exc) from None
    return FileIdentity(st.st_size, None, _iso_mtime(st))


class LocalStore:
    """Local files, read with ``os.pread`` in the default thread pool. Identity: size and mtime."""

    async def get_range(self, path, start, stop, expect=None):
        return await asyncio.to_thread(_read_local, path, start, stop)

    async def info(self, path):
        return await asyncio.to_thread(_stat_local, path)

    async def close(self):
        pass


class MemoryStore:
    """fsspec's in-memory filesystem (synchronous, it is memory). Identity: size only."""

    def __init__(self):
        import fsspec

        self.fs = fsspec.filesystem("memory")

    async def get_range(self, path, start, stop, expect=None):
        identity = await self.info(path)
        end = min(stop, identity.size)
        body = self.fs.cat_file(path, start=start, end=end) if end > start else b""
        return body, identity

    async def info(self, path):
        try:
            return FileIdentity(int(self.fs.info(path)["size"]))
        except FileNotFoundError:
            raise StoreError(404, False, "file not found") from None

    async def close(self):
        pass


# ---------------------------------------------------------------------------------------------- HTTP

_CONTENT_RANGE = re.compile(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_UNSATISFIED = re.compile(r"\s*bytes\s+\*/(\d+)\s*$", re.IGNORECASE)
_ERROR_BODY_LIMIT = 64 * KiB
_REASONS = {
    401: "not authorised",
    403: "access denied",
    404: "file not found",
    410: "file not found (gone)",
    412: "precondition failed: the file's ETag differs from the expected one",
}


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _status_error(status: int, reason: str | None, retry_after: float | None = None) -> StoreError:
    retryable = status in (408, 429) or status >= 500
    return StoreError(status, retryable, _REASONS.get(status) or reason or "HTTP error", retry_after)


async def _read_stream(stream, limit: int) -> bytes:
    """Up to ``limit`` bytes of a body stream: ``read(n)`` returns what has arrived, possibly fewer."""
    chunks, got = [], 0
    while got < limit:
        chunk = await stream.read(limit - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _read_at_most(resp, limit: int) -> bytes:
    """Read a body but never more than ``limit`` bytes (a server may send more than it was asked)."""
    length = resp.content_length
    if length is not None and length <= limit:
        return await resp.read()  # raises ClientPayloadError when fewer bytes than announced arrive
    body = await _read_stream(resp.content, limit)
    if not resp.content.at_eof():
        resp.close()  # unread bytes left: this connection cannot be reused
    return body


async def _interpret(resp, start: int, stop: int) -> tuple[bytes, FileIdentity]:
    headers = resp.headers
    identity = FileIdentity(None, headers.get("ETag"), headers.get("Last-Modified"))
    status = resp.status
    if status == 206:
        match = _CONTENT_RANGE.match(headers.get("Content-Range", ""))
        if match is None:
            raise StoreError(206, False, "partial response without a valid Content-Range header")
        first, last, total = int(match[1]), int(match[2]), match[3]
        if first != start or last < first:
            asked = f"{start}-{stop - 1}"
            raise StoreError(206, False, f"server sent bytes {first}-{last} for a request of {asked}")
        size = None if total == "*" else int(total)
        body = await _read_at_most(resp, min(last + 1, stop) - start)
        return body, FileIdentity(size, identity.etag, identity.last_modified)
    if status == 200:  # the server ignored Range: read the prefix we need, drop the rest
        body = await _read_at_most(resp, stop)
        if resp.content_length is not None and "Content-Encoding" not in headers:
            size = resp.content_length
        else:
            size = len(body) if len(body) < stop else None
        return body[start:stop], FileIdentity(size, identity.etag, identity.last_modified)
    await _read_at_most(resp, _ERROR_BODY_LIMIT)  # let the connection be reused
    if status == 416:
        match = _UNSATISFIED.match(headers.get("Content-Range", ""))
        if match is not None:  # the range starts at or past the end: an empty answer, size known
            return b"", FileIdentity(int(match[1]), identity.etag, identity.last_modified)
    raise _status_error(status, resp.reason, _retry_after(headers.get("Retry-After")))


async def _ranged_get(session, url, start, stop, headers, params=None, expect=None):
    import aiohttp

    request_headers = dict(headers or {})
    request_headers["Range"] = f"bytes={start}-{stop - 1}"
    request_headers["Accept-Encoding"] = "identity"
    etag = _strong_etag(expect)
    if etag is not None:
        request_headers["If-Match"] = etag
    try:
        async with session.get(url, headers=request_headers, params=params) as resp:
            return await _interpret(resp, start, stop)
    except StoreError:
        raise
    except (aiohttp.ClientConnectorCertificateError, aiohttp.InvalidURL, aiohttp.TooManyRedirects) as exc:
        raise StoreError(None, False, _describe(exc)) from None
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionError) as exc:
        raise StoreError(None, True, _describe(exc)) from None
    except aiohttp.ClientError as exc:
        raise StoreError(None, False, _describe(exc)) from None


class HTTPStore:
    """Plain HTTP(S) servers: ranged GETs on one aiohttp session per loop and options."""

    def __init__(self, options: dict):
        import aiohttp

        self.headers = dict(options.get("headers") or {})
        client_kwargs = dict(options.get("client_kwargs") or {})
        client_kwargs.setdefault("timeout", aiohttp.ClientTimeout(total=None))  # the reader bounds time
        client_kwargs.setdefault("auto_decompress", False)  # bytes as stored: lengths match Content-Range
        if "connector" not in client_kwargs:
            # No connection cap here: IOConfig's per-host semaphores bound requests in flight.
            client_kwargs["connector"] = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        self.session = aiohttp.ClientSession(**client_kwargs)

    async def get_range(self, path, start, stop, expect=None):
        return await _ranged_get(self.session, path, start, stop, self.headers, expect=expect)

    async def info(self, path):
        """Identity from a one-byte ranged GET (works where HEAD is not allowed, e.g. signed URLs)."""
        return (await self.get_range(path, 0, 1))[1]

    async def close(self):
        await self.session.close()


# ------------------------------------------------------------------------------------------------ S3

_S3_RETRY_CODES = {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling"}


def _s3_error(exc: BaseException) -> StoreError:
    from botocore.exceptions import ClientError, HTTPClientError, IncompleteReadError

    cause = exc if isinstance(exc, ClientError) else exc.__cause__
    if isinstance(cause, ClientError):
        response = cause.response or {}
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "NotFound"):
            status = 404
        if code == "NoSuchBucket":
            return StoreError(404, False, "bucket not found")
        if status is None:
            return StoreError(None, code in _S3_RETRY_CODES, code or "S3 error")
        error = _status_error(int(status), code)
        error.retryable = error.retryable or code in _S3_RETRY_CODES
        return error
    retryable = (
        HTTPClientError,
        IncompleteReadError,
        ConnectionError,
        asyncio.TimeoutError,
        asyncio.IncompleteReadError,
    )
    try:
        import aiohttp

        retryable += (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)
    except ImportError:  # pragma: no cover - aiobotocore needs aiohttp
        pass
    return StoreError(None, isinstance(exc, retryable), _describe(exc))


def _s3_invalid_range_size(exc: BaseException) -> int | None:
    """The object size S3 reports in a 416 InvalidRange error body, if present."""
    from botocore.exceptions import ClientError

    cause = exc if isinstance(exc, ClientError) else exc.__cause__
    if not isinstance(cause, ClientError):
        return None
    error = (cause.response or {}).get("Error", {})
    status = (cause.response or {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
    if error.get("Code") != "InvalidRange" and status != 416:
        return None
    size = error.get("ActualObjectSize")
    return int(size) if size is not None and str(size).isdigit() else None


class S3Store:
    """S3 and compatible stores through s3fs (its session, credentials and endpoint handling)."""

    def __init__(self, fs):
        self.fs = fs

    @classmethod
    async def create(cls, options: dict) -> S3Store:
        import s3fs

        options = dict(options)
        config_kwargs = dict(options.pop("config_kwargs", None) or {})
        config_kwargs.setdefault("retries", {"total_max_attempts": 1})  # the reader retries
        fs = s3fs.S3FileSystem(
            asynchronous=True,
            loop=asyncio.get_running_loop(),
            skip_instance_cache=True,
            config_kwargs=config_kwargs,
            **options,
        )
        fs.retries = 1  # s3fs's own retry loop, off for the same reason
        await fs.set_session()
        return cls(fs)

    async def get_range(self, path, start, stop, expect=None):
        bucket, key, version = self.fs.split_path(path)
        kwargs = {"Bucket": bucket, "Key": key, "Range": f"bytes={start}-{stop - 1}"}
        if version:
            kwargs["VersionId"] = version
        etag = _strong_etag(expect)
        if etag is not None:
            kwargs["IfMatch"] = etag
        try:
            resp = await self.fs._call_s3("get_object", **kwargs)
            stream = resp["Body"]
            try:
                body = await _read_stream(stream, stop - start)
            finally:
                stream.close()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # classified below
            size = _s3_invalid_range_size(exc)
            if size is not None:
                return b"", FileIdentity(size)
            raise _s3_error(exc) from None
        match = _CONTENT_RANGE.match(resp.get("ContentRange") or "")
        if match is not None and match[3] != "*":
            size = int(match[3])
        elif not resp.get("ContentRange"):  # a whole-object answer: the length is the size
            size = resp.get("ContentLength")
        else:
            size = None
        return body, FileIdentity(size, resp.get("ETag"), _http_date(resp.get("LastModified")))

    async def info(self, path):
        bucket, key, version = self.fs.split_path(path)
        kwargs = {"Bucket": bucket, "Key": key}
        if version:
            kwargs["VersionId"] = version
        try:
            resp = await self.fs._call_s3("head_object", **kwargs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # classified below
            raise _s3_error(exc) from None
        return FileIdentity(resp.get("ContentLength"), resp.get("ETag"), _http_date(resp.get("LastModified")))

    async def close(self):
        # s3fs registers no finaliser for asynchronous instances: exit its client ourselves.
        creator = getattr(self.fs, "_s3creator", None)
        if creator is not None:
            await creator.__aexit__(None, None, None)


# ----------------------------------------------------------------------------------------------- GCS


class GCSStore:
    """Google Cloud Storage through gcsfs (session, credentials, endpoint), our own ranged media GET."""

    def __init__(self, fs):
        self.fs = fs

    @classmethod
    async def create(cls, options: dict) -> GCSStore:
        import gcsfs

        loop = asyncio.get_running_loop()

        def make():
            # Credential discovery may block on the network (metadata server): not on the loop.
            return gcsfs.GCSFileSystem(asynchronous=True, loop=loop, skip_instance_cache=True, **options)

        fs = await asyncio.to_thread(make)
        await fs._set_session()
        return cls(fs)

    async def get_range(self, path, start, stop, expect=None):
        fs = self.fs
        session = await fs._set_session()
        return await _ranged_get(
            session, fs.url(path), start, stop, fs._get_headers(None), fs._get_params({}), expect
        )

    async def info(self, path):
        """Identity from a one-byte ranged GET, so that it matches what reads see (same headers)."""
        return (await self.get_range(path, 0, 1))[1]

    async def close(self):
        session = getattr(self.fs, "_session", None)
        if session is not None and not session.closed:
            await session.close()


# ------------------------------------------------------------------------------------------- caching


async def _create(protocol: str, options: dict):
    if protocol == "file":
        return LocalStore()
    if protocol == "memory":
        return MemoryStore()
    if protocol in ("http", "https"):
        return HTTPStore(options)
    if protocol == "s3":
        return await S3Store.create(options)
    if protocol == "gs":
        return await GCSStore.create(options)
    raise ValueError(f"no storage adapter for protocol {protocol!r}")


# Storage-options keys that configure URL signing (rasteret_dask.io.signing), never an adapter.
SIGNING_KEYS = ("signer", "signer_options")


async def get_store(protocol: str, storage_options: dict | None = None):
    """The adapter for ``protocol`` and ``storage_options``, created once per event loop.

    The signing keys (``SIGNING_KEYS``) are not the adapter's: they are dropped here.
    """
    options = {k: v for k, v in (storage_options or {}).items() if k not in SIGNING_KEYS}
    if protocol in ("file", "memory"):
        options = {}
    elif protocol in ("http", "https"):
        protocol = "http"  # one session serves both
    key = (protocol, _freeze(options))
    stores = loop_state().setdefault("stores", {})
    task = stores.get(key)
    if task is None:
        task = stores[key] = asyncio.ensure_future(_create(protocol, options))
    try:
        return await asyncio.shield(task)  # one caller's cancellation must not kill a shared creation
    except asyncio.CancelledError:
        raise
    except BaseException:
        if stores.get(key) is task:
            del stores[key]  # failed creation: try again next time
        raise


def host_semaphore(host: str, limit: int) -> asyncio.Semaphore:
    """The semaphore bounding requests in flight to ``host`` on the running loop."""
    semaphores = loop_state().setdefault("semaphores", {})
    sem = semaphores.get((host, limit))
    if sem is None:
        sem = semaphores[(host, limit)] = asyncio.Semaphore(limit)
    return sem


async def _close_stores(state: dict) -> None:
    stores = state.pop("stores", {})
    for task in stores.values():
        if task.done() and not task.cancelled() and task.exception() is None:
            await task.result().close()
    for signer in state.pop("signers", {}).values():  # URL signers (io.signing) hold sessions too
        await signer.close()


async def close_stores() -> None:
    """Close and forget the adapters and URL signers of the running loop (their HTTP sessions).

    The process's own I/O loop does this at exit; call it before closing an event loop of your own
    on which ``*_async`` functions ran, to avoid "unclosed client session" warnings.
    """
    await _close_stores(loop_state())


on_shutdown(_close_stores)
