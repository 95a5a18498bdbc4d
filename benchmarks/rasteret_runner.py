"""Time Rasteret 0.4.1 in its own venv: ``<rasteret venv python> benchmarks/rasteret_runner.py``.

Never imported by the benchmarks (Rasteret needs Python >= 3.12 and its own packages): the benchmark
child process runs this file with the Rasteret venv's python (``tests/compat/rasteret_env.py`` finds
it) and reads one JSON line from its standard output. Anything Rasteret prints goes to stderr.

Standard input is one JSON object; ``"command": "sample_points"`` with ``collection`` (a collection
folder exported by rasteret_dask, which Rasteret loads), ``points`` (a Parquet file with ``pid``,
``lon``, ``lat``), ``bands``, ``scene_ids`` (record ids in the order of the checksum's scene axis) and
``allow_http``. Imports, ``rasteret.load`` and reading the points happen before the timer; the timer
covers ``collection.sample_points(points, bands, x_column="lon", y_column="lat", geometry_crs=4326,
bbox=the points' bbox)`` (without ``bbox=`` Rasteret 0.4.1 crashes from ~10,000 points). The answer
is ``{"seconds", "cpu_seconds", "rows", "check"}``, the check being :func:`checksum` of the samples.

``"command": "read_window"`` with ``collection``, ``bands``, ``epsg`` (the output CRS), ``res``,
``group_by`` (None or ``"datetime"``), ``allow_http`` and ``batches``: a list of batches, each a list of
``[record ids, [xmin, ymin, xmax, ymax]]`` windows. Imports and ``rasteret.load`` happen before the timer;
each batch is timed on its own: ``collection.read_window(record_ids=..., bounds=..., res=(res, res),
bands=..., target_crs=epsg, group_by=...)`` for each window in turn, then ``numpy.stack``. The answer is
``{"seconds": [per batch], "cpu_seconds", "check", "shape"}``, the check being :func:`window_checksum`
of the batches.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import zlib


def checksum(pid, scene, band, value, n_points: int, n_scenes: int, n_bands: int) -> list[int]:
    """[crc32, count of non-zero, sum] of the (point, scene, band) uint16 cube, missing values as 0.

    The benchmarks compute the same function on every tool's samples (``bench_points.checksum``).
    """
    import numpy as np

    cube = np.zeros((n_points, n_scenes, n_bands), dtype=np.uint16)
    value = np.nan_to_num(np.asarray(value, dtype=np.float64), nan=0.0)
    cube[np.asarray(pid), np.asarray(scene), np.asarray(band)] = value.astype(np.uint16)
    return [zlib.crc32(cube.tobytes()), int(np.count_nonzero(cube)), int(cube.sum(dtype=np.int64))]


def sample_points(job: dict) -> dict:
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import rasteret

    if job.get("allow_http"):
        from rasteret.fetch import cog

        cog._OBSTORE_CLIENT_OPTIONS["allow_http"] = "true"
    collection = rasteret.load(job["collection"])
    points = pq.read_table(job["points"], columns=["pid", "lon", "lat"])
    lon, lat = points["lon"].to_numpy(), points["lat"].to_numpy()
    bbox = (float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max()))
    bands = list(job["bands"])
    start, cpu = time.perf_counter(), time.process_time()
    table = collection.sample_points(
        points, bands, x_column="lon", y_column="lat", geometry_crs=4326, bbox=bbox
    )
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    # point_index is the row of the input table, whose pid is its row number too.
    pid = points["pid"].to_numpy()[table["point_index"].to_numpy()]
    scene_of = {rid: i for i, rid in enumerate(job["scene_ids"])}
    scene = np.asarray([scene_of[r] for r in table["record_id"].to_pylist()], dtype=np.int64)
    band_of = {b: i for i, b in enumerate(bands)}
    band = np.asarray([band_of[b] for b in pc.cast(table["band"], "string").to_pylist()], dtype=np.int64)
    value = table["value"].to_numpy(zero_copy_only=False)
    check = checksum(pid, scene, band, value, len(points), len(scene_of), len(bands))
    return {"seconds": seconds, "cpu_seconds": cpu, "rows": table.num_rows, "check": check}


def window_checksum(batches) -> list:
    """[crc32, count of non-zero] of a sequence of arrays as uint16, in order (``bench_ml`` computes the
    same on every tool's batches; float images holding integers convert exactly)."""
    import numpy as np

    crc, nonzero = 0, 0
    for batch in batches:
        values = np.ascontiguousarray(np.asarray(batch).astype(np.uint16, copy=False))
        crc = zlib.crc32(values, crc)
        nonzero += int(np.count_nonzero(values))
    return [crc, nonzero]


def read_window(job: dict) -> dict:
    import numpy as np
    import rasteret

    if job.get("allow_http"):
        from rasteret.fetch import cog

        cog._OBSTORE_CLIENT_OPTIONS["allow_http"] = "true"
    collection = rasteret.load(job["collection"])
    bands = list(job["bands"])
    res = (float(job["res"]), float(job["res"]))
    batches, seconds = [], []
    cpu = time.process_time()
    for batch in job["batches"]:
        start = time.perf_counter()
        windows = [
            collection.read_window(
                record_ids=ids,
                bounds=tuple(bounds),
                res=res,
                bands=bands,
                target_crs=int(job["epsg"]),
                group_by=job["group_by"],
            )
            for ids, bounds in batch
        ]
        batches.append(np.stack(windows))
        seconds.append(time.perf_counter() - start)
    cpu = time.process_time() - cpu
    shape = [len(batches), *batches[0].shape]
    return {"seconds": seconds, "cpu_seconds": cpu, "check": window_checksum(batches), "shape": shape}


def version(job: dict) -> dict:
    import rasteret

    return {"version": rasteret.__version__, "python": sys.version.split()[0]}


def rasteret_python_or_reason(log) -> tuple[str | None, str]:
    """The Rasteret venv's python, or None and the first line of why not (``log`` hears the rest)."""
    from tests.compat.rasteret_env import RasteretUnavailable, rasteret_python

    try:
        return str(rasteret_python()), ""
    except RasteretUnavailable as exc:
        log(f"Rasteret unavailable: {exc}")
        return None, str(exc).splitlines()[0]


def run_rasteret(python: str, job: dict, timeout: float = 3600) -> dict:
    """Run ``job`` through this file with the Rasteret venv's ``python``; its JSON answer."""
    import subprocess
    from pathlib import Path

    from tests.compat.rasteret_env import _clean_env

    runner = Path(__file__).resolve()
    done = subprocess.run(
        [python, str(runner)],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd=str(runner.parent),
        timeout=timeout,
    )
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"the Rasteret runner exited with {done.returncode}:\n{tail}")
    return json.loads(lines[-1])


COMMANDS = {"sample_points": sample_points, "read_window": read_window, "version": version}


def main() -> int:
    job = json.loads(sys.stdin.read())
    stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        result = COMMANDS[job["command"]](job)
    stdout.write(json.dumps(result) + "\n")
    stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
