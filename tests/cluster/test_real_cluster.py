"""The public API on a real cluster: ``dask scheduler`` and ``dask worker`` processes on loopback.

A client connects by address (as to a remote cluster) and runs header enrichment (``build_from_table``),
a ``get_xarray`` reduction (temporal mean, nodata masked) and ``sample_points`` of 20,000 points against
COGs on the range server (HTTP) and in a private bucket of moto's S3 server. Credentials are given only
as ``storage_options`` (the workers' environment holds none, and anonymous reads of the bucket fail),
so a read that works proves the options reached the workers. The oracle is the threaded scheduler in
this process: results must be equal exactly. The secret must appear in no task the scheduler received,
no pickled graph, no exported Parquet file and no log line of the cluster's processes (at distributed's
default log level: at DEBUG, ``distributed.core`` logs every message it receives, and the message that
installs the storage plugin carries the options).

Then the same jobs lose workers to SIGKILL mid-computation (nanny and worker process, so no restart),
one during the build and one during the reads: Dask reschedules their tasks, and the surviving worker,
and a worker that joined afterwards, read with their own copies of the storage options.
"""

from __future__ import annotations

import io
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import dask
import dask.dataframe as dd
import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xarray as xr
from distributed import Client, default_client

import rasteret_dask as rd
from rasteret_dask.io.credentials import register
from tests.scenes import make_scenes, with_assets
from tests.servers.s3 import SECRET as S3_SECRET

BANDS = ("B04", "B08")
UTM33 = "EPSG:32633"
N_POINTS = 20_000
BUCKET = "rasteret-real-cluster"
HTTP_SECRET = f"http-token-{uuid.uuid4().hex}"  # sent as a header: the range server ignores it
LATENCY_MS = 150  # per range request while a worker is killed: tasks last long enough to be caught


@dataclass(frozen=True)
class Source:
    """The scenes' records with assets on one server, the options to read them, and their secret."""

    records: gpd.GeoDataFrame
    storage_options: dict
    secret: bytes

    @property
    def token(self) -> bytes:
        """The StorageRef token that tasks carry instead of the options (the same in this process)."""
        return register(self.storage_options).token.encode()


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> gpd.GeoDataFrame:
    """Six scenes (three dates in each of two UTM zones), one uint16 COG per band, nodata 0 edges."""
    return make_scenes(tmp_path_factory.mktemp("cluster-scenes"), dates=3, bands=BANDS)


@pytest.fixture(scope="module")
def sources(scenes, range_server_process, s3_server) -> dict[str, Source]:
    def http(path: str) -> str:
        return range_server_process.put(f"real-cluster/{Path(path).name}", Path(path).read_bytes())

    def s3(path: str) -> str:
        return s3_server.put(BUCKET, f"cogs/{Path(path).name}", Path(path).read_bytes())

    out = {
        "http": Source(
            with_assets(scenes, BANDS, href=http),
            {"headers": {"X-Rasteret-Test-Token": HTTP_SECRET}},
            HTTP_SECRET.encode(),
        ),
        "s3": Source(with_assets(scenes, BANDS, href=s3), s3_server.storage_options, S3_SECRET.encode()),
    }
    s3_server.client.put_bucket_acl(Bucket=BUCKET, ACL="private")
    return out


@pytest.fixture(scope="module")
def collections(sources) -> dict[str, rd.Collection]:
    """The collections built with the threaded scheduler (no client exists while module fixtures run)."""
    assert_no_client()
    return {name: build(source) for name, source in sources.items()}


@pytest.fixture(scope="module")
def points(scenes) -> pd.DataFrame:
    """20,000 lon/lat points over the scenes' bounds (some outside every scene), with a ``pid``."""
    rng = np.random.default_rng(11)
    west, south, east, north = scenes.total_bounds
    return pd.DataFrame(
        {
            "pid": np.arange(N_POINTS, dtype=np.int64),
            "lon": rng.uniform(west, east, N_POINTS),
            "lat": rng.uniform(south, north, N_POINTS),
        }
    )


