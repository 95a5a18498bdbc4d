"""ML training: batches/s of TorchGeo window samples over loopback HTTP, cold and warm, against peers.

Data: the Sentinel-2-like COGs of the reads benchmark (its data set, scenes and collection export: 2 UTM
zones, 4 uint16 bands, deflate + predictor 2, 1024-pixel tiles; 2048 px full, 1024 px quick), the scenes
of the first 12 dates of both zones, served by ``tests/servers/range_server.py`` in its own process at 0
and 30 ms. The collection is built once (headers at 0 ms) and exported; our tools and Rasteret load it.

Samples: seeded random windows of 256 x 256 px on the native 10 m grid of the first zone (EPSG:32632),
inside its tile, 16 per batch, the same for every tool; each is read as one date x 4 bands (``one date
each``: the date drawn at random among the 12, as torchgeo's ``RandomGeoSampler`` picks one index entry)
or as 12 dates x 4 bands (``[T, C, H, W]``, ``time_series=True``). A query is torchgeo's ``GeoSlice``
``(slice(xmin, xmax, 10), slice(ymin, ymax, 10), slice(tmin, tmax))``, its time slice the date's whole
UTC day (from the first day's start to the 12th day's end for a series).

Each tool runs in a fresh process (imports, loading the collection and building the dataset outside the
timer; the first request inside) and reads ``cold + warm`` batches in a row (full: 2 + 4; quick: 1 + 2;
smoke: 1 + 1 batches of 4 windows of 64 px on 512-px files with 256-px tiles, one date, 30 ms only).
``cold`` is the time per batch of the first batches (what a new process pays: connections, caches and
thread pools start empty), ``warm`` of the batches after them in the same process. A batch's time ends
when its images are one array in memory (stacked, as a DataLoader's collate does). Tools:

- ``rasteret_dask dataset.__getitems__``: ``rasteret_dask.load(collection).to_torchgeo_dataset(bands=...,
  res=10, crs="EPSG:32632", time_series=...)``, then ``dataset.__getitems__(queries)`` per batch (what
  torch's DataLoader calls: the batch planned and fetched in one go) and ``torch.stack`` of the images;
- ``rasteret_dask DataLoader, 2 workers``: the same dataset in ``torch.utils.data.DataLoader(batch_size=16,
  sampler=the queries, num_workers=2, collate_fn=torchgeo's stack_samples, persistent_workers=True)``
  with fork workers. Two epochs on the same workers: the cold batches (the workers' start timed), then
  the warm ones, so that no warm batch is prefetched while cold ones are timed. A batch's time is the
  main process's wait for it (two batches are read at once, one per worker); CPU includes the workers';
- ``torchgeo RasterDataset /vsicurl/``: torchgeo's own ``RasterDataset`` (``separate_files=True``; a small
  subclass for this data set's layout ``<scene id>/<band>.tif``, whose dates are in the folder name, not
  the file name) over ``/vsicurl/`` URLs with the cloud GDAL settings
  (:data:`benchmarks.bench_headers.GDAL_CLOUD_ENV`), read one sample at a time with ``dataset[query]``
  as torch's DataLoader does for a dataset without ``__getitems__`` (16 per batch); file handles cached
  (its default). ``RasterDataset`` 0.8 has no time series (it mosaics every file of a query's time
  slice), so a series sample is 12 queries, one per date, stacked. Its index is built from the local
  copies of the same files (the index it builds over HTTP, without 96 remote opens before the timer,
  which would also warm GDAL's caches);
- ``Rasteret 0.4.1 read_window``: ``Collection.read_window(record_ids=..., bounds=..., res=(10, 10),
  bands=..., target_crs=32632, group_by=None or "datetime")`` once per sample, 16 per batch (its API
  reads one window per call; no batch call exists), in its own venv (``benchmarks/rasteret_runner.py``),
  on our exported collection. Each sample's record ids (the zone's scene of that date, or its 12 scenes
  in datetime order) are handed to it, untimed, where our dataset finds them in its index inside the
  timer;
- ``floor: aiohttp + imagecodecs``: per batch, :func:`benchmarks.bench_reads._floor` on tables made before
  the timer: one aiohttp session fetching exactly the batch's tiles once (a tile shared by samples once,
  neighbouring tiles of a file in one GET), imagecodecs decoding each once in a thread pool, chips copied
  into a uint16 batch. It starts a new session and thread pool per batch and never converts to float.

Checks: every tool's batches are checksummed as uint16 ``[batch, (T,) C, H, W]`` arrays (CRC-32 in batch
order, and the count of non-zero pixels). torchgeo's and our images are float32 (both datasets' default)
holding the uint16 values exactly; every window lies on the files' own grid and inside one scene per date,
so no tool resamples and each mosaic has one source (nodata stays 0): all must agree, and a CHECK row
lists tools that do not. Requests and bytes are the server's counts per batch, averaged over the process.

What favours whom: the zone's tile is small (2048 px, 2 x 2 tiles per file), so the 16 windows of a batch
share most tiles (a series batch needs all 192 tiles of the zone's 48 files): planning a batch at once
(ours, the floor) saves much more than on full-size Sentinel-2 files, and GDAL's block cache ends up
holding the whole zone, which speeds torchgeo's warm batches far more than on a large collection.
Ours returns float32 images (the dataset's contract) where the floor and Rasteret return uint16.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bench_headers import GDAL_CLOUD_ENV
from .bench_reads import Area, _area_transform, _export_collection, _params, _scenes
from .bench_reads import dataset_spec as reads_dataset_spec
from .data import ensure_dataset
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
from .rasteret_runner import rasteret_python_or_reason, run_rasteret, window_checksum

NAME = "ml"
ORDER = 50
TITLE = "ML training: batches of TorchGeo window samples"

WINDOW_SEED = 20240107
LOADER_WORKERS = 2
TOOLS = {
    "ours": "rasteret_dask dataset.__getitems__",
    "ours_loader": f"rasteret_dask DataLoader, {LOADER_WORKERS} workers",
    "torchgeo": "torchgeo RasterDataset /vsicurl/",
    "rasteret": "Rasteret 0.4.1 read_window",
    "floor": "floor: aiohttp + imagecodecs",
}
OURS = ("ours", "ours_loader")
MODES = ("single", "series")


def dataset_spec(opts: Options):
    """The reads benchmark's data set (shared cache): 2048 px full, 1024 px quick, 512 px smoke."""
    return reads_dataset_spec(opts)


