"""Reads: AOI chips and a temporal mean over loopback HTTP at 0 and 30 ms, against peers and a floor.

Data: the Sentinel-2-like COGs of the header benchmark (2 UTM zones, 4 uint16 bands, deflate + predictor 2,
1024-pixel tiles; 2048 px full, 1024 px quick), served by ``tests/servers/range_server.py`` in its own
process; one server for the whole run, its latency switched between phases. Cases:

- ``1 AOI``: one 256 x 256 px AOI (inside one tile) through every scene covering it: 12 dates x 4 bands;
- ``32 AOIs``: 32 AOIs (8 quick) of 256 x 256 px, half per zone at seeded random places, through the 12
  dates x 4 bands of their zone (AOIs share tiles: a shared tile is needed, and fetched by the floor, once);
- ``mean``: the nodata-masked temporal mean ``a.where(a != 0).mean("time")`` of a 2000 x 2000 px area
  (1000 px quick; centred, so not aligned to the tiles) over 24 dates x 4 bands of one zone, computed on
  the threaded scheduler and on a ``distributed.LocalCluster`` of 2 worker processes.

The AOI collection holds the 24 scenes of the first 12 dates (both zones), the mean's the 48 scenes of the
first 24 dates; our reads get the whole collection and select records themselves, the STAC peers get
exactly the items covering the area (what a STAC search with ``bbox=`` returns), carrying
``proj:epsg``/``proj:code``, ``proj:shape``, ``proj:transform`` and ``raster:bands`` (dtype, nodata), so
they open no file for metadata. Areas lie on the native 10 m grid: every tool reads on that grid, no
resampling anywhere.

Tools, each timed in its own fresh process (imports, collection load, STAC items, cluster start-up and
worker imports outside the timer), interleaved:

- ``rasteret_dask``: ``Collection.get_numpy`` (chips), ``Collection.get_xarray`` (native grid, computed),
  and ``get_xarray(...)`` plus the mean; a collection built once (headers fetched at 0 ms) and exported,
  then ``load(...).persist()`` in the child;
- ``rasterio``: every file opened once (``/vsicurl/``, the cloud GDAL settings of
  :data:`benchmarks.bench_headers.GDAL_CLOUD_ENV`), its windows read, files spread over a 16-thread pool;
- ``stackstac``: ``stackstac.stack(items, epsg, resolution, bounds, dtype=uint16, fill_value=0)``, one
  stack per AOI, all computed at once;
- ``odc-stac``: ``odc.stac.load(items, geobox=..., dtype=uint16, nodata=0)``: eager with a 16-thread
  pool for one AOI, lazy (1024-px chunks) and computed at once for 32 AOIs and the mean;
- ``expression`` (mean only): the mean expression by itself, on the threaded scheduler, over the same
  stack already decoded in memory (our chunks, made before the timer): what any Dask tool pays on top
  of its reads, and the floor does not (it sums tiles as they arrive);
- ``floor``: one aiohttp session fetching exactly the needed tiles once (neighbouring tiles of one file,
  at most 1 KiB apart, in one GET) and imagecodecs decoding each once, as it arrives, in a thread pool of
  one thread per core; chips are copied out of the tiles, the mean is accumulated tile by tile. No Dask;
  no planning timed (tile tables come from the parent, as our collection's headers do).

Every Dask computation runs with 16 threads (``dask.config`` for the threaded scheduler; 2 workers x 8
threads on the cluster), the rasterio pool too. Requests and bytes are the server's counts for the whole
measurement (GDAL's HEADs included). "CPU" is the CPU time of the measuring process (all its threads) and,
on a cluster, of its workers; "server" that of the range server meanwhile (it shares the machine's cores:
where client and server CPU together approach cores x time, the machine, not the tool, sets the pace).
Every tool's result is checksummed (CRC-32 of the chips in (AOI, datetime, band) order, or of the float32
means with NaN made canonical); a CHECK row lists tools that disagree.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bench_headers import GDAL_CLOUD_ENV, dataset_spec
from .data import Dataset, ensure_dataset
from .harness import (
    Options,
    Row,
    failed,
    fmt_bytes,
    fmt_ratio,
    measure_interleaved,
    median_of,
    process_cpu_seconds,
    ratio,
    run_fresh,
    spread,
)

NAME = "reads"
ORDER = 30
TITLE = "Reads: AOI chips and temporal mean"

THREADS = 16
CLUSTER_WORKERS = 2
NODATA = 0
# A fixed seed for the places of the 32 AOIs.
AOI_SEED = 20240105
# AOI outlines are shrunk by this many pixels on every side and densified before going to lon/lat, so
# that every tool's window (floor of the minimum, ceil of the maximum) is exactly the intended one.
INSET_PX = 0.25
DENSIFY_M = 100.0
# The floor fetches two tiles of one file in one GET when at most this many bytes lie between them.
FLOOR_MAX_GAP = 1024
PROJ_SCHEMA = "https://stac-extensions.github.io/projection/v1.1.0/schema.json"
RASTER_SCHEMA = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"

TOOLS = {
    "aoi": {
        "ours_numpy": "rasteret_dask get_numpy",
        "ours_xarray": "rasteret_dask get_xarray",
        "rasterio": f"rasterio ×{THREADS} threads",
        "stackstac": f"stackstac ×{THREADS} threads",
        "odcstac": f"odc-stac ×{THREADS} threads",
        "floor": "floor: aiohttp + imagecodecs",
    },
    "aois": {
        "ours_numpy": "rasteret_dask get_numpy",
        "rasterio": f"rasterio ×{THREADS} threads",
        "stackstac": f"stackstac ×{THREADS} threads",
        "odcstac": f"odc-stac ×{THREADS} threads",
        "floor": "floor: aiohttp + imagecodecs",
    },
    "mean": {
        "ours": f"rasteret_dask get_xarray, threads ×{THREADS}",
        "stackstac": f"stackstac, threads ×{THREADS}",
        "odcstac": f"odc-stac, threads ×{THREADS}",
        "ours_cluster": f"rasteret_dask, LocalCluster {CLUSTER_WORKERS}×{THREADS // CLUSTER_WORKERS}",
        "stackstac_cluster": f"stackstac, LocalCluster {CLUSTER_WORKERS}×{THREADS // CLUSTER_WORKERS}",
        "odcstac_cluster": f"odc-stac, LocalCluster {CLUSTER_WORKERS}×{THREADS // CLUSTER_WORKERS}",
        "ours_cluster_tuned": f"rasteret_dask, LocalCluster {CLUSTER_WORKERS}×{THREADS // CLUSTER_WORKERS},"
        " MALLOC_MMAP_THRESHOLD_ 32 MiB",
        "floor": "floor: aiohttp + imagecodecs",
        "expression": f"the mean expression alone: dask threads ×{THREADS} on the stack in memory, no I/O",
    },
}
GDAL_TOOLS = ("rasterio", "stackstac", "odcstac")
TUNED_MMAP_THRESHOLD = 32 * 1024 * 1024


@dataclass(frozen=True)
class Layout:
    """Sizes of the cases at one scale."""

    aoi_dates: int
    aoi_px: int
    n_aois: int
    mean_dates: int
    mean_px: int


def layout(opts: Options) -> Layout:
    """Full: the sizes of the issue; quick: 8 AOIs and a 1000-px mean on 1024-px files; smoke: tiny."""
    return opts.pick(
        Layout(aoi_dates=12, aoi_px=256, n_aois=32, mean_dates=24, mean_px=2000),
        Layout(aoi_dates=12, aoi_px=256, n_aois=8, mean_dates=24, mean_px=1000),
        Layout(aoi_dates=1, aoi_px=64, n_aois=4, mean_dates=1, mean_px=200),
    )


# The smoke run (CI) starts as few processes as still run every code path once: each peer and each way of
# computing appears in one case only.
SMOKE_TOOLS = {
    "aoi": list(TOOLS["aoi"]),
    "aois": ["ours_numpy", "floor"],
    "mean": ["ours", "ours_cluster", "floor", "expression"],
}


def tools(case: str, opts: Options) -> list[str]:
    """Tools measured in ``case``: all of them, but fewer in the smoke run (:data:`SMOKE_TOOLS`)."""
    return SMOKE_TOOLS[case] if opts.scale == "smoke" else list(TOOLS[case])


@dataclass(frozen=True)
class Area:
    """A pixel-aligned area on the native grid of one zone: rows/cols of that zone's rasters."""

    zone: int
    row: int
    col: int
    height: int
    width: int


