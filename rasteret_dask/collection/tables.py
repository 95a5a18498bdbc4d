"""Conversions between the file form of records (Arrow, Rasteret's layout) and the in-memory GeoDataFrame."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import shapely

from ..errors import SchemaError
from .schema import BBOX, DATETIME, GEOMETRY, MONTH, YEAR, arrow_series

GEOPARQUET_VERSION = "1.1.0"


def _geometry_from_column(values) -> np.ndarray:
    """Shapely geometries from WKB bytes, WKT/GeoJSON strings, dicts or shapely objects."""
    items = list(values)
    sample = next((v for v in items if v is not None), None)
    try:
        if sample is None or isinstance(sample, shapely.Geometry):
            return np.asarray(items, dtype=object)
        if isinstance(sample, bytes | bytearray | memoryview):
            return shapely.from_wkb([None if v is None else bytes(v) for v in items])
        if isinstance(sample, str):
            if sample.lstrip().startswith("{"):
                return shapely.from_geojson(items)
            return shapely.from_wkt(items)
        if isinstance(sample, dict):
            return np.asarray([None if v is None else shapely.geometry.shape(v) for v in items], dtype=object)
    except shapely.errors.GEOSException as exc:
        raise SchemaError(f"the geometry column holds values that are not geometries: {exc}") from None
    raise SchemaError(f"cannot read geometries from values of type {type(sample).__name__}")


def _bbox_geometries(bbox: pd.Series) -> np.ndarray:
    table = pa.array(bbox.array) if isinstance(bbox.dtype, pd.ArrowDtype) else pa.array(list(bbox))
    if not pa.types.is_struct(table.type):
        raise SchemaError("the bbox column must be a struct of xmin, ymin, xmax, ymax")
    cols = [table.field(name).to_numpy(zero_copy_only=False) for name in ("xmin", "ymin", "xmax", "ymax")]
    return shapely.box(*cols)


def _arrow_to_pandas(table: pa.Table) -> pd.DataFrame:
    """Struct and list columns stay pyarrow-backed; plain columns become ordinary pandas dtypes."""

    def mapper(arrow_type):
        if (
            pa.types.is_struct(arrow_type)
            or pa.types.is_list(arrow_type)
            or pa.types.is_large_list(arrow_type)
        ):
            return pd.ArrowDtype(arrow_type)
        if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
            return pd.StringDtype()
        return None

    return table.to_pandas(types_mapper=mapper, ignore_metadata=True)


def to_geodataframe(data) -> gpd.GeoDataFrame:
    """A GeoDataFrame of records from a GeoDataFrame, a pandas frame or an Arrow table.

    A ``geometry`` column may hold shapely objects, WKB, WKT or GeoJSON; without one, footprints are the
    ``bbox`` struct's boxes. Geometries without a CRS are taken to be CRS84.
    """
    if isinstance(data, gpd.GeoDataFrame):
        return data
    if isinstance(data, pa.Table | pa.RecordBatch):
        data = _arrow_to_pandas(pa.table(data) if isinstance(data, pa.RecordBatch) else data)
    if not isinstance(data, pd.DataFrame):
        raise SchemaError(f"cannot make records from {type(data).__name__}")
    frame = data.reset_index(drop=True)
    if GEOMETRY in frame.columns:
        geometry = _geometry_from_column(frame[GEOMETRY])
        frame = frame.drop(columns=[GEOMETRY])
    elif BBOX in frame.columns:
        geometry = _bbox_geometries(frame[BBOX])
    else:
        raise SchemaError("the table lacks the column(s) geometry (or a bbox struct to make footprints from)")
    return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(geometry, crs="OGC:CRS84"))


def geo_metadata(gdf: gpd.GeoDataFrame) -> dict:
    """GeoParquet 1.1 metadata for a file of records: WKB footprints (CRS84), the bbox covering column."""
    geoms = np.asarray(gdf.geometry.array)
    types = sorted({t for t in shapely.get_type_id(geoms[~shapely.is_missing(geoms)]).tolist()})
    names = {
        0: "Point",
        1: "LineString",
        3: "Polygon",
        4: "MultiPoint",
        5: "MultiLineString",
        6: "MultiPolygon",
    }
    bounds = shapely.total_bounds(geoms).tolist() if len(geoms) else []
    column = {
        "encoding": "WKB",
        "geometry_types": [names.get(t, "GeometryCollection") for t in types],
        "covering": {"bbox": {k: [BBOX, k] for k in ("xmin", "ymin", "xmax", "ymax")}},
    }
    if bounds and all(np.isfinite(bounds)):
        column["bbox"] = bounds
    return {"version": GEOPARQUET_VERSION, "primary_column": GEOMETRY, "columns": {GEOMETRY: column}}


def to_arrow_table(gdf: gpd.GeoDataFrame, *, keep_partition_keys: bool = False) -> pa.Table:
    """Records in Rasteret's file layout: WKB geometry, tz-naive UTC datetime, struct columns as Arrow.

    ``year``/``month`` are dropped unless ``keep_partition_keys`` (hive directories hold them).
    """
    plain = pd.DataFrame(gdf.drop(columns=[gdf.geometry.name]))
    if not keep_partition_keys:
        plain = plain.drop(columns=[c for c in (YEAR, MONTH) if c in plain.columns])
    columns, names = [], []
    for name in plain.columns:
        series = plain[name]
        if name == DATETIME:
            values = series.dt.tz_convert("UTC").dt.tz_localize(None) if series.dt.tz is not None else series
            array = pa.array(values.dt.as_unit("us"), type=pa.timestamp("us"))
        elif isinstance(series.dtype, pd.ArrowDtype):
            array = pa.array(series.array)
        else:
            array = pa.Array.from_pandas(series)
        if pa.types.is_large_string(array.type):
            array = array.cast(pa.string())  # Rasteret's files use plain string columns
        columns.append(array)
        names.append(name)
    geometry = pa.array(shapely.to_wkb(np.asarray(gdf.geometry.array), flavor="iso"), type=pa.binary())
    position = names.index(DATETIME) + 1 if DATETIME in names else 0
    columns.insert(position, geometry)
    names.insert(position, GEOMETRY)
    table = pa.Table.from_arrays(columns, names=names)
    return table.replace_schema_metadata({b"geo": json.dumps(geo_metadata(gdf)).encode()})


def from_arrow_table(table: pa.Table) -> gpd.GeoDataFrame:
    """Records from the file layout (ours or Rasteret's): the inverse of :func:`to_arrow_table`."""
    frame = to_geodataframe(table)
    if DATETIME in frame.columns:
        values = pd.to_datetime(frame[DATETIME])
        frame[DATETIME] = (
            values.dt.tz_localize("UTC") if values.dt.tz is None else values.dt.tz_convert("UTC")
        )
    for name in (YEAR, MONTH):
        if name in frame.columns:
            frame[name] = frame[name].astype("int32")
    if BBOX in frame.columns and not isinstance(frame[BBOX].dtype, pd.ArrowDtype):
        frame[BBOX] = arrow_series(list(frame[BBOX]), table.schema.field(BBOX).type, frame.index)
    return frame
