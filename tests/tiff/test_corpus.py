"""Every TIFF of the shared corpus (real files from other tools) against what GDAL reported (oracle.json).

For each file GDAL reads, our header agrees with GDAL's profile and the sha256 of our full-resolution
pixels equals GDAL's. Files we do not read are listed in :data:`UNREADABLE` with the error we raise; the
test fails when a file outside the list errors or a listed file stops erroring, so the list stays true.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import tifffile
from pyproj import CRS

from rasteret_dask.cog import read_cog_header
from rasteret_dask.errors import TruncatedTiffError, UnsupportedTiffError
from tests.tiff.matrix import (
    assert_same_pixels,
    assert_ycbcr_jpeg_close,
    gdal_dtype,
    same_nodata,
    tifffile_pixels,
)

CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus"
NAMES = (
    sorted(p.name for p in CORPUS.iterdir() if p.suffix.lower() in (".tif", ".tiff"))
    if CORPUS.is_dir()
    else []
)

# File -> (the error we raise, a regular expression its message matches). Why, per line.
UNREADABLE: dict[str, tuple[type[Exception], str]] = {
    # Sample widths other than 8/16/32/64 bits (GDAL unpacks them; we read whole bytes only).
    "asynctiff__12bit.cropped.rgb.tiff": (UnsupportedTiffError, "12-bit integer samples"),
    "asynctiff__12bit.cropped.tiff": (UnsupportedTiffError, "12-bit integer samples"),
    "asynctiff__miniswhite-1c-1b.tiff": (UnsupportedTiffError, "1-bit integer samples"),
    "asynctiff__palette-1c-1b.tiff": (UnsupportedTiffError, "1-bit integer samples"),
    "asynctiff__palette-1c-4b.tiff": (UnsupportedTiffError, "4-bit integer samples"),
    "asynctiff__tiled-gray-i1.tif": (UnsupportedTiffError, "1-bit integer samples"),
    "gdal__int10.tif": (UnsupportedTiffError, "10-bit integer samples"),
    "gdal__int24.tif": (UnsupportedTiffError, "24-bit integer samples"),
    "gdal__slim_g4.tif": (UnsupportedTiffError, "1-bit integer samples"),  # CCITT G4 bilevel
    # 12-bit JPEG (GDAL's build cannot read it either).
    "gdal__mandrilmini_12bitjpeg.tif": (UnsupportedTiffError, "12-bit integer samples"),
    # Complex samples.
    "gdal__cint16.tif": (UnsupportedTiffError, r"complex samples \(complex int, 32-bit\)"),
    "gdal__cint32.tif": (UnsupportedTiffError, r"complex samples \(complex int, 64-bit\)"),
    "gdal__rgba-cfloat64.tif": (UnsupportedTiffError, r"complex samples \(complex float, 128-bit\)"),
    # 8-bit CMYK, which GDAL converts to RGBA through libtiff's RGBA interface.
    "asynctiff__tiled-cmyk-i8.tif": (UnsupportedTiffError, r"8-bit photometric 5 \(CMYK\)"),
    "gdal__rgbsmall_cmyk.tif": (UnsupportedTiffError, r"8-bit photometric 5 \(CMYK\)"),
    # Old-style JPEG (compression 6).
    "gdal__zackthecat.tif": (UnsupportedTiffError, r"compression 6 \(old-style JPEG\)"),
    # Rotated ModelTransformation: only axis-aligned grids are read.
    "gdal__geomatrix.tif": (UnsupportedTiffError, "rotated or sheared ModelTransformation"),
    "rio__rotated.tif": (UnsupportedTiffError, "rotated or sheared ModelTransformation"),
    # Broken files GDAL fails on too.
    "gdal__corrupted_gtiff_tags.tif": (TruncatedTiffError, "tag 34737 .* runs past the end of the file"),
    "gdal__dos_strip_chop.tif": (UnsupportedTiffError, r"a strip of 2048 x 1073741824 pixels"),
    # Its first strip is one PackBits byte announcing a 7-byte literal run; GDAL reports a read failure.
    "gdal__byte_buggy_packbits.tif": (TruncatedTiffError, r"PackBits\) data decodes to 0 bytes"),
}

# File -> why our CRS differs from GDAL's (checked: the CRSs really differ, so the list stays true).
CRS_DIFFERENCES = {
    # Several tiepoints and no pixel scale: ground control points. GDAL attaches the CRS to the GCPs and
    # reports no dataset CRS; we report the GeoKeys' CRS (and no transform).
    "georust__austrian_capitals_model_tie_points_pixel_is_area.tif": "GCPs: GDAL has no dataset CRS",
    "riotiler__cog_gcps_ovr.tif": "GCPs: GDAL has no dataset CRS",
    # ESRI PE string for Web Mercator: GDAL builds Mercator (variant B) on a sphere of radius 6378137 from
    # the user-defined GeoKeys; we build Popular Visualisation Pseudo Mercator on WGS 84 (EPSG:3857's
    # method). Projected coordinates agree; the geodetic datum does not.
    "geotrellis__SBN_inc_percap-nodata-clip.tif": "Web Mercator as pseudo-Mercator on WGS 84, GDAL: sphere",
}

JPEG, YCBCR = 7, 6


def _read_all(path: Path):
    cog = read_cog_header(str(path))
    return cog, cog.read()


def test_corpus_is_present_and_lists_are_current(corpus_oracle):
    assert NAMES, f"no TIFFs found in {CORPUS}"
    assert sorted(corpus_oracle) == NAMES
    assert set(UNREADABLE) <= set(NAMES)
    assert set(CRS_DIFFERENCES) <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_corpus_file(name, corpus_dir, corpus_oracle):
    path = corpus_dir / name
    oracle = corpus_oracle[name]
    gdal = oracle["gdal"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == oracle["sha256"], "the corpus file changed"
    if name in UNREADABLE:
        error, pattern = UNREADABLE[name]
        with pytest.raises(error, match=pattern):
            _read_all(path)
        return
    assert gdal["read_ok"], f"GDAL cannot read {name} ({gdal['error']}) but we do: list it in UNREADABLE"
    cog, pixels = _read_all(path)
    header = cog.tiff

    assert (cog.width, cog.height, cog.count) == (gdal["width"], gdal["height"], gdal["count"])
    assert gdal["dtypes"] == [gdal_dtype(header.dtype)] * cog.count
    transform = None if cog.transform is None else list(cog.transform)[:6]
    if gdal["transform"] is None:  # GDAL reports an identity transform as no georeferencing
        assert transform in (None, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    else:
        assert transform == gdal["transform"]
    nodata = gdal["nodata"]
    assert same_nodata(cog.nodata, float(nodata) if nodata is not None else None), (cog.nodata, nodata)
    assert len(cog.levels) - 1 == len(gdal["overviews"][0])
    assert list(header.scales) == gdal["scales"]
    assert list(header.offsets) == gdal["offsets"]
    if gdal["tiled"]:  # GDAL re-blocks single-strip files, so strips are not compared
        assert (header.levels[0].tile_width, header.levels[0].tile_height) == (
            gdal["blockxsize"],
            gdal["blockysize"],
        )
    flags = gdal["mask_flags"][0]
    assert (header.masks[0] is not None) == ("per_dataset" in flags and "alpha" not in flags)

    theirs_crs = None if gdal["crs_wkt"] is None else CRS.from_wkt(gdal["crs_wkt"])
    same_crs = (cog.crs is None and theirs_crs is None) or (
        cog.crs is not None and theirs_crs is not None and cog.crs.equals(theirs_crs)
    )
    assert same_crs != (name in CRS_DIFFERENCES), (cog.crs, theirs_crs)

    # Pixels: GDAL 3.10 has no Float16 and reports half floats as float32, so our native float16 is cast to
    # float32 (exactly) before hashing, to hash what GDAL hashed.
    assert pixels.shape == (cog.count, cog.height, cog.width)
    hashed = pixels.astype(gdal["dtypes"][0]) if pixels.dtype != np.dtype(gdal["dtypes"][0]) else pixels
    digest = hashlib.sha256(np.ascontiguousarray(hashed).tobytes()).hexdigest()
    if header.codec.compression == JPEG and header.photometric == YCBCR:
        # Chroma upsampling differs between GDAL's libjpeg 9 and libjpeg-turbo (see matrix.py): no hash can
        # match. Compare with GDAL under the luma bound, and with tifffile (libjpeg-turbo) bit for bit.
        assert digest != gdal["pixels_sha256"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NotGeoreferencedWarning
            with rasterio.open(path) as ds:
                assert_ycbcr_jpeg_close(pixels, ds.read(), name)
        with tifffile.TiffFile(path) as tf:
            assert_same_pixels(pixels, tifffile_pixels(tf.pages[0]), f"{name} vs tifffile")
    else:
        assert digest == gdal["pixels_sha256"]


def test_corpus_unreadable_reasons_are_what_gdal_says(corpus_oracle):
    """Files GDAL fails on are all in UNREADABLE (we must not invent pixels GDAL cannot produce)."""
    gdal_fails = {name for name, entry in corpus_oracle.items() if not entry["gdal"]["read_ok"]}
    assert gdal_fails <= set(UNREADABLE)
