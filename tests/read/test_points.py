"""Point sampling (Collection.sample_points) against rasterio's ``sample``.

Oracle (tests/read/point_data.py): the point moved to each raster's CRS by pyproj (DESIGN.md §4; GDAL's
transformer can differ in the last bits, which decides points carried to within 1e-10 of a pixel edge);
inside when ``rasterio.transform.rowcol`` is in range (so a point on the right/bottom outer edge is
outside); its value ``DatasetReader.sample(masked=True)``, missing where GDAL's mask band masks it
(nodata, internal mask) or where GDAL reports the block unwritten (sparse). ``max_distance_pixels`` and
``match="latest"`` are checked against brute-force searches over the arrays rasterio reads. Points are
drawn by hypothesis (seeded; more examples under ``slow``), including points exactly on pixel edges and
corners and on the raster's outer edges, in EPSG:4326 and in both UTM zones of the records.
"""

from __future__ import annotations

import itertools
import resource
import time
import warnings
from pathlib import Path

import dask
import dask.dataframe as dd
import dask_geopandas
import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
from affine import Affine
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from rasterio.transform import rowcol

from rasteret_dask.errors import PlanError, SchemaError
from rasteret_dask.io.config import IOConfig
from rasteret_dask.read import points as points_module
from rasteret_dask.read.sample_spec import SampleSpec
from tests.read import point_data as pdt
from tests.read.point_data import BANDS, DTYPES, NULLABLE, UTM32, WGS84

SEED = 20240517
EXAMPLES = pytest.mark.parametrize("examples", [12, pytest.param(150, marks=pytest.mark.slow)])
MORE_EXAMPLES = pytest.mark.parametrize("examples", [30, pytest.param(400, marks=pytest.mark.slow)])
FORMS = ("xy", "gdf", "dask_gdf", "dask_xy", "arrow_geo", "arrow_xy", "geoarrow", "parquet_geo", "parquet_xy")


def run_examples(examples: int, strategy, check) -> None:
    """Run ``check(*drawn)`` on ``examples`` draws of ``strategy``, seeded, without a deadline."""

    @seed(SEED)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(strategy)
    def property_holds(drawn):
        check(*drawn)

    property_holds()


def computed(frame) -> pd.DataFrame:
    """``frame`` computed, with no warning allowed (every record here has every band's header)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return frame.compute()


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> list[pdt.Scene]:
    return pdt.make_scenes(tmp_path_factory.mktemp("point-scenes"))


@pytest.fixture(scope="module")
def collection(scenes):
    return pdt.build(scenes)


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("point-inputs")


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(
        processes=True, n_workers=2, threads_per_worker=1, memory_limit="2GB", dashboard_address=":0"
    ) as cluster:
        yield cluster


_counter = itertools.count()


def points_input(form: str, xs, ys, crs: str, directory: Path) -> tuple[object, dict]:
    """Points ``(xs, ys)`` in ``crs`` with a ``pid`` column, as ``form``; returns (points, kwargs)."""
    frame = pd.DataFrame({"pid": np.arange(len(xs), dtype=np.int64) * 7 + 3, "x": xs, "y": ys})
    gdf = gpd.GeoDataFrame(frame[["pid"]], geometry=gpd.points_from_xy(frame["x"], frame["y"]), crs=crs)
    xy = {"x_column": "x", "y_column": "y", "geometry_crs": crs}
    if form == "xy":
        return frame, xy
    if form == "gdf":
        return gdf, {}
    if form == "dask_gdf":
        return dask_geopandas.from_geopandas(gdf, npartitions=min(3, len(gdf))), {}
    if form == "dask_xy":
        return dd.from_pandas(frame, npartitions=min(2, len(frame))), xy
    if form == "arrow_xy":
        return pa.Table.from_pandas(frame, preserve_index=False), xy
    path = directory / f"points-{next(_counter)}.parquet"
    if form == "arrow_geo":  # a GeoParquet file read with pyarrow: "geo" schema metadata
        gdf.to_parquet(path)
        return pq.read_table(path), {}
    if form == "geoarrow":  # GeoArrow: a geoarrow.wkb extension column carrying the CRS
        return pa.table(gdf.to_arrow()), {}
    if form == "parquet_geo":
        gdf.to_parquet(path)
        return str(path), {}
    if form == "parquet_xy":
        frame.to_parquet(path)
        return str(path), xy
    raise AssertionError(form)


def pids_of(xs) -> np.ndarray:
    return np.arange(len(xs), dtype=np.int64) * 7 + 3


# ------------------------------------------------------------------------------ values against rasterio


@EXAMPLES
def test_wide_values_match_rasterio_sample(examples, scenes, collection, parquet_dir):
    """Every input form, every CRS: rows exactly for inside (point, record), values = rasterio's."""

    def check(points, form):
        xs, ys, crs = points
        data, kwargs = points_input(form, xs, ys, crs, parquet_dir)
        lazy = collection.sample_points(data, bands=list(BANDS), **kwargs)
        out = computed(lazy)
        for band in BANDS:
            assert str(out[band].dtype) == NULLABLE[DTYPES[band]], (band, out[band].dtype)
        assert dict(out.dtypes) == dict(lazy.dtypes), "computed dtypes differ from the lazy frame's"
        assert str(out["datetime"].dtype) == "datetime64[us, UTC]"
        expected = pdt.oracle_samples(scenes, BANDS, xs, ys, crs)
        pdt.assert_wide_matches(out, expected, BANDS, pids_of(xs))
        stamps = {s.id: s.datetime for s in scenes}
        assert all(stamps[r] == t for r, t in zip(out["record_id"], out["datetime"], strict=True))

    run_examples(examples, st.tuples(pdt.point_sets(scenes), st.sampled_from(FORMS)), check)