# ------------------------------------------------------------------------------------------ the parent


def run(opts: Options) -> list[Row]:
    """Serve the data set, build the collections, and measure every case at each latency (see module doc)."""
    from tests.servers.range_server import serve_directory

    spec = dataset_spec(opts)
    lay = layout(opts)
    opts.log(f"reads: data set of {spec.n_files} files ({spec.size} px) ...")
    ds = ensure_dataset(spec, opts.data_root)
    scenes = _scenes(ds)
    if max(lay.aoi_dates, lay.mean_dates) > len({s["date"] for s in scenes}):
        raise ValueError("the data set has too few dates for this layout")
    cases = _areas(spec, lay)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="rdbench-reads-") as tmp, serve_directory(ds.root) as server:
        base = server.url
        selections = {
            "aoi": [s for s in scenes if s["date"] < lay.aoi_dates],
            "aois": [s for s in scenes if s["date"] < lay.aoi_dates],
            "mean": [s for s in scenes if s["date"] < lay.mean_dates],
        }
        opts.log("reads: building the collections (headers at 0 ms) ...")
        collections = {}
        for name, chosen in (("aois", selections["aoi"]), ("mean", selections["mean"])):
            collections[name] = str(Path(tmp) / f"collection_{name}")
            _export_collection(chosen, base, collections[name])
        headers = {}
        params = {}
        for case, areas in cases.items():
            chosen = selections[case]
            collection = collections["mean" if case == "mean" else "aois"]
            params[case] = _params(case, areas, chosen, ds, base, collection, headers)
        for latency in opts.pick((0, 30), (0, 30), (30,)):
            server.set_latency(latency)
            for case in cases:
                label = _case_label(case, cases[case], params[case], latency)
                opts.log(f"reads: {label} (load average {os.getloadavg()[0]:.2f})")

                def one(tool, case=case):
                    env = GDAL_CLOUD_ENV if tool.split("_")[0] in GDAL_TOOLS else None
                    server.reset_stats()
                    server_cpu = _server_cpu(server)
                    result = run_fresh(__name__.rsplit(".", 1)[-1], tool, params[case], env=env)
                    stats = server.stats()
                    result.update(requests=stats["requests"], bytes=stats["bytes"])
                    if server_cpu is not None:  # the server works only while this child sends requests
                        result["server_cpu_seconds"] = _server_cpu(server) - server_cpu
                    return result

                results = measure_interleaved(tools(case, opts), opts.repeats, one, opts.log)
                rows += _rows(case, label, results, latency)
    return rows


