"""The dataset registry and build(id): every built-in descriptor exercised through local stand-ins.

There is no internet here: each built-in descriptor is copied with ``stac_api`` pointed at a local
``rustac serve`` mirror whose items look like the real service's (asset keys, hrefs, alternates), the
assets served by the range server (https-style assets), moto (S3: requester-pays and public buckets)
or a Planetary-Computer SAS stand-in (tokens checked on every GET).
"""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pyarrow as pa
import pytest
from distributed import Client, LocalCluster

from rasteret_dask import read_cog_header
from rasteret_dask.collection import DatasetDescriptor, DatasetRegistry, build
from rasteret_dask.collection.catalog import BUILTIN_DATASETS
from rasteret_dask.collection.parquet import export
from rasteret_dask.errors import CollectionError
from rasteret_dask.tiff.arrow import header_to_dict

pytest_plugins = ["tests.servers.stac"]

BUILTIN_IDS = [
    "earthsearch/cop-dem-glo-30",
    "earthsearch/cop-dem-glo-90",
    "earthsearch/landsat-c2-l2",
    "earthsearch/naip",
    "earthsearch/sentinel-2-l2a",
    "pc/sentinel-2-l2a",
]
IDENTITY = {"etag": None, "last_modified": None}


def _records(collection) -> pd.DataFrame:
    return collection.frame.compute().sort_values("id").reset_index(drop=True)


def _metadata(records: pd.DataFrame, band: str) -> list[dict | None]:
    return pa.array(records[f"{band}_metadata"].array).to_pylist()


def _item(S, scene, collection: str, assets: dict) -> dict:
    item = S.make_item(scene, lambda name: name)
    item["collection"] = collection
    item["assets"] = assets
    return item


