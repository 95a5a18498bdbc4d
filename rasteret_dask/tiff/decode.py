"""Turn one tile's (or strip's) stored bytes into pixels: decompression, predictors, byte order.

Pure functions, no I/O. Decoding follows libtiff as GDAL uses it, so that a tile decoded here equals
what ``rasterio.open(...).read()`` returns for the same pixels:

* Decoders write into buffers of the expected size (``rows * tile_width * samples * itemsize``) or
  are given hard output limits, so hostile bytes cannot make a decoder allocate without bound. Image
  codecs (JPEG, WebP, LERC, JPEG XL) have their declared dimensions checked before any pixel is decoded.
* Data that decodes to fewer bytes than the tile needs raises :class:`TruncatedTiffError`; data that
  decodes to more is cut to size, as libtiff does.
* The horizontal predictor (2) is undone after byte swapping, on the integer bit patterns (also for
  floating point samples); the floating point predictor (3) produces native values directly, whatever
  the file's byte order. Both only apply to the codecs libtiff pairs with a predictor (LZW, deflate,
  LZMA, ZSTD); libtiff ignores the tag for the others, and so does this module.
* YCbCr JPEG comes back as RGB (libtiff's ``JPEGCOLORMODE_RGB``, which GDAL sets); every other JPEG
  comes back as stored, without colour conversion.

Every failure of a decoder surfaces as a :class:`~rasteret_dask.errors.TiffError` subclass.
"""

from __future__ import annotations

import functools
import lzma
import struct
import sys
import zlib
from dataclasses import dataclass

import imagecodecs
import numpy as np

from rasteret_dask.errors import MalformedTiffError, TiffError, TruncatedTiffError, UnsupportedTiffError
from rasteret_dask.tiff.model import TileCodec

__all__ = [
    "SUPPORTED_COMPRESSIONS",
    "check_codec_supported",
    "decode_mask_tile",
    "decode_tile",
    "fill_tile",
]

NONE = 1
LZW = 5
JPEG = 7
ADOBE_DEFLATE = 8
PACKBITS = 32773
DEFLATE = 32946
LERC = 34887
LZMA = 34925
ZSTD_OLD = 34926
WEBP_OLD = 34927
ZSTD = 50000
WEBP = 50001
JPEGXL = 50002
JPEGXL_DNG = 52546

# Codecs that produce a plain byte stream (everything but the image codecs).
_BYTE_CODECS = frozenset({NONE, LZW, ADOBE_DEFLATE, DEFLATE, PACKBITS, LZMA, ZSTD, ZSTD_OLD})
# Codecs libtiff runs the predictor for (TIFFPredictorInit); it ignores the tag for all others.
_PREDICTOR_CODECS = frozenset({LZW, ADOBE_DEFLATE, DEFLATE, LZMA, ZSTD, ZSTD_OLD})

_AVAILABLE = {
    NONE: True,
    LZW: imagecodecs.LZW.available,
    JPEG: imagecodecs.JPEG8.available,
    ADOBE_DEFLATE: imagecodecs.DEFLATE.available,
    DEFLATE: imagecodecs.DEFLATE.available,
    PACKBITS: imagecodecs.PACKBITS.available,
    LZMA: True,  # Python's own lzma module
    ZSTD: imagecodecs.ZSTD.available,
    ZSTD_OLD: imagecodecs.ZSTD.available,
    WEBP: imagecodecs.WEBP.available,
    WEBP_OLD: imagecodecs.WEBP.available,
    LERC: imagecodecs.LERC.available,
    JPEGXL: imagecodecs.JPEGXL.available,
    JPEGXL_DNG: imagecodecs.JPEGXL.available,
}

SUPPORTED_COMPRESSIONS: frozenset[int] = frozenset(code for code, ok in _AVAILABLE.items() if ok)
"""TIFF Compression tag values :func:`decode_tile` decodes (with the imagecodecs build installed)."""

_COMPRESSION_NAMES = {
    NONE: "none",
    2: "CCITT RLE",
    3: "CCITT Group 3",
    4: "CCITT Group 4",
    LZW: "LZW",
    6: "old-style JPEG",
    JPEG: "JPEG",
    ADOBE_DEFLATE: "deflate",
    9: "JBIG (T.85)",
    10: "JBIG (T.43)",
    32766: "NeXT",
    32771: "CCITT RLEW",
    PACKBITS: "PackBits",
    32809: "ThunderScan",
    32895: "IT8 CT padding",
    32896: "IT8 LW",
    32897: "IT8 MP",
    32898: "IT8 BL",
    32908: "PixarFilm",
    32909: "PixarLog",
    DEFLATE: "deflate",
    32947: "Kodak DCS",
    33003: "JPEG 2000 (Aperio YCbCr)",
    33005: "JPEG 2000 (Aperio RGB)",
    34661: "JBIG",
    34676: "SGILog",
    34677: "SGILog24",
    34712: "JPEG2000",
    LERC: "LERC",
    34892: "lossy JPEG (DNG)",
    LZMA: "LZMA",
    ZSTD_OLD: "ZSTD",
    WEBP_OLD: "WebP",
    34933: "PNG",
    34934: "JPEG XR",
    ZSTD: "ZSTD",
    WEBP: "WebP",
    JPEGXL: "JPEG XL",
    JPEGXL_DNG: "JPEG XL",
}

