"""Hostile and broken TIFF bytes: every case raises one of our exceptions, quickly, in bounded memory.

Cases are built by editing real GDAL files (found with tifffile, an independent parser): truncation at
sampled lengths, IFD loops, absurd counts, huge tiles, offsets past the end, unknown codecs, garbage and
wrong magic. Each is read through the public reader (``read_cog_header`` then ``read`` of every level) and
must raise the named :class:`~rasteret_dask.errors.TiffError` subclass within a second while Python's
allocations (tracemalloc, numpy included) stay within a few MB beyond the file's size. A hypothesis test
then mutates real headers at random: only :class:`~rasteret_dask.errors.RasteretDaskError` may escape.
"""

from __future__ import annotations

import contextlib
import io
import struct
import time
import tracemalloc
from pathlib import Path

import fsspec
import numpy as np
import pytest
import rasterio
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.windows import Window

from rasteret_dask.cog import read_cog_header
from rasteret_dask.errors import (
    MalformedTiffError,
    RasteretDaskError,
    TiffError,
    TruncatedTiffError,
    UnsupportedTiffError,
)
from rasteret_dask.tiff.decode import decode_mask_tile
from tests.tiff.matrix import Spec, matrix_files_fixture  # noqa: F401 - a fixture

MiB = 1 << 20
SLACK = 4 * MiB  # allocation allowed beyond the file's size
SECONDS = 1.0

# A classic-TIFF COG with overviews and internal masks (mask overviews too), and a big-endian BigTIFF of
# pixel-interleaved LZW strips with a predictor: between them, every structure the parser walks.
COG_SPEC = Spec(dtype="uint16", block=(16, 16), overviews=True, mask=True, width=70, height=50)
BIG_SPEC = Spec("GTiff", "int16", "lzw", 2, None, rows_per_strip=5, count=3, bigtiff=True, big_endian=True,
                width=70, height=50)  # fmt: skip
CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus"
CORPUS_SEEDS = [
    "cogeotiffjs__rgba8_cog.tiff",  # ZSTD, 16-px tiles, 4 overviews
    "cogeotiffjs__rgba8_cog_big.tiff",  # the same as BigTIFF
    "cogeotiffjs__be_cog.tiff",  # big-endian YCbCr JPEG COG
    "gen_cog_int64_zstd.tif",
    "gen_gtiff_sparse_u16.tif",  # sparse tiles
    "gen_gtiff_jpeg_ycbcr_mask_ovr.tif",  # JPEG with mask IFDs and overviews
    "gen_cog_lerc_deflate_f32.tif",  # LERC with a deflate layer
    "proj__test_vgrid_bigendian_bigtiff.tif",
    "riocogeo__cog_no_offest.tif",
]


# ---------------------------------------------------------------------------------------------------
# Helpers.


def _read_everything(url: str) -> None:
    """Parse the header and read every level whole: what a user of the reader would do."""
    cog = read_cog_header(url)
    for level in range(len(cog.levels)):
        cog.read(level=level)


def _assert_fails(path: Path, error: type[Exception], match: str | None = None) -> Exception:
    """Reading ``path`` raises ``error`` within SECONDS and SLACK bytes of allocation beyond its size."""
    size = path.stat().st_size
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(error, match=match) as caught:
            _read_everything(str(path))
    finally:
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed < SECONDS, f"{path.name}: {elapsed:.2f} s"
    assert peak < size + SLACK, f"{path.name}: peak allocation {peak} bytes for a {size}-byte file"
    return caught.value


@pytest.fixture(scope="module")
def seeds(matrix_files) -> dict[str, bytes]:
    """The two generated seed files' bytes, after one warm-up read (loop and codec set-up are not counted)."""
    paths = {"cog": matrix_files.path(COG_SPEC), "big": matrix_files.path(BIG_SPEC)}
    for path in paths.values():
        _read_everything(str(path))
    return {key: path.read_bytes() for key, path in paths.items()}