# -------------------------------------------------------------------------------------------- helpers


def build(source: Source) -> rd.Collection:
    return rd.build_from_table(
        source.records, storage_options=source.storage_options, npartitions=3, progress=False
    )


def records_of(collection: rd.Collection) -> gpd.GeoDataFrame:
    return collection.frame.compute().sort_values("id").reset_index(drop=True)


def assert_same_records(got: gpd.GeoDataFrame, expected: gpd.GeoDataFrame) -> None:
    pd.testing.assert_frame_equal(
        got.drop(columns="geometry"), expected.drop(columns="geometry"), check_exact=True
    )
    assert list(got.geometry.to_wkb()) == list(expected.geometry.to_wkb())


def temporal_mean(collection: rd.Collection) -> xr.Dataset:
    """Per band, the mean over time of the valid pixels (fill value masked) on one UTM 33 grid."""
    ds = collection.get_xarray(bands=list(BANDS), crs=UTM33, resolution=10.0)
    return xr.Dataset({b: ds[b].where(ds[b] != ds[b].attrs["_FillValue"]).mean("time") for b in BANDS})


def samples(collection: rd.Collection, points: pd.DataFrame, npartitions: int = 4) -> dd.DataFrame:
    frame = dd.from_pandas(points, npartitions=npartitions)
    return collection.sample_points(
        frame, bands=list(BANDS), x_column="lon", y_column="lat", geometry_crs="EPSG:4326"
    )


def sorted_samples(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["pid", "record_id"], kind="stable").reset_index(drop=True)


def assert_no_client() -> None:
    """Nothing would silently run on a cluster (a client left open elsewhere would be the default)."""
    with pytest.raises(ValueError):
        default_client()


def threaded(collection_read):
    """The oracle: ``collection_read`` computed by the threaded scheduler in this process.

    Call it with no client connected: with one, dask chooses its p2p shuffle (``sample_points`` sorts
    the points), which the threaded scheduler cannot run.
    """
    assert_no_client()
    return dask.compute(collection_read, scheduler="threads")[0]


def graph_bytes(collection_read) -> bytes:
    """The read's task graph as distributed would pickle it (materialised, every task and argument)."""
    return cloudpickle.dumps(dict(collection_read.__dask_graph__()))


def scheduler_tasks_holding(client: Client, needles: list[bytes]) -> tuple[int, dict[bytes, list[str]]]:
    """(tasks with a spec on the scheduler, ``{needle: keys of tasks whose pickled spec contains it}``)."""

    def scan(dask_scheduler, needles):
        from distributed.protocol.pickle import dumps

        found = {needle: [] for needle in needles}
        specs = 0
        for key, ts in dask_scheduler.tasks.items():
            if ts.run_spec is None:
                continue
            specs += 1
            blob = dumps(ts.run_spec)
            for needle in needles:
                if needle in blob:
                    found[needle].append(str(key))
        return specs, found

    return client.run_on_scheduler(scan, needles=needles)


def assert_logs_clean(cluster, source: Source, alive: str = "w1") -> None:
    """No log of the cluster holds the secret; worker ``alive`` installed the storage plugin."""
    logs = cluster.logs()
    assert b"Registered to" in logs[alive]  # the logs captured are the workers' own
    leaked = [name for name, data in logs.items() if source.secret in data]
    assert not leaked, f"the secret is in the logs of {leaked}"
    plugin = b"Starting Worker plugin rasteret-storage-" + source.token
    assert plugin in logs[alive], f"the storage plugin did not reach worker {alive}"


def parquet_leaks(blobs: dict[str, bytes], secret: bytes, probe: bytes) -> list[str]:
    """Files whose raw bytes or decoded content (uncompressed Arrow IPC) hold ``secret``.

    Pages are compressed, so the raw bytes alone could hide a secret; ``probe`` (a string every file's
    content holds) checks that the decoded search does see strings.
    """
    leaks = []
    for name, blob in blobs.items():
        table = pq.read_table(io.BytesIO(blob))
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        decoded = sink.getvalue().to_pybytes()
        assert probe in decoded, f"{name}: the decoded content lacks {probe!r}"
        if secret in blob or secret in decoded:
            leaks.append(name)
    return leaks