_PHOTOMETRIC_NAMES = {
    0: "MinIsWhite",
    1: "MinIsBlack",
    2: "RGB",
    3: "palette",
    4: "transparency mask",
    5: "CMYK",
    6: "YCbCr",
    8: "CIELab",
    9: "ICCLab",
    10: "ITULab",
    32803: "CFA",
    32844: "LogL",
    32845: "LogLuv",
    34892: "LinearRaw",
}

# GDAL refuses blocks larger than INT_MAX bytes; so do we, before allocating anything.
_MAX_TILE_BYTES = 2**31 - 1
# liblzma needs about the dictionary size (64 MiB at preset 9) to decode; refuse more than this.
_LZMA_MEMLIMIT = 256 * 2**20
_NATIVE = "<" if sys.byteorder == "little" else ">"


def _compression_label(code: int) -> str:
    name = _COMPRESSION_NAMES.get(code)
    return f"compression {code} ({name})" if name else f"compression {code}"


def _photometric_label(code: int) -> str:
    name = _PHOTOMETRIC_NAMES.get(code)
    return f"photometric {code} ({name})" if name else f"photometric {code}"


@dataclass(frozen=True)
class _Spec:
    """What :func:`decode_tile` needs beyond the codec, worked out once per codec."""

    dtype: np.dtype  # native byte order
    swap: bool  # file byte order differs from the machine's
    predictor: int  # 1 when libtiff would ignore the tag
    mask: bool  # a 1-bit (or 8-bit) transparency mask


@functools.lru_cache(maxsize=512)
def _spec(codec: TileCodec) -> _Spec:
    comp = codec.compression
    if comp not in SUPPORTED_COMPRESSIONS:
        raise UnsupportedTiffError(_compression_label(comp))
    if codec.byteorder not in ("<", ">"):
        raise MalformedTiffError(f"byte order {codec.byteorder!r} (expected '<' or '>')")
    if codec.tile_width < 1 or codec.tile_height < 1 or codec.samples < 1:
        raise MalformedTiffError(
            f"tile of {codec.tile_width}x{codec.tile_height} pixels with {codec.samples} samples"
        )
    photometric = codec.photometric
    if codec.bits_per_sample == 1 or photometric == 4:
        return _mask_spec(codec)

    try:
        dtype = np.dtype(codec.dtype).newbyteorder("=")
    except TypeError as exc:
        raise UnsupportedTiffError(f"sample type {codec.dtype!r}") from exc
    if dtype.kind not in "uif" or (dtype.kind == "f" and dtype.itemsize == 16):
        raise UnsupportedTiffError(f"sample type {dtype.name}")
    if codec.bits_per_sample != 8 * dtype.itemsize:
        raise UnsupportedTiffError(f"{codec.bits_per_sample}-bit {dtype.name} samples")
    nbytes = codec.tile_width * codec.tile_height * codec.samples * dtype.itemsize
    if nbytes > _MAX_TILE_BYTES:
        raise UnsupportedTiffError(f"tiles of {nbytes} bytes (more than 2 GiB decoded)")

    if photometric not in (0, 1, 2, 3, 5, 6):
        # CIELab, LogLuv, CFA and the like: GDAL converts them, this module only returns stored values.
        raise UnsupportedTiffError(_photometric_label(photometric))
    if photometric == 5 and codec.bits_per_sample == 8:
        # GDAL reads 8-bit CMYK through libtiff's RGBA interface and returns RGBA, not the stored inks.
        raise UnsupportedTiffError("8-bit photometric 5 (CMYK), which GDAL converts to RGBA")
    if photometric == 6 and comp != JPEG:
        raise UnsupportedTiffError(f"photometric 6 (YCbCr) with {_compression_label(comp)}")

    predictor = codec.predictor if comp in _PREDICTOR_CODECS else 1
    if predictor == 2:
        pass  # integer differencing of 8/16/32/64-bit words, as libtiff; floats included
    elif predictor == 3:
        if dtype.kind != "f":
            raise UnsupportedTiffError(f"predictor 3 with {dtype.name}")
    elif predictor != 1:
        raise UnsupportedTiffError(f"predictor {predictor}")

    _check_image_codec(codec, dtype)
    swap = dtype.itemsize > 1 and codec.byteorder != _NATIVE
    return _Spec(dtype=dtype, swap=swap, predictor=predictor, mask=False)


