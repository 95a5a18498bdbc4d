"""Header throughput: COG headers per second from a loopback range server at 0 and 30 ms latency.

Tools, each timed in its own fresh process, interleaved:

- ``rasteret_dask async``: ``read_cog_header_async`` for every URL at once, gathered on the package's
  I/O loop (``rasteret_dask.io.run_sync``), default ``IOConfig``;
- ``rasteret_dask sync``: ``read_cog_header`` from a 16-thread pool;
- ``rasterio``: ``rasterio.open("/vsicurl/...")`` from a 16-thread pool with the usual cloud GDAL
  settings (:data:`GDAL_CLOUD_ENV`), touching width, height, transform, CRS, nodata and overviews;
- ``floor``: one aiohttp session, one GET of the first 64 KiB per file, concurrently, and the pure
  parser ``rasteret_dask.tiff.parse_header`` on the answer (no io layer), with as many requests in
  flight as rasteret_dask's default for HTTP (so the ratio measures overhead, not a concurrency
  setting); ``floor (100 in flight)`` is the same with aiohttp's default connection limit.

Requests and bytes come from the server's counters (HEAD requests included: GDAL sends one per file);
"in flight" is the most requests the server saw at once. "CPU each" is the client process's CPU time
(all threads) per header, which other load on the machine barely changes; "server ... CPU each" is the
server process's per header: the server is not the bottleneck while that stays well below the wall
time per header.
"""

from __future__ import annotations

import time

from .data import DatasetSpec, ensure_dataset
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

NAME = "headers"
ORDER = 10
TITLE = "COG header throughput"

THREADS = 16
PREFIX = 64 * 1024
# The cloud settings GDAL users set (PEERS.md); every GDAL-based tool gets them.
GDAL_CLOUD_ENV = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif",
    "GDAL_HTTP_MULTIPLEX": "YES",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "VSI_CACHE": "TRUE",
    "GDAL_INGESTED_BYTES_AT_OPEN": "32768",
}
TOOLS = {
    "ours_async": "rasteret_dask async (one loop)",
    "ours_sync": f"rasteret_dask sync ×{THREADS} threads",
    "rasterio": f"rasterio /vsicurl/ ×{THREADS} threads",
    "floor": "floor: aiohttp + parse_header",
    "floor100": "floor, 100 in flight",
}


def dataset_spec(opts: Options) -> DatasetSpec:
    """200 COGs (25 dates x 2 zones x 4 bands); 2048 px full, 1024 px quick, 8 tiny files for smoke."""
    return opts.pick(
        DatasetSpec(n_dates=25, size=2048),
        DatasetSpec(n_dates=25, size=1024),
        DatasetSpec(n_dates=1, size=512, tile=256),
    )


def tools(opts: Options) -> list[str]:
    """Tools measured: all of them, but the smoke run skips the second floor (same code as the first)."""
    return [tool for tool in TOOLS if opts.scale != "smoke" or tool != "floor100"]


def run(opts: Options) -> list[Row]:
    from tests.servers.range_server import serve_directory

    spec = dataset_spec(opts)
    opts.log(f"headers: data set of {spec.n_files} files ({spec.size} px) ...")
    ds = ensure_dataset(spec, opts.data_root)
    rows: list[Row] = []
    for latency in opts.pick((0, 30), (0, 30), (30,)):
        with serve_directory(ds.root, latency_ms=latency) as server:
            params = {"urls": ds.urls(server.url), "threads": THREADS, "concurrency": _our_http_concurrency()}

            def one(tool, server=server, params=params):
                env = GDAL_CLOUD_ENV if tool == "rasterio" else None
                server.reset_stats()
                server_cpu = _server_cpu(server)
                result = run_fresh(__name__.rsplit(".", 1)[-1], tool, params, env=env)
                stats = server.stats()
                result.update(
                    requests=stats["requests"], bytes=stats["bytes"], max_in_flight=stats["max_in_flight"]
                )
                if server_cpu is not None:  # the server works only while this child sends requests
                    result["server_cpu_seconds"] = _server_cpu(server) - server_cpu
                return result

            opts.log(f"headers: {len(ds.files)} COGs at {latency} ms latency")
            results = measure_interleaved(tools(opts), opts.repeats, one, opts.log)
        rows += _rows(f"{len(ds.files)} COGs, {latency} ms", results, len(ds.files), latency)
    return rows


def _server_cpu(server) -> float | None:
    process = getattr(server, "_process", None)  # the test helper's server process, when it has one
    return None if process is None else process_cpu_seconds(process.pid)


def _our_http_concurrency() -> int:
    from rasteret_dask.io.config import IOConfig

    return IOConfig().concurrency_for("http")


