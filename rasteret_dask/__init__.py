"""rasteret_dask: cloud raster collections with cached COG headers, read at cluster scale with Dask."""

from .cog import CogHeader, LevelInfo, read_cog_header, read_cog_header_async
from .collection import (
    BuildReport,
    Collection,
    DatasetDescriptor,
    DatasetRegistry,
    LoadStats,
    StacStats,
    as_collection,
    build,
    build_from_stac,
    build_from_table,
    load,
)
from .errors import (
    CollectionError,
    MalformedTiffError,
    PlanError,
    RangeRequestError,
    RasteretDaskError,
    ReadError,
    RemoteFileChangedError,
    SchemaError,
    TiffError,
    TruncatedTiffError,
    UnsupportedTiffError,
)

__version__ = "0.1.0"

__all__ = [
    "BuildReport",
    "CogHeader",
    "Collection",
    "CollectionError",
    "DatasetDescriptor",
    "DatasetRegistry",
    "LevelInfo",
    "LoadStats",
    "MalformedTiffError",
    "PlanError",
    "RangeRequestError",
    "RasteretDaskError",
    "ReadError",
    "RemoteFileChangedError",
    "SchemaError",
    "StacStats",
    "TiffError",
    "TruncatedTiffError",
    "UnsupportedTiffError",
    "as_collection",
    "build",
    "build_from_stac",
    "build_from_table",
    "load",
    "read_cog_header",
    "read_cog_header_async",
]
