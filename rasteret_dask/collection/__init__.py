"""The Collection: records, footprints, assets and cached COG headers as a dask-geopandas frame."""

from .build import BuildReport, build_from_table
from .catalog import DatasetDescriptor, DatasetRegistry, build
from .collection import Collection, as_collection
from .parquet import LoadStats, load
from .stac import StacStats, build_from_stac

__all__ = [
    "BuildReport",
    "Collection",
    "DatasetDescriptor",
    "DatasetRegistry",
    "LoadStats",
    "StacStats",
    "as_collection",
    "build",
    "build_from_stac",
    "build_from_table",
    "load",
]