def _mask_spec(codec: TileCodec) -> _Spec:
    if codec.photometric != 4 or codec.bits_per_sample not in (1, 8) or codec.samples != 1:
        raise UnsupportedTiffError(
            f"{codec.bits_per_sample}-bit samples with {_photometric_label(codec.photometric)} and "
            f"{codec.samples} samples (1-bit samples are read only in transparency masks)"
        )
    if codec.compression not in _BYTE_CODECS:
        raise UnsupportedTiffError(f"transparency mask with {_compression_label(codec.compression)}")
    predictor = codec.predictor if codec.compression in _PREDICTOR_CODECS else 1
    if predictor != 1:
        raise UnsupportedTiffError(f"predictor {predictor} with {codec.bits_per_sample}-bit mask samples")
    if codec.tile_height * ((codec.tile_width * codec.bits_per_sample + 7) // 8) > _MAX_TILE_BYTES:
        raise UnsupportedTiffError("mask tiles of more than 2 GiB")
    return _Spec(dtype=np.dtype(np.uint8), swap=False, predictor=1, mask=True)


def _check_image_codec(codec: TileCodec, dtype: np.dtype) -> None:
    comp, name, samples = codec.compression, dtype.name, codec.samples
    if comp == JPEG:
        if name != "uint8":
            raise UnsupportedTiffError(f"JPEG with {name} samples")
        if codec.photometric == 6 and samples != 3:
            raise UnsupportedTiffError(f"YCbCr JPEG with {samples} samples")
        if samples > 4:
            raise UnsupportedTiffError(f"JPEG with {samples} samples")
    elif comp in (WEBP, WEBP_OLD):
        if name != "uint8" or samples not in (3, 4):
            raise UnsupportedTiffError(f"WebP with {samples} {name} samples")
    elif comp == LERC:
        if name not in ("int8", "uint8", "int16", "uint16", "int32", "uint32", "float32", "float64"):
            raise UnsupportedTiffError(f"LERC with {name} samples")
        extra = _lerc_additional_compression(codec)
        if extra not in (0, 1, 2):
            raise UnsupportedTiffError(f"LERC additional compression {extra}")
    elif comp in (JPEGXL, JPEGXL_DNG):
        if name not in ("uint8", "uint16", "float16", "float32"):
            raise UnsupportedTiffError(f"JPEG XL with {name} samples")
        if dtype.itemsize > 1 and codec.byteorder == ">":
            raise UnsupportedTiffError(f"JPEG XL with big-endian {name} samples")


def _lerc_additional_compression(codec: TileCodec) -> int:
    params = codec.lerc_parameters
    return int(params[1]) if params is not None and len(params) > 1 else 0


def check_codec_supported(codec: TileCodec) -> None:
    """Raise if :func:`decode_tile` (or :func:`decode_mask_tile`) cannot decode tiles of ``codec``.

    Meant for the header parser, so that files this library cannot read fail when opened, not when a
    tile is first decoded.

    Parameters
    ----------
    codec : TileCodec
        The codec of an image level or internal mask.

    Raises
    ------
    UnsupportedTiffError
        The message names the feature, e.g. ``"compression 34712 (JPEG2000)"`` or
        ``"predictor 3 with uint16"``.
    MalformedTiffError
        The codec itself is inconsistent (byte order, non-positive tile size).
    """
    _spec(codec)


def _resolve_rows(codec: TileCodec, rows: int | None) -> int:
    if rows is None:
        return codec.tile_height
    rows = int(rows)
    if not 1 <= rows <= codec.tile_height:
        raise ValueError(f"rows={rows} outside 1..{codec.tile_height} (the codec's tile height)")
    return rows


def _as_buffer(data: bytes | bytearray | memoryview) -> memoryview:
    view = memoryview(data)
    if view.ndim == 1 and view.format in ("B", "b", "c") and view.c_contiguous:
        return view.cast("B")
    return memoryview(view.tobytes())


def decode_tile(data: bytes | memoryview, codec: TileCodec, rows: int | None = None) -> np.ndarray:
    """Decode one tile or strip.

    Parameters
    ----------
    data : bytes or memoryview
        The stored (compressed) bytes of the tile, exactly as in the file.
    codec : TileCodec
        How the level's tiles are encoded.
    rows : int, optional
        Number of rows stored in this buffer: the last strip of a striped image may hold fewer than
        RowsPerStrip (``codec.tile_height``). Tiles always hold ``codec.tile_height`` rows (None).

    Returns
    -------
    numpy.ndarray
        Shape ``(rows, codec.tile_width, codec.samples)``, dtype ``codec.dtype`` in native byte order,
        C-contiguous and writeable. Tiles at the right or bottom edge are returned whole (with the
        padding the writer stored); cropping is the caller's business.

    Raises
    ------
    TruncatedTiffError
        The data decodes to fewer pixels than the tile holds.
    MalformedTiffError
        The data is corrupt or contradicts the codec.
    UnsupportedTiffError
        The codec uses a feature this module does not decode (see :func:`check_codec_supported`).
    ValueError
        ``rows`` is outside ``1..codec.tile_height`` (a caller bug, not a file problem).
    """
    spec = _spec(codec)
    if spec.mask:
        raise UnsupportedTiffError("a transparency mask codec: decode it with decode_mask_tile")
    rows = _resolve_rows(codec, rows)
    buf = _as_buffer(data)
    if not len(buf):
        raise TruncatedTiffError("empty tile data (sparse tiles are the caller's to fill)")
    comp = codec.compression
    try:
        if comp in _BYTE_CODECS:
            itemsize = spec.dtype.itemsize
            row_bytes = codec.tile_width * codec.samples * itemsize
            raw = _decompress(buf, comp, rows * row_bytes, codec.tile_height * row_bytes)
            return _unpredict(raw, codec, spec, rows)
        if comp == JPEG:
            return _decode_jpeg(buf, codec, rows)
        if comp in (WEBP, WEBP_OLD):
            return _decode_webp(buf, codec, rows)
        if comp == LERC:
            return _decode_lerc(buf, codec, spec, rows)
        return _decode_jpegxl(buf, codec, spec, rows)
    except TiffError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # imagecodecs, numpy, zlib and lzma errors all mean corrupt data here
        raise MalformedTiffError(f"cannot decode {_compression_label(comp)} tile: {exc}") from exc


def decode_mask_tile(data: bytes | memoryview, codec: TileCodec, rows: int | None = None) -> np.ndarray:
    """Decode one tile or strip of an internal transparency mask (NewSubfileType 4).

    Parameters
    ----------
    data : bytes or memoryview
        The stored bytes of the mask tile.
    codec : TileCodec
        The mask level's codec: 1 bit per sample (8 is also accepted), photometric 4, one sample.
    rows : int, optional
        Rows stored in this buffer (see :func:`decode_tile`).

    Returns
    -------
    numpy.ndarray
        Boolean array of shape ``(rows, codec.tile_width)``; True where the pixel is valid.

    Raises
    ------
    TruncatedTiffError, MalformedTiffError, UnsupportedTiffError
        As :func:`decode_tile`.
    """
    spec = _spec(codec)
    if not spec.mask:
        raise UnsupportedTiffError(
            f"{codec.bits_per_sample}-bit {_photometric_label(codec.photometric)} data as a mask"
        )
    rows = _resolve_rows(codec, rows)
    buf = _as_buffer(data)
    if not len(buf):
        raise TruncatedTiffError("empty mask tile data")
    width = codec.tile_width
    row_bytes = (width * codec.bits_per_sample + 7) // 8
    try:
        raw = _decompress(buf, codec.compression, rows * row_bytes, codec.tile_height * row_bytes)
    except TiffError:
        raise
    except MemoryError:
        raise
    except Exception as exc:
        raise MalformedTiffError(
            f"cannot decode {_compression_label(codec.compression)} mask: {exc}"
        ) from exc
    packed = raw.reshape(rows, row_bytes)
    if codec.bits_per_sample == 8:
        return packed != 0
    # FillOrder 1: the most significant bit is the leftmost pixel; rows are padded to whole bytes.
    return np.unpackbits(packed, axis=1, count=width).view(np.bool_)


def fill_tile(codec: TileCodec, fill_value: float, rows: int | None = None) -> np.ndarray:
    """A tile of ``fill_value``, shaped and typed as :func:`decode_tile` would return it.

    Used for sparse tiles (byte count or offset 0). The value is converted as GDAL converts a nodata
    value into the band's type: NaN becomes 0 for integers, other values are rounded half away from
    zero and clamped to the type's range; finite values beyond a float type's range are clamped to its
    largest finite value.

    Parameters
    ----------
    codec : TileCodec
        The level's codec.
    fill_value : float
        Usually the band's nodata value, else 0.
    rows : int, optional
        Rows of the buffer (see :func:`decode_tile`).

    Returns
    -------
    numpy.ndarray
        Shape ``(rows, codec.tile_width, codec.samples)``, native byte order, writeable.
    """
    rows = _resolve_rows(codec, rows)
    return np.full((rows, codec.tile_width, codec.samples), fill_scalar(codec, fill_value))


def fill_scalar(codec: TileCodec, fill_value: float) -> np.generic:
    """``fill_value`` converted to the codec's dtype as :func:`fill_tile` converts it (a numpy scalar)."""
    spec = _spec(codec)
    if spec.mask:
        raise UnsupportedTiffError("a fill value for a transparency mask codec")
    return spec.dtype.type(_convert_fill(float(fill_value), spec.dtype))


def _convert_fill(value: float, dtype: np.dtype) -> object:
    if dtype.kind == "f":
        if np.isfinite(value):
            big = float(np.finfo(dtype).max)
            value = min(max(value, -big), big)
        return dtype.type(value)
    if np.isnan(value):
        return dtype.type(0)
    info = np.iinfo(dtype)
    if np.isinf(value):
        return dtype.type(info.max if value > 0 else info.min)
    whole = int(np.floor(value + 0.5)) if value >= 0 else int(np.ceil(value - 0.5))
    return dtype.type(min(max(whole, info.min), info.max))


# --- byte-stream codecs ---------------------------------------------------------------------------------


def _decompress(buf: memoryview, comp: int, nbytes: int, limit: int) -> np.ndarray:
    """The first ``nbytes`` decoded bytes as a fresh writeable uint8 array.

    ``limit`` (the bytes of a full tile) bounds the retry of decoders that cannot stop early.
    """
    out = np.empty(nbytes, np.uint8)
    if comp == NONE:
        got = min(len(buf), nbytes)
        out[:got] = np.frombuffer(buf, np.uint8, count=got)
    elif comp == LZW:
        got = len(imagecodecs.lzw_decode(buf, out=out))
    elif comp in (ADOBE_DEFLATE, DEFLATE):
        got = _inflate_into(buf, out)
    elif comp == PACKBITS:
        got = _unpackbits_into(buf, out)
    elif comp == LZMA:
        got = _unxz_into(buf, out)
    else:
        return _unzstd(buf, nbytes, limit)
    if got < nbytes:
        raise TruncatedTiffError(
            f"{_compression_label(comp)} data decodes to {got} bytes, the tile needs {nbytes}"
        )
    return out


def _inflate_into(buf: memoryview, out: np.ndarray) -> int:
    try:
        return len(imagecodecs.deflate_decode(buf, out=out))
    except imagecodecs.DeflateError:
        pass  # libdeflate refuses both excess and truncated data: let zlib tell which, bounded
    stream = zlib.decompressobj()
    try:
        chunk = stream.decompress(buf, len(out))
    except zlib.error as exc:
        raise MalformedTiffError(f"corrupt deflate data: {exc}") from exc
    out[: len(chunk)] = np.frombuffer(chunk, np.uint8)
    return len(chunk)


def _unxz_into(buf: memoryview, out: np.ndarray) -> int:
    stream = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=_LZMA_MEMLIMIT)
    try:
        chunk = stream.decompress(buf, len(out))
    except lzma.LZMAError as exc:
        raise MalformedTiffError(f"corrupt LZMA data: {exc}") from exc
    out[: len(chunk)] = np.frombuffer(chunk, np.uint8)
    return len(chunk)


