"""Drive Rasteret (run by the Rasteret venv's python, never imported by the test process).

Reads one JSON object from stdin: ``{"jobs": [job, ...]}``; runs the jobs in order and prints one JSON
line to stdout, ``{"results": [result, ...]}``, each result either the job's output or
``{"error": "Type: message"}``. Anything Rasteret prints goes to stderr.

Jobs:

- ``{"command": "build", "table": records.parquet, "workspace": dir, "export": dir or null,
  "band_codes": [...] or null}``: ``rasteret.build_from_table(table, enrich_cog=True,
  workspace_dir=workspace)`` (which writes the collection there) and, when ``export`` is given,
  ``collection.export(export)``. Returns the record count, bands and written Parquet files.
- ``{"command": "get_numpy", "collection": dir, "requests": [{"id": record id, "wkb": hex WKB in
  CRS84, "bands": [...], "out": file.npy}, ...]}``: ``rasteret.load(dir)``, then for each request
  ``collection.where(id == request id).get_numpy(geometry, bands)`` saved to ``out``. Returns per
  request the shape and dtype, or an error.
- ``{"command": "sample_points", "collection": dir, "points": [[lon, lat], ...], "bands": [...],
  "out": file.parquet}``: ``collection.sample_points(points, bands, bbox=points' bbox)`` written to
  ``out``. Returns the row count.
- ``{"command": "version"}``: Rasteret's version.

``"allow_http": true`` on a job lets Rasteret's obstore HTTP client use plain ``http://`` URLs.
"""

from __future__ import annotations

import contextlib
import json
import sys
import traceback
from pathlib import Path


def _allow_http() -> None:
    from rasteret.fetch import cog

    cog._OBSTORE_CLIENT_OPTIONS["allow_http"] = "true"


def _parquet_files(root: str) -> list[str]:
    return sorted(str(p) for p in Path(root).rglob("*.parquet"))


def build(job: dict) -> dict:
    import pyarrow.parquet as pq
    import rasteret

    table = pq.read_table(job["table"])
    collection = rasteret.build_from_table(
        table,
        enrich_cog=True,
        workspace_dir=job["workspace"],
        band_codes=job.get("band_codes"),
        force=True,
    )
    result = {
        "records": len(collection),
        "bands": list(collection.bands),
        "workspace": job["workspace"],
        "workspace_files": _parquet_files(job["workspace"]),
    }
    if job.get("export"):
        collection.export(job["export"])
        result["export"] = job["export"]
        result["export_files"] = _parquet_files(job["export"])
    return result


def get_numpy(job: dict) -> dict:
    import numpy as np
    import pyarrow.compute as pc
    import rasteret
    import shapely

    collection = rasteret.load(job["collection"])
    out = []
    for request in job["requests"]:
        try:
            geometry = shapely.from_wkb(bytes.fromhex(request["wkb"]))
            subset = collection.where(pc.field("id") == request["id"])
            array = subset.get_numpy(geometry, list(request["bands"]))
            np.save(request["out"], array)
            out.append({"out": request["out"], "shape": list(array.shape), "dtype": array.dtype.name})
        except Exception as exc:
            out.append({"error": f"{type(exc).__name__}: {exc}"})
    return {"requests": out}


def sample_points(job: dict) -> dict:
    import pyarrow.parquet as pq
    import rasteret
    import shapely

    collection = rasteret.load(job["collection"])
    points = [shapely.Point(x, y) for x, y in job["points"]]
    xs, ys = [p[0] for p in job["points"]], [p[1] for p in job["points"]]
    table = collection.sample_points(points, list(job["bands"]), bbox=(min(xs), min(ys), max(xs), max(ys)))
    pq.write_table(table, job["out"])
    return {"out": job["out"], "rows": table.num_rows, "columns": table.column_names}


def version(job: dict) -> dict:
    import rasteret

    return {"version": rasteret.__version__, "python": sys.version.split()[0]}


COMMANDS = {"build": build, "get_numpy": get_numpy, "sample_points": sample_points, "version": version}


def main() -> int:
    request = json.loads(sys.stdin.read())
    stdout = sys.stdout
    results = []
    with contextlib.redirect_stdout(sys.stderr):
        for job in request["jobs"]:
            try:
                if job.get("allow_http"):
                    _allow_http()
                results.append(COMMANDS[job["command"]](job))
            except Exception as exc:
                traceback.print_exc(file=sys.stderr)
                results.append({"error": f"{type(exc).__name__}: {exc}"})
    stdout.write(json.dumps({"results": results}) + "\n")
    stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
