"""build_from_table: records from tables, header enrichment as Dask work, failures recorded per band."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import rasterio
from distributed import Client, LocalCluster

import rasteret_dask as rd
from rasteret_dask.collection import build_from_table
from rasteret_dask.collection.schema import normalise_records
from rasteret_dask.collection.tables import to_arrow_table
from rasteret_dask.errors import SchemaError
from rasteret_dask.tiff.arrow import dict_to_header
from tests.scenes import make_scenes, with_assets

BANDS = ("B02", "B04")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return make_scenes(tmp_path_factory.mktemp("scenes"), dates=2, bands=BANDS, size=256, blocksize=128)


def _records(collection) -> pd.DataFrame:
    return collection.frame.compute().sort_values("id").reset_index(drop=True)


def test_headers_match_gdal_and_the_reader(scenes):
    collection = build_from_table(with_assets(scenes, BANDS), progress=False)
    records = _records(collection)
    assert collection.build_report.failed_total == 0
    assert list(records["id"]) == sorted(scenes["id"])
    for _, row in records.iterrows():
        for band in BANDS:
            href = row["assets"][band]["href"]
            header = dict_to_header(row[f"{band}_metadata"])
            assert header == rd.read_cog_header(href).tiff
            with rasterio.open(href) as ds:
                assert (header.width, header.height) == (ds.width, ds.height)
                assert header.geo.transform == tuple(ds.transform)[:6]
                assert header.nodata == ds.nodata
                assert [lv.width for lv in header.levels[1:]] == [ds.width // f for f in ds.overviews(1)]
            assert row["proj:epsg"] == header.geo.crs_epsg
            assert row["crs"] == f"EPSG:{header.geo.crs_epsg}"


def test_href_column_and_band_index_map(scenes):
    table = scenes.drop(columns=["B04_href"]).rename(columns={"B02_href": "url"})
    one = build_from_table(table, href_column="url", bands=["blue"], progress=False)
    assert one.bands == ["blue"]
    assert _records(one)["blue_metadata"].notna().all()
    with pytest.raises(SchemaError, match="band_index_map"):
        build_from_table(table, href_column="url", bands=["a", "b"], progress=False)
    with pytest.raises(SchemaError, match="not a column"):
        build_from_table(table, href_column="nope", progress=False)


def test_one_get_per_header_over_http(scenes, range_server):
    def serve(path):
        return range_server.put(Path(path).name, Path(path).read_bytes())

    table = with_assets(scenes, BANDS, href=serve)
    range_server.reset_stats()
    collection = build_from_table(table, progress=False)
    assert collection.build_report.failed_total == 0
    assert range_server.requests() == len(table) * len(BANDS)
    local = _records(build_from_table(with_assets(scenes, BANDS), progress=False))
    remote = _records(collection)
    for band in BANDS:
        for a, b in zip(local[f"{band}_metadata"], remote[f"{band}_metadata"], strict=True):
            remote_b = dict_to_header(b)
            assert remote_b.etag is not None  # the range server sends one; kept for change detection
            same_file = dataclasses.replace(remote_b, etag=None, last_modified=None)
            assert same_file == dataclasses.replace(dict_to_header(a), etag=None, last_modified=None)


def test_failures_are_recorded_and_the_build_completes(scenes, range_server, tmp_path):
    good = scenes.iloc[0][f"{BANDS[0]}_href"]
    complex_path = tmp_path / "complex.tif"
    with rasterio.open(
        complex_path, "w", driver="GTiff", width=8, height=8, count=1, dtype="complex64"
    ) as ds:
        ds.write(np.ones((1, 8, 8), "complex64"))
    good_bytes = Path(good).read_bytes()
    urls = {
        "ok": range_server.put("ok.tif", good_bytes),
        "missing": range_server.url_for("missing.tif"),
        "garbage": range_server.put("garbage.tif", b"this is not a tiff at all" * 100),
        "complex": range_server.put("complex.tif", complex_path.read_bytes()),
        "flaky": range_server.put("flaky.tif", good_bytes),
    }
    range_server.add_fault("status", status=503, times=2, path="/flaky.tif")
    table = pd.DataFrame(
        {
            "id": list(urls),
            "datetime": pd.Timestamp("2024-01-01", tz="UTC"),
            "geometry": [scenes.geometry.iloc[0].wkt] * len(urls),
            "assets": [{"B1": {"href": u, "band_index": None}} for u in urls.values()],
        }
    )
    collection = build_from_table(table, progress=False)
    records = _records(collection).set_index("id")
    report = collection.build_report
    assert report.records == 5 and report.failed == {"B1": 3}
    assert records.loc["ok", "B1_metadata"] is not None and pd.isna(records.loc["ok", "B1_error"])
    assert records.loc["flaky", "B1_metadata"] is not None
    assert "not found" in records.loc["missing", "B1_error"]
    assert records.loc["garbage", "B1_error"].startswith("MalformedTiffError")
    assert records.loc["complex", "B1_error"].startswith("UnsupportedTiffError")
    assert records.loc[["missing", "garbage", "complex"], "B1_metadata"].isna().all()


def test_local_cluster_gives_identical_records(scenes):
    table = with_assets(scenes, BANDS)
    threaded = _records(build_from_table(table, progress=False, npartitions=3))
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, Client(cluster):
        distributed = _records(build_from_table(table, progress=False, npartitions=3))
    pd.testing.assert_frame_equal(
        threaded.drop(columns="geometry"), distributed.drop(columns="geometry"), check_dtype=True
    )
    assert threaded.geometry.geom_equals(distributed.geometry).all()


def test_integer_ids_and_years_are_normalised(scenes):
    table = with_assets(scenes, BANDS)
    table["id"] = np.arange(len(table)) + 100
    table["datetime"] = 2020 + np.arange(len(table))
    records = _records(build_from_table(table, enrich=False))
    assert list(records["id"]) == [str(100 + i) for i in range(len(table))]
    assert list(records["datetime"]) == [
        pd.Timestamp(f"{2020 + i}-01-01", tz="UTC") for i in range(len(table))
    ]


def test_bad_tables_raise_clear_errors(scenes):
    table = with_assets(scenes, BANDS)
    with pytest.raises(SchemaError, match="datetime"):
        build_from_table(table.drop(columns=["datetime"]), enrich=False)
    with pytest.raises(SchemaError, match="assets"):
        build_from_table(table.drop(columns=["assets"]), enrich=False)
    bad_dates = table.assign(datetime=["not a date"] * len(table))
    with pytest.raises(SchemaError, match="not dates"):
        build_from_table(bad_dates, enrich=False)
    with pytest.raises(SchemaError, match="unique"):
        build_from_table(table.assign(id="same"), enrich=False)
    with pytest.raises(SchemaError, match=r"\['B99'\]"):
        build_from_table(table, bands=["B99"], enrich=False)


def test_arrow_and_parquet_sources(scenes, tmp_path):
    table = with_assets(scenes, BANDS)
    arrow = to_arrow_table(normalise_records(table))
    path = tmp_path / "records.parquet"
    pq.write_table(arrow, path)
    from_file = _records(build_from_table(str(path), enrich=False))
    from_arrow = _records(build_from_table(arrow, enrich=False))
    from_frame = _records(build_from_table(table, enrich=False))
    for other in (from_file, from_arrow):
        assert list(other["id"]) == list(from_frame["id"])
        assert other.geometry.geom_equals_exact(from_frame.geometry, 1e-12).all()
        assert (other["datetime"] == from_frame["datetime"]).all()
