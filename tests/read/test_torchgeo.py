"""``Collection.to_torchgeo_dataset`` against torchgeo's own ``RasterDataset`` and rasterio.

Scenes: ``stack_data.py`` (records in UTM zones 32 and 33 and in EPSG:4326, bands B04 at 10 m and B05 at
20 m, uint16 with nodata 0 edges and holes). The oracle is torchgeo's ``RasterDataset`` reading the same
local files (zone 33 only: it needs one CRS to compare like with like), queried by the same sampler with
the same seeds, and ``rasterio.merge`` / ``Collection.read_window`` (itself tested against rasterio in
``test_window.py``) for the other cases.

Where the semantics coincide the samples are identical: same CRS and resolution, nearest resampling, or
bilinear on the records' own lattice (B04). Known differences, and why:

- B05 (20 m) read at 10 m with bilinear: ``RasterDataset`` upsamples with ``rasterio.merge``'s decimated
  read (GDAL RasterIO), we with GDAL's warper kernels (``rasterio.warp.reproject``); they agree except
  next to nodata, where RasterIO's kernel mixes in nodata pixels and the warper uses valid pixels only,
  and on the chip's outer pixels, where RasterIO's kernel stops at the edge of the window it reads and
  the warper uses the source pixels beyond it (as a whole-raster warp would).
- Time: ``RasterDataset`` takes dates from file names (here whole days) and matches queries on the
  right-closed ``(tmin, tmax]``; our index holds the records' datetimes as instants ``[t, t]`` and a
  query selects records in ``[tmin, tmax]``. The samplers' spatial queries are identical (same index
  geometries); their time slices differ, and each picks the same single record here.
- Mosaics: both take the first valid pixel, ``RasterDataset`` in sorted file name order, we in (datetime,
  id) order: the file names below sort by date so the orders coincide.
- dtype: ``image`` is float32 on both sides (``RasterDataset``'s default), ``mask`` int64 (its default).
"""

from __future__ import annotations

import os
import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import rasterio
import rasterio.merge
import rasterio.warp
from pyproj import CRS
from rasterio.enums import Resampling

try:
    from rasteret_dask.read import torchgeo as rtg
except ImportError as exc:  # only when torch/torchgeo are missing (the extra): any other error fails
    if "rasteret_dask[torchgeo]" not in str(exc):
        raise
    pytest.skip(str(exc), allow_module_level=True)

import torch
from torch.utils.data import DataLoader
from torchgeo.datasets import RasterDataset, stack_samples
from torchgeo.samplers import GridGeoSampler, RandomBatchGeoSampler, RandomGeoSampler

from rasteret_dask.errors import PlanError

from .stack_data import UTM32, UTM33, build, make_scenes

