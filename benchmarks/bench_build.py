"""Collections: build throughput (COG headers enriched per second at 30 ms) and load + subset of 1 M records.

**Build** (``build_from_table``, header enrichment included): records of four single-band COGs each,
served by the loopback range server with 30 ms latency. The 2,000 assets are 500 small COGs of the
Sentinel-2-like generator (1024 px, 256-px tiles, two overviews; 125 scenes x 4 bands) served under
four names each: hard links (copies where links fail) in ``c0/`` .. ``c3/`` of one served folder, so
every URL is a distinct file to every client and generation stays cheap. Tools, each in a fresh
process, interleaved:

- ``rasteret_dask build, threads``: ``rasteret_dask.build_from_table(frame)`` on the threaded
  scheduler, default partitioning (2,000 records per partition) and ``IOConfig``;
- ``rasteret_dask build, LocalCluster``: the same inside ``distributed.Client(LocalCluster(2 worker
  processes x 1 thread, 2 GB each))``, ``npartitions=4``; the cluster is started and its workers have
  imported rasteret_dask before the timer;
- ``rasterio``: ``rasterio.open("/vsicurl/...")`` of every asset from a 16-thread pool with the cloud
  GDAL settings (``bench_headers.GDAL_CLOUD_ENV``);
- ``floor``: ``bench_headers``' floor (one aiohttp session, one 64 KiB GET per file, the pure parser).

The time covers the whole call (normalising the records, enrichment, persist, the build report).
Requests and bytes are the server's counts (rasterio's HEADs included). Every tool's (width, height,
levels) sums must agree.

**Load**: a synthetic collection of 1,000,000 records (quick: 250,000): random 1 x 1 degree
footprints over the globe (latitudes -80..80), datetimes over 2024-2025, four fake assets, and four
``{band}_metadata`` structs made by ``header_to_dict`` of one real header of the data set above (tile
offsets varied per record), built as one partition per month and written with ``Collection.export``
(24 files; row groups of the default 50,000 and, in the full run, 5,000 records). Two ways to count
the records in a bbox of a quarter of the globe over one month (~1 % of the records), each in a fresh
process on the threaded scheduler:

- ``load + subset + len``: ``len(rd.load(path).subset(bbox=..., date_range=...))``;
- ``load(bbox, date_range) + len``: ``len(rd.load(path, bbox=..., date_range=...))``.

Peak memory is the growth of the process's peak RSS over its RSS before the timer (the peak is reset
first where Linux allows); "read" is the bytes the process read from files (``rchar`` of
``/proc/self/io``) against the collection's size on disk; files and row groups are ``LoadStats`` (kept
/ total), and "by statistics" the compressed bytes of the row groups whose bbox/datetime statistics
meet the filter, counted by this benchmark from the Parquet footers.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
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

NAME = "build"
ORDER = 30
TITLE = "Collection build and load"

THREADS = 16
LATENCY_MS = 30
CLUSTER_WORKERS = 2
CLUSTER_PARTITIONS = 4
BANDS = ("B02", "B03", "B04", "B08")
BUILD_TOOLS = {
    "ours_threads": "rasteret_dask build_from_table, threads",
    "ours_cluster": f"rasteret_dask build_from_table, LocalCluster {CLUSTER_WORKERS} processes",
    "rasterio": f"rasterio /vsicurl/ ×{THREADS} threads",
    "floor": "floor: aiohttp + parse_header",
}
LOAD_TOOLS = {
    "scan": "load() + subset(bbox, date_range) + len()",
    "pruned": "load(bbox=, date_range=) + len()",
}
# A quarter of the globe (about a quarter of the footprints) over one month of 24: ~1 % of the records.
LOAD_BBOX = (0.0, -80.0, 180.0, 0.0)
LOAD_DATES = ("2024-06-01", "2024-06-30")
FIRST_MONTH = (2024, 1)
MONTHS = 24
COLLECTION_VERSION = 1  # bump when the synthetic collection changes


def build_sizes(opts: Options) -> tuple[DatasetSpec, int, int]:
    """(data set, COGs used, names per COG): 500 x 4 = 2,000 assets; smoke 8 x 2."""
    return opts.pick(
        (DatasetSpec(n_dates=63, size=1024, tile=256), 500, 4),
        (DatasetSpec(n_dates=63, size=1024, tile=256), 500, 4),
        (DatasetSpec(n_dates=1, size=512, tile=256), 8, 2),
    )


def load_sizes(opts: Options) -> tuple[int, tuple[int, ...]]:
    """(records, row-group sizes to export with)."""
    return opts.pick((1_000_000, (50_000, 5_000)), (250_000, (5_000,)), (480, (10,)))


def run(opts: Options) -> list[Row]:
    spec, n_cogs, copies = build_sizes(opts)
    opts.log(f"build: data set of {spec.n_files} files ({spec.size} px) ...")
    ds = ensure_dataset(spec, opts.data_root)
    rows = _run_build(opts, ds, n_cogs, copies)
    rows += _run_load(opts, ds)
    return rows


# ---------------------------------------------------------------------------------------------- build


def served_directory(ds, n_cogs: int, copies: int, root: Path) -> tuple[Path, list[dict]]:
    """A folder serving the first ``n_cogs`` files of ``ds`` under ``copies`` names each (hard links).

    Returns the folder and the served files: the manifest record with ``copy`` and the served ``path``.
    """
    files = ds.files[:n_cogs]
    folder = Path(root) / f"build-served-{ds.spec.key}-{n_cogs}x{copies}"
    served = [
        {**record, "copy": c, "path": f"c{c}/{record['path']}"} for c in range(copies) for record in files
    ]
    if not (folder / ".complete").exists():
        shutil.rmtree(folder, ignore_errors=True)
        for item, record in zip(served, files * copies, strict=True):
            target = folder / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(ds.path(record), target)
            except OSError:
                shutil.copyfile(ds.path(record), target)
        (folder / ".complete").write_text("")
    return folder, served


def build_records(served: list[dict], base_url: str) -> list[dict]:
    """One record per (copy, scene): id, datetime, CRS84 bounds, EPSG code and band -> URL."""
    records: dict[str, dict] = {}
    for item in served:
        rid = f"{item['scene_id']}_c{item['copy']}"
        record = records.setdefault(
            rid,
            {
                "id": rid,
                "datetime": item["datetime"],
                "bounds": item["bounds_lonlat"],
                "epsg": item["zone"],
                "assets": {},
            },
        )
        record["assets"][item["band"]] = base_url.rstrip("/") + "/" + item["path"]
    return list(records.values())


def _run_build(opts: Options, ds, n_cogs: int, copies: int) -> list[Row]:
    from tests.servers.range_server import serve_directory

    from .bench_headers import GDAL_CLOUD_ENV, _our_http_concurrency

    folder, served = served_directory(ds, n_cogs, copies, Path(opts.data_root or cache_root()))
    n = len(served)
    with serve_directory(folder, latency_ms=LATENCY_MS) as server:
        records = build_records(served, server.url)
        urls = [url for r in records for url in r["assets"].values()]
        params = {
            "records": records,
            "urls": urls,
            "threads": THREADS,
            "concurrency": _our_http_concurrency(),
            "workers": CLUSTER_WORKERS,
            "partitions": CLUSTER_PARTITIONS,
        }

        def one(tool):
            env = GDAL_CLOUD_ENV if tool == "rasterio" else None
            server.reset_stats()
            result = run_fresh(__name__.rsplit(".", 1)[-1], tool, params, env=env)
            stats = server.stats()
            result.update(requests=stats["requests"], bytes=stats["bytes"])
            return result

        opts.log(f"build: {n} assets ({n_cogs} COGs × {copies} names) at {LATENCY_MS} ms latency")
        results = measure_interleaved(list(BUILD_TOOLS), opts.repeats, one, opts.log)
    case = f"build {n:,} assets ({n_cogs} COGs × {copies} names), {LATENCY_MS} ms"
    return _build_rows(case, results, n)


def _build_rows(case: str, results: dict[str, list[dict]], n: int) -> list[Row]:
    seconds = {tool: median_of(rs) for tool, rs in results.items()}
    checks = {tuple(r["check"]) for rs in results.values() for r in rs if "check" in r}
    rows = []
    for tool, label in BUILD_TOOLS.items():
        if tool not in results:
            continue
        rs = results[tool]
        t = seconds[tool]
        requests, nbytes = median_of(rs, "requests"), median_of(rs, "bytes")
        cpu = median_of(rs, "cpu_seconds")
        rate = "" if t is None else f"{n / t:,.0f} headers/s"
        if t is not None and cpu is not None and tool != "ours_cluster":
            rate += f"; {cpu / n * 1000:.2f} ms CPU each"
        row = Row(
            "build",
            case,
            label,
            time=spread(rs),
            rate=rate,
            requests="" if requests is None else f"{requests / n:.2f}",
            bytes="" if nbytes is None else fmt_bytes(nbytes / n),
            failed=failed(rs),
        )
        if tool.startswith("ours"):
            row.ratio = (
                f"{fmt_ratio(ratio(seconds.get('rasterio'), t))} rasterio's rate; "
                f"{fmt_ratio(ratio(t, seconds.get('floor')))} floor's time"
            )
            got = "" if t is None else f" (got {n / t:,.0f}/s, {(requests or 0) / n:.2f} GET)"
            row.target = f"≥1,000 headers/s, 1 GET per COG{got}"
        rows.append(row)
    if len(checks) > 1:
        rows.append(Row("build", case, "CHECK", time="tools disagree on the headers", failed=True))
    return rows


# ----------------------------------------------------------------------------------------------- load


def collection_path(root: Path, n_records: int, row_group_size: int) -> Path:
    return Path(root) / f"collection-v{COLLECTION_VERSION}-{n_records}-rg{row_group_size}"


def ensure_collection(root: Path, n_records: int, row_group_size: int, header_file: Path, log=None) -> Path:
    """The synthetic collection of ``n_records`` records exported under ``root`` (made unless cached)."""
    path = collection_path(root, n_records, row_group_size)
    if path.exists():  # export renames a complete folder into place: existing means complete
        return path
    if log is not None:
        log(f"build: writing a synthetic collection of {n_records:,} records to {path} ...")
    import dask

    collection = synthetic_collection(n_records, header_file)
    with dask.config.set(scheduler="threads"):
        collection.export(str(path), row_group_size=row_group_size)
    return path


def synthetic_collection(n_records: int, header_file: Path):
    """A lazy Collection of ``n_records`` synthetic records, one partition per month (see module doc)."""
    import dask.dataframe as dd
    import dask_geopandas

    from rasteret_dask.collection import Collection
    from rasteret_dask.tiff.arrow import header_to_dict

    from .bench_decode import _local_header

    header = header_to_dict(_local_header(str(header_file)))
    counts = np.diff(np.linspace(0, n_records, MONTHS + 1).astype(np.int64))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    parts = [(int(m), int(s), int(c), header) for m, s, c in zip(range(MONTHS), starts, counts, strict=True)]
    meta = _synthetic_part((0, 0, 0, header))
    frame = dd.from_map(_synthetic_part, parts, meta=meta, enforce_metadata=False)
    frame = dask_geopandas.from_dask_dataframe(frame, geometry="geometry")
    # The parts are normalised already (as_collection would normalise them again).
    return Collection(frame, name="synthetic", data_source="benchmarks.bench_build")


def _month_start(month: int) -> dt.datetime:
    year, index = divmod(FIRST_MONTH[1] - 1 + month, 12)
    return dt.datetime(FIRST_MONTH[0] + year, index + 1, 1)


def _synthetic_part(task: tuple):
    """``count`` records of month ``month`` (ids from ``start``), as a normalised GeoDataFrame."""
    import pandas as pd
    import pyarrow as pa
    import shapely

    from rasteret_dask.collection.schema import assets_type, normalise_records
    from rasteret_dask.collection.tables import from_arrow_table
    from rasteret_dask.tiff.arrow import METADATA_STRUCT

    month, start, count, header = task
    rng = np.random.default_rng([COLLECTION_VERSION, month])
    lon = rng.uniform(-180.0, 179.0, count)
    lat = rng.uniform(-80.0, 79.0, count)
    t0, t1 = _month_start(month), _month_start(month + 1)
    seconds = rng.uniform(0, (t1 - t0).total_seconds(), count)
    stamps = (np.datetime64(t0, "us") + (seconds * 1e6).astype("timedelta64[us]")).astype("datetime64[us]")
    ids = [f"REC{start + i:08d}" for i in range(count)]
    columns = {
        "id": pa.array(ids, pa.string()),
        "datetime": pa.array(stamps, pa.timestamp("us")),
        "geometry": pa.array(shapely.to_wkb(shapely.box(lon, lat, lon + 1, lat + 1)), pa.binary()),
        "assets": pa.array(
            [
                {b: {"href": f"https://example.com/{rid}/{b}.tif", "band_index": None} for b in BANDS}
                for rid in ids
            ],
            assets_type(list(BANDS)),
        ),
        "proj:epsg": pa.array(32601 + ((lon + 180) // 6).astype(np.int32), pa.int32()),
        "eo:cloud_cover": pa.array(rng.uniform(0, 100, count)),
    }
    for band in BANDS:
        columns[f"{band}_metadata"] = _metadata_column(header, count, rng, METADATA_STRUCT)
    frame = from_arrow_table(pa.table(columns))
    frame["datetime"] = pd.to_datetime(frame["datetime"], utc=True)
    return normalise_records(frame)


def _metadata_column(header: dict, count: int, rng, struct_type):
    """``count`` copies of ``header`` with each record's full-resolution tile offsets shifted at random."""
    import pyarrow as pa

    one = pa.array([header], struct_type)
    copies = one.take(pa.array(np.zeros(count, dtype=np.int64)))
    n_tiles = len(header["tile_offsets"])
    shift = rng.integers(0, 1 << 20, count).repeat(n_tiles)
    offsets = np.tile(np.asarray(header["tile_offsets"], dtype=np.int64), count) + shift
    counts = np.tile(np.asarray(header["tile_byte_counts"], dtype=np.int64), count)
    counts = counts + rng.integers(-1000, 1000, counts.size)
    list_offsets = pa.array(np.arange(count + 1, dtype=np.int32) * n_tiles)
    fields = []
    for i, field in enumerate(struct_type):
        if field.name == "tile_offsets":
            fields.append(pa.ListArray.from_arrays(list_offsets, pa.array(offsets)))
        elif field.name == "tile_byte_counts":
            fields.append(pa.ListArray.from_arrays(list_offsets, pa.array(counts)))
        else:
            fields.append(copies.field(i))
    return pa.StructArray.from_arrays(fields, fields=list(struct_type))


