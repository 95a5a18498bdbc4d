"""Raw TIFF structure: the file header, the IFD chain and tag values, from whatever bytes are known.

Nothing here performs I/O. The bytes of a file are held in a :class:`FileBytes` (the chunks fetched so
far); a read of bytes that are not there raises :class:`MissingBytes`, which the header parser collects
into a request for exactly those ranges. Every count read from the file is checked against the file's
size before anything is allocated.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass

import numpy as np

from ..errors import MalformedTiffError, TruncatedTiffError
from .tags import FIELD_TYPES, field_type_size

MAX_IFDS = 4096
MAX_TAGS_PER_IFD = 4096
# Without a known file size, no single tag value may claim more than this.
MAX_VALUE_BYTES_UNKNOWN_SIZE = 1 << 30
# A structure larger than the whole file is malformed, unless it is small enough that the file may simply
# have been cut off (a truncated download): then it is truncation.
TRUNCATION_SLACK = 1 << 24


class MissingBytes(Exception):
    """Raised inside the parser when it needs bytes [start, stop) that have not been fetched."""

    def __init__(self, start: int, stop: int):
        super().__init__(start, stop)
        self.start, self.stop = start, stop


class FileBytes:
    """The known byte ranges of one file.

    Parameters
    ----------
    file_size
        Total size of the file in bytes, when known. Reads past it raise
        :class:`~rasteret_dask.errors.TruncatedTiffError`; counts that could not fit in it raise
        :class:`~rasteret_dask.errors.MalformedTiffError`.
    """

    def __init__(self, file_size: int | None = None):
        self.file_size = file_size
        self._starts: list[int] = []
        self._chunks: list[bytes] = []

    @classmethod
    def from_prefix(cls, data: bytes, file_size: int | None = None) -> FileBytes:
        fb = cls(file_size)
        fb.add(0, data)
        return fb

    def add(self, start: int, data: bytes) -> None:
        """Record that the file holds ``data`` at offset ``start``."""
        if not data:
            return
        i = bisect.bisect_left(self._starts, start)
        self._starts.insert(i, start)
        self._chunks.insert(i, bytes(data))

    def get(self, start: int, length: int) -> bytes:
        """The bytes [start, start + length), or raise MissingBytes / TruncatedTiffError."""
        stop = start + length
        if start < 0 or length < 0:
            raise MalformedTiffError(f"negative offset or length ({start}, {length})")
        if self.file_size is not None and stop > self.file_size:
            raise TruncatedTiffError(
                f"the file ends at byte {self.file_size}, but a structure needs bytes {start}-{stop - 1}"
            )
        i = bisect.bisect_right(self._starts, start) - 1
        # Chunks may overlap; any single chunk covering the whole span serves it.
        for j in range(i, -1, -1):
            chunk_start, chunk = self._starts[j], self._chunks[j]
            if chunk_start <= start and chunk_start + len(chunk) >= stop:
                return chunk[start - chunk_start : stop - chunk_start]
        raise MissingBytes(start, stop)

    def check_span(self, offset: int, nbytes: int, what: str) -> None:
        """Reject a (offset, size) pair that cannot lie inside the file, before anything is allocated.

        A claim beyond any plausible file is malformed; one that merely runs past this file's end is
        truncation (a cut-off download looks exactly like that).
        """
        limit = (
            MAX_VALUE_BYTES_UNKNOWN_SIZE if self.file_size is None else max(self.file_size, TRUNCATION_SLACK)
        )
        if nbytes > limit:
            raise MalformedTiffError(f"{what} claims {nbytes} bytes")
        if self.file_size is not None and offset + nbytes > self.file_size:
            raise TruncatedTiffError(
                f"{what} at byte {offset} ({nbytes} bytes) runs past the end of the file ({self.file_size})"
            )


@dataclass(frozen=True)
class TiffLayout:
    """What the 8- or 16-byte file header says."""

    byteorder: str
    bigtiff: bool
    first_ifd: int

    @property
    def offset_format(self) -> str:
        return self.byteorder + ("Q" if self.bigtiff else "I")

    @property
    def offset_size(self) -> int:
        return 8 if self.bigtiff else 4

    @property
    def entry_size(self) -> int:
        return 20 if self.bigtiff else 12

    @property
    def count_size(self) -> int:
        return 8 if self.bigtiff else 2


@dataclass(frozen=True)
class TagEntry:
    """One IFD entry: its value lives inline at ``value_offset`` or out of line at the offset stored there."""

    code: int
    field_type: int
    count: int
    value_offset: int
    nbytes: int


@dataclass(frozen=True)
class RawIfd:
    """One image file directory: its position, entries by tag code, and the offset of the next IFD."""

    index: int
    offset: int
    entries: dict[int, TagEntry]
    next_offset: int


def read_layout(fb: FileBytes) -> TiffLayout:
    """Parse the file header (magic, version, first IFD offset)."""
    head = fb.get(0, 8)
    if head[:2] == b"II":
        byteorder = "<"
    elif head[:2] == b"MM":
        byteorder = ">"
    else:
        raise MalformedTiffError(f"not a TIFF file: starts with {head[:4]!r}")
    (version,) = struct.unpack(byteorder + "H", head[2:4])
    if version == 42:
        (first,) = struct.unpack(byteorder + "I", head[4:8])
        return TiffLayout(byteorder, False, first)
    if version == 43:
        bytesize, zero = struct.unpack(byteorder + "HH", head[4:8])
        if bytesize != 8 or zero != 0:
            raise MalformedTiffError(f"BigTIFF header with offset size {bytesize} (expected 8)")
        (first,) = struct.unpack(byteorder + "Q", fb.get(8, 8))
        return TiffLayout(byteorder, True, first)
    raise MalformedTiffError(f"unknown TIFF version {version} (expected 42 or 43)")


def read_ifd(fb: FileBytes, layout: TiffLayout, offset: int, index: int) -> RawIfd:
    """Parse the IFD at ``offset`` (entries only; tag values are read later on demand)."""
    header_size = 16 if layout.bigtiff else 8
    if offset < header_size:
        raise MalformedTiffError(f"IFD {index} offset {offset} points inside the file header")
    count_format = layout.byteorder + ("Q" if layout.bigtiff else "H")
    (count,) = struct.unpack(count_format, fb.get(offset, layout.count_size))
    if count == 0 or count > MAX_TAGS_PER_IFD:
        raise MalformedTiffError(f"IFD {index} at byte {offset} claims {count} entries")
    table_size = count * layout.entry_size + layout.offset_size
    fb.check_span(offset + layout.count_size, table_size, f"IFD {index}")
    table = fb.get(offset + layout.count_size, table_size)
    entry_format = layout.byteorder + ("HHQ" if layout.bigtiff else "HHI")
    inline_size = layout.offset_size
    entries: dict[int, TagEntry] = {}
    for i in range(count):
        pos = i * layout.entry_size
        code, field_type, n = struct.unpack_from(entry_format, table, pos)
        if field_type not in FIELD_TYPES:
            continue  # TIFF 6.0: readers skip fields of unknown type
        value_pos = offset + layout.count_size + pos + 4 + (8 if layout.bigtiff else 4)
        nbytes = n * field_type_size(field_type)
        if nbytes > inline_size:
            (value_pos,) = struct.unpack_from(
                layout.offset_format, table, pos + 4 + (8 if layout.bigtiff else 4)
            )
        entries.setdefault(code, TagEntry(code, field_type, n, value_pos, nbytes))
    (next_offset,) = struct.unpack_from(layout.offset_format, table, count * layout.entry_size)
    return RawIfd(index, offset, entries, next_offset)


def walk_ifds(fb: FileBytes, layout: TiffLayout) -> list[RawIfd]:
    """Follow the IFD chain from the first IFD, refusing loops and absurdly long chains."""
    ifds: list[RawIfd] = []
    seen: set[int] = set()
    offset = layout.first_ifd
    while offset:
        if offset in seen:
            raise MalformedTiffError(f"IFD chain loops back to byte {offset}")
        if len(ifds) >= MAX_IFDS:
            raise MalformedTiffError(f"more than {MAX_IFDS} IFDs")
        seen.add(offset)
        ifd = read_ifd(fb, layout, offset, len(ifds))
        ifds.append(ifd)
        offset = ifd.next_offset
    if not ifds:
        raise MalformedTiffError("the file has no image file directory")
    return ifds


def tag_array(fb: FileBytes, layout: TiffLayout, entry: TagEntry) -> np.ndarray:
    """A tag's values as a 1-D numpy array in native byte order (RATIONALs as float64)."""
    _, char, per_value = FIELD_TYPES[entry.field_type]
    fb.check_span(entry.value_offset, entry.nbytes, f"the value of tag {entry.code}")
    raw = fb.get(entry.value_offset, entry.nbytes)
    values = np.frombuffer(raw, dtype=np.dtype(char).newbyteorder(layout.byteorder))
    if per_value == 2:
        pairs = values.reshape(-1, 2).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return pairs[:, 0] / pairs[:, 1]
    return values.astype(values.dtype.newbyteorder("="))


def tag_bytes(fb: FileBytes, entry: TagEntry) -> bytes:
    """A tag's raw value bytes (UNDEFINED and BYTE tags such as JPEGTables)."""
    fb.check_span(entry.value_offset, entry.nbytes, f"the value of tag {entry.code}")
    return fb.get(entry.value_offset, entry.nbytes)


def tag_text(fb: FileBytes, entry: TagEntry) -> str:
    """An ASCII tag's value without its terminating NULs (bytes outside ASCII are replaced)."""
    return tag_bytes(fb, entry).split(b"\x00", 1)[0].decode("latin-1")