def _unpackbits_into(buf: memoryview, out: np.ndarray) -> int:
    try:
        return len(imagecodecs.packbits_decode(buf, out=out))
    except imagecodecs.PackbitsError:
        pass  # more data than the tile holds, or runs past the end: decode what fits, as libtiff
    src, size, pos, filled, end = bytes(buf), len(out), 0, 0, len(buf)
    while filled < size and pos < end:
        head = src[pos]
        pos += 1
        if head < 128:
            count = min(head + 1, size - filled, end - pos)
            out[filled : filled + count] = np.frombuffer(src, np.uint8, count, pos)
            filled += count
            pos += head + 1
        elif head > 128:
            if pos >= end:
                break
            count = min(257 - head, size - filled)
            out[filled : filled + count] = src[pos]
            filled += count
            pos += 1
    return filled


def _zstd_error(exc: Exception, what: str) -> TiffError:
    message = str(exc)
    if "Src size is incorrect" in message:  # the frame ends before its last block
        return TruncatedTiffError(f"truncated {what}: {message}")
    return MalformedTiffError(f"corrupt {what}: {message}")


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _zstd_frames(buf: memoryview, what: str) -> memoryview:
    """``buf`` cut after its last complete ZSTD frame, walking frame and block headers only.

    Bytes after the frames are ignored (as libtiff's streaming decoder does); a frame that runs past
    the end of the data is a truncation, data that starts with no frame is corrupt.
    """
    size, pos = len(buf), 0
    while pos + 4 <= size:
        magic = bytes(buf[pos : pos + 4])
        if magic[1:] == b"\x2a\x4d\x18" and 0x50 <= magic[0] <= 0x5F:  # skippable frame
            if pos + 8 > size:
                break
            (skip,) = struct.unpack_from("<I", buf, pos + 4)
            pos += 8 + skip
            continue
        if magic != _ZSTD_MAGIC:
            break
        if pos + 5 > size:
            raise TruncatedTiffError(f"{what} cut inside a frame header")
        descriptor = buf[pos + 4]
        single = descriptor >> 5 & 1
        fcs = (1 if single else 0, 2, 4, 8)[descriptor >> 6]
        pos += 5 + (0 if single else 1) + (0, 1, 2, 4)[descriptor & 3] + fcs
        while True:
            if pos + 3 > size:
                raise TruncatedTiffError(f"{what} cut inside a frame")
            header = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
            kind, length = header >> 1 & 3, header >> 3
            if kind == 3:
                raise MalformedTiffError(f"{what} holds a reserved block type")
            pos += 3 + (1 if kind == 1 else length)
            if header & 1:
                break
        pos += 4 if descriptor & 4 else 0
        if pos > size:
            raise TruncatedTiffError(f"{what} cut inside a frame")
    if pos == 0:
        raise MalformedTiffError(f"{what} does not start with a ZSTD frame")
    return buf[: min(pos, size)]


