"""Decode throughput per core: MB/s of decoded pixels from the same tiles, one thread, no I/O timed.

Cases:

- ``uint16``, deflate + horizontal predictor 2 (the Sentinel-2-like data set of the header benchmark);
- ``float32``, zstd (GDAL's default level 9) + floating-point predictor 3: what GDAL's COG driver picks
  for floats with ``PREDICTOR=YES``, and the usual choice for float COGs (it compresses noisy floats
  much better than predictor 1).

Tools, each in its own fresh process, interleaved; tile bytes are read into memory before the timer:

- ``rasteret_dask``: ``rasteret_dask.tiff.decode.decode_tile(bytes, codec)`` per tile;
- ``floor``: imagecodecs called directly: ``deflate_decode`` (libdeflate) into a buffer of the known
  size + ``delta_decode`` in place, or ``zstd_decode`` + ``floatpred_decode``;
- ``rasterio``: ``DatasetReader.read(1, window=...)`` of the same tile-aligned windows from the local
  files (datasets opened before the timer; GDAL reads the bytes from the page cache, so its figure
  includes a little file I/O).

MB = 10^6 bytes of decoded pixels. Rates divide by the decoding thread's CPU time (``time.thread_time``,
so other load on the machine does not count; GDAL decodes in the calling thread), the time column is
wall-clock. Every tool's pixels are checksummed and must agree.
"""

from __future__ import annotations

import time
import zlib

from .data import DatasetSpec, ensure_dataset
from .harness import Options, Row, failed, fmt_ratio, measure_interleaved, median_of, ratio, run_fresh, spread

NAME = "decode"
ORDER = 20
TITLE = "Tile decode throughput (one thread)"

TOOLS = {
    "ours": "rasteret_dask decode_tile",
    "floor": "floor: imagecodecs direct",
    "rasterio": "rasterio read",
}


def cases(opts: Options) -> list[tuple[str, DatasetSpec, int]]:
    """(label, data set, number of tiles) per case."""
    from .bench_headers import dataset_spec

    uint16 = dataset_spec(opts)
    float32 = DatasetSpec(
        n_dates=opts.pick(4, 8, 1),
        zones=(32632,),
        bands=("B04", "B08"),
        size=uint16.size,
        tile=uint16.tile,
        dtype="float32",
        compression="zstd",
        predictor=3,
        level=9,
    )
    n_tiles = opts.pick(32, 16, 4)
    return [("uint16 deflate p2", uint16, n_tiles), ("float32 zstd p3", float32, n_tiles)]


def run(opts: Options) -> list[Row]:
    rows: list[Row] = []
    for label, spec, n_tiles in cases(opts):
        opts.log(f"decode: data set {spec.key} ...")
        ds = ensure_dataset(spec, opts.data_root)
        tiles = _pick_tiles([str(ds.path(r)) for r in ds.files], n_tiles)
        stored = sum(t["length"] for t in tiles)
        decoded = len(tiles) * spec.tile * spec.tile * (2 if spec.dtype == "uint16" else 4)
        codec = _local_header(tiles[0]["path"]).levels[0].codec
        floor_codec = {k: getattr(codec, k) for k in ("compression", "predictor", "dtype", "byteorder")}
        params = {"tiles": tiles, "tile": spec.tile, "codec": floor_codec}
        opts.log(f"decode: {label}, {len(tiles)} tiles")
        results = measure_interleaved(
            list(TOOLS), opts.repeats, lambda tool, p=params: run_fresh("bench_decode", tool, p), opts.log
        )
        case = f"{label}, {len(tiles)} tiles {spec.tile}², {decoded / stored:.2f}:1"
        rows += _rows(case, results, decoded)
    return rows


def _rows(case: str, results: dict[str, list[dict]], decoded: int) -> list[Row]:
    cpu = {tool: median_of(rs, "cpu_seconds") for tool, rs in results.items()}
    rate = {tool: None if s is None else decoded / s / 1e6 for tool, s in cpu.items()}
    checks = {r["check"] for rs in results.values() for r in rs if "check" in r}
    rows = []
    for tool, label in TOOLS.items():
        row = Row(
            "decode",
            case,
            label,
            time=spread(results[tool]),
            rate="" if rate[tool] is None else f"{rate[tool]:,.0f} MB/s per core",
            failed=failed(results[tool]),
        )
        if tool == "ours":
            row.ratio = (
                f"{fmt_ratio(ratio(rate['ours'], rate['floor']))} floor's rate; "
                f"{fmt_ratio(ratio(rate['ours'], rate['rasterio']))} rasterio's"
            )
            row.target = "≥0.90× floor's rate"
        rows.append(row)
    if len(checks) > 1:
        rows.append(Row("decode", case, "CHECK", time="tools decoded different pixels", failed=True))
    return rows


