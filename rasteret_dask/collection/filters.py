"""Record filters as partition functions (pure pandas/shapely, applied with ``map_partitions``)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import shapely

from ..errors import PlanError, SchemaError
from .schema import DATETIME


def _is_date_only(value) -> bool:
    if isinstance(value, dt.datetime | pd.Timestamp):
        return False
    if isinstance(value, dt.date):
        return True
    return isinstance(value, str) and len(value.strip()) == 10


def date_bounds(date_range) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """``(start, end)`` as UTC timestamps with an exclusive end; a date-only end includes its whole day."""
    try:
        start, end = date_range
    except (TypeError, ValueError):
        raise PlanError(f"date_range must be (start, end), got {date_range!r}") from None

    def stamp(value):
        if value is None:
            return None
        try:
            ts = pd.Timestamp(value)
        except (ValueError, TypeError):
            raise PlanError(f"date_range value {value!r} is not a date") from None
        return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")

    lo, hi = stamp(start), stamp(end)
    if hi is not None:
        hi = hi + pd.Timedelta(days=1) if _is_date_only(end) else hi + pd.Timedelta(microseconds=1)
    if lo is not None and hi is not None and lo >= hi:
        raise PlanError(f"date_range starts after it ends: {date_range!r}")
    return lo, hi


def bbox_geometry(bbox) -> shapely.Geometry:
    """A CRS84 box; west > east means the box crosses the antimeridian (two boxes)."""
    try:
        west, south, east, north = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise PlanError(f"bbox must be (west, south, east, north), got {bbox!r}") from None
    if not all(np.isfinite([west, south, east, north])) or south > north:
        raise PlanError(f"bbox {bbox!r} is not (west, south, east, north) with south <= north")
    if west > east:
        return shapely.union(shapely.box(west, south, 180.0, north), shapely.box(-180.0, south, east, north))
    return shapely.box(west, south, east, north)


def query_geometry(geometries) -> shapely.Geometry:
    """One CRS84 geometry from shapely geometries, GeoJSON dicts/strings, WKB or a GeoDataFrame/GeoSeries."""
    if isinstance(geometries, gpd.GeoDataFrame | gpd.GeoSeries):
        series = geometries.geometry if isinstance(geometries, gpd.GeoDataFrame) else geometries
        if series.crs is not None:
            series = series.to_crs("OGC:CRS84")
        return shapely.union_all(np.asarray(series.array))
    items = geometries if isinstance(geometries, list | tuple) else [geometries]
    shapes = []
    for item in items:
        if isinstance(item, shapely.Geometry):
            shapes.append(item)
        elif isinstance(item, dict):
            shapes.append(shapely.geometry.shape(item.get("geometry", item)))
        elif isinstance(item, str):
            shapes.append(
                shapely.from_geojson(item) if item.lstrip().startswith("{") else shapely.from_wkt(item)
            )
        elif isinstance(item, bytes):
            shapes.append(shapely.from_wkb(item))
        else:
            raise PlanError(
                f"cannot read a geometry from {type(item).__name__}: {json.dumps(str(item))[:80]}"
            )
    return shapely.union_all(shapes)


def intersects_prepared(area: shapely.Geometry, geometries: np.ndarray) -> np.ndarray:
    """``shapely.intersects(area, geometries)`` with ``area`` prepared, safe from many threads at once.

    GEOS builds a prepared geometry's index on its first use; two threads doing so for one geometry crash
    the process. So each call prepares a private copy instead of sharing one prepared geometry.
    """
    own = shapely.from_wkb(shapely.to_wkb(area))
    shapely.prepare(own)
    return shapely.intersects(own, geometries)


def record_predicate(
    *, cloud_cover_lt=None, date_range=None, bbox=None, geometries=None, split=None
) -> Callable:
    """A function partition -> filtered partition applying every given condition."""
    lo, hi = date_bounds(date_range) if date_range is not None else (None, None)
    area = None
    if bbox is not None:
        area = bbox_geometry(bbox)
    if geometries is not None:
        shape = query_geometry(geometries)
        area = shape if area is None else shapely.intersection(area, shape)
    splits = None if split is None else ([split] if isinstance(split, str) else list(split))

    def keep(part: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
        mask = np.ones(len(part), dtype=bool)
        if cloud_cover_lt is not None:
            if "eo:cloud_cover" not in part.columns:
                raise SchemaError("cloud_cover_lt needs an eo:cloud_cover column")
            mask &= (part["eo:cloud_cover"] < cloud_cover_lt).fillna(False).to_numpy(bool)
        if lo is not None:
            mask &= (part[DATETIME] >= lo).fillna(False).to_numpy(bool)
        if hi is not None:
            mask &= (part[DATETIME] < hi).fillna(False).to_numpy(bool)
        if splits is not None:
            if "split" not in part.columns:
                raise SchemaError("split= needs a split column")
            mask &= part["split"].isin(splits).fillna(False).to_numpy(bool)
        if area is not None:
            mask &= intersects_prepared(area, np.asarray(part.geometry.array))
        return part[mask]

    return keep


def expression_predicate(expr) -> Callable:
    """A partition filter from a pandas query string, a pyarrow expression or a callable returning a mask."""
    if isinstance(expr, str):
        return lambda part: part.query(expr)
    if isinstance(expr, pc.Expression):

        def keep(part):
            table = pa.Table.from_pandas(part.drop(columns=part.geometry.name), preserve_index=False)
            return part[_expression_mask(table, expr)]

        return keep
    if callable(expr):
        return lambda part: part[np.asarray(expr(part), dtype=bool)]
    raise PlanError(
        f"where() takes a query string, a pyarrow expression or a callable, not {type(expr).__name__}"
    )


def _expression_mask(table: pa.Table, expr: pc.Expression) -> np.ndarray:
    """Rows of ``table`` for which the boolean ``expr`` is true (null counts as false)."""
    marked = table.append_column("__row__", pa.array(np.arange(len(table))))
    kept = ds.dataset(marked).to_table(filter=expr, columns=["__row__"])["__row__"].to_numpy()
    mask = np.zeros(len(table), dtype=bool)
    mask[kept] = True
    return mask