def _unzstd(buf: memoryview, nbytes: int, limit: int) -> np.ndarray:
    buf = _zstd_frames(buf, "ZSTD data")
    out = np.empty(nbytes, np.uint8)
    try:
        got = len(imagecodecs.zstd_decode(buf, out=out))
    except imagecodecs.ZstdError as exc:
        if "too small" not in str(exc):
            raise _zstd_error(exc, "ZSTD data") from exc
        # More data than these rows: a last strip written with full RowsPerStrip rows. ZSTD cannot
        # stop early, so allow up to a full tile and refuse anything larger.
        if limit <= nbytes:
            raise MalformedTiffError(f"ZSTD data decodes to more than the tile's {nbytes} bytes") from exc
        bigger = np.empty(limit, np.uint8)
        try:
            imagecodecs.zstd_decode(buf, out=bigger)
        except imagecodecs.ZstdError as exc2:
            raise MalformedTiffError(f"ZSTD data decodes to more than a full tile ({limit} bytes)") from exc2
        return bigger[:nbytes].copy()
    if got < nbytes:
        raise TruncatedTiffError(f"ZSTD data decodes to {got} bytes, the tile needs {nbytes}")
    return out


def _unpredict(raw: np.ndarray, codec: TileCodec, spec: _Spec, rows: int) -> np.ndarray:
    shape = (rows, codec.tile_width, codec.samples)
    if spec.predictor == 3:
        # libtiff's fpAcc: bytes were regrouped most significant first and differenced; undoing that
        # yields native-order values whatever the file's byte order, so no swap follows.
        return imagecodecs.floatpred_decode(raw.view(spec.dtype).reshape(shape), axis=-2)
    arr = raw.view(spec.dtype).reshape(shape)
    if spec.swap:
        arr.byteswap(inplace=True)
    if spec.predictor == 2:
        # integer sums of the bit patterns (wrapping), along the row, per sample
        words = arr.view(f"u{spec.dtype.itemsize}")
        imagecodecs.delta_decode(words, axis=1, out=words)
    return arr


