"""Which pixels of a read are valid: GDAL's mask band rules, shared by every read surface."""

from __future__ import annotations

import numpy as np

from ..geo.warp import nodata_valid
from ..tiff.decode import fill_scalar
from ..tiff.model import TiffHeader, TileCodec


def valid_pixels(
    pixels: np.ndarray, nodata: float | None, codec: TileCodec, mask: np.ndarray | None
) -> np.ndarray:
    """GDAL's mask band: the internal mask where the file has one, else pixels unequal to nodata.

    ``mask`` is the ``(1, rows, cols)`` result of a mask read (1 valid, 0 masked) or None; ``codec`` is
    the level's, to convert ``nodata`` into the pixels' type as GDAL does. Float pixels within GDAL's
    relative tolerance of nodata are nodata; an integer nodata outside the type's range marks nothing.
    """
    if mask is not None:
        return np.broadcast_to(mask[0] > 0, pixels.shape)
    if nodata is None:
        return np.ones(pixels.shape, dtype=bool)
    if pixels.dtype.kind == "f":  # GDAL compares floats within a relative epsilon (ARE_REAL_EQUAL)
        return nodata_valid(pixels, nodata)
    info = np.iinfo(pixels.dtype)
    if np.isnan(nodata) or not info.min <= nodata <= info.max:
        return np.ones(pixels.shape, dtype=bool)  # a nodata the type cannot hold marks nothing
    return pixels != fill_scalar(codec, nodata)


def band_fill(header: TiffHeader, fill_value: float | None = None) -> np.generic:
    """What an invalid output pixel holds: ``fill_value`` if given, else the band's nodata, else 0."""
    if fill_value is not None:
        return np.asarray(fill_value).astype(header.dtype)[()]
    return fill_scalar(header.codec, 0 if header.nodata is None else header.nodata)
