"""Point sampling: random points × 4 bands × every scene covering them, against peers and a floor.

Data: the Sentinel-2-like data set (:mod:`benchmarks.data`): 12 dates × 2 UTM zones = 24 scenes of 4
uint16 bands, 2048² pixels, deflate + predictor 2, 1024-px tiles (smoke: 512² px, 256-px tiles, 2
scenes), served by the loopback range server at 0 and 30 ms latency. Points are uniform inside the two
zones' tiles (half each, drawn in UTM, given in EPSG:4326 lon/lat), so each lies in 12 scenes. The
collection is built once with ``rasteret_dask.build_from_table`` and exported; every tool reads it.

Tools, each in a fresh process, interleaved; imports, loading the collection and reading the points
happen before the timer:

- ``rasteret_dask``: ``collection.sample_points(points, bands=..., x_column="lon", y_column="lat",
  geometry_crs="EPSG:4326").compute()`` on the threaded scheduler (the collection persisted first);
- ``floor``: one aiohttp session fetching exactly the touched tiles' bytes (offsets from tifffile, read
  before the timer; one GET per run of touched tiles at most 64 KiB apart), as many requests in flight
  as rasteret_dask's default for HTTP, imagecodecs decoding in a thread pool of one thread per core as
  bodies arrive, numpy indexing; no Dask;
- ``rasterio``: per file, the points moved to its CRS (pyproj) and kept when inside its bounds, then
  ``DatasetReader.sample`` over ``/vsicurl/``, 16 files at a time in a thread pool, with the cloud GDAL
  settings (``bench_headers.GDAL_CLOUD_ENV``). Slow: measured once per case whatever ``--repeats``;
- ``Rasteret``: ``collection.sample_points(..., bbox=the points' bbox)`` in its own venv
  (``benchmarks/rasteret_runner.py``), loading our exported collection, ``allow_http`` set.

Every tool's samples become a (point, scene, band) uint16 cube, missing values 0, whose checksum must
agree. Requests and bytes are the server's counts.

Scaling: ``rasteret_dask`` alone at 30 ms for 10 k, 100 k and 1 M points (``.compute()``, threaded; the
smoke run 2 k) and, when ``RASTERET_DASK_BENCH_POINTS_10M=1``, 10 M points from a folder of 200 Parquet
files of 50 k points on a ``LocalCluster`` of 2 workers × 1 thread × 2 GB, written with ``to_parquet``
(120 M rows), with the workers' peak RSS and the count of values they spilled to disk.
``--quick`` runs 10 k and 100 k; the full run 10 k, 100 k and 1 M (1 M and 10 M once each).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from .data import DatasetSpec, cache_root, ensure_dataset
from .harness import (
    Options,
    Row,
    failed,
    fmt_bytes,
    fmt_ratio,
    measure_interleaved,
    median_of,
    ratio,
    run_fresh,
    spread,
)
from .rasteret_runner import checksum, rasteret_python_or_reason, run_rasteret

NAME = "points"
ORDER = 40
TITLE = "Point sampling"

THREADS = 16
BANDS = ("B02", "B03", "B04", "B08")
TOOLS = {
    "ours": "rasteret_dask sample_points, threads",
    "floor": "floor: aiohttp + imagecodecs + numpy",
    "rasterio": f"rasterio sample() ×{THREADS} threads",
    "rasteret": "Rasteret 0.4.1 sample_points",
}
SLOW_TOOLS = ("rasterio",)  # measured once per case
# The floor fetches touched tiles separated by at most this many bytes in one GET: GDAL's COG layout puts
# 8 bytes (a tile's size before it and its last 4 bytes after it) between consecutive tiles.
FLOOR_GAP = 64 * 1024
BIG_ENV = "RASTERET_DASK_BENCH_POINTS_10M"
POINTS_VERSION = 2
POINTS_PER_FILE = 50_000  # for inputs of more than a million points (see make_points)


def dataset_spec(opts: Options) -> DatasetSpec:
    return opts.pick(
        DatasetSpec(n_dates=12, size=2048),
        DatasetSpec(n_dates=12, size=2048),
        DatasetSpec(n_dates=1, size=512, tile=256),
    )


def comparison_points(opts: Options) -> int:
    return opts.pick(100_000, 10_000, 2_000)


def latencies(opts: Options) -> tuple[int, ...]:
    return opts.pick((0, 30), (0, 30), (30,))


def scaling_sizes(opts: Options) -> list[int]:
    sizes = opts.pick([10_000, 100_000, 1_000_000], [10_000, 100_000], [2_000])
    if os.environ.get(BIG_ENV) == "1":
        sizes.append(10_000_000)
    return sizes


def tools(rasteret_python: str | None) -> list[str]:
    return [t for t in TOOLS if t != "rasteret" or rasteret_python]


# -------------------------------------------------------------------------------------------- parent


def make_points(ds, n: int, root: Path) -> Path:
    """Parquet of ``n`` seeded points (``pid``, ``lon``, ``lat``), half inside each zone's tile.

    Up to a million points: one file. More: a folder of files of ``POINTS_PER_FILE`` points, as Dask
    writes big tables (rasteret_dask sorts them into its own, larger, spatial partitions).
    """
    suffix = "" if n > 1_000_000 else ".parquet"
    path = Path(root) / f"points-v{POINTS_VERSION}-{ds.spec.key}-{n}{suffix}"
    if path.exists():
        return path
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyproj import Transformer

    rng = np.random.default_rng([POINTS_VERSION, n])
    zones = sorted({r["zone"] for r in ds.files})
    lon, lat = [], []
    for i, zone in enumerate(zones):
        count = n // len(zones) + (i < n % len(zones))
        record = next(r for r in ds.files if r["zone"] == zone)
        left, bottom, right, top = record["bounds"]
        x, y = rng.uniform(left, right, count), rng.uniform(bottom, top, count)
        zlon, zlat = Transformer.from_crs(f"EPSG:{zone}", "EPSG:4326", always_xy=True).transform(x, y)
        lon.append(zlon)
        lat.append(zlat)
    order = rng.permutation(n)  # zones interleaved, as a user's table would be
    table = pa.table(
        {
            "pid": np.arange(n, dtype=np.int64),
            "lon": np.concatenate(lon)[order],
            "lat": np.concatenate(lat)[order],
        }
    )
    tmp = path.with_name(path.name + ".tmp")
    if n <= 1_000_000:
        pq.write_table(table, tmp, row_group_size=1_000_000)
    else:
        tmp.mkdir(parents=True, exist_ok=True)
        for i, start in enumerate(range(0, n, POINTS_PER_FILE)):
            pq.write_table(table.slice(start, POINTS_PER_FILE), tmp / f"part-{i:04d}.parquet")
    os.replace(tmp, path)
    return path


def _build_collection(ds, base_url: str, target: Path) -> list[str]:
    """Build and export the collection of ``ds`` served at ``base_url``; returns the scene ids in order."""
    import pandas as pd
    import shapely

    import rasteret_dask as rd

    scenes: dict[str, dict] = {}
    for r in ds.files:
        scene = scenes.setdefault(
            r["scene_id"],
            {
                "id": r["scene_id"],
                "datetime": r["datetime"],
                "geometry": shapely.to_wkb(shapely.box(*r["bounds_lonlat"])),
                "assets": {},
                "proj:epsg": r["zone"],
            },
        )
        scene["assets"][r["band"]] = {"href": f"{base_url.rstrip('/')}/{r['path']}", "band_index": None}
    collection = rd.build_from_table(pd.DataFrame(list(scenes.values())), progress=False)
    if collection.build_report.failed_total:
        raise RuntimeError(f"building the points collection failed: {collection.build_report}")
    collection.export(str(target))
    return sorted(scenes)


def _file_layouts(ds, base_url: str, scene_ids: list[str]) -> list[dict]:
    """Per file, what the floor needs to know (from tifffile): URL, scene/band index, grid and tiles."""
    import tifffile

    out = []
    for r in ds.files:
        with tifffile.TiffFile(ds.path(r)) as tif:
            page = tif.pages[0]
            offsets, counts = list(map(int, page.dataoffsets)), list(map(int, page.databytecounts))
            tile = (int(page.tilelength), int(page.tilewidth))
            shape = (int(page.imagelength), int(page.imagewidth))
            predictor = int(page.predictor)
            compression = int(page.compression)
        out.append(
            {
                "url": f"{base_url.rstrip('/')}/{r['path']}",
                "scene": scene_ids.index(r["scene_id"]),
                "band": BANDS.index(r["band"]),
                "zone": r["zone"],
                "transform": r["transform"],
                "bounds": r["bounds"],
                "shape": shape,
                "tile": tile,
                "offsets": offsets,
                "counts": counts,
                "compression": compression,
                "predictor": predictor,
            }
        )
    return out


def run(opts: Options) -> list[Row]:
    from tests.servers.range_server import serve_directory

    from .bench_headers import GDAL_CLOUD_ENV, _our_http_concurrency

    spec = dataset_spec(opts)
    opts.log(f"points: data set of {spec.n_files} files ({spec.size} px) ...")
    ds = ensure_dataset(spec, opts.data_root)
    root = Path(opts.data_root or cache_root())
    n_compare = comparison_points(opts)
    sizes = scaling_sizes(opts)
    point_files = {n: make_points(ds, n, root) for n in sorted({n_compare, *sizes})}
    rasteret_python, why_not = rasteret_python_or_reason(lambda m: opts.log("points: " + m))
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="rdbench-points-") as tmp, serve_directory(ds.root) as server:
        collection = Path(tmp) / "collection"
        scene_ids = _build_collection(ds, server.url, collection)
        base = {
            "collection": str(collection),
            "scene_ids": scene_ids,
            "bands": list(BANDS),
            "files": _file_layouts(ds, server.url, scene_ids),
            "threads": THREADS,
            "concurrency": _our_http_concurrency(),
            "rasteret_python": rasteret_python,
            "tmp": tmp,
        }

        def one(tool, params):
            env = GDAL_CLOUD_ENV if tool == "rasterio" else None
            server.reset_stats()
            result = run_fresh(__name__.rsplit(".", 1)[-1], tool, params, env=env, timeout=3600)
            stats = server.stats()
            result.update(requests=stats["requests"], bytes=stats["bytes"])
            return result

        n_scenes = len({r["scene_id"] for r in ds.files})
        compared = {}
        for latency in latencies(opts):
            server.set_latency(latency)
            params = {**base, "points": str(point_files[n_compare]), "n": n_compare}
            opts.log(f"points: {n_compare:,} points × {len(BANDS)} bands × {n_scenes} scenes, {latency} ms")
            measured = tools(rasteret_python)
            fast = [t for t in measured if t not in SLOW_TOOLS]
            results = measure_interleaved(fast, opts.repeats, lambda t, p=params: one(t, p), opts.log)
            slow = [t for t in measured if t in SLOW_TOOLS]
            results.update(measure_interleaved(slow, 1, lambda t, p=params: one(t, p), opts.log))
            case = f"{n_compare:,} points × {len(BANDS)} bands × {n_scenes // 2} scenes each, {latency} ms"
            rows += _compare_rows(case, results, n_compare, latency, why_not)
            compared[latency] = results["ours"]
        server.set_latency(30)
        scaling = {}
        for n in sizes:
            if n == n_compare and 30 in compared:  # measured above, same server and latency
                scaling[n] = compared[30]
                continue
            tool = "ours_cluster" if n >= 10_000_000 else "ours"
            params = {**base, "points": str(point_files[n]), "n": n, "checksum": False}
            opts.log(f"points: scaling, {n:,} points at 30 ms ({tool})")
            repeats = 1 if n >= 1_000_000 else opts.repeats  # minutes each
            scaling[n] = measure_interleaved([tool], repeats, lambda t, p=params: one(t, p), opts.log)[tool]
        rows += _scaling_rows(scaling, n_scenes // 2, opts)
    return rows


def _compare_rows(case: str, results: dict[str, list[dict]], n: int, latency: int, why_not: str) -> list[Row]:
    seconds = {tool: median_of(rs) for tool, rs in results.items()}
    checks = {tuple(r["check"]) for rs in results.values() for r in rs if r.get("check")}
    if len(checks) == 1:
        case += f" → {next(iter(checks))[1]:,} valid samples"
    rows = []
    for tool, label in TOOLS.items():
        if tool not in results:
            rows.append(Row("points", case, label, time=f"not run: {why_not}"))
            continue
        rs = results[tool]
        t = seconds[tool]
        requests, nbytes = median_of(rs, "requests"), median_of(rs, "bytes")
        cpu = median_of(rs, "cpu_seconds")
        rate = "" if t is None else f"{n / t:,.0f} points/s"
        if cpu is not None and t is not None:
            rate += f"; {cpu:.1f} s CPU"
        row = Row(
            "points",
            case,
            label,
            time=spread(rs),
            rate=rate,
            requests="" if requests is None else f"{requests:,.0f} requests",
            bytes="" if nbytes is None else fmt_bytes(nbytes),
            failed=failed(rs),
        )
        if tool == "ours":
            row.ratio = (
                f"{fmt_ratio(ratio(t, seconds.get('floor')))} floor's time; "
                f"{fmt_ratio(ratio(seconds.get('rasterio'), t))} faster than rasterio; "
                f"{fmt_ratio(ratio(seconds.get('rasteret'), t))} faster than Rasteret"
            )
            row.target = "≤1.2× floor; ≥15× rasterio" + ("; ≥1.4× Rasteret" if latency == 30 else "")
        rows.append(row)
    if len(checks) > 1:
        rows.append(Row("points", case, "CHECK", time="tools sampled different values", failed=True))
    if not checks:
        rows.append(Row("points", case, "CHECK", time="no tool returned samples", failed=True))
    return rows


def _scaling_rows(scaling: dict[int, list[dict]], scenes_each: int, opts: Options) -> list[Row]:
    rows = []
    first_rate = None
    for n, rs in scaling.items():
        t = median_of(rs)
        point_rate = None if t is None else n / t
        first_rate = first_rate or point_rate
        where = (
            f"LocalCluster 2×1 thread, 2 GB, {POINTS_PER_FILE:,} points per input file, to_parquet"
            if n >= 10_000_000
            else "threads, compute()"
        )
        ran = "manual only" if n >= 10_000_000 else ("quick and full" if n <= 100_000 else "full")
        out_rows = median_of(rs, "rows")
        peak = median_of(rs, "peak_rss")
        rate = (
            "" if t is None else f"{n / t:,.0f} points/s; {n * scenes_each * len(BANDS) / t:,.0f} samples/s"
        )
        if peak:
            rate += f"; peak RSS +{fmt_bytes(peak)}"
        worker_peak, spilled = median_of(rs, "worker_peak_rss"), median_of(rs, "spilled")
        if worker_peak:
            rate += f"; peak worker RSS {fmt_bytes(worker_peak)}, {spilled:,.0f} values spilled"
        requests, nbytes = median_of(rs, "requests"), median_of(rs, "bytes")
        case = f"scaling: {n:,} points × {len(BANDS)} bands × {scenes_each} scenes, 30 ms ({where}; {ran})"
        if out_rows is not None:
            case += f" → {out_rows:,.0f} rows"
        rows.append(
            Row(
                "points",
                case,
                TOOLS["ours"],
                time=spread(rs),
                rate=rate,
                requests="" if requests is None else f"{requests:,.0f} requests",
                bytes="" if nbytes is None else fmt_bytes(nbytes),
                ratio=f"{fmt_ratio(ratio(point_rate, first_rate))} the smallest run's points/s",
                target="points/s holding or growing with size",
                failed=failed(rs),
            )
        )
    return rows


# ------------------------------------------------------------------------------------- child process


def measure(tool: str, params: dict) -> dict:
    """Sample ``params["points"]`` with ``tool``; seconds, CPU seconds and the samples' checksum."""
    if tool == "ours":
        return _measure_ours(params)
    if tool == "ours_cluster":
        return _measure_ours_cluster(params)
    if tool == "floor":
        return _measure_floor(params)
    if tool == "rasterio":
        return _measure_rasterio(params)
    if tool == "rasteret":
        return _measure_rasteret(params)
    raise ValueError(f"unknown tool {tool!r}")


