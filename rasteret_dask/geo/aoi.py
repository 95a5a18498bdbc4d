"""Areas of interest on a raster grid: polygon normalisation, the pixel window an AOI covers, reprojection.

Pure: shapely 2, numpy, pyproj and affine; no I/O. The window follows rasterio's
``rasterio.features.geometry_window`` and the reprojection ``rasterio.warp.transform_geom`` (without its
antimeridian cutting); the rasterio/GDAL oracles live in the tests only.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from shapely.geometry import shape as shape_from_geojson
from shapely.geometry.base import BaseGeometry

from ..errors import PlanError
from .windows import PixelWindow

_POLYGONAL = ("Polygon", "MultiPolygon", "GeometryCollection")


def _as_geometry(obj) -> BaseGeometry:
    if isinstance(obj, BaseGeometry):
        return obj
    try:
        return shape_from_geojson(obj)
    except Exception as exc:
        raise PlanError(
            f"an AOI must be a shapely geometry or a GeoJSON-like mapping, got {type(obj).__name__}"
        ) from exc


def aoi_polygons(geometries) -> list[shapely.Polygon]:
    """The non-empty polygons of ``geometries``, flattened, in input order.

    Parameters
    ----------
    geometries : shapely geometry, GeoJSON-like mapping, or iterable of those (a list, an array, a GeoSeries)
        Polygons, MultiPolygons and GeometryCollections of them (nested collections are flattened).
        Empty geometries and None contribute nothing.

    Returns
    -------
    list of shapely.Polygon

    Raises
    ------
    PlanError
        For points and lines (they have no area: read their pixels with ``sample_points``) and for
        anything that is not a geometry.
    """
    if geometries is None:
        return []
    if isinstance(geometries, (BaseGeometry, dict)):
        items: Iterable = [geometries]
    elif isinstance(geometries, Iterable) and not isinstance(geometries, (str, bytes)):
        items = geometries
    elif hasattr(geometries, "__geo_interface__"):
        items = [geometries]
    else:
        raise PlanError(f"geometries must be a geometry or an iterable of geometries, got {geometries!r}")
    out: list[shapely.Polygon] = []
    stack = [_as_geometry(g) for g in items if g is not None][::-1]
    while stack:
        geom = stack.pop()
        if geom.geom_type not in _POLYGONAL:
            raise PlanError(
                f"an AOI must be polygonal, got a {geom.geom_type}: points and lines have no area; "
                "read point values with sample_points instead"
            )
        if geom.is_empty:
            continue
        if geom.geom_type == "Polygon":
            out.append(geom)
        else:
            stack.extend(list(geom.geoms)[::-1])
    return out


def _as_affine(transform) -> Affine:
    if isinstance(transform, Affine):
        return transform
    try:
        values = [float(v) for v in transform]
    except (TypeError, ValueError):
        raise PlanError(f"transform must be an Affine or (a, b, c, d, e, f), got {transform!r}") from None
    if len(values) not in (6, 9):
        raise PlanError(f"transform must have 6 values (a, b, c, d, e, f), got {len(values)}")
    return Affine(*values[:6])


def geometry_window(geometries, transform, width: int, height: int) -> PixelWindow | None:
    """The pixel window of a ``width`` x ``height`` raster that covers the AOI, or None when they do not meet.

    Exactly ``rasterio.features.geometry_window(dataset, shapes)`` with no padding: every vertex (holes
    included) is mapped to pixel coordinates with the inverse of ``transform`` (the ``affine`` package's
    arithmetic, as rasterio), the window spans the floor of the smallest to the ceiling of the largest
    column and row, and is intersected with the raster. Where rasterio raises ``WindowError`` (no overlap,
    including a window that only touches the raster's edge) this returns None.

    Parameters
    ----------
    geometries : shapely geometry, GeoJSON-like mapping, or iterable of those
        Polygonal AOIs in the raster's CRS (see `aoi_polygons`).
    transform : affine.Affine or sequence of 6 floats
        Pixel-corner transform of the raster in rasterio order ``(a, b, c, d, e, f)``; north-up, south-up
        and rotated transforms are all accepted.
    width, height : int
        Raster size in pixels.

    Returns
    -------
    PixelWindow or None
    """
    polygons = aoi_polygons(geometries)
    if width <= 0 or height <= 0:
        raise PlanError(f"raster size must be positive, got {width} x {height}")
    if not polygons:
        return None
    forward = _as_affine(transform)
    if forward.is_degenerate:
        raise PlanError(f"transform {transform!r} cannot be inverted")
    inverse = ~forward
    xy = shapely.get_coordinates(np.asarray(polygons, dtype=object))
    if not np.isfinite(xy).all():
        raise PlanError("AOI coordinates must be finite")
    cols, rows = inverse @ (xy[:, 0], xy[:, 1])
    row_start, row_stop = math.floor(rows.min()), math.ceil(rows.max())
    col_start, col_stop = math.floor(cols.min()), math.ceil(cols.max())
    r0, r1 = max(row_start, 0), min(row_stop, height)
    c0, c1 = max(col_start, 0), min(col_stop, width)
    if r1 <= r0 or c1 <= c0:
        return None
    return PixelWindow(r0, r1, c0, c1)


_local = threading.local()


def _transformer(src_crs, dst_crs) -> Transformer:
    # pyproj transformers are not meant to be shared between threads (Dask runs tasks in several).
    cache = getattr(_local, "transformers", None)
    if cache is None:
        cache = _local.transformers = {}
    src, dst = CRS.from_user_input(src_crs), CRS.from_user_input(dst_crs)
    key = (src.to_wkt(), dst.to_wkt())
    found = cache.get(key)
    if found is None:
        if len(cache) > 64:
            cache.clear()
        found = cache[key] = Transformer.from_crs(src, dst, always_xy=True)
    return found


def reproject_geometry(geometry, src_crs, dst_crs) -> BaseGeometry:
    """``geometry`` with every vertex transformed from ``src_crs`` to ``dst_crs``.

    Vertex by vertex with pyproj (``always_xy=True``: x/easting/longitude first whatever the CRS's axis
    order), like ``rasterio.warp.transform_geom`` but with no densification: edges stay straight lines
    between the transformed vertices, so a long edge of a polygon does not follow the curve it maps to.

    Antimeridian: nothing is cut or wrapped (unlike ``transform_geom``, which asks GDAL to split geometries
    at ±180°). A polygon crossing the antimeridian in a geographic destination CRS comes out as one polygon
    spanning the long way round the globe; split it first, or work in a projected CRS.

    Parameters
    ----------
    geometry : shapely geometry or GeoJSON-like mapping
        Any geometry type; its structure (parts, rings, vertex count) is kept.
    src_crs, dst_crs : pyproj.CRS or anything ``pyproj.CRS.from_user_input`` takes
        (EPSG code, ``"EPSG:4326"``, WKT, PROJ JSON).

    Returns
    -------
    shapely geometry

    Raises
    ------
    PlanError
        If a CRS is not understood or a vertex has no image in ``dst_crs`` (outside the projection's domain).
    """
    geom = _as_geometry(geometry)
    try:
        src, dst = CRS.from_user_input(src_crs), CRS.from_user_input(dst_crs)
    except Exception as exc:
        raise PlanError(f"cannot understand CRS {src_crs!r} or {dst_crs!r}: {exc}") from exc
    if src == dst or geom.is_empty:
        return geom
    transformer = _transformer(src, dst)

    def apply(xy: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(xy[:, 0], xy[:, 1], errcheck=False)
        out = np.column_stack([np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)])
        if not np.isfinite(out).all():
            raise PlanError(
                f"some vertices of the geometry cannot be transformed from {src_crs} to {dst_crs}"
            )
        return out

    return shapely.transform(geom, apply)
