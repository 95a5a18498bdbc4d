"""Tile decoding (rasteret_dask.tiff.decode) against GDAL (rasterio) and tifffile.

Files are written by GDAL (GTiff and COG drivers, through rasterio) or by tifffile in pytest's tmp
dirs. Tile offsets, byte counts and tag values come from tifffile; a TileCodec is built from them by hand
(the header parser is tested elsewhere), every tile is decoded with ``decode_tile`` and the mosaic is
compared with ``rasterio.open(...).read()`` bit for bit, and every tile with tifffile's own decoding.
The real-file corpus in ../shared/corpus is checked the same way.
"""

from __future__ import annotations

import itertools
import json
import lzma
import math
import os
import re
import shutil
import struct
import subprocess
import time
import tracemalloc
import warnings
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import rasterio
import rasterio.shutil
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.transform import Affine
from rasterio.windows import Window

from rasteret_dask.errors import MalformedTiffError, TiffError, TruncatedTiffError, UnsupportedTiffError
from rasteret_dask.tiff.decode import (
    SUPPORTED_COMPRESSIONS,
    check_codec_supported,
    decode_mask_tile,
    decode_tile,
    fill_tile,
)
from rasteret_dask.tiff.model import TileCodec

WIDTH, HEIGHT = 70, 45  # not a multiple of any block size: edge tiles and a short last strip
FLOATS = ("float16", "float32", "float64")
LERC_CODECS = ("lerc", "lerc_deflate", "lerc_zstd")
PREDICTOR_CODECS = ("deflate", "lzw", "zstd")  # GDAL writes no predictor with LZMA
LERC_TYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "float32", "float64")

# rasterio's wheels build GDAL against IJG libjpeg 9, which upsamples subsampled chroma with a scaled
# IDCT; imagecodecs (like most GDAL builds: conda, Debian) uses libjpeg-turbo's triangle filter. Grey,
# RGB and other non-subsampled JPEGs decode identically; YCbCr (2x2 subsampled) tiles decode to RGB
# values that differ where chroma changes sharply. Against a libjpeg-turbo GDAL (Debian's gdal-bin)
# every YCbCr file here decodes bit for bit (test_ycbcr_jpeg_matches_libjpeg_turbo_gdal). Against
# rasterio's GDAL we bound the difference: on the smooth generated images the largest seen is 13 (mean
# below 0.4); on the corpus' real YCbCr files (sharp synthetic edges included) it reaches 119 with a
# mean of at most 2.6, so there only the mean is bounded.
YCBCR_JPEG_MAX_DIFF = 16
YCBCR_JPEG_MEAN_DIFF = 1.0
YCBCR_JPEG_CORPUS_MEAN_DIFF = 3.0


def check_ycbcr_vs_rasterio(
    ours: np.ndarray, gdal: np.ndarray, max_diff: int | None, mean_diff: float
) -> None:
    assert ours.shape == gdal.shape and ours.dtype == gdal.dtype == np.uint8
    diff = np.abs(ours.astype(np.int16) - gdal.astype(np.int16))
    assert diff.mean() <= mean_diff, diff.mean()
    if max_diff is not None:
        assert diff.max() <= max_diff, diff.max()


# --- building codecs and decoding whole files from tifffile's view of them ------------------------------


def sample_dtype(page: tifffile.TiffPage) -> str:
    if page.bitspersample == 1:
        return "uint8"
    if page.dtype is not None:
        return page.dtype.name
    # tifffile has no numpy type for e.g. 24-bit integers: name the next wider one (decode refuses it)
    size = 1 << max(0, math.ceil(math.log2(page.bitspersample / 8)))
    return np.dtype(f"{'i' if int(page.sampleformat) == 2 else 'u'}{size}").name


def codec_for(page: tifffile.TiffPage, byteorder: str) -> TileCodec:
    """A TileCodec from tifffile's tag values for one IFD."""
    tiled = page.is_tiled
    height = page.imagelength
    bits = page.bitspersample
    lerc = page.tags.get(50674)
    return TileCodec(
        compression=int(page.compression),
        predictor=int(page.predictor),
        dtype=sample_dtype(page),
        byteorder=byteorder,
        tile_width=page.tilewidth if tiled else page.imagewidth,
        tile_height=page.tilelength if tiled else min(page.rowsperstrip or height, height),
        samples=page.samplesperpixel if page.planarconfig == 1 else 1,
        bits_per_sample=bits,
        photometric=int(page.photometric),
        jpeg_tables=page.jpegtables,
        lerc_parameters=tuple(int(v) for v in lerc.value) if lerc is not None else None,
    )


@dataclass
class Segment:
    index: int
    data: bytes
    rows: int | None  # None for tiles
    plane: int
    y: int
    x: int