def _peak_rss_reset() -> int:
    import contextlib

    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return _status("VmRSS")


def _status(key: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _cube_check(params: dict, pid, scene, band, value) -> list[int]:
    return checksum(pid, scene, band, value, params["n"], len(params["scene_ids"]), len(params["bands"]))


def _results_check(params: dict, pid_all: np.ndarray, results: list[tuple]) -> list[int]:
    """The cube check of per-(file, band) results ``(point rows, scene, band, values)``."""
    return _cube_check(
        params,
        np.concatenate([pid_all[w] for w, _, _, _ in results]),
        np.concatenate([np.full(len(w), s) for w, s, _, _ in results]),
        np.concatenate([np.full(len(w), b) for w, _, b, _ in results]),
        np.concatenate([v for _, _, _, v in results]),
    )


def _measure_ours(params: dict) -> dict:
    import aiohttp  # noqa: F401  (imported on first request otherwise: imports stay outside the timer)
    import dask
    import pandas as pd

    import rasteret_dask as rd

    collection = rd.load(params["collection"]).persist()
    points = pd.read_parquet(params["points"])
    bands = params["bands"]
    rss0 = _peak_rss_reset()
    with dask.config.set(scheduler="threads"):
        start, cpu = time.perf_counter(), time.process_time()
        out = collection.sample_points(
            points, bands=bands, x_column="lon", y_column="lat", geometry_crs="EPSG:4326"
        ).compute()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    result = {"seconds": seconds, "cpu_seconds": cpu, "rows": len(out), "peak_rss": _status("VmHWM") - rss0}
    if params.get("checksum", True):
        scene_of = {rid: i for i, rid in enumerate(params["scene_ids"])}
        scene = out["record_id"].map(scene_of).to_numpy(dtype=np.int64)
        pid = out["pid"].to_numpy(dtype=np.int64)
        pids, scenes, band_idx, values = [], [], [], []
        for b, band in enumerate(bands):
            pids.append(pid)
            scenes.append(scene)
            band_idx.append(np.full(len(out), b))
            values.append(out[band].to_numpy(dtype=np.float64, na_value=0.0))
        result["check"] = _cube_check(
            params,
            np.concatenate(pids),
            np.concatenate(scenes),
            np.concatenate(band_idx),
            np.concatenate(values),
        )
    return result


def _measure_ours_cluster(params: dict) -> dict:
    import pyarrow.parquet as pq
    from distributed import Client, LocalCluster

    import rasteret_dask as rd

    from .bench_build import _warm_worker

    target = Path(params["tmp"]) / f"samples-{os.getpid()}"
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, memory_limit="2GB", dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(_warm_worker)
        collection = rd.load(params["collection"]).persist()
        start = time.perf_counter()
        frame = collection.sample_points(
            params["points"], bands=params["bands"], x_column="lon", y_column="lat", geometry_crs="EPSG:4326"
        )
        frame.to_parquet(str(target), write_index=False)
        seconds = time.perf_counter() - start
        workers = client.run(_worker_memory)
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in target.glob("*.parquet"))
    return {
        "seconds": seconds,
        "rows": rows,
        "worker_peak_rss": max(w["peak_rss"] for w in workers.values()),
        "spilled": sum(w["spilled"] for w in workers.values()),
        "workers": len(workers),
    }


