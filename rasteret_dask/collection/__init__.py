"""The Collection: records, footprints, assets and cached COG headers as a dask-geopandas frame."""

from .build import BuildReport, build_from_table
from .collection import Collection, as_collection
from .parquet import LoadStats, load

__all__ = ["BuildReport", "Collection", "LoadStats", "as_collection", "build_from_table", "load"]
