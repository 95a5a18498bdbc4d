"""GeoTIFF georeferencing: model tags and GeoKeys to an affine transform and a CRS, as GDAL reads them."""

from __future__ import annotations

import math

import numpy as np

from ..errors import MalformedTiffError, UnsupportedTiffError
from .geokeys import crs_from_geokeys, parse_geokey_directory, raster_is_point
from .model import GeoReference


def _floats(values: np.ndarray | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(float(v) for v in values)


def _affine(
    pixel_scale: tuple[float, ...] | None,
    tiepoint: tuple[float, ...] | None,
    model_transformation: tuple[float, ...] | None,
) -> tuple[float, float, float, float, float, float] | None:
    """Corner-based affine (a, b, c, d, e, f) before any PixelIsPoint shift; None without georeferencing.

    ModelTransformation wins over tiepoint + scale, as in GDAL. Several tiepoints without a pixel scale
    are ground control points, which define no affine transform here (GDAL reports them as GCPs).
    """
    if model_transformation is not None:
        if len(model_transformation) < 16:
            raise MalformedTiffError(f"ModelTransformation has {len(model_transformation)} values, not 16")
        m = model_transformation
        if m[1] != 0.0 or m[4] != 0.0:
            raise UnsupportedTiffError("a rotated or sheared ModelTransformation (only axis-aligned grids)")
        return (m[0], 0.0, m[3], 0.0, m[5], m[7])
    if tiepoint is None or pixel_scale is None:
        return None
    if len(tiepoint) < 6 or len(pixel_scale) < 2:
        raise MalformedTiffError("ModelTiepoint needs 6 values and ModelPixelScale 2 or 3")
    i, j, _, x, y, _ = tiepoint[:6]
    sx, sy = pixel_scale[0], pixel_scale[1]
    return (sx, 0.0, x - i * sx, 0.0, -sy, y + j * sy)


def georeference(
    *,
    pixel_scale: np.ndarray | None,
    tiepoint: np.ndarray | None,
    model_transformation: np.ndarray | None,
    geokey_directory: np.ndarray | None,
    geo_double_params: np.ndarray | None,
    geo_ascii_params: str | None,
) -> GeoReference:
    """Georeferencing of the full-resolution grid from the raw GeoTIFF tags of the first IFD.

    PixelIsPoint rasters are shifted by half a pixel up and left, as GDAL does by default
    (GTIFF_POINT_GEO_IGNORE=NO), so the transform always maps pixel corners.
    """
    scale, ties, matrix = _floats(pixel_scale), _floats(tiepoint), _floats(model_transformation)
    keys = {}
    if geokey_directory is not None:
        try:
            keys = parse_geokey_directory(
                [int(v) for v in geokey_directory], _floats(geo_double_params), geo_ascii_params
            )
        except MalformedTiffError:
            keys = {}  # libgeotiff drops a broken directory and GDAL reads the pixels without a CRS
    epsg, wkt = crs_from_geokeys(keys) if keys else (None, None)
    point = raster_is_point(keys) if keys else False
    transform = _affine(scale, ties, matrix)
    if transform is not None:
        if not all(math.isfinite(v) for v in transform):
            raise MalformedTiffError(f"non-finite geotransform {transform}")
        if point:
            a, b, c, d, e, f = transform
            transform = (a, b, c - 0.5 * a - 0.5 * b, d, e, f - 0.5 * d - 0.5 * e)
    return GeoReference(
        transform=transform,
        crs_epsg=epsg,
        crs_wkt=wkt,
        pixel_is_point=point,
        pixel_scale=scale,
        tiepoint=ties,
        model_transformation=matrix,
    )
