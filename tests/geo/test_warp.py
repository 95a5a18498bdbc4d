"""Target-grid resampling against its oracles: rasterio.warp.reproject and gdalwarp, both GDAL 3.10.

``rasterio.warp.reproject`` is the reference for :func:`warp` (same grid, same nodata, every method);
gdalwarp itself, driven through the C API of rasterio's bundled GDAL, is the reference for the exact
coordinate path (``-et 0``) and for overview selection (``-ovr AUTO``). Sources are synthetic rasters with
nodata edges and holes, generated per test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyproj
import pytest
import rasterio
import rasterio.windows
from affine import Affine
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from rasterio.enums import Resampling
from rasterio.transform import array_bounds
from rasterio.warp import aligned_target, calculate_default_transform, reproject

from rasteret_dask.errors import PlanError
from rasteret_dask.geo.grid import Grid
from rasteret_dask.geo.warp import (
    METHODS,
    choose_overview,
    is_pixel_translation,
    kernel_scale,
    nodata_valid,
    overview_target_resolution,
    required_window,
    resample,
    source_coordinates,
    source_footprints,
    transformer,
    warp,
)
from tests.gdal_api import gdal_version, gdal_warp

UTM33 = "EPSG:32633"
SRC_TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4500000.0)
SRC_SHAPE = (200, 200)
INTERPOLATING = ("bilinear", "cubic", "average")

# --------------------------------------------------------------------------------------------------------
# Sources and scenarios


def make_source(shape, dtype, nodata, seed=0, holes=True) -> np.ndarray:
    """A smooth field with noise; nodata along two edges, a ragged diagonal edge and scattered holes."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    field = 100 + 50 * np.sin(xx / 7.0) + 40 * np.cos(yy / 5.0) + rng.normal(0, 10, shape)
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        lo, hi = max(info.min + 1, -120), min(info.max - 1, 250)
        data = np.clip(np.round(field - (130 if info.min < 0 and hi < 200 else 0)), lo, hi).astype(dtype)
    else:
        data = field.astype(dtype)
    if holes and nodata is not None:
        data[:, : w // 8] = nodata
        data[h - h // 6 :, :] = nodata
        data[(xx + yy) > (h + w) * 0.8] = nodata
        data[rng.random(shape) < 0.02] = nodata
    return data


def default_grid(src_crs, src_transform, shape, dst_crs, resolution) -> Grid:
    h, w = shape
    t, width, height = calculate_default_transform(
        src_crs, dst_crs, w, h, *array_bounds(h, w, src_transform), resolution=resolution
    )
    return Grid(dst_crs, tuple(t)[:6], width, height)


@dataclass(frozen=True)
class Scenario:
    name: str
    src_crs: str
    src_transform: Affine
    grid: Grid


WGS84_TRANSFORM = Affine(0.0001, 0.0, 15.0, 0.0, -0.0001, 40.62)


def scenarios() -> list[Scenario]:
    def same(name, res, dx, dy, w, h):
        t = (res, 0.0, 500000.0 + dx, 0.0, -res, 4500000.0 + dy)
        return Scenario(name, UTM33, SRC_TRANSFORM, Grid(UTM33, t, w, h))

    return [
        same("shift_subpixel", 10.0, 3.3, -4.7, 200, 200),
        same("scale_1.37", 7.3, 12.1, -8.9, 250, 250),
        same("up_2x", 5.0, 33.3, -33.3, 380, 380),
        same("down_2x", 20.0, 33.3, -12.9, 95, 95),
        same("down_3.7x", 37.0, 51.3, -28.9, 52, 52),
        same("down_13x", 130.0, 13.0, -9.0, 15, 15),  # wide filters, footprints beyond 8 x 8 cells
        same("whole_pixel_shift", 10.0, -300.0, 500.0, 230, 230),
        same("beyond_down_2x", 20.0, -1000.0, 1000.0, 220, 220),
        Scenario(
            "utm33_to_utm34",
            UTM33,
            SRC_TRANSFORM,
            default_grid(UTM33, SRC_TRANSFORM, SRC_SHAPE, "EPSG:32634", 12.0),
        ),
        Scenario(
            "utm_to_wgs84",
            UTM33,
            SRC_TRANSFORM,
            default_grid(UTM33, SRC_TRANSFORM, SRC_SHAPE, "EPSG:4326", 0.00011),
        ),
        Scenario(
            "wgs84_to_utm",
            "EPSG:4326",
            WGS84_TRANSFORM,
            default_grid("EPSG:4326", WGS84_TRANSFORM, SRC_SHAPE, UTM33, 9.0),
        ),
    ]


SCENARIOS = {s.name: s for s in scenarios()}


def rasterio_warp(src, scenario: Scenario, method, nodata, dst_nodata=None) -> np.ndarray:
    g = scenario.grid
    shape = (src.shape[0], g.height, g.width) if src.ndim == 3 else (g.height, g.width)
    dst = np.zeros(shape, dtype=src.dtype)
    reproject(
        src,
        dst,
        src_transform=scenario.src_transform,
        src_crs=scenario.src_crs,
        src_nodata=nodata,
        dst_transform=Affine(*g.transform),
        dst_crs=g.crs,
        dst_nodata=dst_nodata,
        resampling=getattr(Resampling, method),
    )
    return dst


# --------------------------------------------------------------------------------------------------------
# Agreement with GDAL


@dataclass
class Agreement:
    pixels: int
    identical: int  # same validity and, where valid, the same value (NaN == NaN)
    pattern_diff: np.ndarray  # where validity differs
    value_diff: np.ndarray  # both valid, values differ
    not_close: np.ndarray  # both valid, beyond the method's tolerance

    @property
    def identical_fraction(self) -> float:
        return self.identical / self.pixels


def agreement(ours, valid, ref, nodata, method) -> Agreement:
    """Compare our output with GDAL's as GDAL's output shows validity: by its nodata value."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    if nodata is None:
        ref_valid = valid  # GDAL's output has no mask; compare every value (ours are 0 where invalid)
        seen = valid
    elif isinstance(nodata, float) and math.isnan(nodata):
        ref_valid, seen = ~np.isnan(ref), valid & ~np.isnan(ours)
    else:
        ref_valid, seen = ref != nodata, valid & (ours != nodata)
    both = seen & ref_valid
    with np.errstate(invalid="ignore"):
        equal = (ours == ref) | (np.isnan(ours.astype(float)) & np.isnan(ref.astype(float)))
        equal_all = equal if nodata is None else np.where(both, equal, seen == ref_valid)
        diff = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
        if method in INTERPOLATING:
            tol = 1.0 if ours.dtype.kind in "iu" else 1e-3 * np.abs(ref.astype(np.float64))
        else:
            tol = 0.0
        close = equal | (diff <= tol)
    return Agreement(
        pixels=ours.size,
        identical=int(equal_all.sum()),
        pattern_diff=(seen != ref_valid) if nodata is not None else np.zeros(ours.shape, bool),
        value_diff=both & ~equal,
        not_close=both & ~close,
    )


def at_pixel_edge(coords: np.ndarray, where: np.ndarray, tol: float = 1e-6) -> np.ndarray:
    frac = np.abs(coords - np.round(coords))
    return frac[where] <= tol


def assert_like_gdal(ours, valid, ref, nodata, method, scenario: Scenario | None = None) -> Agreement:
    """The acceptance rule: the validity pattern equal on >= 99.9 % of pixels; where both are valid,
    nearest/mode/min/max values identical on >= 99.9 % and bilinear/cubic/average values within 1e-3
    relative (1 for integers) on all; every nearest difference on a half-pixel tie (a centre on a source
    pixel edge, where the last bits of the coordinate transform decide)."""
    a = agreement(ours, valid, ref, nodata, method)
    pixels = a.pixels
    assert a.pattern_diff.sum() <= 0.001 * pixels, (
        f"{method}: validity differs on {int(a.pattern_diff.sum())} pixels"
    )
    if method in INTERPOLATING:
        assert not a.not_close.any(), f"{method}: {int(a.not_close.sum())} pixels beyond tolerance"
    else:
        assert a.value_diff.sum() <= 0.001 * pixels, (
            f"{method}: values differ on {int(a.value_diff.sum())} pixels"
        )
    odd = a.pattern_diff | (a.value_diff if method == "nearest" else False)
    if method == "nearest" and np.any(odd) and scenario is not None:
        cols, rows = source_coordinates(scenario.grid, scenario.src_crs, scenario.src_transform)
        spatial = odd if odd.ndim == 2 else odd.any(axis=0)
        ties = at_pixel_edge(cols, spatial) | at_pixel_edge(rows, spatial)
        assert ties.all(), f"nearest: {int((~ties).sum())} differing pixels are not half-pixel ties"
    return a


# --------------------------------------------------------------------------------------------------------
# warp() against rasterio.warp.reproject


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_warp_matches_rasterio(name, dtype, method):
    scenario = SCENARIOS[name]
    nodata = 0 if dtype == "uint8" else -9999.0
    shape = (250, 250) if scenario.src_crs == "EPSG:4326" else SRC_SHAPE
    src = make_source(shape, dtype, nodata)
    ref = rasterio_warp(src, scenario, method, nodata)
    ours, valid = warp(
        src, scenario.src_crs, scenario.src_transform, scenario.grid, method=method, nodata=nodata
    )
    assert ours.dtype == src.dtype and ours.shape == ref.shape and valid.shape == ref.shape
    assert valid.any() and not valid.all()
    assert_like_gdal(ours, valid, ref, nodata, method, scenario)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "dtype, nodata",
    [
        ("int8", -128),
        ("int16", -32768),
        ("uint16", 65535),
        ("int32", -1),
        ("uint32", 0),
        ("float32", math.nan),
        ("float64", math.nan),
        ("float64", -1e30),
        ("uint8", None),
        ("float32", None),
    ],
)
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_warp_matches_rasterio_all_types(name, dtype, nodata, method):
    scenario = SCENARIOS[name]
    shape = (250, 250) if scenario.src_crs == "EPSG:4326" else SRC_SHAPE
    src = make_source(shape, dtype, nodata, seed=7, holes=nodata is not None)
    ref = rasterio_warp(src, scenario, method, nodata)
    ours, valid = warp(
        src, scenario.src_crs, scenario.src_transform, scenario.grid, method=method, nodata=nodata
    )
    shortcut = is_pixel_translation(scenario.grid, scenario.src_crs, scenario.src_transform)  # GDAL: nearest
    if method == "mode" and dtype == "float64" and not shortcut:
        # GDAL 3.10 returns float64 modes rounded to float32 (documented difference): compare that way.
        ours = np.where(valid, ours.astype(np.float32).astype(np.float64), ours)
    if method == "mode" and dtype in ("int8", "int16"):
        ours, valid = without_gdal_mode_minus_one(ours, valid, ref, nodata)
    assert_like_gdal(ours, valid, ref, nodata, method, scenario)


def without_gdal_mode_minus_one(ours, valid, ref, fill):
    """GDAL 3.10 leaves a target pixel empty when its int8/int16 mode is -1 (documented difference):
    take GDAL's value there, so that everything else can be compared."""
    dropped = valid & (ours == -1) & (ref == fill)
    return np.where(dropped, ref, ours), valid & ~dropped


def test_multiband_nodata_is_unified_over_bands():
    # A pixel is nodata only where every band is: band 1's nodata is filled from bands 2 and 3.
    a = make_source(SRC_SHAPE, "uint8", 0)
    b = np.roll(a, 13, axis=1)
    b[b == 0] = 5
    c = a.copy()
    c[100:150, 100:150] = 0
    src = np.stack([a, b, c])
    for name in ("scale_1.37", "utm33_to_utm34", "down_3.7x"):
        scenario = SCENARIOS[name]
        for method in METHODS:
            ref = rasterio_warp(src, scenario, method, 0)
            ours, valid = warp(src, UTM33, SRC_TRANSFORM, scenario.grid, method=method, nodata=0)
            assert ours.shape == ref.shape == valid.shape
            assert_like_gdal(ours, valid, ref, 0, method, scenario)


@pytest.mark.parametrize("dtype", ["uint8", "int16", "float32"])
@pytest.mark.parametrize("method", METHODS)
def test_destination_nodata_collisions_follow_gdal(dtype, method):
    # Valid results equal to the destination nodata: GDAL 3.10 nudges integer results of its general
    # kernels, and keeps nearest-kernel and float results as they are.
    src = make_source(SRC_SHAPE, dtype, None, seed=3, holes=False)
    src[:, :30] = 121
    src[:, 30:35] = 0 if dtype != "float32" else -9999
    scenario = SCENARIOS["utm33_to_utm34"]
    nodata = 0 if dtype != "float32" else -9999.0
    ref = rasterio_warp(src, scenario, method, nodata, dst_nodata=121)
    ours, valid = warp(src, UTM33, SRC_TRANSFORM, scenario.grid, method=method, nodata=nodata, fill_value=121)
    if method == "mode" and dtype == "int16":
        ours, valid = without_gdal_mode_minus_one(ours, valid, ref, 121)
    assert np.array_equal(ours, ref)
    if dtype != "float32" and method != "nearest":
        assert not (valid & (ours == 121)).any()


def test_nan_data_without_nodata_spreads_as_in_gdal():
    src = make_source(SRC_SHAPE, "float32", None, seed=4, holes=False)
    src[np.random.default_rng(4).random(SRC_SHAPE) < 0.05] = np.nan
    for name in ("scale_1.37", "down_2x", "utm33_to_utm34"):
        for method in METHODS:
            scenario = SCENARIOS[name]
            ref = rasterio_warp(src, scenario, method, None)
            ours, _ = warp(src, UTM33, SRC_TRANSFORM, scenario.grid, method=method)
            assert np.array_equal(ours, ref, equal_nan=True), (name, method)


def test_documented_mode_differences_are_the_only_ones():
    scenario = SCENARIOS["down_3.7x"]
    categories = np.random.default_rng(5).integers(1, 4, SRC_SHAPE)
    # int16: GDAL 3.10 leaves the pixel empty when the mode is -1; elsewhere identical.
    src = (categories - 2).astype(np.int16)
    ref = rasterio_warp(src, scenario, "mode", -32768)
    ours, valid = warp(src, UTM33, SRC_TRANSFORM, scenario.grid, method="mode", nodata=-32768)
    differ = ours != ref
    assert differ.any() and ((ours == -1) & (ref == -32768) & valid)[differ].all()
    # float64: GDAL returns the float32 rounding of the mode.
    src = categories * 1.1
    ref = rasterio_warp(src, scenario, "mode", 0.0)
    ours, valid = warp(src, UTM33, SRC_TRANSFORM, scenario.grid, method="mode", nodata=0.0)
    assert (ours != ref).any() and (ours.astype(np.float32) == ref).all()


@pytest.mark.slow
def test_warp_memory_chunking_matches_rasterio():
    # A source big enough for GDAL to split the warp by its 64 MiB working-memory limit.
    shape = (4300, 4300)
    src = make_source(shape, "float32", -9999.0, seed=9)
    scenario = Scenario(
        "big", UTM33, SRC_TRANSFORM, Grid(UTM33, (23.0, 0, 500011.0, 0, -23.0, 4499990.0), 1800, 1800)
    )
    for method in ("bilinear", "average", "nearest"):
        ref = rasterio_warp(src, scenario, method, -9999.0)
        ours, valid = warp(src, UTM33, SRC_TRANSFORM, scenario.grid, method=method, nodata=-9999.0)
        assert_like_gdal(ours, valid, ref, -9999.0, method, scenario)


@settings(max_examples=40, deadline=None)
@given(
    res=st.floats(2.0, 40.0),
    rotation=st.sampled_from([0.0, 0.0, 7.0, -23.0]),
    dx=st.floats(-400.0, 1200.0),
    dy=st.floats(-1200.0, 400.0),
    size=st.integers(8, 70),
    method=st.sampled_from(METHODS),
    dtype=st.sampled_from(["uint8", "float32"]),
)
def test_random_grids_match_rasterio(res, rotation, dx, dy, size, method, dtype):
    nodata = 0 if dtype == "uint8" else -9999.0
    src = make_source((120, 120), dtype, nodata, seed=size)
    t = (
        Affine.translation(500000.0 + dx, 4500000.0 + dy)
        * Affine.rotation(rotation)
        * Affine.scale(res, -res)
    )
    scenario = Scenario("random", UTM33, SRC_TRANSFORM, Grid(UTM33, tuple(t)[:6], size, size + 3))
    ref = rasterio_warp(src, scenario, method, nodata)
    ours, valid = warp(src, UTM33, SRC_TRANSFORM, scenario.grid, method=method, nodata=nodata)
    assert_like_gdal(ours, valid, ref, nodata, method, scenario)


# --------------------------------------------------------------------------------------------------------
# Kernel properties without an oracle: nodata never bleeds, windows do not matter


def reprojection_inputs(scenario: Scenario, method: str):
    g, crs, tr = scenario.grid, scenario.src_crs, scenario.src_transform
    cols, rows = source_coordinates(g, crs, tr)
    scale = kernel_scale(g, crs, tr, SRC_SHAPE[1], SRC_SHAPE[0], method=method)
    footprints = source_footprints(g, crs, tr) if method in ("average", "mode", "min", "max") else None
    return cols, rows, scale, footprints


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", ["utm_to_wgs84", "down_3.7x", "up_2x"])
def test_nodata_never_bleeds(name, method):
    # Whatever values hide under invalid pixels, valid outputs and the validity pattern do not change.
    rng = np.random.default_rng(11)
    data = make_source(SRC_SHAPE, "float32", None, holes=False)
    mask = rng.random(SRC_SHAPE) > 0.15
    mask[:, :40] = False
    cols, rows, scale, footprints = reprojection_inputs(SCENARIOS[name], method)
    results = []
    for hidden in (1e6, -1e6, np.nan):
        src = np.where(mask, data, np.float32(hidden)).astype(np.float32)
        results.append(resample(src, mask, cols, rows, method=method, scale=scale, footprints=footprints))
    (v0, ok0), *others = results
    assert ok0.any() and not ok0.all()
    for v, ok in others:
        assert np.array_equal(ok, ok0)
        assert np.array_equal(v[ok], v0[ok0])
        assert np.isfinite(v[ok]).all() and np.abs(v[ok]).max() < 1e5


@pytest.mark.parametrize("method", METHODS)
def test_a_window_gives_the_same_pixels_as_the_whole_raster(method):
    # A target in the middle of a bigger source: the required window is smaller than the raster.
    src = make_source((400, 400), "float32", -9999.0, seed=2)
    g = default_grid(UTM33, SRC_TRANSFORM @ Affine.translation(120, 140), (120, 110), "EPSG:32634", 13.0)
    cols, rows = source_coordinates(g, UTM33, SRC_TRANSFORM)
    scale = kernel_scale(g, UTM33, SRC_TRANSFORM, 400, 400, method=method)
    footprints = None
    if method in ("average", "mode", "min", "max"):
        footprints = source_footprints(g, UTM33, SRC_TRANSFORM)
        x1, y1, x2, y2 = footprints
        window = required_window(np.r_[x1, x2], np.r_[y1, y2], method=method, width=400, height=400)
    else:
        window = required_window(cols, rows, method=method, width=400, height=400, scale=scale)
    r0, c0, h, w = window
    assert h < 300 and w < 300
    full = resample(src, None, cols, rows, method=method, nodata=-9999.0, scale=scale, footprints=footprints)
    shifted = (
        None
        if footprints is None
        else tuple(a - o for a, o in zip(footprints, (c0, r0, c0, r0), strict=True))
    )
    part = resample(
        src[r0 : r0 + h, c0 : c0 + w],
        None,
        cols - c0,
        rows - r0,
        method=method,
        nodata=-9999.0,
        scale=scale,
        footprints=shifted,
    )
    assert np.array_equal(full[1], part[1]) and np.array_equal(full[0], part[0])


def test_per_band_masks_keep_bands_apart():
    data = np.stack([make_source(SRC_SHAPE, "float32", None, seed=s, holes=False) for s in (1, 2)])
    masks = np.ones(data.shape, dtype=bool)
    masks[0, :, :100] = False
    cols, rows, scale, _ = reprojection_inputs(SCENARIOS["scale_1.37"], "bilinear")
    both, ok = resample(data, masks, cols, rows, method="bilinear", scale=scale)
    for band in (0, 1):
        alone, ok_alone = resample(data[band], masks[band], cols, rows, method="bilinear", scale=scale)
        assert np.array_equal(ok[band], ok_alone) and np.array_equal(both[band], alone)
    assert ok[1].sum() > ok[0].sum()


# --------------------------------------------------------------------------------------------------------
# Coordinates


def test_exact_coordinates_are_pyproj_and_the_inverse_transform():
    g = SCENARIOS["utm_to_wgs84"].grid
    cols, rows = source_coordinates(g, UTM33, SRC_TRANSFORM, max_error=0)
    jj, ii = np.mgrid[0 : g.height, 0 : g.width]
    x, y = Affine(*g.transform) * (ii + 0.5, jj + 0.5)
    e, n = pyproj.Transformer.from_crs("EPSG:4326", UTM33, always_xy=True).transform(x, y)
    c, r = ~SRC_TRANSFORM * (np.asarray(e), np.asarray(n))
    assert np.allclose(cols, c, rtol=0, atol=1e-6) and np.allclose(rows, r, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["utm_to_wgs84", "utm33_to_utm34", "wgs84_to_utm"])
def test_approximate_coordinates_stay_near_exact(name):
    s = SCENARIOS[name]
    approx = source_coordinates(s.grid, s.src_crs, s.src_transform)
    exact = source_coordinates(s.grid, s.src_crs, s.src_transform, max_error=0)
    err = np.abs(approx[0] - exact[0]) + np.abs(approx[1] - exact[1])
    assert 0 < err.max() <= 0.25


def test_chunk_coordinates_are_the_matching_block_of_the_grid():
    s = SCENARIOS["utm_to_wgs84"]
    cols, rows = source_coordinates(s.grid, s.src_crs, s.src_transform, max_error=0)
    chunk = s.grid.window_grid(17, 29, 40, 55)
    ccols, crows = source_coordinates(chunk, s.src_crs, s.src_transform, max_error=0)
    assert np.allclose(ccols, cols[17:57, 29:84], atol=1e-7) and np.allclose(
        crows, rows[17:57, 29:84], atol=1e-7
    )


def test_transformers_are_cached_and_identity_is_none():
    assert transformer(UTM33, UTM33) is None
    assert transformer(UTM33, "EPSG:4326") is transformer(UTM33, "EPSG:4326")


def test_whole_pixel_shifts_are_recognised():
    assert is_pixel_translation(SCENARIOS["whole_pixel_shift"].grid, UTM33, SRC_TRANSFORM)
    assert not is_pixel_translation(SCENARIOS["shift_subpixel"].grid, UTM33, SRC_TRANSFORM)
    assert not is_pixel_translation(SCENARIOS["utm33_to_utm34"].grid, UTM33, SRC_TRANSFORM)


@pytest.mark.parametrize(
    "dtype, nodata", [("uint8", 0), ("int32", 2**31 - 1), ("float32", 1000.0), ("float64", math.nan)]
)
def test_nodata_comparison_is_gdals(dtype, nodata):
    # GDAL's tolerant float comparison also catches near-nodata values; its effect is seen through warp.
    rng = np.random.default_rng(6)
    if dtype == "int32":
        src = (2**31 - 1 - rng.integers(0, 3000, SRC_SHAPE)).astype(np.int32)
    elif dtype == "float32":
        src = (1000 + rng.integers(0, 3, SRC_SHAPE) * 1e-5).astype(np.float32)
        src[:, :50] = 7.0
    else:
        src = make_source(SRC_SHAPE, dtype, nodata)
    scenario = SCENARIOS["scale_1.37"]
    ref = rasterio_warp(src, scenario, "nearest", nodata)
    ours, valid = warp(src, UTM33, SRC_TRANSFORM, scenario.grid, method="nearest", nodata=nodata)
    assert_like_gdal(ours, valid, ref, nodata, "nearest", scenario)
    mask = nodata_valid(src, nodata)
    assert mask.any() and not mask.all()


# --------------------------------------------------------------------------------------------------------
# gdalwarp through the C API of rasterio's GDAL: the exact path and overview selection


class GdalWarp:
    """``gdalwarp`` of the GDAL that rasterio runs on, called through ``GDALWarp()``."""

    version = property(lambda self: gdal_version())

    def __call__(self, src_path, dst_path, args):
        """Run gdalwarp; return the output's first band, grid and nodata."""
        gdal_warp(src_path, dst_path, args)
        with rasterio.open(dst_path) as ds:
            grid = Grid(ds.crs.to_string(), tuple(ds.transform)[:6], ds.width, ds.height)
            return ds.read(1), grid, ds.nodata


@pytest.fixture(scope="module")
def gdalwarp():
    gw = GdalWarp()
    major, minor = (int(v) for v in gw.version.split(".")[:2])
    assert (major, minor) >= (3, 10), f"the overview rule tested is GDAL >= 3.10's; rasterio has {gw.version}"
    return gw


def write_tif(path, data, transform, crs, nodata=None, overviews=()):
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[1],
        height=data.shape[0],
        count=1,
        dtype=data.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
        tiled=True,
    ) as ds:
        ds.write(data, 1)
        if overviews:
            ds.build_overviews(list(overviews), Resampling.average)


def target_args(grid: Grid) -> list[str]:
    left, bottom, right, top = grid.bounds
    return [
        "-t_srs",
        grid.crs,
        "-te",
        *map(repr, (left, bottom, right, top)),
        "-ts",
        str(grid.width),
        str(grid.height),
    ]


@pytest.mark.parametrize("method", ["nearest", "bilinear", "cubic", "average", "mode", "max"])
@pytest.mark.parametrize("name", ["utm_to_wgs84", "utm33_to_utm34"])
def test_exact_coordinates_match_gdalwarp_et_0(gdalwarp, tmp_path, name, method):
    scenario = SCENARIOS[name]
    src = make_source(SRC_SHAPE, "float32", -9999.0, seed=8)
    write_tif(tmp_path / "src.tif", src, SRC_TRANSFORM, UTM33, nodata=-9999.0)
    args = ["-of", "GTiff", "-r", method, "-et", "0", *target_args(scenario.grid)]
    ref, grid, dst_nodata = gdalwarp(tmp_path / "src.tif", tmp_path / "out.tif", args)
    assert dst_nodata == -9999.0
    ours, valid = warp(src, UTM33, SRC_TRANSFORM, grid, method=method, nodata=-9999.0, max_error=0)
    assert_like_gdal(ours, valid, ref, -9999.0, method, Scenario(name, UTM33, SRC_TRANSFORM, grid))


OVERVIEW_FACTORS = (2, 4, 8, 16)


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory):
    """A 1000 x 1000 GeoTIFF with overviews of 500, 250, 125 and 63 pixels (distinct contents)."""
    path = tmp_path_factory.mktemp("ovr") / "pyramid.tif"
    data = np.random.default_rng(0).integers(0, 255, (1000, 1000), dtype=np.uint8)
    write_tif(path, data, SRC_TRANSFORM, UTM33, overviews=OVERVIEW_FACTORS)
    widths = [1000]
    for level in range(len(OVERVIEW_FACTORS)):
        with rasterio.open(path, overview_level=level) as ds:
            widths.append(ds.width)
    resolutions = [SRC_TRANSFORM.a * widths[0] / w for w in widths]
    return path, resolutions


