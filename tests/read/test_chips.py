"""AOI chips (Collection.get_gdf / get_numpy) against rasterio.mask.mask, bit for bit.

For every (record, AOI) pair the oracle is ``rasterio.mask.mask(ds, [geom], crop=True, filled=True,
all_touched=...)`` on the same file, with the AOI moved to the raster's CRS by
``rasterio.warp.transform_geom``: our data array and chip transform must equal rasterio's, and pairs where
rasterio raises "Input shapes do not overlap raster" must be absent (see chip_data.Expected for pairs whose
AOI misses the record's footprint). AOIs are drawn by hypothesis (seeded; more examples under ``slow``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
import tifffile
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

import rasteret_dask.cog
from rasteret_dask.errors import PlanError
from tests.read.chip_data import (
    T0,
    UTM32,
    UTM33,
    WGS84,
    Raster,
    Record,
    aoi_lists,
    assert_chips_match,
    band_set,
    build,
    dtype_set,
    expected_chips,
    geometry_set,
    lonlat,
    map_geometry,
    oracle_chip,
    place,
    same_bits,
    sample_data,
    to_crs,
    write_raster,
)

SEED = 20240501
SLOW = 50  # from this many examples on, failures are shrunk
ALL_PHASES = list(Phase)
# rasterio itself still multiplies Affine by tuples.
pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul instead of `\\*`:PendingDeprecationWarning")


def examples(quick: int, slow: int):
    """Parametrize ``examples``: ``quick`` unmarked, ``slow`` under the slow marker."""
    return pytest.mark.parametrize("examples", [quick, pytest.param(slow, marks=pytest.mark.slow)])


def run_examples(examples: int, strategy, check) -> None:
    """Run ``check(*drawn)`` on ``examples`` draws of ``strategy``, seeded, without a deadline."""

    @seed(SEED)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        # Shrinking a failure takes minutes: the quick run reports the example as drawn.
        phases=ALL_PHASES if examples >= SLOW else [p for p in ALL_PHASES if p != Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @given(strategy)
    def property_holds(drawn):
        check(*drawn)

    property_holds()


def check_against_rasterio(collection, records, bands, aois, crs, all_touched) -> None:
    """get_gdf equals rasterio's chips for every pair (AOIs in EPSG:4326 go without geometry_crs)."""
    kwargs = {} if crs == WGS84 else {"geometry_crs": crs}
    gdf = collection.get_gdf(aois, bands=bands, all_touched=all_touched, **kwargs).compute()
    assert_chips_match(gdf, expected_chips(records, aois, crs, bands, all_touched=all_touched))


def rows_by_key(gdf) -> dict:
    return {(int(r["aoi_index"]), r["record_id"], r["band"]): r for _, r in gdf.iterrows()}


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def geometry_records(tmp_path_factory) -> list[Record]:
    return geometry_set(tmp_path_factory.mktemp("chips-geometry"))


@pytest.fixture(scope="module")
def geometry_collection(geometry_records):
    return build(geometry_records)


@pytest.fixture(scope="module")
def dtype_records(tmp_path_factory) -> list[Record]:
    return dtype_set(tmp_path_factory.mktemp("chips-dtypes"))


@pytest.fixture(scope="module")
def band_records(tmp_path_factory) -> list[Record]:
    return band_set(tmp_path_factory.mktemp("chips-bands"))


def anchors(records: list[Record]):
    return [raster for rec in records for raster, _ in rec.assets.values()]


# ------------------------------------------------------------------------------ pixels against rasterio


@examples(10, 200)
@pytest.mark.parametrize("crs", [WGS84, UTM32])
def test_aois_match_rasterio(geometry_records, geometry_collection, crs, examples):
    """Polygons, rotated boxes, concave polygons with holes, multipolygons, sub-pixel and grid-aligned AOIs,
    hanging over raster edges, in EPSG:4326 or zone 32's CRS, on zone-32 and zone-33, north-up and south-up,
    masked and unmasked records; all_touched both ways."""
    strategy = st.tuples(aoi_lists(anchors(geometry_records), crs), st.booleans())
    run_examples(
        examples,
        strategy,
        lambda aois, touched: check_against_rasterio(
            geometry_collection, geometry_records, ["b"], aois, crs, touched
        ),
    )


