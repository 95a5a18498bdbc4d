"""Settings of the byte-range reader and the identity of a remote file (frozen, picklable values)."""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB

# Requests in flight per host when IOConfig.per_host_concurrency is None. Object stores (and the HTTPS
# endpoints in front of them, where most asset URLs point) scale with request rate.
DEFAULT_CONCURRENCY = {"http": 64, "https": 64, "s3": 64, "gs": 64, "file": 16, "memory": 16}


@dataclass(frozen=True)
class IOConfig:
    """How byte ranges are merged, fetched and retried.

    Attributes
    ----------
    max_gap
        Bytes between two ranges of one file worth fetching to save a request. 64 KiB costs about
        a millisecond at 50 MB/s, less than the round trip it saves.
    max_merged_size
        Largest merged request in bytes; one range longer than this is still fetched whole.
    per_host_concurrency
        Requests in flight per host (per process and event loop). None uses ``DEFAULT_CONCURRENCY``
        for the URL's protocol (64 for HTTP, S3 and GCS; 16 for local files).
    max_attempts
        Attempts per request, the first included, before a transient failure is final.
    base_delay, max_delay
        Backoff in seconds: before attempt ``n + 1`` sleep uniformly in ``[0, min(max_delay,
        base_delay * 2**(n - 1))]`` ("full jitter"); a server's ``Retry-After`` raises the floor, still
        capped by ``max_delay``.
    total_timeout
        Seconds one request may take over all its attempts and sleeps; no retry starts after it.
    request_timeout
        Seconds one attempt may take, from waiting for a connection to the last body byte.
    """

    max_gap: int = 64 * KiB
    max_merged_size: int = 16 * MiB
    per_host_concurrency: int | None = None
    max_attempts: int = 5
    base_delay: float = 0.1
    max_delay: float = 5.0
    total_timeout: float = 120.0
    request_timeout: float = 30.0

    def __post_init__(self):
        if self.max_gap < 0 or self.max_merged_size <= 0:
            raise ValueError("IOConfig needs max_gap >= 0 and max_merged_size > 0")
        if self.per_host_concurrency is not None and self.per_host_concurrency < 1:
            raise ValueError("IOConfig.per_host_concurrency must be at least 1 (or None for the default)")
        if self.max_attempts < 1:
            raise ValueError("IOConfig.max_attempts must be at least 1")
        if min(self.base_delay, self.max_delay) < 0 or min(self.total_timeout, self.request_timeout) <= 0:
            raise ValueError("IOConfig delays must be >= 0 and timeouts > 0")

    def concurrency_for(self, protocol: str) -> int:
        """Requests allowed in flight per host for ``protocol`` ("http", "s3", ...)."""
        if self.per_host_concurrency is not None:
            return self.per_host_concurrency
        return DEFAULT_CONCURRENCY.get(protocol, 32)


@dataclass(frozen=True)
class FileIdentity:
    """What storage says about a file, to notice that it changed.

    Attributes
    ----------
    size
        Total size in bytes (an HTTP ``Content-Range`` total, an object's size, ``st_size``).
    etag
        The ETag exactly as the server sent it (quotes included), None when it sends none.
    last_modified
        An opaque string compared for equality only: the ``Last-Modified`` header for HTTP and GCS,
        the object's LastModified as an HTTP date for S3, the ISO 8601 UTC mtime (microseconds) for local
        files.
    """

    size: int | None = None
    etag: str | None = None
    last_modified: str | None = None

    def mismatch(self, actual: FileIdentity) -> str | None:
        """Why ``actual`` is not the file this identity describes, or None when nothing contradicts it.

        Only fields known on both sides are compared. Last-Modified is compared only when this
        identity has no ETag: an ETag names the content, a date may move without it (CDN copies).
        """
        reasons = []
        if self.size is not None and actual.size is not None and self.size != actual.size:
            reasons.append(f"size {actual.size} bytes, expected {self.size}")
        if self.etag is not None and actual.etag is not None and self.etag != actual.etag:
            reasons.append(f"ETag {actual.etag}, expected {self.etag}")
        if (
            self.etag is None
            and self.last_modified is not None
            and actual.last_modified is not None
            and self.last_modified != actual.last_modified
        ):
            reasons.append(f"last modified {actual.last_modified}, expected {self.last_modified}")
        return "; ".join(reasons) or None
