"""GeoKey parsing and CRS construction, checked against GDAL (through rasterio) and tifffile.

Oracles: ``oracle.json`` (GDAL's WKT for the shared corpus), rasterio reopening files written or crafted
in ``tmp_path`` (GDAL's CRS as WKT2 and its EPSG identity), and tifffile (the raw GeoKey tags and its own
decoding of the key directory). CRSs are compared with pyproj equivalence, ignoring axis order.
"""

from __future__ import annotations

import json
import struct
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyproj import CRS, Transformer
from rasterio.crs import CRS as RioCRS
from rasterio.transform import from_origin

from rasteret_dask.errors import MalformedTiffError, TiffError, UnsupportedTiffError
from rasteret_dask.tiff.geokeys import (
    GEOKEY_DIRECTORY_VERSION,
    crs_from_geokeys,
    parse_geokey_directory,
    raster_is_point,
)

CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus"

# Corpus files whose CRS we cannot compare with ``oracle.json`` by equivalence alone, and why.
CORPUS_DIFFERENCES = {
    "gdal__corrupted_gtiff_tags.tif": (
        "malformed: the GeoKeyDirectory announces 11 keys (48 values) but holds 44; libgeotiff rejects "
        "it and GDAL reports no CRS, we raise MalformedTiffError"
    ),
    "georust__austrian_capitals_model_tie_points_pixel_is_area.tif": (
        "gcps: several tie points and no pixel scale, so GDAL attaches the CRS to its GCPs and ds.crs is None"
    ),
    "riotiler__cog_gcps_ovr.tif": (
        "gcps: the file is georeferenced by GCPs, so GDAL attaches the CRS to them and ds.crs is None"
    ),
    "geotrellis__SBN_inc_percap-nodata-clip.tif": (
        "esri-102113: a PROJCS named WGS_1984_Web_Mercator becomes ESRI:102113 (as in GDAL), which GDAL's "
        "PROJ 9.7 database defines as Mercator (variant B) on a sphere and pyproj's PROJ 9.5 database as "
        "Popular Visualisation Pseudo-Mercator on WGS 84; both project lon/lat to the same metres"
    ),
}