def segments(tf: tifffile.TiffFile, page: tifffile.TiffPage, codec: TileCodec) -> list[Segment]:
    """Every tile/strip of ``page`` with where it lands, read with tifffile's offsets and byte counts."""
    height, width = page.imagelength, page.imagewidth
    across = -(-width // codec.tile_width)
    down = -(-height // codec.tile_height)
    fh = tf.filehandle
    out = []
    for index, (offset, count) in enumerate(zip(page.dataoffsets, page.databytecounts, strict=True)):
        plane, rest = divmod(index, across * down)
        row, col = divmod(rest, across)
        y, x = row * codec.tile_height, col * codec.tile_width
        rows = None if page.is_tiled else min(codec.tile_height, height - y)
        data = b""
        if count and offset:
            fh.seek(offset)
            data = fh.read(count)
        out.append(Segment(index, data, rows, plane, y, x))
    return out


def decode_image(path: Path, page_index: int = 0) -> tuple[np.ndarray, list[tuple[Segment, np.ndarray]]]:
    """The IFD decoded with decode_tile: (samples, height, width) mosaic and the decoded tiles."""
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[page_index]
        codec = codec_for(page, tf.byteorder)
        spp = page.samplesperpixel
        out = np.zeros((spp, page.imagelength, page.imagewidth), np.dtype(codec.dtype))
        tiles = []
        for seg in segments(tf, page, codec):
            assert seg.data, "the generated files have no sparse tiles"
            tile = decode_tile(seg.data, codec, seg.rows)
            check_tile_layout(tile, codec, seg.rows)
            tiles.append((seg, tile))
            paste(out, tile, seg, codec)
    return out, tiles


def paste(out: np.ndarray, tile: np.ndarray, seg: Segment, codec: TileCodec) -> None:
    h = min(tile.shape[0], out.shape[1] - seg.y)
    w = min(codec.tile_width, out.shape[2] - seg.x)
    block = np.moveaxis(tile[:h, :w], -1, 0)
    bands = slice(seg.plane, seg.plane + 1) if codec.samples == 1 and out.shape[0] > 1 else slice(None)
    out[bands, seg.y : seg.y + h, seg.x : seg.x + w] = block


def check_tile_layout(tile: np.ndarray, codec: TileCodec, rows: int | None) -> None:
    expected_dtype = np.dtype(codec.dtype).newbyteorder("=")
    assert tile.shape == (rows or codec.tile_height, codec.tile_width, codec.samples)
    assert tile.dtype == expected_dtype and tile.dtype.isnative
    assert tile.flags.c_contiguous and tile.flags.writeable


def tifffile_tile(page: tifffile.TiffPage, seg: Segment) -> np.ndarray:
    """tifffile's own decoding of one segment, as (rows, width, samples)."""
    decoded, _, shape = page.decode(seg.data, seg.index, jpegtables=page.jpegtables)
    return np.asarray(decoded).reshape(shape[1], shape[2], shape[3])


def assert_bitwise_equal(ours: np.ndarray, theirs: np.ndarray, what: str) -> None:
    """Same shape, dtype and bits; NaNs match NaNs whatever their payload."""
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} != {theirs.shape}"
    assert ours.dtype == theirs.dtype, f"{what}: dtype {ours.dtype} != {theirs.dtype}"
    if ours.dtype.kind == "f":
        nan_ours, nan_theirs = np.isnan(ours), np.isnan(theirs)
        assert np.array_equal(nan_ours, nan_theirs), (
            f"{what}: NaNs differ at {np.argwhere(nan_ours != nan_theirs)[:5]}"
        )
        uint = f"u{ours.dtype.itemsize}"
        differ = (ours.view(uint) != theirs.view(uint)) & ~nan_ours
    else:
        differ = ours != theirs
    assert not differ.any(), (
        f"{what}: {int(differ.sum())} values differ, first at {np.argwhere(differ)[:3].tolist()}: "
        f"{ours[differ][:3]} != {theirs[differ][:3]}"
    )


def gdal_read(path: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path) as ds:
            return ds.read()


# --- the generated matrix -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One way of writing a test raster with GDAL."""

    dtype: str = "uint8"
    compress: str = "deflate"
    predictor: int = 1
    count: int = 1
    interleave: str = "pixel"
    block: tuple[int, int] | None = (16, 16)  # (width, height); None writes strips
    rows_per_strip: int = 7
    big_endian: bool = False
    driver: str = "GTiff"
    photometric: str | None = None
    nan: str = "none"  # float NaNs: "none", "pixels" (all bands at once) or "bands" (some bands only)
    options: tuple[tuple[str, str], ...] = ()

    @property
    def id(self) -> str:
        parts = [self.driver, self.dtype, self.compress, f"p{self.predictor}", f"b{self.count}"]
        if self.count > 1:
            parts.append(self.interleave)
        parts.append(f"t{self.block[0]}x{self.block[1]}" if self.block else f"s{self.rows_per_strip}")
        if self.big_endian:
            parts.append("be")
        if self.photometric:
            parts.append(self.photometric.lower())
        if self.nan != "none":
            parts.append(f"nan-{self.nan}")
        parts += [f"{k.lower()}-{v.lower()}" for k, v in self.options]
        return "-".join(parts)

    @property
    def alpha_mask(self) -> bool:
        """uint8 LERC with an unassociated alpha band: GDAL stores the alpha as the LERC mask."""
        return self.compress in LERC_CODECS and dict(self.options).get("ALPHA") == "YES"

    @property
    def ycbcr(self) -> bool:
        return self.photometric == "YCBCR" or (
            self.driver == "COG" and self.compress == "jpeg" and self.count == 3
        )


def case_is_valid(case: Case) -> bool:
    """Whether GDAL can write the case (and it means what it says)."""
    c, dt = case.compress, case.dtype
    if case.driver == "COG" and (case.block is None or case.big_endian or dt == "float16"):
        return False
    if case.driver == "COG" and (case.block[0] != case.block[1] or case.interleave != "pixel"):
        return False
    if case.predictor == 2 and c not in PREDICTOR_CODECS:
        return False
    if case.predictor == 3 and (c not in PREDICTOR_CODECS or dt not in FLOATS):
        return False
    if c == "jpeg" and (dt != "uint8" or case.count not in (1, 3, 4)):
        return False
    if case.ycbcr and (case.count != 3 or case.interleave != "pixel"):
        return False
    if c == "webp" and (dt != "uint8" or case.count not in (3, 4) or case.interleave != "pixel"):
        return False
    if c in LERC_CODECS and dt not in LERC_TYPES:
        return False
    if case.nan != "none" and dt not in FLOATS:
        return False
    return not (case.alpha_mask and (dt != "uint8" or case.interleave != "pixel" or case.count < 2))


def make_pixels(case: Case, seed: int = 0) -> np.ndarray:
    """Test pixels: smooth ramps plus noise, with extreme values (and NaNs/infinities for floats)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    bands = []
    for band in range(case.count):
        ramp = np.sin(xx / 9.0 + band) * np.cos(yy / 6.0)
        if case.compress in ("jpeg", "webp"):
            # photographic-like content: lossy codecs are exercised on what they are made for
            values = np.clip(128 + 90 * ramp + rng.normal(0, 4, ramp.shape), 0, 255).astype(np.uint8)
        elif case.dtype in FLOATS:
            scale = 20.0 if case.dtype == "float16" else 1000.0
            values = (scale * ramp + (xx - yy) * 0.37 + rng.normal(0, 2, ramp.shape)).astype(
                "float32" if case.dtype == "float16" else case.dtype
            )
            if case.compress not in LERC_CODECS:
                values[1, 1], values[1, 2], values[2, 1] = np.inf, -np.inf, -0.0
                values[3, 3] = np.finfo(values.dtype).tiny / 4  # subnormal
                values[4, 4] = np.nan
        else:
            info = np.iinfo(case.dtype)
            span = float(info.max) - float(info.min)
            values = info.min + (ramp + 1) / 2 * span * 0.9 + rng.normal(0, span / 5000, ramp.shape)
            values = np.clip(values, info.min, info.max).astype(case.dtype)
            values[0, :3] = [info.min, info.max, 0]  # differencing wraps around
            noisy = rng.random(ramp.shape) < 0.02
            values[noisy] = rng.integers(info.min, info.max, noisy.sum(), dtype=case.dtype, endpoint=True)
        bands.append(values)
    pixels = np.stack(bands)
    if case.nan == "pixels":
        holes = rng.random((HEIGHT, WIDTH)) < 0.1
        pixels[:, holes] = np.nan
    elif case.nan == "bands":
        holes = rng.random((HEIGHT, WIDTH)) < 0.1
        pixels[0, holes] = np.nan
    if case.alpha_mask:
        pixels[-1] = np.where(rng.random((HEIGHT, WIDTH)) < 0.2, 0, 255)
    return pixels


def write_case(case: Case, path: Path) -> Path:
    profile = {
        "driver": case.driver,
        "width": WIDTH,
        "height": HEIGHT,
        "count": case.count,
        "dtype": "float32" if case.dtype == "float16" else case.dtype,
        "crs": "EPSG:32633",
        "transform": Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4600000.0),
        "compress": case.compress,
    }
    if case.driver == "COG":
        profile["blocksize"] = case.block[0]
        if case.predictor != 1:
            profile["predictor"] = {2: "STANDARD", 3: "FLOATING_POINT"}[case.predictor]
        if case.compress == "webp":
            profile["quality"] = 100  # lossless in the COG driver
    else:
        profile["interleave"] = case.interleave
        if case.predictor != 1:
            profile["predictor"] = case.predictor
        if case.block is None:
            profile["blockysize"] = case.rows_per_strip
        else:
            profile.update(tiled=True, blockxsize=case.block[0], blockysize=case.block[1])
        if case.big_endian:
            profile["endianness"] = "BIG"
        if case.photometric:
            profile["photometric"] = case.photometric
        if case.dtype == "float16":
            profile["nbits"] = 16
    for key, value in case.options:
        profile[key.lower()] = value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(make_pixels(case))
    return path


def check_case(case: Case, path: Path) -> None:
    """decode_tile over every tile of ``path``: mosaic vs GDAL, tiles vs tifffile."""
    ours, tiles = decode_image(path)
    gdal = gdal_read(path)
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        assert int(page.compression) == COMPRESSION_CODES[case.compress]
        assert int(page.predictor) == case.predictor
        assert tf.byteorder == (">" if case.big_endian else "<")
        assert page.is_tiled == (case.block is not None)
        for seg, tile in tiles:
            check_tile_vs_tifffile(case, page, seg, tile)
    if case.dtype == "float16":
        ours = ours.astype(np.float32)  # GDAL 3.10 exposes half floats as Float32
    if case.ycbcr:
        check_ycbcr_vs_rasterio(ours, gdal, YCBCR_JPEG_MAX_DIFF, YCBCR_JPEG_MEAN_DIFF)
    elif case.alpha_mask:
        # GDAL leaves the colour samples of alpha-0 pixels as whatever its buffer held (LERC stores
        # no values there); compare the alpha band everywhere and colours where alpha is 255.
        assert_bitwise_equal(ours[-1], gdal[-1], "alpha")
        visible = gdal[-1] == 255
        assert_bitwise_equal(ours[:-1, visible], gdal[:-1, visible], "colour under alpha")
        assert not ours[:-1, ~visible].any()
    else:
        assert_bitwise_equal(ours, gdal, f"{case.id} vs GDAL")


def check_tile_vs_tifffile(case: Case, page: tifffile.TiffPage, seg: Segment, tile: np.ndarray) -> None:
    if case.compress == "jpeg" and case.interleave == "band":
        # tifffile asks libjpeg for grayscale output of RGB-tagged planes: "Bogus JPEG colorspace"
        with pytest.raises(imagecodecs.Jpeg8Error):
            tifffile_tile(page, seg)
        return
    if case.alpha_mask:
        # tifffile does not turn the LERC mask back into the alpha band and refuses the tile
        with pytest.raises(tifffile.TiffFileError):
            tifffile_tile(page, seg)
        return
    theirs = tifffile_tile(page, seg)
    if theirs.dtype != tile.dtype:
        theirs = theirs.astype(tile.dtype)
    assert theirs.shape == tile.shape
    if case.compress in LERC_CODECS and case.dtype in FLOATS:
        if lerc_band_sequential(seg.data, tile.shape):
            # NaNs in some bands only (in big-endian files also swapped values that look like NaNs):
            # GDAL writes one LERC band per sample, band after band. tifffile reshapes that data as if
            # it were pixel-interleaved; we (and GDAL) do not.
            tile = np.ascontiguousarray(tile.transpose(2, 0, 1)).reshape(tile.shape)
        check_lerc_vs_tifffile(tile, theirs, case.big_endian)
        return
    assert_bitwise_equal(tile, theirs, f"{case.id} tile {seg.index} vs tifffile")


def lerc_band_sequential(data: bytes, shape: tuple[int, ...]) -> bool:
    """Whether a multi-sample LERC tile holds one LERC band per sample (imagecodecs says (bands, h, w))."""
    decoded = imagecodecs.lerc_decode(data)  # undoes a deflate/zstd layer itself
    return shape[2] > 1 and decoded.shape == (shape[2], shape[0], shape[1])


def check_lerc_vs_tifffile(ours: np.ndarray, theirs: np.ndarray, swapped: bool) -> None:
    """Pixels outside the LERC validity mask: GDAL (and we) give NaN, tifffile gives 0.

    In big-endian files GDAL writes the NaN before swapping the bytes, so the value is a swapped NaN.
    """
    uint = f"u{ours.dtype.itemsize}"
    nan = np.array(np.nan, ours.dtype)
    if swapped:
        nan = nan.byteswap()
    differ = ours.view(uint) != theirs.view(uint)
    assert (theirs[differ] == 0).all()
    assert (ours[differ].view(uint) == nan.view(uint)).all()


COMPRESSION_CODES = {
    "none": 1,
    "lzw": 5,
    "jpeg": 7,
    "deflate": 8,
    "packbits": 32773,
    "lerc": 34887,
    "lerc_deflate": 34887,
    "lerc_zstd": 34887,
    "lzma": 34925,
    "zstd": 50000,
    "webp": 50001,
}

C = Case
DEFAULT_CASES = [
    # integers, every byte codec, predictors, layouts, byte orders
    C("uint8", "deflate", 2, 3, "pixel", (16, 16)),
    C("uint8", "lzw", 1, 1, block=None),
    C("int8", "zstd", 2, 1, block=(32, 16), big_endian=True),
    C("uint16", "deflate", 2, 3, "band", (32, 16), big_endian=True),
    C("int16", "lzw", 2, 4, "pixel", None, big_endian=True),
    C("uint16", "lzma", 1, 1, block=(256, 256)),
    C("uint32", "lzma", 1, 3, "pixel", (16, 16), big_endian=True),
    C("int32", "packbits", 1, 3, "pixel", (16, 16), big_endian=True),
    C("uint64", "zstd", 2, 1, block=(16, 16), big_endian=True),
    C("int64", "deflate", 1, 3, "band", None),
    C("uint16", "none", 1, 3, "pixel", None, big_endian=True),
    # floats: both predictors (2 differences the bit patterns), half floats, byte orders
    C("float16", "deflate", 3, 3, "pixel", (16, 16), big_endian=True),
    C("float16", "lzw", 2, 1, block=None),
    C("float32", "deflate", 3, 3, "pixel", (16, 16), big_endian=True),
    C("float32", "zstd", 3, 1, block=None),
    C("float32", "lzw", 2, 4, "pixel", (32, 16)),
    C("float64", "lzma", 1, 1, block=(16, 16), big_endian=True),
    C("float64", "none", 1, 3, "band", None, big_endian=True),
    # LERC: plain, with its deflate/zstd layer, NaN masks (one for all bands, one per band), alpha mask
    C("float32", "lerc", 1, 3, "pixel", (16, 16), nan="pixels"),
    C("float32", "lerc_deflate", 1, 3, "pixel", (32, 16), big_endian=True, nan="bands"),
    C("float64", "lerc_zstd", 1, 1, block=None, nan="pixels"),
    C("uint16", "lerc_zstd", 1, 1, block=None, big_endian=True),
    C("int16", "lerc", 1, 3, "band", (16, 16)),
    C("uint8", "lerc_deflate", 1, 4, "pixel", (16, 16), options=(("ALPHA", "YES"),)),
    C("float32", "lerc", 1, 1, block=(16, 16), options=(("MAX_Z_ERROR", "0.5"),)),
    # JPEG: grey, RGB, YCbCr (tiles and strips), planar separate, RGBA
    C("uint8", "jpeg", 1, 1, block=(16, 16)),
    C("uint8", "jpeg", 1, 3, "pixel", (32, 16), photometric="YCBCR"),
    C("uint8", "jpeg", 1, 3, "pixel", None, rows_per_strip=16, photometric="YCBCR"),
    C("uint8", "jpeg", 1, 3, "pixel", (16, 16), photometric="RGB"),
    C("uint8", "jpeg", 1, 3, "band", (16, 16)),
    C("uint8", "jpeg", 1, 4, "pixel", (16, 16), photometric="RGB"),
    # WebP: lossless and lossy, RGB and RGBA, tiles and strips
    C("uint8", "webp", 1, 3, "pixel", (16, 16), options=(("WEBP_LOSSLESS", "TRUE"),)),
    C("uint8", "webp", 1, 4, "pixel", None, options=(("WEBP_LOSSLESS", "TRUE"),)),
    C("uint8", "webp", 1, 3, "pixel", (32, 16)),
    # the COG driver
    C("uint16", "deflate", 2, 3, "pixel", (16, 16), driver="COG"),
    C("float32", "lerc_zstd", 1, 1, block=(16, 16), driver="COG", nan="pixels"),
    C("uint8", "jpeg", 1, 3, "pixel", (16, 16), driver="COG"),
    C("uint8", "webp", 1, 3, "pixel", (256, 256), driver="COG"),
]


def slow_cases() -> list[Case]:
    dtypes = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", *FLOATS)
    codecs = ("none", "deflate", "lzw", "zstd", "lzma", "packbits", *LERC_CODECS, "jpeg", "webp")
    layouts = [(16, 16), (32, 16), (256, 256), None]
    cases = []
    for dtype, codec, predictor, count, interleave, block, be in itertools.product(
        dtypes, codecs, (1, 2, 3), (1, 3), ("pixel", "band"), layouts, (False, True)
    ):
        if count == 1 and interleave == "band":
            continue
        rows = 16 if codec == "jpeg" else 7
        for photometric in ("YCBCR", None) if codec == "jpeg" and count == 3 else (None,):
            cases.append(
                C(dtype, codec, predictor, count, interleave, block, rows, be, photometric=photometric)
            )
    for dtype, codec, block, nan in itertools.product(
        ("float32", "float64"), LERC_CODECS, [(16, 16), None], ("pixels", "bands")
    ):
        cases.append(C(dtype, codec, 1, 3, "pixel", block, nan=nan))
    for codec, block in itertools.product(("webp", "jpeg"), [(16, 16), None]):
        cases.append(C("uint8", codec, 1, 4, "pixel", block, rows_per_strip=16))
    for dtype, codec, predictor, size in itertools.product(
        ("uint8", "uint16", "int32", "float32", "float64"), codecs, (1, 2, 3), (16, 256)
    ):
        cases.append(C(dtype, codec, predictor, 3, "pixel", (size, size), driver="COG"))
    return [case for case in dict.fromkeys(cases) if case_is_valid(case)]


def test_default_matrix_is_valid_and_covers_the_codecs():
    assert all(case_is_valid(case) for case in DEFAULT_CASES)
    assert {case.compress for case in DEFAULT_CASES} == set(COMPRESSION_CODES)
    assert {case.dtype for case in DEFAULT_CASES} >= {"uint8", "int8", "uint16", "int16", "uint32", "int32"}
    assert {case.dtype for case in DEFAULT_CASES} >= {"uint64", "int64", *FLOATS}


@pytest.mark.parametrize("case", DEFAULT_CASES, ids=lambda c: c.id)
def test_matrix(case, tmp_path):
    check_case(case, write_case(case, tmp_path / "case.tif"))


@pytest.mark.slow
@pytest.mark.parametrize("case", slow_cases(), ids=lambda c: c.id)
def test_matrix_full(case, tmp_path):
    check_case(case, write_case(case, tmp_path / "case.tif"))


# --- files tifffile writes: codecs and options GDAL cannot write --------------------------------------


@dataclass(frozen=True)
class TfCase:
    """A raster written by tifffile: LZMA with predictors, JPEG XL, big-endian variants."""

    dtype: str
    compression: str
    predictor: int = 1
    samples: int = 1
    planar: str = "contig"
    tile: tuple[int, int] | None = (16, 16)  # (height, width); None writes strips of 7 rows
    byteorder: str = "<"
    gdal_reads: bool = True  # this GDAL build lacks JPEG XL

    @property
    def id(self) -> str:
        layout = f"t{self.tile[1]}x{self.tile[0]}" if self.tile else "s7"
        return f"{self.dtype}-{self.compression}-p{self.predictor}-b{self.samples}-{self.planar}-{layout}-{self.byteorder}"


def tf_pixels(case: TfCase) -> np.ndarray:
    rng = np.random.default_rng(3)
    shape = (HEIGHT, WIDTH, case.samples)
    if case.dtype in FLOATS:
        yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
        values = (np.sin(xx / 5.0)[..., None] * 50 + yy[..., None] + rng.normal(0, 1, shape)).astype(
            case.dtype
        )
        if case.compression != "jpegxl":
            values[0, 0, 0], values[1, 1, 0] = np.nan, -np.inf
        return values
    info = np.iinfo(case.dtype)
    return rng.integers(info.min, info.max, shape, dtype=case.dtype, endpoint=True)


def write_tf_case(case: TfCase, path: Path) -> np.ndarray:
    pixels = tf_pixels(case)
    data = np.moveaxis(pixels, -1, 0) if case.planar == "separate" else pixels
    layout = {"tile": case.tile} if case.tile else {"rowsperstrip": 7}
    tifffile.imwrite(
        path,
        data if case.samples > 1 else data[..., 0],
        byteorder=case.byteorder,
        photometric="rgb" if case.samples >= 3 else "minisblack",
        planarconfig=case.planar if case.samples > 1 else None,
        extrasamples=("unassalpha",) if case.samples == 4 else None,
        compression=case.compression,
        compressionargs={"lossless": True} if case.compression == "jpegxl" else None,
        predictor=case.predictor if case.predictor != 1 else None,
        **layout,
    )
    return pixels


TF_CASES = [
    TfCase("uint16", "lzma", 2, 3, "contig", (16, 16), ">"),
    TfCase("int8", "lzma", 2, 1, "contig", None),
    TfCase("float32", "lzma", 3, 3, "contig", (32, 16), ">"),
    TfCase("float64", "lzma", 3, 1, "contig", None, "<"),
    TfCase("float16", "zlib", 3, 3, "contig", (16, 16), ">"),
    TfCase("uint16", "zstd", 2, 2, "separate", None, ">"),
    TfCase("uint64", "zstd", 2, 3, "contig", (16, 16), ">"),
    TfCase("int32", "lzw", 2, 3, "separate", (16, 16), ">"),
    TfCase("uint8", "jpegxl", 1, 3, "contig", (16, 16), gdal_reads=False),
    TfCase("uint8", "jpegxl", 1, 4, "contig", (16, 16), gdal_reads=False),
    TfCase("uint16", "jpegxl", 1, 1, "contig", (32, 32), gdal_reads=False),
    TfCase("float16", "jpegxl", 1, 1, "contig", (16, 16), gdal_reads=False),
    TfCase("float32", "jpegxl", 1, 3, "contig", (16, 16), gdal_reads=False),
    TfCase("uint8", "jpegxl", 1, 1, "contig", None, gdal_reads=False),
]


@pytest.mark.parametrize("case", TF_CASES, ids=lambda c: c.id)
def test_tifffile_written(case, tmp_path):
    path = tmp_path / "tf.tif"
    pixels = write_tf_case(case, path)
    ours, tiles = decode_image(path)
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        assert int(page.predictor) == case.predictor
        for seg, tile in tiles:
            assert_bitwise_equal(tile, tifffile_tile(page, seg).astype(tile.dtype), f"tile {seg.index}")
    # all these codecs are lossless: the written pixels are an oracle too
    assert_bitwise_equal(ours, np.moveaxis(pixels, -1, 0), "written pixels")
    if case.gdal_reads:
        gdal = gdal_read(path)
        assert_bitwise_equal(ours.astype(gdal.dtype) if case.dtype == "float16" else ours, gdal, "GDAL")
    else:
        with pytest.raises(rasterio.errors.RasterioIOError, match="JXL"):
            gdal_read(path)


@pytest.mark.parametrize(
    ("written", "alias"),
    [("zlib", 32946), ("zstd", 34926), ("webp", 34927), ("jpegxl", 52546)],
)
def test_compression_aliases(written, alias, tmp_path):
    """Deprecated/alternative tag values name the same bitstreams."""
    path = tmp_path / "alias.tif"
    samples = 3 if written == "webp" else 1
    write_tf_case(TfCase("uint8", written, samples=samples, gdal_reads=False), path)
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        codec = codec_for(page, tf.byteorder)
        aliased = replace(codec, compression=alias)
        assert alias in SUPPORTED_COMPRESSIONS
        for seg in segments(tf, page, codec):
            assert_bitwise_equal(decode_tile(seg.data, aliased), tifffile_tile(page, seg), f"{alias}")


# --- internal masks -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("driver", "block"),
    [("GTiff", (16, 16)), ("GTiff", None), ("COG", (16, 16))],
    ids=["gtiff", "strips", "cog"],
)
def test_gdal_internal_mask(driver, block, tmp_path):
    case = C("uint8", "deflate", 1, 3, "pixel", block, driver=driver)
    path = tmp_path / "masked.tif"
    write_case(case, path)
    valid = np.random.default_rng(5).random((HEIGHT, WIDTH)) < 0.6
    valid[:8, :8] = True
    with warnings.catch_warnings(), rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        warnings.simplefilter("ignore")
        src = path
        if driver == "COG":  # the COG driver copies a masked GTiff
            src = tmp_path / "src.tif"
            write_case(replace(case, driver="GTiff"), src)
        with rasterio.open(src, "r+") as ds:
            ds.write_mask(valid.astype(np.uint8) * 255)
        if driver == "COG":
            with rasterio.open(src) as ds:
                rasterio.shutil.copy(ds, path, driver="COG", blocksize=16, compress="deflate")
        with rasterio.open(path) as ds:
            gdal_mask = ds.read_masks(1) != 0
    with tifffile.TiffFile(path) as tf:
        masks = [p for p in tf.pages if int(p.photometric) == 4]
        page = next(p for p in masks if p.imagewidth == WIDTH)
        codec = codec_for(page, tf.byteorder)
        assert codec.bits_per_sample == 1
        ours = np.zeros((HEIGHT, WIDTH), bool)
        for seg in segments(tf, page, codec):
            tile = decode_mask_tile(seg.data, codec, seg.rows)
            assert tile.dtype == np.bool_ and tile.shape == (seg.rows or codec.tile_height, codec.tile_width)
            assert np.array_equal(tile, tifffile_tile(page, seg)[..., 0].astype(bool))
            h, w = min(tile.shape[0], HEIGHT - seg.y), min(codec.tile_width, WIDTH - seg.x)
            ours[seg.y : seg.y + h, seg.x : seg.x + w] = tile[:h, :w]
    assert np.array_equal(ours, gdal_mask)
    assert np.array_equal(ours, valid)


@pytest.mark.parametrize("compression", [None, "zlib", "lzw", "packbits", "zstd", "lzma"])
@pytest.mark.parametrize("byteorder", ["<", ">"])
@pytest.mark.parametrize("tile", [(16, 16), (16, 32), None], ids=["t16", "t32x16", "strips"])
def test_tifffile_masks(compression, byteorder, tile, tmp_path):
    valid = np.random.default_rng(6).random((HEIGHT, WIDTH)) < 0.7
    path = tmp_path / "mask.tif"
    layout = {"tile": tile} if tile else {"rowsperstrip": 7}
    tifffile.imwrite(path, valid, photometric=4, compression=compression, byteorder=byteorder, **layout)
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        codec = codec_for(page, tf.byteorder)
        ours = np.zeros((HEIGHT, WIDTH), bool)
        for seg in segments(tf, page, codec):
            tile_mask = decode_mask_tile(seg.data, codec, seg.rows)
            assert np.array_equal(tile_mask, tifffile_tile(page, seg)[..., 0].astype(bool))
            h, w = min(tile_mask.shape[0], HEIGHT - seg.y), min(codec.tile_width, WIDTH - seg.x)
            ours[seg.y : seg.y + h, seg.x : seg.x + w] = tile_mask[:h, :w]
        assert np.array_equal(ours, page.asarray())
    assert np.array_equal(ours, valid)


# --- sparse tiles: fill_tile against GDAL --------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "nodata"),
    [
        ("uint8", None),
        ("uint8", 7.6),  # GDAL rounds a fractional nodata to the nearest integer
        ("uint8", 7.4),
        ("int16", -7.5),  # half away from zero
        ("uint16", 65535),
        ("int32", -2147483648),
        ("uint64", 2**63),
        ("int64", -9223372036854775808),
        ("float32", float("nan")),
        ("float32", -9999.5),
        ("float64", 1e300),
        ("float16", -3.25),
    ],
)
@pytest.mark.parametrize("samples", [1, 3])
def test_fill_tile_matches_gdal_sparse_tiles(dtype, nodata, samples, tmp_path):
    path = tmp_path / "sparse.tif"
    profile = {
        "driver": "GTiff",
        "width": WIDTH,
        "height": HEIGHT,
        "count": samples,
        "dtype": "float32" if dtype == "float16" else dtype,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": 16,
        "blockysize": 16,
        "sparse_ok": True,
        "compress": "deflate",
    }
    if dtype == "float16":
        profile["nbits"] = 16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(np.ones((samples, 16, 16), profile["dtype"]), window=Window(16, 16, 16, 16))
        with rasterio.open(path) as ds:
            gdal = ds.read()
            gdal_nodata = ds.nodata
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        codec = codec_for(page, tf.byteorder)
        sparse = [seg for seg in segments(tf, page, codec) if not seg.data]
    assert len(sparse) == len(page.databytecounts) - 1
    for seg in sparse:
        tile = fill_tile(codec, 0.0 if gdal_nodata is None else gdal_nodata)
        check_tile_layout(tile, codec, None)
        h, w = min(16, HEIGHT - seg.y), min(16, WIDTH - seg.x)
        theirs = np.moveaxis(gdal[:, seg.y : seg.y + h, seg.x : seg.x + w], 0, -1)
        assert_bitwise_equal(tile[:h, :w].astype(theirs.dtype), theirs, f"sparse tile {seg.index}")


def test_fill_tile_rows_and_out_of_range_values():
    codec = TileCodec(8, 1, "uint8", "<", 16, 7, 2, 8, 1)
    assert fill_tile(codec, 3, rows=2).shape == (2, 16, 2)
    assert (fill_tile(codec, 300) == 255).all() and (fill_tile(codec, -5) == 0).all()
    assert (fill_tile(codec, float("nan")) == 0).all()
    f16 = TileCodec(8, 1, "float16", ">", 16, 7, 1, 16, 1)
    assert (fill_tile(f16, 1e6) == np.finfo(np.float16).max).all()
    assert np.isinf(fill_tile(f16, float("-inf"))).all()


# --- the real-file corpus -------------------------------------------------------------------------------

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
CORPUS_ORACLE = json.loads((CORPUS / "oracle.json").read_text()) if (CORPUS / "oracle.json").exists() else {}
CORPUS_READABLE = sorted(name for name, entry in CORPUS_ORACLE.items() if entry["gdal"]["read_ok"])
CORPUS_UNREADABLE = sorted(name for name, entry in CORPUS_ORACLE.items() if not entry["gdal"]["read_ok"])

# GDAL reads these, decode_tile does not: check_codec_supported must refuse them, naming the feature.
CORPUS_UNSUPPORTED = {
    "asynctiff__12bit.cropped.rgb.tiff": "12-bit uint16 samples",
    "asynctiff__12bit.cropped.tiff": "12-bit uint16 samples",
    "asynctiff__miniswhite-1c-1b.tiff": "1-bit samples",  # bilevel images (not masks)
    "asynctiff__palette-1c-1b.tiff": "1-bit samples",
    "asynctiff__tiled-gray-i1.tif": "1-bit samples",
    "asynctiff__palette-1c-4b.tiff": "4-bit uint8 samples",
    "gdal__int10.tif": "10-bit uint16 samples",
    "gdal__int24.tif": "24-bit",
    "asynctiff__tiled-cmyk-i8.tif": "photometric 5 (CMYK)",  # GDAL converts 8-bit CMYK to RGBA
    "gdal__rgbsmall_cmyk.tif": "photometric 5 (CMYK)",
    "gdal__cint16.tif": "sample type complex",
    "gdal__cint32.tif": "sample type complex",
    "gdal__rgba-cfloat64.tif": "sample type complex",
    "gdal__slim_g4.tif": "compression 4 (CCITT Group 4)",
    "gdal__zackthecat.tif": "compression 6 (old-style JPEG)",
}


def is_mask(codec: TileCodec) -> bool:
    return codec.photometric == 4


def test_corpus_is_there(corpus_oracle):
    assert CORPUS_READABLE and set(CORPUS_ORACLE) == set(corpus_oracle)
    assert set(CORPUS_UNSUPPORTED) <= set(CORPUS_READABLE)


@pytest.mark.parametrize("name", CORPUS_READABLE)
def test_corpus_file(name, corpus_dir):
    path = corpus_dir / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tf = tifffile.TiffFile(path)
    with tf:
        if name in CORPUS_UNSUPPORTED:
            with pytest.raises(UnsupportedTiffError, match=re.escape(CORPUS_UNSUPPORTED[name])):
                check_codec_supported(codec_for(tf.pages[0], tf.byteorder))
            return
        decoded = 0
        for page in tf.pages:
            codec = codec_for(page, tf.byteorder)
            check_codec_supported(codec)
            for seg in segments(tf, page, codec):
                if not seg.data:
                    continue  # sparse: the caller fills these (checked below against GDAL)
                theirs = tifffile_tile(page, seg)
                if is_mask(codec):
                    ours = decode_mask_tile(seg.data, codec, seg.rows)
                    assert np.array_equal(ours, theirs[..., 0].astype(bool)), f"mask tile {seg.index}"
                elif codec.compression == 34887 and codec.dtype.startswith("float"):
                    check_lerc_vs_tifffile(
                        decode_tile(seg.data, codec, seg.rows), theirs, codec.byteorder == ">"
                    )
                else:
                    ours = decode_tile(seg.data, codec, seg.rows)
                    assert_bitwise_equal(
                        ours, theirs.astype(ours.dtype), f"page {page.index} tile {seg.index}"
                    )
                decoded += 1
        assert decoded
        check_corpus_level0_vs_gdal(tf, path)


def check_corpus_level0_vs_gdal(tf: tifffile.TiffFile, path: Path) -> None:
    """The full-resolution image (sparse tiles filled with GDAL's nodata) and its mask against GDAL."""
    page = tf.pages[0]
    codec = codec_for(page, tf.byteorder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path) as ds:
            gdal = ds.read()
            fill = 0.0 if ds.nodata is None else ds.nodata
            gdal_mask = ds.read_masks(1) != 0
    ours = np.zeros((page.samplesperpixel, page.imagelength, page.imagewidth), np.dtype(codec.dtype))
    for seg in segments(tf, page, codec):
        tile = decode_tile(seg.data, codec, seg.rows) if seg.data else fill_tile(codec, fill, seg.rows)
        paste(ours, tile, seg, codec)
    if ours.dtype == np.float16:
        ours = ours.astype(np.float32)
    if codec.compression == 7 and codec.photometric == 6:
        check_ycbcr_vs_rasterio(ours, gdal, None, YCBCR_JPEG_CORPUS_MEAN_DIFF)
    else:
        assert_bitwise_equal(ours, gdal, f"{path.name} vs GDAL")
    masks = [p for p in tf.pages if int(p.photometric) == 4 and p.imagewidth == page.imagewidth]
    if masks:
        mask_page = masks[0]
        mask_codec = codec_for(mask_page, tf.byteorder)
        mask = np.zeros(gdal_mask.shape, bool)
        for seg in segments(tf, mask_page, mask_codec):
            paste(mask[None], decode_mask_tile(seg.data, mask_codec, seg.rows)[..., None], seg, mask_codec)
        assert np.array_equal(mask, gdal_mask)


def test_corpus_files_gdal_cannot_read_raise_only_tiff_errors(corpus_dir):
    """Deliberately odd or broken files: decoding their tiles fails with our errors or succeeds."""
    tried = 0
    for name in CORPUS_UNREADABLE:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                tf = tifffile.TiffFile(corpus_dir / name)
            except Exception:
                continue  # no tile table to take tiles from: the header parser's business
        with tf:
            for page in tf.pages:
                try:
                    codec = codec_for(page, tf.byteorder)
                    check_codec_supported(codec)
                except TiffError:
                    tried += 1
                    continue
                except Exception:
                    continue  # tifffile cannot describe the IFD either
                for seg in segments(tf, page, codec)[:50]:
                    if seg.data:
                        tried += 1
                        decode_any(seg.data, codec, seg.rows)
    assert tried


def decode_any(data: bytes, codec: TileCodec, rows: int | None = None) -> np.ndarray | None:
    """decode_tile or decode_mask_tile; None when it raised one of our errors (anything else fails)."""
    started = time.perf_counter()
    try:
        return (decode_mask_tile if is_mask(codec) else decode_tile)(data, codec, rows)
    except TiffError:
        return None
    finally:
        assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize(
    "name",
    [
        "asynctiff__quad-tile.jpg.tiff",
        "asynctiff__tiled-jpeg-ycbcr.tif",
        "cogeotiffjs__be_cog.tiff",
        "gdal__imgpb17.tif",
        "gen_gtiff_jpeg_ycbcr_mask_ovr.tif",
        "rio__goes.tif",
        "riotiler__cog_rgb.tif",
    ],
)
def test_ycbcr_jpeg_matches_libjpeg_turbo_gdal(name, corpus_dir, tmp_path):
    """Bit-exact YCbCr JPEG against a GDAL built with libjpeg-turbo (Debian's gdal-bin), if installed."""
    gdal_translate = shutil.which("gdal_translate")
    if gdal_translate is None:
        pytest.skip("gdal_translate (a libjpeg-turbo GDAL, e.g. Debian's gdal-bin) is not installed")
    out = tmp_path / "plain.tif"
    env = {**os.environ, "GDAL_PAM_ENABLED": "NO"}
    subprocess.run(
        [gdal_translate, "-q", "-co", "COMPRESS=NONE", str(corpus_dir / name), str(out)], check=True, env=env
    )
    ours, _ = decode_image(corpus_dir / name)
    theirs = tifffile.imread(out)
    assert_bitwise_equal(ours, np.moveaxis(theirs, -1, 0), name)


# --- hostile and broken input -------------------------------------------------------------------------

SAMPLE_CASES = {
    "none": C("uint16", "none", 1, 3, "pixel"),
    "lzw": C("uint8", "lzw", 2, 1),
    "deflate": C("float32", "deflate", 3, 1),
    "zstd": C("int16", "zstd", 2, 3, "pixel"),
    "lzma": C("uint32", "lzma", 1, 1),
    "packbits": C("uint8", "packbits", 1, 3, "pixel"),
    "lerc": C("float32", "lerc", 1, 1, nan="pixels"),
    "lerc_deflate": C("float32", "lerc_deflate", 1, 3, "pixel", nan="bands"),
    "lerc_zstd": C("uint16", "lerc_zstd", 1, 1),
    "jpeg_ycbcr": C("uint8", "jpeg", 1, 3, "pixel", photometric="YCBCR"),
    "jpeg_gray": C("uint8", "jpeg", 1, 1),
    "webp_lossless": C("uint8", "webp", 1, 3, "pixel", options=(("WEBP_LOSSLESS", "TRUE"),)),
    "webp_lossy": C("uint8", "webp", 1, 4, "pixel"),
}


@pytest.fixture(scope="module")
def sample_tiles(tmp_path_factory) -> dict[str, tuple[bytes, TileCodec]]:
    """One real 16x16 tile per codec (the second, a full interior one), with its codec."""
    root = tmp_path_factory.mktemp("samples")
    samples = {}
    for name, case in SAMPLE_CASES.items():
        path = write_case(case, root / f"{name}.tif")
        with tifffile.TiffFile(path) as tf:
            page = tf.pages[0]
            codec = codec_for(page, tf.byteorder)
            samples[name] = (segments(tf, page, codec)[1].data, codec)
    jxl = root / "jxl.tif"
    write_tf_case(TfCase("uint8", "jpegxl", 1, 3, gdal_reads=False), jxl)
    mask = root / "mask.tif"
    tifffile.imwrite(
        mask,
        np.random.default_rng(1).random((HEIGHT, WIDTH)) < 0.5,
        photometric=4,
        compression="zlib",
        tile=(16, 16),
    )
    for name, path in (("jpegxl", jxl), ("mask", mask)):
        with tifffile.TiffFile(path) as tf:
            page = tf.pages[0]
            codec = codec_for(page, tf.byteorder)
            samples[name] = (segments(tf, page, codec)[1].data, codec)
    return samples


def expected_shape(codec: TileCodec, rows: int | None = None) -> tuple[int, ...]:
    rows = rows or codec.tile_height
    return (rows, codec.tile_width) if is_mask(codec) else (rows, codec.tile_width, codec.samples)


def test_sample_tiles_decode(sample_tiles):
    assert set(sample_tiles) == {*SAMPLE_CASES, "jpegxl", "mask"}
    for name, (data, codec) in sample_tiles.items():
        out = decode_any(data, codec)
        assert out is not None and out.shape == expected_shape(codec), name


GARBAGE = [
    b"\x00",
    b"\xff" * 7,
    bytes(range(256)) * 4,
    np.random.default_rng(0).bytes(3000),
    b"\xff\xd8" + np.random.default_rng(1).bytes(500),
    b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x10\x00\x10\x03" + bytes(500),
    b"RIFF\x20\x00\x00\x00WEBPVP8L" + np.random.default_rng(2).bytes(200),
    b"Lerc2 \x03\x00\x00\x00" + np.random.default_rng(3).bytes(200),
    zlib.compress(b"Lerc2 " + bytes(300)),
    b"(\xb5/\xfd" + np.random.default_rng(4).bytes(100),
    b"\xfd7zXZ\x00" + np.random.default_rng(5).bytes(100),
    b"\xff\x0a" + np.random.default_rng(6).bytes(100),
]


@pytest.mark.parametrize("garbage", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_raises_only_tiff_errors(garbage, sample_tiles):
    for _, codec in sample_tiles.values():
        out = decode_any(garbage, codec)
        assert out is None or out.shape == expected_shape(codec)


def test_empty_data_is_truncated(sample_tiles):
    for _, codec in sample_tiles.values():
        with pytest.raises(TruncatedTiffError):
            (decode_mask_tile if is_mask(codec) else decode_tile)(b"", codec)


# the last bytes of these are end-of-stream codes or checksums: every pixel may come before them
COMPLETE_BEFORE_THE_END = {"lzw", "deflate", "lzma", "mask"}


@pytest.mark.parametrize("cut", ["third", "half", "last-byte"])
def test_truncated_tiles_raise_truncated(cut, sample_tiles):
    for name, (data, codec) in sample_tiles.items():
        short = {"third": data[: len(data) // 3], "half": data[: len(data) // 2], "last-byte": data[:-1]}[cut]
        if cut == "last-byte" and name in COMPLETE_BEFORE_THE_END:
            out = decode_any(short, codec)
            assert out is None or np.array_equal(out, decode_any(data, codec), equal_nan=True), name
            continue
        with pytest.raises(TruncatedTiffError):
            (decode_mask_tile if is_mask(codec) else decode_tile)(short, codec)


def test_excess_data_is_ignored(sample_tiles):
    """A strip holding more rows than the caller asks for (e.g. a padded last strip): keep the first."""
    for name, (data, codec) in sample_tiles.items():
        full = decode_any(data, codec)
        part = (decode_mask_tile if is_mask(codec) else decode_tile)(data, codec, rows=5)
        assert part.shape == expected_shape(codec, 5)
        assert_bitwise_equal(part, full[:5], name)
        padded = data + bytes(100)  # tile byte counts may include padding after the data
        assert_bitwise_equal((decode_mask_tile if is_mask(codec) else decode_tile)(padded, codec), full, name)


def check_bounded(call, limit_mb: float = 16.0, seconds: float = 2.0):
    """Run ``call``; fail if it raises anything but a TiffError, is slow, or allocates much (numpy/Python)."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        result = call()
    except TiffError as exc:
        result = exc
    finally:
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed < seconds, elapsed
    assert peak < limit_mb * 2**20, peak
    return result


def zeros_stream(compressor, total: int, chunk: int = 1 << 20) -> bytes:
    block = bytes(chunk)
    parts = [compressor.compress(block) for _ in range(total // chunk)]
    return b"".join(parts) + compressor.flush()


U8 = TileCodec(8, 1, "uint8", "<", 16, 16, 1, 8, 1)


def test_deflate_bomb_is_cut_at_the_tile():
    bomb = zeros_stream(zlib.compressobj(9), 512 << 20)  # 512 MiB of zeros in ~0.5 MiB
    out = check_bounded(lambda: decode_tile(bomb, U8))
    assert isinstance(out, np.ndarray) and not out.any()
    # as the extra layer of a LERC tile it is refused (libtiff's bound: 256 + n + n/3 bytes)
    lerc = replace(U8, compression=34887, lerc_parameters=(4, 1))
    assert isinstance(check_bounded(lambda: decode_tile(bomb, lerc)), MalformedTiffError)


def test_lzma_bomb_and_huge_dictionary():
    bomb = zeros_stream(lzma.LZMACompressor(preset=0), 256 << 20)
    lz = replace(U8, compression=34925)
    out = check_bounded(lambda: decode_tile(bomb, lz))
    assert isinstance(out, np.ndarray) and not out.any()
    # an .xz block header announcing a 3 GiB dictionary: refused by the decoder's memory limit
    small = lzma.compress(
        bytes(1000), format=lzma.FORMAT_XZ, filters=[{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 20}]
    )
    header_size = (small[12] + 1) * 4
    header = bytearray(small[12 : 12 + header_size])
    props = header.index(b"\x21\x01") + 2  # LZMA2 filter id, one property byte: the dictionary size
    header[props] = 39  # 3 GiB
    header[-4:] = struct.pack("<I", zlib.crc32(bytes(header[:-4])))
    huge = small[:12] + bytes(header) + small[12 + header_size :]
    assert isinstance(check_bounded(lambda: decode_tile(huge, lz)), MalformedTiffError)


def test_zstd_bomb_is_refused():
    bomb = imagecodecs.zstd_encode(np.zeros(128 << 20, np.uint8))  # declares 128 MiB of content
    zs = replace(U8, compression=50000)
    assert isinstance(check_bounded(lambda: decode_tile(bomb, zs), limit_mb=140), MalformedTiffError)
    # decoding itself must not allocate: the allowance above is the test's own input
    assert isinstance(check_bounded(lambda: decode_tile(bomb, zs), limit_mb=1), MalformedTiffError)
    lerc = replace(U8, compression=34887, lerc_parameters=(4, 2))
    assert isinstance(check_bounded(lambda: decode_tile(bomb, lerc), limit_mb=1), MalformedTiffError)


def test_packbits_and_lzw_bombs():
    packbits = bytes([129, 0]) * 100_000  # each pair expands to 128 bytes: 12.8 MB
    out = check_bounded(lambda: decode_tile(packbits, replace(U8, compression=32773)), limit_mb=1)
    assert isinstance(out, np.ndarray) and not out.any()
    lzw = imagecodecs.lzw_encode(bytes(64 << 20))
    out = check_bounded(lambda: decode_tile(lzw, replace(U8, compression=5)), limit_mb=1)
    assert isinstance(out, np.ndarray) and not out.any()


def test_image_codecs_declaring_huge_images(sample_tiles):
    jpeg, jpeg_codec = sample_tiles["jpeg_gray"]
    sof = max(jpeg.find(b"\xff\xc0"), jpeg.find(b"\xff\xc1"), jpeg.find(b"\xff\xc2"))
    big_jpeg = jpeg[: sof + 5] + struct.pack(">HH", 65000, 65000) + jpeg[sof + 9 :]
    assert isinstance(
        check_bounded(lambda: decode_tile(big_jpeg, jpeg_codec), limit_mb=1), MalformedTiffError
    )
    lossless = imagecodecs.jpeg8_encode(np.zeros((16, 16), np.uint8), lossless=True)
    sof = lossless.find(b"\xff\xc3")
    big_lossless = lossless[: sof + 5] + struct.pack(">HH", 60000, 60000) + lossless[sof + 9 :]
    assert isinstance(
        check_bounded(lambda: decode_tile(big_lossless, jpeg_codec), limit_mb=1), MalformedTiffError
    )

    webp, webp_codec = sample_tiles["webp_lossless"]
    assert webp[12:16] == b"VP8L"
    bits = 16383 | (16383 << 14) | (webp[21 + 3] & 0xF0) << 24
    big_webp = webp[:21] + struct.pack("<I", bits) + webp[25:]
    assert isinstance(
        check_bounded(lambda: decode_tile(big_webp, webp_codec), limit_mb=1), MalformedTiffError
    )
    animated = (
        b"RIFF" + struct.pack("<I", 30) + b"WEBPVP8X" + struct.pack("<I", 10) + b"\x02" + bytes(9) + bytes(12)
    )
    assert isinstance(check_bounded(lambda: decode_tile(animated, webp_codec)), MalformedTiffError)

    lerc, lerc_codec = sample_tiles["lerc_zstd"]
    blob = bytearray(imagecodecs.zstd_decode(lerc))
    blob[14:22] = struct.pack("<ii", 100000, 100000)  # nRows, nCols (Lerc2 v3+: after the checksum)
    big_lerc = imagecodecs.zstd_encode(bytes(blob))
    assert isinstance(
        check_bounded(lambda: decode_tile(big_lerc, lerc_codec), limit_mb=1), MalformedTiffError
    )

    big_jxl = imagecodecs.jpegxl_encode(np.zeros((4096, 4096), np.uint8), lossless=True, effort=1)
    jxl_codec = replace(sample_tiles["jpegxl"][1], samples=1)
    assert isinstance(check_bounded(lambda: decode_tile(big_jxl, jxl_codec), limit_mb=1), MalformedTiffError)


def test_codec_claiming_a_huge_tile_is_refused_before_allocating():
    huge = TileCodec(8, 1, "uint16", "<", 65536, 65536, 4, 16, 1)
    refused = check_bounded(lambda: check_codec_supported(huge), limit_mb=1)
    assert isinstance(refused, UnsupportedTiffError) and "2 GiB" in str(refused)
    assert isinstance(check_bounded(lambda: decode_tile(b"x", huge), limit_mb=1), UnsupportedTiffError)


MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "cut", "insert", "delete"]),
        st.floats(0, 1, allow_nan=False),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=6,
)


def mutate(data: bytes, ops) -> bytes:
    out = bytearray(data)
    for op, where, value in ops:
        pos = min(int(where * len(out)), max(len(out) - 1, 0))
        if op == "flip" and out:
            out[pos] ^= 1 << (value % 8)
        elif op == "set" and out:
            out[pos] = value
        elif op == "cut":
            del out[pos:]
        elif op == "insert":
            out[pos:pos] = bytes([value]) * (1 + value % 17)
        elif op == "delete":
            del out[pos : pos + 1 + value % 9]
    return bytes(out)


@settings(
    max_examples=400,
    deadline=2000,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(name=st.sampled_from(sorted([*SAMPLE_CASES, "jpegxl", "mask"])), ops=MUTATIONS)
def test_mutated_tiles_raise_only_tiff_errors(sample_tiles, name, ops):
    data, codec = sample_tiles[name]
    out = decode_any(mutate(data, ops), codec)
    assert out is None or out.shape == expected_shape(codec)


# --- what is supported ---------------------------------------------------------------------------------


def test_supported_compressions():
    assert {
        1,
        5,
        7,
        8,
        32946,
        32773,
        34925,
        50000,
        34926,
        50001,
        34927,
        34887,
        50002,
        52546,
    } <= SUPPORTED_COMPRESSIONS


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"compression": 34712}, UnsupportedTiffError, "compression 34712 (JPEG2000)"),
        ({"compression": 6}, UnsupportedTiffError, "compression 6 (old-style JPEG)"),
        ({"compression": 12345}, UnsupportedTiffError, "compression 12345"),
        (
            {"compression": 8, "predictor": 3, "dtype": "uint16", "bits_per_sample": 16},
            UnsupportedTiffError,
            "predictor 3 with uint16",
        ),
        ({"compression": 8, "predictor": 4}, UnsupportedTiffError, "predictor 4"),
        ({"dtype": "uint16", "bits_per_sample": 12}, UnsupportedTiffError, "12-bit uint16"),
        ({"dtype": "complex64", "bits_per_sample": 64}, UnsupportedTiffError, "sample type complex64"),
        ({"samples": 4, "photometric": 5}, UnsupportedTiffError, "photometric 5 (CMYK)"),
        ({"samples": 3, "photometric": 6}, UnsupportedTiffError, "photometric 6 (YCbCr) with compression 8"),
        ({"photometric": 8}, UnsupportedTiffError, "photometric 8 (CIELab)"),
        (
            {"compression": 7, "dtype": "uint16", "bits_per_sample": 16},
            UnsupportedTiffError,
            "JPEG with uint16",
        ),
        (
            {"compression": 7, "photometric": 6, "samples": 4},
            UnsupportedTiffError,
            "YCbCr JPEG with 4 samples",
        ),
        ({"compression": 50001, "samples": 1}, UnsupportedTiffError, "WebP with 1 uint8 samples"),
        (
            {"compression": 34887, "dtype": "int64", "bits_per_sample": 64},
            UnsupportedTiffError,
            "LERC with int64",
        ),
        (
            {"compression": 34887, "lerc_parameters": (4, 3)},
            UnsupportedTiffError,
            "LERC additional compression 3",
        ),
        (
            {"compression": 50002, "dtype": "uint16", "bits_per_sample": 16, "byteorder": ">"},
            UnsupportedTiffError,
            "JPEG XL with big-endian uint16",
        ),
        ({"bits_per_sample": 1, "photometric": 1}, UnsupportedTiffError, "1-bit samples"),
        (
            {"bits_per_sample": 1, "photometric": 4, "compression": 7},
            UnsupportedTiffError,
            "mask with compression 7",
        ),
        (
            {"bits_per_sample": 1, "photometric": 4, "predictor": 2},
            UnsupportedTiffError,
            "predictor 2 with 1-bit",
        ),
        ({"byteorder": "="}, MalformedTiffError, "byte order"),
        ({"tile_width": 0}, MalformedTiffError, "tile of 0x16"),
    ],
)
def test_check_codec_supported_names_the_feature(changes, error, message):
    codec = replace(U8, **changes)
    with pytest.raises(error, match=re.escape(message)):
        check_codec_supported(codec)
    with pytest.raises(error):
        decode_tile(b"\x00" * 64, codec)


def test_predictor_ignored_where_libtiff_ignores_it():
    # libtiff only runs the predictor for LZW, deflate, LZMA and ZSTD; GDAL reads others as stored
    for compression in (1, 32773, 7, 50001, 34887):
        check_codec_supported(replace(U8, compression=compression, predictor=2, samples=3))


def test_rows_and_codec_kind_are_checked():
    with pytest.raises(ValueError, match="rows"):
        decode_tile(bytes(256), replace(U8, compression=1), rows=17)
    with pytest.raises(ValueError, match="rows"):
        decode_tile(bytes(256), replace(U8, compression=1), rows=0)
    mask = replace(U8, bits_per_sample=1, photometric=4)
    with pytest.raises(UnsupportedTiffError, match="decode_mask_tile"):
        decode_tile(bytes(32), mask)
    with pytest.raises(UnsupportedTiffError, match="as a mask"):
        decode_mask_tile(bytes(256), U8)
    assert decode_mask_tile(memoryview(bytes(64))[:32], replace(mask, compression=1)).shape == (16, 16)
