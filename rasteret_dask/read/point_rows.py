"""The rows of a point-sample frame, from the samples taken tile by tile (pure: no I/O).

Samples arrive per tile of a record-band, in any order; the frame lists them in a fixed order (points,
then records in (datetime, id) order), so results never depend on which tile arrived first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from .records import RecordSource
from .sample_spec import SampleSpec


@dataclass(frozen=True)
class TileSamples:
    """The samples of one tile of one record-band: per point its value in the band's output dtype,
    whether it is valid, and (with ``max_distance_pixels``) the pixel used."""

    points: np.ndarray
    record: int
    band: int
    values: np.ndarray
    valid: np.ndarray
    rows: np.ndarray | None
    cols: np.ndarray | None


@dataclass
class Samples:
    """The sampled chunks of one task. They are added in any order (tiles arrive in completion order),
    each with its plan's ``key``, and are read in key order, so the output does not depend on arrival."""

    chunks: dict = field(default_factory=dict)

    def add(self, key: int, chunk: TileSamples) -> None:
        self.chunks[key] = chunk

    def ordered(self, band: int | None = None) -> list[TileSamples]:
        """The chunks in key order (of one band only when ``band`` is given)."""
        chunks = [self.chunks[k] for k in sorted(self.chunks)]
        return chunks if band is None else [c for c in chunks if c.band == band]


def _concat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)


@dataclass(frozen=True)
class _Picked:
    """Samples as columns: per sample its point, record, value, validity and (with
    ``max_distance_pixels``) the pixel used."""

    points: np.ndarray
    records: np.ndarray
    values: np.ndarray
    valid: np.ndarray
    rows: np.ndarray | None
    cols: np.ndarray | None

    def take(self, index: np.ndarray) -> _Picked:
        return _Picked(*(None if v is None else v[index] for v in vars(self).values()))


def _gather(chunks: list[TileSamples], dtype, nearest: bool) -> _Picked:
    """The samples of ``chunks`` as columns, in chunk order, values cast to ``dtype``."""
    return _Picked(
        _concat([c.points for c in chunks], np.int64),
        _concat([np.full(len(c.points), c.record) for c in chunks], np.int64),
        _concat([c.values.astype(dtype, copy=False) for c in chunks], dtype),
        _concat([c.valid for c in chunks], bool),
        *(
            _concat([getattr(c, name) for c in chunks], np.int64) if nearest else None
            for name in ("rows", "cols")
        ),
    )


def _newest_valid(picked: _Picked, bands: np.ndarray | None = None) -> np.ndarray:
    """Per point (and band, when given): the index of the newest sample with a valid value, else of the
    newest sample; ordered by point, then band."""
    groups = (picked.points,) if bands is None else (bands, picked.points)
    # Records are in (datetime, id) order, so a higher record index is newer.
    order = np.lexsort((-picked.records, ~picked.valid, *groups))
    first = np.ones(len(order), dtype=bool)
    first[1:] = (np.diff(np.stack([g[order] for g in groups]), axis=1) != 0).any(axis=0)
    return order[first]


def _masked(values: np.ndarray, missing: np.ndarray, dtype: str):
    if np.dtype(dtype).kind == "f":
        return pd.arrays.FloatingArray(
            values.astype(np.float64 if np.dtype(dtype).itemsize > 4 else np.float32, copy=False), missing
        )
    return pd.arrays.IntegerArray(values.astype(dtype, copy=False), missing)