def wait_until_busy(client: Client, address: str, finished, *, holding: bool, timeout: float = 60.0) -> None:
    """Block until the worker at ``address`` runs tasks (and, if ``holding``, holds results) of a job
    that has not ``finished()``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert not finished(), "the job finished before a worker could be killed: raise LATENCY_MS"
        if client.processing().get(address) and (not holding or client.has_what().get(address)):
            return
        time.sleep(0.02)
    raise AssertionError(f"worker {address} was never busy within {timeout} s")


class Background(threading.Thread):
    """Runs ``target()`` in a thread; ``result()`` returns its value or raises its exception."""

    def __init__(self, target):
        super().__init__(daemon=True)
        self._target_fn, self._value, self._error = target, None, None

    def run(self) -> None:
        try:
            self._value = self._target_fn()
        except BaseException as exc:
            self._error = exc

    def result(self, timeout: float):
        self.join(timeout)
        assert not self.is_alive(), f"no result after {timeout} s"
        if self._error is not None:
            raise self._error
        return self._value


# ----------------------------------------------------------------------------------------------- tests


def test_workers_have_no_credentials_of_their_own(sources, s3_server, real_cluster):
    """Negative control: with options that lack the key (or are anonymous) the header reads fail."""
    records = sources["s3"].records.iloc[:1]
    endpoint = {"endpoint_url": s3_server.endpoint_url}
    with Client(real_cluster.address):
        for options, reason in ((endpoint, "NoCredentialsError"), ({**endpoint, "anon": True}, "status 403")):
            report = rd.build_from_table(records, storage_options=options, progress=False).build_report
            assert report.failed == dict.fromkeys(BANDS, 1), report
            assert all(reason in report.examples[b][0] for b in BANDS), report.examples


@pytest.mark.parametrize("name", ["http", "s3"])
def test_build_and_export_on_the_cluster(name, sources, collections, s3_server, real_cluster, tmp_path):
    source = sources[name]
    expected = records_of(collections[name])
    assert expected[[f"{b}_metadata" for b in BANDS]].notna().all().all()
    if name == "http":
        target, options = str(tmp_path / "export"), None
    else:
        target, options = f"s3://{BUCKET}/exports/{uuid.uuid4().hex}", source.storage_options
    with Client(real_cluster.address) as client:
        collection = build(source)
        assert collection.build_report.failed_total == 0
        specs, found = scheduler_tasks_holding(client, [source.secret, source.token])
        assert not found[source.secret], f"the secret is in the specs of tasks {found[source.secret]}"
        assert specs >= 3 and found[source.token], "the enrichment tasks should be on the scheduler"
        assert_same_records(records_of(collection), expected)

        collection.export(target, storage_options=options)
        loaded = rd.load(target, storage_options=options)
        assert_same_records(records_of(loaded).drop(columns=["year", "month"]), expected)
    if name == "http":
        files = {str(p): p.read_bytes() for p in Path(target).rglob("*") if p.is_file()}
    else:
        prefix = target.removeprefix(f"s3://{BUCKET}/")
        listing = s3_server.client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]
        files = {
            o["Key"]: s3_server.client.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listing
        }
    assert files and all(n.endswith(".parquet") for n in files)
    href = source.records["assets"].iloc[0]["B04"]["href"]
    probe = href[: href.rindex("/") + 1].encode()  # the folder of every asset
    assert not parquet_leaks(files, source.secret, probe)
    assert_logs_clean(real_cluster, source)


@pytest.mark.parametrize("name", ["http", "s3"])
def test_temporal_mean_equals_threaded(name, sources, collections, real_cluster):
    source, collection = sources[name], collections[name]
    expected = threaded(temporal_mean(collection))
    assert 0.3 < float(expected["B04"].notnull().mean()) < 1.0  # valid pixels and nodata-only ones
    with Client(real_cluster.address) as client:
        mean = temporal_mean(collection)
        blob = graph_bytes(mean)
        assert source.secret not in blob and source.token in blob
        got = client.compute(mean).result()
    xr.testing.assert_identical(got, expected)
    assert_logs_clean(real_cluster, source)


@pytest.mark.parametrize("name", ["http", "s3"])
def test_sample_points_equal_threaded(name, sources, collections, points, real_cluster):
    source, collection = sources[name], collections[name]
    expected = sorted_samples(threaded(samples(collection, points)))
    assert expected["pid"].nunique() > N_POINTS // 4 and expected[list(BANDS)].notna().any().all()
    with Client(real_cluster.address) as client:
        frame = samples(collection, points)
        blob = graph_bytes(frame)
        assert source.secret not in blob and source.token in blob
        got = sorted_samples(client.compute(frame).result())
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert_logs_clean(real_cluster, source)


def test_points_parquet_on_private_s3_keeps_its_credentials_out_of_the_graph(
    sources, collections, points, s3_server, real_cluster
):
    """Points read from a private bucket: the options reach the tasks as a StorageRef only."""
    source, collection = sources["s3"], collections["s3"]
    key = f"points/{uuid.uuid4().hex}.parquet"
    buffer = io.BytesIO()
    points.to_parquet(buffer, row_group_size=N_POINTS // 5)
    s3_server.client.put_object(Bucket=BUCKET, Key=key, Body=buffer.getvalue())
    expected = sorted_samples(threaded(samples(collection, points)))

    def from_s3():
        return collection.sample_points(
            f"s3://{BUCKET}/{key}",
            bands=list(BANDS),
            x_column="lon",
            y_column="lat",
            geometry_crs="EPSG:4326",
            storage_options=source.storage_options,
        )

    pd.testing.assert_frame_equal(sorted_samples(threaded(from_s3())), expected, check_exact=True)
    with Client(real_cluster.address) as client:
        frame = from_s3()
        blob = graph_bytes(frame)
        assert source.secret not in blob and source.token in blob
        got = sorted_samples(client.compute(frame).result())
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert_logs_clean(real_cluster, source)


def test_workers_killed_mid_build_and_mid_reads_change_no_result(
    sources, collections, points, fresh_cluster, range_server
):
    """w0 dies during the build, w1 (holding results) during the reads of the collection built on the
    cluster; w2, which joined after the options were shipped, finishes: Dask recomputes what was lost."""
    source = sources["http"]
    expected_records = records_of(collections["http"])
    expected_mean = threaded(temporal_mean(collections["http"]))
    expected_samples = sorted_samples(threaded(samples(collections["http"], points, npartitions=8)))
    range_server.set_latency(LATENCY_MS)
    with Client(fresh_cluster.address) as client:
        workers = fresh_cluster.worker_addresses(client)

        building = Background(lambda: build(source))
        building.start()
        wait_until_busy(client, workers["w0"], lambda: not building.is_alive(), holding=False)
        fresh_cluster.kill("w0")
        range_server.set_latency(0)  # what was lost reruns at full speed
        fresh_cluster.start_worker("w2")
        collection = building.result(timeout=120)
        assert collection.build_report.failed_total == 0
        assert_same_records(records_of(collection), expected_records)

        fresh_cluster.wait_for_workers(["w2"])
        mean, frame = temporal_mean(collection), samples(collection, points, npartitions=8)
        range_server.set_latency(LATENCY_MS)
        futures = [client.compute(mean), client.compute(frame)]
        wait_until_busy(client, workers["w1"], lambda: all(f.done() for f in futures), holding=True)
        fresh_cluster.kill("w1")
        range_server.set_latency(0)
        got_mean, got_samples = client.gather(futures)
        assert set(fresh_cluster.worker_addresses(client)) == {"w2"}  # the scheduler saw both deaths
    xr.testing.assert_identical(got_mean, expected_mean)
    pd.testing.assert_frame_equal(sorted_samples(got_samples), expected_samples, check_exact=True)
    assert_logs_clean(fresh_cluster, source, alive="w2")
