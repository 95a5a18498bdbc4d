"""The header parser and the COG reader against GDAL and tifffile, on a generated matrix of GDAL files.

Files are written by GDAL's COG and GTiff drivers through rasterio (see ``tests/tiff/matrix.py`` for the
dimensions). For each file: our header against tifffile's tags (every IFD) and GDAL's profile, then our
pixels against GDAL's and tifffile's for the whole raster, edge-crossing and random windows, at every
overview level. The fast set runs by default; the full products are marked ``slow``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
import rasterio.shutil
import tifffile
from rasterio.windows import Window

from rasteret_dask.cog import HEADER_PREFIX_BYTES, read_cog_header
from rasteret_dask.io import stats
from rasteret_dask.tiff.decode import decode_mask_tile
from tests.tiff.matrix import (
    FAST_SPECS,
    Spec,
    assert_same_pixels,
    assert_ycbcr_jpeg_close,
    check_header_vs_gdal,
    check_header_vs_tifffile,
    gdal_read,
    matrix_files_fixture,  # noqa: F401 - a fixture
    parse_bytes,
    same_header,
    slow_specs,
    spec_seed,
    tifffile_pixels,
    window_set,
    without_identity,
)

SPECS = [pytest.param(s, id=s.id) for s in FAST_SPECS] + [
    pytest.param(s, id=s.id, marks=pytest.mark.slow) for s in slow_specs()
]

JPEG, YCBCR, LERC = 7, 6, 34887


def _sparse_pixels(level) -> np.ndarray:
    """(planes, rows, cols) True where a pixel lies in a sparse tile (offset or byte count 0)."""
    out = np.zeros((level.planes, level.height, level.width), bool)
    for plane in range(level.planes):
        for r in range(level.tiles_down):
            for c in range(level.tiles_across):
                i = level.tile_index(r, c, plane)
                if level.tile_offsets[i] == 0 or level.tile_byte_counts[i] == 0:
                    rows = slice(r * level.tile_height, (r + 1) * level.tile_height)
                    out[plane, rows, c * level.tile_width : (c + 1) * level.tile_width] = True
    return out


def test_fast_set_covers_every_dimension():
    """The unmarked subset keeps at least one file for every value of every matrix dimension."""
    seen = {name: {getattr(s, name) for s in FAST_SPECS} for name in Spec.__dataclass_fields__}
    assert seen["driver"] == {"COG", "GTiff"}
    assert seen["dtype"] >= {"uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64"}
    assert seen["dtype"] >= {"float16", "float32", "float64"}
    assert seen["codec"] >= {"none", "deflate", "lzw", "zstd", "lzma", "packbits", "lerc", "jpeg", "webp"}
    assert seen["codec"] >= {"lerc_deflate", "lerc_zstd"}
    assert seen["predictor"] == {1, 2, 3}
    assert {(256, 256), (16, 16), (32, 16), None} <= seen["block"]
    assert seen["count"] >= {1, 3, 4} and seen["interleave"] == {"pixel", "band"}
    for flag in ("big_endian", "bigtiff", "overviews", "mask", "sparse", "scale_offset"):
        assert seen[flag] == {False, True}, flag
    assert seen["nodata"] >= {None, "small", "extreme", "float", "nan"}
    assert seen["crs"] >= {"epsg", "proj", "none"}
    assert len(slow_specs()) > 500


@pytest.mark.parametrize("spec", SPECS)
def test_header_matches_tifffile(spec, matrix_files):
    path = matrix_files.path(spec)
    cog = read_cog_header(str(path))
    header = cog.tiff
    check_header_vs_tifffile(header, path)
    assert header.file_size == path.stat().st_size
    # The pure parser, from the same 64 KiB prefix and from the whole file, agrees with the reader.
    data = path.read_bytes()
    assert same_header(parse_bytes(data, prefix=HEADER_PREFIX_BYTES), without_identity(header))
    assert same_header(parse_bytes(data), without_identity(header))
    # The file has what the spec asked for (so that no check above passes vacuously).
    assert header.byteorder == (">" if spec.big_endian else "<")
    assert header.bigtiff == spec.bigtiff
    assert header.levels[0].tiled == (spec.block is not None)
    assert (len(header.levels) > 1) == spec.overviews
    if spec.mask:
        assert all(m is not None for m in header.masks)
    if spec.sparse:
        assert (header.levels[0].tile_byte_counts == 0).any()
    if spec.count > 1:
        assert header.planar_configuration == (2 if spec.interleave == "band" else 1)


@pytest.mark.parametrize("spec", SPECS)
def test_header_matches_gdal(spec, matrix_files):
    path = matrix_files.path(spec)
    check_header_vs_gdal(read_cog_header(str(path)), path)


@pytest.mark.parametrize("spec", SPECS)
def test_pixels_match_gdal_and_tifffile(spec, matrix_files):
    path = matrix_files.path(spec)
    cog = read_cog_header(str(path))
    header = cog.tiff
    ycbcr_jpeg = header.codec.compression == JPEG and header.photometric == YCBCR
    with tifffile.TiffFile(path) as tf:
        for index, level in enumerate(header.levels):
            windows = window_set(
                level.width, level.height, level.tile_width, level.tile_height, spec_seed(spec)
            )
            for window in windows:
                what = f"level {index} window {window}"
                ours, theirs = cog.read(window=window, level=index), gdal_read(path, window, index)
                if ycbcr_jpeg:
                    assert_ycbcr_jpeg_close(ours, theirs, what, channel_bound=64)
                else:
                    assert_same_pixels(ours, theirs, what)
            # tifffile: the whole level, bit for bit (its JPEG decoder is libjpeg-turbo, as ours). It fills
            # sparse tiles with its own reading of GDAL_NODATA (0 when it cannot cast it, e.g. the lowest
            # float32), so sparse tiles are compared with GDAL only, above.
            ours = cog.read(level=index)
            theirs = tifffile_pixels(tf.pages[level.ifd_index])
            skip = np.broadcast_to(_sparse_pixels(level), ours.shape)
            if level.codec.compression == LERC and header.byteorder == ">":
                # GDAL writes big-endian LERC blobs from byte-swapped samples, and a value whose swapped bits
                # form a NaN ends up invalid in LERC's mask: GDAL reads its NaN fill back byte-swapped
                # (6.9e-41) there, and we do as GDAL (compared above). tifffile reads 0.0 for them.
                gdal = gdal_read(path, None, index)
                disagree = gdal.view(f"u{gdal.itemsize}") != theirs.view(f"u{theirs.itemsize}")
                assert disagree.mean() < 0.02, disagree.mean()
                skip = skip | disagree
            if skip.any():
                ours, theirs = (
                    np.where(skip, 0, ours).astype(ours.dtype),
                    np.where(skip, 0, theirs).astype(theirs.dtype),
                )
            assert_same_pixels(ours, theirs, f"tifffile level {index}")


@pytest.mark.parametrize("spec", [p for p in SPECS if p.values[0].mask])
def test_internal_masks_match_gdal(spec, matrix_files):
    """Mask IFDs (NewSubfileType 4) decode to GDAL's per-dataset mask at every level."""
    path = matrix_files.path(spec)
    header = read_cog_header(str(path)).tiff
    data = path.read_bytes()
    for index, mask in enumerate(header.masks):
        assert mask is not None
        ours = np.zeros((mask.height, mask.width), bool)
        for r in range(mask.tiles_down):
            for c in range(mask.tiles_across):
                i = mask.tile_index(r, c)
                offset, count = int(mask.tile_offsets[i]), int(mask.tile_byte_counts[i])
                if offset == 0 or count == 0:
                    continue  # a sparse mask tile: GDAL reads it as 0, every pixel masked
                rows = None if mask.tiled else min(mask.tile_height, mask.height - r * mask.tile_height)
                tile = decode_mask_tile(data[offset : offset + count], mask.codec, rows)
                top, left = r * mask.tile_height, c * mask.tile_width
                h, w = min(tile.shape[0], mask.height - top), min(tile.shape[1], mask.width - left)
                ours[top : top + h, left : left + w] = tile[:h, :w]
        kwargs = {} if index == 0 else {"overview_level": index - 1}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with rasterio.open(path, **kwargs) as ds:
                theirs = ds.read_masks(1)
        np.testing.assert_array_equal(
            np.where(ours, 255, 0).astype(np.uint8), theirs, err_msg=f"level {index}"
        )