@pytest.fixture(scope="module")
def mirror(stac_world, s3_server, sas_server, tmp_path_factory):
    """Local copies of every built-in descriptor and what building each must give."""
    import tests.servers.stac as S

    scenes = stac_world.scenes[:2] + stac_world.scenes[6:8]  # two per UTM zone
    root, http = stac_world.root, stac_world.base_url
    by_collection: dict[str, list[dict]] = {}
    expect: dict[str, SimpleNamespace] = {}

    def upload(bucket: str, key: str, path: Path, public: bool = False) -> str:
        url = s3_server.put(bucket, key, path.read_bytes())
        if public:
            s3_server.client.put_object_acl(Bucket=bucket, Key=key, ACL="public-read")
        return url

    # Earth Search Sentinel-2: https assets named by common names (here on the range server).
    es_s2 = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B03"}
    files = {}
    for sc in scenes:
        assets = {key: {"href": http + sc.files[b], "type": S.COG_TYPE} for key, b in es_s2.items()}
        assets["thumbnail"] = {"href": http + f"{sc.id}.jpg", "type": "image/jpeg"}
        by_collection.setdefault("sentinel-2-l2a", []).append(_item(S, sc, "sentinel-2-l2a", assets))
        files[sc.id] = {
            code: root / sc.files[es_s2[key]]
            for code, key in zip(["B02", "B03", "B04", "B08"], es_s2, strict=True)
        }
    expect["earthsearch/sentinel-2-l2a"] = SimpleNamespace(
        bands=["B02", "B03", "B04", "B08"], files=files, options={}, index={}
    )

    # Landsat C2 L2: landsatlook https hrefs with s3 alternates (requester-pays usgs-landsat bucket);
    # nir08 has no alternate, so the descriptor's href rewrite must map it.
    files, hrefs = {}, {}
    for sc in scenes:
        assets = {}
        for key, band, source in (
            ("red", "SR_B4", "B04"),
            ("nir08", "SR_B5", "B03"),
            ("qa_pixel", "QA", "B02"),
        ):
            path = f"collection02/level-2/{sc.id}/{sc.id}_{band}.TIF"
            upload("usgs-landsat", path, root / sc.files[source])
            assets[key] = {"href": f"https://landsatlook.usgs.gov/data/{path}", "type": S.COG_TYPE}
            if key != "nir08":
                assets[key]["alternate"] = {"s3": {"href": f"s3://usgs-landsat/{path}"}}
        by_collection.setdefault("landsat-c2-l2", []).append(_item(S, sc, "landsat-c2-l2", assets))
        files[sc.id] = {
            "B4": root / sc.files["B04"],
            "B5": root / sc.files["B03"],
            "qa_pixel": root / sc.files["B02"],
        }
        hrefs[sc.id] = {
            code: f"s3://usgs-landsat/collection02/level-2/{sc.id}/{sc.id}_{band}.TIF"
            for code, band in (("B4", "SR_B4"), ("B5", "SR_B5"), ("qa_pixel", "QA"))
        }
    expect["earthsearch/landsat-c2-l2"] = SimpleNamespace(
        bands=["B4", "B5", "qa_pixel"], files=files, hrefs=hrefs, options=s3_server.storage_options, index={}
    )

    # Copernicus DEM 30/90: one "data" asset per tile in public buckets (anonymous reads).
    for resolution in (30, 90):
        files, hrefs = {}, {}
        collection = f"cop-dem-glo-{resolution}"
        for sc in scenes:
            key = (
                f"Copernicus_DSM_COG_{resolution}_{sc.id}_DEM/Copernicus_DSM_COG_{resolution}_{sc.id}_DEM.tif"
            )
            url = upload(f"copernicus-dem-{resolution}m", key, root / sc.files["B02"], public=True)
            assets = {"data": {"href": url, "type": S.COG_TYPE}}
            by_collection.setdefault(collection, []).append(_item(S, sc, collection, assets))
            files[sc.id], hrefs[sc.id] = {"DEM": root / sc.files["B02"]}, {"DEM": url}
        expect[f"earthsearch/{collection}"] = SimpleNamespace(
            bands=["DEM"],
            files=files,
            hrefs=hrefs,
            options={"endpoint_url": s3_server.endpoint_url},
            index={},
        )

    # NAIP: one 4-band COG per tile in the requester-pays naip-analytic bucket.
    files = {}
    for sc in scenes:
        url = upload("naip-analytic", f"ca/2022/60cm/rgbir_cog/{sc.id}.tif", root / sc.files[S.MULTI_ASSET])
        assets = {"image": {"href": url, "type": S.COG_TYPE}}
        by_collection.setdefault("naip", []).append(_item(S, sc, "naip", assets))
        files[sc.id] = dict.fromkeys(("R", "G", "B", "NIR"), root / sc.files[S.MULTI_ASSET])
    expect["earthsearch/naip"] = SimpleNamespace(
        bands=["R", "G", "B", "NIR"],
        files=files,
        options=s3_server.storage_options,
        index={"R": 0, "G": 1, "B": 2, "NIR": 3},
    )

    # Planetary Computer Sentinel-2: Azure-style blobs behind the SAS stand-in (path-style URLs).
    pc_items, files, hrefs = [], {}, {}
    for sc in scenes:
        assets = {}
        for band in ("B02", "B04", "SCL"):
            source = root / sc.files["B02" if band == "SCL" else band]
            url = sas_server.put("sentinel2l2a01", "sentinel2-l2", f"{sc.id}/{band}.tif", source.read_bytes())
            assets[band] = {"href": url, "type": S.COG_TYPE}
            files.setdefault(sc.id, {})[band] = source
            hrefs.setdefault(sc.id, {})[band] = url
        pc_items.append(_item(S, sc, "sentinel-2-l2a", assets))
    expect["pc/sentinel-2-l2a"] = SimpleNamespace(
        bands=["B02", "B04", "SCL"],
        files=files,
        hrefs=hrefs,
        options={
            "signer_options": {"token_url": sas_server.token_url, "path_style_hosts": [sas_server.host]}
        },
        index={},
    )

    earth_search = S.serve_items(tmp_path_factory.mktemp("earth-search"), by_collection)
    planetary = S.serve_items(tmp_path_factory.mktemp("planetary-computer"), {"sentinel-2-l2a": pc_items})
    copies = {}
    for dataset_id in BUILTIN_IDS:
        api = planetary.url if dataset_id.startswith("pc/") else earth_search.url
        copy = DatasetRegistry.get(dataset_id).replace(id=f"local/{dataset_id}", stac_api=api)
        copies[dataset_id] = DatasetRegistry.register(copy, overwrite=True).id
    yield SimpleNamespace(expect=expect, copies=copies, scenes=scenes, items=by_collection, pc_items=pc_items)
    for copy_id in copies.values():
        DatasetRegistry.unregister(copy_id)
    earth_search.close()
    planetary.close()


