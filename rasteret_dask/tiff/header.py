"""From raw IFDs to a :class:`~rasteret_dask.tiff.model.TiffHeader`, asking for exactly the bytes it lacks.

:func:`parse_header` is pure. Given the bytes fetched so far it returns either the header or a
:class:`NeedBytes` naming every further range it needs. For a GDAL-written COG a 64 KiB prefix holds all
IFDs (GDAL writes them first), so at most one more request fetches every tag value that reaches past the
prefix, whatever the file's size. Only the tags this package uses are fetched.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..errors import MalformedTiffError, UnsupportedTiffError
from . import tags as T
from .decode import check_codec_supported
from .gdal_metadata import parse_nodata, parse_scales_offsets
from .georef import georeference
from .ifd import (
    FileBytes,
    MissingBytes,
    RawIfd,
    TiffLayout,
    read_layout,
    tag_array,
    tag_bytes,
    tag_text,
    walk_ifds,
)
from .model import ImageLevel, TiffHeader, TileCodec

# When an IFD lies past the known bytes, fetch this much from its start: an IFD with its inline values
# nearly always fits, and further IFDs usually follow it.
IFD_READAHEAD = 64 * 1024
# A decoded tile or strip larger than this is refused: reading any pixel of it would need that much memory.
MAX_DECODED_TILE_BYTES = 1 << 30

_CLASSIFY_TAGS = frozenset(
    {
        T.NEW_SUBFILE_TYPE,
        T.IMAGE_WIDTH,
        T.IMAGE_LENGTH,
        T.SAMPLES_PER_PIXEL,
        T.BITS_PER_SAMPLE,
        T.SAMPLE_FORMAT,
    }
)
_INT_DTYPES = {1: "uint", 2: "int", 4: "uint"}  # SampleFormat 4 (void) reads as unsigned, as GDAL does


@dataclass(frozen=True)
class NeedBytes:
    """The parser needs these byte ranges ([start, stop), sorted, not overlapping) before it can go on."""

    ranges: tuple[tuple[int, int], ...]


def parse_header(fb: FileBytes) -> TiffHeader | NeedBytes:
    """Parse a TIFF/BigTIFF header from the bytes known in ``fb``.

    Returns the header, or the byte ranges still needed: the caller fetches them, adds them to ``fb`` and
    calls again. Raises :class:`~rasteret_dask.errors.TiffError` subclasses for bad or unsupported files.
    """
    try:
        layout = read_layout(fb)
        ifds = walk_ifds(fb, layout)
    except MissingBytes as missing:
        stop = max(missing.stop, missing.start + IFD_READAHEAD)
        if fb.file_size is not None:
            stop = max(missing.stop, min(stop, fb.file_size))
        return NeedBytes(((missing.start, stop),))
    missing = _missing_values(fb, ((ifd, _CLASSIFY_TAGS) for ifd in ifds))
    if missing:
        return NeedBytes(missing)
    tags = _TagReader(fb, layout)
    image, overviews, masks = _classify(tags, ifds)
    wanted = [(image, T.LAYOUT_TAGS | T.DATASET_TAGS)]
    wanted += [(ifd, T.LAYOUT_TAGS) for ifd in overviews + [m for m in masks if m is not None]]
    missing = _missing_values(fb, wanted)
    if missing:
        return NeedBytes(missing)
    return _build_header(tags, layout, image, overviews, masks)


def _missing_values(fb: FileBytes, wanted: Iterable[tuple[RawIfd, frozenset[int]]]) -> tuple:
    spans = []
    for ifd, codes in wanted:
        for code in codes & ifd.entries.keys():
            entry = ifd.entries[code]
            fb.check_span(entry.value_offset, entry.nbytes, f"the value of tag {code} in IFD {ifd.index}")
            try:
                fb.get(entry.value_offset, entry.nbytes)
            except MissingBytes as m:
                spans.append((m.start, m.stop))
    merged: list[list[int]] = []
    for start, stop in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([start, stop])
    return tuple((a, b) for a, b in merged)


class _TagReader:
    """Typed access to the tag values of IFDs whose bytes are all known."""

    def __init__(self, fb: FileBytes, layout: TiffLayout):
        self.fb, self.layout = fb, layout

    def array(self, ifd: RawIfd, code: int) -> np.ndarray | None:
        entry = ifd.entries.get(code)
        return None if entry is None else tag_array(self.fb, self.layout, entry)

    def ints(self, ifd: RawIfd, code: int, default: int | None = None) -> tuple[int, ...] | None:
        """Up to 64 integer values of a tag (the ones layout tags hold), or ``(default,)`` without it."""
        entry = ifd.entries.get(code)
        if entry is None or entry.count == 0:
            return None if default is None else (default,)
        char = T.INTEGER_FORMATS.get(entry.field_type)
        if char is None:
            raise MalformedTiffError(f"tag {code} of IFD {ifd.index} holds non-integer values")
        n = min(entry.count, 64)
        size = T.FIELD_SIZES[entry.field_type]
        self.fb.check_span(entry.value_offset, entry.nbytes, f"the value of tag {code}")
        raw = self.fb.get(entry.value_offset, n * size)
        return struct.unpack(f"{self.layout.byteorder}{n}{char}", raw)

    def int(self, ifd: RawIfd, code: int, default: int | None = None) -> int | None:
        values = self.ints(ifd, code, default)
        return None if values is None else values[0]

    def raw(self, ifd: RawIfd, code: int) -> bytes | None:
        entry = ifd.entries.get(code)
        return None if entry is None else tag_bytes(self.fb, entry)

    def text(self, ifd: RawIfd, code: int) -> str | None:
        entry = ifd.entries.get(code)
        return None if entry is None else tag_text(self.fb, entry)


def _classify(tags: _TagReader, ifds: list[RawIfd]) -> tuple[RawIfd, list[RawIfd], list[RawIfd | None]]:
    """The full-resolution IFD, its overviews (largest first) and each level's mask IFD (or None).

    As GDAL: the first IFD is the image; later IFDs flagged reduced-resolution are overviews when their
    sample layout matches; IFDs flagged as masks pair with the level of the same size; other IFDs (further
    pages of a multi-page TIFF) are ignored.
    """
    image = ifds[0]

    def signature(ifd: RawIfd) -> tuple:
        return tuple(
            tags.ints(ifd, c, 1) or () for c in (T.SAMPLES_PER_PIXEL, T.BITS_PER_SAMPLE, T.SAMPLE_FORMAT)
        )

    def size(ifd: RawIfd) -> tuple[int | None, int | None]:
        return tags.int(ifd, T.IMAGE_WIDTH), tags.int(ifd, T.IMAGE_LENGTH)

    overviews, mask_ifds = [], []
    for ifd in ifds[1:]:
        subfile = tags.int(ifd, T.NEW_SUBFILE_TYPE, 0)
        if subfile & T.SUBFILE_MASK:
            mask_ifds.append(ifd)
        elif subfile & T.SUBFILE_REDUCED_RESOLUTION and signature(ifd) == signature(image):
            overviews.append(ifd)
    overviews.sort(key=lambda ifd: -(size(ifd)[0] or 0))
    masks: list[RawIfd | None] = []
    for level in [image, *overviews]:
        masks.append(next((m for m in mask_ifds if size(m) == size(level)), None))
    return image, overviews, masks


def _dtype(bits: tuple[int, ...], sample_format: tuple[int, ...], ifd: RawIfd) -> str:
    if len(set(bits)) != 1:
        raise UnsupportedTiffError(f"samples of different bit depths {sorted(set(bits))} (IFD {ifd.index})")
    if len(set(sample_format)) != 1:
        raise UnsupportedTiffError(f"samples of different sample formats (IFD {ifd.index})")
    nbits, fmt = bits[0], sample_format[0]
    if fmt in (5, 6):
        raise UnsupportedTiffError(f"complex samples ({T.SAMPLE_FORMAT_NAMES[fmt]}, {nbits}-bit)")
    if fmt == 3:
        if nbits not in (16, 32, 64):
            raise UnsupportedTiffError(f"{nbits}-bit floating-point samples")
        return f"float{nbits}"
    if fmt not in _INT_DTYPES:
        raise MalformedTiffError(f"unknown SampleFormat {fmt} (IFD {ifd.index})")
    if nbits not in (8, 16, 32, 64):
        raise UnsupportedTiffError(f"{nbits}-bit integer samples")
    return f"{_INT_DTYPES[fmt]}{nbits}"


def _level(tags: _TagReader, layout: TiffLayout, ifd: RawIfd, mask: bool) -> ImageLevel:
    width, height = tags.int(ifd, T.IMAGE_WIDTH), tags.int(ifd, T.IMAGE_LENGTH)
    if not width or not height:
        raise MalformedTiffError(f"IFD {ifd.index} has no image width or length")
    spp = tags.int(ifd, T.SAMPLES_PER_PIXEL, 1)
    if not 1 <= spp <= 65535:
        raise MalformedTiffError(f"IFD {ifd.index} claims {spp} samples per pixel")
    bits = tags.ints(ifd, T.BITS_PER_SAMPLE, 1)
    if mask:
        if bits[0] != 1 or spp != 1:
            raise UnsupportedTiffError(f"a transparency mask of {spp} samples of {bits[0]} bits")
        dtype = "uint8"
    else:
        dtype = _dtype(bits[:spp] if len(bits) >= spp else bits, tags.ints(ifd, T.SAMPLE_FORMAT, 1), ifd)
    planar = tags.int(ifd, T.PLANAR_CONFIGURATION, 1)
    if planar not in (1, 2):
        raise MalformedTiffError(f"PlanarConfiguration {planar} (IFD {ifd.index})")
    tiled = T.TILE_WIDTH in ifd.entries or T.TILE_OFFSETS in ifd.entries
    if tiled:
        tile_width, tile_height = tags.int(ifd, T.TILE_WIDTH), tags.int(ifd, T.TILE_LENGTH)
        offsets, counts = tags.array(ifd, T.TILE_OFFSETS), tags.array(ifd, T.TILE_BYTE_COUNTS)
    else:
        tile_width = width
        tile_height = min(tags.int(ifd, T.ROWS_PER_STRIP, height) or height, height)
        offsets, counts = tags.array(ifd, T.STRIP_OFFSETS), tags.array(ifd, T.STRIP_BYTE_COUNTS)
    if not tile_width or not tile_height:
        raise MalformedTiffError(f"IFD {ifd.index} has a zero or missing tile size")
    if offsets is None or counts is None:
        raise MalformedTiffError(f"IFD {ifd.index} has no tile/strip offsets or byte counts")
    samples = 1 if planar == 2 else spp
    planes = spp if planar == 2 else 1
    decoded = tile_width * tile_height * samples * np.dtype(dtype).itemsize
    if decoded > MAX_DECODED_TILE_BYTES:
        kind = "tile" if tiled else "strip"
        raise UnsupportedTiffError(
            f"a {kind} of {tile_width} x {tile_height} pixels ({decoded} bytes decoded)"
        )
    expected = -(-width // tile_width) * -(-height // tile_height) * planes
    if len(offsets) < expected or len(counts) < expected:
        raise MalformedTiffError(
            f"IFD {ifd.index} lists {min(len(offsets), len(counts))} tiles/strips, its size needs {expected}"
        )
    lerc = tags.ints(ifd, T.LERC_PARAMETERS)
    codec = TileCodec(
        compression=tags.int(ifd, T.COMPRESSION, 1),
        predictor=tags.int(ifd, T.PREDICTOR, 1),
        dtype=dtype,
        byteorder=layout.byteorder,
        tile_width=tile_width,
        tile_height=tile_height,
        samples=samples,
        bits_per_sample=bits[0],
        photometric=tags.int(ifd, T.PHOTOMETRIC, 1),
        jpeg_tables=tags.raw(ifd, T.JPEG_TABLES),
        lerc_parameters=lerc,
    )
    if not mask:
        check_codec_supported(codec)
    return ImageLevel(
        ifd_index=ifd.index,
        width=width,
        height=height,
        tiled=tiled,
        codec=codec,
        tile_offsets=offsets[:expected].astype(np.uint64),
        tile_byte_counts=counts[:expected].astype(np.uint64),
        planes=planes,
    )


def _build_header(
    tags: _TagReader,
    layout: TiffLayout,
    image: RawIfd,
    overviews: list[RawIfd],
    masks: list[RawIfd | None],
) -> TiffHeader:
    levels = tuple(_level(tags, layout, ifd, mask=False) for ifd in [image, *overviews])
    mask_levels = tuple(None if m is None else _level(tags, layout, m, mask=True) for m in masks)
    spp = tags.int(image, T.SAMPLES_PER_PIXEL, 1)
    scales, offsets = parse_scales_offsets(tags.text(image, T.GDAL_METADATA), spp)
    extra = tags.ints(image, T.EXTRA_SAMPLES)
    return TiffHeader(
        byteorder=layout.byteorder,
        bigtiff=layout.bigtiff,
        dtype=levels[0].codec.dtype,
        samples_per_pixel=spp,
        planar_configuration=tags.int(image, T.PLANAR_CONFIGURATION, 1),
        photometric=levels[0].codec.photometric,
        extra_samples=extra or (),
        levels=levels,
        masks=mask_levels,
        geo=georeference(
            pixel_scale=tags.array(image, T.MODEL_PIXEL_SCALE),
            tiepoint=tags.array(image, T.MODEL_TIEPOINT),
            model_transformation=tags.array(image, T.MODEL_TRANSFORMATION),
            geokey_directory=tags.array(image, T.GEO_KEY_DIRECTORY),
            geo_double_params=tags.array(image, T.GEO_DOUBLE_PARAMS),
            geo_ascii_params=tags.text(image, T.GEO_ASCII_PARAMS),
        ),
        nodata=parse_nodata(tags.text(image, T.GDAL_NODATA), levels[0].codec.dtype),
        scales=scales,
        offsets=offsets,
    )