def row_group_stats(path: Path, bbox, date_range) -> dict:
    """Files, row groups and compressed bytes in all, and those whose statistics meet the filter."""
    import pyarrow.parquet as pq

    west, south, east, north = bbox
    lo = np.datetime64(date_range[0], "us")
    hi = np.datetime64(date_range[1], "us") + np.timedelta64(1, "D")
    out = dict.fromkeys(("files", "files_kept", "row_groups", "row_groups_kept", "bytes", "bytes_kept"), 0)
    for file in sorted(Path(path).rglob("*.parquet")):
        meta = pq.ParquetFile(file).metadata
        names = [meta.schema.column(j).path for j in range(meta.num_columns)]
        out["files"] += 1
        kept_here = 0
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            size = sum(group.column(j).total_compressed_size for j in range(meta.num_columns))
            stats = {names[j]: group.column(j).statistics for j in range(meta.num_columns)}
            out["row_groups"] += 1
            out["bytes"] += size
            box = [stats[f"bbox.{k}"] for k in ("xmin", "ymin", "xmax", "ymax")]
            times = stats["datetime"]
            meets = (
                box[0].min <= east
                and box[2].max >= west
                and box[1].min <= north
                and box[3].max >= south
                and np.datetime64(times.min, "us") < hi
                and np.datetime64(times.max, "us") >= lo
            )
            if meets:
                out["row_groups_kept"] += 1
                out["bytes_kept"] += size
                kept_here += 1
        out["files_kept"] += kept_here > 0
    out["disk_bytes"] = sum(f.stat().st_size for f in Path(path).rglob("*.parquet"))
    return out


