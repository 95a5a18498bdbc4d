"""Public byte-range reading: merge, fetch concurrently, retry, verify, split.

>>> read_ranges("https://example.com/a.tif", [(0, 16), (1024, 2048)])          # doctest: +SKIP
[b'II*\\x00...', <memory at 0x...>]

Guarantees, for every protocol (local, memory, HTTP(S), S3, GCS):

- ranges of one file are merged when the gap is at most ``IOConfig.max_gap`` and split back, so
  each caller gets exactly its bytes, in its order;
- requests in flight are bounded per host (``IOConfig.concurrency_for``) on each event loop;
- transient failures (HTTP 5xx, 408, 429, timeouts, resets and disconnects, truncated bodies) are
  retried with exponential backoff and full jitter, at most ``max_attempts`` times and never past
  ``total_timeout`` seconds; other failures (4xx) fail at once. Failures end as
  :class:`~rasteret_dask.errors.RangeRequestError` carrying URL, range and status (404: "file not
  found");
- every body's length is checked against the range asked for and the file's size;
- with ``expect`` (the identity recorded with a cached header), a strong ETag is sent as
  ``If-Match`` and size, ETag (or, without one, Last-Modified) are compared with what storage
  answers: a difference raises :class:`~rasteret_dask.errors.RemoteFileChangedError`. Without
  ``expect``, the answers of one call must still agree with each other.

URLs in error messages have user:password and secret-looking query values removed.

Storage options may name a signer (:mod:`rasteret_dask.io.signing`): each attempt of each request then
asks it for the URL to use just before sending, so short-lived tokens are fresh for every GET and only
the unsigned URL appears in errors.
"""

from __future__ import annotations

import asyncio
import operator
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import RangeRequestError, RemoteFileChangedError
from . import stats
from .config import FileIdentity, IOConfig
from .credentials import resolve
from .loop import gather_or_cancel, run_sync
from .ranges import Buffer, coalesce, split
from .signing import Signer, get_signer
from .stores import Location, StoreError, get_store, host_semaphore, locate, safe_url

DEFAULT_CONFIG = IOConfig()


@dataclass(frozen=True)
class RangeRequest:
    """The byte ranges wanted from one file, for :func:`read_many`.

    Attributes
    ----------
    url
        Path or URL of the file.
    ranges
        Half-open ``(start, stop)`` byte ranges.
    expect
        The file's identity recorded earlier, or None.
    """

    url: str
    ranges: tuple[tuple[int, int], ...]
    expect: FileIdentity | None = None

    def __post_init__(self):
        ranges = tuple((operator.index(a), operator.index(b)) for a, b in self.ranges)
        object.__setattr__(self, "ranges", ranges)


class _Consistency:
    """The identity a call has seen so far: every later answer must agree with it."""

    def __init__(self, url: str, expect: FileIdentity | None):
        self.url, self.expect, self.seen = url, expect, expect is not None

    def check(self, actual: FileIdentity) -> None:
        if not self.seen:
            self.expect, self.seen = actual, True
            return
        why = self.expect.mismatch(actual)
        if why is not None:
            raise RemoteFileChangedError(f"{safe_url(self.url)} changed: {why}")


def _backoff(attempt: int, config: IOConfig, retry_after: float | None) -> float:
    """Seconds to sleep after failed attempt number ``attempt`` (1-based): full jitter."""
    ceiling = min(config.max_delay, config.base_delay * 2 ** (attempt - 1))
    delay = random.uniform(0.0, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, config.max_delay))
    return delay


