"""AOI chips on each record's native grid, with rasterio's window and mask rules (DESIGN.md §4).

For a (record, AOI) pair the window is ``rasterio.features.geometry_window`` of the AOI reprojected to
the record's CRS, and pixels outside ``geometry_mask`` (centre inside, or ``all_touched``) or masked
(nodata, or the internal mask where the file has one) read as the band's nodata, 0 without one:
``rasterio.mask.mask(crop=True, filled=True)``. Chips keep the native dtype.

The work is done per partition of the collection: every pair of the partition is planned, then all
their tiles are fetched and decoded in one go, so a tile two AOIs share is fetched once.
"""

from __future__ import annotations

from dataclasses import dataclass

import dask
import dask_geopandas
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from ..cog import WindowRead, iter_masked_windows, plan_mask_read, plan_window_read
from ..errors import PlanError
from ..geo.aoi import geometry_window, reproject_geometry
from ..geo.rasterize import geometry_mask
from ..geo.windows import PixelWindow
from ..io.config import IOConfig
from ..tiff.model import TiffHeader
from .records import BandSource, record_sources
from .validity import band_fill, valid_pixels

AOI_INDEX = "aoi_index"
CHIP_COLUMNS = ["record_id", "datetime", "band", "data", "transform", "crs"]


@dataclass(frozen=True)
class _ChipGroup:
    """Bands of one record read from one file over one window (a chunky file's bands share a read)."""

    bands: tuple[str, ...]
    read: WindowRead
    mask_read: WindowRead | None
    inside: np.ndarray
    header: TiffHeader
    transform: tuple[float, ...]


def _window_transform(header: TiffHeader, window: PixelWindow) -> tuple[float, ...]:
    a, b, c, d, e, f = header.geo.transform
    return (
        a,
        b,
        c + a * window.col_start + b * window.row_start,
        d,
        e,
        f + d * window.col_start + e * window.row_start,
    )


class _PairPlanner:
    """Plans (record, AOI) pairs of one partition. Records on one grid (the dates of a tile, the bands of
    a scene) share an AOI's reprojection, window and mask, so each is computed once per AOI and grid."""

    def __init__(self, aois: gpd.GeoSeries, aoi_crs: str, all_touched: bool):
        self.aois, self.aoi_crs, self.all_touched = aois, aoi_crs, all_touched
        self._local: dict[tuple[int, str], shapely.Geometry] = {}
        self._windows: dict[tuple, tuple | None] = {}

    def plan(self, aoi_pos: int, record_crs: str, sources: list[BandSource]) -> list[_ChipGroup]:
        """The reads of one pair; empty when the AOI misses every band's pixels."""
        groups: dict[tuple, list[BandSource]] = {}
        for source in sources:
            groups.setdefault((source.url, id(source.header)), []).append(source)
        planned = []
        for members in groups.values():
            header = members[0].header
            if header.geo.transform is None:
                continue
            found = self._window(aoi_pos, record_crs, header)
            if found is None:
                continue
            window, transform, inside = found
            planned.append(
                _ChipGroup(
                    bands=tuple(m.band for m in members),
                    read=plan_window_read(
                        members[0].url, header, window, samples=tuple(m.sample for m in members)
                    ),
                    mask_read=plan_mask_read(members[0].url, header, window),
                    inside=inside,
                    header=header,
                    transform=transform,
                )
            )
        return planned

    def _window(self, aoi_pos: int, record_crs: str, header: TiffHeader) -> tuple | None:
        """(window, its transform, the AOI's mask there) on a raster grid, or None when they miss."""
        key = (aoi_pos, record_crs, tuple(header.geo.transform), header.width, header.height)
        if key not in self._windows:
            local = self._local.get((aoi_pos, record_crs))
            if local is None:
                local = self._local[(aoi_pos, record_crs)] = reproject_geometry(
                    self.aois.iloc[aoi_pos], self.aoi_crs, record_crs
                )
            window = geometry_window(local, header.geo.transform, header.width, header.height)
            if window is None:
                self._windows[key] = None
            else:
                transform = _window_transform(header, window)
                shape = (window.height, window.width)
                inside = geometry_mask(local, transform, shape, all_touched=self.all_touched)
                self._windows[key] = (window, transform, inside)
        return self._windows[key]


