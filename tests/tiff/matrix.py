"""Generated GeoTIFF/COG files and oracle comparisons shared by the tests under tests/tiff.

A :class:`Spec` names one way of writing a raster through rasterio (GDAL's COG or GTiff driver): dtype,
codec, predictor, block layout, bands, interleave, byte order, BigTIFF, overviews, internal mask,
sparse blocks, nodata, scale/offset and CRS. :class:`MatrixFiles` writes each spec once per test session
into a temporary directory. The ``check_*`` functions compare our parsed header and pixels with the
oracles: tifffile (tags, per IFD) and GDAL through rasterio (profile, overviews, pixels).

The module is plain Python (not a conftest): a test module that needs the ``matrix_files`` fixture imports
``matrix_files_fixture`` from it.
"""

from __future__ import annotations

import itertools
import math
import warnings
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
import tifffile
from pyproj import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.windows import Window

from rasteret_dask.tiff.header import NeedBytes, parse_header
from rasteret_dask.tiff.ifd import FileBytes
from rasteret_dask.tiff.model import ImageLevel, TiffHeader

# A user-defined CRS (no EPSG code): GDAL writes it as user-defined GeoKeys.
PROJ_CRS = (
    "+proj=aea +lat_0=23 +lon_0=-96 +lat_1=29.5 +lat_2=45.5 +x_0=0 +y_0=0 +ellps=GRS80 +units=m +no_defs"
)
CRS_KINDS = {
    "epsg": ("EPSG:32633", (10.0, 0.0, 500000.0, 0.0, -10.0, 4600000.0)),
    "geog": ("EPSG:4326", (0.25, 0.0, -20.0, 0.0, -0.25, 60.0)),
    "proj": (PROJ_CRS, (30.0, 0.0, -2000000.0, 0.0, -30.0, 3000000.0)),
    "none": (None, None),
}
DTYPES = (
    "uint8",
    "int8",
    "uint16",
    "int16",
    "uint32",
    "int32",
    "uint64",
    "int64",
    "float32",
    "float64",
    "float16",
)
FLOAT_DTYPES = ("float16", "float32", "float64")
CODECS = (
    "none",
    "deflate",
    "lzw",
    "zstd",
    "lzma",
    "packbits",
    "lerc",
    "lerc_deflate",
    "lerc_zstd",
    "jpeg",
    "webp",
)
PREDICTOR_CODECS = ("deflate", "lzw", "zstd", "lzma")
LERC_CODECS = ("lerc", "lerc_deflate", "lerc_zstd")