BANDS = ["B04", "B05"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return make_scenes(tmp_path_factory.mktemp("torchgeo-scenes"))


@pytest.fixture(scope="module")
def by_id(scenes):
    return {s.id: s for s in scenes}


@pytest.fixture(scope="module")
def local(scenes):
    return build(scenes)


@pytest.fixture(scope="module")
def zone33(scenes):
    return [s for s in scenes if s.crs == UTM33]  # b33 (day 0), e33 (day 1)


@pytest.fixture(scope="module")
def local33(zone33):
    return build(zone33)


@pytest.fixture(scope="module")
def named33(zone33, tmp_path_factory):
    """The zone-33 files under names RasterDataset parses: ``{yyyymmdd}_{id}_{band}.tif`` (symlinks)."""
    directory = tmp_path_factory.mktemp("torchgeo-named")
    for s in zone33:
        for band, path in s.paths.items():
            os.symlink(path, directory / f"{s.datetime:%Y%m%d}_{s.id}_{band}.tif")
    return directory


def raster_dataset(directory, method: str | None = None) -> RasterDataset:
    """torchgeo's RasterDataset over the named files (``method``: its resampling, default its own)."""

    class Scenes(RasterDataset):
        filename_glob = "*_B04.tif"
        filename_regex = r"^(?P<date>\d{8})_(?P<id>[a-z0-9]+)_(?P<band>B0[45])\.tif$"
        date_format = "%Y%m%d"
        separate_files = True
        all_bands = tuple(BANDS)

    if method is not None:
        Scenes.resampling = property(lambda self: Resampling[method])
    return Scenes(str(directory), bands=BANDS)


@pytest.fixture(scope="module")
def urls(scenes, range_server_process) -> dict[str, str]:
    """The scenes' files on the range server: local path -> URL."""
    out = {}
    for s in scenes:
        for path in s.paths.values():
            out[str(path)] = range_server_process.put(f"torchgeo/{path.name}", path.read_bytes())
    return out


@pytest.fixture(scope="module")
def served(scenes, urls):
    """The collection reading the scenes over HTTP."""
    return build(scenes, href=lambda p: urls[str(p)])


def merged(paths, bounds, res=10.0) -> np.ndarray:
    """``rasterio.merge.merge`` of single-band files, first valid first, nodata 0, nearest."""
    sources = [rasterio.open(p) for p in paths]
    try:
        data, _ = rasterio.merge.merge(sources, bounds=bounds, res=res, nodata=0)
    finally:
        for s in sources:
            s.close()
    return data[0]


def grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``mask`` grown by ``pixels`` (4-connected steps)."""
    for _ in range(pixels):
        p = np.pad(mask, 1)
        mask = p[1:-1, 1:-1] | p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:]
    return mask


def query_box(q) -> tuple[float, float, float, float]:
    return (q[0].start, q[1].start, q[0].stop, q[1].stop)


def ids_at(scenes, tmin, tmax) -> list[str]:
    """Record ids with a datetime in [tmin, tmax] (tz-naive UTC bounds), in (datetime, id) order."""
    inside = [s for s in scenes if tmin <= s.datetime.tz_convert(None) <= tmax]
    return [s.id for s in sorted(inside, key=lambda s: (s.datetime, s.id))]


def expected_image(collection, scenes, query, res, crs, bands=BANDS) -> np.ndarray:
    """The oracle of one sample: ``read_window`` of the query's records in mosaic order."""
    ids = ids_at(scenes, query[2].start, query[2].stop)
    return collection.read_window(bounds=query_box(query), res=res, crs=crs, bands=bands, record_ids=ids)


# ------------------------------------------------------------------------------------------- the index


def test_index_crs_res_and_times(scenes, local):
    ds = local.to_torchgeo_dataset(bands=BANDS)
    order = sorted(scenes, key=lambda s: (s.datetime, s.id))
    assert ds.crs == CRS.from_user_input(UTM32)  # the first record's (a32)
    assert ds.res == (10.0, 10.0)  # the finest native resolution there (B04)
    assert list(ds.index["id"]) == [s.id for s in order]
    assert ds.index.index.closed == "both"
    stamps = [s.datetime.tz_convert(None) for s in order]
    assert list(ds.index.index.left) == stamps and list(ds.index.index.right) == stamps
    for scene, geometry in zip(order, ds.index.geometry, strict=True):
        with rasterio.open(scene.paths["B04"]) as src:
            if src.crs == CRS.from_user_input(UTM32):
                expected = tuple(src.bounds)
            else:
                expected = rasterio.warp.transform_bounds(src.crs, UTM32, *src.bounds, densify_pts=21)
        np.testing.assert_allclose(geometry.bounds, expected, rtol=0, atol=1e-3)
        assert geometry.equals(geometry.envelope)  # boxes, as RasterDataset's

    other = local.to_torchgeo_dataset(bands=["B05"], crs=UTM33, time_series=True)
    assert other.crs == CRS.from_user_input(UTM33) and other.res == (20.0, 20.0)
    assert set(other.index.index.left) == {min(stamps)} and set(other.index.index.right) == {max(stamps)}
    with pytest.raises(PlanError, match="res="):
        local.to_torchgeo_dataset(bands=BANDS, crs="EPSG:3857")
    assert local.to_torchgeo_dataset(bands=BANDS, crs="EPSG:3857", res=(12.0, 15.0)).res == (12.0, 15.0)


# ------------------------------------------------------------------------- against torchgeo's own dataset


def sampled(dataset, kind: str, seed: int) -> list:
    """One epoch of a sampler's queries, its random state fixed (the tile choice uses torch's global RNG)."""
    torch.manual_seed(seed)
    if kind == "grid":
        return list(GridGeoSampler(dataset, size=64, stride=45))
    return list(
        RandomGeoSampler(dataset, size=(40, 56), length=24, generator=torch.Generator().manual_seed(seed))
    )


@pytest.mark.parametrize("kind", ["random", "grid"])
@pytest.mark.parametrize("method", ["nearest", "bilinear"])
def test_same_samples_as_raster_dataset(local33, named33, kind, method):
    ours = local33.to_torchgeo_dataset(bands=BANDS, resampling=method)
    theirs = raster_dataset(named33, method)
    if method == "bilinear":
        assert theirs.resampling == Resampling.bilinear  # also RasterDataset's default for float images
    our_queries, their_queries = sampled(ours, kind, 5), sampled(theirs, kind, 5)
    assert [q[:2] for q in our_queries] == [q[:2] for q in their_queries]  # same index, same chips
    assert len(our_queries) >= 24
    samples = ours.__getitems__(our_queries)
    valid = []
    for query, their_query, sample in zip(our_queries, their_queries, samples, strict=True):
        expected = theirs[their_query]
        assert sample.keys() == expected.keys() == {"crs", "bounds", "image"}
        assert sample["crs"] == expected["crs"] and sample["bounds"] == query
        got, want = sample["image"], expected["image"]
        assert got.dtype == want.dtype == torch.float32 and got.shape == want.shape
        valid.append(float((want != 0).float().mean()))
        if method == "nearest":
            assert torch.equal(got, want)
            continue
        assert torch.equal(got[0], want[0])  # B04: the records' own lattice, no resampling at all
        a, b = got[1].numpy(), want[1].numpy()
        # Away from nodata and from the chip's outer pixels, where RasterIO's kernel is cut at the window.
        nodata = grow((a == 0) | (b == 0), 2)
        nodata[[0, -1], :] = nodata[:, [0, -1]] = True
        np.testing.assert_array_equal(a[~nodata], b[~nodata])
    assert np.mean(valid) > 0.5  # real pixels, not fill


def test_mosaic_over_all_times_as_raster_dataset(local33, named33):
    """A query without a time slice: both records, first valid pixel first (b33, then e33)."""
    ours = local33.to_torchgeo_dataset(bands=BANDS)
    theirs = raster_dataset(named33, "nearest")
    x0, y0, x1, y1 = ours.index.total_bounds
    query = (slice(x0 + 100, x1 - 60), slice(y0 + 30, y1 - 200))
    got, want = ours[query]["image"], theirs[query]["image"]
    assert got.shape == want.shape == (2, round((y1 - y0 - 230) / 10), round((x1 - x0 - 160) / 10))
    assert torch.equal(got, want)
    single = theirs[(*query, slice(pd.Timestamp("2024-05-01"), pd.Timestamp("2024-05-01 12:00")))]["image"]
    assert not torch.equal(got, single)  # the second record fills the first one's holes


# ------------------------------------------------------------------------------------ DataLoaders over HTTP


def check_epoch(loader, dataset, local, scenes, length: int, bands=BANDS) -> None:
    """Every sample of the epoch equals the local read of its query (first valid, (datetime, id))."""
    seen = 0
    for batch in loader:
        assert batch["image"].dtype == torch.float32 and batch["image"].shape[1] == len(bands)
        for query, image in zip(batch["bounds"], batch["image"], strict=True):
            expected = expected_image(local, scenes, query, dataset.res, UTM32, bands)
            np.testing.assert_array_equal(image.numpy(), expected.astype(np.float32))
            seen += 1
    assert seen == length


@pytest.mark.parametrize(
    "context, kind",
    [("fork", "random"), ("fork", "grid"), ("spawn", "batch")],
)
def test_dataloader_workers_over_http(served, local, scenes, range_server, context, kind):
    """Two worker processes (fork, spawn) read an epoch over HTTP at 30 ms latency, pixels exact."""
    dataset = served.to_torchgeo_dataset(bands=BANDS)
    dataset[sampled(dataset, "random", 9)[0]]
    assert range_server.requests() > 0  # the parent read over HTTP (and started its I/O loop) first
    range_server.set_latency(30)
    kwargs = {"num_workers": 2, "collate_fn": stack_samples, "multiprocessing_context": context}
    torch.manual_seed(3)
    generator = torch.Generator().manual_seed(3)
    if kind == "random":
        sampler = RandomGeoSampler(dataset, size=48, length=64, generator=generator)
        loader = DataLoader(dataset, sampler=sampler, batch_size=16, **kwargs)
    elif kind == "grid":
        sampler = GridGeoSampler(dataset, size=96, stride=96)
        loader = DataLoader(dataset, sampler=sampler, batch_size=16, **kwargs)
    else:
        sampler = RandomBatchGeoSampler(dataset, size=48, batch_size=16, length=64, generator=generator)
        loader = DataLoader(dataset, batch_sampler=sampler, **kwargs)
    range_server.reset_stats()
    check_epoch(loader, dataset, local, scenes, len(sampler) * (16 if kind == "batch" else 1))
    assert range_server.requests() > 0


def test_a_batch_is_one_fetch(zone33, urls, range_server):
    """Overlapping windows of a batch cost no more GETs than the files they touch; one by one, more."""
    dataset = build(zone33, href=lambda p: urls[str(p)]).to_torchgeo_dataset(bands=BANDS)
    b33 = zone33[0]
    t = b33.datetime.tz_convert(None)
    left, top = b33.transform * (0, 0)
    queries = [
        (slice(left + c, left + c + 640), slice(top - r - 640, top - r), slice(t, t))
        for r in (0, 320, 640)
        for c in (0, 320, 640)
    ]
    range_server.reset_stats()
    together = dataset.__getitems__(queries)
    batch_requests = range_server.requests()
    assert 1 <= batch_requests <= 2  # the two files (B04, B05) of the one record at that time
    range_server.reset_stats()
    alone = [dataset[q] for q in queries]
    assert range_server.requests() >= 2 * len(queries)
    for a, b, query in zip(together, alone, queries, strict=True):
        assert torch.equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["image"][0].numpy(), merged([b33.paths["B04"]], query_box(query)))