@EXAMPLES
def test_long_values_match_rasterio_sample(examples, scenes, collection, parquet_dir):
    """layout="long": one row per inside (point, record, band), float64 value, NA where invalid."""

    def check(points, form, bands):
        xs, ys, crs = points
        data, kwargs = points_input(form, xs, ys, crs, parquet_dir)
        out = computed(collection.sample_points(data, bands=list(bands), layout="long", **kwargs))
        assert str(out["value"].dtype) == "Float64"
        assert str(out["band"].dtype) == "string"
        pdt.assert_long_matches(out, pdt.oracle_samples(scenes, bands, xs, ys, crs), pids_of(xs))

    bands = st.lists(st.sampled_from(BANDS), min_size=1, max_size=4, unique=True)
    run_examples(examples, st.tuples(pdt.point_sets(scenes), st.sampled_from(FORMS), bands), check)


def test_edge_points_in_each_raster_crs(scenes, collection):
    """Every pixel corner along and just off each outer edge of each raster, in the raster's own CRS."""
    for scene in scenes:
        f = scene.bands["u16"]
        w, h = f.width, f.height
        along_x, along_y = np.arange(-1.0, w + 2), np.arange(-1.0, h + 2)
        lines_c, lines_r = [], []
        for row in (-1, 0, h - 1, h, h + 1):  # horizontal lines of pixel corners (and edge midpoints)
            lines_c += [along_x, along_x + 0.5, along_x]
            lines_r += [
                np.full(along_x.size, row),
                np.full(along_x.size, row),
                np.full(along_x.size, row + 0.5),
            ]
        for col in (-1, 0, w - 1, w, w + 1):  # vertical lines
            lines_c += [
                np.full(along_y.size, col),
                np.full(along_y.size, col),
                np.full(along_y.size, col + 0.5),
            ]
            lines_r += [along_y, along_y + 0.5, along_y]
        cols = np.concatenate([*lines_c, [w - 1e-9, w - 1e-9, w - 1e-9, w - 1e-9, 0, w / 2]])
        rows = np.concatenate([*lines_r, [0, h / 2, h - 1e-9, h, h - 1e-9, h - 1e-9]])
        xs, ys = f.transform @ (cols, rows)
        xs, ys = np.asarray(xs), np.asarray(ys)
        frame = pd.DataFrame({"pid": pids_of(xs), "x": xs, "y": ys})
        out = computed(
            collection.sample_points(frame, bands=list(BANDS), x_column="x", y_column="y", geometry_crs=f.crs)
        )
        expected = pdt.oracle_samples(scenes, BANDS, xs, ys, f.crs, many=True)
        inside = {p for (p, r, b) in expected if r == scene.id and b == "u16"}
        assert len(inside) > 4 * (w + h), "the test must meet the raster"
        pdt.assert_wide_matches(out, expected, BANDS, frame["pid"].to_numpy())


# ------------------------------------------------------------------------- max_distance and latest


@MORE_EXAMPLES
def test_nearest_valid_and_latest_match_brute_force(examples, scenes, collection):
    """max_distance_pixels (Chebyshev k, nearest by distance to the pixel rectangle, ties row-major) and
    match="latest" (newest record with a valid value) against numpy searches over rasterio's arrays."""
    full_cache: dict = {}

    def check(points, k, match, layout, bands):
        xs, ys, crs = points
        frame = pd.DataFrame({"pid": pids_of(xs), "x": xs, "y": ys})
        out = computed(
            collection.sample_points(
                frame,
                bands=list(bands),
                x_column="x",
                y_column="y",
                geometry_crs=crs,
                match=match,
                max_distance_pixels=k,
                layout=layout,
            )
        )
        brute = brute_samples_cached(scenes, bands, xs, ys, crs, k, full_cache)
        pids = frame["pid"].to_numpy()
        if match == "all":
            check_all(out, brute, bands, pids, k, layout)
        else:
            check_latest(out, pdt.brute_latest(scenes, brute, len(xs), bands), bands, pids, k, layout)

    bands = st.lists(st.sampled_from(BANDS), min_size=1, max_size=3, unique=True)
    strategy = st.tuples(
        pdt.point_sets(scenes, max_points=25),
        st.integers(0, 3),
        st.sampled_from(["all", "latest"]),
        st.sampled_from(["wide", "long"]),
        bands,
    )
    run_examples(examples, strategy, check)