def gdal_overview_choice(gdalwarp, path, out, grid: Grid) -> int:
    """The level gdalwarp -ovr AUTO reads (0 = full resolution), seen by matching its pixels with each level."""
    base = ["-of", "GTiff", "-r", "nearest", "-et", "0", *target_args(grid)]
    auto = gdalwarp(path, out, [*base, "-ovr", "AUTO"])[0]
    levels = ["NONE", *map(str, range(len(OVERVIEW_FACTORS)))]
    matches = [
        i
        for i, level in enumerate(levels)
        if np.array_equal(gdalwarp(path, out, [*base, "-ovr", level])[0], auto)
    ]
    assert len(matches) == 1, f"levels {matches} all give gdalwarp's output: test data cannot tell them apart"
    return matches[0]


def centred_grid(crs: str, resolution: float, size: int = 40) -> Grid:
    x, y = pyproj.Transformer.from_crs(UTM33, crs, always_xy=True).transform(504000.0, 4496000.0)
    half = resolution * size / 2
    return Grid(crs, (resolution, 0.0, x - half, 0.0, -resolution, y + half), size, size)


@pytest.mark.parametrize("ratio", [1.0, 1.5, 1.95, 2.0, 2.08, 3.9, 4.05, 7.89, 7.91, 8.5, 15.0, 20.0, 40.0])
def test_choose_overview_matches_gdalwarp(gdalwarp, pyramid, tmp_path, ratio):
    path, resolutions = pyramid
    grid = centred_grid(UTM33, SRC_TRANSFORM.a * ratio)
    target = overview_target_resolution(grid, UTM33, SRC_TRANSFORM)
    assert math.isclose(target, SRC_TRANSFORM.a * ratio, rel_tol=1e-9)
    assert choose_overview(resolutions, target) == gdal_overview_choice(
        gdalwarp, path, tmp_path / "o.tif", grid
    )