def independent_count(path: Path, bbox, date_range) -> int:
    """Records whose footprint box meets ``bbox`` in ``date_range``, counted with pyarrow alone.

    The synthetic footprints are boxes, so meeting the bbox is their bounds overlapping it (edges
    included, as shapely's ``intersects``).
    """
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    west, south, east, north = bbox
    lo = np.datetime64(date_range[0], "us")
    hi = np.datetime64(date_range[1], "us") + np.timedelta64(1, "D")
    table = pads.dataset(str(path), format="parquet", partitioning="hive").to_table(
        columns=["bbox", "datetime"]
    )
    box = table["bbox"].combine_chunks()
    keep = pc.and_(
        pc.and_(pc.less_equal(box.field("xmin"), east), pc.greater_equal(box.field("xmax"), west)),
        pc.and_(pc.less_equal(box.field("ymin"), north), pc.greater_equal(box.field("ymax"), south)),
    )
    times = table["datetime"].combine_chunks()
    keep = pc.and_(keep, pc.and_(pc.greater_equal(times, lo), pc.less(times, hi)))
    return int(pc.sum(keep.cast("int64")).as_py() or 0)


def _run_load(opts: Options, ds) -> list[Row]:
    n_records, group_sizes = load_sizes(opts)
    root = Path(opts.data_root or cache_root())
    header_file = ds.path(ds.files[0])
    rows = []
    for group_size in group_sizes:
        path = ensure_collection(root, n_records, group_size, header_file, opts.log)
        expected = row_group_stats(path, LOAD_BBOX, LOAD_DATES)
        expected["records"] = independent_count(path, LOAD_BBOX, LOAD_DATES)
        params = {"path": str(path), "bbox": list(LOAD_BBOX), "date_range": list(LOAD_DATES)}
        opts.log(f"build: load {n_records:,} records, row groups of {group_size:,}")
        results = measure_interleaved(
            list(LOAD_TOOLS), opts.repeats, lambda tool, p=params: run_fresh("bench_build", tool, p), opts.log
        )
        rows += _load_rows(n_records, group_size, expected, results)
    return rows