@dataclass(frozen=True)
class Spec:
    """One way of writing a test raster with GDAL.

    ``block`` is (width, height) of a tile; None writes strips of ``rows_per_strip`` rows (GTiff only).
    ``nodata`` is None, "small" (7 or -7), "extreme" (the dtype's min for signed, max for unsigned
    integers, the lowest float32 for floats), "float" (-9999.5, float dtypes) or "nan".
    ``float16`` is written as float32 with NBITS=16 (GDAL's only way to write half floats).
    """

    driver: str = "COG"
    dtype: str = "uint16"
    codec: str = "deflate"
    predictor: int = 1
    block: tuple[int, int] | None = (256, 256)
    rows_per_strip: int = 7
    count: int = 1
    interleave: str = "pixel"
    big_endian: bool = False
    bigtiff: bool = False
    overviews: bool = False
    mask: bool = False
    sparse: bool = False
    nodata: str | None = None
    scale_offset: bool = False
    crs: str = "epsg"
    width: int = 300
    height: int = 217
    webp_lossless: bool = False

    @property
    def id(self) -> str:
        parts = [self.driver, self.dtype, self.codec]
        if self.predictor != 1:
            parts.append(f"p{self.predictor}")
        parts.append(f"t{self.block[0]}x{self.block[1]}" if self.block else f"s{self.rows_per_strip}")
        parts.append(f"b{self.count}")
        if self.count > 1:
            parts.append(self.interleave)
        flags = {
            "be": self.big_endian,
            "big": self.bigtiff,
            "ovr": self.overviews,
            "mask": self.mask,
            "sparse": self.sparse,
            "so": self.scale_offset,
            "lossless": self.webp_lossless,
        }
        parts += [name for name, on in flags.items() if on]
        if self.nodata is not None:
            parts.append(f"nd-{self.nodata}")
        parts.append(self.crs)
        parts.append(f"{self.width}x{self.height}")
        return "-".join(parts)

    @property
    def write_dtype(self) -> str:
        return "float32" if self.dtype == "float16" else self.dtype

    def invalid_reason(self) -> str | None:
        """Why GDAL cannot write this combination (None when it can)."""
        is_float = self.dtype in FLOAT_DTYPES
        if self.predictor not in (1, 2, 3):
            return "predictor"
        if self.predictor != 1 and self.codec not in PREDICTOR_CODECS:
            return "predictor only with deflate/lzw/zstd/lzma"
        if self.predictor == 3 and not is_float:
            return "predictor 3 is for floats"
        if self.codec == "jpeg" and (self.dtype != "uint8" or self.count not in (1, 3)):
            return "jpeg: uint8, 1 or 3 bands"
        if self.codec == "webp" and (self.dtype != "uint8" or self.count not in (3, 4)):
            return "webp: uint8, 3 or 4 bands"
        if self.codec in ("jpeg", "webp") and self.interleave == "band" and self.count > 1:
            return "jpeg/webp need pixel interleave"
        if self.codec in LERC_CODECS and self.dtype in ("uint64", "int64"):
            return "LERC has no 64-bit integers"
        if self.codec in LERC_CODECS and self.dtype == "float16":
            return "GDAL 3.10 corrupts its heap writing LERC with NBITS=16 (malloc(): invalid size)"
        if self.driver == "COG":
            if self.block is None or self.block[0] != self.block[1]:
                return "COG writes square tiles only"
            if self.big_endian:
                return "COG writes little-endian only"
            if self.interleave == "band" and self.count > 1:
                return "GDAL 3.10's COG driver writes pixel interleave only"
        if self.nodata == "extreme" and self.dtype in ("int64", "uint64"):
            # rasterio sets nodata through GDAL's double API: the COG driver drops it and GTiff stores
            # "%.18g" text, which GDAL reads back for 64-bit bands as an integer prefix (-9.2e+18 -> -9).
            # See test_64bit_nodata_written_as_double in test_header_matrix.py.
            return "64-bit integer nodata beyond 2**53"
        if self.nodata is not None and self.driver == "COG" and self.dtype in ("int64", "uint64"):
            return "rasterio's COG writer drops 64-bit integer nodata"
        if self.nodata in ("float", "nan") and not is_float:
            return "float nodata on integers"
        if self.nodata is not None and self.codec in ("jpeg", "webp"):
            return "lossy codecs change nodata pixels"
        if self.sparse and self.codec in ("jpeg", "webp"):
            return "sparse lossy files (COG cannot tell empty tiles after lossy coding)"
        if self.crs not in CRS_KINDS:
            return "crs kind"
        return None


def spec_seed(spec: Spec) -> int:
    return zlib.crc32(spec.id.encode())


def _nodata_value(spec: Spec) -> float | int | None:
    if spec.nodata is None:
        return None
    dt = np.dtype(spec.dtype)
    if spec.nodata == "nan":
        return float("nan")
    if spec.nodata == "float":
        return -9999.5
    if spec.nodata == "small":
        return -7 if dt.kind in "if" else 7
    if spec.nodata == "extreme":
        if dt.kind == "f":
            return float(np.finfo(np.float16 if spec.dtype == "float16" else np.float32).min)
        return int(np.iinfo(dt).min) if dt.kind == "i" else int(np.iinfo(dt).max)
    raise ValueError(spec.nodata)