def _rows(case: str, results: dict[str, list[dict]], n: int, latency: int) -> list[Row]:
    seconds = {tool: median_of(rs) for tool, rs in results.items()}
    checks = {tuple(r["check"]) for rs in results.values() for r in rs if "check" in r}
    rows = []
    for tool, label in TOOLS.items():
        if tool not in results:
            continue
        rs = results[tool]
        t = seconds[tool]
        requests, nbytes = median_of(rs, "requests"), median_of(rs, "bytes")
        in_flight = median_of(rs, "max_in_flight")
        cpu_ms = (median_of(rs, "cpu_seconds") or 0) / n * 1000
        server_ms = median_of(rs, "server_cpu_seconds")
        notes = []
        if latency > 0 and in_flight is not None:  # at 0 ms the server never yields inside a request
            notes.append(f"≤{in_flight:.0f} in flight")
        if server_ms is not None:
            notes.append(f"server {server_ms / n * 1000:.2f} ms CPU each")
        row = Row(
            "headers",
            case,
            label,
            time=spread(rs),
            rate="" if t is None else f"{n / t:,.0f} headers/s; {cpu_ms:.2f} ms CPU each",
            requests="" if requests is None else f"{requests / n:.2f} ({', '.join(notes)})",
            bytes="" if nbytes is None else fmt_bytes(nbytes / n),
            failed=failed(rs),
        )
        if tool.startswith("ours"):
            row.ratio = (
                f"{fmt_ratio(ratio(seconds['rasterio'], t))} rasterio's rate; "
                f"{fmt_ratio(ratio(t, seconds['floor']))} floor's time"
            )
            row.target = "1 request/header; ≤1.5× floor's time" + ("; ≥5× rasterio" if latency == 30 else "")
        rows.append(row)
    if len(checks) > 1:
        rows.append(Row("headers", case, "CHECK", time="tools disagree on the headers", failed=True))
    return rows


# ------------------------------------------------------------------------------------- child process


def measure(tool: str, params: dict) -> dict:
    """Read every header of ``params["urls"]`` with ``tool``; seconds and a checksum of what was read."""
    urls, threads = params["urls"], params["threads"]
    if tool.startswith("ours"):
        import aiohttp
    if tool == "ours_async":
        import asyncio

        from rasteret_dask import read_cog_header_async
        from rasteret_dask.io import run_sync

        async def all_headers():
            return await asyncio.gather(*(read_cog_header_async(url) for url in urls))

        start, cpu = time.perf_counter(), time.process_time()
        headers = run_sync(all_headers())
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        check = _check([(h.width, h.height, len(h.tiff.levels)) for h in headers])
    elif tool == "ours_sync":
        from concurrent.futures import ThreadPoolExecutor

        from rasteret_dask import read_cog_header

        with ThreadPoolExecutor(threads) as pool:
            start, cpu = time.perf_counter(), time.process_time()
            headers = list(pool.map(read_cog_header, urls))
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        check = _check([(h.width, h.height, len(h.tiff.levels)) for h in headers])
    elif tool == "rasterio":
        from concurrent.futures import ThreadPoolExecutor

        import rasterio

        def open_one(url):
            with rasterio.open(f"/vsicurl/{url}") as src:
                _ = (src.transform, src.crs, src.nodata)
                return src.width, src.height, len(src.overviews(1)) + 1

        with ThreadPoolExecutor(threads) as pool:
            start, cpu = time.perf_counter(), time.process_time()
            found = list(pool.map(open_one, urls))
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        check = _check(found)
    elif tool in ("floor", "floor100"):
        import asyncio

        import aiohttp

        from rasteret_dask.tiff import FileBytes, NeedBytes, parse_header

        limit = params["concurrency"] if tool == "floor" else 100

        async def one(session, url):
            async with session.get(url, headers={"Range": f"bytes=0-{PREFIX - 1}"}) as resp:
                body = await resp.read()
                size = int(resp.headers["Content-Range"].rpartition("/")[2])
            known = FileBytes.from_prefix(body, size)
            while isinstance(result := parse_header(known), NeedBytes):
                for a, b in result.ranges:  # not expected for these files; kept for correctness
                    async with session.get(url, headers={"Range": f"bytes={a}-{b - 1}"}) as resp:
                        known.add(a, await resp.read())
            return result

        async def all_headers():
            connector = aiohttp.TCPConnector(limit=limit)
            async with aiohttp.ClientSession(connector=connector) as session:
                return await asyncio.gather(*(one(session, url) for url in urls))

        start, cpu = time.perf_counter(), time.process_time()
        headers = asyncio.run(all_headers())
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        check = _check([(h.width, h.height, len(h.levels)) for h in headers])
    else:
        raise ValueError(f"unknown tool {tool!r}")
    return {"seconds": seconds, "cpu_seconds": cpu, "items": len(urls), "check": check}


def _check(found: list[tuple[int, int, int]]) -> list[int]:
    return [sum(w for w, _, _ in found), sum(h for _, h, _ in found), sum(n for _, _, n in found)]
