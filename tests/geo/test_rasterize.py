"""geometry_mask against GDAL's rasterizer: rasterio.features.geometry_mask(..., invert=True) is the oracle.

Every comparison is bit-for-bit, with and without all_touched. Shapes are built in pixel space (where the
hard cases live: vertices on pixel centres, edges on pixel edges or centres, segments along pixel
boundaries) and mapped to map coordinates with the grid's transform.
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import shapely
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.features import geometry_mask as rio_geometry_mask

from rasteret_dask.errors import PlanError
from rasteret_dask.geo.rasterize import geometry_mask

# ---------------------------------------------------------------------------------------------- helpers


def assert_same_as_gdal(geoms, transform, shape) -> None:
    for all_touched in (False, True):
        expected = rio_geometry_mask(geoms, shape, transform, all_touched=all_touched, invert=True)
        got = geometry_mask(geoms, transform, shape, all_touched=all_touched)
        assert got.dtype == np.bool_ and got.shape == tuple(shape)
        if not np.array_equal(got, expected):
            diff = np.argwhere(got != expected)
            pytest.fail(
                f"all_touched={all_touched}: {len(diff)} pixels differ from GDAL, first (row, col): "
                f"{diff[:8].tolist()}; transform={tuple(transform)[:6]} shape={shape} "
                f"geoms={[g.wkt[:500] for g in geoms]}"
            )


def to_map(transform: Affine, pixel_xy) -> np.ndarray:
    """Pixel (col, row) coordinates -> map coordinates with ``transform``."""
    xy = np.asarray(pixel_xy, dtype=np.float64).reshape(-1, 2)
    a, b, c, d, e, f = tuple(transform)[:6]
    return np.column_stack([a * xy[:, 0] + b * xy[:, 1] + c, d * xy[:, 0] + e * xy[:, 1] + f])


def polygon_on(transform, shell, holes=()) -> shapely.Polygon:
    return shapely.Polygon(to_map(transform, shell), [to_map(transform, h) for h in holes])


# ------------------------------------------------------------------------------------------- strategies

SIZES = [1.0, 0.5, 2.0, 0.25, 10.0, 30.0, 0.3, 1 / 3, 8.983152841195214e-05]
ORIGINS = [0.0, 100.0, -37.5, 0.1, 500000.0, 4_000_000.0, -12.25, 3.0000001]


@st.composite
def grids(draw):
    """(transform, (rows, cols)): north-up or south-up, square or not, various sizes and origins."""
    rows, cols = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    a = draw(st.sampled_from(SIZES))
    e = a * draw(st.sampled_from([1.0, 1.0, 0.5, 2.0, 0.7, 3.0]))
    e = e if draw(st.booleans()) else -e  # south-up or north-up
    transform = Affine(a, 0.0, draw(st.sampled_from(ORIGINS)), 0.0, e, draw(st.sampled_from(ORIGINS)))
    return transform, (rows, cols)


def coords(lo: float, hi: float):
    """A pixel coordinate: on quarter pixels (edges, centres) more often than not, else anywhere."""
    return st.one_of(
        st.integers(math.floor(4 * lo), math.ceil(4 * hi)).map(lambda k: k / 4),
        st.integers(math.floor(lo), math.ceil(hi)).map(float),
        st.floats(lo, hi, allow_nan=False, allow_infinity=False),
    )


def points(rows, cols, n_min=3, n_max=12):
    # Ranges hang over every edge of the raster.
    return st.lists(
        st.tuples(coords(-cols / 2 - 2, 1.5 * cols + 2), coords(-rows / 2 - 2, 1.5 * rows + 2)),
        min_size=n_min,
        max_size=n_max,
    )


@st.composite
def pixel_rings(draw, rows, cols):
    """A closed ring in pixel space, of one of several kinds, in either orientation."""
    kind = draw(st.sampled_from(["convex", "star", "rectangle", "tiny", "self-touching", "random"]))
    if kind == "convex":
        hull = shapely.MultiPoint(draw(points(rows, cols))).convex_hull
        ring = list(hull.exterior.coords) if hull.geom_type == "Polygon" else draw(points(rows, cols, 3, 3))
    elif kind == "star":
        n = draw(st.integers(3, 16))
        cx, cy = draw(coords(-2, cols + 2)), draw(coords(-2, rows + 2))
        radius = draw(st.floats(0.2, 1.5 * max(rows, cols)))
        angles = sorted(draw(st.lists(st.floats(0, 2 * math.pi), min_size=n, max_size=n)))
        scales = draw(st.lists(st.floats(0.1, 1.0), min_size=n, max_size=n))
        ring = [
            (cx + radius * s * math.cos(t), cy + radius * s * math.sin(t))
            for t, s in zip(angles, scales, strict=True)
        ]
    elif kind == "rectangle":  # edges on pixel edges or pixel centres
        x0, x1 = sorted(draw(st.lists(st.integers(-4, 2 * cols + 4), min_size=2, max_size=2, unique=True)))
        y0, y1 = sorted(draw(st.lists(st.integers(-4, 2 * rows + 4), min_size=2, max_size=2, unique=True)))
        ring = list(shapely.box(x0 / 2, y0 / 2, x1 / 2, y1 / 2).exterior.coords)
    elif kind == "tiny":  # smaller than a pixel
        cx, cy = draw(coords(-1, cols + 1)), draw(coords(-1, rows + 1))
        w, h = draw(st.floats(0.001, 0.9)), draw(st.floats(0.001, 0.9))
        ring = [(cx, cy), (cx + w, cy), (cx + w * draw(st.floats(0, 1)), cy + h)]
    elif kind == "self-touching":  # bow tie, or a ring touching itself at a vertex (inverted hole)
        x0, y0 = draw(st.integers(-2, cols)), draw(st.integers(-2, rows))
        q = draw(st.integers(1, 8)) / 2
        if draw(st.booleans()):
            ring = [(x0, y0), (x0 + q, y0 + q), (x0 + q, y0), (x0, y0 + q)]
        else:
            ring = [(x0, y0), (x0 + 2 * q, y0), (x0 + 2 * q, y0 + 2 * q), (x0, y0 + 2 * q), (x0, y0)]
            ring += [(x0 + q, y0 + q / 2), (x0 + 1.5 * q, y0 + q), (x0 + q, y0 + 1.5 * q)]
    else:
        ring = draw(points(rows, cols))
    return ring[::-1] if draw(st.booleans()) else ring


@st.composite
def pixel_polygons(draw, rows, cols):
    shell = draw(pixel_rings(rows, cols))
    holes = draw(st.lists(pixel_rings(rows, cols), max_size=2)) if draw(st.booleans()) else []
    return shell, holes


@st.composite
def cases(draw):
    """(geometries, transform, shape): 1-3 geometries, each a Polygon, MultiPolygon or collection."""
    transform, (rows, cols) = draw(grids())
    geoms = []
    for _ in range(draw(st.integers(1, 3))):
        parts = [
            polygon_on(transform, *draw(pixel_polygons(rows, cols))) for _ in range(draw(st.integers(1, 3)))
        ]
        kind = draw(st.sampled_from(["polygon", "multipolygon", "collection"]))
        if kind == "polygon" or len(parts) == 1:
            geoms.extend(parts)
        elif kind == "multipolygon":  # parts may overlap: GDAL unions them
            geoms.append(shapely.MultiPolygon(parts))
        else:
            geoms.append(shapely.GeometryCollection(parts))
    return geoms, transform, (rows, cols)


HYPOTHESIS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(max_examples=250, **HYPOTHESIS)
@given(cases())
def test_random_polygons_match_gdal(case):
    assert_same_as_gdal(*case)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@settings(max_examples=5000, **HYPOTHESIS)
@given(cases())
def test_random_polygons_match_gdal_many(case):
    assert_same_as_gdal(*case)


# ----------------------------------------------------------------------------------- chosen hard cases

NORTH_UP = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4_000_000.0)
SOUTH_UP = Affine(0.5, 0.0, -3.0, 0.0, 0.5, 7.0)
NON_SQUARE = Affine(30.0, 0.0, 0.0, 0.0, -10.0, 0.0)
GRIDS = [NORTH_UP, SOUTH_UP, NON_SQUARE]


def _half_pixel_boxes(n: int):
    values = [k / 2 for k in range(-1, 2 * n + 2)]
    for x0, x1 in itertools.combinations(values, 2):
        for y0, y1 in itertools.combinations(values, 2):
            yield (x0, y0, x1, y1)


@pytest.mark.parametrize("transform", GRIDS, ids=["north-up", "south-up", "non-square"])
def test_rectangles_on_pixel_edges_and_centres(transform):
    shape = (5, 6)
    boxes = list(_half_pixel_boxes(5))
    for x0, y0, x1, y1 in boxes[::13]:
        ring = list(shapely.box(x0, y0, x1, y1).exterior.coords)
        for r in (ring, ring[::-1]):
            assert_same_as_gdal([polygon_on(transform, r)], transform, shape)


@pytest.mark.slow
@pytest.mark.parametrize("transform", GRIDS, ids=["north-up", "south-up", "non-square"])
def test_rectangles_on_pixel_edges_and_centres_all(transform):
    for x0, y0, x1, y1 in _half_pixel_boxes(5):
        ring = list(shapely.box(x0, y0, x1, y1).exterior.coords)
        for r in (ring, ring[::-1]):
            assert_same_as_gdal([polygon_on(transform, r)], transform, (5, 6))


@pytest.mark.parametrize("transform", GRIDS, ids=["north-up", "south-up", "non-square"])
def test_vertices_on_pixel_centres(transform):
    rng = np.random.default_rng(7)
    for _ in range(60):
        ring = rng.integers(-2, 10, size=(int(rng.integers(3, 9)), 2)) + 0.5
        assert_same_as_gdal([polygon_on(transform, ring)], transform, (8, 8))


def test_tiny_polygons_inside_one_pixel():
    rng = np.random.default_rng(3)
    for _ in range(100):
        cx, cy = rng.uniform(0, 6, 2)
        size = rng.uniform(1e-6, 0.5)
        ring = [(cx, cy), (cx + size, cy), (cx + size / 2, cy + size)]
        assert_same_as_gdal([polygon_on(NORTH_UP, ring)], NORTH_UP, (6, 6))


@pytest.mark.parametrize("extent", [40.0, 1e4, 1e6, 1e9, 2.2e9, 1e12], ids=lambda v: f"{v:g}px")
def test_huge_polygons(extent):
    # Beyond 2**31 pixels GDAL's int casts overflow and it burns nothing; the mask follows GDAL.
    shells = [
        [(-extent, -extent), (extent, -extent), (extent, extent), (-extent, extent)],
        [(-extent, -extent * 0.7), (extent * 1.3, -extent), (extent, extent)],
        [(2.5, -extent), (4.25, -extent), (4.25, 3.5), (2.5, 3.5)],
    ]
    for transform in GRIDS:
        for shell in shells:
            assert_same_as_gdal([polygon_on(transform, shell)], transform, (12, 9))


def test_polygons_hanging_over_every_edge():
    for transform in GRIDS:
        for dx, dy in itertools.product([-3.3, 0.0, 4.5], repeat=2):
            ring = [(dx - 2, dy - 1.5), (dx + 7.25, dy + 0.5), (dx + 5, dy + 9.75), (dx - 1, dy + 6)]
            assert_same_as_gdal([polygon_on(transform, ring)], transform, (6, 6))


def test_rotated_transform():
    rng = np.random.default_rng(11)
    for angle in (15.0, -30.0, 45.0, 90.0, 133.0):
        transform = Affine.translation(3000.0, 9000.0) @ Affine.rotation(angle) @ Affine.scale(20.0, -20.0)
        for _ in range(10):
            ring = rng.uniform(-3, 20, size=(int(rng.integers(3, 10)), 2))
            assert_same_as_gdal([polygon_on(transform, ring)], transform, (16, 16))


def test_overlapping_parts_are_unioned_like_gdal():
    a = polygon_on(NORTH_UP, [(1, 1), (6, 1), (6, 6), (1, 6)])
    b = polygon_on(NORTH_UP, [(3, 3), (9, 3), (9, 9), (3, 9)])
    assert_same_as_gdal([shapely.MultiPolygon([a, b])], NORTH_UP, (10, 10))
    assert_same_as_gdal([shapely.GeometryCollection([a, shapely.MultiPolygon([b])])], NORTH_UP, (10, 10))
    assert_same_as_gdal([a, b], NORTH_UP, (10, 10))


def test_ring_orientation_follows_ogr_even_when_the_pivot_is_ambiguous():
    # A figure-8 whose lowest-rightmost vertex appears twice: OGR falls back to the shoelace sum, which here
    # disagrees with shapely's orientation; horizontal edges on pixel centres make the difference visible.
    ring = [(10.5, 0.5), (0.5, 0.5), (0.5, 8.5), (10.5, 8.5), (10.5, 0.5), (14.5, 0.5), (14.5, 2.5)]
    for transform in (Affine.identity(), SOUTH_UP, NORTH_UP):
        for r in (ring, ring[::-1]):
            assert_same_as_gdal([polygon_on(transform, r)], transform, (12, 16))


def _degenerate_segment_polygons():
    """Polygons whose edges run along, or within GDAL's epsilons of, pixel boundaries and corners."""
    offsets = [0.0, 1e-9, -5e-5, 5e-5, 2e-4, -0.004, 0.5]
    for dx, dy in itertools.product(offsets, repeat=2):
        yield [(1 + dx, 1 + dy), (4 + dx, 1 - dy), (4 - dx, 5 + dy), (1 - dx, 5 - dy)]  # axis-aligned-ish
        yield [(1 + dx, 1), (5, 5 + dy), (1, 5 - dx)]  # a diagonal through pixel corners
        yield [(0.5 + dx, 2), (6 + dy, 2.0 + dx), (6, 2.005 + dy), (0.5, 6)]  # near-horizontal sliver
        yield [(2 + dx, -1), (2.006 + dy, 7), (3, 7 + dx)]  # near-vertical
        yield [(6 + dx, -3), (40, 4 + dy), (40, -3)]  # starts on the right edge of a 6-wide raster