def _pick_tiles(paths: list[str], n: int) -> list[dict]:
    """The first ``n`` full-resolution tiles (file by file): path, byte offset and length, tile row/col."""
    tiles = []
    for path in paths:
        level = _local_header(path).levels[0]
        for row in range(level.tiles_down):
            for col in range(level.tiles_across):
                i = level.tile_index(row, col)
                offset, length = int(level.tile_offsets[i]), int(level.tile_byte_counts[i])
                tiles.append({"path": path, "offset": offset, "length": length, "row": row, "col": col})
                if len(tiles) == n:
                    return tiles
    return tiles


def _local_header(path: str):
    """Parse a local file's header with the pure parser (reading what it asks for)."""
    import os

    from rasteret_dask.tiff import FileBytes, NeedBytes, parse_header

    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        known = FileBytes.from_prefix(f.read(64 * 1024), size)
        while isinstance(result := parse_header(known), NeedBytes):
            for a, b in result.ranges:
                known.add(a, os.pread(f.fileno(), b - a, a))
    return result


# ------------------------------------------------------------------------------------- child process


def measure(tool: str, params: dict) -> dict:
    """Decode every tile of ``params["tiles"]`` with ``tool`` on one thread; seconds and a checksum."""
    import os

    import numpy as np

    tiles, size = params["tiles"], params["tile"]
    if tool in ("ours", "floor"):
        blobs = []
        for t in tiles:
            with open(t["path"], "rb") as f:
                blobs.append(os.pread(f.fileno(), t["length"], t["offset"]))
    if tool == "ours":
        from rasteret_dask.tiff.decode import decode_tile

        codecs = {path: _local_header(path).levels[0].codec for path in {t["path"] for t in tiles}}
        codec_of = [codecs[t["path"]] for t in tiles]
        start, cpu = time.perf_counter(), time.thread_time()
        out = [decode_tile(blob, codec) for blob, codec in zip(blobs, codec_of, strict=True)]
        seconds, cpu = time.perf_counter() - start, time.thread_time() - cpu
    elif tool == "floor":
        import imagecodecs

        codec = params["codec"]  # from the parent: this process imports no rasteret_dask code
        dtype = np.dtype(codec["dtype"])
        if codec["byteorder"] != "<" or codec["predictor"] not in (2, 3):
            raise ValueError("the floor handles little-endian files with predictor 2 or 3 only")
        start, cpu = time.perf_counter(), time.thread_time()
        out = []
        if codec["compression"] in (8, 32946):  # deflate, predictor 2
            for blob in blobs:
                arr = np.empty((size, size), dtype)
                imagecodecs.deflate_decode(blob, out=arr.reshape(-1).view(np.uint8))
                out.append(imagecodecs.delta_decode(arr, axis=-1, out=arr))
        else:  # zstd, predictor 3
            for blob in blobs:
                raw = imagecodecs.zstd_decode(blob, out=np.empty(size * size * dtype.itemsize, np.uint8))
                out.append(imagecodecs.floatpred_decode(raw.view(dtype).reshape(size, size, 1), axis=-2))
        seconds, cpu = time.perf_counter() - start, time.thread_time() - cpu
    elif tool == "rasterio":
        import rasterio
        from rasterio.windows import Window

        datasets = {path: rasterio.open(path) for path in {t["path"] for t in tiles}}
        windows = [Window(t["col"] * size, t["row"] * size, size, size) for t in tiles]
        start, cpu = time.perf_counter(), time.thread_time()
        out = [datasets[t["path"]].read(1, window=w) for t, w in zip(tiles, windows, strict=True)]
        seconds, cpu = time.perf_counter() - start, time.thread_time() - cpu
        for ds in datasets.values():
            ds.close()
    else:
        raise ValueError(f"unknown tool {tool!r}")
    check = 0
    for arr in out:
        check = zlib.crc32(np.ascontiguousarray(arr).tobytes(), check)
    return {"seconds": seconds, "cpu_seconds": cpu, "items": len(tiles), "check": check}
