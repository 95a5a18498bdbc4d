"""Polygon masks on a raster grid, pixel for pixel what GDAL's rasterizer burns.

``geometry_mask`` reproduces ``rasterio.features.geometry_mask(..., invert=True)``, i.e. GDAL's
``GDALRasterizeGeometries`` (alg/gdalrasterize.cpp, alg/llrasterize.cpp) with the default REPLACE merge.
The facts of GDAL's behaviour it follows (learnt from GDAL 3.10's sources and checked against it):

* Geometries go to pixel space with GDAL's inverse geotransform (for a transform without rotation
  ``col = -c/a + x * (1/a)``, ``row = -f/e + y * (1/e)``, evaluated in that order), not with ``~Affine``.
* Before that, each ring is put in clockwise order (in map coordinates) by OGR's ``isClockwise`` rule:
  the lowest-rightmost vertex and its neighbours, or the shoelace sum when that vertex is ambiguous.
* Every Polygon is burnt on its own (rasterio splits MultiPolygons and GeometryCollections, and GDAL
  burns the parts of a collection one by one), so overlapping parts are unioned, never cancelled.
* Fill: scanlines through pixel centres (``row + 0.5``) over rows ``int(min y) .. int(max y)`` (C
  truncation) clipped to the raster; an edge counts on a scanline when ``y_low <= row + 0.5 < y_high``;
  its crossing ``x`` becomes ``int(floor(x + 0.5))``; crossings of all rings of the polygon are sorted
  and paired (even-odd) and each pair ``(x0, x1)`` burns columns ``x0 .. x1 - 1``. A horizontal edge lying
  exactly on a scanline burns ``int(floor(x + 0.5))`` between its ends as well, but only when it runs
  towards smaller x in the (clockwise) ring order: a bottom edge on a north-up grid. On a south-up grid
  that is a top edge (already filled), so there GDAL leaves out the row of a bottom edge lying exactly on
  pixel centres; the mask does the same.
* ``all_touched``: the fill, plus every pixel that GDAL's all-touched line walker visits along every
  ring: near-vertical / near-horizontal segments (same pixel column / row at both ends, or within 0.01
  pixel) burn a whole column / row span (ends at ``floor(end - 1e-4)``) and are skipped when both ends lie
  within 1e-4 of a pixel boundary; other segments are clipped to the raster and walked pixel boundary by
  pixel boundary with GDAL's floating-point steps (including its 1e-9 nudges).
* Every ``(int)`` cast is C's on x86-64: truncation, and ``INT_MIN`` when the value does not fit in 32
  bits. So pixel coordinates beyond +-2**31 upset GDAL (a polygon reaching more than 2**31 rows below
  the grid origin burns nothing at all); the mask reproduces that too.

Pure numpy and shapely: no I/O, no GDAL.
"""

from __future__ import annotations

import numpy as np
import shapely

from ..errors import PlanError
from .aoi import _as_affine, aoi_polygons

_INT_MIN = -(2**31)
_INT_MAX = 2**31 - 1
_EPS_INTERSECT_ONLY = 1e-4  # GDAL's EPSILON_INTERSECT_ONLY (all-touched segments on pixel boundaries)
_AXIS_ALIGNED = 0.01  # GDAL treats segments closer than this to vertical / horizontal as such
_MIN_STEP = 1e-9  # the smallest step GDAL's all-touched walker takes across a row boundary
_ORIENTATION_EPS = 1e-5  # OGR isClockwise: neighbours this close to the pivot make it unusable


