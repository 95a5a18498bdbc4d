"""Point sampling: the pixel under each point in every record that covers it (DESIGN.md §4).

One task per partition of (spatially partitioned) points. In a task, points are matched to record
footprints with an STR-tree, carried into each record's CRS, and grouped by the tile holding their
pixel; each tile is fetched and decoded once for all points and all bands that need it. Nodata, masked
and sparse-tile pixels are missing values (pandas NA), never numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dask
import dask.dataframe as dd
import dask_geopandas
import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import shapely

from ..cog import WindowRead, plan_mask_read, plan_window_read, read_windows
from ..errors import PlanError
from ..geo.hilbert import hilbert_keys
from ..geo.points import fractional_indices, nearest_valid, ring_offsets
from ..geo.warp import transformer
from ..geo.windows import PixelWindow
from ..io.config import IOConfig
from .records import RecordSource, record_sources
from .validity import valid_pixels

MATCHES = ("all", "latest")
LAYOUTS = ("wide", "long")
OUTPUT_COLUMNS = ("record_id", "datetime", "band", "value")


@dataclass(frozen=True)
class SampleSpec:
    """What every sampling task needs (small and picklable: no collection, no client)."""

    bands: tuple[str, ...]
    dtypes: tuple[str, ...]
    point_crs: str
    x_column: str | None
    y_column: str | None
    geometry_column: str | None
    match: str = "all"
    max_distance_pixels: int = 0
    layout: str = "wide"
    errors: str = "warn"
    storage_options: dict | None = field(default=None, compare=False)
    config: IOConfig | None = None


def nullable_dtype(dtype: str):
    """The pandas nullable extension dtype of a numpy dtype name (uint16 -> UInt16, float32 -> Float32)."""
    kind = np.dtype(dtype)
    if kind.kind == "f":
        return pd.Float32Dtype() if kind.itemsize <= 4 else pd.Float64Dtype()
    return pd.api.types.pandas_dtype(
        dtype.replace("uint", "UInt").replace("int", "Int").replace("UInt", "UInt")
    )


def _coordinates(points: pd.DataFrame, spec: SampleSpec) -> tuple[np.ndarray, np.ndarray]:
    if spec.geometry_column is not None:
        geoms = np.asarray(points[spec.geometry_column].array)
        return shapely.get_x(geoms), shapely.get_y(geoms)
    return (
        points[spec.x_column].to_numpy(dtype=np.float64, na_value=np.nan),
        points[spec.y_column].to_numpy(dtype=np.float64, na_value=np.nan),
    )


def _to_crs(xs: np.ndarray, ys: np.ndarray, src: str, dst: str) -> tuple[np.ndarray, np.ndarray]:
    tr = transformer(src, dst)
    if tr is None:
        return xs, ys
    x, y = tr.transform(xs, ys, errcheck=False)
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


@dataclass
class _Samples:
    """Column buffers of sampled values: one entry per (point, record, band)."""

    point: list = field(default_factory=list)
    record: list = field(default_factory=list)
    band: list = field(default_factory=list)
    value: list = field(default_factory=list)
    valid: list = field(default_factory=list)
    row: list = field(default_factory=list)
    col: list = field(default_factory=list)

    def add(self, point, record, band, value, valid, row, col):
        for name, v in zip(
            ("point", "record", "band", "value", "valid", "row", "col"),
            (point, record, band, value, valid, row, col),
            strict=True,
        ):
            getattr(self, name).append(np.asarray(v))

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            name: (np.concatenate(getattr(self, name)) if getattr(self, name) else np.empty(0))
            for name in ("point", "record", "band", "value", "valid", "row", "col")
        }


def _sample_record(
    record: RecordSource,
    r: int,
    idx: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    spec: SampleSpec,
    out: _Samples,
) -> None:
    """Sample every band of one record at points ``idx`` (coordinates already in the record's CRS)."""
    k = spec.max_distance_pixels
    plans: list[
        tuple[
            int,
            np.ndarray,
            np.ndarray,
            np.ndarray,
            np.ndarray,
            np.ndarray,
            WindowRead,
            WindowRead | None,
            object,
        ]
    ] = []
    reads: list[WindowRead] = []
    for b, source in enumerate(record.bands):
        if source is None or source.header.geo.transform is None:
            continue
        header = source.header
        frac_r, frac_c = fractional_indices(header.geo.transform, xs, ys)
        with np.errstate(invalid="ignore"):
            rows, cols = np.floor(frac_r), np.floor(frac_c)
        inside = (rows >= 0) & (rows < header.height) & (cols >= 0) & (cols < header.width)
        if not inside.any():
            continue
        rows, cols = rows[inside].astype(np.int64), cols[inside].astype(np.int64)
        points, frac_r, frac_c = idx[inside], frac_r[inside], frac_c[inside]
        th, tw = header.levels[0].tile_height, header.levels[0].tile_width
        tile_key = (rows // th) * (header.levels[0].tiles_across + 1) + cols // tw
        for key in np.unique(tile_key):
            sel = tile_key == key
            tr, tc = int(rows[sel][0] // th), int(cols[sel][0] // tw)
            window = PixelWindow(
                max(tr * th - k, 0),
                min((tr + 1) * th + k, header.height),
                max(tc * tw - k, 0),
                min((tc + 1) * tw + k, header.width),
            )
            read = plan_window_read(source.url, header, window, samples=(source.sample,))
            mask = plan_mask_read(source.url, header, window)
            plans.append((b, points[sel], rows[sel], cols[sel], frac_r[sel], frac_c[sel], read, mask, header))
            reads.append(read)
            if mask is not None:
                reads.append(mask)
    if not reads:
        return
    pixels = iter(read_windows(reads, storage_options=spec.storage_options, config=spec.config))
    offsets = ring_offsets(k) if k else None
    for b, points, rows, cols, frac_r, frac_c, read, mask_read, header in plans:
        data = next(pixels)[0]
        mask = next(pixels) if mask_read is not None else None
        valid = valid_pixels(data, header.nodata, read.codec, mask)
        sparse = np.zeros(data.shape, dtype=bool)
        th, tw = read.codec.tile_height, read.codec.tile_width
        for tile in read.tiles:
            if tile.sparse:
                sparse[
                    max(tile.tile_row * th - read.window.row_start, 0) : (tile.tile_row + 1) * th
                    - read.window.row_start,
                    max(tile.tile_col * tw - read.window.col_start, 0) : (tile.tile_col + 1) * tw
                    - read.window.col_start,
                ] = True
        valid = valid & ~sparse
        wr, wc = rows - read.window.row_start, cols - read.window.col_start
        value, ok = data[wr, wc], valid[wr, wc]
        used_r, used_c = rows.copy(), cols.copy()
        if k and (~ok).any():
            bad = np.flatnonzero(~ok)
            nr = wr[bad, None] + offsets[None, :, 0]
            nc = wc[bad, None] + offsets[None, :, 1]
            within = (nr >= 0) & (nr < data.shape[0]) & (nc >= 0) & (nc < data.shape[1])
            cand = np.zeros(nr.shape, dtype=bool)
            cand[within] = valid[nr[within], nc[within]]
            best = nearest_valid(frac_r[bad], frac_c[bad], rows[bad], cols[bad], cand, offsets)
            found = best >= 0
            pick = bad[found]
            br, bc = nr[found, best[found]], nc[found, best[found]]
            value[pick], ok[pick] = data[br, bc], True
            used_r[pick], used_c[pick] = br + read.window.row_start, bc + read.window.col_start
        out.add(points, np.full(len(points), r), np.full(len(points), b), value, ok, used_r, used_c)


def sample_partition(points: pd.DataFrame, *records_parts: pd.DataFrame, spec: SampleSpec) -> pd.DataFrame:
    """Sample one partition of points against the records partitions that may cover it."""
    points = points.reset_index(drop=True)
    xs, ys = _coordinates(points, spec)
    keep = np.isfinite(xs) & np.isfinite(ys)
    if not keep.all():  # documented: rows without coordinates are dropped
        points, xs, ys = points[keep].reset_index(drop=True), xs[keep], ys[keep]
    parts = [p for p in records_parts if len(p)]
    frame = pd.concat(parts, ignore_index=True) if parts else None
    samples = _Samples()
    records: list[RecordSource] = []
    if frame is not None and len(points):
        frame = frame.sort_values(["datetime", "id"], kind="stable").reset_index(drop=True)
        records = record_sources(frame, list(spec.bands), errors=spec.errors)
        lon, lat = _to_crs(xs, ys, spec.point_crs, "OGC:CRS84")
        tree = shapely.STRtree(np.asarray(frame.geometry.array))
        point_idx, record_idx = tree.query(shapely.points(lon, lat), predicate="intersects")
        for r in np.unique(record_idx):
            idx = point_idx[record_idx == r]
            rx, ry = _to_crs(xs[idx], ys[idx], spec.point_crs, records[r].crs)
            _sample_record(records[r], int(r), idx, rx, ry, spec, samples)
    return _assemble(points, records, samples.arrays(), spec)


def _latest(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per (point, band): the newest record with a valid value, else the newest record covering it."""
    if not len(arrays["point"]):
        return arrays
    # Records are in (datetime, id) order, so a higher record index is newer.
    order = np.lexsort((-arrays["record"], ~arrays["valid"].astype(bool), arrays["band"], arrays["point"]))
    sorted_pb = np.stack([arrays["point"][order], arrays["band"][order]])
    first = np.ones(len(order), dtype=bool)
    first[1:] = (np.diff(sorted_pb, axis=1) != 0).any(axis=0)
    chosen = order[first]
    return {name: values[chosen] for name, values in arrays.items()}


def _masked(values: np.ndarray, missing: np.ndarray, dtype: str):
    if np.dtype(dtype).kind == "f":
        return pd.arrays.FloatingArray(
            values.astype(np.float64 if np.dtype(dtype).itemsize > 4 else np.float32), missing
        )
    return pd.arrays.IntegerArray(values.astype(dtype), missing)


def _assemble(
    points: pd.DataFrame, records: list[RecordSource], arrays: dict, spec: SampleSpec
) -> pd.DataFrame:
    if spec.match == "latest":
        arrays = _latest(arrays)
    ids = np.array([r.record_id for r in records] or [""], dtype=object)
    stamps = pd.DatetimeIndex([r.datetime for r in records] or [pd.NaT], tz="UTC").as_unit("us")
    if spec.layout == "long":
        out = points.iloc[arrays["point"].astype(np.int64)].reset_index(drop=True)
        out["record_id"] = pd.array(ids[arrays["record"].astype(np.int64)], dtype="string")
        out["datetime"] = stamps[arrays["record"].astype(np.int64)]
        out["band"] = pd.array(
            np.asarray(spec.bands, dtype=object)[arrays["band"].astype(np.int64)], dtype="string"
        )
        values = arrays["value"].astype(np.float64)
        out["value"] = pd.arrays.FloatingArray(values, ~arrays["valid"].astype(bool))
        if spec.max_distance_pixels:
            out["row"] = arrays["row"].astype(np.int64)
            out["col"] = arrays["col"].astype(np.int64)
        return out
    # wide: one row per (point, record) (match="all") or per point (match="latest")
    key = (
        arrays["point"].astype(np.int64)
        if spec.match == "latest"
        else arrays["point"].astype(np.int64) * max(len(records), 1) + arrays["record"].astype(np.int64)
    )
    unique, inverse = np.unique(key, return_inverse=True)
    n = len(unique)
    first = np.zeros(n, dtype=np.int64)
    first[inverse[::-1]] = np.arange(len(key))[::-1]
    out = (
        points.iloc[arrays["point"][first].astype(np.int64)].reset_index(drop=True)
        if n
        else points.iloc[:0].reset_index(drop=True)
    )
    if spec.match == "all":
        out["record_id"] = pd.array(
            ids[arrays["record"][first].astype(np.int64)] if n else [], dtype="string"
        )
        out["datetime"] = (
            stamps[arrays["record"][first].astype(np.int64)]
            if n
            else pd.DatetimeIndex([], tz="UTC").as_unit("us")
        )
    for b, (band, dtype) in enumerate(zip(spec.bands, spec.dtypes, strict=True)):
        sel = np.flatnonzero(arrays["band"] == b)
        values = np.zeros(n, dtype=dtype)
        missing = np.ones(n, dtype=bool)
        values[inverse[sel]] = arrays["value"][sel].astype(dtype)
        missing[inverse[sel]] = ~arrays["valid"][sel].astype(bool)
        out[band] = _masked(values, missing, dtype)
        if spec.match == "latest":
            rec = np.full(n, -1, dtype=np.int64)
            rec[inverse[sel]] = arrays["record"][sel].astype(np.int64)
            out[f"{band}_record_id"] = pd.array([ids[i] if i >= 0 else None for i in rec], dtype="string")
            out[f"{band}_datetime"] = pd.DatetimeIndex(
                [stamps[i] if i >= 0 else pd.NaT for i in rec]
            ).as_unit("us")
        if spec.max_distance_pixels:
            for name in ("row", "col"):
                used = np.full(n, -1, dtype=np.int64)
                used[inverse[sel]] = arrays[name][sel].astype(np.int64)
                out[f"{band}_{name}"] = pd.arrays.IntegerArray(used, used < 0)
    return out


def check_sample_args(match: str, layout: str, max_distance_pixels: int) -> None:
    if match not in MATCHES:
        raise PlanError(f"match must be one of {MATCHES}, got {match!r}")
    if layout not in LAYOUTS:
        raise PlanError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if not isinstance(max_distance_pixels, int) or max_distance_pixels < 0:
        raise PlanError(f"max_distance_pixels must be a non-negative integer, got {max_distance_pixels!r}")


# -- graph ----------------------------------------------------------------------------------------

POINTS_PER_PARTITION = 250_000
_HILBERT = "__rasteret_hilbert__"


def points_frame(points, *, storage_options: dict | None = None) -> dd.DataFrame:
    """Points of any supported kind as a dask (geo)dataframe, lazily where the input is lazy."""
    if isinstance(points, str):
        try:
            return dask_geopandas.read_parquet(points, storage_options=storage_options)
        except (ValueError, KeyError, TypeError):
            return dd.read_parquet(points, storage_options=storage_options)
    if isinstance(points, dd.DataFrame):
        return points
    if isinstance(points, pa.Table):
        geo = (points.schema.metadata or {}).get(b"geo")
        points = gpd.GeoDataFrame.from_arrow(points) if geo else points.to_pandas()
    if isinstance(points, gpd.GeoDataFrame):
        return dask_geopandas.from_geopandas(
            points, npartitions=max(1, -(-len(points) // POINTS_PER_PARTITION))
        )
    if isinstance(points, pd.DataFrame):
        return dd.from_pandas(points, npartitions=max(1, -(-len(points) // POINTS_PER_PARTITION)))
    raise PlanError(
        f"points must be a pandas/geopandas/dask frame, a pyarrow Table or a Parquet path, not {type(points).__name__}"
    )


def _xy_of(part: pd.DataFrame, spec: SampleSpec) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = _coordinates(part, spec)
    return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)


def _partition_box(part: pd.DataFrame, spec: SampleSpec) -> pd.DataFrame:
    xs, ys = _xy_of(part, spec)
    ok = np.isfinite(xs) & np.isfinite(ys)
    if not ok.any():
        return pd.DataFrame({"x0": [np.nan], "y0": [np.nan], "x1": [np.nan], "y1": [np.nan]})
    return pd.DataFrame(
        {"x0": [xs[ok].min()], "y0": [ys[ok].min()], "x1": [xs[ok].max()], "y1": [ys[ok].max()]}
    )


def _with_hilbert(part: pd.DataFrame, spec: SampleSpec, bounds) -> pd.DataFrame:
    xs, ys = _xy_of(part, spec)
    return part.assign(**{_HILBERT: hilbert_keys(xs, ys, bounds).astype(np.int64) >> 1})


def spatially_sorted(frame: dd.DataFrame, spec: SampleSpec) -> dd.DataFrame:
    """Points shuffled into partitions along a Hilbert curve (skipped when already spatially partitioned)."""
    if getattr(frame, "spatial_partitions", None) is not None:
        return frame
    boxes = frame.map_partitions(
        _partition_box, spec, meta=_partition_box(frame._meta, spec).iloc[:0]
    ).compute()
    if boxes["x0"].isna().all():
        return frame
    bounds = (boxes["x0"].min(), boxes["y0"].min(), boxes["x1"].max(), boxes["y1"].max())
    keyed = frame.map_partitions(
        _with_hilbert, spec, bounds, meta=frame._meta.assign(**{_HILBERT: np.int64(0)})
    )
    return keyed.set_index(_HILBERT, npartitions=frame.npartitions).reset_index(drop=True)


def _box_lonlat(box, crs: str) -> shapely.Geometry | None:
    x0, y0, x1, y1 = box
    if not np.isfinite([x0, y0, x1, y1]).all():
        return None
    ring = shapely.segmentize(shapely.box(x0, y0, x1, y1), max(x1 - x0, y1 - y0) / 16 or 1.0)
    xy = shapely.get_coordinates(ring)
    lon, lat = _to_crs(xy[:, 0], xy[:, 1], crs, "OGC:CRS84")
    return shapely.box(np.nanmin(lon), np.nanmin(lat), np.nanmax(lon), np.nanmax(lat))


def _records_box(part: pd.DataFrame) -> pd.DataFrame:
    geoms = np.asarray(part.geometry.array)
    box = shapely.total_bounds(geoms) if len(geoms) else [np.nan] * 4
    return pd.DataFrame({"x0": [box[0]], "y0": [box[1]], "x1": [box[2]], "y1": [box[3]]})


def sample_graph(
    records: dd.DataFrame, points: dd.DataFrame, spec: SampleSpec, meta: pd.DataFrame
) -> dd.DataFrame:
    """One task per points partition, fed the records partitions whose extents meet the points' extent."""
    points = spatially_sorted(points, spec)
    point_boxes = points.map_partitions(
        _partition_box, spec, meta=_partition_box(points._meta, spec).iloc[:0]
    )
    record_boxes = records.map_partitions(_records_box, meta=_records_box(records._meta).iloc[:0])
    point_boxes, record_boxes = dask.compute(point_boxes, record_boxes)
    record_geoms = [
        None if not np.isfinite(row).all() else shapely.box(*row)
        for row in record_boxes[["x0", "y0", "x1", "y1"]].to_numpy()
    ]
    point_parts, record_parts = points.to_delayed(), records.to_delayed()
    tasks = []
    for p, row in enumerate(point_boxes[["x0", "y0", "x1", "y1"]].to_numpy()):
        area = _box_lonlat(row, spec.point_crs)
        if area is None:
            continue
        feeding = [
            record_parts[r] for r, g in enumerate(record_geoms) if g is not None and g.intersects(area)
        ]
        if feeding:
            tasks.append(dask.delayed(sample_partition)(point_parts[p], *feeding, spec=spec))
    if not tasks:
        return dd.from_pandas(meta, npartitions=1)
    return dd.from_delayed(tasks, meta=meta, verify_meta=False)