def _load_rows(n_records: int, group_size: int, expected: dict, results: dict[str, list[dict]]) -> list[Row]:
    found = {r["records"] for rs in results.values() for r in rs if "records" in r}
    kept = next(iter(found)) if found == {expected["records"]} else None
    case = (
        f"load {n_records:,} records ({expected['files']} files, {expected['row_groups']} row groups of "
        f"≤{group_size:,}, {fmt_bytes(expected['disk_bytes'])}); bbox ¼ globe × 1 month"
        + ("" if kept is None else f" → {kept:,} records ({kept / n_records:.2%})")
    )
    seconds = {tool: median_of(rs) for tool, rs in results.items()}
    rows = []
    for tool, label in LOAD_TOOLS.items():
        rs = results[tool]
        t = seconds[tool]
        peak = median_of(rs, "peak_rss")
        read = median_of(rs, "read_bytes")
        rate = "" if t is None else f"{n_records / t:,.0f} records/s; peak RSS +{fmt_bytes(peak)}"
        counts = ""
        ok = [r for r in rs if "error" not in r]
        if ok and ok[0].get("load_stats"):
            s = ok[0]["load_stats"]
            counts = (
                f"files {s['files_kept']}/{s['files']}, row groups {s['row_groups_kept']}/{s['row_groups']}"
            )
        share = ratio(read, expected["disk_bytes"])
        row = Row(
            "build",
            case,
            label,
            time=spread(rs),
            rate=rate,
            requests=counts,
            bytes="" if read is None else f"read {fmt_bytes(read)} = {share:.1%} of the files",
            failed=failed(rs),
        )
        if tool == "pruned":
            row.ratio = f"{fmt_ratio(ratio(seconds['scan'], t))} faster than the scan"
            row.target = (
                f"read a small fraction of the bytes (by statistics: {expected['row_groups_kept']} row "
                f"groups, {fmt_bytes(expected['bytes_kept'])} = "
                f"{expected['bytes_kept'] / expected['disk_bytes']:.1%} of the files)"
            )
        rows.append(row)
    if found != {expected["records"]}:
        problem = f"record counts {sorted(found)}, pyarrow counts {expected['records']}"
        rows.append(Row("build", case, "CHECK", time=problem, failed=True))
    return rows