def geometry_mask(geometries, transform, shape: tuple[int, int], *, all_touched: bool = False) -> np.ndarray:
    """A boolean mask of the pixels of a grid that polygons cover, exactly as GDAL rasterizes them.

    True marks a pixel INSIDE the geometries: the opposite polarity of
    ``rasterio.features.geometry_mask``'s default, equal to ``geometry_mask(..., invert=True)``.

    Parameters
    ----------
    geometries : shapely geometry, GeoJSON-like mapping, or iterable of those
        Polygons, MultiPolygons, GeometryCollections of them, in the grid's CRS. The mask is the union of
        all of them; each polygon's own rings (exterior and holes) combine even-odd. Empty geometries
        contribute nothing.
    transform : affine.Affine or sequence of 6 floats
        Pixel-corner transform of the grid in rasterio order ``(a, b, c, d, e, f)``. North-up (``e < 0``),
        south-up (``e > 0``), any pixel size; rotated transforms are handled as GDAL does.
    shape : (int, int)
        ``(rows, cols)`` of the grid.
    all_touched : bool
        False: pixels whose centre GDAL's scanline puts inside. True: also every pixel GDAL's all-touched
        line walker visits along the rings.

    Returns
    -------
    numpy.ndarray of bool, shape ``(rows, cols)``

    Raises
    ------
    PlanError
        For points or lines (use ``sample_points``), non-finite coordinates, an empty grid, or a transform
        GDAL cannot invert.
    """
    try:
        height, width = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise PlanError(f"shape must be (rows, cols), got {shape!r}") from None
    if height <= 0 or width <= 0:
        raise PlanError(f"shape must be positive, got {shape!r}")
    polygons = aoi_polygons(geometries)
    mask = np.zeros((height, width), dtype=bool)
    if not polygons:
        return mask
    inverse = gdal_inverse_geotransform(transform)
    px, py, ring_of_vertex, poly_of_ring = _pixel_rings(polygons, inverse)
    # Edges join consecutive vertices of a (closed) ring.
    start = np.flatnonzero(ring_of_vertex[:-1] == ring_of_vertex[1:])
    edges = (px[start], py[start], px[start + 1], py[start + 1])
    edge_poly = poly_of_ring[ring_of_vertex[start]]
    vertex_poly = poly_of_ring[ring_of_vertex]

    spans = _fill_spans(edges, edge_poly, py, vertex_poly, len(polygons), width, height)
    _burn_spans(mask, *spans)
    if all_touched:
        rows, cols = _touched_pixels(*edges, width, height)
        mask[rows, cols] = True
    return mask


def gdal_inverse_geotransform(transform) -> tuple[float, float, float, float, float, float]:
    """GDAL's inverse of a rasterio-order transform, as GDAL computes it (``GDALInvGeoTransform``).

    Returns the six coefficients ``(g0, g1, g2, g3, g4, g5)`` with ``col = g0 + x * g1 + y * g2`` and
    ``row = g3 + x * g4 + y * g5``. Without rotation GDAL inverts term by term, which is not bit-equal to
    ``~Affine``; that difference decides pixels whose centre lies exactly on an edge.
    """
    a, b, c, d, e, f = (float(v) for v in _as_affine(transform)[:6])
    if not all(np.isfinite([a, b, c, d, e, f])):
        raise PlanError(f"transform must be finite, got {transform!r}")
    # GDAL order: (c, a, b, f, d, e).
    if b == 0.0 and d == 0.0 and a != 0.0 and e != 0.0:
        return (-c / a, 1.0 / a, 0.0, -f / e, 0.0, 1.0 / e)
    det = a * e - b * d
    magnitude = max(max(abs(a), abs(b)), max(abs(d), abs(e)))
    if abs(det) <= 1e-10 * magnitude * magnitude:
        raise PlanError(f"transform {transform!r} cannot be inverted")
    inv_det = 1.0 / det
    return (
        (b * f - c * e) * inv_det,
        e * inv_det,
        -b * inv_det,
        (-a * f + c * d) * inv_det,
        -d * inv_det,
        a * inv_det,
    )


def _c_int(values: np.ndarray) -> np.ndarray:
    """C's ``(int)`` cast of doubles on x86-64: truncation toward zero, INT_MIN when out of range or NaN."""
    t = np.trunc(values)
    ok = (t >= _INT_MIN) & (t <= _INT_MAX)
    return np.where(ok, t, float(_INT_MIN)).astype(np.int64)


