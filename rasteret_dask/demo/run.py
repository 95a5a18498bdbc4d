"""The offline demo: the whole workflow on generated Sentinel-2-like COGs served over local HTTP.

1. write a small collection of COGs (2 UTM zones, 4 bands, nodata edges, clouds, overviews);
2. serve it on 127.0.0.1 so every read is a real byte-range request;
3. build the collection (one GET per header, as Dask work) and export it as GeoParquet;
4. on a ``distributed.LocalCluster``: a cloud-free-style temporal median over an area with
   ``get_xarray``, saved as a PNG quicklook, and 100,000 points sampled with ``sample_points``,
   streamed to Parquet;
5. print a report: records, GETs, bytes and time per stage.
"""

from __future__ import annotations

import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import imagecodecs
import numpy as np
import pandas as pd
import shapely

from ..collection import build_from_table, load
from .data import BANDS, make_collection
from .server import RangeServer

# Reflectance (DN) above which a demo pixel counts as cloud.
CLOUD_THRESHOLD = 4000


@dataclass
class Report:
    stages: list[tuple[str, float, int, int]] = field(default_factory=list)
    facts: dict = field(default_factory=dict)

    def text(self) -> str:
        lines = ["", "rasteret-dask demo report", ""]
        lines += [f"  {k}: {v}" for k, v in self.facts.items()]
        lines += ["", f"  {'stage':<34}{'seconds':>9}{'GETs':>8}{'MB':>9}"]
        for name, seconds, gets, nbytes in self.stages:
            lines.append(f"  {name:<34}{seconds:>9.2f}{gets:>8}{nbytes / 1e6:>9.1f}")
        return "\n".join(lines)


@contextmanager
def _stage(report: Report, name: str, server: RangeServer | None):
    print(f"== {name}", file=sys.stderr, flush=True)
    before = (server.stats.requests, server.stats.bytes) if server else (0, 0)
    start = time.perf_counter()
    yield
    after = (server.stats.requests, server.stats.bytes) if server else (0, 0)
    report.stages.append((name, time.perf_counter() - start, after[0] - before[0], after[1] - before[1]))


def _expect_all_nan_medians() -> None:
    """Pixels no valid (cloud-free, covered) record reaches have no median: NaN there is the intended
    result, so numpy's "All-NaN slice" warning about them is not shown."""
    warnings.filterwarnings("ignore", message="All-NaN slice", category=RuntimeWarning)


def _quicklook(rgb: np.ndarray) -> bytes:
    """An 8-bit PNG of a (3, rows, cols) reflectance array, stretched between the 2nd and 98th percentiles."""
    finite = rgb[np.isfinite(rgb)]
    lo, hi = np.percentile(finite, (2, 98)) if finite.size else (0.0, 1.0)
    scaled = np.clip((np.nan_to_num(rgb, nan=lo) - lo) / max(hi - lo, 1e-9), 0, 1)
    return imagecodecs.png_encode(np.ascontiguousarray(np.moveaxis(scaled, 0, -1) * 255).astype(np.uint8))


def run_demo(
    out: Path, *, workers: int = 2, points: int = 100_000, size: int = 1024, dates: int = 4
) -> Report:
    """Run the demo, writing everything under ``out``; returns the report (also printed)."""
    from distributed import Client, LocalCluster, progress

    out = Path(out)
    report = Report()
    data_dir = out / "cogs"
    with _stage(report, "generate COGs", None):
        records = make_collection(data_dir, dates=dates, size=size)
    with RangeServer(data_dir) as server:
        report.facts["served at"] = server.url
        table = records.copy()
        table["assets"] = [
            {band: {"href": server.url_for(Path(row[band])), "band_index": None} for band in BANDS}
            for _, row in records.iterrows()
        ]
        table = table.drop(columns=list(BANDS))
        cluster = LocalCluster(n_workers=workers, threads_per_worker=2, processes=True, memory_limit="2GB")
        with cluster, Client(cluster) as client:
            print(f"dashboard: {client.dashboard_link}", file=sys.stderr, flush=True)
            report.facts["dashboard"] = client.dashboard_link
            with _stage(report, "build collection (headers)", server):
                collection = build_from_table(table, name="demo-sentinel-2", progress=True)
            report.facts["records"] = len(records)
            report.facts["assets"] = len(records) * len(BANDS)
            report.facts["header failures"] = collection.build_report.failed_total
            with _stage(report, "export GeoParquet", server):
                collection.export(str(out / "collection"), overwrite=True)
            with _stage(report, "load + subset", server):
                loaded = load(str(out / "collection"))
                centre = shapely.centroid(
                    shapely.union_all(np.asarray(loaded.frame.geometry.compute().array))
                )
                area = shapely.box(centre.x - 0.05, centre.y - 0.04, centre.x + 0.05, centre.y + 0.04)
                subset = loaded.subset(geometries=[area], cloud_cover_lt=60)
            with _stage(report, "get_xarray temporal median", server), warnings.catch_warnings():
                client.run(_expect_all_nan_medians)  # the demo's own workers, closed with it
                _expect_all_nan_medians()
                ds = subset.get_xarray(
                    [area],
                    bands=["B04", "B03", "B02"],
                    crs="EPSG:32633",
                    resolution=10,
                    resampling="bilinear",
                )
                stack = ds.to_array("band").astype("float32")
                # Cloud-free style: nodata and bright (cloudy) pixels are left out of the median.
                median = (
                    stack.where((stack != 0) & (stack < CLOUD_THRESHOLD))
                    .median("time", skipna=True)
                    .persist()
                )
                progress(median, notebook=False)
                print(file=sys.stderr)
                rgb = median.values
            (out / "median.png").write_bytes(_quicklook(rgb))
            report.facts["median grid"] = f"{ds.sizes['y']} x {ds.sizes['x']} px, {ds.sizes['time']} dates"
            with _stage(report, f"sample_points ({points:,} points)", server):
                west, south, east, north = loaded.bounds
                rng = np.random.default_rng(1)
                pts = pd.DataFrame(
                    {
                        "point_id": np.arange(points),
                        "lon": rng.uniform(west, east, points),
                        "lat": rng.uniform(south, north, points),
                    }
                )
                samples = loaded.sample_points(
                    pts, bands=list(BANDS), x_column="lon", y_column="lat", geometry_crs="EPSG:4326"
                )
                written = samples.to_parquet(str(out / "samples.parquet"), compute=False, write_index=False)
                future = client.compute(written)
                progress(future, notebook=False)
                print(file=sys.stderr)
                future.result()
            sampled = pd.read_parquet(out / "samples.parquet", columns=["point_id"])
            report.facts["sample rows"] = f"{len(sampled):,} (point x record pairs)"
        report.facts["GETs in total"] = server.stats.requests
        report.facts["MB served"] = round(server.stats.bytes / 1e6, 1)
    report.facts["outputs"] = f"{out / 'median.png'}, {out / 'samples.parquet'}, {out / 'collection'}"
    print(report.text())
    return report
