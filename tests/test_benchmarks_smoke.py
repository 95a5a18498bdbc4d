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
# Every benchmark in fresh processes (about 25 of them, each importing dask, geopandas or rasterio): a
# minute or two on a quiet 2-core machine, several when the machine is busy.
SMOKE_SECONDS = 540
pytestmark = pytest.mark.timeout(SMOKE_SECONDS + 60)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    rows_path = tmp / "rows.json"
    command = [sys.executable, "-m", "benchmarks", "--scale", "smoke", "--data-dir", str(tmp / "data")]
    proc = subprocess.run(
        [*command, "--json", str(rows_path)], cwd=REPO, capture_output=True, text=True, timeout=SMOKE_SECONDS
    )
    assert proc.returncode == 0, f"benchmarks failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return proc.stdout, json.loads(rows_path.read_text()), tmp / "data"


def test_every_benchmark_and_tool_measured(smoke_run):
    from benchmarks import bench_decode, bench_headers
    from benchmarks.harness import Options

    stdout, rows, _ = smoke_run
    assert "| benchmark | case | tool |" in stdout and "| rasterio / GDAL |" in stdout
    assert not [r for r in rows if r["failed"]]
    expected = {
        "headers": {bench_headers.TOOLS[t] for t in bench_headers.tools(Options(scale="smoke"))},
        "decode": set(bench_decode.TOOLS.values()),
    }
    for name, tools in expected.items():
        assert {r["tool"] for r in rows if r["benchmark"] == name and r["rate"]} == tools
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


def _by_benchmark(rows: list[dict], name: str) -> list[dict]:
    found = [r for r in rows if r["benchmark"] == name]
    assert found, f"no rows for {name}"
    assert not [r for r in found if r["failed"] or r["tool"] == "CHECK"]
    return found


def test_build_benchmark_measured(smoke_run):
    import re

    from benchmarks import bench_build

    _, rows, _ = smoke_run
    found = _by_benchmark(rows, "build")
    builds = [r for r in found if r["case"].startswith("build ")]
    assert {r["tool"] for r in builds if r["rate"]} == set(bench_build.BUILD_TOOLS.values())
    assert all(float(r["requests"]) >= 1 for r in builds)  # requests per asset, from the server
    ours = [r for r in builds if r["tool"].startswith("rasteret_dask")]
    assert len(ours) == 2 and all("1 GET per COG" in r["target"] for r in ours)
    loads = [r for r in found if r["case"].startswith("load ")]
    assert {r["tool"] for r in loads if r["rate"]} == set(bench_build.LOAD_TOOLS.values())
    for row in loads:
        # Both ways counted the same records, as many as an independent count of the files, and some.
        kept = re.search(r"→ ([\d,]+) records", row["case"])
        assert kept and int(kept.group(1).replace(",", "")) > 0
        files = re.search(r"files (\d+)/(\d+)", row["requests"])
        kept_files, all_files = int(files.group(1)), int(files.group(2))
        if row["tool"] == bench_build.LOAD_TOOLS["pruned"]:
            assert 0 < kept_files < all_files
        else:
            assert kept_files == all_files


def test_points_benchmark_measured(smoke_run):
    import re

    from benchmarks import bench_points
    from tests.compat import rasteret_env

    _, rows, _ = smoke_run
    found = _by_benchmark(rows, "points")
    compare = [r for r in found if not r["case"].startswith("scaling")]
    try:
        rasteret_env.rasteret_python()
        with_rasteret = True
    except rasteret_env.RasteretUnavailable:
        with_rasteret = False
    expected = {label for tool, label in bench_points.TOOLS.items() if tool != "rasteret" or with_rasteret}
    assert {r["tool"] for r in compare if r["rate"]} == expected
    if not with_rasteret:
        assert [r for r in compare if r["time"].startswith("not run")]
    for row in compare:
        # Every tool agreed on the samples (else a CHECK row), and they are not all missing.
        valid = re.search(r"→ ([\d,]+) valid samples", row["case"])
        assert valid and int(valid.group(1).replace(",", "")) > 0
        assert row["requests"] and row["bytes"]
    scaling = [r for r in found if r["case"].startswith("scaling")]
    assert scaling and all(r["rate"] and "×" in r["ratio"] for r in scaling)


def _megabytes(text: str) -> float:
    number, unit = text.split()[:2]
    return float(number) * {"MB": 1.0, "kB": 1e-3, "B": 1e-6}[unit]


def test_reads_benchmark_measured(smoke_run):
    from benchmarks import bench_reads
    from benchmarks.harness import Options

    _, rows, _ = smoke_run
    reads = [r for r in rows if r["benchmark"] == "reads"]
    assert reads and not [r for r in reads if r["failed"] or r["tool"] == "CHECK"]  # all agree on pixels
    cases = {
        case: [r for r in reads if r["case"].startswith(prefix)]
        for case, prefix in (("aoi", "1 AOI"), ("aois", "4 AOIs"), ("mean", "mean"))
    }
    for case, found in cases.items():
        expected = {bench_reads.TOOLS[case][t] for t in bench_reads.tools(case, Options(scale="smoke"))}
        assert {r["tool"] for r in found if r["rate"].startswith("CPU")} == expected
        assert all(r["case"].endswith(", 30 ms") and r["requests"] and r["bytes"] for r in found)
        ours = [r for r in found if r["tool"].startswith("rasteret_dask")]
        assert ours and all("floor's time" in r["ratio"] and r["target"] for r in ours)
    for case in ("aoi", "aois"):
        # Every needed tile once, shared tiles too: our bytes are the floor's (plus a few gap bytes).
        by_tool = {r["tool"]: _megabytes(r["bytes"]) for r in cases[case]}
        floor = by_tool[bench_reads.TOOLS[case]["floor"]]
        assert floor > 0
        assert floor <= by_tool[bench_reads.TOOLS[case]["ours_numpy"]] <= floor * 1.01


def test_ml_benchmark_measured(smoke_run):
    from benchmarks import bench_ml
    from benchmarks.harness import Options
    from tests.compat import rasteret_env

    _, rows, _ = smoke_run
    found = _by_benchmark(rows, "ml")  # no failure, and no CHECK row: every tool read the same pixels
    try:
        python = str(rasteret_env.rasteret_python())
    except rasteret_env.RasteretUnavailable:
        python = None
    assert {r["case"].split(", ")[-1] for r in found} == {"cold (batch 1)", "warm (batch 2)"}
    for mode in bench_ml.MODES:
        expected = {bench_ml.TOOLS[t] for t in bench_ml.tools(mode, Options(scale="smoke"), python)}
        for phase in ("cold", "warm"):
            single = mode == "single"
            case = [
                r for r in found if ("one date each" in r["case"]) == single and f", {phase} (" in r["case"]
            ]
            assert {r["tool"] for r in case if "batches/s" in r["rate"]} == expected
            assert all(r["requests"] and r["bytes"] for r in case if r["rate"])
            if python is None:
                assert [r for r in case if r["time"].startswith("not run")]
            ours = [r for r in case if r["tool"].startswith("rasteret_dask")]
            assert ours and all("floor's time" in r["ratio"] and r["target"] for r in ours)
            # A batch's tiles are fetched once, tiles shared by its samples too: the floor's bytes.
            by_tool = {r["tool"]: _megabytes(r["bytes"].split(" / ")[0]) for r in case if r["rate"]}
            floor = by_tool[bench_ml.TOOLS["floor"]]
            assert 0 < floor <= by_tool[bench_ml.TOOLS["ours"]] <= floor * 1.01