@examples(5, 60)
def test_every_dtype_and_nodata_matches_rasterio(dtype_records, examples):
    """uint8..int64 and float32/64 with nodata unset, integer, float or NaN, and internal masks."""
    collection = build(dtype_records)
    strategy = st.tuples(aoi_lists(anchors(dtype_records)[:1], WGS84, max_size=2), st.booleans())
    run_examples(
        examples,
        strategy,
        lambda aois, touched: check_against_rasterio(collection, dtype_records, ["b"], aois, WGS84, touched),
    )


def test_dtype_matrix_fixed_aoi(dtype_records):
    """Every file of the matrix once, with an AOI that holds nodata, masked and valid pixels and edges."""
    raster = dtype_records[0].assets["b"][0]
    aois = [
        map_geometry(shapely.Polygon([(3.3, 2.2), (40.6, 7.9), (30.1, 36.4), (7.7, 31.5)]), raster, UTM32),
        map_geometry(shapely.box(41.4, 30.6, 55.2, 45.8), raster, UTM32),  # over the bottom-right corner
    ]
    collection = build(dtype_records)
    for touched in (False, True):
        check_against_rasterio(collection, dtype_records, ["b"], aois, UTM32, touched)
    gdf = collection.get_gdf(aois[:1], bands=["b"], geometry_crs=UTM32).compute()
    dtypes = {r["record_id"]: r["data"].dtype for _, r in gdf.iterrows()}
    for rec in dtype_records:
        assert dtypes[rec.id] == np.dtype(rec.id.split("_")[1])  # native dtype kept


def test_internal_mask_reads_as_nodata_or_zero(dtype_records):
    """Masked pixels are nodata (0 without one) even where their stored value is ordinary data."""
    masked = [rec for rec in dtype_records if rec.id.endswith("_mask")]
    raster = masked[0].assets["b"][0]
    aoi = map_geometry(shapely.box(-1.5, -1.5, 49.5, 41.5), raster, UTM32)  # the whole raster
    gdf = build(masked).get_gdf([aoi], bands=["b"], geometry_crs=UTM32).compute()
    assert_chips_match(gdf, expected_chips(masked, [aoi], UTM32, ["b"], all_touched=False))
    for rec in masked:
        with rasterio.open(rec.assets["b"][0].path) as ds:
            assert [f.name for f in ds.mask_flag_enums[0]] == ["per_dataset"]
            stored, valid, nodata = ds.read(1), ds.read_masks(1) > 0, ds.nodata
        chip = rows_by_key(gdf)[(0, rec.id, "b")]["data"]
        assert chip.shape == stored.shape and (~valid).any() and valid.any()
        fill = np.full((~valid).sum(), 0 if nodata is None else nodata, dtype=chip.dtype)
        assert same_bits(chip[~valid], fill)
        assert same_bits(chip[valid], stored[valid])
        if nodata is not None and not np.isnan(nodata):
            assert (stored[~valid] != nodata).any()  # the mask, not the nodata value, made them fill


def test_float_nodata_compares_as_gdal(tmp_path):
    """GDAL's nodata mask treats floats within two float32 epsilons (relative) of nodata as nodata."""
    records = []
    for dtype in ("float32", "float64"):
        data = np.full((1, 32, 32), 5.0, dtype=dtype)
        nodata = np.array(-9999.0, dtype)
        near = [np.nextafter(nodata, np.array(0, dtype)), nodata + np.array(0.004, dtype)]
        far = nodata + np.array(0.01, dtype)
        data[0, 10, 10:13] = [*near, far]
        raster = write_raster(
            tmp_path / f"{dtype}.tif", data, crs=UTM32, transform=place(UTM32, 10.0), nodata=-9999.0
        )
        records.append(Record(dtype, T0 + pd.Timedelta(hours=len(records)), {"b": (raster, None)}))
    aoi = map_geometry(shapely.box(2.3, 2.3, 20.3, 20.3), records[0].assets["b"][0], UTM32)
    check_against_rasterio(build(records), records, ["b"], [aoi], UTM32, False)


