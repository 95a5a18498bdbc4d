"""Header enrichment: parse every asset's COG header once and keep it in ``{band}_metadata``.

It runs per partition (``map_partitions``): the partition's distinct URLs are fetched concurrently on
the process's I/O loop, one GET per ordinary COG, with the per-host limits of :mod:`rasteret_dask.io`.
A failing asset never fails the partition: its metadata is null and ``{band}_error`` says why.
"""

from __future__ import annotations

import asyncio

import pandas as pd
import pyarrow as pa

from ..cog import read_cog_header_async
from ..errors import RasteretDaskError
from ..io.config import IOConfig
from ..io.loop import run_sync
from ..tiff.arrow import METADATA_STRUCT, header_to_dict
from ..tiff.model import TiffHeader
from .schema import ASSETS, CRS_COLUMN, PROJ_EPSG, arrow_series, error_column, metadata_column


async def _headers(
    urls: list[str], storage_options: dict | None, config: IOConfig | None
) -> dict[str, TiffHeader | str]:
    async def one(url: str) -> TiffHeader | str:
        try:
            return (await read_cog_header_async(url, storage_options=storage_options, config=config)).tiff
        except RasteretDaskError as exc:
            return f"{type(exc).__name__}: {exc}"

    results = await asyncio.gather(*(one(u) for u in urls))
    return dict(zip(urls, results, strict=True))


def _hrefs(part: pd.DataFrame, band: str) -> list[tuple[str | None, int | None]]:
    assets = pa.array(part[ASSETS].array).field(band)
    return list(zip(assets.field("href").to_pylist(), assets.field("band_index").to_pylist(), strict=True))


def _check_band_index(header: TiffHeader, band_index: int | None) -> str | None:
    if band_index is None and header.samples_per_pixel > 1:
        return None  # the whole multi-sample asset; readers pick samples explicitly
    if band_index is not None and not 0 <= band_index < header.samples_per_pixel:
        return f"PlanError: band_index {band_index} but the file has {header.samples_per_pixel} sample(s)"
    return None


def enrich_partition(
    part: pd.DataFrame,
    bands: list[str],
    storage_options: dict | None = None,
    config: IOConfig | None = None,
) -> pd.DataFrame:
    """Add ``{band}_metadata`` and ``{band}_error`` for ``bands`` to one partition (a new frame).

    ``proj:epsg`` and ``crs`` are filled from the headers where the records do not give them.
    """
    out = part.copy()
    hrefs = {band: _hrefs(part, band) for band in bands}
    urls = sorted({href for pairs in hrefs.values() for href, _ in pairs if href})
    headers = run_sync(_headers(urls, storage_options, config)) if urls else {}
    epsg = list(out[PROJ_EPSG]) if PROJ_EPSG in out.columns else [None] * len(out)
    wkt: list[str | None] = [None] * len(out)
    for band in bands:
        metadata, errors = [], []
        for row, (href, band_index) in enumerate(hrefs[band]):
            found = headers.get(href) if href else "SchemaError: the asset has no href"
            problem = _check_band_index(found, band_index) if isinstance(found, TiffHeader) else found
            if problem is None:
                metadata.append(header_to_dict(found, band_index))
                errors.append(None)
                if pd.isna(epsg[row]) and found.geo.crs_epsg is not None:
                    epsg[row] = found.geo.crs_epsg
                wkt[row] = wkt[row] or found.geo.crs_wkt
            else:
                metadata.append(None)
                errors.append(problem)
        out[metadata_column(band)] = arrow_series(metadata, METADATA_STRUCT, out.index)
        out[error_column(band)] = pd.Series(errors, index=out.index, dtype="string")
    out[PROJ_EPSG] = pd.Series(epsg, index=out.index, dtype="Int32")
    crs = [f"EPSG:{e}" if not pd.isna(e) else w for e, w in zip(out[PROJ_EPSG], wkt, strict=True)]
    if CRS_COLUMN in part.columns:
        crs = [c if not pd.isna(c) else new for c, new in zip(part[CRS_COLUMN], crs, strict=True)]
    out[CRS_COLUMN] = pd.Series(crs, index=out.index, dtype="string")
    return out
