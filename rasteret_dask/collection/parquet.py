"""Collections on disk: GeoParquet 1.1, hive-partitioned by year/month, in Rasteret's layout.

``export`` writes every partition of the frame as Dask work into a temporary folder beside the target
and renames it into place at the end, so a failed export leaves nothing at the target path. ``load``
prunes files by the hive keys and row groups by their ``bbox``/``datetime`` statistics before building a
lazy frame with one partition per remaining file.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import dask
import dask.dataframe as dd
import dask_geopandas
import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import shapely
from pyarrow.fs import FSSpecHandler, PyFileSystem

from ..errors import CollectionError
from ..geo.hilbert import hilbert_keys
from ..io.cluster import for_graph
from ..io.credentials import resolve
from .collection import Collection
from .filters import bbox_geometry, date_bounds
from .schema import BBOX, DATETIME, MONTH, YEAR, normalise_records
from .tables import from_arrow_table, to_arrow_table

COLLECTION_VERSION = "1"
ROW_GROUP_SIZE = 50_000
WORLD = (-180.0, -90.0, 180.0, 90.0)


@dataclass(frozen=True)
class LoadStats:
    """How much ``load`` skipped before reading: files and row groups, in total and kept."""

    files: int
    files_kept: int
    row_groups: int
    row_groups_kept: int


def _filesystem(path: str, storage_options: dict | None) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
    return fs, root.rstrip("/")


def _file_metadata(collection: Collection, date_range: str) -> dict[bytes, bytes]:
    return {
        b"name": collection.name.encode(),
        b"data_source": collection.data_source.encode(),
        b"description": collection.description.encode(),
        b"date_range": date_range.encode(),
        b"created": dt.datetime.now(dt.UTC).isoformat().encode(),
        b"rasteret_collection_version": COLLECTION_VERSION.encode(),
    }


def _write_partition(
    part, target: tuple, root: str, index: int, metadata: dict, row_group_size: int
) -> pd.DataFrame:
    """Write one partition's records, grouped by year/month and Hilbert-sorted; return what was written.

    ``target`` is ``(url, StorageRef)``: the filesystem is made where the task runs, so no credential
    travels in the graph.
    """
    fs, _ = _filesystem(target[0], resolve(target[1]))
    written = []
    if len(part) == 0:
        return pd.DataFrame({"path": pd.Series(dtype=object), "rows": pd.Series(dtype="int64")})
    stamps = part[DATETIME]
    years = stamps.dt.year.fillna(1970).astype(int).to_numpy()
    months = stamps.dt.month.fillna(1).astype(int).to_numpy()
    centres = shapely.centroid(np.asarray(part.geometry.array))
    keys = hilbert_keys(shapely.get_x(centres), shapely.get_y(centres), WORLD)
    for year, month in sorted(set(zip(years.tolist(), months.tolist(), strict=True))):
        rows = np.flatnonzero((years == year) & (months == month))
        group = part.iloc[rows[np.argsort(keys[rows], kind="stable")]]
        table = to_arrow_table(group)
        table = table.replace_schema_metadata({**table.schema.metadata, **metadata})
        folder = f"{root}/{YEAR}={year}/{MONTH}={month}"
        fs.makedirs(folder, exist_ok=True)
        path = f"{folder}/part-{index}.parquet"
        with fs.open(path, "wb") as f:
            pq.write_table(table, f, compression="zstd", compression_level=3, row_group_size=row_group_size)
        written.append({"path": path, "rows": len(group)})
    return pd.DataFrame(written)


def export(
    collection: Collection,
    path: str,
    *,
    storage_options: dict | None = None,
    overwrite: bool = False,
    row_group_size: int = ROW_GROUP_SIZE,
) -> str:
    """Write ``collection`` as GeoParquet 1.1 under ``path`` (a folder; local, s3://, gs://, memory://).

    Files are ``path/year=YYYY/month=M/part-{i}.parquet`` (Rasteret's layout): zstd, row groups of
    ``row_group_size`` records sorted along a Hilbert curve, a ``bbox`` covering column and per-file
    ``geo`` metadata with the file's extent. The write goes to a temporary folder beside ``path`` that is
    renamed into place when every partition is written. An existing ``path`` is an error unless
    ``overwrite=True``. ``storage_options`` are the target's (never written to the files).
    """
    fs, root = _filesystem(path, storage_options)
    target = (path, for_graph(storage_options))
    if fs.exists(root) and not overwrite:
        raise CollectionError(f"{path} exists; pass overwrite=True to replace it")
    staging = f"{root}.tmp-{uuid.uuid4().hex[:12]}"
    summary = collection.summary()
    date_range = ""
    if summary["start"] is not None:
        date_range = f"{summary['start'].isoformat()},{summary['end'].isoformat()}"
    metadata = _file_metadata(collection, date_range)
    frame = collection.frame
    parts = [
        dask.delayed(_write_partition_or_error)(part, target, staging, i, metadata, row_group_size)
        for i, part in enumerate(frame.to_delayed())
    ]
    try:
        # Every task finishes (a failure is returned, not raised) before anything is published or cleaned.
        failures = [r for r in dask.compute(*parts) if isinstance(r, BaseException)]
        if failures:
            raise failures[0]
        _publish(fs, staging, root)
    except BaseException:
        if fs.exists(staging):
            fs.rm(staging, recursive=True)
        raise
    return path


def _write_partition_or_error(*args) -> pd.DataFrame | BaseException:
    try:
        return _write_partition(*args)
    except Exception as exc:  # handed back so the export can wait for every task before cleaning up
        return exc


def _publish(fs: fsspec.AbstractFileSystem, staging: str, root: str) -> None:
    """Move a fully written staging folder to ``root``, replacing what was there.

    Local folders are renamed (atomic). Object stores have no rename: the staged objects are copied
    once all of them exist, then the staging prefix is deleted.
    """
    local = "file" in ({fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol))
    if local:
        fs.makedirs(staging, exist_ok=True)
        if fs.exists(root):
            backup = f"{root}.old-{uuid.uuid4().hex[:12]}"
            fs.mv(root, backup, recursive=True)
            fs.mv(staging, root, recursive=True)
            fs.rm(backup, recursive=True)
        else:
            fs.mv(staging, root, recursive=True)
        return
    sources = [f for f in fs.find(staging) if f.endswith(".parquet")]
    if fs.exists(root):
        fs.rm(root, recursive=True)
    targets = [root + f[len(staging) :] for f in sources]
    if sources:
        fs.copy(sources, targets)
    fs.rm(staging, recursive=True)


def _prune_expression(bbox, date_range, hive: bool) -> pc.Expression | None:
    """Conditions on the bbox covering column, datetime and (for hive datasets) the year/month folders."""
    expr = None

    def both(a, b):
        return b if a is None else a & b

    if bbox is not None:
        west, south, east, north = (float(v) for v in bbox)
        bbox_geometry(bbox)  # validates
        if west > east:  # crossing the antimeridian: either side
            box = (pc.field(BBOX, "xmax") >= west) | (pc.field(BBOX, "xmin") <= east)
        else:
            box = (pc.field(BBOX, "xmin") <= east) & (pc.field(BBOX, "xmax") >= west)
        expr = both(box, (pc.field(BBOX, "ymin") <= north) & (pc.field(BBOX, "ymax") >= south))
    if date_range is not None:
        lo, hi = date_bounds(date_range)
        if lo is not None:
            naive = lo.tz_convert("UTC").tz_localize(None)
            expr = both(expr, pc.field(DATETIME) >= pa.scalar(naive.to_datetime64(), pa.timestamp("us")))
            if hive:
                later = (pc.field(YEAR) == lo.year) & (pc.field(MONTH) >= lo.month)
                expr = both(expr, (pc.field(YEAR) > lo.year) | later)
        if hi is not None:
            naive = hi.tz_convert("UTC").tz_localize(None)
            expr = both(expr, pc.field(DATETIME) < pa.scalar(naive.to_datetime64(), pa.timestamp("us")))
            if hive:
                earlier = (pc.field(YEAR) == hi.year) & (pc.field(MONTH) <= hi.month)
                expr = both(expr, (pc.field(YEAR) < hi.year) | earlier)
    return expr


def _read_fragment(task: tuple) -> pd.DataFrame:
    """One partition: the kept row groups of one file, filtered exactly, as normalised records."""
    path, row_groups, (url, storage), expr, partition_values = task
    fs, _ = _filesystem(url, resolve(storage))
    with fs.open(path, "rb") as f:
        table = pq.ParquetFile(f).read_row_groups(row_groups)
    for name, value in partition_values.items():
        if name not in table.column_names:
            table = table.append_column(name, pa.array([value] * len(table), type=pa.int32()))
    if expr is not None:
        table = pads.dataset(table).to_table(filter=expr)
    return normalise_records(from_arrow_table(table))


def load(
    path: str,
    *,
    bbox: tuple[float, float, float, float] | None = None,
    date_range: tuple | None = None,
    filters: pc.Expression | None = None,
    storage_options: dict | None = None,
    columns: list[str] | None = None,
) -> Collection:
    """Open a collection written by :func:`export` or by Rasteret, lazily.

    Parameters
    ----------
    path
        Folder of a hive-partitioned Parquet dataset, or one Parquet file; local, ``s3://``, ``gs://``,
        ``http(s)://`` (a single file) or ``memory://``.
    bbox
        ``(west, south, east, north)`` in CRS84: files and row groups whose ``bbox`` statistics miss it
        are never read, and footprints must really intersect it.
    date_range
        ``(start, end)`` inclusive (a date-only end includes its day): prunes year/month folders and
        row groups.
    filters
        A pyarrow expression pushed down to the Parquet scan (e.g. ``pc.field("eo:cloud_cover") < 20``).

    The returned collection has ``load_stats`` (files and row groups, total and kept).
    """
    if not str(path).strip():
        raise CollectionError("load() needs the path or URL of a collection")
    fs, root = _filesystem(path, storage_options)
    if not fs.exists(root):
        raise CollectionError(f"no collection at {path}")
    arrow_fs = PyFileSystem(FSSpecHandler(fs))
    try:
        dataset = pads.dataset(root, format="parquet", partitioning="hive", filesystem=arrow_fs)
    except (pa.ArrowInvalid, OSError) as exc:
        raise CollectionError(f"{path} is not a Parquet dataset: {exc}") from None
    hive = YEAR in dataset.schema.names and MONTH in dataset.schema.names
    expr = _prune_expression(bbox, date_range, hive)
    if filters is not None:
        expr = filters if expr is None else expr & filters
    all_fragments = list(dataset.get_fragments())
    if not all_fragments:
        raise CollectionError(f"{path} holds no Parquet files")
    fragments = all_fragments if expr is None else list(dataset.get_fragments(filter=expr))
    tasks, row_groups_kept, files_kept = [], 0, 0
    source = (path, for_graph(storage_options))
    row_groups_total = sum(fragment.num_row_groups for fragment in all_fragments)
    for fragment in fragments:
        kept = [fragment] if expr is None else fragment.split_by_row_group(expr, schema=dataset.schema)
        groups = sorted({rg.id for piece in kept for rg in piece.row_groups})
        if not groups:
            continue
        files_kept += 1
        row_groups_kept += len(groups)
        values = pads.get_partition_keys(fragment.partition_expression)
        tasks.append((fragment.path, groups, source, expr, {k: int(v) for k, v in values.items()}))
    first = pq.ParquetFile(all_fragments[0].path, filesystem=arrow_fs)
    file_meta = {
        k.decode(): v.decode(errors="replace") for k, v in (first.schema_arrow.metadata or {}).items()
    }
    first_values = pads.get_partition_keys(all_fragments[0].partition_expression)
    meta = _read_fragment(
        (all_fragments[0].path, [], source, None, {k: int(v) for k, v in first_values.items()})
    )
    if tasks:
        frame = dd.from_map(_read_fragment, tasks, meta=meta, enforce_metadata=False)
    else:
        frame = dd.from_pandas(meta, npartitions=1)
    frame = dask_geopandas.from_dask_dataframe(frame, geometry=meta.geometry.name)
    collection = Collection(
        frame,
        name=file_meta.get("name", ""),
        description=file_meta.get("description", ""),
        data_source=file_meta.get("data_source", ""),
        storage_options=storage_options,
    )
    if bbox is not None:
        collection = collection.subset(bbox=bbox)
    collection.load_stats = LoadStats(len(all_fragments), files_kept, row_groups_total, row_groups_kept)
    return collection