def _tags(data: bytes, page: int = 0) -> tuple[dict[int, tifffile.TiffTag], str, bool]:
    """Tags of IFD ``page`` (with the positions of their entries), byte order and BigTIFF-ness, by tifffile."""
    with tifffile.TiffFile(io.BytesIO(data)) as tf:
        tags = {tag.code: tag for tag in tf.pages[page].tags.values()}
        return tags, tf.byteorder, tf.is_bigtiff


def _entry_layout(bigtiff: bool) -> tuple[str, int]:
    """struct format of (type, count) after the tag code and where the value field starts in an entry."""
    return ("HQ", 12) if bigtiff else ("HI", 8)


def _set_count(data: bytes, code: int, count: int, page: int = 0) -> bytes:
    """Overwrite the value count of tag ``code`` (keeps type and value offset)."""
    tags, order, bigtiff = _tags(data, page)
    fmt, _ = _entry_layout(bigtiff)
    out = bytearray(data)
    pos = tags[code].offset + 2
    field_type = struct.unpack_from(order + "H", data, pos)[0]
    struct.pack_into(order + fmt, out, pos, field_type, count)
    return bytes(out)


def _set_values(data: bytes, code: int, field_type: int, values: list[int], page: int = 0) -> bytes:
    """Give tag ``code`` new integer values of ``field_type``, stored out of line at the end of the file."""
    tags, order, bigtiff = _tags(data, page)
    fmt, value_at = _entry_layout(bigtiff)
    char = {3: "H", 4: "I", 16: "Q"}[field_type]
    out = bytearray(data) + b"\0" * (-len(data) % 8)
    where = len(out)
    out += struct.pack(order + char * len(values), *values)
    pos = tags[code].offset
    struct.pack_into(order + fmt, out, pos + 2, field_type, len(values))
    struct.pack_into(order + ("Q" if bigtiff else "I"), out, pos + value_at, where)
    return bytes(out)


def _set_inline(data: bytes, code: int, value: int, field_type: int | None = None, page: int = 0) -> bytes:
    """Make tag ``code`` hold the single inline value ``value`` (of ``field_type``, default: its own)."""
    tags, order, bigtiff = _tags(data, page)
    fmt, value_at = _entry_layout(bigtiff)
    pos = tags[code].offset
    field_type = field_type or struct.unpack_from(order + "H", data, pos + 2)[0]
    out = bytearray(data)
    struct.pack_into(order + fmt, out, pos + 2, field_type, 1)
    struct.pack_into(order + {3: "H", 4: "I", 16: "Q"}[field_type], out, pos + value_at, value)
    return bytes(out)


def _ifd_offsets(data: bytes) -> list[int]:
    with tifffile.TiffFile(io.BytesIO(data)) as tf:
        return [page.offset for page in tf.pages]


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------------------
# Truncation.