# ------------------------------------------------------------------------------------- child process


def measure(tool: str, params: dict) -> dict:
    """One measurement (see the module doc) in this fresh process."""
    if tool in ("rasterio", "floor"):
        from . import bench_headers

        return bench_headers.measure(tool, params)
    if tool in ("ours_threads", "ours_cluster"):
        return _measure_build(tool, params)
    if tool in LOAD_TOOLS:
        return _measure_load(tool, params)
    raise ValueError(f"unknown tool {tool!r}")


def _records_frame(records: list[dict]):
    import pandas as pd
    import shapely

    bounds = np.asarray([r["bounds"] for r in records], dtype=np.float64)
    return pd.DataFrame(
        {
            "id": [r["id"] for r in records],
            "datetime": [r["datetime"] for r in records],
            "geometry": list(shapely.to_wkb(shapely.box(*bounds.T))),
            "assets": [{b: {"href": u, "band_index": None} for b, u in r["assets"].items()} for r in records],
            "proj:epsg": [r["epsg"] for r in records],
        }
    )


def _warm_worker() -> None:
    """Import what a build task needs (outside the timer, as in the other tools)."""
    import aiohttp  # noqa: F401

    import rasteret_dask.collection  # noqa: F401


def _measure_build(tool: str, params: dict) -> dict:
    import contextlib

    import rasteret_dask as rd

    build = rd.build_from_table
    _warm_worker()
    frame = _records_frame(params["records"])
    with contextlib.ExitStack() as stack:
        kwargs = {}
        if tool == "ours_cluster":
            from distributed import Client, LocalCluster

            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=params["workers"],
                    threads_per_worker=1,
                    processes=True,
                    memory_limit="2GB",
                    dashboard_address=None,
                )
            )
            client = stack.enter_context(Client(cluster))
            client.run(_warm_worker)
            kwargs["npartitions"] = params["partitions"]
        start, cpu = time.perf_counter(), time.process_time()
        collection = build(frame, progress=False, **kwargs)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        records = collection.frame.compute()
        report = collection.build_report
    check = _collection_check(records, list(params["records"][0]["assets"]))
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "items": len(params["urls"]),
        "check": check,
        "failed": report.failed_total,
    }


