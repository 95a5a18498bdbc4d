"""TIFF tag codes, field types and the codes of the values this package interprets.

Numbers from the TIFF 6.0 specification, the BigTIFF proposal, the GeoTIFF 1.1 standard (OGC 19-008r4)
and GDAL's private tags.
"""

from __future__ import annotations

import numpy as np

# Field types: code -> (name, numpy dtype char of one element, elements per value).
# RATIONAL/SRATIONAL are two 32-bit integers per value; ASCII and UNDEFINED are bytes.
FIELD_TYPES: dict[int, tuple[str, str, int]] = {
    1: ("BYTE", "u1", 1),
    2: ("ASCII", "u1", 1),
    3: ("SHORT", "u2", 1),
    4: ("LONG", "u4", 1),
    5: ("RATIONAL", "u4", 2),
    6: ("SBYTE", "i1", 1),
    7: ("UNDEFINED", "u1", 1),
    8: ("SSHORT", "i2", 1),
    9: ("SLONG", "i4", 1),
    10: ("SRATIONAL", "i4", 2),
    11: ("FLOAT", "f4", 1),
    12: ("DOUBLE", "f8", 1),
    13: ("IFD", "u4", 1),
    16: ("LONG8", "u8", 1),
    17: ("SLONG8", "i8", 1),
    18: ("IFD8", "u8", 1),
}


FIELD_SIZES = {code: np.dtype(char).itemsize * n for code, (_, char, n) in FIELD_TYPES.items()}
# struct format characters of the integer field types (for fast reads of small values).
INTEGER_FORMATS = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 13: "I", 16: "Q", 17: "q", 18: "Q"}


def field_type_size(field_type: int) -> int:
    """Bytes taken by one value of a field type."""
    return FIELD_SIZES[field_type]


NEW_SUBFILE_TYPE = 254
IMAGE_WIDTH = 256
IMAGE_LENGTH = 257
BITS_PER_SAMPLE = 258
COMPRESSION = 259
PHOTOMETRIC = 262
FILL_ORDER = 266
STRIP_OFFSETS = 273
SAMPLES_PER_PIXEL = 277
ROWS_PER_STRIP = 278
STRIP_BYTE_COUNTS = 279
PLANAR_CONFIGURATION = 284
PREDICTOR = 317
TILE_WIDTH = 322
TILE_LENGTH = 323
TILE_OFFSETS = 324
TILE_BYTE_COUNTS = 325
EXTRA_SAMPLES = 338
SAMPLE_FORMAT = 339
JPEG_TABLES = 347
YCBCR_SUBSAMPLING = 530
MODEL_PIXEL_SCALE = 33550
MODEL_TIEPOINT = 33922
MODEL_TRANSFORMATION = 34264
GEO_KEY_DIRECTORY = 34735
GEO_DOUBLE_PARAMS = 34736
GEO_ASCII_PARAMS = 34737
GDAL_METADATA = 42112
GDAL_NODATA = 42113
LERC_PARAMETERS = 50674

# Tags whose values every image IFD needs (layout and encoding).
LAYOUT_TAGS = frozenset(
    {
        NEW_SUBFILE_TYPE,
        IMAGE_WIDTH,
        IMAGE_LENGTH,
        BITS_PER_SAMPLE,
        COMPRESSION,
        PHOTOMETRIC,
        FILL_ORDER,
        STRIP_OFFSETS,
        SAMPLES_PER_PIXEL,
        ROWS_PER_STRIP,
        STRIP_BYTE_COUNTS,
        PLANAR_CONFIGURATION,
        PREDICTOR,
        TILE_WIDTH,
        TILE_LENGTH,
        TILE_OFFSETS,
        TILE_BYTE_COUNTS,
        EXTRA_SAMPLES,
        SAMPLE_FORMAT,
        JPEG_TABLES,
        YCBCR_SUBSAMPLING,
        LERC_PARAMETERS,
    }
)

# Tags read from the first IFD only: georeferencing and GDAL's per-dataset metadata.
DATASET_TAGS = frozenset(
    {
        MODEL_PIXEL_SCALE,
        MODEL_TIEPOINT,
        MODEL_TRANSFORMATION,
        GEO_KEY_DIRECTORY,
        GEO_DOUBLE_PARAMS,
        GEO_ASCII_PARAMS,
        GDAL_METADATA,
        GDAL_NODATA,
    }
)

# NewSubfileType bits.
SUBFILE_REDUCED_RESOLUTION = 1
SUBFILE_MASK = 4

# SampleFormat values.
SAMPLE_FORMAT_NAMES = {1: "uint", 2: "int", 3: "float", 4: "void", 5: "complex int", 6: "complex float"}

PHOTOMETRIC_MASK = 4
PHOTOMETRIC_YCBCR = 6