# --- image codecs ---------------------------------------------------------------------------------------


def _check_dims(kind: str, codec: TileCodec, rows: int, height: int, width: int) -> None:
    """Declared image size must be the tile's width and between ``rows`` and a full tile high."""
    if width != codec.tile_width or height > codec.tile_height:
        raise MalformedTiffError(
            f"{kind} image is {width}x{height} pixels, the tile is {codec.tile_width}x{codec.tile_height}"
        )
    if height < rows:
        raise TruncatedTiffError(f"{kind} image has {height} rows, the tile needs {rows}")


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_TAIL = 4096  # writers may pad a tile after its EOI marker; this much padding is tolerated


def _jpeg_frame(buf: memoryview) -> tuple[int, int, int, int]:
    """(precision, height, width, components) from the SOF segment, without decoding anything."""
    size = len(buf)
    if size < 4 or buf[0] != 0xFF or buf[1] != 0xD8:
        raise MalformedTiffError("JPEG tile does not start with an SOI marker")
    pos = 2
    while pos + 4 <= size:
        if buf[pos] != 0xFF:
            pos += 1  # libjpeg skips stray bytes between segments too
            continue
        marker = buf[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):
            break
        length = (buf[pos + 2] << 8) | buf[pos + 3]
        if marker in _SOF_MARKERS:
            if length < 8 or pos + 10 > size:
                break
            precision, height, width, components = struct.unpack_from(">BHHB", buf, pos + 4)
            return precision, height, width, components
        pos += 2 + length
    raise TruncatedTiffError("JPEG tile has no frame header (SOF) before its scan data")