def _worker_memory(dask_worker) -> dict:
    """A worker's peak RSS (its whole life, imports included) and how many values it wrote to disk."""
    metrics = getattr(dask_worker.data, "cumulative_metrics", {})
    return {"peak_rss": _status("VmHWM"), "spilled": int(metrics.get(("disk-write", "count"), 0))}


def _zone_pixels(params: dict, lon: np.ndarray, lat: np.ndarray) -> dict:
    """Per zone: (points inside, rows, cols) on the zone's grid (every file of a zone shares it)."""
    from pyproj import Transformer

    out = {}
    for f in params["files"]:
        if f["zone"] in out:
            continue
        x, y = Transformer.from_crs("EPSG:4326", f"EPSG:{f['zone']}", always_xy=True).transform(lon, lat)
        a, _, c, _, e, f_ = f["transform"][:6]
        rows = np.floor((y - f_) / e).astype(np.int64)
        cols = np.floor((x - c) / a).astype(np.int64)
        h, w = f["shape"]
        inside = np.flatnonzero((rows >= 0) & (rows < h) & (cols >= 0) & (cols < w))
        out[f["zone"]] = (inside, rows[inside], cols[inside])
    return out


def _measure_floor(params: dict) -> dict:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import aiohttp
    import imagecodecs
    import pyarrow.parquet as pq

    points = pq.read_table(params["points"], columns=["pid", "lon", "lat"])
    pid_all = points["pid"].to_numpy()
    lon, lat = points["lon"].to_numpy(), points["lat"].to_numpy()
    files = params["files"]
    if any(f["compression"] != 8 or f["predictor"] != 2 for f in files):
        raise ValueError("the floor handles deflate + predictor 2 only")
    pool = ThreadPoolExecutor(os.cpu_count() or 2)

    def decode_and_pick(body: bytes, tile: tuple, rows, cols, out: np.ndarray) -> None:
        arr = np.empty(tile, np.uint16)
        imagecodecs.deflate_decode(body, out=arr.reshape(-1).view(np.uint8))
        imagecodecs.delta_decode(arr, axis=-1, out=arr)
        out[:] = arr[rows, cols]

    async def main() -> list:
        pixels = _zone_pixels(params, lon, lat)
        groups = {}  # zone -> [(tile index, point positions, rows in tile, cols in tile)]
        for zone, (inside, rows, cols) in pixels.items():
            f = next(f for f in files if f["zone"] == zone)
            th, tw = f["tile"]
            across = -(-f["shape"][1] // tw)
            key = (rows // th) * across + cols // tw
            order = np.argsort(key, kind="stable")
            keys, starts = np.unique(key[order], return_index=True)
            bounds = [*starts.tolist(), len(order)]
            groups[zone] = [
                (int(k), inside[order[a:b]], rows[order[a:b]] % th, cols[order[a:b]] % tw)
                for k, a, b in zip(keys, bounds[:-1], bounds[1:], strict=True)
            ]
        loop = asyncio.get_running_loop()
        results = []

        async def one(session, f, run):
            """One GET for a run of touched tiles stored back to back, then one decode per tile."""
            first = f["offsets"][run[0][0]]
            last = f["offsets"][run[-1][0]] + f["counts"][run[-1][0]]
            async with session.get(f["url"], headers={"Range": f"bytes={first}-{last - 1}"}) as resp:
                body = await resp.read()
            decodes = []
            for k, where, r, c in run:
                at = f["offsets"][k] - first
                values = np.empty(len(where), np.uint16)
                piece = memoryview(body)[at : at + f["counts"][k]]
                decodes.append(
                    loop.run_in_executor(pool, decode_and_pick, piece, tuple(f["tile"]), r, c, values)
                )
                results.append((where, f["scene"], f["band"], values))
            await asyncio.gather(*decodes)

        def runs(f):
            """The file's touched tiles by offset, split where the gap to the next one is too big."""
            touched = sorted(groups.get(f["zone"], ()), key=lambda g: f["offsets"][g[0]])
            out = []
            for group in touched:
                k = group[0]
                previous = out[-1][-1][0] if out else None
                end = None if previous is None else f["offsets"][previous] + f["counts"][previous]
                if end is not None and 0 <= f["offsets"][k] - end <= FLOOR_GAP:
                    out[-1].append(group)
                else:
                    out.append([group])
            return out

        connector = aiohttp.TCPConnector(limit=params["concurrency"])
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.gather(*(one(session, f, run) for f in files for run in runs(f)))
        return results

    start, cpu = time.perf_counter(), time.process_time()
    results = asyncio.run(main())
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    pool.shutdown()
    check = _results_check(params, pid_all, results)
    return {"seconds": seconds, "cpu_seconds": cpu, "check": check}


def _measure_rasterio(params: dict) -> dict:
    import functools
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow.parquet as pq
    import rasterio
    from pyproj import Transformer

    points = pq.read_table(params["points"], columns=["pid", "lon", "lat"])
    pid_all = points["pid"].to_numpy()
    lon, lat = points["lon"].to_numpy(), points["lat"].to_numpy()

    @functools.cache
    def transformer(crs: str) -> Transformer:
        return Transformer.from_crs("EPSG:4326", crs, always_xy=True)

    def sample_file(f: dict):
        with rasterio.open(f"/vsicurl/{f['url']}") as src:
            x, y = transformer(src.crs.to_string()).transform(lon, lat)
            left, bottom, right, top = src.bounds
            inside = np.flatnonzero((x >= left) & (x < right) & (y > bottom) & (y <= top))
            values = np.fromiter(
                (v[0] for v in src.sample(zip(x[inside], y[inside], strict=True), indexes=1)),
                dtype=np.uint16,
                count=len(inside),
            )
        return inside, f["scene"], f["band"], values

    with ThreadPoolExecutor(params["threads"]) as pool:
        start, cpu = time.perf_counter(), time.process_time()
        results = list(pool.map(sample_file, params["files"]))
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    check = _results_check(params, pid_all, results)
    return {"seconds": seconds, "cpu_seconds": cpu, "check": check}


def _measure_rasteret(params: dict) -> dict:
    job = {
        "command": "sample_points",
        "collection": params["collection"],
        "points": params["points"],
        "bands": params["bands"],
        "scene_ids": params["scene_ids"],
        "allow_http": True,
    }
    return run_rasteret(params["rasteret_python"], job)
