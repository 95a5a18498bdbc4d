"""AOI windows and reprojection against rasterio: features.geometry_window and warp.transform_geom."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import shapely
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.errors import WindowError
from rasterio.features import geometry_window as rio_geometry_window
from rasterio.io import MemoryFile
from rasterio.warp import transform_geom
from shapely.geometry import mapping, shape

from rasteret_dask.errors import PlanError
from rasteret_dask.geo.aoi import aoi_polygons, geometry_window, reproject_geometry
from rasteret_dask.geo.windows import PixelWindow

# ------------------------------------------------------------------------------------------ the oracle


def rasterio_window(geoms, transform, width, height):
    """rasterio's window for ``geoms`` on an in-memory dataset, as a PixelWindow, None for WindowError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NotGeoreferencedWarning for identity-like transforms
        with (
            MemoryFile() as memfile,
            memfile.open(
                driver="GTiff", width=width, height=height, count=1, dtype="uint8", transform=transform
            ) as ds,
        ):
            try:
                w = rio_geometry_window(ds, geoms)
            except WindowError:
                return None
    r0, c0 = int(w.row_off), int(w.col_off)
    return PixelWindow(r0, r0 + int(w.height), c0, c0 + int(w.width))


def to_map(transform, pixel_xy):
    xy = np.asarray(pixel_xy, dtype=np.float64).reshape(-1, 2)
    a, b, c, d, e, f = tuple(transform)[:6]
    return np.column_stack([a * xy[:, 0] + b * xy[:, 1] + c, d * xy[:, 0] + e * xy[:, 1] + f])


# ------------------------------------------------------------------------------------------- windows


@st.composite
def window_cases(draw):
    width, height = draw(st.integers(1, 60)), draw(st.integers(1, 60))
    a = draw(st.sampled_from([10.0, 30.0, 0.5, 1.0, 0.3, 8.983152841195214e-05]))
    e = a * draw(st.sampled_from([1.0, 0.5, 2.0])) * draw(st.sampled_from([-1.0, 1.0]))
    transform = Affine(
        a,
        0.0,
        draw(st.sampled_from([0.0, 500000.0, -37.5])),
        0.0,
        e,
        draw(st.sampled_from([0.0, 4_000_000.0, 12.25])),
    )
    if draw(st.integers(0, 4)) == 0:
        transform = transform @ Affine.rotation(draw(st.floats(-90, 90)))
    coord = st.one_of(
        st.integers(-2 * max(width, height), 3 * max(width, height)).map(lambda k: k / 2),
        st.floats(-2.0 * max(width, height), 3.0 * max(width, height)),
    )
    geoms = []
    for _ in range(draw(st.integers(1, 3))):
        parts = []
        for _ in range(draw(st.integers(1, 2))):
            pts = draw(st.lists(st.tuples(coord, coord), min_size=3, max_size=8))
            holes = []
            if draw(st.booleans()):
                holes = [to_map(transform, draw(st.lists(st.tuples(coord, coord), min_size=3, max_size=5)))]
            parts.append(shapely.Polygon(to_map(transform, pts), holes))
        geoms.append(parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts))
    return geoms, transform, width, height


HYPOTHESIS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@settings(max_examples=200, **HYPOTHESIS)
@given(window_cases())
def test_window_matches_rasterio(case):
    geoms, transform, width, height = case
    assert geometry_window(geoms, transform, width, height) == rasterio_window(
        geoms, transform, width, height
    )


@pytest.mark.slow
@pytest.mark.timeout(1800)
@settings(max_examples=4000, **HYPOTHESIS)
@given(window_cases())
def test_window_matches_rasterio_many(case):
    geoms, transform, width, height = case
    assert geometry_window(geoms, transform, width, height) == rasterio_window(
        geoms, transform, width, height
    )


NORTH_UP = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4_000_000.0)