# ------------------------------------------------------------------------------- time series, labels


def test_time_series_steps_are_solar_days(local, scenes):
    ds = local.to_torchgeo_dataset(bands=BANDS, time_series=True)
    # A window every record covers: the middle of the first record (all six overlap there).
    a32 = next(s for s in scenes if s.id == "a32")
    left, top = a32.transform * (80, 80)
    query = (slice(left, left + 320), slice(top - 240, top))
    sample = ds[query]
    days = {}  # solar day at ~12° E: UTC + 48 min
    for s in sorted(scenes, key=lambda s: (s.datetime, s.id)):
        days.setdefault((s.datetime + pd.Timedelta(minutes=48)).date(), []).append(s)
    assert len(days) == 3
    assert sample["image"].shape == (3, 2, 24, 32) and sample["image"].dtype == torch.float32
    for step, members in enumerate(days.values()):
        expected = local.read_window(
            bounds=query_box(query), res=10.0, crs=UTM32, bands=BANDS, record_ids=[s.id for s in members]
        )
        np.testing.assert_array_equal(sample["image"][step].numpy(), expected.astype(np.float32))
        assert sample["time"][step].item() == members[0].datetime.timestamp()
    # A time slice narrows the steps (days 1 and 2 here); a batch stacks to [B, T, C, H, W].
    later = slice(pd.Timestamp("2024-05-02"), pd.Timestamp("2024-05-03 12:00"))
    moved = (slice(left + 100, left + 420), slice(top - 340, top - 100))
    batch = stack_samples(ds.__getitems__([(*query, later), (*moved, later)]))
    assert batch["image"].shape == (2, 2, 2, 24, 32) and batch["time"].shape == (2, 2)
    for step, members in enumerate(list(days.values())[1:]):
        expected = local.read_window(
            bounds=query_box(moved), res=10.0, crs=UTM32, bands=BANDS, record_ids=[s.id for s in members]
        )
        np.testing.assert_array_equal(batch["image"][1, step].numpy(), expected.astype(np.float32))