def test_64bit_nodata_written_as_double(tmp_path):
    """A 64-bit integer nodata that rasterio wrote through GDAL's double API reads as GDAL reads it.

    GTiff stores it as "%.18g" text ("-9.2233720368547758e+18"); GDAL parses GDAL_NODATA of an Int64 band
    as an integer prefix (strtoll) and gets -9, which it reports and fills sparse tiles with. So do we.
    """
    path = tmp_path / "int64.tif"
    profile = {"driver": "GTiff", "width": 32, "height": 32, "count": 1, "dtype": "int64", "tiled": True}
    profile.update(blockxsize=16, blockysize=16, sparse_ok=True, nodata=-(2**63))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(np.arange(256, dtype=np.int64).reshape(1, 16, 16), window=Window(0, 0, 16, 16))
        with rasterio.open(path) as ds:
            gdal_nodata = ds.nodata
            gdal_pixels = ds.read()
    cog = read_cog_header(str(path))
    assert cog.nodata == gdal_nodata
    np.testing.assert_array_equal(cog.read(), gdal_pixels)
    assert gdal_read(path)[0, 20, 20] == -9


# ---------------------------------------------------------------------------------------------------
# Request counts.

COUNTED = [
    Spec(dtype="uint16", block=(16, 16), mask=True, overviews=True, width=300, height=217),
    Spec(dtype="float32", codec="zstd", predictor=3, block=(256, 256), overviews=True, width=700, height=600),
    Spec(
        dtype="uint8",
        codec="jpeg",
        block=(16, 16),
        count=3,
        overviews=True,
        bigtiff=True,
        width=120,
        height=90,
    ),
]