@pytest.mark.parametrize(
    "pixels",
    [
        [(2.5, 3.5), (7.25, 3.5), (7.25, 9.0)],  # inside
        [(-5, -5), (-1, -5), (-1, -1)],  # wholly above-left: no overlap
        [(-5, 2), (0, 2), (0, 4)],  # touches the left edge only: no overlap
        [(10, 2), (12, 2), (12, 4)],  # touches the right edge only: no overlap
        [(-30, -30), (40, -30), (40, 40)],  # covers everything
        [(3, 3), (3, 3.5), (3.5, 3)],  # sub-pixel, on pixel edges
        [(4, 4), (4, 6), (4.0, 5.0)],  # zero width (a line in pixel space)
    ],
)
def test_window_edge_cases_match_rasterio(pixels):
    geom = shapely.Polygon(to_map(NORTH_UP, pixels))
    assert geometry_window([geom], NORTH_UP, 10, 12) == rasterio_window([geom], NORTH_UP, 10, 12)


def test_window_for_no_overlap_is_none():
    geom = shapely.Polygon(to_map(NORTH_UP, [(20, 20), (25, 20), (25, 30)]))
    assert rasterio_window([geom], NORTH_UP, 10, 10) is None
    assert geometry_window(geom, NORTH_UP, 10, 10) is None


def test_window_of_a_collection_is_the_window_of_its_polygons():
    # rasterio's geometry_window drops the transform for GeometryCollections (it recurses into them without
    # it), so the oracle here is its window of the same polygons given one by one.
    a = shapely.Polygon(to_map(NORTH_UP, [(1, 1), (3, 1), (3, 2)]))
    b = shapely.Polygon(to_map(NORTH_UP, [(5, 7), (6, 7), (6, 8.5)]))
    expected = rasterio_window([a, b], NORTH_UP, 10, 10)
    assert expected == PixelWindow(1, 9, 1, 6)
    assert (
        geometry_window(shapely.GeometryCollection([a, shapely.MultiPolygon([b])]), NORTH_UP, 10, 10)
        == expected
    )


def test_window_arguments():
    geom = shapely.Polygon(to_map(NORTH_UP, [(1, 1), (3, 1), (3, 2)]))
    assert geometry_window([], NORTH_UP, 10, 10) is None
    assert geometry_window(geom, tuple(NORTH_UP)[:6], 10, 10) == geometry_window(geom, NORTH_UP, 10, 10)
    with pytest.raises(PlanError, match="sample_points"):
        geometry_window(shapely.Point(500000, 4e6), NORTH_UP, 10, 10)
    with pytest.raises(PlanError):
        geometry_window(geom, NORTH_UP, 0, 10)
    with pytest.raises(PlanError):
        geometry_window(geom, Affine(1.0, 2.0, 0.0, 2.0, 4.0, 0.0), 10, 10)  # not invertible


# -------------------------------------------------------------------------------------- aoi_polygons


def test_aoi_polygons_flattens_in_order_and_skips_empties():
    a, b, c = (shapely.box(i, 0, i + 1, 1) for i in range(3))
    nested = shapely.GeometryCollection([shapely.MultiPolygon([a, b]), shapely.GeometryCollection([c])])
    assert aoi_polygons(nested) == [a, b, c]
    assert aoi_polygons([a, None, shapely.Polygon(), mapping(b)]) == [a, b]
    assert aoi_polygons(np.array([a, c], dtype=object)) == [a, c]


@pytest.mark.parametrize(
    "geom",
    [
        shapely.Point(1, 2),
        shapely.MultiPoint([(1, 2), (3, 4)]),
        shapely.LineString([(0, 0), (1, 1)]),
        shapely.LinearRing([(0, 0), (1, 0), (1, 1)]),
        shapely.GeometryCollection([shapely.box(0, 0, 1, 1), shapely.Point(0, 0)]),
    ],
)
def test_aoi_polygons_refuses_points_and_lines(geom):
    with pytest.raises(PlanError, match="sample_points"):
        aoi_polygons(geom)


