"""The benchmarks still run: ``python -m benchmarks --scale smoke`` on a handful of tiny files, once.

Figures are not checked (they mean nothing at this size); what is checked is that every benchmark
and tool produced a measurement, that the tools agreed on what they read, and that the generated
data set's manifest matches what rasterio sees in the files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    rows_path = tmp / "rows.json"
    command = [sys.executable, "-m", "benchmarks", "--scale", "smoke", "--data-dir", str(tmp / "data")]
    proc = subprocess.run(
        [*command, "--json", str(rows_path)], cwd=REPO, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, f"benchmarks failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return proc.stdout, json.loads(rows_path.read_text()), tmp / "data"


def test_every_benchmark_and_tool_measured(smoke_run):
    from benchmarks import bench_decode, bench_headers

    stdout, rows, _ = smoke_run
    assert "| benchmark | case | tool |" in stdout and "| rasterio / GDAL |" in stdout
    assert not [r for r in rows if r["failed"]]
    for module in (bench_headers, bench_decode):
        measured = {r["tool"] for r in rows if r["benchmark"] == module.NAME and r["rate"]}
        assert measured == set(module.TOOLS.values())
    headers = [r for r in rows if r["benchmark"] == "headers"]
    assert {r["case"] for r in headers} == {"8 COGs, 30 ms"}  # smoke runs one latency only
    assert all(r["requests"] and r["bytes"] for r in headers)
    ours = [r for r in rows if r["tool"].startswith("rasteret_dask")]
    assert all("×" in r["ratio"] and r["target"] for r in ours)


def test_manifest_matches_the_files(smoke_run):
    import rasterio

    from benchmarks.data import load_dataset, scene_pixels

    _, _, data = smoke_run
    manifests = sorted(data.glob("*/manifest.json"))
    assert len(manifests) == 2  # uint16 deflate and float32 zstd
    for manifest in manifests:
        ds = load_dataset(manifest.parent)
        assert len(ds.files) == ds.spec.n_files
        assert len({r["path"] for r in ds.files}) == len(ds.files)
        for record in ds.files[:: max(1, len(ds.files) // 3)]:
            with rasterio.open(ds.path(record)) as src:
                assert src.crs.to_string() == record["crs"]
                assert list(src.transform)[:6] == record["transform"]
                assert list(src.bounds) == record["bounds"]
                assert src.overviews(1) == record["overviews"] and record["overviews"]
                assert src.block_shapes[0] == (ds.spec.tile, ds.spec.tile)
                assert src.compression.name.lower() == ds.spec.compression
                zone = ds.spec.zones.index(record["zone"])
                date = sorted({r["datetime"] for r in ds.files}).index(record["datetime"])
                band = ds.spec.bands.index(record["band"])
                expected = scene_pixels(ds.spec, zone, date, band)
                np.testing.assert_array_equal(src.read(1), expected)  # deterministic and lossless