def test_label_band_gives_mask(local33, zone33, named33):
    b33, e33 = zone33
    ds = local33.to_torchgeo_dataset(bands=["B04"], label_band="B05")
    same = local33.to_torchgeo_dataset(bands=BANDS, label_band="B05")
    queries = sampled(ds, "random", 2)[:6]
    for query, sample, other in zip(
        queries, ds.__getitems__(queries), same.__getitems__(queries), strict=True
    ):
        ids = ids_at(zone33, query[2].start, query[2].stop)
        (scene,) = [s for s in zone33 if s.id in ids]
        assert sample["image"].shape == (1, 40, 56) and sample["mask"].shape == (40, 56)
        assert sample["mask"].dtype == torch.int64
        np.testing.assert_array_equal(
            sample["image"][0].numpy(), merged([scene.paths["B04"]], query_box(query))
        )
        np.testing.assert_array_equal(sample["mask"].numpy(), merged([scene.paths["B05"]], query_box(query)))
        assert torch.equal(sample["mask"], other["mask"]) and torch.equal(sample["image"], other["image"])
    # Over time: the first valid label in (datetime, id) order, as rasterio.merge's "first".
    series = local33.to_torchgeo_dataset(bands=["B04"], label_band="B05", time_series=True)
    x0, y0, x1, y1 = series.index.total_bounds
    query = (slice(x0, x1), slice(y0, y1))
    sample = series[query]
    assert sample["image"].shape[:2] == (2, 1)
    expected = merged([b33.paths["B05"], e33.paths["B05"]], query_box(query))
    np.testing.assert_array_equal(sample["mask"].numpy(), expected)