def _check(collection, expect, scenes) -> pd.DataFrame:
    """Records hold the scenes, the expected hrefs and band indices, and the files' headers."""
    records = _records(collection)
    assert collection.build_report.failed_total == 0, str(collection.build_report)
    assert collection.bands == expect.bands
    assert list(records["id"]) == sorted(s.id for s in scenes)
    for band in expect.bands:
        for scene_id, asset, meta in zip(
            records["id"], records["assets"], _metadata(records, band), strict=True
        ):
            if hasattr(expect, "hrefs"):
                assert asset[band]["href"] == expect.hrefs[scene_id][band]
            assert asset[band]["band_index"] == expect.index.get(band)
            local = read_cog_header(str(expect.files[scene_id][band])).tiff
            assert {**meta, **IDENTITY} == {**header_to_dict(local, expect.index.get(band)), **IDENTITY}
    return records


@pytest.mark.parametrize("dataset_id", [i for i in BUILTIN_IDS if not i.startswith("pc/")])
def test_builtin_descriptor_through_a_local_mirror(mirror, dataset_id):
    expect = mirror.expect[dataset_id]
    collection = build(mirror.copies[dataset_id], storage_options=expect.options, progress=False)
    _check(collection, expect, mirror.scenes)
    assert collection.name == mirror.copies[dataset_id]
    assert collection.data_source == DatasetRegistry.get(mirror.copies[dataset_id]).stac_api
    assert "secret" not in json.dumps(DatasetRegistry.get(dataset_id).storage_options)


def test_build_filters_and_merges_the_default_query(mirror, stac_world):
    base = DatasetRegistry.get(mirror.copies["earthsearch/sentinel-2-l2a"])
    copy = DatasetRegistry.register(
        base.replace(id="local/query-default", query={"eo:cloud_cover": {"lt": 45}}), overwrite=True
    )
    try:
        got = build(
            copy.id,
            bbox=(-180, -90, 180, 90),
            date_range=("2024-03-01", "2024-03-05"),
            query={"platform": {"eq": "sentinel-2b"}},
            bands=["B04"],
            progress=False,
        )
    finally:
        DatasetRegistry.unregister(copy.id)
    items = mirror.items["sentinel-2-l2a"]
    expected = sorted(
        i["id"]
        for i in items
        if i["properties"]["eo:cloud_cover"] < 45
        and i["properties"]["platform"] == "sentinel-2b"
        and "2024-03-01"
        <= (i["properties"]["datetime"] or i["properties"]["start_datetime"])[:10]
        <= "2024-03-05"
    )
    assert 0 < len(expected) < len(items)
    assert list(_records(got)["id"]) == expected
    assert got.bands == ["B04"]