def _decode_jpeg(buf: memoryview, codec: TileCodec, rows: int) -> np.ndarray:
    precision, height, width, components = _jpeg_frame(buf)
    # libjpeg only warns when data ends early and pads the image with grey; an EOI marker (which
    # cannot occur inside entropy-coded data) near the end tells a complete tile from a cut one.
    if b"\xff\xd9" not in bytes(buf[-_JPEG_TAIL:]):
        raise TruncatedTiffError("JPEG tile data ends without an EOI marker")
    if precision != 8:
        raise UnsupportedTiffError(f"{precision}-bit JPEG data")
    if components != codec.samples:
        raise MalformedTiffError(f"JPEG data has {components} components, the tile {codec.samples} samples")
    if height == 0:
        raise MalformedTiffError("JPEG data with a DNL-defined height")
    _check_dims("JPEG", codec, rows, height, width)
    # Mirror libtiff: YCbCr is converted to RGB; everything else is returned without conversion (the
    # identity colour spaces below stop libjpeg from guessing YCbCr or YCCK from markers).
    if codec.photometric == 6:
        colorspace, outcolorspace = "YCBCR", "RGB"
    else:
        colorspace = outcolorspace = {1: "GRAY", 3: "RGB", 4: "CMYK"}.get(components)
    tables = codec.jpeg_tables or None
    out = np.empty((height, width, components), np.uint8)
    imagecodecs.jpeg8_decode(buf, tables=tables, colorspace=colorspace, outcolorspace=outcolorspace, out=out)
    return out[:rows]


def _webp_size(buf: memoryview) -> tuple[int, int]:
    """(height, width) from the RIFF header; animations are refused."""
    if len(buf) < 30 or bytes(buf[0:4]) != b"RIFF" or bytes(buf[8:12]) != b"WEBP":
        if len(buf) < 30 and bytes(buf[0:4]) == b"RIFF"[: len(buf)]:
            raise TruncatedTiffError("WebP tile is cut inside its header")
        raise MalformedTiffError("WebP tile does not start with a RIFF/WEBP header")
    (riff_size,) = struct.unpack_from("<I", buf, 4)
    if riff_size + 8 > len(buf):
        raise TruncatedTiffError(f"WebP tile of {riff_size + 8} bytes cut to {len(buf)}")
    chunk = bytes(buf[12:16])
    if chunk == b"VP8X":
        if buf[20] & 0x02:
            raise MalformedTiffError("animated WebP tile")
        width = 1 + (buf[24] | buf[25] << 8 | buf[26] << 16)
        height = 1 + (buf[27] | buf[28] << 8 | buf[29] << 16)
    elif chunk == b"VP8L":
        if buf[20] != 0x2F:
            raise MalformedTiffError("bad VP8L signature in WebP tile")
        (bits,) = struct.unpack_from("<I", buf, 21)
        width, height = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    elif chunk == b"VP8 ":
        if bytes(buf[23:26]) != b"\x9d\x01\x2a":
            raise MalformedTiffError("bad VP8 start code in WebP tile")
        width, height = struct.unpack_from("<HH", buf, 26)
        width, height = width & 0x3FFF, height & 0x3FFF
    else:
        raise MalformedTiffError(f"unknown WebP chunk {chunk!r}")
    return height, width


def _decode_webp(buf: memoryview, codec: TileCodec, rows: int) -> np.ndarray:
    height, width = _webp_size(buf)
    _check_dims("WebP", codec, rows, height, width)
    out = np.empty((height, width, codec.samples), np.uint8)
    imagecodecs.webp_decode(buf, hasalpha=codec.samples == 4, out=out)
    return out[:rows]


_LERC_TYPES = {
    0: "int8",
    1: "uint8",
    2: "int16",
    3: "uint16",
    4: "int32",
    5: "uint32",
    6: "float32",
    7: "float64",
}


def _lerc_blob_header(blob: memoryview, offset: int) -> tuple[int, int, int, int, int] | None:
    """(rows, cols, ndim, blob_size, data_type) of the Lerc2 blob at ``offset``, None if none is there."""
    if len(blob) - offset < 14 or bytes(blob[offset : offset + 6]) != b"Lerc2 ":
        return None
    (version,) = struct.unpack_from("<i", blob, offset + 6)
    pos = offset + 10 + (4 if version >= 3 else 0)
    count = 7 if version >= 4 else 6
    if len(blob) < pos + 4 * count:
        raise TruncatedTiffError("LERC blob header is cut short")
    ints = struct.unpack_from(f"<{count}i", blob, pos)
    if version >= 4:
        nrows, ncols, ndim, _valid, _micro, blob_size, data_type = ints
    else:
        (nrows, ncols, _valid, _micro, blob_size, data_type), ndim = ints, 1
    return nrows, ncols, ndim, blob_size, data_type


