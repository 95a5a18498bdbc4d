"""``Collection.read_window`` against rasterio: ``rasterio.merge.merge`` on the records' own CRS, and
``rasterio.warp.reproject`` onto the same grid for records in another CRS. Scenes: ``stack_data.py``
(records in UTM zones 32 and 33 and in EPSG:4326, uint16 with nodata edges) plus one scene per dtype."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import rasterio
import rasterio.merge
from affine import Affine
from rasterio.enums import Resampling

from rasteret_dask.errors import PlanError
from rasteret_dask.geo.grid import Grid
from rasteret_dask.read.window import WindowReader, merge_grid

from .stack_data import (
    UTM32,
    UTM33,
    agreement,
    build,
    make_scene,
    make_scenes,
    reproject_band,
    reproject_file,
    write_cog,
)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return make_scenes(tmp_path_factory.mktemp("window-scenes"))


@pytest.fixture(scope="module")
def by_id(scenes):
    return {s.id: s for s in scenes}


@pytest.fixture(scope="module")
def collection(scenes):
    return build(scenes)


def merged(paths, bounds, res, method="nearest") -> np.ndarray:
    """``rasterio.merge.merge`` of single-band files, first valid pixel first, nodata 0."""
    sources = [rasterio.open(p) for p in paths]
    try:
        data, _ = rasterio.merge.merge(
            sources, bounds=bounds, res=res, nodata=0, resampling=Resampling[method]
        )
    finally:
        for s in sources:
            s.close()
    return data[0]


def lattice_bounds(scene, col0: float, row0: float, width: int, height: int, res: float = 10.0):
    """Bounds of a window whose top-left corner is the scene's pixel corner (col0, row0)."""
    left, top = scene.transform @ (col0, row0)
    return (left, top - height * res, left + width * res, top)


def test_merge_grid_is_rasterio_merge_grid(scenes):
    bounds = (500_003.0, 5_350_001.0, 500_997.0, 5_351_116.0)
    grid = merge_grid(bounds, (10.0, 12.5), UTM33)
    with rasterio.open(scenes[1].paths["B04"]) as src:
        data, transform = rasterio.merge.merge([src], bounds=bounds, res=(10.0, 12.5), nodata=0)
    assert grid.shape == data.shape[1:]
    assert Affine(*grid.transform) == transform


@pytest.mark.parametrize("band", ["B04", "B05"])
def test_same_crs_equals_rasterio_merge(scenes, by_id, collection, band):
    """Zone-33 records on their lattice (copies) and 20 m B05 at 10 m, mosaicked first valid first."""
    b33, e33 = by_id["b33"], by_id["e33"]
    bounds = lattice_bounds(b33, 37, 21, 220, 150)
    ids = ["e33", "b33"]  # record_ids order is the mosaic order
    got = collection.read_window(bounds=bounds, res=10.0, crs=UTM33, bands=[band], record_ids=ids)
    expected = merged([by_id[i].paths[band] for i in ids], bounds, 10.0)
    assert got.shape == (1, *expected.shape) and got.dtype == np.uint16
    assert (expected != 0).mean() > 0.5 and (expected == 0).any()  # data and nodata edges
    np.testing.assert_array_equal(got[0], expected)
    # Default order: (datetime, id): b33 (day 0) before e33 (day 1).
    got = collection.read_window(bounds=bounds, res=10.0, crs=UTM33, bands=[band], record_ids=["b33", "e33"])
    np.testing.assert_array_equal(got[0], merged([b33.paths[band], e33.paths[band]], bounds, 10.0))
    assert not np.array_equal(got[0], expected)  # the order matters where they overlap


def test_default_crs_is_the_first_records_and_bands_stack(by_id, collection):
    b33 = by_id["b33"]
    bounds = lattice_bounds(b33, 10, 10, 64, 48)
    got = collection.read_window(bounds=bounds, res=10.0, bands=["B04", "B05"], record_ids=["b33"])
    assert got.shape == (2, 48, 64)
    for k, band in enumerate(["B04", "B05"]):
        np.testing.assert_array_equal(got[k], merged([b33.paths[band]], bounds, 10.0))


@pytest.mark.parametrize("method", ["nearest", "bilinear"])
def test_other_crs_equals_rasterio_reproject(by_id, collection, method):
    """Zone-33 and EPSG:4326 records onto a zone-32 grid at 12.5 m."""
    for record_id in ("b33", "c84"):
        scene = by_id[record_id]
        left, top = 720_000.0, 5_356_000.0
        bounds = (left, top - 150 * 12.5, left + 200 * 12.5, top)
        got = collection.read_window(
            bounds=bounds, res=12.5, crs=UTM32, bands=["B04"], record_ids=[record_id], resampling=method
        )
        grid = merge_grid(bounds, 12.5, UTM32)
        expected = reproject_file(scene.paths["B04"], grid, method, 0)
        a = agreement(got[0], expected, 0)
        assert a["pixels"] > 5000, a
        if method == "nearest":
            assert a["fraction"] >= 0.9999, a
        else:
            assert a["close_fraction"] >= 0.999, a