def _prefix_lengths(size: int, header_end: int) -> list[int]:
    """Every length through the IFDs (step 3), then about 60 through the tile data, and the last bytes."""
    lengths = set(range(0, header_end + 1, 3)) | set(
        range(header_end, size, max(1, (size - header_end) // 60))
    )
    return sorted(lengths | {size - 1, size - 2})


@pytest.mark.parametrize("seed", ["cog", "big"])
def test_every_sampled_prefix_is_truncated(seed, seeds, tmp_path):
    """A prefix of a valid file raises TruncatedTiffError, or reads exactly the pixels its tiles hold."""
    data = seeds[seed]
    full = read_cog_header(str(_write(tmp_path, "full.tif", data)))
    with tifffile.TiffFile(io.BytesIO(data)) as tf:
        header_end = min(min(o for o in page.dataoffsets if o) for page in tf.pages)
    outcomes = {"header": 0, "tiles": 0, "complete": 0}
    for length in _prefix_lengths(len(data), header_end):
        path = _write(tmp_path, f"prefix-{length}.tif", data[:length])
        try:
            cog = read_cog_header(str(path))
        except TruncatedTiffError:
            _assert_fails(path, TruncatedTiffError)
            outcomes["header"] += 1
            continue
        # The header fits: every level's tiles are read, and either some tile is cut or all pixels match.
        for level in range(len(cog.levels)):
            try:
                pixels = cog.read(level=level)
            except TruncatedTiffError:
                _assert_fails(path, TruncatedTiffError)
                outcomes["tiles"] += 1
                break
            np.testing.assert_array_equal(pixels, full.read(level=level))
        else:
            outcomes["complete"] += 1
    assert outcomes["header"] > 50 and outcomes["tiles"] > 30, outcomes


# ---------------------------------------------------------------------------------------------------
# Crafted structures.


def test_ifd_chain_loops(seeds, tmp_path):
    data = seeds["cog"]
    _, order, _ = _tags(data)
    offsets = _ifd_offsets(data)
    count = struct.unpack_from(order + "H", data, offsets[-1])[0]
    next_at = offsets[-1] + 2 + 12 * count
    assert struct.unpack_from(order + "I", data, next_at)[0] == 0
    for target in (offsets[0], offsets[-1], offsets[len(offsets) // 2]):  # back to the start, itself, middle
        looped = bytearray(data)
        struct.pack_into(order + "I", looped, next_at, target)
        _assert_fails(_write(tmp_path, f"loop-{target}.tif", bytes(looped)), MalformedTiffError, "loops")


def test_bigtiff_ifd_with_2_40_entries(seeds, tmp_path):
    minimal = b"II" + struct.pack("<HHHQ", 43, 8, 0, 16) + struct.pack("<Q", 1 << 40) + bytes(64)
    _assert_fails(_write(tmp_path, "minimal.tif", minimal), MalformedTiffError, "entries")
    data = bytearray(seeds["big"])
    first = _ifd_offsets(bytes(data))[0]
    struct.pack_into(">Q", data, first, 1 << 40)
    _assert_fails(_write(tmp_path, "entries.tif", bytes(data)), MalformedTiffError, "entries")


@pytest.mark.parametrize(
    ("seed", "code"),
    [("big", 273), ("big", 279), ("big", 34735), ("cog", 324), ("cog", 325), ("cog", 34737)],
    ids=["strip-offsets", "strip-byte-counts", "geokeys", "tile-offsets", "tile-byte-counts", "geo-ascii"],
)
def test_tag_claiming_2_40_values(seed, code, seeds, tmp_path):
    data = seeds[seed]
    _, _, bigtiff = _tags(data)
    count = (1 << 40) if bigtiff else 0xFFFFFFFF  # classic TIFF counts are 32-bit: the largest there is
    bad = _set_count(data, code, count)
    _assert_fails(_write(tmp_path, f"count-{code}.tif", bad), MalformedTiffError, f"tag {code}")


def test_tile_claiming_10_gb_of_storage(seeds, tmp_path):
    data = seeds["big"]
    tags, _, _ = _tags(data)
    counts = list(tags[279].value)
    counts[0] = 10 << 30
    bad = _set_values(data, 279, 16, counts)
    _assert_fails(_write(tmp_path, "10gb.tif", bad), TruncatedTiffError, "runs past the end of the file")


def test_tile_claiming_10_gb_decoded(seeds, tmp_path):
    # 40000 x 40000 uint16 pixels per tile: 3.2 GB to decode one tile.
    bad = _set_inline(_set_inline(seeds["cog"], 322, 40000), 323, 40000)
    _assert_fails(_write(tmp_path, "tile.tif", bad), UnsupportedTiffError, "a tile of 40000 x 40000 pixels")
    # One strip of 70 x 2^31 pixels of 3 int16 samples: ImageLength and RowsPerStrip as LONG 2^31.
    bad = _set_inline(_set_inline(seeds["big"], 257, 1 << 31, field_type=4), 278, 1 << 31, field_type=4)
    _assert_fails(
        _write(tmp_path, "strip.tif", bad), UnsupportedTiffError, "a strip of 70 x 2147483648 pixels"
    )


def test_sparse_tile_of_65535_samples_reads_in_bounded_memory(tmp_path):
    """SamplesPerPixel 65535 in a 556-byte sparse file: GDAL opens it (65535 bands) and reads the fill value.

    A 1 x 1 window needs 65535 output values, not the 64 x 64 x 65535 x 2 bytes (537 MB) of a whole tile.
    """
    data = _set_inline((CORPUS / "gen_gtiff_sparse_u16.tif").read_bytes(), 277, 65535)
    path = _write(tmp_path, "spp.tif", data)
    cog = read_cog_header(str(path))
    assert cog.count == 65535 and cog.tiff.levels[0].tile_byte_counts[0] == 0
    with rasterio.open(path) as ds:
        assert ds.count == 65535
        theirs = ds.read([1, 2, 65535], window=Window(0, 0, 1, 1))
    tracemalloc.start()
    start = time.perf_counter()
    try:
        ours = cog.read(window=((0, 1), (0, 1)))
    finally:
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    np.testing.assert_array_equal(ours[[0, 1, 65534]], theirs)
    assert elapsed < SECONDS, elapsed
    assert peak < len(data) + SLACK, f"peak allocation {peak} bytes"


def test_offsets_past_the_end(seeds, tmp_path):
    data = seeds["cog"]
    _, order, _ = _tags(data)
    size = len(data)
    first_ifd = bytearray(data)
    struct.pack_into(order + "I", first_ifd, 4, size + 100)
    _assert_fails(_write(tmp_path, "ifd.tif", bytes(first_ifd)), TruncatedTiffError)
    # A later IFD past the end.
    offsets = _ifd_offsets(data)
    count = struct.unpack_from(order + "H", data, offsets[0])[0]
    later = bytearray(data)
    struct.pack_into(order + "I", later, offsets[0] + 2 + 12 * count, size + 8)
    _assert_fails(_write(tmp_path, "later-ifd.tif", bytes(later)), TruncatedTiffError)
    # A tag value (the tile offsets array) past the end.
    tags, _, _ = _tags(data)
    value = bytearray(data)
    struct.pack_into(order + "I", value, tags[324].offset + 8, size + 4)
    _assert_fails(_write(tmp_path, "value.tif", bytes(value)), TruncatedTiffError, "tag 324")
    # A tile past the end: the header is fine, reading fails.
    moved = list(tags[324].value)
    moved[0] = size + 1000
    path = _write(tmp_path, "tile.tif", _set_values(data, 324, 4, moved))
    read_cog_header(str(path))
    _assert_fails(path, TruncatedTiffError, "tile 0")


def test_unknown_compression(seeds, tmp_path):
    bad = _set_inline(seeds["cog"], 259, 60000)
    _assert_fails(_write(tmp_path, "codec.tif", bad), UnsupportedTiffError, "compression 60000")


def test_garbage_and_wrong_magic(tmp_path):
    rng = np.random.default_rng(20240601)
    noise = rng.integers(0, 256, 10_000, dtype=np.uint8).tobytes()
    cases = [
        ("empty", b"", TruncatedTiffError),
        ("three-bytes", b"II*", TruncatedTiffError),
        ("noise", b"\x00\x01" + noise, MalformedTiffError),
        ("png", b"\x89PNG\r\n\x1a\n" + noise, MalformedTiffError),
        ("version-298", b"II\x2a\x01" + noise, MalformedTiffError),
        ("bigtiff-offset-size-4", b"II\x2b\x00\x04\x00\x00\x00" + noise, MalformedTiffError),
        ("ifd-in-header", b"II*\x00\x04\x00\x00\x00" + noise, MalformedTiffError),
        ("ifd-of-65535-entries", b"II*\x00\x08\x00\x00\x00" + b"\xff" * 2000, MalformedTiffError),
        ("ifd-of-zero-entries", b"MM\x00*\x00\x00\x00\x08" + bytes(64), MalformedTiffError),
    ]
    for name, data, error in cases:
        _assert_fails(_write(tmp_path, f"{name}.tif", data), error)
    # Noise after a valid header: some TiffError, whichever structure the noise breaks first.
    for i in range(20):
        chunk = rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
        _assert_fails(_write(tmp_path, f"noise-{i}.tif", b"II*\x00\x08\x00\x00\x00" + chunk), TiffError)


# ---------------------------------------------------------------------------------------------------
# Random mutations of real headers.

_FS = fsspec.filesystem("memory")


def _seed_files(matrix_files) -> dict[str, bytes]:
    files = {name: (CORPUS / name).read_bytes() for name in CORPUS_SEEDS}
    for spec in (
        COG_SPEC,
        BIG_SPEC,
        Spec(dtype="float32", codec="lerc_zstd", block=(16, 16), overviews=True, width=70, height=50),
        Spec(dtype="uint8", codec="webp", block=(16, 16), count=4, width=40, height=30),
        Spec(
            "GTiff",
            "uint16",
            "deflate",
            1,
            (32, 16),
            count=4,
            interleave="band",
            sparse=True,
            width=70,
            height=50,
        ),
    ):
        files[spec.id] = matrix_files.path(spec).read_bytes()
    return files


@pytest.fixture(scope="module")
def fuzz_seeds(matrix_files) -> dict[str, tuple[bytes, int]]:
    """Seed bytes and where their header section ends (the first tile), by tifffile."""
    out = {}
    for name, data in _seed_files(matrix_files).items():
        with tifffile.TiffFile(io.BytesIO(data)) as tf:
            firsts = [o for page in tf.pages for o in page.dataoffsets if o]
        out[name] = (data, min(firsts) if firsts else len(data))
    return out


_WORDS = st.sampled_from([0, 1, 2, 7, 8, 16, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]) | st.integers(
    0, 0xFFFFFFFF
)


@st.composite
def _mutations(draw, seeds: dict[str, tuple[bytes, int]]):
    name = draw(st.sampled_from(sorted(seeds)))
    data, header_end = seeds[name]
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["byte", "word", "word", "tile"]))
        if kind == "byte":
            out[draw(st.integers(0, header_end - 1))] = draw(st.integers(0, 255))
        elif kind == "word":
            pos = draw(st.integers(0, max(0, header_end - 4)))
            value = draw(_WORDS).to_bytes(4, draw(st.sampled_from(["little", "big"])))
            out[pos : pos + 4] = value
        elif header_end < len(out):
            out[draw(st.integers(header_end, len(out) - 1))] ^= draw(st.integers(1, 255))
    if draw(st.integers(0, 9)) == 0:
        out = out[: draw(st.integers(0, len(out)))]
    return name, bytes(out)


def _exercise(url: str) -> None:
    """Header, a corner window of every level at both ends, and every mask's first tile."""
    cog = read_cog_header(url)
    for index, level in enumerate(cog.levels):
        h, w = min(level.height, 48), min(level.width, 48)
        cog.read(window=((0, h), (0, w)), level=index)
        cog.read(window=((level.height - h, level.height), (level.width - w, level.width)), level=index)
    data = _FS.cat_file(url.removeprefix("memory://"))
    for mask in cog.tiff.masks:
        if mask is not None and mask.tile_byte_counts[0] and mask.tile_offsets[0]:
            offset, count = int(mask.tile_offsets[0]), int(mask.tile_byte_counts[0])
            if offset + count <= len(data):
                rows = None if mask.tiled else min(mask.tile_height, mask.height)
                decode_mask_tile(data[offset : offset + count], mask.codec, rows)


def test_mutated_headers_raise_only_our_errors(fuzz_seeds):
    assert len(fuzz_seeds) == len(CORPUS_SEEDS) + 5

    @settings(
        max_examples=300,
        deadline=2000,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(_mutations(fuzz_seeds))
    def run(case):
        _, data = case
        _FS.pipe_file("/fuzz/case.tif", data)
        with contextlib.suppress(RasteretDaskError):  # anything else fails the test
            _exercise("memory://fuzz/case.tif")

    run()