async def _fetch(
    store,
    where: Location,
    url: str,
    start: int,
    stop: int,
    seen: _Consistency,
    config: IOConfig,
    *,
    to_eof: bool = False,
    signer: Signer | None = None,
) -> tuple[bytes, FileIdentity]:
    """One range with retries. ``to_eof``: a body cut short by the end of the file is fine.

    With a ``signer``, every attempt signs the URL afresh (a failure to sign is retried like a GET).
    """
    sem = host_semaphore(where.host, config.concurrency_for(where.protocol))
    deadline = time.monotonic() + config.total_timeout
    attempt = 0
    status = reason = None  # of the last failed attempt that got an answer
    while True:
        attempt += 1
        retry_after, clipped, deadline_hit = None, False, False
        try:
            path = where.path if signer is None else await signer.sign(where.path)
            async with sem:
                stats.add(requests=1)
                remaining = deadline - time.monotonic()
                clipped = remaining < config.request_timeout
                async with asyncio.timeout(max(0.0, min(config.request_timeout, remaining))):
                    body, identity = await store.get_range(path, start, stop, seen.expect)
            seen.check(identity)
            wanted = stop - start if identity.size is None else max(0, min(stop, identity.size) - start)
            if len(body) < wanted:
                raise StoreError(None, True, f"truncated body: {len(body)} of {wanted} bytes")
            if not to_eof and len(body) < stop - start:
                stats.add(nbytes=len(body), failures=1)
                reason = f"the range ends past the end of the file ({identity.size} bytes)"
                raise RangeRequestError(safe_url(url), start, stop, None, reason)
            stats.add(nbytes=len(body))
            return body, identity
        except StoreError as exc:
            if exc.status == 412:
                stats.add(failures=1)
                etag = seen.expect.etag if seen.expect else None
                raise RemoteFileChangedError(
                    f"{safe_url(url)} changed: its ETag is no longer {etag}"
                ) from None
            status, retry_after, reason, retryable = exc.status, exc.retry_after, exc.reason, exc.retryable
        except TimeoutError:
            deadline_hit = clipped  # cut short by total_timeout, not by request_timeout
            if not deadline_hit:
                status, reason = None, f"timed out after {config.request_timeout} s"
            retryable = not deadline_hit
        except RemoteFileChangedError:
            stats.add(failures=1)
            raise
        delay = _backoff(attempt, config, retry_after)
        out_of_time = deadline_hit or time.monotonic() + delay >= deadline
        if not retryable or attempt >= config.max_attempts or out_of_time:
            stats.add(failures=1)
            if retryable or deadline_hit:
                why = f"total timeout of {config.total_timeout} s" if out_of_time else "max_attempts"
                reason = (
                    f"{reason or 'timed out'}; gave up after {attempt} attempt{'s' * (attempt > 1)} ({why})"
                )
            raise RangeRequestError(safe_url(url), start, stop, status, reason)
        stats.add(retries=1)
        await asyncio.sleep(delay)


async def read_ranges_async(
    url: str,
    ranges: Sequence[tuple[int, int]],
    *,
    storage_options: dict | None = None,
    expect: FileIdentity | None = None,
    config: IOConfig | None = None,
) -> list[Buffer]:
    """Fetch byte ranges of one file.

    Parameters
    ----------
    url
        Local path or ``file://``, ``memory://``, ``http(s)://``, ``s3://``, ``gs://`` URL.
    ranges
        Half-open ``(start, stop)`` byte ranges, any order, overlaps and duplicates allowed.
    storage_options
        Options of the URL's storage (see :mod:`rasteret_dask.io.stores`), a plain dict.
    expect
        The file's identity recorded earlier; a difference raises ``RemoteFileChangedError``.
    config
        Merging, concurrency and retry settings; None for the defaults.

    Returns
    -------
    list of bytes-like
        One body per range, in the order given: ``bytes``, or a read-only ``memoryview`` slice of a
        merged response (no copy; ``bytes(x)`` makes one).

    Raises
    ------
    RangeRequestError
        A range could not be fetched (after retries), or ends past the end of the file.
    RemoteFileChangedError
        The file is not the one ``expect`` describes, or changed during the call.
    """
    config = config or DEFAULT_CONFIG
    where = locate(url)
    merged = coalesce(ranges, config.max_gap, config.max_merged_size)
    storage_options = resolve(storage_options)
    store = await get_store(where.protocol, storage_options)
    signer = await get_signer(storage_options)
    seen = _Consistency(url, expect)

    async def body(m):
        if m.length == 0:
            return b""
        return (await _fetch(store, where, url, m.start, m.stop, seen, config, signer=signer))[0]

    return split(merged, await gather_or_cancel(body(m) for m in merged))