def chips_partition(
    part: pd.DataFrame,
    aois: gpd.GeoDataFrame,
    bands: list[str],
    all_touched: bool,
    storage_options: dict | None,
    config: IOConfig | None,
    errors: str,
) -> pd.DataFrame:
    """Chips of one collection partition against every AOI.

    ``aois`` is indexed by AOI and in the CRS the AOIs were given in; footprints (CRS84) are matched
    against a CRS84 copy, while windows and masks come from the original geometry reprojected straight
    to each record's CRS.
    """
    own_crs = aois.crs.to_wkt()
    lonlat = aois.geometry if aois.crs.equals("OGC:CRS84") else aois.geometry.to_crs("OGC:CRS84")
    records = record_sources(part, bands, errors=errors)
    footprints = np.asarray(part.geometry.array) if len(part) else np.empty(0, dtype=object)
    tree = shapely.STRtree(np.asarray(lonlat.array))
    aoi_pos, record_pos = (
        tree.query(footprints, predicate="intersects")[::-1] if len(footprints) else ([], [])
    )
    order = np.lexsort((record_pos, aoi_pos)) if len(aoi_pos) else []
    planner = _PairPlanner(aois.geometry, own_crs, all_touched)
    pairs, planned = [], []
    for k in order:
        record = records[record_pos[k]]
        groups = planner.plan(aoi_pos[k], record.crs, [s for s in record.bands if s is not None])
        if groups:
            pairs.append((aoi_pos[k], record, groups))
            planned += groups
    # Tiles stream in file by file and are dropped once their chips are cut, so the decoded tiles of a
    # partition are never all held at once.
    filled: list = [None] * len(planned)
    wanted = [(group.read, group.mask_read) for group in planned]
    for index, data, mask in iter_masked_windows(wanted, storage_options=storage_options, config=config):
        group = planned[index]
        keep = valid_pixels(data, group.header.nodata, group.read.codec, mask) & group.inside
        filled[index] = np.where(keep, data, band_fill(group.header)).astype(data.dtype, copy=False)
    chips = iter(filled)  # in the order of the groups of ``pairs``
    rows = []
    for aoi_row, record, groups in pairs:
        for group in groups:
            chip = next(chips)
            for i, band in enumerate(group.bands):
                rows.append(
                    {
                        AOI_INDEX: aois.index[aoi_row],
                        "record_id": record.record_id,
                        "datetime": record.datetime,
                        "band": band,
                        "data": chip[i],
                        "transform": group.transform,
                        "crs": record.crs,
                    }
                )
    return pd.DataFrame(rows, columns=[AOI_INDEX, *CHIP_COLUMNS])


def _with_aoi_columns(chips: pd.DataFrame, aois: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Chips joined with their AOI's columns; the AOI geometry in CRS84."""
    if not aois.crs.equals("OGC:CRS84"):
        aois = aois.to_crs("OGC:CRS84")
    joined = chips.join(aois, on=AOI_INDEX)
    return gpd.GeoDataFrame(joined, geometry=aois.geometry.name, crs=aois.crs)


def chips_frame(
    frame,
    aois: gpd.GeoDataFrame,
    bands: list[str],
    *,
    all_touched: bool = False,
    storage_options: dict | None = None,
    config: IOConfig | None = None,
    errors: str = "warn",
):
    """A lazy dask-geopandas frame of chips: one row per (record, AOI, band), see ``Collection.get_gdf``."""
    clash = sorted(set(aois.columns) & {AOI_INDEX, *CHIP_COLUMNS})
    if clash:
        raise PlanError(f"AOI column(s) {clash} clash with chip columns; rename them first")
    empty = pd.DataFrame({c: pd.Series(dtype=object) for c in [AOI_INDEX, *CHIP_COLUMNS]})
    empty["datetime"] = pd.Series(dtype="datetime64[us, UTC]")
    empty[AOI_INDEX] = pd.Series(dtype="int64")
    meta = _with_aoi_columns(empty, aois.iloc[:0])
    shared = dask.delayed(aois, pure=True)

    def run(part, aois_value):
        chips = chips_partition(part, aois_value, bands, all_touched, storage_options, config, errors)
        return _with_aoi_columns(chips.astype({AOI_INDEX: "int64"}), aois_value)

    out = frame.map_partitions(run, shared, meta=meta, align_dataframes=False)
    return dask_geopandas.from_dask_dataframe(out, geometry=aois.geometry.name)


def _sort_codes(values: pd.Series) -> np.ndarray:
    """Integer codes ordering ``values`` as ``sort_values`` does (missing values last)."""
    codes, uniques = pd.factorize(values, sort=True)
    return np.where(codes < 0, len(uniques), codes)


def stack_chips(chips: pd.DataFrame, bands: list[str]) -> np.ndarray:
    """Chips as one array: ``[N, C, H, W]`` (``[N, H, W]`` for one band), N by AOI, then datetime, then id."""
    if chips.empty:
        raise PlanError("no record intersects the AOIs: nothing to read")
    keys = np.column_stack([_sort_codes(chips[c]) for c in (AOI_INDEX, "datetime", "record_id")])
    order = np.lexsort(keys.T[::-1])
    keys = keys[order]
    starts = np.flatnonzero(np.r_[True, (keys[1:] != keys[:-1]).any(axis=1)])
    ends = np.r_[starts[1:], len(order)]
    band_of = chips["band"].to_numpy(object)[order]
    data_of = chips["data"].to_numpy(object)[order]
    stacks = []
    for start, end in zip(starts, ends, strict=True):
        by_band = dict(zip(band_of[start:end], data_of[start:end], strict=True))
        if any(b not in by_band for b in bands):
            continue  # a band without pixels here (no header, or outside its grid)
        stacks.append([by_band[b] for b in bands])
    if not stacks:
        raise PlanError(f"no record has pixels of every band {bands} in the AOIs: nothing to read")
    shapes = {a.shape for chip in stacks for a in chip}
    if len(shapes) > 1:
        raise PlanError(
            f"chips have different shapes {sorted(shapes)[:4]} (AOIs of different sizes, or bands of different"
            " resolutions): use get_gdf for ragged chips, or get_xarray(crs=..., resolution=...) for one grid"
        )
    (shape,) = shapes
    dtype = np.result_type(*{a.dtype for chip in stacks for a in chip})
    array = np.empty((len(stacks), len(bands), *shape), dtype)
    for n, chip in enumerate(stacks):
        for c, data in enumerate(chip):
            array[n, c] = data
    return array[:, 0] if len(bands) == 1 else array