def test_groupby_gives_time_steps(by_id, collection):
    b33 = by_id["b33"]
    bounds = lattice_bounds(b33, 0, 0, 100, 100)
    per_day = collection.read_window(
        bounds=bounds, res=10.0, crs=UTM33, bands=["B04"], groupby="id", record_ids=["b33", "e33"]
    )
    assert per_day.shape == (2, 1, 100, 100)
    np.testing.assert_array_equal(per_day[0, 0], merged([b33.paths["B04"]], bounds, 10.0))
    np.testing.assert_array_equal(per_day[1, 0], merged([by_id["e33"].paths["B04"]], bounds, 10.0))
    one = collection.read_window(
        bounds=bounds, res=10.0, crs=UTM33, bands=["B04"], date_range=("2000", "2100")
    )
    assert one.shape == (1, 100, 100)


@pytest.mark.parametrize("dtype", ["uint8", "int16", "uint16", "int32", "float32", "float64"])
def test_dtypes_with_nodata(tmp_path, dtype):
    """Each dtype, with a nodata value and nodata edges, in two zones; merge and reproject as oracles."""
    rng = np.random.default_rng(3)
    nodata = {"uint8": 255, "int16": -999, "uint16": 0, "int32": -1, "float32": -9999.0, "float64": np.nan}[
        dtype
    ]
    scenes = []
    for k, crs in enumerate((UTM33, UTM32)):
        (tmp_path / f"s{k}").mkdir()
        base = make_scene(
            tmp_path / f"s{k}",
            f"s{k}",
            crs,
            pd.Timestamp("2024-05-01T10:00:00Z") + pd.Timedelta(days=k),
            size=128,
            blocksize=64,
            seed=k,
        )
        data = (rng.random((128, 128)) * 100).astype(dtype)
        data[:, :20] = nodata
        path = write_cog(tmp_path / f"s{k}_B04.tif", data, crs, base.transform, blocksize=64, nodata=nodata)
        scenes.append(type(base)(base.id, base.datetime, crs, base.transform, 128, {"B04": path}))
    collection = build(scenes)
    s33 = scenes[0]
    bounds = lattice_bounds(s33, 5, 7, 100, 90)
    got = collection.read_window(bounds=bounds, res=10.0, crs=UTM33, bands=["B04"], record_ids=["s0"])
    with rasterio.open(s33.paths["B04"]) as src:
        expected, _ = rasterio.merge.merge([src], bounds=bounds, res=10.0)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got[0], expected[0])
    # The zone-32 record warped onto the zone-33 grid; where nothing is valid, the band's nodata.
    grid = merge_grid(bounds, 10.0, UTM33)
    got = collection.read_window(bounds=bounds, res=10.0, crs=UTM33, bands=["B04"], record_ids=["s1"])
    fill = nodata
    theirs = reproject_band(scenes[1].paths["B04"], grid, "nearest", fill)
    np.testing.assert_array_equal(got[0], theirs)
    assert np.isnan(theirs).any() if dtype == "float64" else (theirs == fill).any()


def test_bad_input_raises(by_id, collection):
    bounds = lattice_bounds(by_id["b33"], 0, 0, 10, 10)
    with pytest.raises(PlanError, match="res"):
        collection.read_window(bounds=bounds, res=0, crs=UTM33, bands=["B04"])
    with pytest.raises(PlanError, match="right > left"):
        collection.read_window(bounds=(10, 0, 0, 10), res=1, crs=UTM33, bands=["B04"])
    with pytest.raises(PlanError, match="not in this collection"):
        collection.read_window(bounds=bounds, res=10.0, crs=UTM33, bands=["B99"])
    with pytest.raises(PlanError, match="nope"):
        collection.read_window(bounds=bounds, res=10.0, crs=UTM33, bands=["B04"], record_ids=["nope"])
    with pytest.raises(PlanError, match="no record overlaps the window"):
        collection.read_window(bounds=(0, 0, 100, 100), res=10.0, crs=UTM33, bands=["B04"])


def test_a_batch_shares_tiles_and_the_reader_pickles_small(by_id, collection, scenes, range_server):
    """Overlapping windows read together fetch each tile once; the reader pickles without sockets."""
    urls = {}
    for s in scenes:
        for p in s.paths.values():
            urls[str(p)] = range_server.put(f"window/{p.name}", p.read_bytes())
    served = build(scenes, href=lambda p: urls[str(p)])
    frame = served.window_records(record_ids=["b33"])
    reader = pickle.loads(pickle.dumps(WindowReader(frame, ["B04"])))
    b33 = by_id["b33"]
    grids = [
        merge_grid(lattice_bounds(b33, c, r, 64, 64), 10.0, UTM33)
        for c, r in ((0, 0), (32, 0), (0, 32), (32, 32))
    ]
    range_server.reset_stats()
    together = reader.read(grids)
    batch_stats = range_server.stats()
    for grid, got in zip(grids, together, strict=True):
        np.testing.assert_array_equal(got[0], merged([b33.paths["B04"]], grid.bounds, 10.0))
    # The four windows touch the four 64-px tiles at the corner; one GET fetches them (adjacent ranges).
    assert batch_stats["requests"] == 1
    single = Grid(UTM33, grids[0].transform, 96, 96)
    range_server.reset_stats()
    reader.read([single])
    assert range_server.stats()["bytes"] == batch_stats["bytes"]