def _tiff_geokeys(path: Path) -> tuple[list[int], tuple[float, ...] | None, str | None] | None:
    """The raw GeoKeyDirectory, GeoDoubleParams and GeoAsciiParams of the first IFD, read by tifffile."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with tifffile.TiffFile(path) as tif:
            tags = tif.pages.first.tags
            directory = tags.get("GeoKeyDirectoryTag")
            if directory is None:
                return None
            doubles = tags.get("GeoDoubleParamsTag")
            text = tags.get("GeoAsciiParamsTag")
            double_values = None if doubles is None else tuple(np.atleast_1d(doubles.value).tolist())
            return [int(v) for v in directory.value], double_values, None if text is None else text.value


def _corpus_geokey_files() -> list[str]:
    if not CORPUS.is_dir():
        return []
    oracle = json.loads((CORPUS / "oracle.json").read_text())
    return sorted(name for name in oracle if _tiff_geokeys(CORPUS / name) is not None)


CORPUS_FILES = _corpus_geokey_files()
WELL_FORMED_CORPUS_FILES = [
    n for n in CORPUS_FILES if not CORPUS_DIFFERENCES.get(n, "").startswith("malformed")
]


def _keys_of(path: Path) -> dict:
    raw = _tiff_geokeys(path)
    assert raw is not None, f"{path} has no GeoKeyDirectory"
    return parse_geokey_directory(*raw)


def _gdal_crs(path: Path) -> tuple[str | None, int | None]:
    """GDAL's CRS of a file as WKT2:2019, and rasterio's EPSG identity of it."""
    with rasterio.open(path) as ds:
        if ds.crs is None:
            return None, None
        return ds.crs.to_wkt(version="WKT2_2019"), ds.crs.to_epsg()


def _root_epsg(wkt: str) -> int | None:
    ident = CRS.from_user_input(wkt).to_json_dict().get("id") or {}
    return int(ident["code"]) if ident.get("authority") == "EPSG" else None


def _assert_same_crs(
    ours: tuple[int | None, str | None], gdal_wkt: str, gdal_epsg: int | None = None
) -> None:
    epsg, wkt = ours
    assert wkt is not None, "no CRS where GDAL reports one"
    assert CRS(wkt).equals(CRS(gdal_wkt), ignore_axis_order=True), f"ours:\n{wkt}\nGDAL:\n{gdal_wkt}"
    identity = _root_epsg(gdal_wkt)
    if identity is not None and CRS.from_epsg(identity).equals(CRS(gdal_wkt), ignore_axis_order=True):
        # GDAL gives the CRS an EPSG identity: ours must be that code (and rasterio's, when it finds one).
        assert epsg == identity
        if gdal_epsg is not None:
            assert epsg == gdal_epsg
    elif identity is not None:
        # GDAL labels keys that contradict the EPSG definition (e.g. a PCS code with another GCS) with
        # the code anyway; rasterio finds no EPSG code for that CRS, and neither do we.
        assert epsg is None and gdal_epsg is None
    else:
        # A user-defined CRS: an EPSG code only when PROJ identifies GDAL's CRS with full confidence too.
        assert epsg == CRS(gdal_wkt).to_epsg(min_confidence=100)


# ---------------------------------------------------------------------------------------------------------
# The shared corpus (oracle.json)


def test_corpus_is_present():
    assert CORPUS.is_dir(), f"shared corpus missing at {CORPUS}"
    assert len(CORPUS_FILES) > 50


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_corpus_crs_matches_gdal(name):
    gdal_wkt = json.loads((CORPUS / "oracle.json").read_text())[name]["gdal"]["crs_wkt"]
    reason = CORPUS_DIFFERENCES.get(name, "")
    if reason.startswith("malformed"):
        assert gdal_wkt is None
        with pytest.raises(MalformedTiffError):
            _keys_of(CORPUS / name)
        return
    ours = crs_from_geokeys(_keys_of(CORPUS / name))
    if reason.startswith("gcps"):
        assert gdal_wkt is None
        with rasterio.open(CORPUS / name) as ds:
            assert ds.crs is None
            gcps, gcp_crs = ds.gcps
            assert gcps, "GDAL reports no GCPs"
            _assert_same_crs(ours, gcp_crs.to_wkt(version="WKT2_2019"))
        return
    if gdal_wkt is None:
        assert ours == (None, None)
        return
    if reason.startswith("esri-102113"):
        epsg, wkt = ours
        assert epsg is None and CRS(gdal_wkt).to_epsg(min_confidence=100) is None
        ours_crs, gdal_crs = CRS(wkt), CRS(gdal_wkt)
        lon, lat = np.array([-179.0, -75.5, 0.0, 12.25, 150.0]), np.array([-80.0, -33.3, 0.0, 45.5, 84.0])
        ours_xy = Transformer.from_crs(ours_crs.geodetic_crs, ours_crs, always_xy=True).transform(lon, lat)
        gdal_xy = Transformer.from_crs(gdal_crs.geodetic_crs, gdal_crs, always_xy=True).transform(lon, lat)
        np.testing.assert_allclose(ours_xy, gdal_xy, rtol=0, atol=1e-6)
        return
    _assert_same_crs(ours, gdal_wkt)


@pytest.mark.parametrize("name", WELL_FORMED_CORPUS_FILES)
def test_corpus_pixel_is_point_matches_gdal(name):
    with rasterio.open(CORPUS / name) as ds:
        gdal_point = ds.tags().get("AREA_OR_POINT") == "Point"
    assert raster_is_point(_keys_of(CORPUS / name)) == gdal_point


@pytest.mark.parametrize("name", WELL_FORMED_CORPUS_FILES)
def test_corpus_keys_match_tifffile(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with tifffile.TiffFile(CORPUS / name) as tif:
            decoded = tif.geotiff_metadata
    keys = _keys_of(CORPUS / name)
    version = (decoded["KeyDirectoryVersion"], decoded["KeyRevision"], decoded["KeyRevisionMinor"])
    assert keys[GEOKEY_DIRECTORY_VERSION] == version
    compared = 0
    for key in tifffile.TIFF.GEO_KEYS:
        if key.name not in decoded:
            assert int(key) not in keys
            continue
        expected, got = decoded[key.name], keys[int(key)]
        if isinstance(expected, str):
            assert got == expected
        elif isinstance(expected, tuple):
            assert got == pytest.approx(expected)
        else:
            assert got == (int(expected) if isinstance(got, int) else float(expected))
        compared += 1
    assert compared == len(keys) - 1


# ---------------------------------------------------------------------------------------------------------
# Files written by GDAL (rasterio) for many CRSs

WRITTEN_CRSS = [
    "EPSG:4326",
    "EPSG:3857",
    "EPSG:32633",
    "EPSG:32760",
    "EPSG:2056",
    "EPSG:27700",
    "EPSG:3035",
    "EPSG:5070",
    "EPSG:3413",
    "EPSG:4269",
    "EPSG:26915",
    "EPSG:28992",
    "EPSG:3031",
    "EPSG:2193",
    "EPSG:3395",
    "EPSG:6933",
    "EPSG:2229",
    "EPSG:4258",
    "EPSG:7844",
    "EPSG:9057",
    "+proj=aea +lat_1=29.5 +lat_2=45.5 +lat_0=23 +lon_0=-96 +datum=NAD83 +units=m",
    "+proj=lcc +lat_1=33 +lat_2=45 +lat_0=39 +lon_0=-96 +x_0=0 +y_0=0 +datum=NAD83 +units=m",
    "+proj=lcc +lat_1=45 +lat_0=45 +lon_0=3 +k_0=0.9996 +x_0=700000 +y_0=600000 +ellps=GRS80 +units=m",
    "+proj=tmerc +lat_0=0 +lon_0=-117 +k=0.9999 +x_0=500000 +y_0=0 +ellps=GRS80 +units=us-ft",
    "+proj=tmerc +lat_0=0 +lon_0=9 +k=0.9996 +x_0=500000 +y_0=0 +ellps=GRS80 +units=ft",
    "+proj=stere +lat_0=90 +lat_ts=70 +lon_0=-45 +x_0=0 +y_0=0 +datum=WGS84 +units=m",
    "+proj=stere +lat_0=-90 +k=0.994 +lon_0=0 +x_0=2000000 +y_0=2000000 +datum=WGS84 +units=m",
    "+proj=stere +lat_0=40 +lon_0=10 +k=0.9 +datum=WGS84",
    "+proj=sterea +lat_0=52 +lon_0=5 +k=0.9999 +x_0=155000 +y_0=463000 +ellps=bessel +units=m",
    "+proj=laea +lat_0=52 +lon_0=10 +x_0=4321000 +y_0=3210000 +ellps=GRS80 +units=m",
    "+proj=merc +lon_0=10 +k=1 +x_0=0 +y_0=0 +datum=WGS84 +units=m",
    "+proj=merc +lat_ts=30 +lon_0=10 +datum=WGS84 +units=m",
    "+proj=eqc +lat_ts=0 +lat_0=0 +lon_0=0 +x_0=0 +y_0=0 +datum=WGS84 +units=m",
    "+proj=cass +lat_0=10 +lon_0=-61 +x_0=86501 +y_0=65379 +a=6378293.645208759 +b=6356617.987679838",
    "+proj=longlat +R=6371007 +no_defs",
    "+proj=sinu +lon_0=0 +x_0=0 +y_0=0 +R=6371007.181 +units=m",
    "+proj=omerc +lat_0=4 +lonc=102.25 +alpha=323.0257905 +k=0.99984 +x_0=804671 +y_0=0 +no_uoff "
    "+gamma=323.1301023611111 +ellps=evrstSS +units=m",
    "+proj=robin +lon_0=0 +datum=WGS84",
    "+proj=eqdc +lat_0=40 +lon_0=-96 +lat_1=20 +lat_2=60 +datum=NAD83 +units=m",
    "+proj=cea +lat_ts=30 +lon_0=0 +datum=WGS84",
    "+proj=ortho +lat_0=40 +lon_0=-100 +datum=WGS84",
    "+proj=gnom +lat_0=40 +lon_0=-100 +datum=WGS84",
    "+proj=aeqd +lat_0=40 +lon_0=-100 +datum=WGS84",
    "+proj=poly +lat_0=0 +lon_0=-54 +datum=WGS84",
    "+proj=mill +lon_0=0 +datum=WGS84",
    "+proj=vandg +lon_0=0 +R=6371000",
    "+proj=nzmg +lat_0=-41 +lon_0=173 +x_0=2510000 +y_0=6023150 +ellps=intl",
    "+proj=longlat +ellps=intl +towgs84=-87,-98,-121,0,0,0,0",
    "+proj=utm +zone=33 +ellps=intl +towgs84=-87,-98,-121,0,0,0,0 +units=m",
    "+proj=longlat +ellps=WGS84 +pm=paris",
    # GeoTIFF 1.1 with vertical keys: GDAL reports the compound (or geographic 3D) CRS.
    "EPSG:4326+5773",
    "EPSG:32633+5773",
    "EPSG:26915+5703",
    "EPSG:7415",
    "EPSG:4979",
    "EPSG:4937",
    'COMPD_CS["x",PROJCS["WGS 84 / UTM zone 33N",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,'
    '298.257223563]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],'
    'PARAMETER["latitude_of_origin",0],PARAMETER["central_meridian",15],PARAMETER["scale_factor",0.9996],'
    'PARAMETER["false_easting",500000],PARAMETER["false_northing",0],UNIT["metre",1],AUTHORITY["EPSG","32633"]],'
    'VERT_CS["my height",VERT_DATUM["North American Vertical Datum 1988",2005,AUTHORITY["EPSG","5103"]],'
    'UNIT["US survey foot",0.304800609601219,AUTHORITY["EPSG","9003"]],AXIS["Up",UP]]]',
]


def _write(path: Path, crs: str, point: bool = False) -> Path:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=4,
        height=4,
        count=1,
        dtype="uint8",
        crs=RioCRS.from_user_input(crs),
        transform=from_origin(500.0, 1000.0, 10.0, 10.0),
    ) as ds:
        ds.write(np.zeros((1, 4, 4), "uint8"))
        if point:
            ds.update_tags(AREA_OR_POINT="Point")
    return path


@pytest.mark.parametrize("crs", WRITTEN_CRSS)
def test_written_crs_matches_gdal(tmp_path, crs):
    path = _write(tmp_path / "crs.tif", crs)
    gdal_wkt, gdal_epsg = _gdal_crs(path)
    assert gdal_wkt is not None
    _assert_same_crs(crs_from_geokeys(_keys_of(path)), gdal_wkt, gdal_epsg)


def _patch_minor_revision(path: Path, minor: int) -> None:
    """Rewrite the GeoKeyDirectory MinorRevision in place (GeoTIFF 1.1 -> 1.0)."""
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages.first.tags["GeoKeyDirectoryTag"]
        offset, byteorder = tag.valueoffset, tif.byteorder
    with open(path, "r+b") as f:
        f.seek(offset + 4)
        f.write(struct.pack(byteorder + "H", minor))


@pytest.mark.parametrize("crs", ["EPSG:32633+5773", "EPSG:4326+5773", "EPSG:4979"])
def test_vertical_follows_geotiff_version(tmp_path, crs):
    path = _write(tmp_path / "v.tif", crs)
    assert _keys_of(path)[GEOKEY_DIRECTORY_VERSION] == (1, 1, 1)
    _patch_minor_revision(path, 0)
    keys = _keys_of(path)
    assert keys[GEOKEY_DIRECTORY_VERSION] == (1, 1, 0)
    gdal_wkt, gdal_epsg = _gdal_crs(path)
    assert gdal_wkt is not None
    _assert_same_crs(crs_from_geokeys(keys), gdal_wkt, gdal_epsg)


@pytest.mark.parametrize("point", [True, False])
def test_pixel_is_point_written_by_gdal(tmp_path, point):
    path = _write(tmp_path / "p.tif", "EPSG:32633", point=point)
    keys = _keys_of(path)
    with tifffile.TiffFile(path) as tif:
        raster_type = tif.geotiff_metadata["GTRasterTypeGeoKey"]
    with rasterio.open(path) as ds:
        gdal_point = ds.tags().get("AREA_OR_POINT") == "Point"
    assert gdal_point == point
    assert int(raster_type) == (2 if point else 1)
    assert raster_is_point(keys) == gdal_point


# ---------------------------------------------------------------------------------------------------------
# Directories crafted key by key (tifffile writes them, GDAL reads them)


def _craft(path: Path, entries, doubles=None, text=None, version=(1, 1, 0)) -> tuple:
    directory = [*version, len(entries)]
    for entry in entries:
        directory += list(entry)
    extratags = [
        (33550, "d", 3, (1.0, 1.0, 0.0), True),
        (33922, "d", 6, (0.0, 0.0, 0.0, 10.0, 50.0, 0.0), True),
        (34735, "H", len(directory), tuple(directory), True),
    ]
    if doubles is not None:
        extratags.append((34736, "d", len(doubles), tuple(doubles), True))
    if text is not None:
        extratags.append((34737, "s", 0, text, True))
    tifffile.imwrite(path, np.zeros((4, 4), "uint8"), extratags=extratags)
    return directory, None if doubles is None else tuple(doubles), text


def _d(key, index):
    return (key, 34736, 1, index)


_IMAGINE_HEADER = (
    "IMAGINE GeoTIFF Support\nCopyright 1991 - 2001 by ERDAS, Inc. All Rights Reserved\n"
    "@(#)$RCSfile$ $Revision: 1.1 $ $Date: 2004 $\n"
)
_IMAGINE_GEOG = (
    _IMAGINE_HEADER + "Unable to match Ellipsoid (Datum)\nEllipsoid = Clarke 1866\nDatum = NAD27 (CONUS)|"
)
_IMAGINE_PCS = _IMAGINE_HEADER + "UTM Zone 10N\nEllipsoid = Clarke 1866\nDatum = NAD27 (CONUS)|"
_PE_STRING = (
    'ESRI PE String = PROJCS["Sinus",GEOGCS["GCS_WGS_1984",DATUM["D_WGS_1984",SPHEROID["WGS_1984",'
    '6378137.0,298.257223563]],PRIMEM["Greenwich",0.0],UNIT["Degree",0.0174532925199433]],'
    'PROJECTION["Sinusoidal"],PARAMETER["Central_Meridian",0.0],UNIT["Meter",1.0]]|'
)


CRAFTED = {
    # PCS code with overridden linear units: GDAL changes the EPSG CRS's units and drops its code.
    "pcs-feet": ([(1024, 0, 1, 1), (3072, 0, 1, 32633), (3076, 0, 1, 9002)], None, None),
    # PCS with a GCS key: built from keys, EPSG identity kept when equivalent (Google Mercator hack).
    "pcs-3857-gcs": ([(1024, 0, 1, 1), (3072, 0, 1, 3857), (2048, 0, 1, 4326)], None, None),
    "pcs-gcs-mismatch": ([(1024, 0, 1, 1), (3072, 0, 1, 32633), (2048, 0, 1, 4269)], None, None),
    "pcs-no-model": ([(3072, 0, 1, 32633)], None, None),
    "projection-code": (
        [(1024, 0, 1, 1), (3072, 0, 1, 32767), (3074, 0, 1, 16033), (2048, 0, 1, 4326)],
        None,
        None,
    ),
    "projection-3856": (
        [(1024, 0, 1, 1), (3072, 0, 1, 32767), (3074, 0, 1, 3856), (2048, 0, 1, 4326)],
        None,
        None,
    ),
    "grads-lcc": (
        [
            (1024, 0, 1, 1),
            (2048, 0, 1, 4807),
            (3072, 0, 1, 32767),
            (3075, 0, 1, 9),
            _d(3081, 0),
            _d(3080, 1),
            _d(3092, 2),
            _d(3082, 3),
            _d(3083, 4),
        ],
        [52.0, 0.0, 0.99987742, 600000.0, 2200000.0],
        None,
    ),
    "datum-ensemble": ([(1024, 0, 1, 2), (2048, 0, 1, 32767), (2050, 0, 1, 6258)], None, None),
    "unretrievable-ellipsoid": ([(1024, 0, 1, 2), (2054, 0, 1, 9102)], None, None),
    "geog-3d-promotion": ([(1024, 0, 1, 2), (2048, 0, 1, 4326), (4096, 0, 1, 4979)], None, None),
    "geog-3d-datum-6030": ([(1024, 0, 1, 2), (2048, 0, 1, 4326), (4098, 0, 1, 6030)], None, None),
    "towgs84-user-datum": (
        [(1024, 0, 1, 2), (2048, 0, 1, 32767), (2050, 0, 1, 32767), (2056, 0, 1, 7022), (2062, 34736, 3, 0)],
        [-87.0, -98.0, -121.0],
        None,
    ),
    "towgs84-known-datum": (
        [(1024, 0, 1, 2), (2048, 0, 1, 4230), (2062, 34736, 7, 0)],
        [-87.0, -98.0, -121.0] + [0.0] * 4,
        None,
    ),
    "towgs84-projected": (
        [
            (1024, 0, 1, 1),
            (3072, 0, 1, 32767),
            (3074, 0, 1, 16033),
            (2048, 0, 1, 32767),
            (2050, 0, 1, 32767),
            (2056, 0, 1, 7022),
            (2062, 34736, 7, 0),
        ],
        [-87.0, -98.0, -121.0, 1.0, 2.0, 3.0, 4.0],
        None,
    ),
    "ellipsoid-code": ([(1024, 0, 1, 2), (2048, 0, 1, 32767), (2056, 0, 1, 7019)], None, None),
    "semi-axes": (
        [(1024, 0, 1, 2), (2048, 0, 1, 32767), _d(2057, 0), _d(2058, 1)],
        [6378137.0, 6356752.314245],
        None,
    ),
    "prime-meridian-code": (
        [(1024, 0, 1, 2), (2048, 0, 1, 32767), (2050, 0, 1, 6326), (2051, 0, 1, 8903)],
        None,
        None,
    ),
    "prime-meridian-dms": (
        [(1024, 0, 1, 2), (2048, 0, 1, 32767), (2050, 0, 1, 6326), (2054, 0, 1, 9110), _d(2061, 0)],
        [2.2014025],
        None,
    ),
    "geog-citation-name": (
        [(1024, 0, 1, 2), (2048, 0, 1, 32767), (2049, 34737, 13, 0), (2050, 0, 1, 6326)],
        None,
        "GCS_WGS_1984|",
    ),
    "geog-citation-fields": (
        [(1024, 0, 1, 2), (2048, 0, 1, 32767), (2049, 34737, 57, 0), (2050, 0, 1, 6326)],
        None,
        "GCS Name = GCS_WGS_1984|Datum = D_WGS_1984|Primem = Greenwich|",
    ),
    "pcs-citation-lunits": (
        [
            (1024, 0, 1, 1),
            (3072, 0, 1, 32767),
            (3073, 34737, 32, 0),
            (3074, 0, 1, 16033),
            (2048, 0, 1, 4326),
            (3076, 0, 1, 9002),
        ],
        None,
        "PCS Name = My UTM|LUnits = feet|",
    ),
    "linear-unit-size": (
        [
            (1024, 0, 1, 1),
            (3072, 0, 1, 32767),
            (3074, 0, 1, 16033),
            (2048, 0, 1, 4326),
            (3076, 0, 1, 32767),
            _d(3077, 0),
        ],
        [0.5],
        None,
    ),
    "hotine-a": (
        [
            (1024, 0, 1, 1),
            (3072, 0, 1, 32767),
            (3075, 0, 1, 3),
            (2048, 0, 1, 4326),
            _d(3089, 0),
            _d(3088, 1),
            _d(3094, 2),
            _d(3096, 3),
            _d(3093, 4),
            _d(3082, 5),
            _d(3083, 6),
        ],
        [4.0, 102.25, 323.0257905, 323.1301023611111, 0.99984, 804671.0, 0.0],
        None,
    ),
    "hotine-b": (
        [
            (1024, 0, 1, 1),
            (3072, 0, 1, 32767),
            (3075, 0, 1, 9815),
            (2048, 0, 1, 4326),
            _d(3089, 0),
            _d(3088, 1),
            _d(3094, 2),
            _d(3096, 3),
            _d(3093, 4),
            _d(3090, 5),
            _d(3091, 6),
        ],
        [4.0, 102.25, 323.0257905, 323.1301023611111, 0.99984, 804671.0, 0.0],
        None,
    ),
    "mercator-sp1-and-scale": (
        [(1024, 0, 1, 1), (3072, 0, 1, 32767), (3075, 0, 1, 7), (2048, 0, 1, 4326), _d(3078, 0), _d(3092, 1)],
        [30.0, 0.9],
        None,
    ),
    "lcc-2sp-missing-second-parallel": (
        [(1024, 0, 1, 1), (3072, 0, 1, 32767), (3075, 0, 1, 8), (2048, 0, 1, 4326), _d(3078, 0), _d(3085, 1)],
        [30.0, 20.0],
        None,
    ),
    "tm-south-oriented": (
        [
            (1024, 0, 1, 1),
            (3072, 0, 1, 32767),
            (3075, 0, 1, 27),
            (2048, 0, 1, 4326),
            _d(3081, 0),
            _d(3080, 1),
            _d(3092, 2),
            _d(3082, 3),
            _d(3083, 4),
        ],
        [0.0, 29.0, 1.0, 0.0, 0.0],
        None,
    ),
    "stereographic": (
        [
            (1024, 0, 1, 1),
            (3072, 0, 1, 32767),
            (3075, 0, 1, 14),
            (2048, 0, 1, 4326),
            _d(3081, 0),
            _d(3080, 1),
            _d(3092, 2),
        ],
        [40.0, 10.0, 0.9],
        None,
    ),
    "laborde": (
        [
            (1024, 0, 1, 1),
            (3072, 0, 1, 32767),
            (3075, 0, 1, 4),
            (2048, 0, 1, 4326),
            _d(3089, 0),
            _d(3088, 1),
            _d(3094, 2),
            _d(3093, 3),
        ],
        [-18.9, 44.1, 18.9, 0.9995],
        None,
    ),
    # ERDAS Imagine citations, which GDAL rewrites before reading names from them.
    "imagine-geog-citation": (
        [(1024, 0, 1, 2), (2048, 0, 1, 32767), (2049, 34737, len(_IMAGINE_GEOG), 0), (2056, 0, 1, 7008)],
        None,
        _IMAGINE_GEOG,
    ),
    "imagine-pcs-citation": (
        [
            *((1024, 0, 1, 1), (2048, 0, 1, 4267), (3072, 0, 1, 32767), (3073, 34737, len(_IMAGINE_PCS), 0)),
            *((3074, 0, 1, 16010), (3076, 0, 1, 9001)),
        ],
        None,
        _IMAGINE_PCS,
    ),
    # A code stored with the wrong type is ignored (libgeotiff reads keys type-strictly).
    "gcs-code-as-double": ([(1024, 0, 1, 2), (2048, 34736, 1, 0)], [4326.0], None),
    "esri-pe-string": ([(1024, 0, 1, 32767), (3073, 34737, len(_PE_STRING), 0)], None, _PE_STRING),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_keys_match_gdal(tmp_path, case):
    entries, doubles, text = CRAFTED[case]
    raw = _craft(tmp_path / "k.tif", entries, doubles, text)
    gdal_wkt, gdal_epsg = _gdal_crs(tmp_path / "k.tif")
    assert gdal_wkt is not None
    _assert_same_crs(crs_from_geokeys(parse_geokey_directory(*raw)), gdal_wkt, gdal_epsg)


# Keys GDAL degrades to an engineering (LOCAL_CS) CRS: no CRS at all, or a definition we name and refuse.
LOCAL_CS = {
    "raster-type-only": ([(1025, 0, 1, 1)], None),
    "gcs-without-model": ([(2048, 0, 1, 4326)], None),
    "projected-without-projection": ([(1024, 0, 1, 1), (2048, 0, 1, 4326)], "without ProjectedCSTypeGeoKey"),
    "unsupported-method": (
        [(1024, 0, 1, 1), (3075, 0, 1, 2), (2048, 0, 1, 4326)],
        "CT_TransvMercator_Modified_Alaska",
    ),
    "krovak-from-keys": ([(1024, 0, 1, 1), (3072, 0, 1, 5514), (2048, 0, 1, 4156)], "3072 = 5514"),
    "unknown-pcs": ([(1024, 0, 1, 1), (3072, 0, 1, 1234)], "3072 = 1234"),
}


def test_unreadable_pe_string(tmp_path):
    broken = _PE_STRING[:120] + "|"
    raw = _craft(tmp_path / "k.tif", [(1024, 0, 1, 32767), (3073, 34737, len(broken), 0)], None, broken)
    assert _gdal_crs(tmp_path / "k.tif")[0] is None
    with pytest.raises(UnsupportedTiffError, match="ESRI PE string"):
        crs_from_geokeys(parse_geokey_directory(*raw))


@pytest.mark.parametrize("case", sorted(LOCAL_CS))
def test_local_cs_is_no_crs_or_unsupported(tmp_path, case):
    entries, message = LOCAL_CS[case]
    raw = _craft(tmp_path / "k.tif", entries)
    gdal_wkt, _ = _gdal_crs(tmp_path / "k.tif")
    assert gdal_wkt is not None and gdal_wkt.startswith("ENGCRS")
    keys = parse_geokey_directory(*raw)
    if message is None:
        assert crs_from_geokeys(keys) == (None, None)
    else:
        with pytest.raises(UnsupportedTiffError, match=message):
            crs_from_geokeys(keys)


# ---------------------------------------------------------------------------------------------------------
# Malformed directories: libgeotiff refuses them (GDAL reports no CRS), we raise MalformedTiffError

MALFORMED = {
    "keys-past-end": ([1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1], None, None),
    "inline-count-2": ([1, 1, 0, 2, 1024, 0, 1, 1, 3072, 0, 2, 32633], None, None),
    "directory-offset-past-end": ([1, 1, 0, 2, 1024, 0, 1, 1, 3072, 34735, 1, 40], None, None),
    "doubles-past-end": ([1, 1, 0, 2, 1024, 0, 1, 2, 2057, 34736, 1, 3], (1.0, 2.0), None),
    "doubles-absent": ([1, 1, 0, 2, 1024, 0, 1, 2, 2057, 34736, 1, 0], None, None),
    "ascii-past-end": ([1, 1, 0, 2, 1024, 0, 1, 2, 1026, 34737, 5, 30], None, "abc|"),
    "ascii-absent": ([1, 1, 0, 2, 1024, 0, 1, 2, 1026, 34737, 4, 0], None, None),
    "unknown-location": ([1, 1, 0, 2, 1024, 0, 1, 2, 2048, 33550, 1, 0], None, None),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_directories(tmp_path, case):
    directory, doubles, text = MALFORMED[case]
    with pytest.raises(MalformedTiffError):
        parse_geokey_directory(directory, doubles, text)
    # GDAL (libgeotiff) rejects the same directory: the file has no CRS.
    header, entries = directory[:4], [tuple(directory[i : i + 4]) for i in range(4, len(directory), 4)]
    _craft(tmp_path / "m.tif", entries, None if doubles is None else list(doubles), text, tuple(header[:3]))
    if case == "keys-past-end":
        _patch_key_count(tmp_path / "m.tif", header[3])
    assert _gdal_crs(tmp_path / "m.tif")[0] is None


def _patch_key_count(path: Path, count: int) -> None:
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages.first.tags["GeoKeyDirectoryTag"]
        offset, byteorder = tag.valueoffset, tif.byteorder
    with open(path, "r+b") as f:
        f.seek(offset + 6)
        f.write(struct.pack(byteorder + "H", count))


def test_header_errors():
    with pytest.raises(MalformedTiffError):
        parse_geokey_directory([1, 1, 0], None, None)
    with pytest.raises(MalformedTiffError):
        parse_geokey_directory([1, 1, 0, 1, 1024, 0, 1, -1], None, None)
    with pytest.raises(MalformedTiffError):
        parse_geokey_directory([1, 1, 0, 1, 1024, 0, 1, 70000], None, None)
    with pytest.raises(UnsupportedTiffError, match="version 2"):
        parse_geokey_directory([2, 1, 0, 0], None, None)


def test_ascii_tolerance_matches_tifffile_decoding(tmp_path):
    # A writer that counted the NUL instead of a final '|': libgeotiff (and we) drop the extra character.
    raw = _craft(
        tmp_path / "a.tif", [(1024, 0, 1, 2), (2048, 0, 1, 4326), (2049, 34737, 7, 0)], None, "WGS 84"
    )
    keys = parse_geokey_directory(*raw)
    with tifffile.TiffFile(tmp_path / "a.tif") as tif:
        assert keys[2049] == tif.geotiff_metadata["GeogCitationGeoKey"] == "WGS 84"
    gdal_wkt, gdal_epsg = _gdal_crs(tmp_path / "a.tif")
    _assert_same_crs(crs_from_geokeys(keys), gdal_wkt, gdal_epsg)


# ---------------------------------------------------------------------------------------------------------
# Robustness: arbitrary input raises only our errors, quickly

_GEOKEY_IDS = [1024, 1025, 1026, *range(2048, 2063), *range(3072, 3097), *range(4096, 4100), 5120]
_SHORT_IDS = [1024, 1025, 2048, 2050, 2051, 2052, 2054, 2056, 3072, 3074, 3075, 3076, 4096, 4098, 4099]
_DOUBLE_IDS = [2055, 2057, 2058, 2059, 2061, 2062, 3077, *range(3078, 3097), 5120]
_CODES = st.one_of(
    st.sampled_from(
        [
            *(0, 1, 2, 3, 7, 8, 9, 11, 15, 17, 27, 9815, 4326, 4807, 4979, 32633, 3857, 6258, 7019, 8903),
            *(9001, 9002, 9105, 9110, 16033, 3856, 5773, 6030, 5001, 32767),
        ]
    ),
    st.integers(0, 0xFFFF),
)
_FLOATS = st.one_of(st.floats(), st.sampled_from([0.0, 1.0, 6378137.0, 298.257223563, 90.0, -90.0, 1e300]))
_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "GCS Name = x|Datum = D_WGS_1984|Ellipsoid = WGS_1984|Primem = Greenwich",
            "ESRI PE String = garbage[",
            "PCS Name = a|LUnits = feet",
            "WGS_1984_Web_Mercator",
            "GCS_WGS_1984",
            "VCS Name = foo|",
        ]
    ),
)


@st.composite
def _directories(draw):
    entries = draw(
        st.lists(
            st.tuples(
                st.sampled_from([*_GEOKEY_IDS, 0, 65535]),
                st.sampled_from([0, 0, 34735, 34736, 34737, 1]),
                st.integers(0, 12),
                st.integers(0, 40),
            ),
            max_size=12,
        )
    )
    header = [
        draw(st.sampled_from([0, 1, 2])),
        1,
        draw(st.integers(0, 2)),
        len(entries) + draw(st.sampled_from([0, 0, 1])),
    ]
    out = header + [v for e in entries for v in e]
    return out[: draw(st.integers(0, len(out)))] if draw(st.integers(0, 9)) == 0 else out


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(
    _directories(),
    st.one_of(st.none(), st.lists(_FLOATS, max_size=16)),
    st.one_of(st.none(), _TEXT),
)
def test_random_directories_raise_only_tiff_errors(directory, doubles, text):
    start = time.perf_counter()
    try:
        keys = parse_geokey_directory(directory, doubles, text)
        crs_from_geokeys(keys)
    except TiffError:
        pass
    assert time.perf_counter() - start < 5.0


@st.composite
def _key_sets(draw):
    keys = {GEOKEY_DIRECTORY_VERSION: draw(st.sampled_from([(1, 1, 0), (1, 1, 1), (1, 0, 0)]))}
    keys[1024] = draw(st.sampled_from([1, 2, 1, 2, 3, 0, 32767, 5]))
    for key in draw(st.lists(st.sampled_from(_SHORT_IDS), max_size=8)):
        keys[key] = draw(_CODES)
    for key in draw(st.lists(st.sampled_from(_DOUBLE_IDS), max_size=10)):
        keys[key] = draw(_FLOATS) if draw(st.booleans()) else tuple(draw(st.lists(_FLOATS, max_size=7)))
    for key in draw(st.lists(st.sampled_from([1026, 2049, 3073, 4097]), max_size=3)):
        keys[key] = draw(_TEXT)
    return keys


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(_key_sets())
def test_random_key_sets_give_a_crs_or_tiff_error(keys):
    start = time.perf_counter()
    try:
        epsg, wkt = crs_from_geokeys(keys)
    except TiffError:
        return
    finally:
        assert time.perf_counter() - start < 5.0
    assert epsg is None or isinstance(epsg, int)
    if wkt is not None:
        assert CRS.from_wkt(wkt).name is not None
    if epsg is not None:
        assert CRS(wkt).equals(CRS.from_epsg(epsg), ignore_axis_order=True)