@examples(8, 100)
def test_band_index_chunky_and_planar_files(band_records, examples):
    """Bands r, g, b of a pixel-interleaved COG and of a planar-separate GTiff, mapped by band_index."""
    collection = build(band_records)
    strategy = st.tuples(aoi_lists(anchors(band_records)[:1], WGS84, max_size=2), st.booleans())
    run_examples(
        examples,
        strategy,
        lambda aois, touched: check_against_rasterio(
            collection, band_records, ["r", "g", "b"], aois, WGS84, touched
        ),
    )


def test_aoi_in_the_raster_crs_on_pixel_edges(tmp_path):
    """An AOI given in the raster's own CRS along pixel edges is used as given (no lon/lat round trip)."""
    rng = np.random.default_rng(5)
    raster = write_raster(
        tmp_path / "a.tif",
        sample_data(rng, "uint16", (1, 64, 64), 0),
        crs=UTM32,
        transform=place(UTM32, 10.0),
        nodata=0,
        driver="COG",
    )
    records = [Record("a", T0, {"b": (raster, None)})]
    aois = [map_geometry(shapely.box(c, 5, c + 7.5, 12.5), raster, UTM32) for c in range(0, 40, 3)]
    aois.append(map_geometry(shapely.box(0, 0, 0.5, 0.5), raster, UTM32))  # a pixel centre on its corner
    check_against_rasterio(build(records), records, ["b"], aois, UTM32, False)


# ------------------------------------------------------------------------------------ get_numpy order


@pytest.fixture(scope="module")
def ordered(tmp_path_factory):
    """Records x (T0+2h), b and a (both T0+1h), c (T0, 40 pixels further east), built in scrambled order,
    each with uint16 bands B1 and B2 on one 64 x 48 zone-32 grid; two AOIs of one shape."""
    directory = tmp_path_factory.mktemp("chips-order")
    rng = np.random.default_rng(11)
    specs = [("x", 2, 0.0), ("b", 1, 0.0), ("c", 0, 400.0), ("a", 1, 0.0)]
    records = []
    for name, hours, shift in specs:
        assets = {}
        for band in ("B1", "B2"):
            raster = write_raster(
                directory / f"{name}_{band}.tif",
                sample_data(rng, "uint16", (1, 48, 64), 0),
                crs=UTM32,
                transform=place(UTM32, 10.0, shift=(shift, 0.0)),
                nodata=0,
                driver="COG",
                blocksize=16,
            )
            assets[band] = (raster, None)
        records.append(Record(name, T0 + pd.Timedelta(hours=hours), assets))
    grid = records[0].assets["B1"][0]
    east = map_geometry(shapely.box(45.3, 6.2, 57.9, 19.4), grid, UTM32)  # meets all four
    west = map_geometry(shapely.box(5.3, 6.2, 17.9, 19.4), grid, UTM32)  # misses c
    return records, build(records), [east, west]


def test_get_numpy_order_and_shape(ordered):
    records, collection, aois = ordered
    by_id = {rec.id: rec for rec in records}
    order = [(0, "c"), (0, "a"), (0, "b"), (0, "x"), (1, "a"), (1, "b"), (1, "x")]

    def oracle(k, rec_id, band):
        data, _, _ = oracle_chip(by_id[rec_id].assets[band][0].path, aois[k], UTM32, all_touched=False)
        return data

    one = collection.get_numpy(aois, bands="B1", geometry_crs=UTM32)
    expected = np.stack([oracle(k, r, "B1") for k, r in order])
    assert one.shape == expected.shape and one.ndim == 3
    assert same_bits(one, expected)
    two = collection.get_numpy(aois, bands=["B2", "B1"], geometry_crs=UTM32)
    expected = np.stack([np.stack([oracle(k, r, "B2"), oracle(k, r, "B1")]) for k, r in order])
    assert two.shape == expected.shape and two.ndim == 4
    assert same_bits(two, expected)