def make_pixels(spec: Spec) -> np.ndarray:
    """Deterministic pixels of shape (count, height, width) in the spec's dtype.

    Integers wrap through their whole range (so byte order and sign matter in every byte); floats are
    smooth with noise, plus NaN and infinities when no LERC codec is used; lossy codecs get smooth uint8.
    """
    rng = np.random.default_rng(spec_seed(spec))
    h, w = spec.height, spec.width
    y, x = np.mgrid[0:h, 0:w]
    dt = np.dtype(spec.dtype)
    bands = []
    for b in range(spec.count):
        if spec.codec in ("jpeg", "webp"):
            v = 128 + 90 * np.sin(x / 9.0 + b) * np.cos(y / 7.0 - b) + rng.integers(-6, 7, (h, w))
            bands.append(np.clip(v, 0, 255).astype(dt))
        elif dt.kind in "iu":
            bits = dt.itemsize * 8
            mult = {8: 1, 16: 3, 32: 40503, 64: 0x9E3779B97F4A7C15}[bits]
            base = (x * 7 + y * 13 + b * 101).astype(np.uint64)
            noise = rng.integers(0, 4, (h, w)).astype(np.uint64)
            with np.errstate(over="ignore"):
                u = (base + noise) * np.uint64(mult)
            if bits < 64:
                u = u % np.uint64(1 << bits)
            u = u.astype(f"u{dt.itemsize}")
            bands.append(u.view(dt) if dt.kind == "i" else u)
        else:
            amp = 500.0 if spec.dtype == "float16" else 1000.0
            v = np.sin(x / 11.0 + b) * np.cos(y / 5.0) * amp + rng.normal(0, 3, (h, w))
            v = v.astype(dt)
            if spec.codec not in LERC_CODECS:
                v[1, 2], v[2, 1], v[3, 3] = np.nan, np.inf, -np.inf
            bands.append(v)
    data = np.stack(bands)
    nodata = _nodata_value(spec)
    if nodata is not None:
        data[:, 5 : min(h, 20), 30 : min(w, 60)] = np.array(nodata).astype(dt)
    if spec.sparse and spec.driver == "COG":
        # Whole empty tiles: COG's SPARSE_OK omits tiles that hold only nodata (0 without nodata).
        bw, bh = spec.block
        data[:, : 2 * bh, bw : 3 * bw] = 0 if nodata is None else np.array(nodata).astype(dt)
    return data


def make_mask(spec: Spec) -> np.ndarray:
    y, x = np.mgrid[0 : spec.height, 0 : spec.width]
    inside = ((x - spec.width / 2) / (spec.width / 2.5)) ** 2 + (
        (y - spec.height / 2) / (spec.height / 2.5)
    ) ** 2
    return np.where(inside <= 1.0, 255, 0).astype(np.uint8)


def _profile(spec: Spec) -> dict:
    crs, transform = CRS_KINDS[spec.crs]
    profile = {
        "driver": spec.driver,
        "width": spec.width,
        "height": spec.height,
        "count": spec.count,
        "dtype": spec.write_dtype,
        "compress": spec.codec,
    }
    if crs is not None:
        profile["crs"] = crs
        profile["transform"] = rasterio.Affine(*transform)
    nodata = _nodata_value(spec)
    if nodata is not None:
        profile["nodata"] = nodata
    if spec.predictor != 1:
        profile["predictor"] = spec.predictor
    if spec.dtype == "float16":
        profile["nbits"] = 16
    if spec.bigtiff:
        profile["bigtiff"] = "YES"
    if spec.sparse:
        profile["sparse_ok"] = True
    if spec.codec == "webp" and spec.webp_lossless:
        if spec.driver == "COG":
            profile["quality"] = 100  # the COG driver's lossless WebP
        else:
            profile["webp_lossless"] = True
    if spec.driver == "COG":
        profile["blocksize"] = spec.block[0]
        profile["overviews"] = "AUTO" if spec.overviews else "NONE"
        profile["resampling"] = "NEAREST"
    else:
        if spec.block is None:
            profile["tiled"] = False
            profile["blockysize"] = spec.rows_per_strip
        else:
            profile["tiled"] = True
            profile["blockxsize"], profile["blockysize"] = spec.block
        profile["interleave"] = spec.interleave
        if spec.big_endian:
            profile["endianness"] = "BIG"
        if spec.codec == "jpeg" and spec.count == 3:
            profile["photometric"] = "YCBCR"
    return profile


def _sparse_blocks(spec: Spec):
    """Windows of the blocks written in a sparse GTiff: every block but a checkerboard third of them."""
    bw, bh = spec.block if spec.block else (spec.width, spec.rows_per_strip)
    for i, row in enumerate(range(0, spec.height, bh)):
        for j, col in enumerate(range(0, spec.width, bw)):
            if (i + 2 * j) % 3 == 1:
                continue
            yield Window(col, row, min(bw, spec.width - col), min(bh, spec.height - row))