def brute_samples_cached(scenes, bands, xs, ys, crs, k, cache) -> dict:
    out = {}
    for scene in scenes:
        for band in bands:
            f = scene.bands[band]
            if f.path not in cache:
                cache[f.path] = pdt.read_full(f)
            with rasterio.open(f.path) as ds:
                x, y = pdt.in_crs_of(ds, xs, ys, crs)
            for i in range(len(x)):
                found = pdt.brute_nearest(cache[f.path], x[i], y[i], k)
                if found is not None:
                    out[(i, scene.id, band)] = found
    return out


def check_all(out, brute, bands, pids, k, layout) -> None:
    values = {key: v[2] for key, v in brute.items()}
    if layout == "long":
        pdt.assert_long_matches(out, values, pids)
    else:
        pdt.assert_wide_matches(out, values, bands, pids)
    if not k:
        return
    by_pid = {int(pid): p for p, pid in enumerate(pids)}
    for row in out.to_dict("records"):
        p = by_pid[int(row["pid"])]
        for band in [row["band"]] if layout == "long" else bands:
            rname, cname = ("row", "col") if layout == "long" else (f"{band}_row", f"{band}_col")
            want = brute.get((p, row["record_id"], band))
            got = (row[rname], row[cname])
            if want is None:
                assert pdt.is_missing(got[0]) and pdt.is_missing(got[1]), (p, band, got)
            else:
                assert got == want[:2], (p, row["record_id"], band, got, want)


def check_latest(out, latest, bands, pids, k, layout) -> None:
    covered = {p for (p, _), v in latest.items()}
    by_pid = {int(pid): p for p, pid in enumerate(pids)}
    if layout == "long":
        want = {(int(pids[p]), band): v for (p, band), v in latest.items() if v is not None}
        got = {}
        for row in out.to_dict("records"):
            key = (int(row["pid"]), row["band"])
            assert key not in got, f"{key} appears twice"
            got[key] = row
        assert set(got) == set(want), (sorted(set(want) - set(got))[:5], sorted(set(got) - set(want))[:5])
        for key, (rid, (r, c, value)) in want.items():
            row = got[key]
            assert row["record_id"] == rid, (key, row["record_id"], rid)
            assert pdt.same_value(row["value"], None if value is None else float(value)), (key, row, value)
            if k:
                assert (row["row"], row["col"]) == (r, c), (key, row, r, c)
        return
    got = pdt.wide_rows(out, key=("pid",))
    assert {by_pid[pid] for (pid,) in got} == covered
    for (pid,), row in got.items():
        p = by_pid[pid]
        for band in bands:
            want = latest[(p, band)]
            if want is None:
                assert pdt.is_missing(row[band]) and pdt.is_missing(row[f"{band}_record_id"]), (p, band, row)
                assert pd.isna(row[f"{band}_datetime"]), (p, band, row)
                continue
            rid, (r, c, value) = want
            assert row[f"{band}_record_id"] == rid, (p, band, row[f"{band}_record_id"], rid)
            assert pdt.same_value(row[band], value), (p, band, row[band], value)
            if k:
                assert (row[f"{band}_row"], row[f"{band}_col"]) == (r, c), (p, band, row, r, c)


def test_latest_carries_record_datetime(scenes, collection):
    """match="latest": {band}_datetime is the chosen record's datetime, tz-aware UTC, lazily and computed."""
    f = scenes[0].bands["u16"]
    xs, ys = f.transform @ (np.arange(0.5, 40.5, 1.0), np.arange(0.5, 40.5, 1.0))
    frame = pd.DataFrame({"pid": pids_of(xs), "x": xs, "y": ys})
    lazy = collection.sample_points(
        frame, bands=["u16", "c20"], x_column="x", y_column="y", geometry_crs=f.crs, match="latest"
    )
    out = computed(lazy)
    assert dict(out.dtypes) == dict(lazy.dtypes)
    stamps = {s.id: s.datetime for s in scenes}
    for band in ("u16", "c20"):
        assert str(out[f"{band}_datetime"].dtype) == "datetime64[us, UTC]"
        chosen = out[f"{band}_record_id"].dropna()
        assert len(chosen) > 0
        assert (out.loc[chosen.index, f"{band}_datetime"] == [stamps[r] for r in chosen]).all()


# ------------------------------------------------------------------------------------------- dtypes


