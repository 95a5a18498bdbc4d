"""The collection's columns (DESIGN.md §3) and their normalisation, in memory and in files.

In memory a collection partition is a GeoDataFrame: ``id`` string, ``datetime`` tz-aware UTC,
``geometry`` shapely in CRS84, ``bbox``/``assets``/``{band}_metadata`` as pyarrow-backed struct columns.
In files (Rasteret's layout) ``datetime`` is tz-naive UTC and ``geometry`` is WKB.
"""

from __future__ import annotations

import re

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import shapely

from ..errors import SchemaError
from ..tiff.arrow import METADATA_STRUCT

ID, DATETIME, GEOMETRY, BBOX, ASSETS = "id", "datetime", "geometry", "bbox", "assets"
PROJ_EPSG, CRS_COLUMN, YEAR, MONTH = "proj:epsg", "crs", "year", "month"
REQUIRED_COLUMNS = (ID, DATETIME, GEOMETRY, ASSETS)
METADATA_SUFFIX, ERROR_SUFFIX = "_metadata", "_error"

BBOX_TYPE = pa.struct([(name, pa.float64()) for name in ("xmin", "ymin", "xmax", "ymax")])
ASSET_TYPE = pa.struct([("href", pa.string()), ("band_index", pa.int64())])
_BAND_NAME = re.compile(r"^[A-Za-z0-9_.:\-]+$")


def metadata_column(band: str) -> str:
    return f"{band}{METADATA_SUFFIX}"


def error_column(band: str) -> str:
    return f"{band}{ERROR_SUFFIX}"


def assets_type(bands: list[str]) -> pa.StructType:
    return pa.struct([(band, ASSET_TYPE) for band in bands])


def bands_of(frame: pd.DataFrame) -> list[str]:
    """Band codes of the ``assets`` struct column, in column order."""
    dtype = frame[ASSETS].dtype
    if not isinstance(dtype, pd.ArrowDtype) or not pa.types.is_struct(dtype.pyarrow_dtype):
        raise SchemaError("the assets column must be a struct of band -> {href, band_index}")
    return [f.name for f in dtype.pyarrow_dtype]


def check_required(columns, what: str = "the table") -> None:
    """Raise SchemaError naming every required column that ``columns`` lacks."""
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise SchemaError(
            f"{what} lacks the column(s) {', '.join(missing)}; a collection needs {', '.join(REQUIRED_COLUMNS)}"
            " (build_from_table(href_column=...) makes assets from a column of URLs)"
        )


def arrow_series(values, arrow_type: pa.DataType, index) -> pd.Series:
    """A pandas Series backed by a pyarrow array of ``arrow_type``."""
    array = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values, type=arrow_type)
    return pd.Series(pd.arrays.ArrowExtensionArray(array), index=index)


def _normalise_ids(ids: pd.Series) -> pd.Series:
    if ids.isna().any():
        raise SchemaError("the id column has missing values")
    if pd.api.types.is_float_dtype(ids) and (ids % 1 == 0).all():
        ids = ids.astype("int64")
    out = ids.astype(str).astype("string")
    if out.duplicated().any():
        dupes = out[out.duplicated()].unique()[:5].tolist()
        raise SchemaError(f"record ids must be unique; repeated: {dupes}")
    return out


def _normalise_datetimes(values: pd.Series) -> pd.Series:
    if isinstance(values.dtype, pd.ArrowDtype):
        values = values.astype(object)
    try:
        parsed = pd.to_datetime(values, utc=True, format="mixed")
    except (ValueError, TypeError) as exc:
        raise SchemaError(f"the datetime column has values that are not dates: {exc}") from None
    return parsed.dt.as_unit("us")


def normalise_assets(values: pd.Series) -> pd.Series:
    """Assets as a pyarrow struct of band -> {href, band_index}, from a struct column or dicts."""
    if isinstance(values.dtype, pd.ArrowDtype) and pa.types.is_struct(values.dtype.pyarrow_dtype):
        array = pa.array(values.array)
        if array.type == assets_type([f.name for f in array.type]):
            return values
        rows = array.to_pylist()
    else:
        rows = list(values)
    bands: list[str] = []
    for row in rows:
        if not isinstance(row, dict):
            raise SchemaError(f"an assets value is not a mapping of band -> href: {row!r}")
        bands += [b for b in row if b not in bands]
    bad = [b for b in bands if not _BAND_NAME.match(str(b))]
    if bad:
        raise SchemaError(f"band names may use letters, digits and _ . : - only: {bad}")
    clean = []
    for row in rows:
        entry = {}
        for band in bands:
            asset = row.get(band)
            if isinstance(asset, str):
                asset = {"href": asset, "band_index": None}
            elif isinstance(asset, dict):
                asset = {"href": asset.get("href"), "band_index": asset.get("band_index")}
            entry[band] = asset
        clean.append(entry)
    return arrow_series(clean, assets_type(bands), values.index)


def bbox_series(geometry: gpd.GeoSeries) -> pd.Series:
    bounds = shapely.bounds(np.asarray(geometry.array))
    arrays = [pa.array(bounds[:, i], mask=np.isnan(bounds[:, i])) for i in range(4)]
    return arrow_series(pa.StructArray.from_arrays(arrays, fields=list(BBOX_TYPE)), BBOX_TYPE, geometry.index)


def normalise_records(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Return ``frame`` with the collection's column types (a copy; the input is not modified).

    ids become strings (integers as their decimal form, as Rasteret does), datetimes tz-aware UTC with
    microsecond precision, footprints CRS84, ``bbox`` is derived from the footprints, ``assets`` a struct,
    ``proj:epsg`` int32 and ``crs`` the matching ``"EPSG:n"`` string when only the code is given.
    """
    check_required(frame.columns)
    out = frame.copy()
    if out.crs is None:
        out = out.set_crs("OGC:CRS84")
    elif not out.crs.equals("OGC:CRS84") and not out.crs.equals("EPSG:4326", ignore_axis_order=True):
        out = out.to_crs("OGC:CRS84")
    else:
        out = out.set_crs("OGC:CRS84", allow_override=True)
    out[ID] = _normalise_ids(out[ID])
    out[DATETIME] = _normalise_datetimes(out[DATETIME])
    out[ASSETS] = normalise_assets(out[ASSETS])
    out[BBOX] = bbox_series(out.geometry)
    if PROJ_EPSG in out.columns:
        out[PROJ_EPSG] = out[PROJ_EPSG].astype("Int32")
        if CRS_COLUMN not in out.columns:
            out[CRS_COLUMN] = ("EPSG:" + out[PROJ_EPSG].astype("string")).astype("string")
    for band in bands_of(out):
        column = metadata_column(band)
        if column in out.columns and not isinstance(out[column].dtype, pd.ArrowDtype):
            out[column] = arrow_series(list(out[column]), METADATA_STRUCT, out.index)
    return out