def _collection_check(records, bands: list[str]) -> list[int]:
    """[sum of widths, sum of heights, sum of levels] over every asset, as bench_headers' ``_check``."""
    import pyarrow as pa

    width = height = levels = 0
    for band in bands:
        meta = pa.array(records[f"{band}_metadata"].array)
        width += int(np.sum(meta.field("image_width").to_numpy(zero_copy_only=False)))
        height += int(np.sum(meta.field("image_height").to_numpy(zero_copy_only=False)))
        levels += len(meta) + sum(len(o or ()) for o in meta.field("overviews").to_pylist())
    return [width, height, levels]


def _proc_status(key: str) -> int:
    """A ``/proc/self/status`` size in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _read_chars() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def _measure_load(tool: str, params: dict) -> dict:
    import contextlib
    import dataclasses

    import dask

    import rasteret_dask as rd

    load = rd.load
    bbox, dates = tuple(params["bbox"]), tuple(params["date_range"])
    with contextlib.suppress(OSError):  # reset the peak RSS (Linux >= 4.0) so it measures the work only
        Path("/proc/self/clear_refs").write_text("5")
    rss0, read0 = _proc_status("VmRSS"), _read_chars()
    with dask.config.set(scheduler="threads"):
        start, cpu = time.perf_counter(), time.process_time()
        if tool == "scan":
            collection = load(params["path"])
            count = len(collection.subset(bbox=bbox, date_range=dates))
        else:
            collection = load(params["path"], bbox=bbox, date_range=dates)
            count = len(collection)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    read = _read_chars() - read0
    peak = _proc_status("VmHWM") - rss0
    stats = getattr(collection, "load_stats", None)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "records": count,
        "peak_rss": peak,
        "read_bytes": read,
        "load_stats": None if stats is None else dataclasses.asdict(stats),
    }