@dataclass(frozen=True)
class Layout:
    """Sizes at one scale."""

    px: int
    batch: int
    dates: int
    cold: int
    warm: int
    latencies: tuple[int, ...]


def layout(opts: Options) -> Layout:
    """Full: 2 cold + 4 warm batches of 16 x 256² at 0 and 30 ms; quick: 1 + 2; smoke: tiny, 30 ms."""
    return opts.pick(
        Layout(px=256, batch=16, dates=12, cold=2, warm=4, latencies=(0, 30)),
        Layout(px=256, batch=16, dates=12, cold=1, warm=2, latencies=(0, 30)),
        Layout(px=64, batch=4, dates=1, cold=1, warm=1, latencies=(30,)),
    )


# The smoke run (CI) starts as few processes as still run every code path once: the DataLoader and
# torchgeo read series as they read single dates (the same calls, more of them).
SMOKE_TOOLS = {"single": list(TOOLS), "series": ["ours", "rasteret", "floor"]}


def tools(mode: str, opts: Options, rasteret_python: str | None) -> list[str]:
    """Tools measured in ``mode``: fewer in the smoke run, Rasteret only when its venv exists."""
    chosen = SMOKE_TOOLS[mode] if opts.scale == "smoke" else list(TOOLS)
    return [t for t in chosen if t != "rasteret" or rasteret_python]