def write_spec(spec: Spec, path: Path) -> Path:
    """Write the raster ``spec`` describes at ``path`` with rasterio/GDAL."""
    reason = spec.invalid_reason()
    if reason:
        raise ValueError(f"{spec.id}: {reason}")
    data = make_pixels(spec)
    out = data.astype(spec.write_dtype)
    env = {"GDAL_TIFF_INTERNAL_MASK": True} if spec.mask else {}
    with warnings.catch_warnings(), rasterio.Env(**env):
        warnings.simplefilter("ignore")
        with rasterio.open(path, "w", **_profile(spec)) as ds:
            if spec.sparse and spec.driver == "GTiff":
                for win in _sparse_blocks(spec):
                    r0, c0 = int(win.row_off), int(win.col_off)
                    ds.write(out[:, r0 : r0 + int(win.height), c0 : c0 + int(win.width)], window=win)
            else:
                ds.write(out)
            if spec.scale_offset:
                ds.scales = tuple(0.5 + 0.25 * i for i in range(spec.count))
                ds.offsets = tuple(-10.0 - i for i in range(spec.count))
            if spec.mask:
                ds.write_mask(make_mask(spec))
            if spec.overviews and spec.driver == "GTiff":
                ds.build_overviews([2, 4], Resampling.nearest)
    return path


class MatrixFiles:
    """Writes each spec once into ``directory`` and hands back its path."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._paths: dict[Spec, Path] = {}

    def path(self, spec: Spec) -> Path:
        if spec not in self._paths:
            self._paths[spec] = write_spec(spec, self.directory / f"{spec.id}.tif")
        return self._paths[spec]


@pytest.fixture(scope="session", name="matrix_files")
def matrix_files_fixture(tmp_path_factory) -> MatrixFiles:
    """The session's generated rasters (one file per spec, written on first use)."""
    return MatrixFiles(tmp_path_factory.mktemp("matrix"))


def valid(specs) -> list[Spec]:
    """The specs GDAL can write, without duplicates, in a stable order."""
    seen: dict[str, Spec] = {}
    for spec in specs:
        if spec.count == 1 and spec.interleave != "pixel":
            spec = replace(spec, interleave="pixel")
        if spec.invalid_reason() is None:
            seen.setdefault(spec.id, spec)
    return list(seen.values())


# ---------------------------------------------------------------------------------------------------
# The fast set: every dimension value at least once, a few crossed (well under a minute with reads).