@pytest.mark.parametrize(
    "crs, unit", [("EPSG:32634", 1.0), pytest.param("EPSG:4326", 1 / 111000, marks=pytest.mark.slow)]
)
@pytest.mark.parametrize("ratio", [1.4, 1.9, 3.7, 4.2, 7.6, 8.4, 15.5, 30.0])
def test_choose_overview_matches_gdalwarp_across_crs(gdalwarp, pyramid, tmp_path, crs, unit, ratio):
    path, resolutions = pyramid
    grid = centred_grid(crs, SRC_TRANSFORM.a * ratio * unit)
    target = overview_target_resolution(grid, UTM33, SRC_TRANSFORM)
    assert choose_overview(resolutions, target) == gdal_overview_choice(
        gdalwarp, path, tmp_path / "o.tif", grid
    )


def test_choose_overview_arguments():
    assert choose_overview([10.0], 1000.0) == 0
    assert choose_overview([10.0, 20.0, 40.0], 5.0) == 0
    with pytest.raises(PlanError):
        choose_overview([], 10.0)
    with pytest.raises(PlanError):
        choose_overview([10.0, -20.0], 10.0)


# --------------------------------------------------------------------------------------------------------
# Grid


@settings(max_examples=200, deadline=None)
@given(
    left=st.floats(-1e6, 1e6),
    bottom=st.floats(-1e6, 1e6),
    width=st.floats(0.01, 5e4),
    height=st.floats(0.01, 5e4),
    xexp=st.integers(-6, 6),
    yexp=st.integers(-6, 6),
)
def test_from_bounds_snaps_outward_like_aligned_target(left, bottom, width, height, xexp, yexp):
    # Dyadic resolutions keep rasterio's floating-point arithmetic exact, so it can serve as the oracle.
    xres, yres = 2.0**xexp, 2.0**yexp
    right, top = left + width, bottom + height
    # Grid snaps bounds within 1e-9 pixel of a pixel edge onto it; aligned_target has no tolerance.
    for value, res in ((left, xres), (right, xres), (bottom, yres), (top, yres)):
        assume(abs(value / res - round(value / res)) > 1e-6)
    grid = Grid.from_bounds(UTM33, (left, bottom, right, top), (xres, yres))
    t, w, h = aligned_target(Affine(right - left, 0, left, 0, -(top - bottom), top), 1, 1, (xres, yres))
    assert grid.transform == tuple(t)[:6] and (grid.width, grid.height) == (w, h)
    gl, gb, gr, gt = grid.bounds
    assert gl <= left and gb <= bottom and gr >= right and gt >= top
    assert grid.res == (xres, yres)