# ------------------------------------------------------------------------------------------ the parent


def _day(iso: str) -> tuple[str, str]:
    """The whole UTC day of an ISO datetime, as torchgeo's index gives a file dated by its day."""
    import pandas as pd

    day = pd.Timestamp(iso).tz_convert(None).normalize()
    return day.isoformat(), (day + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)).isoformat()


def _batches(spec, lay: Layout, scenes: list[dict], mode: str) -> list[list[dict]]:
    """The seeded queries of every batch: window (an :class:`Area`), bounds, dates and record ids."""
    zone = spec.zones[0]
    zone_scenes = [s for s in scenes if s["zone"] == zone]  # in datetime order
    rng = np.random.default_rng([WINDOW_SEED, MODES.index(mode)])
    out = []
    for _ in range(lay.cold + lay.warm):
        batch = []
        for _ in range(lay.batch):
            row, col = (int(v) for v in rng.integers(0, spec.size - lay.px + 1, 2))
            area = Area(zone, row, col, lay.px, lay.px)
            used = zone_scenes if mode == "series" else [zone_scenes[int(rng.integers(len(zone_scenes)))]]
            a, _, c, _, e, f = _area_transform(used[0], area)
            days = [_day(s["datetime"]) for s in used]
            batch.append(
                {
                    "area": area,
                    "scenes": used,
                    "bounds": [c, f + e * lay.px, c + a * lay.px, f],
                    "span": [days[0][0], days[-1][1]],
                    "days": days,
                    "ids": [s["id"] for s in used],
                }
            )
        out.append(batch)
    return out


def _floor_batch(batch: list[dict], ds, base: str, collection: str, headers: dict) -> dict:
    """The reads benchmark's floor parameters for one batch: tiles once, chips in (sample, date, band)."""
    tiles: list[list] = []
    where: dict[tuple[str, int], int] = {}
    chips: list[list] = []
    params = None
    for query in batch:
        params = _params("aois", [query["area"]], query["scenes"], ds, base, collection, headers)
        index = []
        for url, offset, count in params["tiles"]:
            index.append(where.setdefault((url, offset), len(tiles)))
            if index[-1] == len(tiles):
                tiles.append([url, offset, count])
        chips += [[[index[p[0]], *p[1:]] for p in chip] for chip in params["chips"]]
    keep = ("case", "bands", "tile", "dtype", "concurrency", "chip_shape")
    return {**{k: params[k] for k in keep}, "tiles": tiles, "chips": chips, "mean_pieces": []}


def run(opts: Options) -> list[Row]:
    """Serve the data set, export the collection and measure every tool per latency and mode."""
    from tests.servers.range_server import serve_directory

    spec = dataset_spec(opts)
    lay = layout(opts)
    opts.log(f"ml: data set of {spec.n_files} files ({spec.size} px) ...")
    ds = ensure_dataset(spec, opts.data_root)
    scenes = [s for s in _scenes(ds) if s["date"] < lay.dates]
    if len({s["date"] for s in scenes}) < lay.dates:
        raise ValueError("the data set has too few dates for this layout")
    rasteret_python, why_not = rasteret_python_or_reason(lambda m: opts.log("ml: " + m))
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="rdbench-ml-") as tmp, serve_directory(ds.root) as server:
        base = server.url
        collection = str(Path(tmp) / "collection")
        opts.log("ml: building the collection (headers at 0 ms) ...")
        _export_collection(scenes, base, collection)
        zone = spec.zones[0]
        first_band = spec.bands[0]
        local = [str(ds.root / s["bands"][first_band]) for s in scenes]
        headers: dict = {}
        params = {}
        for mode in MODES:
            batches = _batches(spec, lay, scenes, mode)
            params[mode] = {
                "mode": mode,
                "collection": collection,
                "bands": list(spec.bands),
                "epsg": zone,
                "res": float(scenes[0]["transform"][0]),
                "cold": lay.cold,
                "batches": [
                    [{k: q[k] for k in ("bounds", "span", "days", "ids")} for q in b] for b in batches
                ],
                "local": local,
                "urls": {p: f"/vsicurl/{base}{Path(p).relative_to(ds.root).as_posix()}" for p in local},
                "floor": [_floor_batch(b, ds, base, collection, headers) for b in batches],
                "workers": LOADER_WORKERS,
                "rasteret_python": rasteret_python,
            }
        for latency in lay.latencies:
            server.set_latency(latency)
            for mode in MODES:
                label = _case_label(mode, lay, len(spec.bands), latency)
                opts.log(f"ml: {label} (load average {os.getloadavg()[0]:.2f})")

                def one(tool, mode=mode):
                    env = GDAL_CLOUD_ENV if tool == "torchgeo" else None
                    server.reset_stats()
                    result = run_fresh(__name__.rsplit(".", 1)[-1], tool, params[mode], env=env, timeout=3600)
                    stats = server.stats()
                    result.update(requests=stats["requests"], bytes=stats["bytes"])
                    return result

                measured = tools(mode, opts, rasteret_python)
                results = measure_interleaved(measured, opts.repeats, one, opts.log)
                rows += _rows(label, lay, results, latency, why_not)
    return rows


