"""AOI inputs of every kind, normalised to one CRS84 GeoDataFrame indexed 0..n-1 in input order."""

from __future__ import annotations

import json

import dask_geopandas
import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import shapely

from ..errors import PlanError

DEFAULT_AOI_CRS = "EPSG:4326"
_AREAL = {"Polygon", "MultiPolygon"}


def _from_arrow(table: pa.Table, geometry_crs) -> gpd.GeoDataFrame:
    meta = json.loads((table.schema.metadata or {}).get(b"geo", b"{}") or "{}")
    column = meta.get("primary_column")
    crs = None
    if column is None:
        for field in table.schema:
            ext = (field.metadata or {}).get(b"ARROW:extension:name", b"").decode()
            if ext.startswith("geoarrow."):
                column = field.name
                crs = json.loads((field.metadata or {}).get(b"ARROW:extension:metadata", b"{}") or "{}").get(
                    "crs"
                )
                break
    else:
        crs = meta.get("columns", {}).get(column, {}).get("crs", "OGC:CRS84")
    if column is None:
        raise PlanError("the Arrow table has no GeoParquet/GeoArrow geometry column")
    values = table.column(column).to_pylist()
    geoms = shapely.from_wkb([v for v in values]) if values and isinstance(values[0], bytes) else values
    frame = table.drop_columns([column]).to_pandas()
    return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(geoms, crs=crs or geometry_crs or DEFAULT_AOI_CRS))


def _one(item) -> shapely.Geometry:
    if isinstance(item, shapely.Geometry):
        return item
    if isinstance(item, dict):
        return shapely.geometry.shape(item.get("geometry", item))
    if isinstance(item, bytes | bytearray | memoryview):
        return shapely.from_wkb(bytes(item))
    if isinstance(item, str):
        return shapely.from_geojson(item) if item.lstrip().startswith("{") else shapely.from_wkt(item)
    raise PlanError(f"cannot read an AOI from a {type(item).__name__}")


def _member_kinds(geoms: np.ndarray) -> set[str]:
    """Geometry types of ``geoms``, looking inside (nested) GeometryCollections instead of naming them."""
    kinds: set[str] = set()
    while len(geoms):
        collection = shapely.get_type_id(geoms) == shapely.GeometryType.GEOMETRYCOLLECTION
        kinds |= set(gpd.GeoSeries(geoms[~collection]).geom_type.dropna())
        geoms = shapely.get_parts(geoms[collection])
    return kinds


def normalise_aois(geometries, geometry_crs=None, *, keep_crs: bool = False) -> gpd.GeoDataFrame:
    """AOIs as a GeoDataFrame in CRS84 with their own columns, indexed 0..n-1 in input order.

    With ``keep_crs`` the AOIs stay in the CRS they were given in (reads then reproject them straight to
    each record's CRS, without a round trip through lon/lat that would move edges lying on pixel edges).

    Accepts a ``(west, south, east, north)`` bbox tuple, shapely geometries, GeoJSON mappings, WKB or WKT,
    a list of any of these, a (dask-)GeoDataFrame/GeoSeries, or a pyarrow table with GeoParquet or
    GeoArrow metadata. Inputs without a CRS are in ``geometry_crs`` (EPSG:4326 when not given, for bbox
    tuples and bare geometries). Points and lines are refused: their pixels come from ``sample_points``.
    """
    if isinstance(geometries, dask_geopandas.GeoDataFrame | dask_geopandas.GeoSeries):
        geometries = geometries.compute()
    if isinstance(geometries, gpd.GeoSeries):
        geometries = gpd.GeoDataFrame(geometry=geometries)
    if isinstance(geometries, gpd.GeoDataFrame):
        frame = geometries.copy()
        if frame.crs is None:
            frame = frame.set_crs(geometry_crs or DEFAULT_AOI_CRS)
    elif isinstance(geometries, pa.Table):
        frame = _from_arrow(geometries, geometry_crs)
    else:
        if isinstance(geometries, tuple) and len(geometries) == 4 and all(np.isscalar(v) for v in geometries):
            items = [shapely.box(*(float(v) for v in geometries))]
        elif isinstance(geometries, list | tuple | np.ndarray | pd.Series):
            items = [_one(g) for g in geometries]
        else:
            items = [_one(geometries)]
        frame = gpd.GeoDataFrame(geometry=gpd.GeoSeries(items, crs=geometry_crs or DEFAULT_AOI_CRS))
    if len(frame) == 0:
        raise PlanError("no AOI was given")
    kinds = _member_kinds(np.asarray(frame.geometry.array))
    if not kinds <= _AREAL:
        raise PlanError(
            f"AOIs must be polygons, got {sorted(kinds - _AREAL)}: read pixel values at points with sample_points"
        )
    if frame.geometry.is_empty.any() or frame.geometry.isna().any():
        raise PlanError("an AOI is empty")
    if not keep_crs and not frame.crs.equals("OGC:CRS84"):
        frame = frame.to_crs("OGC:CRS84")
    return frame.reset_index(drop=True)