S = Spec
FAST_SPECS: list[Spec] = valid(
    [
        # dtypes x codecs x predictors (COG, 16-px tiles, overviews)
        S(dtype="uint8", codec="deflate", block=(256, 256), overviews=True),
        S(dtype="int8", codec="packbits", block=(16, 16), width=70, height=50),
        S(dtype="uint16", codec="deflate", predictor=2, block=(16, 16), overviews=True, nodata="small"),
        S(dtype="int16", codec="lzw", predictor=2, block=(16, 16), count=4, scale_offset=True, width=90, height=70),
        S(dtype="uint32", codec="lerc", block=(16, 16), width=70, height=50),
        S(dtype="int32", codec="lerc_deflate", block=(16, 16), width=70, height=50, nodata="extreme"),
        S(dtype="uint64", codec="zstd", predictor=2, block=(16, 16), width=70, height=50),
        S(dtype="int64", codec="lzma", block=(16, 16), width=70, height=50),
        S(dtype="float32", codec="zstd", predictor=3, block=(16, 16), overviews=True, nodata="nan"),
        S(dtype="float32", codec="lerc_zstd", block=(16, 16), width=70, height=50),
        S(dtype="float64", codec="lzw", predictor=3, block=(16, 16), width=70, height=50, nodata="float"),
        S(dtype="float64", codec="none", block=(16, 16), width=70, height=50, crs="geog"),
        S(dtype="float16", codec="deflate", predictor=2, block=(16, 16), width=70, height=50),
        S(dtype="float16", codec="zstd", predictor=3, block=(16, 16), width=70, height=50, nodata="extreme"),
        S(dtype="uint8", codec="jpeg", block=(16, 16), width=70, height=50),
        S(dtype="uint8", codec="jpeg", block=(16, 16), count=3, overviews=True, width=120, height=90),
        S(dtype="uint8", codec="webp", block=(16, 16), count=3, width=70, height=50),
        S(dtype="uint8", codec="webp", block=(16, 16), count=4, webp_lossless=True, width=70, height=50),
        # COG features
        S(dtype="uint16", block=(16, 16), mask=True, overviews=True, width=100, height=90),
        S(dtype="int16", block=(16, 16), sparse=True, nodata="small", overviews=True, width=100, height=90),
        S(dtype="uint8", block=(16, 16), sparse=True, width=100, height=90),
        S(dtype="float32", block=(16, 16), bigtiff=True, overviews=True, crs="proj", width=100, height=90),
        S(dtype="uint16", block=(16, 16), crs="none", overviews=True, width=100, height=90),
        # GTiff: byte order, non-square tiles, strips, interleave, BigTIFF, internal overviews and masks
        S("GTiff", "uint16", "deflate", 2, (32, 16), big_endian=True, width=100, height=90),
        S("GTiff", "float32", "deflate", 3, None, rows_per_strip=7, big_endian=True, width=70, height=50),
        S("GTiff", "int64", "zstd", 2, (16, 16), big_endian=True, bigtiff=True, width=70, height=50),
        S("GTiff", "float16", "lzw", 1, (32, 16), big_endian=True, width=70, height=50),
        S("GTiff", "uint8", "none", 1, None, rows_per_strip=7, count=4, interleave="band", width=70, height=50),
        S("GTiff", "int16", "lzw", 2, None, rows_per_strip=5, count=3, width=70, height=50, nodata="small"),
        S("GTiff", "uint16", "deflate", 1, (32, 16), count=4, interleave="band", overviews=True, width=100, height=90),
        S("GTiff", "uint32", "lerc", 1, (16, 16), count=2, interleave="band", width=70, height=50),
        S("GTiff", "uint8", "deflate", 1, (16, 16), mask=True, overviews=True, width=100, height=90),
        S("GTiff", "float32", "zstd", 1, (16, 16), sparse=True, nodata="nan", width=100, height=90),
        S("GTiff", "int16", "none", 1, None, rows_per_strip=8, count=2, interleave="band", sparse=True, nodata="small",
          width=70, height=50),
        S("GTiff", "uint8", "jpeg", 1, (16, 16), count=3, width=70, height=50),
        S("GTiff", "uint8", "packbits", 1, (256, 256), count=3, overviews=True, scale_offset=True, crs="proj"),
        # A few dimensions crossed
        S(dtype="uint64", block=(16, 16), sparse=True, width=70, height=50),
        S("GTiff", "int64", "deflate", 2, (16, 16), sparse=True, nodata="small", big_endian=True, width=70, height=50),
        S("GTiff", "uint8", "jpeg", 1, (16, 16), count=3, overviews=True, mask=True, width=100, height=90),
        S("GTiff", "float32", "lerc_deflate", 1, (16, 16), count=3, interleave="band", big_endian=True, overviews=True,
          nodata="nan", width=70, height=50),
        S("GTiff", "uint16", "lzw", 2, None, rows_per_strip=16, count=4, interleave="band", big_endian=True,
          bigtiff=True, overviews=True, mask=True, width=100, height=90),
        S(dtype="int8", predictor=2, count=4, overviews=True, mask=True, scale_offset=True, crs="geog"),
        S(dtype="uint8", codec="webp", block=(16, 16), count=3, overviews=True, width=100, height=90),
        S("GTiff", "float64", "zstd", 3, (32, 16), count=2, bigtiff=True, nodata="float", crs="proj", width=70,
          height=50),
    ]
)  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# The slow product.


def _codec_product() -> list[Spec]:
    """Every dtype x codec x predictor, for both drivers (16-px tiles; COG with overviews)."""
    out = []
    for driver, dtype, codec, predictor in itertools.product(("COG", "GTiff"), DTYPES, CODECS, (1, 2, 3)):
        counts = (3, 4) if codec == "webp" else (1, 3) if codec == "jpeg" else (1,)
        for count in counts:
            out.append(
                Spec(driver, dtype, codec, predictor, (16, 16), count=count, overviews=driver == "COG",
                     width=70, height=50)
            )  # fmt: skip
    return out


def _layout_product() -> list[Spec]:
    """Blocks x bands x interleave x byte order x BigTIFF, for a few dtypes (GTiff; COG where valid)."""
    out = []
    blocks = [(256, 256), (16, 16), (32, 16), None]
    for driver, dtype, block, count, interleave, big_endian, bigtiff in itertools.product(
        ("GTiff", "COG"), ("uint8", "int16", "uint64", "float32", "float64"), blocks, (1, 4), ("pixel", "band"),
        (False, True), (False, True)
    ):  # fmt: skip
        predictor = 3 if dtype.startswith("float") else 2
        out.append(
            Spec(driver, dtype, "deflate", predictor, block, count=count, interleave=interleave,
                 big_endian=big_endian, bigtiff=bigtiff, overviews=True)
        )  # fmt: skip
    return out