def one_record_of_bands(tmp_path, specs: dict, *, extremes: bool = True):
    """One record of 40 x 40 single-band files, band -> (dtype, nodata); returns (collection, scenes,
    frame of a point at every pixel centre)."""
    rng = np.random.default_rng(5)
    crs, t = UTM32, Affine(10.0, 0.0, 700_000.0, 0.0, -10.0, 5_350_000.0)
    h = w = 40
    files = {}
    for band, (dtype, nodata) in specs.items():
        data = pdt.random_data(rng, dtype, (1, h, w))
        if extremes and np.dtype(dtype).kind in "iu":  # values float64 cannot hold, for 64-bit integers
            data[0, ::3, ::2] = np.iinfo(dtype).max
            data[0, 1::3, 1::2] = np.iinfo(dtype).max - 1
            data[0, 2::3, ::2] = np.iinfo(dtype).min + 1
        data[0, ::5, ::7] = nodata
        path = tmp_path / f"{band}.tif"
        pdt.write_tiff(path, data, crs=crs, transform=t, nodata=nodata)
        files[band] = pdt.BandFile(path, 1, crs, t, w, h)
    scenes = [pdt.Scene("only", pdt.T0, crs, files)]
    cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    xs, ys = t @ (cols.ravel(), rows.ravel())
    return pdt.build(scenes), scenes, pd.DataFrame({"pid": pids_of(xs), "x": xs, "y": ys})


def test_wide_dtypes_keep_64_bit_integers_exact(tmp_path):
    """Bands of int64, uint64, uint32, int8 and float64 side by side: wide values are exact (nullable
    band dtypes), long values are rasterio's as float64."""
    specs = {
        "i64": ("int64", -5),  # nodata GDAL writes as integer text (see the 64-bit nodata test below)
        "u64": ("uint64", 7),
        "u32": ("uint32", 2**32 - 1),
        "i8": ("int8", -128),
        "f64": ("float64", -1e300),
    }
    collection, scenes, frame = one_record_of_bands(tmp_path, specs)
    xs, ys = frame[["x", "y"]].to_numpy().T
    bands = list(specs)
    out = computed(
        collection.sample_points(frame, bands=bands, x_column="x", y_column="y", geometry_crs=UTM32)
    )
    for band, (dtype, _) in specs.items():
        assert str(out[band].dtype) == NULLABLE[dtype]
    expected = pdt.oracle_samples(scenes, bands, xs, ys, UTM32)
    assert any(v is None for v in expected.values()) and any(v is not None for v in expected.values())
    assert any(v == 2**64 - 1 for (_, _, b), v in expected.items() if b == "u64")
    pdt.assert_wide_matches(out, expected, bands, frame["pid"].to_numpy())
    long = computed(
        collection.sample_points(
            frame, bands=bands, x_column="x", y_column="y", geometry_crs=UTM32, layout="long"
        )
    )
    pdt.assert_long_matches(long, expected, frame["pid"].to_numpy())


def test_64_bit_nodata_is_what_gdal_reads(tmp_path):
    """rasterio writes an int64 nodata as float text; GDAL reads that text back as an integer."""
    specs = {"i64": ("int64", -(2**62)), "u64": ("uint64", 2**63)}
    collection, scenes, frame = one_record_of_bands(tmp_path, specs, extremes=False)
    xs, ys = frame[["x", "y"]].to_numpy().T
    with rasterio.open(scenes[0].bands["i64"].path) as ds:
        assert ds.nodata == -4.0  # what GDAL reports: the text up to its decimal point
    out = computed(
        collection.sample_points(frame, bands=list(specs), x_column="x", y_column="y", geometry_crs=UTM32)
    )
    expected = pdt.oracle_samples(scenes, list(specs), xs, ys, UTM32)
    pdt.assert_wide_matches(out, expected, list(specs), frame["pid"].to_numpy())


@pytest.mark.parametrize("same_place", [True, False])
def test_few_or_coincident_points_in_several_partitions(scenes, collection, same_place):
    """A dask frame of a few points in several partitions, or of points all at one place: the Hilbert
    shuffle must not fail (dask's own set_index(npartitions=) did, on repeated quantiles)."""
    frame = small_points(scenes)
    if same_place:
        frame = pd.concat([frame.iloc[[1]]] * 12, ignore_index=True).assign(pid=lambda f: np.arange(len(f)))
    points = dd.from_pandas(frame, npartitions=3)
    kwargs = {"x_column": "x", "y_column": "y", "geometry_crs": UTM32}
    out = computed(collection.sample_points(points, bands=list(BANDS), **kwargs))
    xs, ys = frame[["x", "y"]].to_numpy().T
    expected = pdt.oracle_samples(scenes, BANDS, xs, ys, UTM32)
    assert expected
    pdt.assert_wide_matches(out, expected, BANDS, frame["pid"].to_numpy())


# ------------------------------------------------------------------------------- tile de-duplication


