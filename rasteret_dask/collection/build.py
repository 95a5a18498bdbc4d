"""Building collections: records from tables, header enrichment as Dask work, with progress and a report."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass

import dask.dataframe as dd
import dask_geopandas
import geopandas as gpd
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads

from ..errors import CollectionError, SchemaError
from ..io.cluster import for_graph
from ..io.config import IOConfig
from ..tiff.arrow import METADATA_STRUCT
from .collection import Collection
from .enrich import enrich_partition
from .schema import (
    ASSETS,
    CRS_COLUMN,
    DATETIME,
    ID,
    PROJ_EPSG,
    bands_of,
    error_column,
    metadata_column,
    normalise_records,
)
from .tables import to_geodataframe

log = logging.getLogger(__name__)

# Records per partition when the input is in memory: enough for the I/O loop to keep many headers in
# flight, small enough that a cluster gets work for every worker.
RECORDS_PER_PARTITION = 2000


@dataclass(frozen=True)
class BuildReport:
    """What a build did: records, assets enriched, failures per band with a few example errors."""

    records: int
    assets: int
    failed: dict[str, int]
    examples: dict[str, list[str]]

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())

    def __str__(self) -> str:
        text = f"{self.records} records, {self.assets} asset headers, {self.failed_total} failed"
        for band, n in self.failed.items():
            if n:
                text += f"\n  {band}: {n} failed, e.g. {self.examples[band][0]}"
        return text


def _read_table_source(source, storage_options: dict | None) -> pa.Table | gpd.GeoDataFrame | pd.DataFrame:
    if isinstance(source, str):
        try:
            dataset = pads.dataset(
                source, format="parquet", filesystem=_arrow_filesystem(source, storage_options)
            )
        except (FileNotFoundError, OSError, pa.ArrowInvalid) as exc:
            raise CollectionError(f"cannot read the table at {source}: {exc}") from None
        return dataset.to_table()
    if isinstance(source, pads.Dataset):
        return source.to_table()
    return source


def _arrow_filesystem(url: str, storage_options: dict | None):
    """A pyarrow filesystem for ``url`` from fsspec (None for local paths)."""
    import fsspec
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    protocol = fsspec.utils.get_protocol(url)
    if protocol in ("file", "local"):
        return None
    fs = fsspec.filesystem(protocol, **(storage_options or {}))
    return PyFileSystem(FSSpecHandler(fs))


def _assets_from_href(frame: pd.DataFrame, href_column: str, band_index_map, bands) -> pd.Series:
    if href_column not in frame.columns:
        raise SchemaError(f"href_column {href_column!r} is not a column; columns are {list(frame.columns)}")
    if band_index_map:
        mapping = dict(band_index_map)
    else:
        names = list(bands) if bands else ["data"]
        if len(names) != 1:
            raise SchemaError("several bands from one href column need band_index_map={band: sample index}")
        mapping = {names[0]: None}
    return pd.Series(
        [
            None if pd.isna(href) else {b: {"href": str(href), "band_index": i} for b, i in mapping.items()}
            for href in frame[href_column]
        ],
        index=frame.index,
        dtype=object,
    )


def _year_datetimes(values: pd.Series) -> pd.Series:
    """Integer years become 1 January of that year (UTC), as Rasteret reads them."""
    if pd.api.types.is_integer_dtype(values):
        return pd.to_datetime(values.astype("Int64").astype("string") + "-01-01", utc=True)
    return values


def records_from_table(
    source,
    *,
    href_column: str | None = None,
    band_index_map: Mapping[str, int] | None = None,
    column_map: Mapping[str, str] | None = None,
    bands: list[str] | None = None,
    storage_options: dict | None = None,
) -> gpd.GeoDataFrame:
    """Normalised records from any table input (see :func:`build_from_table`), before enrichment."""
    data = _read_table_source(source, storage_options)
    frame = to_geodataframe(data) if not isinstance(data, pa.Table) else None
    if frame is None:
        data = data.rename_columns([dict(column_map or {}).get(n, n) for n in data.column_names])
        column_map = None
        frame = to_geodataframe(data)
    frame = frame.rename(columns=dict(column_map)) if column_map else frame.copy()
    if ASSETS not in frame.columns and href_column is not None:
        frame[ASSETS] = _assets_from_href(frame, href_column, band_index_map, bands)
        frame = frame[frame[ASSETS].notna()]
    if DATETIME in frame.columns:
        frame[DATETIME] = _year_datetimes(frame[DATETIME])
    frame = normalise_records(gpd.GeoDataFrame(frame))
    if bands:
        frame = select_bands(frame, bands)
    return frame


def select_bands(frame: gpd.GeoDataFrame, bands: list[str]) -> gpd.GeoDataFrame:
    """Keep only ``bands`` in the assets (and their metadata columns), in the given order."""
    have = bands_of(frame)
    missing = [b for b in bands if b not in have]
    if missing:
        raise SchemaError(f"band(s) {missing} are not in the assets; they hold {have}")
    assets = pa.array(frame[ASSETS].array)
    kept = pa.StructArray.from_arrays([assets.field(b) for b in bands], names=bands, mask=assets.is_null())
    out = frame.copy()
    out[ASSETS] = pd.Series(pd.arrays.ArrowExtensionArray(kept), index=frame.index)
    dropped = [c for b in have if b not in bands for c in (metadata_column(b), error_column(b)) if c in out]
    return out.drop(columns=dropped)


def _to_dask(frame, npartitions: int | None) -> dask_geopandas.GeoDataFrame:
    if isinstance(frame, dask_geopandas.GeoDataFrame):
        return frame if npartitions is None else frame.repartition(npartitions=npartitions)
    frame = frame.sort_values([DATETIME, ID]).reset_index(drop=True)
    n = npartitions or max(1, -(-len(frame) // RECORDS_PER_PARTITION))
    return dask_geopandas.from_geopandas(frame, npartitions=min(n, max(1, len(frame))))


def _enriched_meta(meta: gpd.GeoDataFrame, bands: list[str]) -> gpd.GeoDataFrame:
    out = meta.copy()
    for band in bands:
        out[metadata_column(band)] = pd.Series(
            pd.array([], dtype=pd.ArrowDtype(METADATA_STRUCT)), index=out.index[:0]
        )
        out[error_column(band)] = pd.Series([], dtype="string", index=out.index[:0])
    out[PROJ_EPSG] = pd.Series([], dtype="Int32", index=out.index[:0])
    out[CRS_COLUMN] = pd.Series([], dtype="string", index=out.index[:0])
    return out


def _compute_with_progress(frame: dd.DataFrame, progress: bool) -> dd.DataFrame:
    """Persist ``frame``, showing Dask's progress bar (distributed's when a client is active)."""
    try:
        from distributed import get_client
        from distributed import progress as distributed_progress

        client = get_client()
    except (ImportError, ValueError):
        client = None
    if client is not None:
        persisted = frame.persist()
        if progress:
            distributed_progress(persisted, notebook=False)
            print(file=sys.stderr)
        return persisted
    if progress:
        from dask.diagnostics import ProgressBar

        with ProgressBar(out=sys.stderr):
            return frame.persist(scheduler="threads")
    return frame.persist(scheduler="threads")


def _report(frame: dd.DataFrame, bands: list[str]) -> BuildReport:
    def part_errors(part: pd.DataFrame) -> pd.DataFrame:
        rows = []
        for band in bands:
            errs = part[error_column(band)].dropna()
            rows.append({"band": band, "failed": len(errs), "example": errs.iloc[0] if len(errs) else None})
        return pd.DataFrame([*rows, {"band": "", "failed": -len(part), "example": None}])

    meta = pd.DataFrame(
        {
            "band": pd.Series(dtype=object),
            "failed": pd.Series(dtype="int64"),
            "example": pd.Series(dtype=object),
        }
    )
    table = frame.map_partitions(part_errors, meta=meta).compute()
    records = int(-table.loc[table["band"] == "", "failed"].sum())
    table = table[table["band"] != ""]
    failed = {b: int(table.loc[table["band"] == b, "failed"].sum()) for b in bands}
    examples = {
        b: table.loc[(table["band"] == b) & table["example"].notna(), "example"].tolist()[:3] for b in bands
    }
    return BuildReport(records=records, assets=records * len(bands), failed=failed, examples=examples)


def enrich_collection(
    frame,
    *,
    bands: list[str] | None = None,
    storage_options: dict | None = None,
    config: IOConfig | None = None,
    npartitions: int | None = None,
    progress: bool | None = None,
    name: str = "",
    description: str = "",
    data_source: str = "",
) -> tuple[Collection, BuildReport]:
    """Enrich records with their COG headers as Dask work and wrap them as a persisted Collection."""
    dframe = _to_dask(frame, npartitions)
    bands = bands or bands_of(dframe._meta)
    if progress is None:
        progress = sys.stderr.isatty()
    enriched = dframe.map_partitions(
        enrich_partition, bands, for_graph(storage_options), config, meta=_enriched_meta(dframe._meta, bands)
    )
    enriched = _compute_with_progress(enriched, progress)
    report = _report(enriched, bands)
    if report.failed_total:
        log.warning("header enrichment: %s", report)
    collection = Collection(
        enriched, name=name, description=description, data_source=data_source, storage_options=storage_options
    )
    return collection, report


def build_from_table(
    source,
    *,
    href_column: str | None = None,
    band_index_map: Mapping[str, int] | None = None,
    column_map: Mapping[str, str] | None = None,
    bands: list[str] | None = None,
    storage_options: dict | None = None,
    enrich: bool = True,
    npartitions: int | None = None,
    config: IOConfig | None = None,
    progress: bool | None = None,
    name: str = "",
    description: str = "",
    data_source: str = "",
) -> Collection:
    """Build a collection from a table of records, parsing every asset's COG header once.

    Parameters
    ----------
    source
        A Parquet/GeoParquet path or URL, a ``pyarrow`` Table or Dataset, a pandas or geopandas frame, or
        a dask(-geopandas) frame. It needs ``id``, ``datetime``, ``geometry`` (CRS84 unless the frame
        says otherwise; WKB, WKT or shapely) and ``assets``, or columns that become them.
    href_column
        Column of asset URLs to make ``assets`` from when there is none.
    band_index_map
        ``{band: sample index}`` (0-based) for multi-band files named by ``href_column``.
    column_map
        ``{source name: collection name}`` renames (e.g. ``{"fid": "id", "geom": "geometry"}``).
    bands
        Keep (and enrich) only these bands, in this order. One band name for a single-band
        ``href_column`` (default ``"data"``).
    storage_options
        fsspec options for reading the table and the assets (kept in memory, never written).
    enrich
        Parse COG headers (one GET per header) into ``{band}_metadata``; failures are recorded per band
        in ``{band}_error`` and counted in ``collection.build_report``.
    npartitions
        Partitions of the collection frame (default: one per 2,000 records).
    progress
        Show a progress bar (default: when stderr is a terminal).

    Integer ids become strings and integer years 1 January of that year, as Rasteret does.
    """
    if isinstance(source, dd.DataFrame):
        if not isinstance(source, dask_geopandas.GeoDataFrame):
            source = dask_geopandas.from_dask_dataframe(source)
        frame = source.map_partitions(normalise_records)
    else:
        frame = records_from_table(
            source,
            href_column=href_column,
            band_index_map=band_index_map,
            column_map=column_map,
            bands=bands,
            storage_options=storage_options,
        )
    return finish_build(
        frame,
        enrich=enrich,
        bands=bands,
        storage_options=storage_options,
        config=config,
        npartitions=npartitions,
        progress=progress,
        name=name,
        description=description,
        data_source=data_source,
    )


def finish_build(
    frame, *, enrich: bool, bands, storage_options, config, npartitions, progress, **names
) -> Collection:
    """Normalised records to a Collection: enriched with their headers (``build_report`` set) or not."""
    if not enrich:
        return Collection(_to_dask(frame, npartitions), storage_options=storage_options, **names)
    collection, report = enrich_collection(
        frame,
        bands=bands,
        storage_options=storage_options,
        config=config,
        npartitions=npartitions,
        progress=progress,
        **names,
    )
    collection.build_report = report
    return collection