def _pixel_rings(polygons, inverse):
    """Pixel coordinates of all rings, each in GDAL's vertex order, with vertex -> ring -> polygon indices."""
    rings, poly_of_ring = shapely.get_rings(np.asarray(polygons, dtype=object), return_index=True)
    xy, ring_of_vertex = shapely.get_coordinates(rings, return_index=True)
    if not np.isfinite(xy).all():
        raise PlanError("AOI coordinates must be finite")
    counts = np.bincount(ring_of_vertex, minlength=len(rings))
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    clockwise = _ogr_is_clockwise(xy[:, 0], xy[:, 1], offsets, counts)
    # GDAL burns rings in clockwise order: reverse the others.
    local = np.arange(len(xy)) - offsets[ring_of_vertex]
    flip = ~clockwise[ring_of_vertex]
    order = np.where(flip, offsets[ring_of_vertex] + counts[ring_of_vertex] - 1 - local, np.arange(len(xy)))
    x, y = xy[order, 0], xy[order, 1]
    g0, g1, g2, g3, g4, g5 = inverse
    # GDAL first applies the identity "source" geotransform (exact), then the inverse one, left to right.
    px = g0 + x * g1 + y * g2
    py = g3 + x * g4 + y * g5
    return px, py, ring_of_vertex, poly_of_ring