def test_get_numpy_ragged_points_to_get_gdf(ordered):
    records, collection, aois = ordered
    grid = records[0].assets["B1"][0]
    bigger = map_geometry(shapely.box(5.3, 6.2, 30.9, 19.4), grid, UTM32)
    with pytest.raises(PlanError, match="get_gdf"):
        collection.get_numpy([aois[0], bigger], bands="B1", geometry_crs=UTM32)


def test_get_numpy_nothing_overlaps(ordered):
    _, collection, _ = ordered
    far = shapely.box(30.0, -10.0, 30.1, -9.9)
    empty = collection.get_gdf(far, bands=["B1"]).compute()
    assert len(empty) == 0
    assert list(empty.columns) == [
        "aoi_index",
        "record_id",
        "datetime",
        "band",
        "data",
        "transform",
        "crs",
        "geometry",
    ]
    with pytest.raises(PlanError, match="no record"):
        collection.get_numpy(far, bands=["B1"])


# --------------------------------------------------------------------------------- frames and mistakes


def test_get_gdf_columns_and_aoi_table(ordered):
    records, collection, aois = ordered
    table = gpd.GeoDataFrame({"name": ["east", "west"], "label": [7, 9]}, geometry=aois, crs=UTM32)
    gdf = collection.get_gdf(table, bands=["B1", "B2"]).compute()
    assert list(gdf.columns[:7]) == ["aoi_index", "record_id", "datetime", "band", "data", "transform", "crs"]
    assert {"name", "label", "geometry"} <= set(gdf.columns)
    assert len(gdf) == 2 * 7
    by_id = {rec.id: rec for rec in records}
    for _, row in gdf.iterrows():
        k = int(row["aoi_index"])
        assert (row["name"], row["label"]) == (table["name"][k], table["label"][k])
        assert row["crs"] == UTM32
        assert row["datetime"] == by_id[row["record_id"]].datetime
        assert row.geometry.equals_exact(lonlat(aois[k], UTM32), tolerance=1e-12)
    assert gdf.crs.equals("OGC:CRS84")


@pytest.mark.parametrize("column", ["band", "data", "record_id", "aoi_index"])
def test_aoi_column_name_collision_raises(ordered, column):
    _, collection, aois = ordered
    table = gpd.GeoDataFrame({column: [1, 2]}, geometry=aois, crs=UTM32)
    with pytest.raises(PlanError, match=column):
        collection.get_gdf(table, bands=["B1"])


@pytest.mark.parametrize("kind", ["point", "line", "multipoint", "collection-with-point"])
@pytest.mark.parametrize("where", ["over-the-records", "elsewhere"])
def test_points_and_lines_point_to_sample_points(ordered, kind, where):
    _, collection, aois = ordered
    x, y = lonlat(aois[0], UTM32).centroid.coords[0] if where == "over-the-records" else (30.0, -10.0)
    geometry = {
        "point": shapely.Point(x, y),
        "line": shapely.LineString([(x, y), (x + 1e-3, y + 1e-3)]),
        "multipoint": shapely.MultiPoint([(x, y), (x + 1e-3, y)]),
        "collection-with-point": shapely.GeometryCollection(
            [shapely.box(x, y, x + 1e-3, y + 1e-3), shapely.Point(x, y)]
        ),
    }[kind]
    with pytest.raises(PlanError, match="sample_points"):
        collection.get_gdf(geometry, bands=["B1"]).compute()
    with pytest.raises(PlanError, match="sample_points"):
        collection.get_numpy([geometry], bands=["B1"])


def test_unknown_band_raises(ordered):
    _, collection, aois = ordered
    with pytest.raises(PlanError, match="B9"):
        collection.get_gdf(aois, bands=["B1", "B9"], geometry_crs=UTM32)
    with pytest.raises(PlanError, match="B9"):
        collection.get_numpy(aois, bands="B9", geometry_crs=UTM32)