def _strings_at(labels: np.ndarray, index: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """``pd.array(labels[index], dtype="string")``, NA where ``index`` is negative, without a Python
    object per row (Arrow's take)."""
    positions = pa.array(index, pa.int64(), mask=index < 0)
    return pd.arrays.ArrowStringArray(pa.array(labels, pa.large_string()).take(positions))


def _row_index(keys, total: int, bound: int) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """The distinct keys (non-negative, below ``bound``) of the arrays ``keys()`` yields (``total`` keys
    in all), ascending, and a function giving the positions of keys in them. A dense table of ``bound``
    flags when it is not much larger than the keys (linear time, no sort, no array of all the keys at
    once), else a sort."""
    if bound > 4 * total + 1_000_000:
        unique = np.unique(_concat(list(keys()), np.int64))
        return unique, lambda k: np.searchsorted(unique, k)
    seen = np.zeros(bound, dtype=bool)
    for k in keys():
        seen[k] = True
    position = np.cumsum(seen, dtype=np.int32 if bound < 2**31 else np.int64)
    position -= 1
    return np.flatnonzero(seen), position.__getitem__


def _pixel_columns(out: pd.DataFrame, band: str, n: int, placed: list[tuple]) -> None:
    """``{band}_row``/``{band}_col``: the pixel each value came from (NA where none), from the
    ``(positions, rows, cols)`` of each placed group of samples."""
    used_rows, used_cols = np.full(n, -1, dtype=np.int64), np.full(n, -1, dtype=np.int64)
    for at, rows, cols in placed:
        used_rows[at], used_cols[at] = rows, cols
    out[f"{band}_row"] = pd.arrays.IntegerArray(used_rows, used_rows < 0)
    out[f"{band}_col"] = pd.arrays.IntegerArray(used_cols, used_cols < 0)


def _long_samples(samples: Samples, spec: SampleSpec) -> tuple[_Picked, np.ndarray]:
    """The long layout's samples (float64 values) and their bands: every sample in plan order, or with
    ``match="latest"`` the chosen one per (point, band), in that order."""
    chunks = samples.ordered()
    picked = _gather(chunks, np.float64, spec.max_distance_pixels > 0)
    bands = _concat([np.full(len(c.points), c.band) for c in chunks], np.int64)
    if spec.match == "latest":
        chosen = _newest_valid(picked, bands)
        picked, bands = picked.take(chosen), bands[chosen]
    return picked, bands


def assemble(
    points: pd.DataFrame, records: list[RecordSource], samples: Samples, spec: SampleSpec
) -> pd.DataFrame:
    ids = np.array([r.record_id for r in records] or [""], dtype=object)
    stamps = pd.DatetimeIndex([r.datetime for r in records] or [pd.NaT], tz="UTC").as_unit("us")
    nearest = spec.max_distance_pixels > 0
    if spec.layout == "long":
        picked, bands = _long_samples(samples, spec)
        out = points.iloc[picked.points].reset_index(drop=True)
        out["record_id"] = _strings_at(ids, picked.records)
        out["datetime"] = stamps[picked.records]
        out["band"] = _strings_at(np.asarray(spec.bands, dtype=object), bands)
        out["value"] = pd.arrays.FloatingArray(picked.values, ~picked.valid)
        if nearest:
            out["row"], out["col"] = picked.rows, picked.cols
        return out
    if spec.match == "latest":
        return _assemble_latest(points, ids, stamps, samples, spec)
    # wide, every record: one row per (point, record), in that order
    n_records = max(len(records), 1)
    chunks = samples.ordered()
    # Bands on one grid share each tile's array of points: the rows of a (record, points) pair are
    # found once for all its bands.
    groups = {(c.record, id(c.points)): c for c in chunks}
    unique, row_of = _row_index(
        lambda: (c.points * n_records + c.record for c in groups.values()),
        sum(len(c.points) for c in groups.values()),
        len(points) * n_records,
    )
    rows_at = {key: row_of(c.points * n_records + c.record) for key, c in groups.items()}
    n = len(unique)
    out = points.iloc[unique // n_records].reset_index(drop=True)
    record = unique % n_records
    out["record_id"] = _strings_at(ids, record)
    out["datetime"] = stamps[record] if n else pd.DatetimeIndex([], tz="UTC").as_unit("us")
    for b, (band, dtype) in enumerate(zip(spec.bands, spec.dtypes, strict=True)):
        values = np.zeros(n, dtype=dtype)
        missing = np.ones(n, dtype=bool)
        placed = []
        for chunk in chunks:
            if chunk.band == b:
                at = rows_at[chunk.record, id(chunk.points)]
                values[at] = chunk.values
                missing[at] = ~chunk.valid
                placed.append((at, chunk.rows, chunk.cols))
        out[band] = _masked(values, missing, dtype)
        if nearest:
            _pixel_columns(out, band, n, placed)
    return out


def _assemble_latest(
    points: pd.DataFrame, ids: np.ndarray, stamps: pd.DatetimeIndex, samples: Samples, spec: SampleSpec
) -> pd.DataFrame:
    """Wide, newest valid record per point and band: one row per point any record covers."""
    nearest = spec.max_distance_pixels > 0
    chosen = []
    for b, dtype in enumerate(spec.dtypes):
        picked = _gather(samples.ordered(b), dtype, nearest)
        chosen.append(picked.take(_newest_valid(picked)))
    unique, row_of = _row_index(
        lambda: (c.points for c in chosen), sum(len(c.points) for c in chosen), len(points)
    )
    n = len(unique)
    out = points.iloc[unique].reset_index(drop=True)
    for band, dtype, picked in zip(spec.bands, spec.dtypes, chosen, strict=True):
        at = row_of(picked.points)
        column = np.zeros(n, dtype=dtype)
        missing = np.ones(n, dtype=bool)
        column[at], missing[at] = picked.values, ~picked.valid
        out[band] = _masked(column, missing, dtype)
        rec = np.full(n, -1, dtype=np.int64)
        rec[at] = picked.records
        out[f"{band}_record_id"] = _strings_at(ids, rec)
        # NaT where no record covers the point; tz-aware UTC like ``datetime`` (and the meta) always
        out[f"{band}_datetime"] = stamps.take(np.maximum(rec, 0)).where(rec >= 0)
        if nearest:
            _pixel_columns(out, band, n, [(at, picked.rows, picked.cols)])
    return out