def test_grid_geometry_matches_rasterio():
    g = SCENARIOS["utm_to_wgs84"].grid
    assert g.bounds == array_bounds(g.height, g.width, Affine(*g.transform))
    assert g.shape == (g.height, g.width)
    chunk = g.window_grid(16, 32, 10, 20)
    expected = rasterio.windows.transform(rasterio.windows.Window(32, 16, 20, 10), Affine(*g.transform))
    assert chunk.transform == tuple(expected)[:6] and (chunk.height, chunk.width) == (10, 20)
    rotated = Grid(UTM33, tuple(Affine.rotation(30) @ Affine.scale(2, -2))[:6], 5, 5)
    assert all(math.isclose(r, 2.0) for r in rotated.res)
    assert Grid(UTM33, Affine(*g.transform), 3, 4).transform == g.transform


@pytest.mark.parametrize(
    "kwargs",
    [
        {"crs": "", "transform": (1, 0, 0, 0, -1, 0), "width": 1, "height": 1},
        {"crs": UTM33, "transform": (1, 0, 0, 0, 0, 0), "width": 1, "height": 1},
        {"crs": UTM33, "transform": (1, 0, 0, 0, -1), "width": 1, "height": 1},
        {"crs": UTM33, "transform": (1, 0, float("nan"), 0, -1, 0), "width": 1, "height": 1},
        {"crs": UTM33, "transform": (1, 0, 0, 0, -1, 0), "width": 0, "height": 1},
        {"crs": UTM33, "transform": (1, 0, 0, 0, -1, 0), "width": 2.5, "height": 1},
    ],
)
def test_bad_grids_raise_plan_errors(kwargs):
    with pytest.raises(PlanError):
        Grid(**kwargs)