def test_100k_points_cost_at_most_one_get_per_touched_tile(tmp_path, range_server):
    """100,000 points in one scene and band: at most one GET per tile their pixels touch (counted at the
    range server), and the values are rasterio's."""
    rng = np.random.default_rng(11)
    h = w = 1024
    t = Affine(10.0, 0.0, 700_000.0, 0.0, -10.0, 5_350_000.0)
    path = tmp_path / "dedup.tif"
    pdt.write_tiff(
        path,
        pdt.random_data(rng, "uint16", (1, h, w), 0),
        crs=UTM32,
        transform=t,
        nodata=0,
        driver="COG",
        blocksize=64,
    )
    name = "points/dedup.tif"
    url = range_server.put(name, path.read_bytes())
    scene = pdt.Scene("dedup", pdt.T0, UTM32, {"b": pdt.BandFile(path, 1, UTM32, t, w, h)})
    collection = pdt.build([scene], href=lambda _: url)
    n = 100_000
    cols, rows = rng.uniform(100, 700, n), rng.uniform(300, 650, n)
    xs, ys = t @ (cols, rows)
    frame = pd.DataFrame({"pid": np.arange(n), "x": xs, "y": ys})
    r, c = rowcol(t, xs, ys)
    touched = len(set(zip(np.asarray(r) // 64, np.asarray(c) // 64, strict=True)))
    kwargs = {"bands": ["b"], "x_column": "x", "y_column": "y", "geometry_crs": UTM32}
    # Without merging ranges, every touched tile costs exactly one GET; with merging (the default), fewer.
    unmerged = collection.sample_points(frame, config=IOConfig(max_gap=0, max_merged_size=1), **kwargs)
    range_server.reset_stats()
    unmerged.compute()
    assert range_server.requests(name) == touched
    lazy = collection.sample_points(frame, **kwargs)
    range_server.reset_stats()
    out = lazy.compute()
    gets = range_server.requests(name)
    print(f"\n100k points, one band: {gets} GET(s) for {touched} touched tiles ({touched} unmerged)")
    assert 0 < gets <= touched
    assert len(out) == n
    full = pdt.read_full(scene.bands["b"])
    order = np.argsort(out["pid"].to_numpy())
    got = out["b"].to_numpy(dtype=np.float64, na_value=np.nan)[order]
    r, c = np.asarray(r), np.asarray(c)
    want = np.where(full.valid[r, c], full.values[r, c], np.nan)
    np.testing.assert_array_equal(got, want)


# -------------------------------------------------------------------------------------- big inputs


def vectorized_oracle(scenes, bands, xs, ys, crs) -> dict:
    """``{(record id, band): (point positions inside, values as float64 with NaN where missing)}``:
    rasterio's rowcol on the arrays rasterio reads (the same rule as ``sample``, for many points)."""
    out = {}
    for scene in scenes:
        for band in bands:
            f = scene.bands[band]
            full = pdt.read_full(f)
            with rasterio.open(f.path) as ds:
                x, y = pdt.in_crs_of(ds, xs, ys, crs)
            r, c = rowcol(f.transform, x, y)
            r, c = np.asarray(r), np.asarray(c)
            inside = np.flatnonzero((r >= 0) & (r < f.height) & (c >= 0) & (c < f.width))
            ri, ci = r[inside], c[inside]
            values = np.where(full.valid[ri, ci], full.values[ri, ci].astype(np.float64), np.nan)
            out[(scene.id, band)] = (inside, values)
    return out


def write_points(path: Path, n: int, scenes, seed_: int, row_group: int = 100_000):
    """``n`` points (pid, x, y in UTM 32) over the scenes' area, written as Parquet in row groups."""
    rng = np.random.default_rng(seed_)
    boxes = []
    for s in scenes:
        f = s.bands[next(iter(s.bands))]
        x, y = f.transform @ (np.array([0, f.width, 0, f.width]), np.array([0, 0, f.height, f.height]))
        x, y = pdt.to_crs(x, y, f.crs, UTM32)
        boxes.append((x.min(), y.min(), x.max(), y.max()))
    boxes = np.asarray(boxes)
    x0, y0 = boxes[:, :2].min(axis=0) - 50
    x1, y1 = boxes[:, 2:].max(axis=0) + 50
    xs, ys = rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)
    table = pa.table({"pid": np.arange(n, dtype=np.int64), "x": xs, "y": ys})
    pq.write_table(table, path, row_group_size=row_group)
    return xs, ys


def peak_rss_mb(client) -> dict:
    """Each worker process's peak resident memory so far, MB (getrusage; Linux reports KiB)."""

    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    return client.run(peak)


def run_big(n: int, tmp_path: Path, cluster, *, restart: bool) -> None:
    from distributed import Client

    import rasteret_dask as rd
    from tests.scenes import make_scenes, with_assets

    bands = ("B02", "B03")
    records = make_scenes(tmp_path / "scenes", bands=bands, dates=2)
    collection = rd.build_from_table(with_assets(records, bands), progress=False)
    scenes = scenes_of(records, bands)
    source = tmp_path / "points.parquet"
    xs, ys = write_points(source, n, scenes, seed_=n)
    target = tmp_path / "samples"
    with Client(cluster) as client:
        if restart:  # fresh worker processes: the peak is this run's alone
            client.restart()
        before = peak_rss_mb(client)
        started = time.perf_counter()
        lazy = collection.sample_points(
            str(source), bands=list(bands), x_column="x", y_column="y", geometry_crs=UTM32
        )
        planned = time.perf_counter()
        lazy.to_parquet(target)
        elapsed = time.perf_counter() - started
        after = peak_rss_mb(client)
    print(
        f"\n{n:,} points, {len(scenes)} records x {len(bands)} bands on LocalCluster(2 x 1 thread, 2GB): "
        f"{lazy.npartitions} tasks, graph {planned - started:.1f} s, total {elapsed:.1f} s; peak worker RSS "
        + ", ".join(f"{after[w]:.0f} MB (at start {before[w]:.0f})" for w in sorted(after))
    )
    assert max(after.values()) < 2000
    table = pq.read_table(target, columns=["pid", "record_id", *bands])
    pid = table["pid"].to_numpy()
    rid = table["record_id"].to_numpy(zero_copy_only=False).astype(str)
    expected = vectorized_oracle(scenes, bands, xs, ys, UTM32)
    total = sum(len(v[0]) for (_, b), v in expected.items() if b == bands[0])
    assert len(pid) == total  # one row per (point, record): all bands share a grid here
    for band in bands:
        got = table[band].to_numpy(zero_copy_only=False).astype(np.float64)
        for scene in scenes:
            inside, values = expected[(scene.id, band)]
            mine = rid == scene.id
            order = np.argsort(pid[mine])
            assert np.array_equal(pid[mine][order], inside)
            np.testing.assert_array_equal(got[mine][order], values)


def scenes_of(records: gpd.GeoDataFrame, bands) -> list[pdt.Scene]:
    """tests.scenes records as point_data Scenes (for the oracles)."""
    out = []
    for _, row in records.iterrows():
        files = {}
        for band in bands:
            with rasterio.open(row[f"{band}_href"]) as ds:
                crs = f"EPSG:{ds.crs.to_epsg()}"
                files[band] = pdt.BandFile(
                    Path(row[f"{band}_href"]), 1, crs, ds.transform, ds.width, ds.height
                )
        out.append(pdt.Scene(row["id"], row["datetime"], crs, files))
    return out


def test_100k_points_end_to_end_on_local_cluster(tmp_path, cluster):
    run_big(100_000, tmp_path, cluster, restart=False)


@pytest.mark.slow
def test_1m_points_end_to_end_on_local_cluster(tmp_path, cluster):
    run_big(1_000_000, tmp_path, cluster, restart=True)


# ------------------------------------------------------------------------ same results everywhere


@pytest.fixture(scope="module")
def served(scenes, s3_server, range_server_process):
    """The same records read from local disk, over HTTP (range server) and from S3 (moto)."""
    out = {"local": pdt.build(scenes)}

    def http(path):
        return range_server_process.put(f"points/{Path(path).name}", Path(path).read_bytes())

    out["http"] = pdt.build(scenes, href=http)

    def s3(path):
        return s3_server.put("points", Path(path).name, Path(path).read_bytes())

    options = s3_server.storage_options
    out["s3"] = pdt.build(scenes, href=s3, storage_options=options)
    return out


def fixed_points(scenes) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    xs, ys = [], []
    for s in scenes:
        f = s.bands["u16"]
        x, y = f.transform @ (rng.uniform(-3, f.width + 3, 150), rng.uniform(-3, f.height + 3, 150))
        x, y = pdt.to_crs(x, y, f.crs, WGS84)
        xs.append(x)
        ys.append(y)
    xs, ys = np.concatenate(xs), np.concatenate(ys)
    return pd.DataFrame({"pid": pids_of(xs), "lon": xs, "lat": ys})


def sorted_frame(frame: pd.DataFrame, key) -> pd.DataFrame:
    return frame.sort_values(key, kind="stable").reset_index(drop=True)


def test_same_results_local_http_s3_threaded_and_cluster(scenes, served, cluster, range_server):
    from distributed import Client

    points = fixed_points(scenes)
    kwargs = {"bands": list(BANDS), "x_column": "lon", "y_column": "lat", "geometry_crs": WGS84}
    key = ["pid", "record_id"]
    results = {
        name: sorted_frame(computed(c.sample_points(points, **kwargs)), key) for name, c in served.items()
    }
    assert range_server.requests() > 0
    with Client(cluster):
        for name in ("local", "s3"):
            results[f"{name}-cluster"] = sorted_frame(
                computed(served[name].sample_points(points, **kwargs)), key
            )
        results["http-cluster-latest"] = sorted_frame(
            computed(served["http"].sample_points(points, match="latest", max_distance_pixels=2, **kwargs)),
            ["pid"],
        )
    latest = sorted_frame(
        computed(served["local"].sample_points(points, match="latest", max_distance_pixels=2, **kwargs)),
        ["pid"],
    )
    base = results.pop("local")
    assert len(base) > 500 and base[list(BANDS)].notna().any().all()
    for name, frame in results.items():
        if name == "http-cluster-latest":
            pd.testing.assert_frame_equal(frame, latest, obj=name)
        else:
            pd.testing.assert_frame_equal(frame, base, obj=name)
    xs, ys = fixed_points(scenes)[["lon", "lat"]].to_numpy().T
    expected = pdt.oracle_samples(scenes, BANDS, xs, ys, WGS84, many=True)
    pdt.assert_wide_matches(base, expected, BANDS, pids_of(xs))


# ---------------------------------------------------------------------------------------- bad input


def small_points(scenes, crs=UTM32) -> pd.DataFrame:
    f = scenes[0].bands["u16"]
    xs, ys = f.transform @ (np.array([1.5, 10.5, 30.5, 60.5]), np.array([2.5, 20.5, 40.5, 50.5]))
    xs, ys = pdt.to_crs(np.asarray(xs), np.asarray(ys), f.crs, crs)
    return pd.DataFrame({"pid": pids_of(xs), "x": xs, "y": ys})


def test_missing_columns_raise(scenes, collection):
    frame = small_points(scenes)
    with pytest.raises(SchemaError, match="nope"):
        collection.sample_points(frame, bands=["u16"], x_column="nope", y_column="y", geometry_crs=UTM32)
    with pytest.raises(PlanError, match="both"):
        collection.sample_points(frame, bands=["u16"], x_column="x", geometry_crs=UTM32)
    with pytest.raises(SchemaError, match="geometry"):
        collection.sample_points(frame, bands=["u16"])  # neither x/y nor a geometry column
    gdf = gpd.GeoDataFrame(frame, geometry=gpd.points_from_xy(frame.x, frame.y), crs=UTM32)
    with pytest.raises(SchemaError):
        collection.sample_points(gdf, bands=["u16"], geometry_column="where")


def test_no_crs_raises(scenes, collection):
    frame = small_points(scenes)
    with pytest.raises(PlanError, match="geometry_crs"):
        collection.sample_points(frame, bands=["u16"], x_column="x", y_column="y")
    gdf = gpd.GeoDataFrame(frame[["pid"]], geometry=gpd.points_from_xy(frame.x, frame.y))
    assert gdf.crs is None
    with pytest.raises(PlanError, match="geometry_crs"):
        collection.sample_points(gdf, bands=["u16"])
    with pytest.raises(PlanError, match="geometry_crs"):
        collection.sample_points(dask_geopandas.from_geopandas(gdf, npartitions=2), bands=["u16"])
    # geometry_crs supplies the missing CRS
    out = computed(collection.sample_points(gdf, bands=["u16"], geometry_crs=UTM32))
    xs, ys = frame[["x", "y"]].to_numpy().T
    pdt.assert_wide_matches(out, pdt.oracle_samples(scenes, ["u16"], xs, ys, UTM32), ["u16"], frame.pid)


def test_geometries_other_than_points_raise(scenes, collection):
    frame = small_points(scenes)
    geoms = list(gpd.points_from_xy(frame.x, frame.y))
    geoms[2] = geoms[2].buffer(30.0)
    gdf = gpd.GeoDataFrame(frame[["pid"]], geometry=geoms, crs=UTM32)
    with pytest.raises(PlanError, match=r"1 in this partition are not .* Polygon"):
        collection.sample_points(gdf, bands=["u16"])


def test_shuffled_partition_extents_hold_their_points(monkeypatch):
    """The extents sample_points prunes records with are learnt without running the shuffle; they must
    hold every point the shuffle puts in each partition, and the points are keyed once per pass."""
    rng = np.random.default_rng(5)
    n = 40_000
    clustered = rng.normal(0, 1, (n // 2, 2)) * [50, 80] + [1000, -300]
    spread = rng.uniform([-5000, -9000], [7000, 3000], (n // 2, 2))
    xy = np.vstack([clustered, spread])
    frame = dd.from_pandas(pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1]}), npartitions=4)
    spec = SampleSpec(
        bands=("u16",),
        dtypes=("uint16",),
        point_crs=UTM32,
        x_column="x",
        y_column="y",
        geometry_column=None,
        match="all",
        max_distance_pixels=0,
        layout="wide",
    )
    calls = []
    keyed = points_module._with_hilbert
    monkeypatch.setattr(points_module, "_with_hilbert", lambda *a: calls.append(1) or keyed(*a))
    monkeypatch.setattr(points_module, "POINTS_PER_PARTITION", 3_000)
    shuffled, extents = points_module.spatially_sorted(frame, spec)
    assert len(calls) == 4  # the summary pass only: no shuffle ran
    parts = [part for part in dask.compute(*shuffled.to_delayed(), scheduler="threads")]
    assert len(parts) == len(extents) > 8
    assert sum(len(p) for p in parts) == n
    # ... and hardly more: within one coarse Hilbert cell (1/64 of the points' extent) of the points.
    cell_w, cell_h = np.ptp(xy[:, 0]) / 64, np.ptp(xy[:, 1]) / 64
    for part, (x0, y0, x1, y1) in zip(parts, extents, strict=True):
        if len(part):
            assert x0 <= part.x.min() and part.x.max() <= x1 and y0 <= part.y.min() and part.y.max() <= y1
            assert part.x.min() - x0 <= cell_w and x1 - part.x.max() <= cell_w
            assert part.y.min() - y0 <= cell_h and y1 - part.y.max() <= cell_h


def test_nan_coordinates_are_dropped(scenes, collection):
    """Documented: rows without coordinates (NaN x/y, missing or empty geometry) give no row."""
    frame = small_points(scenes)
    nan = frame.copy()
    nan.loc[1, "x"] = np.nan
    nan.loc[2, "y"] = np.nan
    out = computed(
        collection.sample_points(nan, bands=["u16"], x_column="x", y_column="y", geometry_crs=UTM32)
    )
    keep = [0, 3]
    xs, ys = frame.loc[keep, ["x", "y"]].to_numpy().T
    expected = pdt.oracle_samples(scenes, ["u16"], xs, ys, UTM32)
    assert expected
    pdt.assert_wide_matches(out, expected, ["u16"], frame.loc[keep, "pid"].to_numpy())
    geoms = list(gpd.points_from_xy(frame.x, frame.y))
    geoms[1], geoms[2] = None, gpd.points_from_xy([np.nan], [np.nan])[0]
    gdf = gpd.GeoDataFrame(frame[["pid"]], geometry=geoms, crs=UTM32)
    out = computed(collection.sample_points(gdf, bands=["u16"]))
    pdt.assert_wide_matches(out, expected, ["u16"], frame.loc[keep, "pid"].to_numpy())


@pytest.mark.parametrize("layout", ["wide", "long"])
@pytest.mark.parametrize("match", ["all", "latest"])
def test_empty_points_give_an_empty_typed_frame(scenes, collection, layout, match):
    frame = small_points(scenes)
    kwargs = {"x_column": "x", "y_column": "y", "geometry_crs": UTM32, "layout": layout, "match": match}
    full = computed(collection.sample_points(frame, bands=["u16", "f32"], max_distance_pixels=1, **kwargs))
    assert len(full) > 0
    for empty in (frame.iloc[:0], pa.Table.from_pandas(frame.iloc[:0], preserve_index=False)):
        lazy = collection.sample_points(empty, bands=["u16", "f32"], max_distance_pixels=1, **kwargs)
        out = computed(lazy)
        assert len(out) == 0
        assert list(out.columns) == list(full.columns)
        assert dict(out.dtypes) == dict(full.dtypes)
        assert dict(lazy.dtypes) == dict(full.dtypes)
    # points that no record covers: the same empty typed frame
    far = frame.assign(x=frame.x + 1e6)
    out = computed(collection.sample_points(far, bands=["u16", "f32"], max_distance_pixels=1, **kwargs))
    assert len(out) == 0 and dict(out.dtypes) == dict(full.dtypes)


def test_unknown_band_raises(scenes, collection):
    with pytest.raises(PlanError, match="B99"):
        collection.sample_points(
            small_points(scenes), bands=["u16", "B99"], x_column="x", y_column="y", geometry_crs=UTM32
        )


@pytest.mark.parametrize(
    "column, kwargs",
    [
        ("record_id", {}),
        ("datetime", {}),
        ("u16", {}),
        ("band", {"layout": "long"}),
        ("value", {"layout": "long"}),
        ("u16_record_id", {"match": "latest"}),
        ("u16_datetime", {"match": "latest"}),
        ("u16_row", {"max_distance_pixels": 1}),
        ("u16_col", {"max_distance_pixels": 1}),
        ("row", {"layout": "long", "max_distance_pixels": 1}),
        ("col", {"layout": "long", "max_distance_pixels": 1}),
    ],
)
def test_point_columns_colliding_with_outputs_raise(scenes, collection, column, kwargs):
    frame = small_points(scenes).assign(**{column: 1})
    with pytest.raises(SchemaError, match=column):
        collection.sample_points(
            frame, bands=["u16"], x_column="x", y_column="y", geometry_crs=UTM32, **kwargs
        )


def test_sampling_sends_no_request_until_computed(scenes, served, range_server):
    range_server.reset_stats()
    lazy = served["http"].sample_points(
        small_points(scenes), bands=["u16"], x_column="x", y_column="y", geometry_crs=UTM32
    )
    assert range_server.requests() == 0
    assert len(computed(lazy)) > 0 and range_server.requests() > 0