def _case_label(mode: str, lay: Layout, bands: int, latency: int) -> str:
    steps = f" × {lay.dates} date{'s' if lay.dates > 1 else ''}" if mode == "series" else ", one date each"
    return f"{lay.batch} × {lay.px}² × {bands} bands{steps}, {latency} ms"


def _rows(label: str, lay: Layout, results: dict[str, list[dict]], latency: int, why_not: str) -> list[Row]:
    n_batches = lay.cold + lay.warm
    rows = []
    for phase, first, last in (("cold", 1, lay.cold), ("warm", lay.cold + 1, n_batches)):
        what = f"batch {first}" if first == last else f"batches {first}–{last}"
        case = f"{label}, {phase} ({what})"
        key = f"{phase}_per_batch"
        seconds = {tool: median_of(rs, key) for tool, rs in results.items()}
        for tool, name in TOOLS.items():
            if tool not in results:
                if tool == "rasteret" and why_not:
                    rows.append(Row("ml", case, name, time=f"not run: {why_not}"))
                continue
            rs = results[tool]
            t = seconds[tool]
            cpu = median_of(rs, "cpu_seconds")
            requests, nbytes = median_of(rs, "requests"), median_of(rs, "bytes")
            rate = ""
            if t:
                rate = f"{1 / t:.2f} batches/s ({lay.batch / t:.0f} samples/s)"
            if cpu is not None:
                rate += f"; CPU {cpu / n_batches:.2f} s/batch"
            row = Row(
                "ml",
                case,
                name,
                time=spread(rs, key).replace(" s", " s/batch", 1),
                rate=rate,
                requests="" if requests is None else f"{requests / n_batches:,.0f} / batch",
                bytes="" if nbytes is None else f"{fmt_bytes(nbytes / n_batches)} / batch",
                failed=failed(rs),
            )
            if tool in OURS:
                row.ratio, row.target = _ratios(tool, seconds, phase, latency)
            rows.append(row)
    return rows + _check_rows(label, results)


def _ratios(tool: str, seconds: dict, phase: str, latency: int) -> tuple[str, str]:
    t = seconds[tool]
    ratio_text = (
        f"{fmt_ratio(ratio(seconds.get('torchgeo'), t))} torchgeo's rate; "
        f"{fmt_ratio(ratio(seconds.get('rasteret'), t))} Rasteret's; "
        f"{fmt_ratio(ratio(t, seconds.get('floor')))} floor's time"
    )
    target = "≤1.3× floor's time"
    if latency == 30:
        target = ("≥20× torchgeo; " if phase == "cold" else "") + "≥1.5× Rasteret; " + target
    return ratio_text, target


