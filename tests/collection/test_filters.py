"""Record filters run on many Dask threads at once: they must neither crash nor disagree with a serial run."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Many threads filter partitions against one AOI union. A prepared GEOS geometry shared by those threads
# crashed the process (SIGSEGV) in most runs; the script runs in a child so that a crash fails the test.
SCRIPT = textwrap.dedent(
    """
    import numpy as np, shapely, geopandas as gpd
    from concurrent.futures import ThreadPoolExecutor
    from rasteret_dask.collection.filters import record_predicate

    rng = np.random.default_rng(0)
    aois = [shapely.box(x, y, x + 0.02, y + 0.02).segmentize(0.001) for x, y in rng.uniform(0, 1, (32, 2))]
    keep = record_predicate(geometries=aois)
    parts = [
        gpd.GeoDataFrame(
            geometry=[shapely.box(x, y, x + 0.2, y + 0.2) for x, y in rng.uniform(0, 1, (50, 2))],
            crs="OGC:CRS84",
        )
        for _ in range(256)
    ]
    with ThreadPoolExecutor(16) as pool:
        threaded = [len(p) for p in pool.map(keep, parts)]
    union = shapely.union_all(aois)
    serial = [int(shapely.intersects(union, np.asarray(p.geometry.array)).sum()) for p in parts]
    assert threaded == serial, (threaded, serial)
    print("ok", sum(threaded))
    """
)


def test_footprint_filter_on_many_threads_at_once():
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.startswith("ok ")
