"""Choosing the output grid of a stack read, and where each record lands on it. Pure: headers only."""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import shapely
from pyproj import CRS

from ..errors import PlanError
from ..geo.aoi import reproject_geometry
from ..geo.grid import Grid
from ..geo.warp import transformer
from .records import RecordSource

# Points per raster edge when a record's outline is carried into another CRS: its bounds there are
# then right to a small fraction of a pixel for any UTM/geographic pair.
_EDGE_POINTS = 21


@functools.lru_cache(maxsize=256)
def crs_key(crs: str) -> str:
    """A canonical string for a CRS: ``"EPSG:n"`` when it is one, else WKT2."""
    parsed = CRS.from_user_input(crs)
    epsg = parsed.to_epsg(min_confidence=100)
    return f"EPSG:{epsg}" if epsg is not None else parsed.to_wkt()


def raster_outline(transform, width: int, height: int) -> np.ndarray:
    """Points along a raster's outline, (n, 2), in its own CRS."""
    t = np.linspace(0.0, 1.0, _EDGE_POINTS)
    cols = np.concatenate([t * width, np.full_like(t, width), (1 - t) * width, np.zeros_like(t)])
    rows = np.concatenate([np.zeros_like(t), t * height, np.full_like(t, height), (1 - t) * height])
    a, b, c, d, e, f = transform
    return np.column_stack([a * cols + b * rows + c, d * cols + e * rows + f])


def bounds_in(points: np.ndarray, src_crs: str, dst_crs: str) -> tuple[float, float, float, float] | None:
    """Bounds of ``points`` carried from ``src_crs`` to ``dst_crs`` (None when none of them maps)."""
    if crs_key(src_crs) != crs_key(dst_crs):
        tr = transformer(src_crs, dst_crs)
        x, y = tr.transform(points[:, 0], points[:, 1], errcheck=False)
        points = np.column_stack([x, y])
    ok = np.isfinite(points).all(axis=1)
    if not ok.any():
        return None
    p = points[ok]
    return (float(p[:, 0].min()), float(p[:, 1].min()), float(p[:, 0].max()), float(p[:, 1].max()))


def _finest_resolution(records: list[RecordSource], crs: str) -> float:
    best = math.inf
    for record in records:
        if crs_key(record.crs) != crs:
            continue
        for source in record.bands:
            if source is not None and source.header.geo.transform is not None:
                a, _, _, _, e, _ = source.header.geo.transform
                best = min(best, abs(a), abs(e))
    return best


def _aligned(records: list[RecordSource]) -> Grid | None:
    """A grid every record's finest band lies on without resampling, when they share one."""
    crs = {crs_key(r.crs) for r in records}
    if len(crs) != 1:
        return None
    (key,) = crs
    res = _finest_resolution(records, key)
    lattice = None
    for record in records:
        for source in record.bands:
            if source is None or source.header.geo.transform is None:
                continue
            a, b, c, d, e, f = source.header.geo.transform
            if b or d:
                return None
            if min(abs(a), abs(e)) != res:
                continue
            if lattice is None:
                lattice = (a, e, c, f)
                continue
            la, le, lc, lf = lattice
            if a != la or e != le or not _whole(c - lc, a) or not _whole(f - lf, e):
                return None
    if lattice is None:
        return None
    a, e, c, f = lattice
    return Grid(key, (a, 0.0, c, 0.0, e, f), 1, 1)


def pixel_offset(grid: Grid, crs: str, transform) -> tuple[int, int] | None:
    """(row, col) of a raster's top-left pixel on ``grid``'s lattice, None unless it lies exactly on it."""
    a, b, c, d, e, f = transform
    ga, gb, gc, gd, ge, gf = grid.transform
    if b or d or gb or gd or a != ga or e != ge or crs_key(crs) != crs_key(grid.crs):
        return None
    if not (_whole(c - gc, a) and _whole(f - gf, e)):
        return None
    return round((f - gf) / e), round((c - gc) / a)


def _whole(distance: float, step: float) -> bool:
    ratio = distance / step
    return abs(ratio - round(ratio)) < 1e-6