def test_records_without_band_headers_are_skipped_or_raise(ordered, tmp_path):
    records, _, aois = ordered
    good = records[3]  # "a"
    # No file there: enrichment fails and B2_metadata is null for "broken".
    missing = Raster(tmp_path / "gone.tif", UTM32, good.assets["B2"][0].transform, 64, 48)
    bad = Record("broken", T0 + pd.Timedelta(hours=5), {"B1": good.assets["B1"], "B2": (missing, None)})
    collection = build([good, bad])
    with pytest.warns(UserWarning, match="broken/B2"):
        gdf = collection.get_gdf(aois, bands=["B1", "B2"], geometry_crs=UTM32).compute()
    got = sorted((r["record_id"], r["band"]) for _, r in gdf.iterrows() if r["aoi_index"] == 0)
    assert got == [("a", "B1"), ("a", "B2"), ("broken", "B1")]
    assert_chips_match(
        gdf[gdf["band"] == "B1"], expected_chips([good, bad], aois, UTM32, ["B1"], all_touched=False)
    )
    with pytest.warns(UserWarning, match="broken/B2"):
        stacked = collection.get_numpy(aois, bands=["B1", "B2"], geometry_crs=UTM32)
    assert stacked.shape[0] == 2  # "a" for each AOI; "broken" lacks B2
    with pytest.raises(PlanError, match="broken/B2"):
        collection.get_gdf(aois, bands=["B1", "B2"], geometry_crs=UTM32, errors="raise").compute()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        collection.get_gdf(aois, bands=["B1"], geometry_crs=UTM32).compute()
    assert not [w for w in caught if "no header" in str(w.message)]  # every B1 header is there


# ------------------------------------------------------------------------------ storage and execution


def fixed_aois(records: list[Record]) -> list[shapely.Geometry]:
    """Three AOIs over the geometry set, in EPSG:4326: inside, over an edge, a multipolygon with a hole."""
    grid = records[0].assets["b"][0]
    ring = shapely.Polygon(
        [(10.2, 8.7), (60.3, 14.1), (48.8, 66.6), (14.4, 50.9)], [[(25.1, 25.3), (40.7, 27.2), (33.3, 40.6)]]
    )
    multi = shapely.MultiPolygon([ring, shapely.box(70.1, 60.2, 80.6, 90.3)])
    shapes = [shapely.box(30.4, 20.6, 52.2, 41.7), shapely.box(-12.3, -9.1, 14.6, 25.2).buffer(3.1), multi]
    return [map_geometry(s, grid, WGS84) for s in shapes]


def sorted_chips(gdf):
    return gdf.sort_values(["aoi_index", "record_id", "band"]).reset_index(drop=True)


def assert_same_chips(a, b) -> None:
    a, b = sorted_chips(a), sorted_chips(b)
    assert a[["aoi_index", "record_id", "band", "crs"]].equals(b[["aoi_index", "record_id", "band", "crs"]])
    for x, y in zip(a.itertuples(), b.itertuples(), strict=True):
        assert tuple(x.transform) == tuple(y.transform)
        assert same_bits(x.data, y.data)


@pytest.fixture(scope="module")
def served(geometry_records, range_server_process, s3_server):
    """The geometry set as local files, over the range HTTP server and on moto S3."""

    def http(path):
        return range_server_process.put(f"chips/{Path(path).name}", Path(path).read_bytes())

    def s3(path):
        return s3_server.put("chips", Path(path).name, Path(path).read_bytes())

    return {
        "local": build(geometry_records),
        "http": build(geometry_records, href=http),
        "s3": build(geometry_records, href=s3, storage_options=s3_server.storage_options),
    }


def test_same_chips_over_http_and_s3(geometry_records, served, range_server):
    aois = fixed_aois(geometry_records)
    local = served["local"].get_gdf(aois, bands=["b"], all_touched=True).compute()
    assert_chips_match(local, expected_chips(geometry_records, aois, WGS84, ["b"], all_touched=True))
    assert len(local) >= 6
    for name in ("http", "s3"):
        remote = served[name].get_gdf(aois, bands=["b"], all_touched=True).compute()
        assert remote["record_id"].isin([r.id for r in geometry_records]).all()
        assert_same_chips(local, remote)
    assert range_server.requests() > 0  # the http collection really read over HTTP


