"""build_from_stac: a real STAC API (rustac), static catalogs, ItemCollections, stac-geoparquet.

Oracles: the facts each generated item was made from (ids, times, footprints, CRS, properties), shapely
for spatial filters, rasterio and ``read_cog_header`` of the same files for headers, rustac's own log
for the requests it served.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
from distributed import Client, LocalCluster

from rasteret_dask import read_cog_header
from rasteret_dask.collection import build_from_stac
from rasteret_dask.collection.parquet import export, load
from rasteret_dask.errors import CollectionError, PlanError, SchemaError
from rasteret_dask.io import IOConfig
from rasteret_dask.tiff.arrow import header_to_dict

pytest_plugins = ["tests.servers.stac"]


@pytest.fixture(scope="module")
def S():
    import tests.servers.stac as helpers

    return helpers


@pytest.fixture(scope="module")
def ALL_BANDS(S):
    return [*S.SINGLE_BANDS, S.MULTI_ASSET]


def _records(collection) -> pd.DataFrame:
    return collection.frame.compute().sort_values("id").reset_index(drop=True)


def _metadata(records: pd.DataFrame, band: str) -> dict[str, dict | None]:
    """``{record id: {band}_metadata as plain Python}`` (lists as lists, not numpy arrays)."""
    values = pa.array(records[f"{band}_metadata"].array).to_pylist()
    return dict(zip(records["id"], values, strict=True))


def _when(scene) -> pd.Timestamp:
    return pd.Timestamp(scene.datetime or scene.start)


@pytest.fixture(scope="module")
def sources(stac_world, range_server_process, tmp_path_factory, S) -> dict:
    """The same items as a static catalog (disk and HTTP), an ItemCollection file and stac-geoparquet."""
    catalog = S.write_static_catalog(
        stac_world.root / "catalog", stac_world.local_items, asset_root=stac_world.root
    )
    tmp = tmp_path_factory.mktemp("stac-sources")
    item_collection = tmp / "items.json"
    item_collection.write_text(json.dumps({"type": "FeatureCollection", "features": stac_world.items}))
    by_rustac = tmp / "rustac.parquet"
    subprocess.run([S.rustac_executable(), "translate", str(item_collection), str(by_rustac)], check=True)
    from stac_geoparquet.arrow import parse_stac_items_to_arrow, to_parquet

    by_library = tmp / "library.parquet"
    to_parquet(parse_stac_items_to_arrow(stac_world.items), by_library)
    return {
        "catalog-disk": str(catalog),
        "catalog-http": range_server_process.url_for("stac/catalog/catalog.json"),
        "item-collection": str(item_collection),
        "geoparquet-rustac": str(by_rustac),
        "geoparquet-library": str(by_library),
    }


@pytest.fixture(scope="module")
def api_collection(rustac_server, S):
    return build_from_stac(rustac_server.url, collections=[S.COLLECTION], progress=False)


def test_api_records_equal_the_items(stac_world, api_collection, S, ALL_BANDS):
    records = _records(api_collection)
    items = {item["id"]: item for item in stac_world.items}
    assert list(records["id"]) == sorted(items)
    assert api_collection.bands == ALL_BANDS  # every GeoTIFF asset, not the PNG thumbnail
    assert api_collection.build_report.failed_total == 0
    assert api_collection.stac_stats.items_kept == len(items)
    metadata = {band: _metadata(records, band) for band in ALL_BANDS}
    for _, row in records.iterrows():
        scene, item = stac_world.scene(row["id"]), items[row["id"]]
        properties = item["properties"]
        assert row["datetime"] == _when(scene)
        assert row["geometry"].equals_exact(shapely.geometry.shape(item["geometry"]), 0)
        assert row["bbox"] == dict(zip(("xmin", "ymin", "xmax", "ymax"), row["geometry"].bounds, strict=True))
        assert row["collection"] == S.COLLECTION
        assert row["proj:epsg"] == scene.epsg, scene.proj_style  # from every projection-field style
        assert row["crs"] == f"EPSG:{scene.epsg}"
        assert row["eo:cloud_cover"] == float(properties["eo:cloud_cover"])
        assert row["platform"] == properties["platform"]
        assert row["view:sun_elevation"] == properties["view:sun_elevation"]
        assert list(row["tags"]) == properties["tags"]
        assert row["processing"] == properties["processing"]
        assert row["proj:shape"].tolist() == properties["proj:shape"]
        assert row["created"] == pd.Timestamp(properties["created"])
        if scene.datetime is None:
            assert row["start_datetime"] == pd.Timestamp(properties["start_datetime"])
            assert row["end_datetime"] == pd.Timestamp(properties["end_datetime"])
        else:
            assert pd.isna(row["start_datetime"])
        for band in ALL_BANDS:
            href = item["assets"][band]["href"]
            assert row["assets"][band] == {"href": href, "band_index": None}
            meta = metadata[band][row["id"]]
            assert meta == header_to_dict(read_cog_header(href).tiff)
            with rasterio.open(href) as ds:
                assert (meta["image_width"], meta["image_height"]) == (ds.width, ds.height)
                assert meta["samples_per_pixel"] == ds.count == (4 if band == S.MULTI_ASSET else 1)
                assert meta["transform"] == [ds.transform.a, ds.transform.c, ds.transform.e, ds.transform.f]
                assert ds.crs.to_epsg() == scene.epsg


def test_pagination_is_followed_and_counted_at_the_server(stac_world, rustac_server):
    n = len(stac_world.items)
    for limit, pages in ((None, 2), (5, 3), (1, n)):  # rustac's default page holds 10 items
        before = rustac_server.requests("POST", "/search")
        built = build_from_stac(rustac_server.url, limit=limit, enrich=False)
        assert sorted(_records(built)["id"]) == sorted(i["id"] for i in stac_world.items)
        assert rustac_server.requests("POST", "/search") - before == pages
        assert built.stac_stats.pages == pages
    before = rustac_server.requests("POST", "/search")
    few = build_from_stac(rustac_server.url, limit=2, max_items=3, enrich=False)
    assert len(_records(few)) == 3
    assert rustac_server.requests("POST", "/search") - before == 2  # paging stopped once 3 were found


FILTERS = {
    "zone-1-dates": {"bbox": (-179.40, 52.0, -179.0, 52.6), "date_range": ("2024-03-04", "2024-03-10")},
    "antimeridian": {"bbox": (179.5, 52.0, -179.3, 52.5)},
    "query": {"query": {"eo:cloud_cover": {"lt": 30}, "platform": {"eq": "sentinel-2b"}}},
    "times": {"date_range": ("2024-03-07T10:30:30", "2024-03-16T10:31:00")},
}


def _expected_ids(stac_world, bbox=None, date_range=None, query=None) -> list[str]:
    """The oracle: scene facts filtered with shapely and pandas, independently of the library."""
    keep = []
    for scene, item in zip(stac_world.scenes, stac_world.items, strict=True):
        if bbox is not None:
            west, south, east, north = bbox
            boxes = (
                [shapely.box(west, south, 180, north), shapely.box(-180, south, east, north)]
                if west > east
                else [shapely.box(*bbox)]
            )
            if not any(b.intersects(scene.footprint) for b in boxes):
                continue
        if date_range is not None:
            start, end = pd.Timestamp(date_range[0], tz="UTC"), pd.Timestamp(date_range[1], tz="UTC")
            end = (
                end + pd.Timedelta(days=1) if len(date_range[1]) == 10 else end + pd.Timedelta(microseconds=1)
            )
            if not start <= _when(scene) < end:
                continue
        if query is not None:
            props = item["properties"]
            if not (props["eo:cloud_cover"] < 30 and props["platform"] == "sentinel-2b"):
                continue
        keep.append(scene.id)
    return sorted(keep)


SOURCES = [
    "api",
    "catalog-disk",
    "catalog-http",
    "item-collection",
    "geoparquet-rustac",
    "geoparquet-library",
]


@pytest.mark.parametrize("filters", sorted(FILTERS))
@pytest.mark.parametrize("source", SOURCES)
def test_filters_are_exact_on_every_source(stac_world, rustac_server, sources, source, filters, S):
    where = rustac_server.url if source == "api" else sources[source]
    expected = _expected_ids(stac_world, **FILTERS[filters])
    assert 0 < len(expected) < len(stac_world.items), "a filter case that cannot fail"
    built = build_from_stac(where, collections=S.COLLECTION, enrich=False, **FILTERS[filters])
    assert sorted(_records(built)["id"]) == expected
    pushed_down = source == "api" or source.startswith("geoparquet")
    if pushed_down and filters != "query":  # the server / the Parquet scan filtered before we did
        assert built.stac_stats.items_read < len(stac_world.items)


def test_every_source_gives_the_api_records(stac_world, api_collection, sources, ALL_BANDS):
    expected = _records(api_collection)
    for name, source in sources.items():
        got = _records(build_from_stac(source, progress=False))
        if name == "catalog-disk":  # relative asset hrefs resolved to the local files
            local = {i["id"]: i for i in stac_world.local_items}
            identity = {"etag": None, "last_modified": None}
            for band in ALL_BANDS:
                assert [a[band]["href"] for a in got["assets"]] == [
                    local[i]["assets"][band]["href"] for i in got["id"]
                ]
                ours, theirs = _metadata(got, band), _metadata(expected, band)
                assert {k: {**v, **identity} for k, v in ours.items()} == {
                    k: {**v, **identity} for k, v in theirs.items()
                }
            continue
        assert list(got.columns) == list(expected.columns) or sorted(got.columns) == sorted(expected.columns)
        pd.testing.assert_frame_equal(
            got[expected.columns].drop(columns="geometry"), expected.drop(columns="geometry"), obj=name
        )
        assert got.geometry.geom_equals_exact(expected.geometry, 0).all(), name


def test_static_catalog_on_an_object_store(stac_world, s3_server, sources):
    bucket = "stac-static"
    for path in (stac_world.root / "catalog").rglob("*.json"):
        s3_server.put(bucket, f"cat/{path.relative_to(stac_world.root / 'catalog')}", path.read_bytes())
    for path in (stac_world.root / "scenes").glob("S0_0[0-2]_*.tif"):
        s3_server.put(bucket, f"scenes/{path.name}", path.read_bytes())
    built = build_from_stac(
        f"s3://{bucket}/cat/catalog.json",
        bbox=(179.0, 52.0, 179.5, 52.5),
        date_range=("2024-03-01", "2024-03-07"),
        bands=["B04"],
        storage_options=s3_server.storage_options,
        progress=False,
    )
    records = _records(built)
    assert list(records["id"]) == ["S0_00", "S0_01", "S0_02"]
    assert [a["B04"]["href"] for a in records["assets"]] == [
        f"s3://{bucket}/scenes/{i}_B04.tif" for i in records["id"]
    ]
    assert built.build_report.failed_total == 0
    for scene_id, meta in _metadata(records, "B04").items():
        local = read_cog_header(str(stac_world.root / "scenes" / f"{scene_id}_B04.tif")).tiff
        assert {**meta, "etag": None, "last_modified": None} == {
            **header_to_dict(local),
            "etag": None,
            "last_modified": None,
        }


def test_pystac_objects_are_sources(stac_world, rustac_server, sources):
    import pystac
    from pystac_client import Client

    ids = sorted(i["id"] for i in stac_world.items)
    catalog = pystac.Catalog.from_file(sources["catalog-disk"])
    from_catalog = _records(build_from_stac(catalog, enrich=False))
    assert list(from_catalog["id"]) == ids
    local = {i["id"]: i["assets"]["B04"]["href"] for i in stac_world.local_items}
    assert [a["B04"]["href"] for a in from_catalog["assets"]] == [local[i] for i in ids]  # resolved
    item_collection = pystac.ItemCollection.from_file(sources["item-collection"])
    assert list(_records(build_from_stac(item_collection, enrich=False))["id"]) == ids
    search = Client.open(rustac_server.url).search(collections=[stac_world.items[0]["collection"]], limit=4)
    assert list(_records(build_from_stac(search, enrich=False))["id"]) == ids
    dicts = _records(build_from_stac(stac_world.items[:2], enrich=False))
    assert list(dicts["id"]) == sorted(i["id"] for i in stac_world.items[:2])


def test_multi_band_assets_get_their_band_index(stac_world, rustac_server, S):
    built = build_from_stac(
        rustac_server.url,
        band_map={"RED": S.MULTI_ASSET, "nir": S.MULTI_ASSET, "B04": "B04"},
        max_items=3,
        progress=False,
    )
    assert built.bands == ["RED", "nir", "B04"]
    records = _records(built)
    nir = _metadata(records, "nir")
    for _, row in records.iterrows():
        # band names matched (case-insensitively) against the asset's eo:bands
        assert row["assets"]["RED"]["band_index"] == S.MULTI_NAMES.index("red")
        assert row["assets"]["nir"]["band_index"] == S.MULTI_NAMES.index("nir")
        assert row["assets"]["B04"]["band_index"] is None
        header = read_cog_header(row["assets"]["nir"]["href"]).tiff
        assert nir[row["id"]] == header_to_dict(header, 3)
    explicit = build_from_stac(
        rustac_server.url,
        band_map={"A": S.MULTI_ASSET, "B": S.MULTI_ASSET},
        band_index_map={"A": 2, "B": 1},
        max_items=2,
        enrich=False,
    )
    assert [(a["A"]["band_index"], a["B"]["band_index"]) for a in _records(explicit)["assets"]] == [
        (2, 1)
    ] * 2
    with pytest.raises(SchemaError, match="band_index_map"):
        build_from_stac(rustac_server.url, band_map={"A": S.MULTI_ASSET, "B": S.MULTI_ASSET}, enrich=False)
    with pytest.raises(SchemaError, match="not in band_map"):
        build_from_stac(rustac_server.url, band_map={"A": "B02"}, bands=["Z"], enrich=False)
    with pytest.raises(SchemaError, match="no item has"):
        build_from_stac(rustac_server.url, bands=["nope"], enrich=False)
    whole = _records(build_from_stac(rustac_server.url, bands=[S.MULTI_ASSET], max_items=1, progress=False))
    assert whole["assets"][0][S.MULTI_ASSET]["band_index"] is None  # the whole 4-sample asset
    assert whole[f"{S.MULTI_ASSET}_metadata"][0]["samples_per_pixel"] == 4


def test_projection_fields_of_both_versions_and_of_assets(stac_world):
    base = stac_world.items[0]
    custom = "+proj=lcc +lat_1=50 +lat_2=55 +lat_0=52 +lon_0=179 +ellps=GRS80 +units=m +no_defs"
    from pyproj import CRS

    wkt_custom = CRS.from_proj4(custom).to_wkt()
    cases = {
        "epsg-null-wkt": ({"proj:epsg": None, "proj:wkt2": wkt_custom}, None, wkt_custom),
        "code-other-authority": ({"proj:code": "IAU_2015:49900"}, None, "IAU_2015:49900"),
        "projjson-string": ({"proj:projjson": CRS.from_epsg(32601).to_json()}, 32601, "EPSG:32601"),
        "on-assets": ({}, 32660, "EPSG:32660"),
    }
    items = []
    for name, (fields, _, _) in cases.items():
        item = json.loads(json.dumps(base))
        item["id"] = name
        for key in ("proj:epsg", "proj:code", "proj:wkt2", "proj:projjson"):
            item["properties"].pop(key, None)
        item["properties"].update(fields)
        if name == "on-assets":
            for asset in item["assets"].values():
                asset["proj:code"] = "EPSG:32660"
        items.append(item)
    records = _records(build_from_stac(items, enrich=False)).set_index("id")
    for name, (_, epsg, crs) in cases.items():
        assert (None if pd.isna(records.loc[name, "proj:epsg"]) else records.loc[name, "proj:epsg"]) == epsg
        assert records.loc[name, "crs"] == crs


def test_empty_results_and_bad_input(stac_world, rustac_server, sources):
    with pytest.raises(CollectionError, match=r"no STAC item matched.*has no collection \['nope'\]"):
        build_from_stac(rustac_server.url, collections=["nope"])
    with pytest.raises(CollectionError, match=r"no STAC item matched \(bbox=\(0\.0, 0\.0, 1\.0, 1\.0\)\)"):
        build_from_stac(sources["catalog-disk"], bbox=(0, 0, 1, 1))
    with pytest.raises(CollectionError, match="no STAC item matched"):
        build_from_stac(sources["geoparquet-rustac"], date_range=("2020-01-01", "2020-02-01"))
    with pytest.raises(PlanError, match="south <= north"):
        build_from_stac(rustac_server.url, bbox=(0, 10, 1, 5))
    with pytest.raises(PlanError, match="unknown query operator"):
        build_from_stac(rustac_server.url, query={"eo:cloud_cover": {"less": 3}})
    with pytest.raises(CollectionError, match="unknown signer"):
        build_from_stac(rustac_server.url, storage_options={"signer": "nope"})
    with pytest.raises(CollectionError, match="cannot read STAC document"):
        build_from_stac(stac_world.base_url + "missing/catalog.json")
    two = [stac_world.items[0], {**stac_world.items[0], "collection": "other"}]
    with pytest.raises(SchemaError, match="several collections"):
        build_from_stac(two, enrich=False)


def test_hrefs_to_nowhere_are_per_band_errors(stac_world, range_server):
    items = json.loads(json.dumps(stac_world.items[:4]))
    items[0]["assets"]["B03"]["href"] = stac_world.base_url + "scenes/missing.tif"
    items[1]["assets"]["B03"]["href"] = "http://127.0.0.1:9/refused.tif"
    del items[2]["assets"]["B02"]
    fast = IOConfig(max_attempts=2, base_delay=0.001, max_delay=0.01, total_timeout=5, request_timeout=2)
    built = build_from_stac(items, bands=["B02", "B03"], config=fast, progress=False)
    report = built.build_report
    assert (report.records, report.failed) == (4, {"B02": 1, "B03": 2})
    records = _records(built).set_index("id")
    assert (
        "404" in records.loc[items[0]["id"], "B03_error"]
        or "not found" in records.loc[items[0]["id"], "B03_error"]
    )
    assert records.loc[items[1]["id"], "B03_error"].startswith("RangeRequestError")
    assert "no href" in records.loc[items[2]["id"], "B02_error"]
    assert pd.isna(records.loc[items[0]["id"], "B03_metadata"])
    assert records.loc[items[3]["id"], ["B02_error", "B03_error"]].isna().all()


def test_threaded_and_distributed_builds_are_identical(rustac_server, api_collection):
    threaded = _records(api_collection)
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, Client(cluster):
        distributed = _records(build_from_stac(rustac_server.url, npartitions=3, progress=False))
    pd.testing.assert_frame_equal(threaded.drop(columns="geometry"), distributed.drop(columns="geometry"))
    assert threaded.geometry.geom_equals_exact(distributed.geometry, 0).all()


def test_export_and_load_round_trip(api_collection, tmp_path, ALL_BANDS):
    export(api_collection, str(tmp_path / "c"))
    loaded = _records(load(str(tmp_path / "c")))
    before = _records(api_collection)
    assert list(loaded["id"]) == list(before["id"])
    for column in ("eo:cloud_cover", "platform", "proj:epsg", "crs", "collection"):
        assert loaded[column].tolist() == before[column].tolist(), column
    for band in ALL_BANDS:
        assert _metadata(loaded, band) == _metadata(before, band)
    table = pq.read_table(next((tmp_path / "c").rglob("*.parquet")))
    assert np.isin(["proj:epsg", "crs", "assets", "bbox", "geometry"], table.column_names).all()