def test_all_touched_degenerate_segments():
    # Segments exactly on (or within 1e-4 / 0.01 of) pixel boundaries are where all_touched is delicate;
    # every one of these matches GDAL exactly.
    n = 0
    for ring in _degenerate_segment_polygons():
        for r in (ring, ring[::-1]):
            for transform in (Affine.identity(), SOUTH_UP, NORTH_UP):
                assert_same_as_gdal([polygon_on(transform, r)], transform, (6, 6))
                n += 1
    print(f"all_touched degenerate segments: {n} polygons x 2 modes, 0 mismatches")


def test_segment_clipped_past_the_right_edge_lands_where_gdal_writes_it():
    # GDAL's walker does not check the column of a degenerate, clipped segment: it burns (3, 4) here.
    transform = Affine(1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
    geom = shapely.Polygon([(5, 3), (39, -4), (39, 3)])
    assert_same_as_gdal([geom], transform, (26, 5))
    assert geometry_mask(geom, transform, (26, 5), all_touched=True)[3, 4]


# ------------------------------------------------------------------------------------ contract details


def test_polarity_is_inside_true():
    geom = polygon_on(NORTH_UP, [(1, 1), (4, 1), (4, 3)])
    got = geometry_mask([geom], NORTH_UP, (5, 5))
    np.testing.assert_array_equal(got, ~rio_geometry_mask([geom], (5, 5), NORTH_UP))
    assert got.any() and not got.all()


def test_inputs_single_geometry_geojson_and_tuple_transform():
    geom = polygon_on(NORTH_UP, [(0.2, 0.3), (5.5, 1), (3, 4.5)])
    expected = geometry_mask([geom], NORTH_UP, (6, 6))
    assert expected.any()
    np.testing.assert_array_equal(geometry_mask(geom, tuple(NORTH_UP)[:6], (6, 6)), expected)
    np.testing.assert_array_equal(geometry_mask(shapely.geometry.mapping(geom), NORTH_UP, (6, 6)), expected)


def test_empty_inputs_give_an_empty_mask():
    assert not geometry_mask([], NORTH_UP, (3, 4)).any()
    assert not geometry_mask([shapely.Polygon()], NORTH_UP, (3, 4)).any()
    assert geometry_mask([shapely.MultiPolygon()], NORTH_UP, (3, 4)).shape == (3, 4)


@pytest.mark.parametrize(
    "geom", [shapely.Point(500005, 3999995), shapely.LineString([(500000, 4e6), (500030, 3999970)])]
)
def test_points_and_lines_are_refused(geom):
    with pytest.raises(PlanError, match="sample_points"):
        geometry_mask([geom], NORTH_UP, (3, 3))
    with pytest.raises(PlanError, match="sample_points"):
        geometry_mask(
            [shapely.GeometryCollection([polygon_on(NORTH_UP, [(0, 0), (1, 0), (1, 1)]), geom])],
            NORTH_UP,
            (3, 3),
        )


def test_bad_arguments_raise_plan_errors():
    square = polygon_on(NORTH_UP, [(0, 0), (1, 0), (1, 1)])
    with pytest.raises(PlanError):
        geometry_mask([square], NORTH_UP, (0, 3))
    with pytest.raises(PlanError):
        geometry_mask([square], Affine(0.0, 0.0, 0.0, 0.0, 0.0, 0.0), (3, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        not_finite = shapely.Polygon([(0, 0), (math.nan, 1), (1, 1)])
    with pytest.raises(PlanError):
        geometry_mask([not_finite], NORTH_UP, (3, 3))
    with pytest.raises(PlanError):
        geometry_mask(["not a geometry"], NORTH_UP, (3, 3))