def _check_rows(label: str, results: dict[str, list[dict]]) -> list[Row]:
    """A CHECK row when the tools' checksums disagree (listing who agrees with whom)."""
    groups: dict[str, set[str]] = {}
    for tool, rs in results.items():
        for r in rs:
            if "check" in r:
                groups.setdefault(f"{r['check']} {tuple(r['shape'])}", set()).add(TOOLS[tool])
    if len(groups) <= 1:
        return []
    text = " vs ".join(", ".join(sorted(names)) for names in groups.values())
    return [Row("ml", label, "CHECK", time=f"results differ: {text}", failed=True)]


# ------------------------------------------------------------------------------------- child process


def measure(tool: str, params: dict) -> dict:
    """Read every batch with one tool; per-batch seconds (cold and warm), CPU seconds and a checksum."""
    runners = {
        "ours": _ours,
        "ours_loader": _ours_loader,
        "torchgeo": _torchgeo,
        "rasteret": _rasteret,
        "floor": _floor_batches,
    }
    if tool not in runners:
        raise ValueError(f"unknown tool {tool!r}")
    result = runners[tool](params)
    seconds, cold = result["seconds"], params["cold"]
    warm = len(seconds) - cold
    return {
        "seconds": sum(seconds),
        "batch_seconds": seconds,
        "cold_per_batch": sum(seconds[:cold]) / cold,
        "warm_per_batch": sum(seconds[cold:]) / warm if warm else None,
        "cpu_seconds": result["cpu_seconds"],
        "check": result["check"],
        "shape": result["shape"],
        "load": os.getloadavg()[0],
    }


def _summary(batches: list, seconds: list[float], cpu: float) -> dict:
    """Seconds, CPU, checksum and shape of the first batch (arrays or tensors holding uint16 values)."""
    arrays = [np.asarray(b) for b in batches]
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "check": window_checksum(arrays),
        "shape": [len(arrays), *arrays[0].shape],
    }


def _geoslice(query: dict, res: float, span: list[str]):
    import pandas as pd

    xmin, ymin, xmax, ymax = query["bounds"]
    return slice(xmin, xmax, res), slice(ymin, ymax, res), slice(pd.Timestamp(span[0]), pd.Timestamp(span[1]))


def _our_dataset(params: dict):
    import aiohttp  # noqa: F401  (imported on first request otherwise: imports stay outside the timer)
    import imagecodecs  # noqa: F401

    import rasteret_dask as rd

    collection = rd.load(params["collection"])
    dataset = collection.to_torchgeo_dataset(
        bands=params["bands"],
        res=params["res"],
        crs=f"EPSG:{params['epsg']}",
        time_series=params["mode"] == "series",
    )
    queries = [[_geoslice(q, params["res"], q["span"]) for q in b] for b in params["batches"]]
    return dataset, queries


def _ours(params: dict) -> dict:
    import torch

    dataset, queries = _our_dataset(params)
    images, seconds = [], []
    cpu = time.process_time()
    for batch in queries:
        start = time.perf_counter()
        samples = dataset.__getitems__(batch)
        images.append(torch.stack([s["image"] for s in samples]))
        seconds.append(time.perf_counter() - start)
    cpu = time.process_time() - cpu
    return _summary([i.numpy().astype(np.uint16) for i in images], seconds, cpu)


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class _Queries:
    """A sampler whose queries change between epochs (a DataLoader's batch sampler iterates it anew)."""

    def __init__(self):
        self.queries: list = []

    def __iter__(self):
        return iter(self.queries)

    def __len__(self) -> int:
        return len(self.queries)