@pytest.mark.parametrize(
    "bounds, res", [((0, 0, 0, 1), 1.0), ((0, 0, 1, 1), 0.0), ((0, 0, 1, 1), (1.0, -1.0)), ((0, 0, 1), 1.0)]
)
def test_bad_bounds_raise_plan_errors(bounds, res):
    with pytest.raises(PlanError):
        Grid.from_bounds(UTM33, bounds, res)


# --------------------------------------------------------------------------------------------------------
# Mistakes


def test_resample_rejects_bad_requests():
    src = np.zeros((4, 4), np.uint8)
    cols = rows = np.full((2, 2), 1.5)
    with pytest.raises(PlanError, match="method"):
        resample(src, None, cols, rows, method="lanczos")
    with pytest.raises(PlanError, match="dtype"):
        resample(src.astype(np.complex64), None, cols, rows)
    with pytest.raises(PlanError, match="dtype"):
        resample(src.astype(bool), None, cols, rows)
    with pytest.raises(PlanError, match="shape"):
        resample(src, np.ones((3, 3), bool), cols, rows)
    with pytest.raises(PlanError, match="differ"):
        resample(src, None, cols, rows[:1])
    with pytest.raises(PlanError, match="fill"):
        resample(src, None, cols, rows, fill_value=300)
    with pytest.raises(PlanError, match="fill"):
        resample(src, None, cols, rows, nodata=1.5)
    with pytest.raises(PlanError, match="footprints"):
        resample(src, None, cols, rows, method="average", footprints=(cols, rows))
    with pytest.raises(PlanError, match="CRS"):
        source_coordinates(Grid("EPSG:999999", (1, 0, 0, 0, -1, 0), 2, 2), UTM33, SRC_TRANSFORM)
    with pytest.raises(PlanError, match="max_error"):
        source_coordinates(SCENARIOS["up_2x"].grid, UTM33, SRC_TRANSFORM, max_error=-1)


def test_points_that_fail_to_transform_are_invalid_not_errors():
    src = make_source((20, 20), "float32", None, holes=False)
    cols = np.array([[np.nan, 5.5], [np.inf, 1e300]])
    rows = np.array([[5.5, np.nan], [5.5, -1e300]])
    for method in METHODS:
        values, valid = resample(src, None, cols, rows, method=method, nodata=-1.0)
        assert not valid.any() and (values == -1.0).all()
