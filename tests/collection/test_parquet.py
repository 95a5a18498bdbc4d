"""export/load: GeoParquet 1.1 in Rasteret's layout, pruning by bbox and date, nothing half-written."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import shapely

from rasteret_dask.collection import build_from_table
from rasteret_dask.collection.parquet import export, load
from rasteret_dask.errors import CollectionError, PlanError
from rasteret_dask.tiff.arrow import RASTERET_FIELDS
from tests.scenes import make_scenes, with_assets

BANDS = ("B02", "B04")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    scenes = make_scenes(tmp_path_factory.mktemp("scenes"), dates=3, bands=BANDS)
    return build_from_table(with_assets(scenes, BANDS), progress=False, npartitions=2, name="test")


def _records(collection) -> pd.DataFrame:
    frame = collection.frame.compute().sort_values("id").reset_index(drop=True)
    return frame.drop(columns=[c for c in ("year", "month") if c in frame.columns])


def test_round_trip_keeps_records_and_headers(built, tmp_path):
    target = tmp_path / "collection"
    export(built, str(target))
    loaded = load(str(target))
    before, after = _records(built), _records(loaded)
    assert list(before.columns) == list(after.columns) or set(before.columns) == set(after.columns)
    assert before.dtypes.to_dict() == after[before.columns].dtypes.to_dict()
    for column in before.columns:
        if column == "geometry":
            assert before.geometry.geom_equals_exact(after.geometry, 0).all()
        else:
            assert before[column].tolist() == after[column].tolist(), column
    assert loaded.name == "test"


def test_files_follow_rasterets_layout(built, tmp_path):
    target = tmp_path / "collection"
    export(built, str(target))
    files = sorted(p.relative_to(target).as_posix() for p in target.rglob("*.parquet"))
    assert files and all(
        f.split("/")[0].startswith("year=") and f.split("/")[1].startswith("month=") for f in files
    )
    assert {f.split("/")[1] for f in files} == {"month=5"}  # not zero-padded
    schema = pq.read_schema(target / files[0])
    meta = schema.metadata
    assert meta[b"rasteret_collection_version"] == b"1"
    assert set(meta) >= {b"name", b"data_source", b"description", b"date_range", b"created", b"geo"}
    geo = json.loads(meta[b"geo"])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    column = geo["columns"]["geometry"]
    assert column["encoding"] == "WKB" and "crs" not in column
    assert column["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]
    table = pq.read_table(target / files[0])
    assert "year" not in table.column_names and "month" not in table.column_names
    assert str(table.schema.field("datetime").type) == "timestamp[us]"
    metadata_type = table.schema.field("B02_metadata").type
    assert [f.name for f in metadata_type][: len(RASTERET_FIELDS)] == [f.name for f in RASTERET_FIELDS]
    assert [f.type for f in metadata_type][: len(RASTERET_FIELDS)] == [f.type for f in RASTERET_FIELDS]
    file_box = shapely.box(*column["bbox"])
    footprints = shapely.from_wkb(table["geometry"].to_pylist())
    assert shapely.covers(file_box, footprints).all()


def _many_records(n: int = 2000) -> gpd.GeoDataFrame:
    rng = np.random.default_rng(1)
    lon, lat = rng.uniform(-170, 170, n), rng.uniform(-60, 60, n)
    days = rng.integers(0, 365, n)
    return gpd.GeoDataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "datetime": pd.Timestamp("2023-01-01", tz="UTC") + pd.to_timedelta(days, unit="D"),
            "eo:cloud_cover": rng.uniform(0, 100, n),
            "assets": [{"B1": {"href": f"/nowhere/{i}.tif", "band_index": None}} for i in range(n)],
        },
        geometry=shapely.box(lon, lat, lon + 0.5, lat + 0.5),
        crs="OGC:CRS84",
    )


def test_load_prunes_files_and_row_groups(tmp_path):
    records = _many_records()
    collection = build_from_table(records, enrich=False, npartitions=1)
    target = tmp_path / "many"
    export(collection, str(target), row_group_size=20)
    everything = load(str(target))
    assert (
        everything.load_stats.files == 12
        and everything.load_stats.row_groups_kept == everything.load_stats.row_groups
    )
    bbox = (10.0, 10.0, 20.0, 20.0)
    some = load(str(target), bbox=bbox, date_range=("2023-03-01", "2023-04-30"))
    stats = some.load_stats
    assert stats.files_kept == 2  # March and April only
    assert stats.row_groups_kept < stats.row_groups / 10
    got = sorted(_records(some)["id"])
    inside = records[
        records.geometry.intersects(shapely.box(*bbox))
        & (records["datetime"] >= pd.Timestamp("2023-03-01", tz="UTC"))
        & (records["datetime"] < pd.Timestamp("2023-05-01", tz="UTC"))
    ]
    assert got == sorted(inside["id"]) and got
    cloudy = load(str(target), filters=pc.field("eo:cloud_cover") < 10)
    assert sorted(_records(cloudy)["id"]) == sorted(records.loc[records["eo:cloud_cover"] < 10, "id"])


def test_subset_semantics(tmp_path):
    records = _many_records(400)
    collection = build_from_table(records, enrich=False, npartitions=3)
    day = records["datetime"].iloc[0]
    same_day = collection.subset(date_range=(day.strftime("%Y-%m-%d"), day.strftime("%Y-%m-%d")))
    expected = records.loc[records["datetime"].dt.floor("D") == day.floor("D"), "id"]
    assert sorted(_records(same_day)["id"]) == sorted(expected)
    triangle = shapely.Polygon([(0, 0), (60, 0), (0, 60)])
    by_shape = _records(collection.subset(geometries=[triangle]))
    assert sorted(by_shape["id"]) == sorted(records.loc[records.intersects(triangle), "id"])
    by_query = _records(collection.where("`eo:cloud_cover` > 90"))
    assert sorted(by_query["id"]) == sorted(records.loc[records["eo:cloud_cover"] > 90, "id"])
    by_expr = _records(collection.where(pc.field("eo:cloud_cover") > 90))
    assert sorted(by_expr["id"]) == sorted(by_query["id"])
    with pytest.raises(PlanError, match="south <= north"):
        collection.subset(bbox=(0, 10, 1, 5))


def test_antimeridian_and_utm_zones(tmp_path):
    footprints = [
        shapely.MultiPolygon([shapely.box(179.5, 0, 180, 1), shapely.box(-180, 0, -179.5, 1)]),
        shapely.box(170, 0, 171, 1),
        shapely.box(-171, 0, -170, 1),
        shapely.box(0, 0, 1, 1),
    ]
    records = gpd.GeoDataFrame(
        {
            "id": ["cross", "west-of-line", "east-of-line", "greenwich"],
            "datetime": pd.Timestamp("2024-01-01", tz="UTC"),
            "proj:epsg": [32660, 32659, 32602, 32631],
            "assets": [{"B1": {"href": "/nowhere.tif", "band_index": None}}] * 4,
        },
        geometry=footprints,
        crs="OGC:CRS84",
    )
    collection = build_from_table(records, enrich=False)
    across = collection.subset(bbox=(179.0, -1.0, -179.0, 2.0))  # west > east: crosses the antimeridian
    assert sorted(_records(across)["id"]) == ["cross"]
    target = tmp_path / "antimeridian"
    export(collection, str(target))
    loaded = load(str(target), bbox=(179.0, -1.0, -179.0, 2.0))
    assert sorted(_records(loaded)["id"]) == ["cross"]
    assert load(str(target)).crs == {"EPSG:32660", "EPSG:32659", "EPSG:32602", "EPSG:32631"}


def test_export_is_atomic_and_refuses_to_overwrite(built, tmp_path, monkeypatch):
    target = tmp_path / "out"
    export(built, str(target))
    with pytest.raises(CollectionError, match="overwrite=True"):
        export(built, str(target))
    before = sorted(p.name for p in tmp_path.iterdir())

    import rasteret_dask.collection.parquet as parquet

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(parquet.pq, "write_table", fail)
    with pytest.raises(OSError, match="disk full"):
        export(built, str(tmp_path / "never"))
    with pytest.raises(OSError, match="disk full"):
        export(built, str(target), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert len(_records(load(str(target)))) == len(_records(built))


def test_export_and_load_on_s3(built, s3_server):
    s3_server.create_bucket("collections")
    options = s3_server.storage_options
    export(built, "s3://collections/test", storage_options=options)
    loaded = load("s3://collections/test", storage_options=options)
    assert _records(loaded)["id"].tolist() == _records(built)["id"].tolist()
    assert _records(loaded)["B02_metadata"].tolist() == _records(built)["B02_metadata"].tolist()


def test_load_of_nothing_is_a_clear_error(tmp_path):
    with pytest.raises(CollectionError, match="no collection"):
        load(str(tmp_path / "absent"))


def test_load_one_file_over_http(built, tmp_path, range_server):
    target = tmp_path / "collection"
    export(built, str(target))
    (part,) = [p for p in target.rglob("*.parquet")][:1]
    url = range_server.put("records.parquet", part.read_bytes())
    loaded = load(url)
    expected = pq.read_table(part).column("id").to_pylist()
    assert sorted(_records(loaded)["id"]) == sorted(expected)
    assert _records(loaded)["B02_metadata"].notna().all()
    nothing = load(url, bbox=(-10.0, -10.0, -9.0, -9.0))
    assert nothing.load_stats.row_groups_kept == 0 and len(nothing) == 0