def _server_cpu(server) -> float | None:
    process = getattr(server, "_process", None)  # the test helper's server process, when it has one
    return None if process is None else process_cpu_seconds(process.pid)


def _case_label(case: str, areas: list[Area], params: dict, latency: int) -> str:
    n_scenes = len(params["areas"][0]["items"])
    size = f"{areas[0].height}²"
    bands = len(params["bands"])
    if case == "aoi":
        return f"1 AOI {size} × {n_scenes} dates × {bands} bands, {latency} ms"
    if case == "aois":
        return f"{len(areas)} AOIs {size} × {n_scenes} dates × {bands} bands, {latency} ms"
    return f"mean {size} × {n_scenes} dates × {bands} bands, {latency} ms"


def _scenes(ds: Dataset) -> list[dict]:
    """One dict per scene: id, datetime, zone, date index, transform, size and band -> relative path."""
    by_id: dict[str, dict] = {}
    for rec in ds.files:
        scene = by_id.setdefault(
            rec["scene_id"],
            {
                "id": rec["scene_id"],
                "datetime": rec["datetime"],
                "zone": rec["zone"],
                "transform": rec["transform"],
                "width": rec["width"],
                "height": rec["height"],
                "bands": {},
            },
        )
        scene["bands"][rec["band"]] = rec["path"]
    dates = sorted({s["datetime"] for s in by_id.values()})
    for scene in by_id.values():
        scene["date"] = dates.index(scene["datetime"])
    return sorted(by_id.values(), key=lambda s: (s["datetime"], s["id"]))


