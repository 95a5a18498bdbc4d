"""The exception hierarchy (DESIGN.md §6). Every error the library raises on purpose is one of these."""

from __future__ import annotations


class RasteretDaskError(Exception):
    """Base class of every error raised by rasteret_dask."""


class TiffError(RasteretDaskError):
    """The TIFF bytes cannot be turned into a header or pixels."""


class TruncatedTiffError(TiffError):
    """The file ends before a structure it announces (an IFD, a tag value, a tile)."""


class MalformedTiffError(TiffError):
    """The bytes break the TIFF specification (bad magic, IFD loop, absurd counts, ...)."""


class UnsupportedTiffError(TiffError):
    """A valid TIFF uses a feature this library does not read; the message names the feature."""


class ReadError(RasteretDaskError):
    """Bytes could not be fetched from storage."""


class RangeRequestError(ReadError):
    """A byte-range request failed for good (after any retries)."""

    def __init__(self, url: str, start: int, stop: int, status: int | None, reason: str):
        self.url, self.start, self.stop, self.status, self.reason = url, start, stop, status, reason
        status_text = f"status {status}" if status is not None else "no status"
        super().__init__(f"range request for {url} bytes {start}-{stop - 1} failed ({status_text}): {reason}")

    def __reduce__(self):
        return type(self), (self.url, self.start, self.stop, self.status, self.reason)


class RemoteFileChangedError(ReadError):
    """The remote file differs (size, ETag, modification time) from the header cached at build time."""


class CollectionError(RasteretDaskError):
    """A collection is missing, inconsistent or cannot be written."""


class SchemaError(CollectionError):
    """A table lacks the columns or types a collection needs; the message names them."""


class PlanError(RasteretDaskError):
    """A read cannot be planned from the request (bad window, band, grid or AOI)."""