def _ogr_is_clockwise(x: np.ndarray, y: np.ndarray, offsets: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """OGR's ``isClockwise`` of each closed ring (map coordinates), vectorised over rings.

    The pivot is the first lowest-rightmost vertex (the closing vertex excluded); the sign of the cross
    product with its neighbours decides, unless the pivot repeats, a neighbour is within 1e-5 of it, or
    the product is zero: then the sign of the shoelace sum (summed in OGR's order) decides.
    """
    n_rings = len(counts)
    result = np.ones(n_rings, dtype=bool)  # OGR: fewer than 3 points count as clockwise
    usable = np.flatnonzero(counts >= 3)
    if not len(usable):
        return result
    # Candidate vertices: indices 0 .. n-2 of each ring.
    ring_of = np.repeat(usable, counts[usable] - 1)
    first = np.concatenate([[0], np.cumsum(counts[usable] - 1)[:-1]])
    local = np.arange(len(ring_of)) - np.repeat(first, counts[usable] - 1)
    vid = offsets[ring_of] + local
    order = np.lexsort((local, -x[vid], y[vid], ring_of))
    head = np.concatenate([[0], np.cumsum(counts[usable] - 1)[:-1]])  # first sorted slot of each ring
    pivot = vid[order[head]]
    has_second = (counts[usable] - 1) >= 2
    second = vid[order[np.where(has_second, head + 1, head)]]
    repeated = has_second & (x[second] == x[pivot]) & (y[second] == y[pivot])

    off, n = offsets[usable], counts[usable]
    v = pivot - off
    prev = off + np.where(v == 0, n - 2, v - 1)
    nxt = off + np.where(v + 1 >= n - 1, 0, v + 1)
    dx0, dy0 = x[prev] - x[pivot], y[prev] - y[pivot]
    dx1, dy1 = x[nxt] - x[pivot], y[nxt] - y[pivot]
    near_prev = (np.abs(dx0) < _ORIENTATION_EPS) & (np.abs(dy0) < _ORIENTATION_EPS)
    near_next = (np.abs(dx1) < _ORIENTATION_EPS) & (np.abs(dy1) < _ORIENTATION_EPS)
    cross = dx1 * dy0 - dx0 * dy1
    fallback = repeated | near_prev | near_next | (cross == 0)
    result[usable] = cross < 0
    for k in np.flatnonzero(fallback):
        result[usable[k]] = _shoelace_sum(x[off[k] : off[k] + n[k]], y[off[k] : off[k] + n[k]]) < 0
    return result


def _shoelace_sum(x: np.ndarray, y: np.ndarray) -> float:
    """OGR's fallback orientation sum for a closed ring, accumulated in OGR's order (cumsum is sequential)."""
    terms = np.empty(len(x))
    terms[0] = x[0] * (y[1] - y[0])
    terms[1:-1] = x[1:-1] * (y[2:] - y[:-2])
    terms[-1] = x[-1] * (y[0] - y[-2])
    return float(np.cumsum(terms)[-1])


def _first_row_at_or_above(v: np.ndarray) -> np.ndarray:
    """Smallest integer r (as float) with r + 0.5 >= v, exactly."""
    r = np.ceil(v - 0.5)
    r = np.where((r - 1.0) + 0.5 >= v, r - 1.0, r)
    return np.where(r + 0.5 < v, r + 1.0, r)


def _last_row_below(v: np.ndarray) -> np.ndarray:
    """Largest integer r (as float) with r + 0.5 < v, exactly."""
    r = np.ceil(v - 0.5) - 1.0
    r = np.where((r + 1.0) + 0.5 < v, r + 1.0, r)
    return np.where(r + 0.5 >= v, r - 1.0, r)


def _fill_spans(edges, edge_poly, vertex_y, vertex_poly, n_polys, width, height):
    """Scanline fill of every polygon: (rows, first cols, last cols) of the spans GDAL burns (unclipped)."""
    x1, y1, x2, y2 = edges
    # Rows GDAL scans for each polygon: (int) of its min / max y, clipped to the raster.
    lo_y = np.full(n_polys, np.inf)
    hi_y = np.full(n_polys, -np.inf)
    np.minimum.at(lo_y, vertex_poly, vertex_y)
    np.maximum.at(hi_y, vertex_poly, vertex_y)
    min_row = np.maximum(_c_int(lo_y), 0)
    max_row = _c_int(hi_y)
    max_row = np.where(max_row >= height, height - 1, max_row)
    first_row, last_row = min_row[edge_poly].astype(float), max_row[edge_poly].astype(float)

    # Crossings of non-horizontal edges: rows with y_low <= row + 0.5 < y_high.
    slanted = np.flatnonzero(y1 != y2)
    up = y1[slanted] < y2[slanted]
    ylo = np.where(up, y1[slanted], y2[slanted])
    yhi = np.where(up, y2[slanted], y1[slanted])
    xlo = np.where(up, x1[slanted], x2[slanted])
    xhi = np.where(up, x2[slanted], x1[slanted])
    r0 = np.maximum(_first_row_at_or_above(ylo), first_row[slanted])
    r1 = np.minimum(_last_row_below(yhi), last_row[slanted])
    n = np.maximum(r1 - r0 + 1.0, 0.0).astype(np.int64)
    k = np.repeat(np.arange(len(slanted)), n)
    rows = r0[k].astype(np.int64) + (np.arange(len(k)) - np.repeat(np.cumsum(n) - n, n))
    dy = rows + 0.5
    crossing = (dy - ylo[k]) * (xhi[k] - xlo[k]) / (yhi[k] - ylo[k]) + xlo[k]
    xi = _c_int(np.floor(crossing + 0.5))
    poly = edge_poly[slanted][k]
    order = np.lexsort((xi, rows, poly))
    xs, rs = xi[order], rows[order]
    # Each ring crosses a scanline an even number of times, so pairs never straddle two scanlines.
    span_rows, span_x0, span_x1 = rs[0::2], xs[0::2], xs[1::2]

    # Horizontal edges exactly on a scanline, running towards smaller x in GDAL's ring order.
    flat = np.flatnonzero((y1 == y2) & (x1 > x2))
    row_f = y1[flat] - 0.5
    on_line = (np.floor(row_f) == row_f) & (row_f >= first_row[flat]) & (row_f <= last_row[flat])
    flat, row_f = flat[on_line], row_f[on_line]
    h_rows = row_f.astype(np.int64)
    h_x0 = _c_int(np.floor(x2[flat] + 0.5))
    h_x1 = _c_int(np.floor(x1[flat] + 0.5))
    return (
        np.concatenate([span_rows, h_rows]),
        np.concatenate([span_x0, h_x0]),
        np.concatenate([span_x1, h_x1]) - 1,
    )


def _burn_spans(mask: np.ndarray, rows: np.ndarray, c0: np.ndarray, c1: np.ndarray) -> None:
    """Set ``mask[row, c0:c1 + 1]`` for every span, clipped to the mask (a difference array per row)."""
    height, width = mask.shape
    c0 = np.maximum(c0, 0)
    c1 = np.minimum(c1, width - 1)
    keep = (c0 <= c1) & (rows >= 0) & (rows < height)
    rows, c0, c1 = rows[keep], c0[keep], c1[keep]
    if not len(rows):
        return
    r_lo, r_hi = int(rows.min()), int(rows.max()) + 1
    diff = np.zeros((r_hi - r_lo, width + 1), dtype=np.int32)
    np.add.at(diff, (rows - r_lo, c0), 1)
    np.add.at(diff, (rows - r_lo, c1 + 1), -1)
    mask[r_lo:r_hi] |= np.cumsum(diff[:, :width], axis=1) > 0


def _near_integer(v: np.ndarray) -> np.ndarray:
    return np.abs(v - np.rint(v)) < _EPS_INTERSECT_ONLY


def _touched_pixels(x, y, x_end, y_end, width, height):
    """(rows, cols) of every pixel GDAL's all-touched line walker burns along the given segments."""
    off = (
        ((y < 0) & (y_end < 0))
        | ((y > height) & (y_end > height))
        | ((x < 0) & (x_end < 0))
        | ((x > width) & (x_end > width))
    )
    keep = ~off
    x, y, x_end, y_end = x[keep], y[keep], x_end[keep], y_end[keep]
    # Proceed left to right.
    swap = x > x_end
    x, x_end = np.where(swap, x_end, x), np.where(swap, x, x_end)
    y, y_end = np.where(swap, y_end, y), np.where(swap, y, y_end)

    vertical = (np.floor(x) == np.floor(x_end)) | (np.abs(x - x_end) < _AXIS_ALIGNED)
    horizontal = ~vertical & ((np.floor(y) == np.floor(y_end)) | (np.abs(y - y_end) < _AXIS_ALIGNED))
    general = ~(vertical | horizontal)
    rows_out, cols_out = [], []

    # Near-vertical: one column, rows floor(y_min) .. floor(y_max - eps); skipped on a column boundary.
    v = vertical & ~(_near_integer(x) & _near_integer(x_end))
    col = _c_int(np.floor(x_end[v]))
    y_lo, y_hi = np.minimum(y[v], y_end[v]), np.maximum(y[v], y_end[v])
    r0 = np.maximum(_c_int(np.floor(y_lo)), 0)
    r1 = np.minimum(_c_int(np.floor(y_hi - _EPS_INTERSECT_ONLY)), height - 1)
    ok = (col >= 0) & (col < width)
    rr, cc = _expand(r0[ok], r1[ok], col[ok])
    rows_out.append(rr)
    cols_out.append(cc)

    # Near-horizontal: the row of the left end, cols floor(x) .. floor(x_end - eps); skipped on a row boundary.
    h = horizontal & ~(_near_integer(y) & _near_integer(y_end))
    row = _c_int(np.floor(y[h]))
    c0 = np.maximum(_c_int(np.floor(x[h])), 0)
    c1 = np.minimum(_c_int(np.floor(x_end[h] - _EPS_INTERSECT_ONLY)), width - 1)
    ok = (row >= 0) & (row < height)
    cc, rr = _expand(c0[ok], c1[ok], row[ok])
    rows_out.append(rr)
    cols_out.append(cc)

    g = np.flatnonzero(general)
    rr, cc = _walk(x[g], y[g], x_end[g], y_end[g], width, height)
    rows_out.append(rr)
    cols_out.append(cc)
    return np.concatenate(rows_out), np.concatenate(cols_out)


def _expand(start: np.ndarray, stop: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (i, other) with start <= i <= stop, for each span."""
    n = np.maximum(stop - start + 1, 0)
    k = np.repeat(np.arange(len(n)), n)
    i = start[k] + (np.arange(len(k)) - np.repeat(np.cumsum(n) - n, n))
    return i, other[k]


def _walk(x, y, x_end, y_end, width, height):
    """GDAL's all-touched walk of sloped segments (left to right), all segments in lockstep.

    Each step burns the current pixel (when its row is inside the raster), then moves to the next
    column boundary if the row does not change before it, otherwise just across the next row boundary
    (at least 1e-9). A segment stops at its (clipped) end, or as soon as it has left the raster through
    the top or bottom, after which GDAL's walk can burn nothing more.
    """
    W, H = float(width), float(height)
    slope = (y_end - y) / (x_end - x)
    # Clip in x.
    m = x_end > W
    y_end = np.where(m, y_end - (x_end - W) * slope, y_end)
    x_end = np.where(m, W, x_end)
    m = x < 0.0
    y = np.where(m, y + (0.0 - x) * slope, y)
    x = np.where(m, 0.0, x)
    # Clip in y (GDAL's own arithmetic, including how it moves the end).
    rising = y_end > y
    m = rising & (y < 0.0)
    x = np.where(m, x + (0.0 - y) / slope, x)
    y = np.where(m, 0.0, y)
    m = rising & (y_end >= H)
    x_end = np.where(m, x_end + (y_end - H) / slope, x_end)
    x_end = np.where(m & (x_end > W), W, x_end)
    m = ~rising & (y >= H)
    x = np.where(m, x + (H - y) / slope, x)
    y = np.where(m, H, y)
    m = ~rising & (y_end < 0.0)
    x_end = np.where(m, x_end - (y_end - 0.0) / slope, x_end)

    rising_slope = slope > 0  # slope is never 0 here, and y moves monotonically in its direction
    # GDAL compares rows as C ints; that only differs from comparing floors when |y| nears 2**31.
    wide = bool(len(y)) and not (np.abs(y).max() < 2.0**29 and np.abs(y_end).max() < 2.0**29)
    rows_out, cols_out = [], []
    limit = 4 * (width + height) + 64
    steps = 0
    while len(x):
        fy = np.floor(y)
        # Done: outside GDAL's loop bounds, or left the raster through the top or bottom (no pixel can burn any more).
        dead = (x >= x_end) | (x < 0.0) | np.where(rising_slope, fy >= H, fy < 0.0)
        if dead.any():
            keep = ~dead
            x, y, x_end, slope, rising_slope, fy = (
                x[keep],
                y[keep],
                x_end[keep],
                slope[keep],
                rising_slope[keep],
                fy[keep],
            )
            if not len(x):
                break
        steps += 1
        if steps > limit:
            raise PlanError("all-touched rasterization did not converge (degenerate segment)")
        inside = (fy >= 0.0) & (fy < H)
        rows_out.append(fy[inside])
        cols_out.append(np.floor(x[inside]))

        step_x = np.floor(x + 1.0) - x
        step_y = step_x * slope
        next_fy = np.floor(y + step_y)
        if wide:
            row, next_row = _c_int(fy).astype(np.float64), _c_int(next_fy).astype(np.float64)
        else:
            row, next_row = fy, next_fy
        cross = next_row != row
        if cross.any():
            # Only step across the next row boundary (by at least 1e-9).
            across = np.where(
                rising_slope, np.maximum((row + 1.0) - y, _MIN_STEP), np.minimum(row - y, -_MIN_STEP)
            )
            step_y = np.where(cross, across, step_y)
            step_x = np.where(cross, step_y / slope, step_x)
        x = x + step_x
        y = y + step_y
    if not rows_out:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    rows, cols = _c_int(np.concatenate(rows_out)), _c_int(np.concatenate(cols_out))
    # GDAL does not check the column here: when its clipping arithmetic lets a degenerate segment run past
    # the right edge, the pixel lands further on in its row-major buffer. Emulated while inside the buffer.
    flat = rows * width + cols
    flat = flat[flat < width * height]
    return flat // width, flat % width