def _snap_to(lattice: Grid, bounds: tuple[float, float, float, float]) -> Grid:
    """The part of ``lattice``'s pixel lattice covering ``bounds``, snapped outward to whole pixels."""
    a, _, c, _, e, f = lattice.transform
    left, bottom, right, top = bounds
    xs = sorted(((left - c) / a, (right - c) / a))
    ys = sorted(((top - f) / e, (bottom - f) / e))
    col0, col1 = math.floor(xs[0] + 1e-9), math.ceil(xs[1] - 1e-9)
    row0, row1 = math.floor(ys[0] + 1e-9), math.ceil(ys[1] - 1e-9)
    width, height = max(col1 - col0, 1), max(row1 - row0, 1)
    return Grid(lattice.crs, (a, 0.0, c + col0 * a, 0.0, e, f + row0 * e), width, height)


def _coverage_crs(records: list[RecordSource], aoi: shapely.Geometry | None) -> str:
    """The CRS whose records cover most of the AOI (or of the records' union), by area in CRS84."""
    areas: dict[str, float] = {}
    for record in records:
        first = next((s for s in record.bands if s is not None and s.header.geo.transform), None)
        if first is None:
            continue
        outline = shapely.Polygon(
            raster_outline(first.header.geo.transform, first.header.width, first.header.height)
        )
        footprint = reproject_geometry(outline, record.crs, "OGC:CRS84")
        covered = footprint if aoi is None else shapely.intersection(footprint, aoi)
        key = crs_key(record.crs)
        areas[key] = areas.get(key, 0.0) + shapely.area(covered)
    if not areas:
        raise PlanError("no record has a georeferenced header for the requested bands")
    return max(sorted(areas), key=lambda k: areas[k])


def choose_grid(
    records: list[RecordSource],
    aoi: shapely.Geometry | None,
    *,
    crs: str | None = None,
    resolution: float | tuple[float, float] | None = None,
) -> Grid:
    """The output grid (DESIGN.md §4 and the lazy-reads issue).

    - ``crs`` and ``resolution`` given: the AOI's bounds in that CRS, snapped outward to whole pixels on
      the lattice of multiples of the resolution (as ``gdalwarp -tap``).
    - Neither given, and every record's finest band lies on one lattice in one CRS: that native grid
      (no resampling at all), over the AOI (or the records' union without one).
    - Otherwise: the CRS covering most of the AOI and the finest resolution among the bands there, with
      a warning saying what was chosen.
    """
    if crs is not None and resolution is None:
        raise PlanError("give resolution= with crs= (the pixel size in that CRS's units)")
    if not records:
        raise PlanError("no record overlaps the request: nothing to read")
    if crs is not None:
        key = crs_key(crs)
    else:
        lattice = _aligned(records) if resolution is None else None
        if lattice is not None:
            return _snap_to(lattice, _area_bounds(records, aoi, lattice.crs))
        key = _coverage_crs(records, aoi)
    if resolution is None:
        resolution = _finest_resolution(records, key)
        if not math.isfinite(resolution):
            raise PlanError(f"no record is in {key}: pass resolution= for that CRS")
        warnings.warn(
            f"records are on different grids; reading onto {key} at {resolution:g} CRS units per pixel"
            " (pass crs= and resolution= to choose)",
            stacklevel=3,
        )
    return Grid.from_bounds(key, _area_bounds(records, aoi, key), resolution)


def _area_bounds(records: list[RecordSource], aoi: shapely.Geometry | None, crs: str) -> tuple:
    """Bounds in ``crs`` of the AOI, or of the union of the records' rasters without an AOI."""
    if aoi is not None:
        west, south, east, north = aoi.bounds
        step = max(east - west, north - south) / 64
        points = shapely.get_coordinates(shapely.segmentize(aoi, step) if step > 0 else aoi)
        box = bounds_in(points, "OGC:CRS84", crs)
        if box is None:
            raise PlanError(f"the AOI has no position in {crs}")
        return box
    boxes = []
    for record in records:
        for source in record.bands:
            if source is not None and source.header.geo.transform is not None:
                h = source.header
                box = bounds_in(raster_outline(h.geo.transform, h.width, h.height), record.crs, crs)
                if box is not None:
                    boxes.append(box)
    if not boxes:
        raise PlanError("no record has a georeferenced header for the requested bands")
    b = np.asarray(boxes)
    return (b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max())
