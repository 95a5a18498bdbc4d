"""Streamed window reads (``cog.iter_windows``): the pixels GDAL reads, file by file, within a budget."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

import rasteret_dask.cog as cog
from rasteret_dask.errors import ReadError
from rasteret_dask.geo.windows import PixelWindow

# (row_start, row_stop, col_start, col_stop): inside one tile, across tiles, a whole file, a corner.
WINDOWS = [(3, 40, 5, 60), (20, 150, 30, 170), (0, 200, 0, 180), (190, 200, 170, 180)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    rng = np.random.default_rng(7)
    paths = []
    for k in range(5):
        path = root / f"f{k}.tif"
        data = rng.integers(0, 60000, (2, 200, 180), dtype=np.uint16)
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=180,
            height=200,
            count=2,
            dtype="uint16",
            tiled=True,
            blockxsize=64,
            blockysize=64,
            compress="deflate",
            predictor=2,
            crs="EPSG:32632",
            transform=from_origin(500_000, 5_000_000, 10, 10),
        ) as dst:
            dst.write(data)
        paths.append(str(path))
    return paths


def _reads(paths):
    reads, expected = [], []
    for path in paths:
        header = cog.read_cog_header(path).tiff
        with rasterio.open(path) as src:
            for r0, r1, c0, c1 in WINDOWS:
                reads.append(cog.plan_window_read(path, header, PixelWindow(r0, r1, c0, c1)))
                expected.append(src.read(window=Window(c0, r0, c1 - c0, r1 - r0)))
    return reads, expected


def test_every_window_once_with_gdal_pixels(files):
    reads, expected = _reads(files)
    seen = dict(cog.iter_windows(reads))
    assert sorted(seen) == list(range(len(reads)))
    for position, pixels in seen.items():
        np.testing.assert_array_equal(pixels, expected[position])
    for ours, theirs in zip(cog.read_windows(reads), expected, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_reads_of_one_file_arrive_together(files):
    reads, _ = _reads(files)
    urls = [reads[p].url for p, _ in cog.iter_windows(reads)]
    runs = [u for i, u in enumerate(urls) if i == 0 or u != urls[i - 1]]
    assert sorted(runs) == sorted(set(files))  # each file's windows in one unbroken run


def test_budget_holds_back_later_files(files, monkeypatch):
    decoded = []
    lock = threading.Lock()
    real = cog.decode_tile

    def counting(body, codec, rows):
        with lock:
            decoded.append(1)
        return real(body, codec, rows)

    monkeypatch.setattr(cog, "decode_tile", counting)
    reads, expected = _reads(files)
    per_file = len({(t.tile_row, t.tile_col) for r in reads[: len(WINDOWS)] for t in r.tiles})
    stream = cog.iter_windows(reads, max_bytes=1)  # one file at a time
    position, pixels = next(stream)
    time.sleep(0.5)  # were the budget ignored, every file would be decoded by now
    assert len(decoded) == per_file
    np.testing.assert_array_equal(pixels, expected[position])
    rest = dict(stream)
    assert len(rest) == len(reads) - 1
    assert len(decoded) == per_file * len(files)


def test_failure_is_raised_and_early_stop_does_not_hang(files, tmp_path):
    reads, _ = _reads(files)
    gone = tmp_path / "gone.tif"
    gone.write_bytes(Path(files[0]).read_bytes())
    header = cog.read_cog_header(str(gone)).tiff
    gone.unlink()
    broken = [*reads, cog.plan_window_read(str(gone), header, PixelWindow(0, 10, 0, 10))]
    with pytest.raises(ReadError):
        list(cog.iter_windows(broken))
    stream = cog.iter_windows(reads, max_bytes=1)
    next(stream)
    stream.close()  # cancels the rest
    assert len(cog.read_windows(reads)) == len(reads)  # the loop is still usable
