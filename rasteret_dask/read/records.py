"""From collection rows to what reads need: per record, each band's URL, sample and parsed header.

Works on plain pandas partitions (columns ``id``, ``datetime``, ``assets``, ``crs``/``proj:epsg`` and
``{band}_metadata``), so ``read`` never imports ``collection``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from ..errors import PlanError
from ..tiff.arrow import dict_to_header
from ..tiff.model import TiffHeader


@dataclass(frozen=True)
class BandSource:
    """One band of one record: the file holding it, the sample (0-based) within it, and its header."""

    band: str
    url: str
    sample: int
    header: TiffHeader


@dataclass(frozen=True)
class RecordSource:
    """One record's bands (None where the band has no usable header) and its raster CRS."""

    record_id: str
    datetime: pd.Timestamp
    crs: str
    bands: tuple[BandSource | None, ...]


def _column(part: pd.DataFrame, name: str) -> list:
    series = part[name]
    if isinstance(series.dtype, pd.ArrowDtype):
        return pa.array(series.array).to_pylist()
    return series.tolist()


def _record_crs(row_crs, row_epsg, header: TiffHeader | None) -> str | None:
    if isinstance(row_crs, str) and row_crs:
        return row_crs
    if row_epsg is not None and not pd.isna(row_epsg):
        return f"EPSG:{int(row_epsg)}"
    if header is not None:
        if header.geo.crs_epsg is not None:
            return f"EPSG:{header.geo.crs_epsg}"
        return header.geo.crs_wkt
    return None


def record_sources(part: pd.DataFrame, bands: list[str], *, errors: str = "warn") -> list[RecordSource]:
    """The records of a partition as :class:`RecordSource` values, in row order.

    Records whose band metadata is null (enrichment failed) get None for that band; with
    ``errors="raise"`` they raise a PlanError naming them instead of a warning.
    """
    for band in bands:
        if f"{band}_metadata" not in part.columns:
            raise PlanError(
                f"band {band!r} has no header column {band}_metadata: build with enrichment first"
            )
    ids = [str(v) for v in part["id"]]
    stamps = list(part["datetime"])
    assets = _column(part, "assets")
    crs_values = list(part["crs"]) if "crs" in part.columns else [None] * len(part)
    epsg_values = list(part["proj:epsg"]) if "proj:epsg" in part.columns else [None] * len(part)
    metadata = {band: _column(part, f"{band}_metadata") for band in bands}
    out, missing = [], []
    for row, record_id in enumerate(ids):
        sources: list[BandSource | None] = []
        for band in bands:
            meta = metadata[band][row]
            asset = (assets[row] or {}).get(band) or {}
            if meta is None or not asset.get("href"):
                sources.append(None)
                missing.append(f"{record_id}/{band}")
                continue
            sample = asset.get("band_index")
            header = dict_to_header(meta, sample)
            sources.append(BandSource(band, asset["href"], int(sample or 0), header))
        first = next((s.header for s in sources if s is not None), None)
        crs = _record_crs(crs_values[row], epsg_values[row], first)
        out.append(RecordSource(record_id, stamps[row], crs or "", tuple(sources)))
    if missing:
        message = f"{len(missing)} record band(s) have no header and are skipped: {', '.join(missing[:10])}"
        if errors == "raise":
            raise PlanError(message)
        warnings.warn(message, stacklevel=3)
    return out