def _header_end(path) -> int:
    """Where GDAL's header section ends: the first tile or strip of any IFD."""
    with tifffile.TiffFile(path) as tf:
        return min(min(o for o in page.dataoffsets if o) for page in tf.pages)


@pytest.mark.parametrize("spec", COUNTED, ids=lambda s: s.id)
def test_cog_header_costs_one_request(spec, matrix_files, range_server):
    path = matrix_files.path(spec)
    assert _header_end(path) <= HEADER_PREFIX_BYTES  # every IFD and tag array within the first GET
    url = range_server.put(path.name, path.read_bytes())
    range_server.reset_stats()
    header = read_cog_header(url).tiff
    assert range_server.requests(path.name) == 1
    assert same_header(without_identity(header), without_identity(read_cog_header(str(path)).tiff))
    # The same through the local-file store, counted by the library's own counters.
    stats.reset()
    read_cog_header(str(path))
    assert stats.snapshot().requests == 1


@pytest.fixture(scope="session")
def big_cog(tmp_path_factory):
    """A 20000 x 20000 uint16 COG of zeros (deflate, 256-px tiles, overviews): its tile arrays pass 64 KiB."""
    directory = tmp_path_factory.mktemp("big-cog")
    source, target = directory / "zeros.tif", directory / "big_cog.tif"
    profile = {
        "driver": "GTiff",
        "width": 20000,
        "height": 20000,
        "count": 1,
        "dtype": "uint16",
        "tiled": True,
    }
    profile.update(blockxsize=256, blockysize=256, sparse_ok=True, crs="EPSG:32633")
    with rasterio.open(source, "w", transform=rasterio.Affine(10, 0, 500000, 0, -10, 4600000), **profile):
        pass  # every block unwritten: GDAL reads zeros
    rasterio.shutil.copy(source, target, driver="COG", compress="deflate", blocksize=256)
    return target


def test_big_cog_header_costs_exactly_two_requests(big_cog, range_server):
    assert _header_end(big_cog) > HEADER_PREFIX_BYTES
    url = range_server.put(big_cog.name, big_cog.read_bytes())
    range_server.reset_stats()
    cog = read_cog_header(url)
    assert range_server.requests(big_cog.name) == 2
    check_header_vs_tifffile(cog.tiff, big_cog)
    check_header_vs_gdal(cog, big_cog)
    assert cog.tiff.levels[0].tile_offsets.size == 79 * 79
    window = ((19990, 20000), (19740, 20000))
    assert_same_pixels(cog.read(window=window), gdal_read(big_cog, window), "last tiles")
    assert_same_pixels(
        cog.read(level=len(cog.levels) - 1), gdal_read(big_cog, None, len(cog.levels) - 1), "ovr"
    )
