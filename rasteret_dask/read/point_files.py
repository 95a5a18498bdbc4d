"""Points from Parquet files, read by tasks that carry a :class:`StorageRef`, never the storage options.

``dask.dataframe.read_parquet(path, storage_options=...)`` would put the options (credentials
included) into every task of the graph; here each task opens its file with options resolved where it
runs, as the collection's own reads do (:mod:`rasteret_dask.io.credentials`).
"""

from __future__ import annotations

import dask.dataframe as dd
import dask_geopandas
import fsspec
import geopandas as gpd
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from pyarrow.fs import FSSpecHandler, PyFileSystem

from ..errors import PlanError
from ..io.cluster import for_graph
from ..io.credentials import resolve


def has_geometry(schema: pa.Schema) -> bool:
    """GeoParquet ("geo" schema metadata) or GeoArrow (a ``geoarrow.*`` extension field) geometry."""
    if b"geo" in (schema.metadata or {}):
        return True
    for f in schema:
        name = (f.metadata or {}).get(b"ARROW:extension:name", b"")
        if isinstance(f.type, pa.ExtensionType):
            name = f.type.extension_name.encode()
        if name.startswith(b"geoarrow."):
            return True
    return False


def table_to_frame(table: pa.Table) -> pd.DataFrame:
    """A GeoDataFrame when the table carries geometry, else a pandas DataFrame."""
    return gpd.GeoDataFrame.from_arrow(table) if has_geometry(table.schema) else table.to_pandas()


def read_points_parquet(path: str, storage_options: dict | None, rows_per_task: int) -> dd.DataFrame:
    """A Parquet file, or a folder of them, as a lazy (geo)dataframe: one task per run of whole row
    groups of one file holding up to ``rows_per_task`` rows (or one row group, when larger)."""
    fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
    try:
        dataset = pads.dataset(root, format="parquet", filesystem=PyFileSystem(FSSpecHandler(fs)))
    except (pa.ArrowInvalid, OSError, FileNotFoundError) as exc:
        raise PlanError(f"cannot read points from {path}: {exc}") from None
    source = (path, for_graph(storage_options))
    pieces = []
    for fragment in dataset.get_fragments():
        groups, rows = [], 0
        for group in fragment.row_groups:
            if groups and rows + group.num_rows > rows_per_task:
                pieces.append((fragment.path, tuple(groups), source))
                groups, rows = [], 0
            groups.append(group.id)
            rows += group.num_rows
        if groups:
            pieces.append((fragment.path, tuple(groups), source))
    meta = table_to_frame(dataset.schema.empty_table())
    if not pieces:
        raise PlanError(f"no points at {path}: no Parquet row groups there")
    frame = dd.from_map(_read_piece, pieces, meta=meta, enforce_metadata=False)
    if isinstance(meta, gpd.GeoDataFrame):
        frame = dask_geopandas.from_dask_dataframe(frame, geometry=meta.geometry.name)
    return frame


def _read_piece(piece: tuple) -> pd.DataFrame:
    file, groups, (url, options) = piece
    fs, _ = fsspec.core.url_to_fs(url, **(resolve(options) or {}))
    with fs.open(file, "rb") as f:
        return table_to_frame(pq.ParquetFile(f).read_row_groups(list(groups)))