def test_aoi_polygons_refuses_non_geometries():
    with pytest.raises(PlanError):
        aoi_polygons(42)
    with pytest.raises(PlanError):
        aoi_polygons([{"type": "Nonsense"}])


# ------------------------------------------------------------------------------------------ reprojection


def _aoi(cx, cy, r):
    shell = shapely.Point(cx, cy).buffer(r, quad_segs=6)
    hole = shapely.Point(cx + r / 4, cy).buffer(r / 3, quad_segs=3)
    return shapely.Polygon(shell.exterior.coords, [hole.exterior.coords])


@pytest.mark.parametrize(
    "src, dst, geom, atol",
    [
        ("EPSG:4326", "EPSG:32633", _aoi(14.2, 45.1, 0.4), 1e-6),
        ("EPSG:32633", "EPSG:4326", _aoi(480000.0, 5000000.0, 20000.0), 1e-10),
        ("EPSG:4326", "EPSG:3857", _aoi(-70.0, -30.0, 1.0), 1e-6),
        ("EPSG:3857", "EPSG:4326", _aoi(1e6, 5e6, 3e4), 1e-10),
        ("EPSG:4326", "EPSG:3035", _aoi(10.0, 50.0, 0.5), 1e-6),
        ("EPSG:32618", "EPSG:32617", _aoi(300000.0, 4500000.0, 5000.0), 1e-6),
        (4326, "EPSG:32755", shapely.MultiPolygon([_aoi(147.0, -42.0, 0.2), _aoi(148.0, -41.0, 0.1)]), 1e-6),
    ],
)
def test_reprojection_matches_transform_geom(src, dst, geom, atol):
    ours = reproject_geometry(geom, src, dst)
    theirs = shape(transform_geom(src if isinstance(src, str) else f"EPSG:{src}", dst, mapping(geom)))
    assert ours.geom_type == geom.geom_type
    assert shapely.get_num_coordinates(ours) == shapely.get_num_coordinates(geom)
    assert [len(p.interiors) for p in getattr(ours, "geoms", [ours])] == [
        len(p.interiors) for p in getattr(geom, "geoms", [geom])
    ]
    np.testing.assert_allclose(
        shapely.get_coordinates(ours), shapely.get_coordinates(theirs), rtol=0, atol=atol
    )


def test_reprojection_is_vertexwise_without_densification():
    edge = shapely.Polygon([(10.0, 40.0), (20.0, 40.0), (20.0, 50.0), (10.0, 50.0)])
    out = reproject_geometry(edge, "EPSG:4326", "EPSG:32633")
    assert shapely.get_num_coordinates(out) == 5


def test_reprojection_same_crs_returns_the_geometry():
    geom = shapely.box(0, 0, 1, 1)
    assert reproject_geometry(geom, "EPSG:4326", "epsg:4326") is geom


def test_reprojection_does_not_cut_the_antimeridian():
    # A square straddling 180° in a Pacific-centred projection comes back as ONE polygon whose longitudes
    # jump from about +179 to -179 (documented): nothing is split or wrapped.
    crs = "EPSG:3832"  # WGS 84 / PDC Mercator, centred on 150°E
    centre = reproject_geometry(shapely.Point(180.0, 0.0), "EPSG:4326", crs)
    square = shapely.box(centre.x - 100_000, -100_000, centre.x + 100_000, 100_000)
    lonlat = reproject_geometry(square, crs, "EPSG:4326")
    lons = shapely.get_coordinates(lonlat)[:, 0]
    assert lonlat.geom_type == "Polygon"
    assert lons.max() > 179 and lons.min() < -179
    assert math.isclose(abs(lons.max()) + abs(lons.min()), 360, abs_tol=2)


def test_reprojection_errors():
    with pytest.raises(PlanError):
        reproject_geometry(shapely.box(0, 0, 1, 1), "EPSG:4326", "not a crs")
    with pytest.raises(PlanError):  # latitude 95 has no UTM image
        reproject_geometry(shapely.Polygon([(10, 80), (12, 95), (12, 80)]), "EPSG:4326", "EPSG:32633")
