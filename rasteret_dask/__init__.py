"""rasteret_dask: cloud raster collections with cached COG headers, read at cluster scale with Dask.

The collection API (and with it dask.dataframe and geopandas) is imported on first use, so the reader
core (``read_cog_header``) and Dask workers that only decode tiles start fast.
"""

from __future__ import annotations

import importlib

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

_LAZY = {
    "CogHeader": ".cog",
    "LevelInfo": ".cog",
    "read_cog_header": ".cog",
    "read_cog_header_async": ".cog",
    "BuildReport": ".collection",
    "Collection": ".collection",
    "DatasetDescriptor": ".collection",
    "DatasetRegistry": ".collection",
    "LoadStats": ".collection",
    "StacStats": ".collection",
    "as_collection": ".collection",
    "build": ".collection",
    "build_from_stac": ".collection",
    "build_from_table": ".collection",
    "load": ".collection",
}

__all__ = [
    "CollectionError",
    "MalformedTiffError",
    "PlanError",
    "RangeRequestError",
    "RasteretDaskError",
    "ReadError",
    "RemoteFileChangedError",
    "SchemaError",
    "TiffError",
    "TruncatedTiffError",
    "UnsupportedTiffError",
    *_LAZY,
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rasteret_dask' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