def _areas(spec, lay: Layout) -> dict[str, list[Area]]:
    """The areas of every case, on the rasters' pixel grid (all rasters of a zone share it)."""
    size, tile = spec.size, spec.tile
    px = lay.aoi_px
    # One AOI inside one tile (a 256-px AOI falls in one 1024-px tile more often than not).
    row = min(size * 300 // 2048, tile - px)
    col = min(size * 500 // 2048, tile - px)
    single = [Area(spec.zones[0], row, col, px, px)]
    rng = np.random.default_rng(AOI_SEED)
    many = []
    for k in range(lay.n_aois):
        zone = spec.zones[k % len(spec.zones)]
        r, c = (int(v) for v in rng.integers(0, size - px + 1, 2))
        many.append(Area(zone, r, c, px, px))
    many.sort(key=lambda a: spec.zones.index(a.zone))  # zone by zone, places in drawing order
    offset = (size - lay.mean_px) // 2
    mean = [Area(spec.zones[0], offset, offset, lay.mean_px, lay.mean_px)]
    return {"aoi": single, "aois": many, "mean": mean}


def _area_transform(scene: dict, area: Area) -> list[float]:
    a, b, c, d, e, f = scene["transform"]
    return [a, b, c + a * area.col + b * area.row, d, e, f + d * area.col + e * area.row]


def _lonlat_polygon(zone: int, transform: list[float], height: int, width: int, inset: float):
    """A pixel-aligned rectangle (``inset`` pixels inside its edges), densified, in CRS84 lon/lat."""
    import shapely
    from pyproj import Transformer

    a, _, c, _, e, f = transform
    box = shapely.box(c + inset * a, f + (height - inset) * e, c + (width - inset) * a, f + inset * e)
    ring = np.asarray(shapely.segmentize(box, DENSIFY_M).exterior.coords)
    lon, lat = Transformer.from_crs(f"EPSG:{zone}", "OGC:CRS84", always_xy=True).transform(
        ring[:, 0], ring[:, 1]
    )
    return shapely.Polygon(np.column_stack([lon, lat]))


def _footprint(scene: dict):
    return _lonlat_polygon(scene["zone"], scene["transform"], scene["height"], scene["width"], 0.0)


def _export_collection(scenes: list[dict], base: str, path: str) -> None:
    import geopandas as gpd
    import pandas as pd

    import rasteret_dask as rd

    rows = [
        {
            "id": s["id"],
            "datetime": pd.Timestamp(s["datetime"]),
            "geometry": _footprint(s),
            "assets": {b: {"href": base + p, "band_index": None} for b, p in s["bands"].items()},
        }
        for s in scenes
    ]
    collection = rd.build_from_table(
        gpd.GeoDataFrame(rows, geometry="geometry", crs="OGC:CRS84"), progress=False
    )
    if collection.build_report.failed_total:
        raise RuntimeError(f"building the benchmark collection failed: {collection.build_report}")
    collection.export(path)


def _item(scene: dict, base: str) -> dict:
    """A STAC item with the projection and raster extensions filled in (no file needs opening)."""
    import shapely

    footprint = _footprint(scene)
    proj = {
        "proj:epsg": scene["zone"],
        "proj:code": f"EPSG:{scene['zone']}",
        "proj:shape": [scene["height"], scene["width"]],
        "proj:transform": list(scene["transform"]),
    }
    raster = [{"data_type": "uint16", "nodata": NODATA, "spatial_resolution": scene["transform"][0]}]
    assets = {
        band: {
            "href": base + path,
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data"],
            **proj,
            "raster:bands": raster,
        }
        for band, path in scene["bands"].items()
    }
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [PROJ_SCHEMA, RASTER_SCHEMA],
        "id": scene["id"],
        "geometry": shapely.geometry.mapping(footprint),
        "bbox": list(footprint.bounds),
        "properties": {"datetime": scene["datetime"], **proj},
        "links": [],
        "assets": assets,
    }


def _params(
    case: str, areas: list[Area], scenes: list[dict], ds: Dataset, base: str, collection: str, headers
) -> dict:
    """Everything the child processes of one case need (plain JSON)."""
    from .bench_decode import _local_header
    from .bench_headers import _our_http_concurrency

    bands = list(ds.spec.bands)
    items: dict[str, dict] = {}
    area_params = []
    tiles: dict[tuple[str, int], int] = {}
    tile_list: list[list] = []
    chips: list[
        list
    ] = []  # per chip (area, scene, band): pieces [tile, in_r0, in_r1, in_c0, in_c1, out_r0, out_c0]
    per_file: dict[str, list] = {}  # url -> [[chip, row, col], ...] for rasterio
    mean_pieces: dict[int, list] = {}  # tile -> pieces with the band index first
    codec = None
    for area in areas:
        covering = [s for s in scenes if s["zone"] == area.zone]
        for s in covering:
            items.setdefault(s["id"], _item(s, base))
        area_params.append(
            {
                "zone": area.zone,
                "transform": _area_transform(covering[0], area),
                "shape": [area.height, area.width],
                "items": [s["id"] for s in covering],
                "wkt": _lonlat_polygon(
                    area.zone, _area_transform(covering[0], area), area.height, area.width, INSET_PX
                ).wkt,
            }
        )
        for s in covering:
            for b, band in enumerate(bands):
                path = s["bands"][band]
                url = base + path
                if path not in headers:
                    headers[path] = _local_header(str(ds.root / path))
                level = headers[path].levels[0]
                codec = level.codec
                th, tw = level.codec.tile_height, level.codec.tile_width
                pieces = []
                for tr in range(area.row // th, (area.row + area.height - 1) // th + 1):
                    for tc in range(area.col // tw, (area.col + area.width - 1) // tw + 1):
                        i = level.tile_index(tr, tc)
                        key = (url, int(level.tile_offsets[i]))
                        if key not in tiles:
                            tiles[key] = len(tile_list)
                            tile_list.append(
                                [url, int(level.tile_offsets[i]), int(level.tile_byte_counts[i])]
                            )
                        r0, r1 = max(area.row, tr * th), min(area.row + area.height, (tr + 1) * th)
                        c0, c1 = max(area.col, tc * tw), min(area.col + area.width, (tc + 1) * tw)
                        piece = [tiles[key], r0 - tr * th, r1 - tr * th, c0 - tc * tw, c1 - tc * tw]
                        piece += [r0 - area.row, c0 - area.col]
                        pieces.append(piece)
                        if case == "mean":
                            mean_pieces.setdefault(tiles[key], []).append([b, *piece[1:]])
                per_file.setdefault(url, []).append([len(chips), area.row, area.col])
                chips.append(pieces)
    if codec.compression not in (8, 32946) or codec.predictor != 2 or codec.byteorder != "<":
        raise ValueError("the floor reads little-endian deflate + predictor 2 files only")
    return {
        "case": case,
        "bands": bands,
        "threads": THREADS,
        "workers": CLUSTER_WORKERS,
        "collection": collection,
        "areas": area_params,
        "items": items,
        "tiles": tile_list,
        "tile": [codec.tile_height, codec.tile_width],
        "dtype": codec.dtype,
        "concurrency": _our_http_concurrency(),
        "chips": chips if case != "mean" else [],
        "chip_shape": [areas[0].height, areas[0].width],
        "per_file": [[url, windows] for url, windows in per_file.items()],
        "mean_pieces": [mean_pieces.get(i, []) for i in range(len(tile_list))] if case == "mean" else [],
    }


def _rows(case: str, label: str, results: dict[str, list[dict]], latency: int) -> list[Row]:
    seconds = {tool: median_of(rs) for tool, rs in results.items()}
    rows = []
    for tool, name in TOOLS[case].items():
        if tool not in results:
            continue
        rs = results[tool]
        requests, nbytes = median_of(rs, "requests"), median_of(rs, "bytes")
        cpu, server_cpu = median_of(rs, "cpu_seconds"), median_of(rs, "server_cpu_seconds")
        rate = "" if cpu is None else f"CPU {cpu:.2f} s"
        if cpu is not None and server_cpu is not None:
            rate += f" (server {server_cpu:.2f} s)"
        row = Row(
            "reads",
            label,
            name,
            time=spread(rs),
            rate=rate,
            requests="" if requests is None else f"{requests:,.0f} in all",
            bytes="" if nbytes is None else f"{fmt_bytes(nbytes)} in all",
            failed=failed(rs),
        )
        if tool.startswith("ours"):
            row.ratio, row.target = _ratios(case, tool, seconds, latency)
        rows.append(row)
    rows += _check_rows(case, label, results)
    return rows


def _ratios(case: str, tool: str, seconds: dict, latency: int) -> tuple[str, str]:
    t = seconds[tool]
    parts = [f"{fmt_ratio(ratio(t, seconds.get('floor')))} floor's time"]
    if case == "mean":
        suffix = tool[tool.index("_cluster") :] if "_cluster" in tool else ""
        for peer, name in (("stackstac", "stackstac"), ("odcstac", "odc-stac")):
            parts.append(f"{fmt_ratio(ratio(seconds.get(peer + suffix), t))} faster than {name}")
        with_expression = None
        if seconds.get("floor") is not None and seconds.get("expression") is not None:
            with_expression = seconds["floor"] + seconds["expression"]
        parts.insert(1, f"{fmt_ratio(ratio(t, with_expression))} floor + expression")
        return "; ".join(parts), "≤1.4× floor" if suffix else "≤1.2× floor"
    parts.append(f"{fmt_ratio(ratio(t, seconds.get('rasterio')))} rasterio's time")
    for peer, name in (("stackstac", "stackstac"), ("odcstac", "odc-stac")):
        parts.append(f"{fmt_ratio(ratio(seconds.get(peer), t))} faster than {name}")
    target = "≤1.2× floor; ≤1× rasterio"
    if latency == 30:
        target += "; ≥3× faster than stackstac, odc-stac"
    return "; ".join(parts), target


def _check_rows(case: str, label: str, results: dict[str, list[dict]]) -> list[Row]:
    """A CHECK row when the tools' checksums disagree (listing who agrees with whom)."""
    groups: dict[str, set[str]] = {}
    for tool, rs in results.items():
        for r in rs:
            if "check" in r:
                groups.setdefault(f"{r['check']} {tuple(r['shape'])}", set()).add(TOOLS[case][tool])
    if len(groups) <= 1:
        return []
    text = " vs ".join(", ".join(sorted(names)) for names in groups.values())
    return [Row("reads", label, "CHECK", time=f"results differ: {text}", failed=True)]


# ------------------------------------------------------------------------------------- child process


def measure(tool: str, params: dict) -> dict:
    """Run one tool on one case; seconds, CPU seconds, a checksum and the result's shape."""
    case = params["case"]
    if tool == "floor":
        seconds, cpu, result = _floor(params)
    elif tool == "rasterio":
        seconds, cpu, result = _rasterio(params)
    elif tool.startswith("ours"):
        seconds, cpu, result = _ours(tool, params)
    elif tool == "expression":
        seconds, cpu, result = _expression(params)
    elif tool.startswith("stackstac"):
        seconds, cpu, result = _stackstac(tool, params)
    elif tool.startswith("odcstac"):
        seconds, cpu, result = _odcstac(tool, params)
    else:
        raise ValueError(f"unknown tool {tool!r}")
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "check": _checksum(result),
        "shape": list(result.shape),
        "case": case,
        "load": os.getloadavg()[0],
    }


def _checksum(result: np.ndarray) -> str:
    if result.dtype.kind == "f":  # NaN bit patterns differ between ways of making one
        result = np.where(np.isnan(result), np.asarray(np.nan, result.dtype), result)
    return f"{zlib.crc32(np.ascontiguousarray(result)):08x}"


class _Clock:
    """Wall and CPU time of this process, plus CPU time of a cluster's workers when given a client."""

    def __init__(self, client=None):
        self.client = client

    def _worker_cpu(self) -> float:
        if self.client is None:
            return 0.0
        return sum(self.client.run(time.process_time).values())

    def __enter__(self):
        self.worker_cpu = self._worker_cpu()
        self.start, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        self.cpu = time.process_time() - self.cpu
        self.cpu += self._worker_cpu() - self.worker_cpu
        return False


def _import_modules(names: list[str]) -> None:
    import importlib

    for name in names:
        importlib.import_module(name)


@contextlib.contextmanager
def _scheduler(tool: str, params: dict, modules: list[str]):
    """The threaded scheduler with ``threads`` threads, or a LocalCluster whose workers import ``modules``."""
    import dask

    if "_cluster" not in tool:
        with dask.config.set(scheduler="threads", num_workers=params["threads"]):
            yield None
        return
    from distributed import Client, LocalCluster

    workers = params["workers"]
    if tool.endswith("_tuned"):
        # distributed starts workers with MALLOC_TRIM_THRESHOLD_ set, which fixes glibc's mmap threshold at
        # 128 KiB: every array larger than that is mapped and unmapped anew, page faults each time.
        dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": TUNED_MMAP_THRESHOLD})
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=params["threads"] // workers,
            processes=True,
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(_import_modules, modules)
        yield client


def _stack_chips(chips: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([c.reshape(-1, *c.shape[-2:]) for c in chips])


def _masked_mean(arrays: list):
    """The nodata-masked temporal mean of each (time, y, x) DataArray: the same expression for every tool."""
    return [a.where(a != NODATA).mean("time") for a in arrays]


def _ours(tool: str, params: dict):
    import aiohttp  # noqa: F401  (imported on first request otherwise: imports stay outside the timer)
    import dask
    import shapely

    import rasteret_dask as rd

    case, bands = params["case"], params["bands"]
    aois = [shapely.from_wkt(a["wkt"]) for a in params["areas"]]
    modules = ["rasteret_dask.collection", "rasteret_dask.read.stack", "xarray", "aiohttp"]
    with _scheduler(tool, params, modules) as client:
        # Loaded into the cluster's memory when there is one, as a user would after starting the client.
        collection = rd.load(params["collection"]).persist()
        with _Clock(client) as clock:
            if case == "mean":
                ds = collection.get_xarray(aois[0], bands=bands)
                means = dask.compute(*[m.data for m in _masked_mean([ds[b] for b in bands])])
            elif tool == "ours_xarray":
                ds = collection.get_xarray(aois[0], bands=bands).compute()
            else:
                chips = collection.get_numpy(aois, bands=bands)
    if case == "mean":
        return clock.seconds, clock.cpu, np.stack(means)
    if tool == "ours_xarray":
        return clock.seconds, clock.cpu, _stack_chips([np.stack([ds[b].values for b in bands], axis=1)])
    return clock.seconds, clock.cpu, _stack_chips([chips])


def _expression(params: dict):
    """The mean expression alone: the stack read into memory first (untimed), then wrapped in dask
    arrays of the same chunks and reduced on the threaded scheduler."""
    import dask
    import dask.array as da
    import shapely

    import rasteret_dask as rd

    bands = params["bands"]
    aoi = shapely.from_wkt(params["areas"][0]["wkt"])
    with dask.config.set(scheduler="threads", num_workers=params["threads"]):
        ds = rd.load(params["collection"]).get_xarray(aoi, bands=bands)
        chunks = ds[bands[0]].data.chunks
        ds = ds.compute()
        for b in bands:
            ds[b] = ds[b].copy(data=da.from_array(ds[b].values, chunks=chunks))
        with _Clock() as clock:
            means = dask.compute(*[m.data for m in _masked_mean([ds[b] for b in bands])])
    return clock.seconds, clock.cpu, np.stack(means)


def _stackstac(tool: str, params: dict):
    import dask
    import pystac
    import stackstac

    case, bands = params["case"], params["bands"]
    items = {k: pystac.Item.from_dict(d) for k, d in params["items"].items()}
    env = stackstac.DEFAULT_GDAL_ENV.updated(always=GDAL_CLOUD_ENV)
    with _scheduler(tool, params, ["stackstac", "rasterio", "xarray"]) as client, _Clock(client) as clock:
        stacks = []
        for area in params["areas"]:
            a, _, c, _, e, f = area["transform"]
            h, w = area["shape"]
            stacks.append(
                stackstac.stack(
                    [items[i] for i in area["items"]],
                    assets=bands,
                    epsg=area["zone"],
                    resolution=a,
                    bounds=(c, f + e * h, c + a * w, f),
                    dtype="uint16",
                    fill_value=np.uint16(NODATA),  # stackstac checks the fill by its type
                    rescale=False,
                    gdal_env=env,
                )
            )
        if case == "mean":
            (stack,) = stacks
            means = dask.compute(*[m.data for m in _masked_mean([stack.sel(band=b) for b in bands])])
        else:
            values = dask.compute(*[s.data for s in stacks])
    if case == "mean":
        return clock.seconds, clock.cpu, np.stack(means)
    return clock.seconds, clock.cpu, _stack_chips(list(values))


def _odcstac(tool: str, params: dict):
    import dask
    import odc.stac
    import pystac
    from affine import Affine
    from odc.geo.geobox import GeoBox

    case, bands = params["case"], params["bands"]
    items = {k: pystac.Item.from_dict(d) for k, d in params["items"].items()}
    lazy = case != "aoi"
    with _scheduler(tool, params, ["odc.stac", "odc.loader", "rasterio", "xarray"]) as client:
        odc.stac.configure_rio(cloud_defaults=True, client=client, **GDAL_CLOUD_ENV)
        with _Clock(client) as clock:
            loads = []
            for area in params["areas"]:
                geobox = GeoBox(tuple(area["shape"]), Affine(*area["transform"]), f"EPSG:{area['zone']}")
                loads.append(
                    odc.stac.load(
                        [items[i] for i in area["items"]],
                        bands=bands,
                        geobox=geobox,
                        dtype="uint16",
                        nodata=NODATA,
                        chunks={"x": 1024, "y": 1024} if lazy else None,
                        pool=None if lazy else params["threads"],
                    )
                )
            if case == "mean":
                (ds,) = loads
                means = dask.compute(*[m.data for m in _masked_mean([ds[b] for b in bands])])
            elif lazy:
                values = dask.compute(*[np.stack([ds[b].data for b in bands], axis=1) for ds in loads])
            else:
                values = [np.stack([ds[b].values for b in bands], axis=1) for ds in loads]
    if case == "mean":
        return clock.seconds, clock.cpu, np.stack(means)
    return clock.seconds, clock.cpu, _stack_chips(list(values))


def _rasterio(params: dict):
    from concurrent.futures import ThreadPoolExecutor

    import rasterio
    from rasterio.windows import Window

    h, w = params["chip_shape"]
    out = np.empty((len(params["chips"]), h, w), np.dtype(params["dtype"]))

    def one(job):
        url, windows = job
        with rasterio.open(f"/vsicurl/{url}") as src:
            for k, row, col in windows:
                out[k] = src.read(1, window=Window(col, row, w, h))

    with ThreadPoolExecutor(params["threads"]) as pool, _Clock() as clock:
        list(pool.map(one, params["per_file"]))
    return clock.seconds, clock.cpu, out


def _contiguous_runs(tiles: list[list]) -> list[tuple[str, int, int, list[int]]]:
    """Tiles of one file that (nearly) follow one another, as (url, start, stop, tile indices) GETs.

    GDAL's COG writer puts a few bytes (the tile's size, the end of the previous tile) between tiles, so
    tiles count as neighbours when at most :data:`FLOOR_MAX_GAP` bytes lie between them.
    """
    order = sorted(range(len(tiles)), key=lambda i: (tiles[i][0], tiles[i][1]))
    runs: list[tuple[str, int, int, list[int]]] = []
    for i in order:
        url, offset, count = tiles[i]
        if runs and runs[-1][0] == url and 0 <= offset - runs[-1][2] <= FLOOR_MAX_GAP:
            runs[-1] = (url, runs[-1][1], offset + count, [*runs[-1][3], i])
        else:
            runs.append((url, offset, offset + count, [i]))
    return runs


def _floor(params: dict):
    """Fetch each needed tile once (contiguous tiles in one GET), decode each once as it arrives."""
    import asyncio
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import aiohttp
    import imagecodecs

    tiles = params["tiles"]
    th, tw = params["tile"]
    dtype = np.dtype(params["dtype"])
    runs = _contiguous_runs(tiles)
    mean = params["case"] == "mean"
    if mean:
        h, w = params["chip_shape"]
        n_bands = len(params["bands"])
        sums = np.zeros((n_bands, h, w), np.float64)
        counts = np.zeros((n_bands, h, w), np.uint16)
        locks = [threading.Lock() for _ in range(n_bands)]
        pieces = params["mean_pieces"]
    decoded: list[np.ndarray | None] = [None] * len(tiles)

    def decode(index: int, blob) -> None:
        tile = np.empty((th, tw), dtype)
        imagecodecs.deflate_decode(blob, out=tile.reshape(-1).view(np.uint8))
        imagecodecs.delta_decode(tile, axis=-1, out=tile)
        if not mean:
            decoded[index] = tile
            return
        for b, r0, r1, c0, c1, o_r, o_c in pieces[index]:
            part = tile[r0:r1, c0:c1]
            valid = part != NODATA
            rows, cols = slice(o_r, o_r + r1 - r0), slice(o_c, o_c + c1 - c0)
            with locks[b]:
                np.add(sums[b, rows, cols], part, out=sums[b, rows, cols], where=valid)
                counts[b, rows, cols] += valid

    async def fetch(session, pool, run) -> None:
        url, start, stop, members = run
        async with session.get(url, headers={"Range": f"bytes={start}-{stop - 1}"}) as resp:
            body = await resp.read()
        if resp.status != 206 or len(body) != stop - start:
            raise RuntimeError(f"{url}: status {resp.status}, {len(body)} of {stop - start} bytes")
        view = memoryview(body)
        loop = asyncio.get_running_loop()
        jobs = [
            loop.run_in_executor(
                pool, decode, i, view[tiles[i][1] - start : tiles[i][1] - start + tiles[i][2]]
            )
            for i in members
        ]
        await asyncio.gather(*jobs)

    async def main(pool) -> None:
        connector = aiohttp.TCPConnector(limit=params["concurrency"])
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.gather(*(fetch(session, pool, run) for run in runs))

    with ThreadPoolExecutor(os.cpu_count() or 2) as pool, _Clock() as clock:
        asyncio.run(main(pool))
        if mean:
            with np.errstate(invalid="ignore", divide="ignore"):
                result = sums.astype(np.float32) / counts.astype(np.float32)
        else:
            h, w = params["chip_shape"]
            result = np.empty((len(params["chips"]), h, w), dtype)
            for k, chip in enumerate(params["chips"]):
                for i, r0, r1, c0, c1, o_r, o_c in chip:
                    result[k, o_r : o_r + r1 - r0, o_c : o_c + c1 - c0] = decoded[i][r0:r1, c0:c1]
    return clock.seconds, clock.cpu, result
