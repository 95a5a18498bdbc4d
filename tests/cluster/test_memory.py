"""Per-worker memory stays bounded: a temporal mean over 20 km x 20 km (2000 x 2000 px at 10 m) x 24
steps x 4 bands (768 MB of pixels, 3 GB as float64) on one worker process limited to 2 GB, with
spilling to disk switched off: the job must finish, the worker's RSS stay under its limit, and the
mean equal numpy's over rasterio reads."""

from __future__ import annotations

import re
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from distributed import Client, LocalCluster

import rasteret_dask as rd
from tests.read.stack_data import UTM33, Scene, records_table

SIZE, STEPS, BANDS, TILE = 2000, 24, ("B1", "B2", "B3", "B4"), 512
LIMIT = 2_000_000_000
TRANSFORM = Affine(10.0, 0.0, 400_000.0, 0.0, -10.0, 5_360_000.0)


def write_scene(path: Path, k: int) -> Path:
    """Four uint16 bands, pixel-interleaved (the COG driver's layout: one tile holds every band), with a
    nodata (0) margin."""
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    data = np.stack([((rows * (b + 1) + cols * (k + 1)) % 5000 + 1).astype("uint16") for b in range(4)])
    data[:, :, : 40 + 10 * k] = 0  # a different nodata margin on each date
    profile = {
        "driver": "COG",
        "width": SIZE,
        "height": SIZE,
        "count": 4,
        "dtype": "uint16",
        "crs": UTM33,
        "transform": TRANSFORM,
        "blocksize": TILE,
        "compress": "deflate",
        "nodata": 0,
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return path


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    folder = tmp_path_factory.mktemp("memory")
    t0 = pd.Timestamp("2024-01-01T10:00:00Z")
    scenes = [
        Scene(
            f"r{k:02d}",
            t0 + pd.Timedelta(days=5 * k),
            UTM33,
            TRANSFORM,
            SIZE,
            {"all": write_scene(folder / f"r{k:02d}.tif", k)},
        )
        for k in range(STEPS)
    ]
    table = records_table(scenes)
    table["assets"] = [
        {band: {"href": str(s.paths["all"]), "band_index": b} for b, band in enumerate(BANDS)} for s in scenes
    ]
    return rd.build_from_table(table, progress=False), scenes


def expected_mean(scenes) -> np.ndarray:
    total = np.zeros((4, SIZE, SIZE))
    count = np.zeros((4, SIZE, SIZE))
    for s in scenes:
        with rasterio.open(s.paths["all"]) as src:
            data = src.read()
        total += data
        count += data != 0
    with np.errstate(invalid="ignore"):
        return (total / count).astype("float64")


def _peak_rss() -> int:
    """The process's peak resident set size (Linux's high-water mark), in bytes."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024


def test_temporal_mean_of_a_20km_stack_in_a_2gb_worker(collection):
    collection, scenes = collection
    memory = {
        "distributed.worker.memory.target": False,
        "distributed.worker.memory.spill": False,
        "distributed.worker.memory.pause": 0.9,
        "distributed.worker.memory.terminate": 0.98,
    }
    with (
        dask.config.set(memory),
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=True, memory_limit=LIMIT, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        ds = collection.get_xarray(bands=list(BANDS))
        assert ds.sizes == {"time": STEPS, "y": SIZE, "x": SIZE}
        mean = ds.where(ds != 0).mean("time")
        got = client.compute(mean).result()
        peaks = client.run(_peak_rss)
        spilled = client.run(lambda dask_worker: len(getattr(dask_worker.data, "slow", ())))
    peak = max(peaks.values())
    print(f"worker peak RSS {peak / 1e6:.0f} MB of {LIMIT / 1e6:.0f} MB")
    assert peak < LIMIT and not any(spilled.values())
    want = expected_mean(scenes)
    for b, band in enumerate(BANDS):
        np.testing.assert_allclose(
            got[band].values, want[b], rtol=1e-6, equal_nan=True
        )  # where() makes float32