def read_ranges(
    url: str,
    ranges: Sequence[tuple[int, int]],
    *,
    storage_options: dict | None = None,
    expect: FileIdentity | None = None,
    config: IOConfig | None = None,
) -> list[Buffer]:
    """Synchronous :func:`read_ranges_async`, for any thread (runs on the process's I/O loop)."""
    return run_sync(
        read_ranges_async(url, ranges, storage_options=storage_options, expect=expect, config=config)
    )


async def read_prefix_async(
    url: str, length: int, *, storage_options: dict | None = None, config: IOConfig | None = None
) -> tuple[bytes, FileIdentity]:
    """The first ``length`` bytes of a file and its identity, in one request.

    Returns fewer bytes when the file is shorter. The identity comes from the same response: the
    total size from ``Content-Range`` (object size, ``st_size``), the ETag and Last-Modified.
    """
    if length <= 0:
        raise ValueError(f"read_prefix needs a positive length, got {length}")
    config = config or DEFAULT_CONFIG
    where = locate(url)
    storage_options = resolve(storage_options)
    store = await get_store(where.protocol, storage_options)
    signer = await get_signer(storage_options)
    seen = _Consistency(url, None)
    body, identity = await _fetch(store, where, url, 0, length, seen, config, to_eof=True, signer=signer)
    if identity.size is None and len(body) < length:  # a short body ends the file
        identity = FileIdentity(len(body), identity.etag, identity.last_modified)
    return body, identity


def read_prefix(
    url: str, length: int, *, storage_options: dict | None = None, config: IOConfig | None = None
) -> tuple[bytes, FileIdentity]:
    """Synchronous :func:`read_prefix_async`."""
    return run_sync(read_prefix_async(url, length, storage_options=storage_options, config=config))


async def read_info_async(
    url: str, *, storage_options: dict | None = None, config: IOConfig | None = None
) -> FileIdentity:
    """The identity (size, ETag, Last-Modified) of a file, without reading more than one byte."""
    config = config or DEFAULT_CONFIG
    where = locate(url)
    storage_options = resolve(storage_options)
    store = await get_store(where.protocol, storage_options)
    signer = await get_signer(storage_options)
    sem = host_semaphore(where.host, config.concurrency_for(where.protocol))
    try:
        path = where.path if signer is None else await signer.sign(where.path)
        async with sem:
            stats.add(requests=1)
            async with asyncio.timeout(config.request_timeout):
                return await store.info(path)
    except StoreError as exc:
        stats.add(failures=1)
        raise RangeRequestError(safe_url(url), 0, 1, exc.status, exc.reason) from None
    except TimeoutError:
        stats.add(failures=1)
        raise RangeRequestError(safe_url(url), 0, 1, None, "timed out") from None


def read_info(
    url: str, *, storage_options: dict | None = None, config: IOConfig | None = None
) -> FileIdentity:
    """Synchronous :func:`read_info_async`."""
    return run_sync(read_info_async(url, storage_options=storage_options, config=config))


async def read_many_async(
    requests: Sequence[RangeRequest],
    *,
    storage_options: dict | None = None,
    config: IOConfig | None = None,
) -> list[list[Buffer]]:
    """Fetch the ranges of several files concurrently; one list of bodies per request, in order.

    All files share ``storage_options``; each request's ranges are merged separately (ranges of the
    same file in two requests are not merged together). The first failure cancels the rest.
    """
    return await gather_or_cancel(
        read_ranges_async(r.url, r.ranges, storage_options=storage_options, expect=r.expect, config=config)
        for r in requests
    )


def read_many(
    requests: Sequence[RangeRequest],
    *,
    storage_options: dict | None = None,
    config: IOConfig | None = None,
) -> list[list[Buffer]]:
    """Synchronous :func:`read_many_async`: one trip to the I/O loop for a whole batch of files."""
    return run_sync(read_many_async(requests, storage_options=storage_options, config=config))