def _lerc_blob(buf: memoryview, codec: TileCodec, raw_bytes: int) -> memoryview:
    """The LERC blob, after undoing the additional deflate/ZSTD layer within libtiff's size bound."""
    extra = _lerc_additional_compression(codec)
    if extra == 0:
        return buf
    # libtiff decodes the extra layer into a buffer of 256 + n + n/3 bytes (n: the raw segment size).
    bound = 256 + raw_bytes + raw_bytes // 3
    if extra == 1:
        stream = zlib.decompressobj()
        try:
            blob = stream.decompress(buf, bound)
        except zlib.error as exc:
            raise MalformedTiffError(f"corrupt deflate layer over LERC data: {exc}") from exc
        if not stream.eof:
            if len(blob) < bound:
                raise TruncatedTiffError("the deflate layer over LERC data is cut short")
            raise MalformedTiffError(f"the deflate layer over LERC data holds more than {bound} bytes")
        return memoryview(blob)
    buf = _zstd_frames(buf, "ZSTD layer over LERC data")
    try:
        return memoryview(imagecodecs.zstd_decode(buf, out=bound))
    except imagecodecs.ZstdError as exc:
        raise _zstd_error(exc, "ZSTD layer over LERC data") from exc


def _decode_lerc(buf: memoryview, codec: TileCodec, spec: _Spec, rows: int) -> np.ndarray:
    dtype, samples, width = spec.dtype, codec.samples, codec.tile_width
    # bound the blob by a full tile: a last strip may hold more rows than the caller needs
    blob = _lerc_blob(buf, codec, codec.tile_height * width * samples * dtype.itemsize)
    first = _lerc_blob_header(blob, 0)
    if first is None:
        raise MalformedTiffError("tile data is not a Lerc2 blob")
    nrows, ncols, ndim, blob_size, data_type = first
    if _LERC_TYPES.get(data_type) != dtype.name:
        raise MalformedTiffError(f"LERC data type {data_type}, the tile holds {dtype.name}")
    if ndim < 1 or blob_size < 1:
        raise MalformedTiffError(f"LERC blob with {ndim} dimensions and {blob_size} bytes")
    if blob_size > len(blob):
        raise TruncatedTiffError(f"LERC blob of {blob_size} bytes cut to {len(blob)}")
    _check_dims("LERC", codec, rows, nrows, ncols)
    bands, offset = 0, 0
    while bands <= samples:  # Lerc2 blobs of further bands follow one another
        header = _lerc_blob_header(blob, offset)
        if header is None:
            break
        bands += 1
        offset += max(header[3], 1)

    alpha = dtype.name == "uint8" and samples > 1 and ndim == samples - 1 and bands == 1
    if ndim == samples and bands == 1:
        shape: tuple[int, ...] = (nrows, ncols, samples) if samples > 1 else (nrows, ncols)
    elif alpha:
        shape = (nrows, ncols, ndim) if ndim > 1 else (nrows, ncols)
    elif dtype.kind == "f" and samples > 1 and ndim == 1 and bands == samples:
        shape = (samples, nrows, ncols)
    else:
        raise MalformedTiffError(f"LERC data with {ndim} dimensions and {bands} bands for {samples} samples")
    values = np.empty(shape, dtype)
    _, valid = imagecodecs.lerc_decode(blob, masks=True, out=values)

    if alpha:
        # GDAL stores an all-0/255 alpha band as the LERC validity mask (tif_lerc.c).
        out = np.empty((nrows, ncols, samples), dtype)
        out[..., :ndim] = values.reshape(nrows, ncols, ndim)
        out[..., ndim] = 255 if valid is None else np.asarray(valid, np.uint8).reshape(nrows, ncols) * 255
    elif len(shape) == 3 and shape[0] == samples and samples > 1 and ndim == 1:
        if valid is not None:
            valid = np.asarray(valid).reshape(-1, nrows, ncols)
            values[~np.broadcast_to(valid, values.shape)] = np.nan
        out = np.ascontiguousarray(values.transpose(1, 2, 0))
    else:
        out = values.reshape(nrows, ncols, samples)
        if valid is not None and dtype.kind == "f":
            out[~np.asarray(valid).reshape(nrows, ncols)] = np.nan
    if spec.swap:
        # libtiff hands LERC the samples in file byte order when writing and swaps after decoding, so
        # the blob holds byte-swapped values in big-endian files (including GDAL's NaN fill).
        out.byteswap(inplace=True)
    return out[:rows]


def _decode_jpegxl(buf: memoryview, codec: TileCodec, spec: _Spec, rows: int) -> np.ndarray:
    # libjxl reports the image size before decoding; imagecodecs checks it against ``out`` first.
    heights = (rows,) if rows == codec.tile_height else (rows, codec.tile_height)
    error: Exception | None = None
    for height in heights:
        out = np.empty((height, codec.tile_width, codec.samples), spec.dtype)
        try:
            imagecodecs.jpegxl_decode(buf, 0, out=out)
        except ValueError as exc:  # declared size differs from ``out``
            error = exc
            continue
        except imagecodecs.JpegxlError as exc:
            if "NEED_MORE_INPUT" in str(exc):
                raise TruncatedTiffError("JPEG XL tile data ends early") from exc
            raise
        return out[:rows]
    raise MalformedTiffError(f"JPEG XL image does not match the tile: {error}")