def test_distributed_equals_threaded(geometry_records, served):
    from distributed import Client, LocalCluster

    aois = fixed_aois(geometry_records)
    collection = served["s3"]
    threaded = collection.get_gdf(aois, bands=["b"]).compute(scheduler="threads")
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster),
    ):
        on_cluster = collection.get_gdf(aois, bands=["b"]).compute()
    assert len(threaded) > 0
    assert_same_chips(threaded, on_cluster)


def test_tile_shared_by_two_aois_is_fetched_once(tmp_path, range_server):
    rng = np.random.default_rng(8)
    raster = write_raster(
        tmp_path / "dedup.tif",
        sample_data(rng, "uint16", (1, 96, 96), 0),
        crs=UTM32,
        transform=place(UTM32, 10.0),
        nodata=0,
        driver="COG",
        blocksize=32,
    )
    name = "chips/dedup.tif"
    records = [Record("one", T0, {"b": (raster, None)})]
    collection = build(records, href=lambda path: range_server.put(name, Path(path).read_bytes()))
    with tifffile.TiffFile(raster.path) as tif:
        page = tif.pages[0]
        tile = 1 * (96 // 32) + 1  # tile row 1, column 1: pixels 32..63
        tile_bytes = page.databytecounts[tile]
    inside = [shapely.box(34.2, 35.3, 40.7, 41.1), shapely.box(50.2, 44.1, 60.9, 58.3)]
    aois = [map_geometry(g, raster, UTM32) for g in inside]
    for chosen in (aois[:1], aois):
        range_server.reset_stats()
        gdf = collection.get_gdf(chosen, bands=["b"], geometry_crs=UTM32).compute()
        assert range_server.requests(name) == 1
        assert range_server.stats()["by_path"][name]["bytes"] == tile_bytes
        assert_chips_match(gdf, expected_chips(records, chosen, UTM32, ["b"], all_touched=False))


def test_chunky_bands_share_one_read(band_records, range_server, monkeypatch):
    """Three bands of one pixel-interleaved file cost the GETs and decodes of one."""
    chunky = [band_records[0]]
    name = "chips/chunky.tif"
    collection = build(chunky, href=lambda path: range_server.put(name, Path(path).read_bytes()))
    raster = chunky[0].assets["r"][0]
    aoi = map_geometry(shapely.box(10.3, 12.2, 50.6, 40.1), raster, UTM32)
    decoded = []
    real_decode = rasteret_dask.cog.decode_tile
    monkeypatch.setattr(
        rasteret_dask.cog, "decode_tile", lambda *args: decoded.append(1) or real_decode(*args)
    )
    costs = []
    for bands in (["r"], ["r", "g", "b"]):
        range_server.reset_stats()
        decoded.clear()
        gdf = collection.get_gdf([aoi], bands=bands, geometry_crs=UTM32).compute(scheduler="threads")
        assert len(gdf) == len(bands)
        stats = range_server.stats()["by_path"][name]
        costs.append((stats["requests"], stats["bytes"], len(decoded)))
    assert costs[0] == costs[1]
    assert costs[0][2] == 4  # the AOI spans 2 x 2 of the 32-pixel tiles


def test_zone_33_record_and_zone_32_aoi(geometry_records, geometry_collection):
    """An AOI given in zone 32 is reprojected to a zone-33 record's CRS (transform_geom's vertices)."""
    b33 = [rec for rec in geometry_records if rec.id == "b33"]
    grid = b33[0].assets["b"][0]
    aoi = shapely.transform(
        map_geometry(shapely.box(20.3, 20.6, 60.2, 45.8).buffer(4.0, quad_segs=3), grid, UTM33),
        lambda xy: to_crs(xy, UTM33, UTM32),
    )
    gdf = geometry_collection.get_gdf([aoi], bands=["b"], geometry_crs=UTM32).compute()
    row = rows_by_key(gdf)[(0, "b33", "b")]
    assert row["crs"] == UTM33
    expected = expected_chips(geometry_records, [aoi], UTM32, ["b"], all_touched=False)
    assert_chips_match(gdf, expected)