def _feature_product() -> list[Spec]:
    """Overviews x mask x sparse x nodata x scale/offset x CRS, for two dtypes and both drivers."""
    out = []
    for driver, dtype, overviews, mask, sparse, nodata, so, crs in itertools.product(
        ("COG", "GTiff"), ("int16", "float32"), (False, True), (False, True), (False, True),
        (None, "small", "extreme", "float", "nan"), (False, True), ("epsg", "proj")
    ):  # fmt: skip
        out.append(
            Spec(driver, dtype, "zstd", 1, (16, 16), overviews=overviews, mask=mask, sparse=sparse, nodata=nodata,
                 scale_offset=so, crs=crs, width=100, height=90)
        )  # fmt: skip
    return out


def slow_specs() -> list[Spec]:
    fast = {s.id for s in FAST_SPECS}
    return [s for s in valid(_codec_product() + _layout_product() + _feature_product()) if s.id not in fast]


# ---------------------------------------------------------------------------------------------------
# Parsing and reading without I/O.


def parse_bytes(data: bytes, prefix: int | None = None) -> TiffHeader:
    """Parse a whole file's bytes with the pure parser, fetching missing ranges from ``data`` itself.

    ``prefix`` starts from only that many leading bytes (as ``read_cog_header`` does).
    """
    fb = FileBytes.from_prefix(data if prefix is None else data[:prefix], len(data))
    for _ in range(64):
        result = parse_header(fb)
        if not isinstance(result, NeedBytes):
            return result
        for start, stop in result.ranges:
            fb.add(start, data[start:stop])
    raise AssertionError("parse_header kept asking for bytes")


def same_header(a: TiffHeader, b: TiffHeader) -> bool:
    """Header equality that counts a NaN nodata as equal to a NaN nodata.

    ``TiffHeader.__eq__`` compares ``nodata`` with ``==``, so two parses of a file whose nodata is NaN
    are unequal; everything else is compared by the dataclass (ImageLevel compares its arrays).
    """
    if a.nodata is not None and b.nodata is not None and math.isnan(a.nodata) and math.isnan(b.nodata):
        return replace(a, nodata=None) == replace(b, nodata=None)
    return a == b


def without_identity(header: TiffHeader) -> TiffHeader:
    """The header without what storage said about the file (size, ETag, Last-Modified)."""
    return replace(header, file_size=None, etag=None, last_modified=None)


# ---------------------------------------------------------------------------------------------------
# Oracles.


def gdal_dtype(ours: str) -> str:
    """The dtype GDAL 3.10 reports for our native dtype: it has no Float16 and promotes it to Float32."""
    return "float32" if ours == "float16" else ours


def tifffile_pixels(page) -> np.ndarray:
    """A tifffile page's pixels as (samples, rows, cols)."""
    arr = page.asarray().reshape(page.shaped)  # (separate samples, depth, rows, cols, contig samples)
    if arr.shape[0] > 1:
        return arr[:, 0, :, :, 0]
    return np.moveaxis(arr[0, 0], -1, 0)


def _tag(page, code: int):
    tag = page.tags.get(code)
    return None if tag is None else tag.value


def check_level_vs_tifffile(level: ImageLevel, page, mask: bool = False) -> None:
    """One of our levels against the tifffile page of the same IFD."""
    where = f"IFD {level.ifd_index}"
    assert page.index == level.ifd_index
    assert (level.width, level.height) == (page.imagewidth, page.imagelength), where
    assert level.tiled == page.is_tiled, where
    if page.is_tiled:
        assert (level.tile_width, level.tile_height) == (page.tilewidth, page.tilelength), where
    else:
        assert (level.tile_width, level.tile_height) == (
            page.imagewidth,
            min(page.rowsperstrip, page.imagelength),
        )
    np.testing.assert_array_equal(
        level.tile_offsets, np.asarray(page.dataoffsets, dtype=np.uint64), err_msg=where
    )
    np.testing.assert_array_equal(
        level.tile_byte_counts, np.asarray(page.databytecounts, dtype=np.uint64), err_msg=where
    )
    codec = level.codec
    assert codec.compression == int(page.compression), where
    assert codec.predictor == int(page.predictor), where
    assert codec.photometric == int(page.photometric), where
    assert codec.bits_per_sample == page.bitspersample, where
    planar = int(page.planarconfig)
    assert level.planes == (page.samplesperpixel if planar == 2 else 1), where
    assert codec.samples == (1 if planar == 2 else page.samplesperpixel), where
    assert codec.jpeg_tables == (page.jpegtables or None), where
    if mask:
        assert int(page.subfiletype) & 4, where
    else:
        assert np.dtype(codec.dtype) == page.dtype, where