def test_transforms_apply_to_samples(local33):
    def scale(sample):
        return {**sample, "image": sample["image"] / 10_000, "seen": True}

    ds = local33.to_torchgeo_dataset(bands=BANDS, transforms=scale)
    plain = local33.to_torchgeo_dataset(bands=BANDS)
    query = sampled(plain, "random", 1)[0]
    got = ds[query]
    assert got["seen"] and torch.equal(got["image"], plain[query]["image"] / 10_000)


# ------------------------------------------------------------------------------------ bad input, pickling


def test_bad_input(local33):
    ds = local33.to_torchgeo_dataset(bands=BANDS)
    x0, y0, x1, y1 = ds.index.total_bounds
    outside = (slice(x1 + 1000, x1 + 1640), slice(y0, y0 + 640))
    with pytest.raises(IndexError, match=r"query: .*not found in index with bounds") as info:
        ds[outside]
    assert repr(outside[0]) in str(info.value) and repr(x0) in str(info.value)
    with pytest.raises(IndexError, match="not found in index"):
        ds[(slice(x0, x1), slice(y0, y1), slice(pd.Timestamp("1990-01-01"), pd.Timestamp("1990-02-01")))]
    with pytest.raises(PlanError, match="not in this collection"):
        local33.to_torchgeo_dataset(bands=["B04", "B99"])
    with pytest.raises(PlanError, match="not in this collection"):
        local33.to_torchgeo_dataset(bands=["B04"], label_band="B99")
    for res in (0, -10.0, (10.0, 0.0)):
        with pytest.raises(PlanError, match="res must be positive"):
            local33.to_torchgeo_dataset(bands=BANDS, res=res)
    with pytest.raises(PlanError, match="res must be positive"):
        ds[(slice(x0, x0 + 640, 0.0), slice(y0, y0 + 640, 10.0))]


def test_pickles_small_and_reads_after_unpickling(served, scenes, local):
    ds = served.to_torchgeo_dataset(bands=BANDS)
    query = sampled(ds, "random", 4)[0]
    before = ds[query]  # the I/O loop and the reader's tree now exist in this process
    data = pickle.dumps(ds)
    assert len(data) < 100_000, len(data)  # six records: index, parsed headers, options
    again = pickle.loads(data)
    assert again.reader._tree is None
    assert torch.equal(again[query]["image"], before["image"])
    np.testing.assert_array_equal(
        before["image"].numpy(), expected_image(local, scenes, query, ds.res, UTM32).astype(np.float32)
    )


def test_torchvision_workaround_runs_once():
    """The import shim does nothing more once torchvision is imported (nor on a working torchvision)."""
    before = rtg._torchvision_fragment
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rtg._import_torchvision()
    assert rtg._torchvision_fragment is before