def test_planetary_computer_signing_on_a_cluster(mirror, sas_server, tmp_path, caplog):
    dataset_id = "pc/sentinel-2-l2a"
    expect = mirror.expect[dataset_id]
    sas_server.reset()
    with caplog.at_level(logging.DEBUG):
        threaded = build(mirror.copies[dataset_id], storage_options=expect.options, progress=False)
    records = _check(threaded, expect, mirror.scenes)
    where = ("sentinel2l2a01", "sentinel2-l2")
    assert sas_server.token_requests[where] <= 1  # one token for all the reads of this process
    tokens, gets = sas_server.token_requests[where], sas_server.gets
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, Client(cluster) as client:
        distributed = build(
            mirror.copies[dataset_id], storage_options=expect.options, npartitions=2, progress=False
        )
        cluster_records = _check(distributed, expect, mirror.scenes)
        worker_logs = json.dumps(client.get_worker_logs(), default=str)
    pd.testing.assert_frame_equal(records.drop(columns="geometry"), cluster_records.drop(columns="geometry"))
    assert sas_server.rejected == 0 and sas_server.gets > gets
    # the worker processes fetched their own tokens (none travelled with the tasks), one per process
    assert 1 <= sas_server.token_requests[where] - tokens <= 2
    # the stored hrefs are unsigned; no token is in the records, the options, the logs or the files
    assert all("sig=" not in a[b]["href"] for a in records["assets"] for b in expect.bands)
    export(threaded, str(tmp_path / "pc"))
    written = b"".join(p.read_bytes() for p in (tmp_path / "pc").rglob("*") if p.is_file())
    kept = pickle.dumps((records, threaded.storage_options, distributed.storage_options))
    assert sas_server.sigs_seen
    for sig in set(sas_server.sigs_seen):
        for text in (sig, sig.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")):
            assert text.encode() not in written
            assert text.encode() not in kept
            assert text not in caplog.text and text not in worker_logs
    # reading a header again later signs afresh in this process
    scene = mirror.scenes[0].id
    header = read_cog_header(expect.hrefs[scene]["B02"], storage_options=threaded.storage_options)
    assert header.read(window=((0, 16), (0, 16))).shape == (1, 16, 16)


def test_registry_lists_gets_and_registers():
    ids = [d.id for d in DatasetRegistry.list()]
    assert set(BUILTIN_IDS) <= set(ids) and ids == sorted(ids)
    assert sorted(d.id for d in BUILTIN_DATASETS) == BUILTIN_IDS
    with pytest.raises(
        CollectionError,
        match=r"unknown dataset 'earthsearch/sentinel2'.*Did you mean earthsearch/sentinel-2-l2a",
    ) as unknown:
        DatasetRegistry.get("earthsearch/sentinel2")
    for dataset_id in BUILTIN_IDS:
        assert dataset_id in str(unknown.value)
    with pytest.raises(CollectionError, match="unknown dataset"):
        build("nope/nothing")
    mine = DatasetDescriptor(
        id="test/mine", title="Mine", stac_api="http://127.0.0.1:1/", band_map={"X": "x"}
    )
    DatasetRegistry.register(mine)
    try:
        with pytest.raises(CollectionError, match="registered already"):
            DatasetRegistry.register(mine)
        assert DatasetRegistry.register(mine.replace(title="Again"), overwrite=True).title == "Again"
        assert DatasetRegistry.get("test/mine").title == "Again"
    finally:
        assert DatasetRegistry.unregister("test/mine").id == "test/mine"
    assert "test/mine" not in DatasetRegistry.ids()
    with pytest.raises(ValueError, match="band_index_map names bands"):
        DatasetDescriptor(id="x", title="x", stac_api="y", band_map={"A": "a"}, band_index_map={"B": 0})
    with pytest.raises(ValueError, match="stac_api"):
        DatasetDescriptor(id="x", title="x")
    for descriptor in DatasetRegistry.list():
        assert pickle.loads(pickle.dumps(descriptor)) == descriptor
    pc = DatasetRegistry.get("pc/sentinel-2-l2a")
    assert pc.read_options({"signer_options": {"token_url": "u"}}) == {
        "signer": "planetary_computer",
        "signer_options": {"token_url": "u"},
    }
    assert DatasetRegistry.get("earthsearch/landsat-c2-l2").read_options()["requester_pays"] is True
    assert DatasetRegistry.get("earthsearch/naip").band_index_map == {"R": 0, "G": 1, "B": 2, "NIR": 3}
