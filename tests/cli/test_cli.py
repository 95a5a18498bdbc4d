"""The rasteret-dask command: each subcommand end to end in a fresh process, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import rasterio

from rasteret_dask.demo.data import BANDS, make_collection


def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "rasteret_dask.cli", *args], capture_output=True, text=True, timeout=300
    )
    if ok:
        assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cli")
    table = make_collection(directory / "cogs", dates=1, size=256, tile=128)
    path = directory / "records.parquet"
    long = table.melt(
        id_vars=["id", "datetime", "geometry", "eo:cloud_cover", "proj:epsg"],
        value_vars=list(BANDS),
        value_name="href",
    )
    one_band = long[long["variable"] == "B04"].drop(columns="variable")
    one_band.to_parquet(path)
    return directory, path, table


@pytest.fixture(scope="module")
def built(records):
    directory, path, _ = records
    out = directory / "collection"
    done = run("build", str(path), "--out", str(out), "--href-column", "href", "--bands", "B04", "--quiet")
    assert "2 records" in done.stdout
    return out


def test_header_matches_gdal(records):
    _, _, table = records
    href = table["B04"].iloc[0]
    summary = json.loads(run("header", href, "--json").stdout)
    with rasterio.open(href) as ds:
        assert (summary["width"], summary["height"], summary["count"]) == (ds.width, ds.height, ds.count)
        assert summary["transform"] == list(ds.transform)[:6]
        assert summary["nodata"] == ds.nodata
        assert [lv[0] for lv in summary["levels"][1:]] == [ds.width // f for f in ds.overviews(1)]


def test_info_summarises_the_collection(built, records):
    info = json.loads(run("info", str(built), "--json").stdout)
    assert info["records"] == 2 and info["bands"] == ["B04"]
    assert sorted(info["crs"]) == ["EPSG:32632", "EPSG:32633"]


def test_explain_and_sample(built, tmp_path):
    done = run("explain", str(built), "--bands", "B04", "--bbox", "10.5,48.0,11.5,48.6")
    assert "GETs" in done.stdout and "TOTAL" in done.stdout
    rng = np.random.default_rng(0)
    points = pd.DataFrame({"lon": rng.uniform(10.8, 11.1, 500), "lat": rng.uniform(48.2, 48.5, 500)})
    points.to_parquet(tmp_path / "points.parquet")
    out = tmp_path / "samples.parquet"
    run(
        "sample",
        str(built),
        str(tmp_path / "points.parquet"),
        "--bands",
        "B04",
        "--out",
        str(out),
        "--x-column",
        "lon",
        "--y-column",
        "lat",
        "--crs",
        "EPSG:4326",
    )
    samples = pd.read_parquet(out)
    assert set(samples.columns) >= {"lon", "lat", "record_id", "datetime", "B04"}
    assert len(samples) > 0


def test_datasets_list_and_info():
    listed = run("datasets", "list").stdout
    assert "earthsearch/sentinel-2-l2a" in listed
    assert "stac_api" in run("datasets", "info", "earthsearch/sentinel-2-l2a").stdout


@pytest.mark.parametrize(
    "args",
    [
        ("info", "/nonexistent/collection"),
        ("datasets", "info", "no/such-dataset"),
        ("header", "/nonexistent.tif"),
        ("build", "/nonexistent.parquet", "--out", "/tmp/never-written"),
        ("explain", "/nonexistent", "--bands", "B04", "--bbox", "1,2,3,4"),
    ],
)
def test_user_mistakes_are_one_line_errors(args):
    done = run(*args, ok=False)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("rasteret-dask: error:"), done.stderr
    assert "Traceback" not in done.stderr


def test_help_on_every_command():
    for command in ("build", "info", "datasets", "sample", "explain", "header", "demo"):
        assert "usage" in run(command, "--help").stdout