def _ours_loader(params: dict) -> dict:
    dataset, queries = _our_dataset(params)  # first: it makes torchvision, hence torchgeo, importable
    from torch.utils.data import DataLoader
    from torchgeo.datasets import stack_samples

    sampler = _Queries()
    loader = DataLoader(
        dataset,
        batch_size=len(queries[0]),
        sampler=sampler,
        num_workers=params["workers"],
        collate_fn=stack_samples,
        multiprocessing_context="fork",
        persistent_workers=True,
    )
    images, seconds = [], []
    cpu, children = time.process_time(), _children_cpu()
    # Two epochs on the same workers: the cold batches (workers started inside the timer), then the warm
    # ones, so that no warm batch is prefetched while the cold ones are timed.
    cold = params["cold"]
    for epoch in (queries[:cold], queries[cold:]):
        sampler.queries = [q for b in epoch for q in b]
        last = time.perf_counter()
        for batch in loader:
            now = time.perf_counter()
            seconds.append(now - last)
            images.append(batch["image"])
            last = time.perf_counter()
    del loader  # its iterator's workers are joined: their CPU time counts as this process's children's
    cpu = time.process_time() - cpu + _children_cpu() - children
    return _summary([i.numpy().astype(np.uint16) for i in images], seconds, cpu)


def _torchgeo_dataset(params: dict):
    import pandas as pd
    from pyproj import CRS

    from rasteret_dask.read.torchgeo import _import_torchvision

    _import_torchvision()  # a no-op once done; torchgeo needs torchvision importable
    from torchgeo.datasets import RasterDataset
    from torchgeo.datasets.utils import disambiguate_timestamp

    class SceneFolders(RasterDataset):
        """This data set's layout, ``<scene id>/<band>.tif``: one file per band, the date in the folder."""

        filename_regex = r"^(?P<band>B\d\d)\.tif$"
        separate_files = True
        all_bands = tuple(params["bands"])

        def __init__(self, local: list[str], urls: dict[str, str], **kwargs):
            super().__init__(paths=local, **kwargs)
            paths = list(self.index["filepath"])
            days = [re.search(r"_(\d{8})_", Path(p).parent.name).group(1) for p in paths]
            times = [disambiguate_timestamp(d, self.date_format) for d in days]
            self.index.index = pd.IntervalIndex.from_tuples(times, closed="both", name="datetime")
            self.index["filepath"] = [urls[p] for p in paths]

    return SceneFolders(
        params["local"],
        params["urls"],
        crs=CRS.from_epsg(params["epsg"]),
        res=params["res"],
        bands=params["bands"],
    )


def _torchgeo(params: dict) -> dict:
    import torch

    dataset = _torchgeo_dataset(params)
    res = params["res"]
    series = params["mode"] == "series"
    images, seconds = [], []
    cpu = time.process_time()
    for batch in params["batches"]:
        start = time.perf_counter()
        samples = []
        for query in batch:
            steps = [dataset[_geoslice(query, res, day)]["image"] for day in query["days"]]
            samples.append(torch.stack(steps) if series else steps[0])
        images.append(torch.stack(samples))
        seconds.append(time.perf_counter() - start)
    cpu = time.process_time() - cpu
    return _summary([i.numpy().astype(np.uint16) for i in images], seconds, cpu)


def _floor_batches(params: dict) -> dict:
    from .bench_reads import _floor

    images, seconds, cpu = [], [], 0.0
    for batch, floor in zip(params["batches"], params["floor"], strict=True):
        took, used, chips = _floor(floor)
        seconds.append(took)
        cpu += used
        steps = len(batch[0]["days"])
        shape = (len(batch), steps, len(params["bands"]), *chips.shape[-2:])
        images.append(chips.reshape(shape if params["mode"] == "series" else (shape[0], *shape[2:])))
    return _summary(images, seconds, cpu)


def _rasteret(params: dict) -> dict:
    job = {
        "command": "read_window",
        "collection": params["collection"],
        "bands": params["bands"],
        "epsg": params["epsg"],
        "res": params["res"],
        "group_by": "datetime" if params["mode"] == "series" else None,
        "batches": [[[q["ids"], q["bounds"]] for q in b] for b in params["batches"]],
        "allow_http": True,
    }
    return run_rasteret(params["rasteret_python"], job)