def check_header_vs_tifffile(header: TiffHeader, path) -> None:
    """Every level and mask of ``header`` against tifffile's view of the same IFDs, plus file-level tags."""
    with tifffile.TiffFile(path) as tf:
        assert header.byteorder == tf.byteorder
        assert header.bigtiff == tf.is_bigtiff
        pages = list(tf.pages)
        first = pages[0]
        assert header.samples_per_pixel == first.samplesperpixel
        assert header.planar_configuration == int(first.planarconfig)
        assert header.photometric == int(first.photometric)
        assert header.extra_samples == tuple(int(v) for v in first.extrasamples)
        # The IFDs we classify as overviews and masks are exactly the reduced-resolution and mask pages.
        reduced = [p.index for p in pages[1:] if int(p.subfiletype) == 1]
        masks = [p.index for p in pages[1:] if int(p.subfiletype) & 4]
        ours_masks = [m.ifd_index for m in header.masks if m is not None]
        assert sorted(level.ifd_index for level in header.levels[1:]) == sorted(reduced)
        assert sorted(ours_masks) == sorted(masks)
        widths = [level.width for level in header.levels]
        assert widths == sorted(widths, reverse=True)
        for level in header.levels:
            check_level_vs_tifffile(level, pages[level.ifd_index])
        for level, mask in zip(header.levels, header.masks, strict=True):
            if mask is not None:
                check_level_vs_tifffile(mask, pages[mask.ifd_index], mask=True)
                assert (mask.width, mask.height) == (level.width, level.height)
        geo = header.geo
        for ours, code in (
            (geo.pixel_scale, 33550),
            (geo.tiepoint, 33922),
            (geo.model_transformation, 34264),
        ):
            theirs = _tag(first, code)
            assert ours == (None if theirs is None else tuple(float(v) for v in theirs))
        nodata_text = _tag(first, 42113)
        if nodata_text is None:
            assert header.nodata is None
        else:
            assert header.nodata is not None


def same_nodata(ours: float | None, gdal: float | None) -> bool:
    if ours is None or gdal is None:
        return ours is None and gdal is None
    if math.isnan(gdal):
        return math.isnan(ours)
    return ours == gdal


def check_header_vs_gdal(cog, path) -> None:
    """Our :class:`~rasteret_dask.cog.CogHeader` against GDAL's view (rasterio) of the same file."""
    header = cog.tiff
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path) as ds:
            assert (cog.width, cog.height, cog.count) == (ds.width, ds.height, ds.count)
            assert set(ds.dtypes) == {gdal_dtype(header.dtype)}
            if ds.crs is None:
                assert cog.crs is None
            else:
                assert cog.crs is not None
                gdal_crs = CRS.from_wkt(ds.crs.to_wkt())
                assert cog.crs.equals(gdal_crs), f"{cog.crs.to_wkt()} != {gdal_crs.to_wkt()}"
            if cog.transform is None:
                assert ds.transform.is_identity
            else:
                assert tuple(cog.transform)[:6] == tuple(ds.transform)[:6]
            assert same_nodata(cog.nodata, ds.nodata), (cog.nodata, ds.nodata)
            assert header.scales == tuple(ds.scales)
            assert header.offsets == tuple(ds.offsets)
            assert len(header.levels) - 1 == len(ds.overviews(1))
            flags = ds.mask_flag_enums[0]
            assert (header.masks[0] is not None) == (
                MaskFlags.per_dataset in flags and MaskFlags.alpha not in flags
            )
            if header.masks[0] is not None:
                assert all(flag == ds.mask_flag_enums[0] for flag in ds.mask_flag_enums)
        for i in range(1, len(header.levels)):
            with rasterio.open(path, overview_level=i - 1) as ov:
                assert (header.levels[i].width, header.levels[i].height) == (ov.width, ov.height)
                if cog.transform is not None:
                    ours = header.level_transform(i)
                    np.testing.assert_allclose(ours, tuple(ov.transform)[:6], rtol=1e-12, atol=1e-9)


def gdal_read(path, window=None, level: int = 0) -> np.ndarray:
    """GDAL's pixels of ``window`` (((r0, r1), (c0, c1)) in pixels of ``level``; None: all of it)."""
    kwargs = {} if level == 0 else {"overview_level": level - 1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path, **kwargs) as ds:
            return ds.read(window=None if window is None else Window.from_slices(*window))


