"""The README's first command: ``rasteret-dask demo`` end to end in a fresh process, its outputs checked
against rasterio reading the COGs it generated."""

from __future__ import annotations

import re
import subprocess
import sys

import imagecodecs
import pandas as pd
import rasterio
from pyproj import Transformer

from rasteret_dask.demo.data import BANDS


def test_demo_job_reports_and_writes_what_rasterio_reads(tmp_path):
    out = tmp_path / "demo"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "rasteret_dask.cli",
            "demo",
            "--out",
            str(out),
            "--workers",
            "1",
            "--points",
            "5000",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = done.stdout
    for stage in ("build collection (headers)", "get_xarray temporal median", "sample_points (5,000 points)"):
        assert stage in report
    assert "header failures: 0" in report
    assert "All-NaN slice" not in done.stderr

    rows, cols = map(int, re.search(r"median grid: (\d+) x (\d+) px", report).groups())  # y x x
    quicklook = imagecodecs.png_decode((out / "median.png").read_bytes())
    assert quicklook.shape == (rows, cols, 3)
    assert quicklook.std() > 0

    samples = pd.read_parquet(out / "samples.parquet")
    assert f"sample rows: {len(samples):,}" in report
    assert samples["point_id"].nunique() > 0.9 * 5000  # nearly every point lies in some scene
    picked = samples.sample(200, random_state=0)
    for _, row in picked.iterrows():
        for band in BANDS:
            with rasterio.open(out / "cogs" / f"{row['record_id']}_{band}.tif") as src:
                to_file = Transformer.from_crs("EPSG:4326", src.crs, always_xy=True)
                (value,) = next(src.sample([to_file.transform(row["lon"], row["lat"])]))
                if pd.isna(row[band]):
                    assert value == src.nodata
                else:
                    assert row[band] == value
                    assert value != src.nodata