def window_set(width: int, height: int, tile_width: int, tile_height: int, seed: int, n: int = 4) -> list:
    """Windows to compare: the whole raster, ones crossing tile edges, ones ending at the last row/column,
    the last pixel, and ``n`` random ones."""
    rng = np.random.default_rng(seed)

    def clip(r0, r1, c0, c1):
        r0, c0 = max(0, min(r0, height - 1)), max(0, min(c0, width - 1))
        return ((r0, max(r0 + 1, min(r1, height))), (c0, max(c0 + 1, min(c1, width))))

    out = [
        ((0, height), (0, width)),
        clip(tile_height - 3, tile_height + 5, tile_width - 2, tile_width + 7),
        clip(height - 1 - tile_height // 2, height, width - 1 - tile_width // 2, width),
        clip(height - 1, height, width - 1, width),
        clip(0, 1, 0, width),
        clip(2 * tile_height - 1, 3 * tile_height + 1, 0, 1),
    ]
    for _ in range(n):
        r0, c0 = int(rng.integers(0, height)), int(rng.integers(0, width))
        r1, c1 = int(rng.integers(r0 + 1, height + 1)), int(rng.integers(c0 + 1, width + 1))
        out.append(((r0, r1), (c0, c1)))
    return out


def assert_same_pixels(ours: np.ndarray, theirs: np.ndarray, what: str, tolerance: int = 0) -> None:
    """Bit-for-bit equality (NaN payloads included) in GDAL's dtype, or within ``tolerance`` for lossy codecs."""
    if ours.dtype == np.float16 and theirs.dtype == np.float32:
        ours = ours.astype(np.float32)  # exact: every float16 is a float32
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} != {theirs.shape}"
    assert ours.dtype == theirs.dtype, f"{what}: dtype {ours.dtype} != {theirs.dtype}"
    if tolerance:
        diff = np.abs(ours.astype(np.int64) - theirs.astype(np.int64))
        assert diff.max() <= tolerance, f"{what}: max difference {diff.max()} > {tolerance}"
        return
    if not np.array_equal(ours.view(f"u{ours.dtype.itemsize}"), theirs.view(f"u{theirs.dtype.itemsize}")):
        bad = np.argwhere(ours.view(f"u{ours.dtype.itemsize}") != theirs.view(f"u{theirs.dtype.itemsize}"))
        first = tuple(int(v) for v in bad[0])
        raise AssertionError(
            f"{what}: {len(bad)} pixels differ, first at {first}: ours {ours[first]!r}, theirs {theirs[first]!r}"
        )


# BT.601 luma weights: libjpeg's YCbCr -> RGB conversion inverts exactly this Y.
LUMA = np.array([0.299, 0.587, 0.114])[:, None, None]


def assert_ycbcr_jpeg_close(
    ours: np.ndarray, theirs: np.ndarray, what: str, channel_bound: int = 255
) -> None:
    """YCbCr JPEG: the same luma, chroma upsampled differently.

    rasterio's GDAL links IJG libjpeg 9, which upsamples 2x2-subsampled chroma by DCT scaling; our decoder
    (imagecodecs, as tifffile) uses libjpeg-turbo, whose "fancy" upsampling is a triangle filter. Luma is
    not subsampled, so the BT.601 luma of the two RGB results agrees to within rounding: below 1 wherever
    no channel is clipped at 0 or 255 (clipping breaks the inversion; at most 0.91 observed over the
    matrix and the corpus). Single channels differ where chroma changes fast: ``channel_bound`` (at most 4
    observed at full resolution of the smooth matrix images, 55 in their 8x overviews, 119 in the corpus).
    Grayscale and RGB JPEG (no subsampling) are compared bit for bit instead.
    """
    a, b = ours.astype(np.float64), theirs.astype(np.float64)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype, what
    clipped = ((a == 0) | (a == 255) | (b == 0) | (b == 255)).any(axis=0)
    luma = np.abs((a * LUMA).sum(axis=0) - (b * LUMA).sum(axis=0))
    assert luma[~clipped].max(initial=0) < 1.0, f"{what}: luma differs by {luma[~clipped].max()}"
    assert np.abs(a - b).max() <= channel_bound, f"{what}: a channel differs by {np.abs(a - b).max()}"
