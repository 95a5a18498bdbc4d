"""GeoTIFF GeoKeys: parse the key directory and turn the keys into a CRS the way GDAL reads them.

Two stages mirror the two layers GDAL uses. :func:`parse_geokey_directory` does what libgeotiff's
``GTIFNew`` does: it validates the GeoKeyDirectory (tag 34735) against GeoDoubleParams (34736) and
GeoAsciiParams (34737) and returns ``{key_id: value}``. :func:`crs_from_geokeys` then follows libgeotiff's
``GTIFGetDefn`` (normalising codes, units and projection parameters with the EPSG database that PROJ
ships) and GDAL's ``GTIFGetOGISDefnAsOSR`` (naming, citations, EPSG identity, TOWGS84, vertical CRS), and
builds the result with pyproj (PROJJSON), returning an exact EPSG code when there is one and WKT2:2019.

Where GDAL degrades a definition to a LOCAL_CS (an unknown projection method, a projected model with no
projection, ...) this module raises :class:`~rasteret_dask.errors.UnsupportedTiffError` naming the cause;
a directory that holds no CRS at all gives ``(None, None)``. Nothing here reads files or the network
(pyproj answers EPSG look-ups from its bundled database).
"""

from __future__ import annotations

import contextlib
import math
import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pyproj import CRS
from pyproj.crs import CoordinateOperation, Datum, Ellipsoid, PrimeMeridian
from pyproj.database import get_units_map
from pyproj.exceptions import CRSError

from ..errors import MalformedTiffError, UnsupportedTiffError

__all__ = [
    "GEOKEY_DIRECTORY_VERSION",
    "crs_from_geokeys",
    "parse_geokey_directory",
    "raster_is_point",
]

GeoKeyValue = int | float | str | tuple[float, ...]

#: Pseudo key under which :func:`parse_geokey_directory` stores the directory header
#: ``(KeyDirectoryVersion, KeyRevision, MinorRevision)``; 0 is never a GeoKey id.
GEOKEY_DIRECTORY_VERSION = 0

# TIFF tags that may hold GeoKey values (TIFFTagLocation).
_LOC_SHORT, _LOC_DIRECTORY, _LOC_DOUBLE, _LOC_ASCII = 0, 34735, 34736, 34737

# GeoKey ids (GeoTIFF 1.1, OGC 19-008r4 §7).
GT_MODEL_TYPE, GT_RASTER_TYPE, GT_CITATION = 1024, 1025, 1026
GEOGRAPHIC_TYPE, GEOG_CITATION, GEOG_GEODETIC_DATUM, GEOG_PRIME_MERIDIAN = 2048, 2049, 2050, 2051
GEOG_LINEAR_UNITS, GEOG_ANGULAR_UNITS, GEOG_ANGULAR_UNIT_SIZE, GEOG_ELLIPSOID = 2052, 2054, 2055, 2056
GEOG_SEMI_MAJOR, GEOG_SEMI_MINOR, GEOG_INV_FLATTENING, GEOG_PRIME_MERIDIAN_LONG = 2057, 2058, 2059, 2061
GEOG_TOWGS84 = 2062
PROJECTED_CS_TYPE, PCS_CITATION, PROJECTION, PROJ_COORD_TRANS = 3072, 3073, 3074, 3075
PROJ_LINEAR_UNITS, PROJ_LINEAR_UNIT_SIZE, PROJ_STD_PARALLEL1, PROJ_STD_PARALLEL2 = 3076, 3077, 3078, 3079
PROJ_NAT_ORIGIN_LONG, PROJ_NAT_ORIGIN_LAT, PROJ_FALSE_EASTING, PROJ_FALSE_NORTHING = 3080, 3081, 3082, 3083
PROJ_FALSE_ORIGIN_LONG, PROJ_FALSE_ORIGIN_LAT = 3084, 3085
PROJ_FALSE_ORIGIN_EASTING, PROJ_FALSE_ORIGIN_NORTHING = 3086, 3087
PROJ_CENTER_LONG, PROJ_CENTER_LAT, PROJ_CENTER_EASTING, PROJ_CENTER_NORTHING = 3088, 3089, 3090, 3091
PROJ_SCALE_AT_NAT_ORIGIN, PROJ_SCALE_AT_CENTER, PROJ_AZIMUTH_ANGLE = 3092, 3093, 3094
PROJ_STRAIGHT_VERT_POLE_LONG, PROJ_RECTIFIED_GRID_ANGLE = 3095, 3096
VERTICAL_CS_TYPE, VERTICAL_CITATION, VERTICAL_DATUM, VERTICAL_UNITS = 4096, 4097, 4098, 4099

_USER_DEFINED = 32767  # KvUserDefined
_MODEL_PROJECTED, _MODEL_GEOGRAPHIC, _MODEL_GEOCENTRIC = 1, 2, 3
_PIXEL_IS_POINT = 2
_WGS84_A, _WGS84_RF = 6378137.0, 298.257223563
_PE_MARKER = "ESRI PE String = "

# GeoTIFF coordinate transformation codes (ProjCoordTransGeoKey values) and their names.
_CT_NAMES = {
    1: "CT_TransverseMercator",
    2: "CT_TransvMercator_Modified_Alaska",
    3: "CT_ObliqueMercator",
    4: "CT_ObliqueMercator_Laborde",
    5: "CT_ObliqueMercator_Rosenmund",
    6: "CT_ObliqueMercator_Spherical",
    7: "CT_Mercator",
    8: "CT_LambertConfConic_2SP",
    9: "CT_LambertConfConic_1SP",
    10: "CT_LambertAzimEqualArea",
    11: "CT_AlbersEqualArea",
    12: "CT_AzimuthalEquidistant",
    13: "CT_EquidistantConic",
    14: "CT_Stereographic",
    15: "CT_PolarStereographic",
    16: "CT_ObliqueStereographic",
    17: "CT_Equirectangular",
    18: "CT_CassiniSoldner",
    19: "CT_Gnomonic",
    20: "CT_MillerCylindrical",
    21: "CT_Orthographic",
    22: "CT_Polyconic",
    23: "CT_Robinson",
    24: "CT_Sinusoidal",
    25: "CT_VanDerGrinten",
    26: "CT_NewZealandMapGrid",
    27: "CT_TransvMercator_SouthOriented",
    28: "CT_CylindricalEqualArea",
    9815: "CT_HotineObliqueMercatorAzimuthCenter",
}
_CT_MERCATOR_2SP_EXT = -7  # libgeotiff's internal "extended" code for EPSG method 9805

# EPSG projection method code -> GeoTIFF CT code (libgeotiff's EPSGProjMethodToCTProjMethod).
_EPSG_METHOD_TO_CT = {
    9801: 9, 9802: 8, 9803: 8, 9804: 7, 9805: 7, 9841: 7, 1024: 7, 9806: 18, 9807: 1, 9808: 27,
    9809: 16, 9810: 15, 9829: 15, 9811: 26, 9812: 3, 9813: 4, 9814: 5, 9815: 9815, 9816: _USER_DEFINED,
    9818: 22, 9820: 10, 1027: 10, 9822: 11, 9834: 28, 1028: 17, 1029: 17, 9823: 17, 9842: 17,
}  # fmt: skip

# Which GeoKey each of the 7 normalised projection parameters stands for, and which EPSG parameter
# code feeds it when the projection comes from an EPSG conversion (libgeotiff's SetGTParamIds).
_PARAM_LAYOUT: dict[int, tuple[tuple[int, int], ...]] = {
    # ct: ((geokey, epsg_param_code) for index 0..6); 0 = unused slot
    18: ((3081, 8801), (3080, 8802), (0, 0), (0, 0), (0, 0), (3082, 8806), (3083, 8807)),
    3: ((3089, 8811), (3088, 8812), (3094, 8813), (3096, 8814), (3093, 8815), (3082, 8816), (3083, 8817)),
    4: ((3089, 8811), (3088, 8812), (3094, 8813), (0, 0), (3093, 8815), (3082, 8806), (3083, 8807)),
    1: ((3081, 8801), (3080, 8802), (0, 0), (0, 0), (3092, 8805), (3082, 8806), (3083, 8807)),
    8: ((3085, 8821), (3084, 8822), (3078, 8823), (3079, 8824), (0, 0), (3082, 8826), (3083, 8827)),
    11: ((3078, 8823), (3079, 8824), (3081, 8821), (3080, 8822), (0, 0), (3082, 8826), (3083, 8827)),
    5: ((3089, 0), (3088, 0), (0, 0), (0, 0), (0, 0), (3082, 0), (3083, 0)),
    10: ((3089, 8801), (3088, 8802), (0, 0), (0, 0), (0, 0), (3082, 8806), (3083, 8807)),
    28: ((3078, 8823), (3080, 8822), (0, 0), (0, 0), (0, 0), (3082, 8826), (3083, 8827)),
    17: ((3089, 8801), (3088, 8802), (3078, 8823), (0, 0), (0, 0), (3082, 8806), (3083, 8807)),
}  # fmt: skip
_PARAM_LAYOUT[_CT_MERCATOR_2SP_EXT] = (
    (3081, 8801), (3080, 8802), (3078, 8823), (0, 0), (0, 0), (3082, 8806), (3083, 8807)
)  # fmt: skip
for _ct in (26, 22):
    _PARAM_LAYOUT[_ct] = _PARAM_LAYOUT[18]
_PARAM_LAYOUT[9815] = _PARAM_LAYOUT[3]
for _ct in (9, 7, 16, 27):
    _PARAM_LAYOUT[_ct] = _PARAM_LAYOUT[1]
_PARAM_LAYOUT[15] = ((3081, 8801), (3095, 8802), (0, 0), (0, 0), (3092, 8805), (3082, 8806), (3083, 8807))

_LINEAR_PARAM_KEYS = frozenset({3082, 3083, 3086, 3087, 3090, 3091})
_ANGULAR_PARAM_KEYS = frozenset({3078, 3079, 3080, 3081, 3084, 3085, 3088, 3089, 3095, 3096})

# Units GDAL's citation parser knows ("LUnits = ..."), in metres.
_CITATION_UNITS = (
    ("meters", 1.0), ("meter", 1.0), ("m", 1.0), ("centimeters", 0.01), ("centimeter", 0.01),
    ("cm", 0.01), ("millimeters", 0.001), ("millimeter", 0.001), ("mm", 0.001), ("kilometers", 1000.0),
    ("kilometer", 1000.0), ("km", 1000.0), ("us_survey_feet", 0.3048006096012192),
    ("us_survey_foot", 0.3048006096012192), ("feet", 0.3048006096012192), ("foot", 0.3048006096012192),
    ("ft", 0.3048006096012192), ("international_feet", 0.3048), ("international_foot", 0.3048),
    ("inches", 0.0254000508001), ("inch", 0.0254000508001), ("in", 0.0254000508001), ("yards", 0.9144),
    ("yard", 0.9144), ("yd", 0.9144), ("miles", 1304.544), ("mile", 1304.544), ("mi", 1304.544),
    ("modified_american_feet", 0.3048122530), ("modified_american_foot", 0.3048122530),
    ("clarke_feet", 0.3047972651), ("clarke_foot", 0.3047972651), ("indian_feet", 0.3047995142),
    ("indian_foot", 0.3047995142), ("Yard_Indian", 0.9143985307444408), ("Foot_Clarke", 0.30479726540),
    ("Foot_Gold_Coast", 0.3047997101815088), ("Link_Clarke", 0.2011661951640),
    ("Yard_Sears", 0.9143984146160287), ("50_Kilometers", 50000.0), ("150_Kilometers", 150000.0),
)  # fmt: skip
_CITATION_FIELDS = {
    "PCS Name = ": "pcs",
    "PRJ Name = ": "prj",
    "LUnits = ": "lunits",
    "GCS Name = ": "gcs",
    "Datum = ": "datum",
    "Ellipsoid = ": "ellipsoid",
    "Primem = ": "primem",
    "AUnits = ": "aunits",
}


# ---------------------------------------------------------------------------------------------------------
# Directory parsing


def _u16(value: Any, what: str) -> int:
    try:
        number = -1 if isinstance(value, bool) else operator.index(value)
    except TypeError:
        number = -1
    if not 0 <= number <= 0xFFFF:
        raise MalformedTiffError(f"GeoKeyDirectory {what} is {value!r}, not an unsigned 16-bit integer")
    return number


def parse_geokey_directory(
    directory: Sequence[int], double_params: Sequence[float] | None, ascii_params: str | None
) -> dict[int, GeoKeyValue]:
    """Read the GeoKeys of a GeoKeyDirectoryTag into ``{key_id: value}``, as libgeotiff does.

    Parameters
    ----------
    directory : sequence of int
        The GeoKeyDirectoryTag (34735) values: a 4-short header (KeyDirectoryVersion, KeyRevision,
        MinorRevision, NumberOfKeys) then 4 shorts per key (KeyID, TIFFTagLocation, Count, Value_Offset).
    double_params : sequence of float or None
        The GeoDoubleParamsTag (34736) values, or None when the file has none.
    ascii_params : str, bytes or None
        The GeoAsciiParamsTag (34737) text (one character per byte: bytes are decoded as latin-1), with
        or without its terminating NUL, or None when absent.

    Returns
    -------
    dict
        Key id to value: an ``int`` for a single SHORT, a ``float`` for a single DOUBLE, a ``str`` for an
        ASCII value (its trailing ``|`` removed), a tuple for multi-valued SHORT/DOUBLE keys. The header
        is stored under :data:`GEOKEY_DIRECTORY_VERSION` (0) as ``(version, revision, minor_revision)``.
        When a key id repeats, the last entry wins (as in libgeotiff).

    Raises
    ------
    MalformedTiffError
        When the header or a key entry is out of range: fewer shorts than the announced keys, a count or
        offset past the end of the directory / double / ASCII params, a missing params tag, an unknown
        TIFFTagLocation, or an inline (location 0) key with a count other than 1.
    UnsupportedTiffError
        For a KeyDirectoryVersion above 1 (libgeotiff refuses those too).
    """
    n_shorts = len(directory)
    if n_shorts < 4:
        raise MalformedTiffError(f"GeoKeyDirectory has {n_shorts} values, fewer than its 4-value header")
    version = _u16(directory[0], "KeyDirectoryVersion")
    revision = _u16(directory[1], "KeyRevision")
    minor = _u16(directory[2], "MinorRevision")
    n_keys = _u16(directory[3], "NumberOfKeys")
    if version > 1:
        raise UnsupportedTiffError(f"GeoKeyDirectory version {version} (only version 1 is defined)")
    if 4 + 4 * n_keys > n_shorts:
        raise MalformedTiffError(
            f"GeoKeyDirectory announces {n_keys} keys ({4 + 4 * n_keys} values) but holds {n_shorts} values"
        )
    n_doubles = 0 if double_params is None else len(double_params)
    if isinstance(ascii_params, bytes | bytearray):
        ascii_params = bytes(ascii_params).decode("latin-1")
    ascii_text = None if ascii_params is None else str(ascii_params)
    if ascii_text and ascii_text.endswith("\x00"):
        ascii_text = ascii_text[:-1]  # the terminating NUL does not count, as in libgeotiff

    keys: dict[int, GeoKeyValue] = {GEOKEY_DIRECTORY_VERSION: (version, revision, minor)}
    for i in range(n_keys):
        base = 4 + 4 * i
        key_id = _u16(directory[base], f"key {i} id")
        location = _u16(directory[base + 1], f"key {key_id} location")
        count = _u16(directory[base + 2], f"key {key_id} count")
        offset = _u16(directory[base + 3], f"key {key_id} value/offset")
        value: GeoKeyValue
        if location == _LOC_SHORT:
            if count != 1:
                raise MalformedTiffError(f"GeoKey {key_id} is stored inline (location 0) with count {count}")
            value = offset
        elif location == _LOC_DIRECTORY:
            if offset + count > n_shorts:
                raise MalformedTiffError(
                    f"GeoKey {key_id} reads shorts {offset}..{offset + count} of a {n_shorts}-value directory"
                )
            shorts = tuple(_u16(v, f"key {key_id} value") for v in directory[offset : offset + count])
            value = shorts[0] if count == 1 else shorts
        elif location == _LOC_DOUBLE:
            if double_params is None:
                raise MalformedTiffError(f"GeoKey {key_id} refers to GeoDoubleParamsTag, which is absent")
            if offset + count > n_doubles:
                raise MalformedTiffError(
                    f"GeoKey {key_id} reads doubles {offset}..{offset + count} of {n_doubles} GeoDoubleParams"
                )
            try:
                doubles = tuple(float(v) for v in double_params[offset : offset + count])
            except (TypeError, ValueError) as exc:
                raise MalformedTiffError(f"GeoDoubleParams hold a non-number: {exc}") from None
            value = doubles[0] if count == 1 else doubles
        elif location == _LOC_ASCII:
            if ascii_text is None:
                raise MalformedTiffError(f"GeoKey {key_id} refers to GeoAsciiParamsTag, which is absent")
            value = _ascii_value(key_id, ascii_text, offset, count)
        else:
            raise MalformedTiffError(f"GeoKey {key_id} has unknown TIFFTagLocation {location}")
        if key_id != GEOKEY_DIRECTORY_VERSION:
            keys[key_id] = value
    return keys


def _ascii_value(key_id: int, text: str, offset: int, count: int) -> str:
    """One key's characters of GeoAsciiParams, with libgeotiff's tolerance for sloppy writers."""
    length = len(text)
    if count > 0 and offset + count == length + 1:
        count -= 1  # a writer counted the NUL instead of a final '|'
    elif offset < length < offset + count:
        count = length - offset  # libgeotiff truncates (with a warning)
    elif offset + count > length:
        raise MalformedTiffError(
            f"GeoKey {key_id} reads characters {offset}..{offset + count} of {length} GeoAsciiParams"
        )
    value = text[offset : offset + count].split("\x00", 1)[0]
    return value[:-1] if value.endswith("|") else value


def raster_is_point(keys: Mapping[int, Any]) -> bool:
    """True when GTRasterTypeGeoKey (1025) is RasterPixelIsPoint (2): tie points are pixel centres."""
    return _Keys(keys).short(GT_RASTER_TYPE) == _PIXEL_IS_POINT


# ---------------------------------------------------------------------------------------------------------
# Typed access to parsed keys (libgeotiff ignores a key stored with the wrong type)


class _Keys:
    def __init__(self, keys: Mapping[int, Any]):
        self._keys = keys

    def has_geokeys(self) -> bool:
        return any(k != GEOKEY_DIRECTORY_VERSION for k in self._keys)

    def version(self) -> tuple[int, int, int]:
        v = self._keys.get(GEOKEY_DIRECTORY_VERSION)
        if isinstance(v, tuple) and len(v) == 3 and all(isinstance(x, int) for x in v):
            return v
        return (1, 1, 0)

    def short(self, key: int) -> int | None:
        v = self._keys.get(key)
        if isinstance(v, tuple):
            v = v[0] if v else None
        if isinstance(v, bool) or not isinstance(v, int):
            return None
        return v

    def code(self, key: int) -> int | None:
        """A SHORT code as libgeotiff's GTIFKeyGetSSHORT sees it (a C ``short``)."""
        v = self.short(key)
        if v is None:
            return None
        v &= 0xFFFF
        return v - 0x10000 if v >= 0x8000 else v

    def doubles(self, key: int, n: int = 1) -> tuple[float, ...]:
        v = self._keys.get(key)
        vals = v if isinstance(v, tuple) else (v,)
        if not vals or not all(isinstance(x, float) for x in vals):
            return ()
        return vals[:n]

    def double(self, key: int) -> float | None:
        vals = self.doubles(key)
        return vals[0] if vals else None

    def ascii(self, key: int) -> str | None:
        v = self._keys.get(key)
        return v if isinstance(v, str) else None


# ---------------------------------------------------------------------------------------------------------
# EPSG look-ups (what libgeotiff asks PROJ), cached


def _epsg_crs(code: int) -> CRS | None:
    # Not cached: pyproj objects must not be shared between threads; plain-data look-ups are cached.
    if code <= 0:
        return None
    try:
        return CRS.from_epsg(code)
    except CRSError:
        return None


def _id_code(obj: dict | None) -> int | None:
    ident = (obj or {}).get("id")
    if isinstance(ident, dict) and ident.get("authority") == "EPSG":
        try:
            return int(ident["code"])
        except (TypeError, ValueError):
            return None
    return None


@dataclass(frozen=True)
class _PcsInfo:
    name: str
    conversion: int
    unit: int
    gcs: int


@lru_cache(maxsize=256)
def _pcs_info(code: int) -> _PcsInfo | None:
    crs = _epsg_crs(code)
    if crs is None:
        return None
    j = crs.to_json_dict()
    if j.get("type") != "ProjectedCRS":
        return None
    op = crs.coordinate_operation
    conv = _id_code(op.to_json_dict()) if op is not None else None
    unit = crs.axis_info[0].unit_code if crs.axis_info else None
    gcs = _id_code(j.get("base_crs"))
    return _PcsInfo(
        crs.name,
        conv if conv is not None else _USER_DEFINED,
        int(unit) if unit and unit.isdigit() else _USER_DEFINED,
        gcs if gcs is not None else _USER_DEFINED,
    )


@dataclass(frozen=True)
class _GcsInfo:
    name: str
    datum: int
    pm: int
    angular_unit: int


_WELL_KNOWN_GCS = {
    4267: ("NAD27", 6267),
    4269: ("NAD83", 6269),
    4326: ("WGS 84", 6326),
    4322: ("WGS 72", 6322),
}


@lru_cache(maxsize=256)
def _gcs_info(code: int) -> _GcsInfo | None:
    if code in _WELL_KNOWN_GCS:  # libgeotiff answers these itself (with DMS-hemisphere angular units)
        name, datum = _WELL_KNOWN_GCS[code]
        return _GcsInfo(name, datum, 8901, 9108)
    crs = _epsg_crs(code)
    if crs is None:
        return None
    j = crs.to_json_dict()
    if j.get("type") not in ("GeographicCRS", "GeodeticCRS"):
        return None
    datum = _datum_code(crs)
    pm = _id_code(crs.prime_meridian.to_json_dict()) if crs.prime_meridian is not None else None
    unit = crs.axis_info[0].unit_code if crs.axis_info else None
    return _GcsInfo(
        crs.name,
        datum if datum is not None else _USER_DEFINED,
        pm if pm is not None else _USER_DEFINED,
        int(unit) if unit and unit.isdigit() else _USER_DEFINED,
    )


_WELL_KNOWN_DATUMS = {
    6267: ("North American Datum 1927", 7008),
    6269: ("North American Datum 1983", 7019),
    6326: ("World Geodetic System 1984", 7030),
    6322: ("World Geodetic System 1972", 7043),
}


@lru_cache(maxsize=256)
def _datum_info(code: int) -> tuple[str, int] | None:
    """(name, ellipsoid code) of an EPSG geodetic datum; ensembles are seen as their datum."""
    if code in _WELL_KNOWN_DATUMS:
        return _WELL_KNOWN_DATUMS[code]
    if code <= 0 or code == _USER_DEFINED:
        return None
    try:
        datum = Datum.from_epsg(code)
    except CRSError:
        return None
    j = datum.to_json_dict()
    if j.get("type") not in ("GeodeticReferenceFrame", "DynamicGeodeticReferenceFrame", "DatumEnsemble"):
        return None
    name = datum.name
    if j.get("type") == "DatumEnsemble":
        if name.endswith(" ensemble"):
            name = name[: -len(" ensemble")]
        ell_json = j.get("ellipsoid")
        if not isinstance(ell_json, dict) or "name" not in ell_json:
            return None
        ell = _id_code(ell_json)
        if ell is None:
            try:
                ell = _id_code(Ellipsoid.from_name(ell_json["name"], auth_name="EPSG").to_json_dict())
            except CRSError:
                ell = None
    else:
        ell = _id_code(datum.ellipsoid.to_json_dict()) if datum.ellipsoid is not None else None
    return name, ell if ell is not None else _USER_DEFINED


_WELL_KNOWN_ELLIPSOIDS = {
    7008: ("Clarke 1866", 6378206.4, 6356583.8),
    7019: ("GRS 1980", 6378137.0, 6378137.0 * (1 - 1 / 298.257222101)),
    7030: ("WGS 84", 6378137.0, 6378137.0 * (1 - 1 / 298.257223563)),
    7043: ("WGS 72", 6378135.0, 6378135.0 * (1 - 1 / 298.26)),
}


@lru_cache(maxsize=256)
def _ellipsoid_info(code: int) -> tuple[str, float, float] | None:
    """(name, semi-major, semi-minor) in metres."""
    if code in _WELL_KNOWN_ELLIPSOIDS:
        return _WELL_KNOWN_ELLIPSOIDS[code]
    if code <= 0 or code == _USER_DEFINED:
        return None
    try:
        ell = Ellipsoid.from_epsg(code)
    except CRSError:
        return None
    return ell.name, ell.semi_major_metre, ell.semi_minor_metre


@lru_cache(maxsize=64)
def _pm_info(code: int) -> tuple[str, float] | None:
    """(name, longitude from Greenwich in degrees)."""
    if code == 8901:
        return "Greenwich", 0.0
    if code <= 0 or code == _USER_DEFINED:
        return None
    try:
        pm = PrimeMeridian.from_epsg(code)
    except CRSError:
        return None
    return pm.name, pm.longitude * pm.unit_conversion_factor * 180.0 / math.pi


@lru_cache(maxsize=1)
def _units_by_code() -> dict[int, tuple[str, float, str]]:
    units = get_units_map(auth_name="EPSG", allow_deprecated=True)
    return {int(u.code): (u.name, u.conv_factor, u.category) for u in units.values() if u.code.isdigit()}


def _uom_length(code: int) -> tuple[str, float] | None:
    """(name, metres) of an EPSG length unit (libgeotiff's GTIFGetUOMLengthInfo)."""
    builtin = {9001: ("metre", 1.0), 9002: ("foot", 0.3048), 9003: ("US survey foot", 12.0 / 39.37)}
    if code in builtin:
        return builtin[code]
    unit = _units_by_code().get(code) if code != _USER_DEFINED else None
    return (unit[0], unit[1]) if unit else None


_ANGLE_UNITS = {
    9101: ("radian", 180.0 / math.pi),
    9102: ("degree", 1.0), 9107: ("degree", 1.0), 9108: ("degree", 1.0), 9110: ("degree", 1.0),
    9122: ("degree", 1.0),
    9103: ("arc-minute", 1 / 60.0),
    9104: ("arc-second", 1 / 3600.0),
    9105: ("grad", 180.0 / 200.0),
    9106: ("gon", 180.0 / 200.0),
    9109: ("microradian", 180.0 / (math.pi * 1000000.0)),
}  # fmt: skip


def _uom_angle(code: int) -> tuple[str, float] | None:
    """(name, degrees) of an EPSG angle unit (libgeotiff's GTIFGetUOMAngleInfo)."""
    if code in _ANGLE_UNITS:
        return _ANGLE_UNITS[code]
    unit = _units_by_code().get(code) if code != _USER_DEFINED else None
    return (unit[0], unit[1] * 180.0 / math.pi) if unit else None


def _angle_to_degrees(value: float, unit: int) -> float:
    """libgeotiff's GTIFAngleToDD: 9110 is packed sexagesimal DDD.MMSSsss."""
    if unit == 9110:
        if not -999.9 < value < 999.9:
            return value
        text = f"{value:.7f}"
        whole, _, frac = text.partition(".")
        degrees = abs(int(whole)) + int(frac[0:2]) / 60.0 + float(frac[2:4] + "." + frac[4:]) / 3600.0
        return -degrees if text.startswith("-") else degrees
    if unit != _USER_DEFINED:
        info = _uom_angle(unit)
        return value * (info[1] if info else 1.0)
    return value


@lru_cache(maxsize=256)
def _conversion_info(code: int) -> tuple[int, tuple[float, ...]] | None:
    """(EPSG method code, the 7 normalised parameters) of an EPSG conversion (GTIFGetProjTRFInfo)."""
    if 16001 <= code <= 16060 or 16101 <= code <= 16160:
        zone, north = (code - 16000, True) if code <= 16060 else (code - 16100, False)
        return 9807, (0.0, -183.0 + 6 * zone, 0.0, 0.0, 0.9996, 500000.0, 0.0 if north else 10000000.0)
    if code <= 0 or code == _USER_DEFINED:
        return None
    try:
        op = CoordinateOperation.from_epsg(code)
    except CRSError:
        return None
    if op.type_name != "Conversion":
        return None
    try:
        method = int(op.method_code)
    except (TypeError, ValueError):
        return None
    ct = _EPSG_METHOD_TO_CT.get(method, method)
    layout = _PARAM_LAYOUT.get(_CT_MERCATOR_2SP_EXT if method == 9805 else ct)
    wanted = [epsg for _, epsg in layout] if layout else [0] * 7
    by_code = {}
    for p in op.params:
        value = p.value * p.unit_conversion_factor
        by_code[int(p.code)] = value * 180.0 / math.pi if p.unit_category == "angular" else value
    params = []
    for epsg in wanted:
        default = 90.0 if epsg == 8814 else 1.0 if epsg in (8805, 8815, 8819) else 0.0
        if epsg and epsg not in by_code:
            # Methods 9812 and 9829 name some parameters differently from their siblings.
            epsg = {8816: 8806, 8817: 8807}.get(epsg, epsg) if ct == 3 else epsg
            epsg = {8801: 8832, 8802: 8833}.get(epsg, epsg) if ct == 15 else epsg
        params.append(by_code.get(epsg, default) if epsg else default)
    return method, tuple(params)


# ---------------------------------------------------------------------------------------------------------
# GTIFGetDefn: normalise the keys into one definition


@dataclass
class _Defn:
    model: int = _USER_DEFINED
    pcs: int = _USER_DEFINED
    gcs: int = _USER_DEFINED
    uom_length: int = _USER_DEFINED
    uom_length_m: float = 1.0
    uom_angle: int = _USER_DEFINED
    uom_angle_deg: float = 1.0
    datum: int = _USER_DEFINED
    ellipsoid: int = _USER_DEFINED
    semi_major: float = 0.0
    semi_minor: float = 0.0
    pm: int = _USER_DEFINED
    pm_long: float = 0.0
    towgs84: tuple[float, ...] = ()
    proj_code: int = _USER_DEFINED
    projection: int = _USER_DEFINED  # EPSG method code
    ct: int = _USER_DEFINED
    ct_source: str = ""
    parms: list[float] = field(default_factory=lambda: [0.0] * 7)
    parm_ids: list[int] = field(default_factory=lambda: [0] * 7)


def _normalize(k: _Keys) -> _Defn:
    d = _Defn()
    if (v := k.code(GT_MODEL_TYPE)) is not None:
        d.model = v
    if (v := k.code(GEOG_LINEAR_UNITS)) is not None:
        d.uom_length = v
    if (v := k.code(PROJECTED_CS_TYPE)) is not None:
        d.pcs = v
    if d.pcs != _USER_DEFINED and (pcs := _pcs_info(d.pcs)) is not None:
        d.proj_code, d.uom_length, d.gcs = pcs.conversion, pcs.unit, pcs.gcs
        d.ct_source = f"ProjectedCSTypeGeoKey 3072 = {d.pcs}"
    if d.proj_code == _USER_DEFINED and (v := k.code(PROJECTION)) is not None:
        d.proj_code = v
        d.ct_source = f"ProjectionGeoKey 3074 = {v}"
    if d.proj_code != _USER_DEFINED:
        if (trf := _conversion_info(d.proj_code)) is not None:
            d.projection, params = trf
            d.parms = list(params)
        d.ct = _EPSG_METHOD_TO_CT.get(d.projection, d.projection)
        layout = _PARAM_LAYOUT.get(_CT_MERCATOR_2SP_EXT if d.projection == 9805 else d.ct)
        if layout:
            d.parm_ids = [key for key, _ in layout]
    if (v := k.code(GEOGRAPHIC_TYPE)) is not None:
        d.gcs = v
    if d.gcs < 1 or d.gcs >= _USER_DEFINED:
        d.gcs = _USER_DEFINED
    if d.gcs != _USER_DEFINED and (gcs := _gcs_info(d.gcs)) is not None:
        d.datum, d.pm, d.uom_angle = gcs.datum, gcs.pm, gcs.angular_unit
    if (v := k.code(GEOG_ANGULAR_UNITS)) is not None:
        d.uom_angle = v
    if d.uom_angle != _USER_DEFINED and (angle := _uom_angle(d.uom_angle)) is not None:
        d.uom_angle_deg = angle[1]
    if (v := k.code(GEOG_GEODETIC_DATUM)) is not None:
        d.datum = v
    if d.datum != _USER_DEFINED and (datum := _datum_info(d.datum)) is not None:
        d.ellipsoid = datum[1]
    if (v := k.code(GEOG_ELLIPSOID)) is not None:
        d.ellipsoid = v
    if d.ellipsoid != _USER_DEFINED and (ell := _ellipsoid_info(d.ellipsoid)) is not None:
        d.semi_major, d.semi_minor = ell[1], ell[2]
    if (v := k.double(GEOG_SEMI_MAJOR)) is not None:
        d.semi_major = v
    if (v := k.double(GEOG_SEMI_MINOR)) is not None:
        d.semi_minor = v
    if (v := k.double(GEOG_INV_FLATTENING)) is not None:
        d.semi_minor = d.semi_major * (1 - 1.0 / v) if v != 0.0 else d.semi_major
    if (v := k.code(GEOG_PRIME_MERIDIAN)) is not None:
        d.pm = v
    if d.pm != _USER_DEFINED:
        if (pm := _pm_info(d.pm)) is not None:
            d.pm_long = pm[1]
    else:
        if (v := k.double(GEOG_PRIME_MERIDIAN_LONG)) is not None:
            d.pm_long = v
        d.pm_long = _angle_to_degrees(d.pm_long, d.uom_angle)
    d.towgs84 = k.doubles(GEOG_TOWGS84, 7)
    if (v := k.code(PROJ_LINEAR_UNITS)) is not None:
        d.uom_length = v
    if d.uom_length != _USER_DEFINED:
        if (length := _uom_length(d.uom_length)) is not None:
            d.uom_length_m = length[1]
    elif (v := k.double(PROJ_LINEAR_UNIT_SIZE)) is not None:
        d.uom_length_m = v
    if (v := k.code(PROJ_COORD_TRANS)) is not None:
        d.ct = v
        d.ct_source = f"GeoKey 3075 = {v}"
        _fetch_proj_parms(k, d)
    return d


def _first(k: _Keys, *keys: int, default: float = 0.0) -> float:
    for key in keys:
        if (v := k.double(key)) is not None:
            return v
    return default


def _fetch_proj_parms(k: _Keys, d: _Defn) -> None:
    """libgeotiff's GTIFFetchProjParms: projection parameters from the Proj*GeoKeys, with its fallbacks."""
    fe = _first(k, PROJ_FALSE_EASTING, PROJ_CENTER_EASTING, PROJ_FALSE_ORIGIN_EASTING)
    fn = _first(k, PROJ_FALSE_NORTHING, PROJ_CENTER_NORTHING, PROJ_FALSE_ORIGIN_NORTHING)
    lon = _first(k, PROJ_NAT_ORIGIN_LONG, PROJ_FALSE_ORIGIN_LONG, PROJ_CENTER_LONG)
    lat = _first(k, PROJ_NAT_ORIGIN_LAT, PROJ_FALSE_ORIGIN_LAT, PROJ_CENTER_LAT)
    scale = _first(k, PROJ_SCALE_AT_NAT_ORIGIN, PROJ_SCALE_AT_CENTER, default=1.0)
    ct = d.ct
    slots: dict[int, tuple[int, float]] = {5: (PROJ_FALSE_EASTING, fe), 6: (PROJ_FALSE_NORTHING, fn)}
    if ct == 14:  # Stereographic
        slots |= {0: (PROJ_CENTER_LAT, lat), 1: (PROJ_CENTER_LONG, lon), 4: (PROJ_SCALE_AT_NAT_ORIGIN, scale)}
    elif ct == 7:  # Mercator: 2SP when a standard parallel is given
        slots |= {0: (PROJ_NAT_ORIGIN_LAT, lat), 1: (PROJ_NAT_ORIGIN_LONG, lon)}
        sp1 = k.double(PROJ_STD_PARALLEL1)
        nat_scale = k.double(PROJ_SCALE_AT_NAT_ORIGIN)
        if sp1 is not None:
            slots[2] = (PROJ_STD_PARALLEL1, sp1)
        if nat_scale is not None or sp1 is None:
            slots[4] = (PROJ_SCALE_AT_NAT_ORIGIN, nat_scale if nat_scale is not None else 1.0)
    elif ct in (9, 16, 1, 27, 18, 22):  # LCC 1SP, oblique stereo, TM, TM south, Cassini, polyconic
        slots |= {0: (PROJ_NAT_ORIGIN_LAT, lat), 1: (PROJ_NAT_ORIGIN_LONG, lon)}
        slots[4] = (PROJ_SCALE_AT_NAT_ORIGIN, scale)
    elif ct in (3, 9815, 4):  # Hotine oblique Mercator (A, B), Laborde
        slots |= {0: (PROJ_CENTER_LAT, lat), 1: (PROJ_CENTER_LONG, lon)}
        slots[2] = (PROJ_AZIMUTH_ANGLE, _first(k, PROJ_AZIMUTH_ANGLE))
        if ct != 4:
            slots[3] = (PROJ_RECTIFIED_GRID_ANGLE, _first(k, PROJ_RECTIFIED_GRID_ANGLE, default=90.0))
        slots[4] = (PROJ_SCALE_AT_CENTER, scale)
    elif ct in (12, 20, 19, 10, 21, 26):  # azimuthal equidistant, Miller, gnomonic, LAEA, ortho, NZMG
        slots |= {0: (PROJ_CENTER_LAT, lat), 1: (PROJ_CENTER_LONG, lon)}
    elif ct == 17:  # equirectangular
        slots |= {0: (PROJ_CENTER_LAT, lat), 1: (PROJ_CENTER_LONG, lon)}
        slots[2] = (PROJ_STD_PARALLEL1, _first(k, PROJ_STD_PARALLEL1))
    elif ct in (23, 24, 25):  # Robinson, sinusoidal, Van der Grinten
        slots[1] = (PROJ_CENTER_LONG, lon)
    elif ct == 15:  # polar stereographic
        pole_lon = _first(k, PROJ_STRAIGHT_VERT_POLE_LONG, PROJ_NAT_ORIGIN_LONG, PROJ_FALSE_ORIGIN_LONG,
                          PROJ_CENTER_LONG)  # fmt: skip
        slots |= {0: (PROJ_NAT_ORIGIN_LAT, lat), 1: (PROJ_STRAIGHT_VERT_POLE_LONG, pole_lon)}
        slots[4] = (PROJ_SCALE_AT_NAT_ORIGIN, scale)
    elif ct == 8:  # LCC 2SP (a missing second parallel zeroes the first: libgeotiff's behaviour)
        sp1 = _first(k, PROJ_STD_PARALLEL1)
        sp2 = k.double(PROJ_STD_PARALLEL2)
        if sp2 is None:
            sp1, sp2 = 0.0, 0.0
        slots |= {0: (PROJ_FALSE_ORIGIN_LAT, lat), 1: (PROJ_FALSE_ORIGIN_LONG, lon)}
        slots |= {2: (PROJ_STD_PARALLEL1, sp1), 3: (PROJ_STD_PARALLEL2, sp2)}
    elif ct in (11, 13):  # Albers, equidistant conic
        slots |= {0: (PROJ_STD_PARALLEL1, _first(k, PROJ_STD_PARALLEL1))}
        slots |= {1: (PROJ_STD_PARALLEL2, _first(k, PROJ_STD_PARALLEL2))}
        slots |= {2: (PROJ_NAT_ORIGIN_LAT, lat), 3: (PROJ_NAT_ORIGIN_LONG, lon)}
    elif ct == 28:  # cylindrical equal area
        slots |= {0: (PROJ_STD_PARALLEL1, _first(k, PROJ_STD_PARALLEL1))}
        slots |= {1: (PROJ_NAT_ORIGIN_LONG, _first(k, PROJ_NAT_ORIGIN_LONG, PROJ_FALSE_ORIGIN_LONG,
                                                   PROJ_CENTER_LONG))}  # fmt: skip
    else:
        return  # libgeotiff leaves the parameters alone for methods it does not know
    for i, (key, value) in slots.items():
        d.parm_ids[i] = key
        if key in _LINEAR_PARAM_KEYS and d.uom_length_m not in (0.0, 1.0):
            value *= d.uom_length_m
        elif key in _ANGULAR_PARAM_KEYS and d.uom_angle_deg not in (0.0, 1.0):
            value *= d.uom_angle_deg
        d.parms[i] = value


# ---------------------------------------------------------------------------------------------------------
# GDAL's citation handling (gt_citation.cpp)


_IMAGINE_KEYS = ("NAD = ", "Datum = ", "Ellipsoid = ", "Units = ")


def _imagine_citation(text: str, key: int) -> str | None:
    """GDAL's ImagineCitationTranslation: ERDAS citations rewritten as "PCS Name = x|Datum = y|..."."""
    if not text.lower().startswith("imagine geotiff support"):
        return None
    n = len(text)

    def at(i: int) -> str:
        return text[i] if 0 <= i < n else "\0"

    def last_char(start: int, stop: int) -> int:
        # GDAL steps back from the character ending the value over trailing blanks, its own way.
        if at(stop) in "\0\n ":
            stop -= 1
        back = stop - 1
        while back >= 0 and at(back) in " \0\n":
            back -= 1
        return back if back != stop - 1 else stop

    def value_end(start: int) -> int:
        ends = [n, *(i for i in [text.find("\n", start)] if i >= 0)]
        ends += [i for name in _IMAGINE_KEYS if (i := text.find(name, start)) >= 0]
        return min(ends)

    out = ""
    start = text.find("$")
    if start >= 0:
        if (newline := text.find("\n", start)) >= 0:
            start = newline + 1
        stop = value_end(start)
        prefix = ""
        if key == PCS_CITATION:
            prefix = "PRJ Name = " if "Projection = " in text else "PCS Name = "
        elif key == GT_CITATION:
            prefix = "PCS Name = "
        elif key == GEOG_CITATION and "Unable to" not in text[start:]:
            prefix = "GCS Name = "
        if prefix:
            for marker in ("Projection Name = ", "Projection = "):
                if (i := text.find(marker)) >= 0:
                    start = i + len(marker)
            end = last_char(start, stop)
            if end >= start:
                out += f"{prefix}{text[start : end + 1]}|"
    for name in _IMAGINE_KEYS:
        if (i := text.find(name)) < 0:
            continue
        start = i + len(name)
        stop = value_end(start)
        if stop > start:
            out += "LUnits = " if name == "Units = " else name
            end = last_char(start, stop)
            if end >= start:
                out += f"{text[start : end + 1]}|"
    return out or None


def _parse_citation(text: str, key: int) -> dict[str, str] | None:
    """GDAL's CitationStringParse: the named fields of an ESRI/Erdas citation ("GCS Name = x|Datum = y")."""
    found: dict[str, str] = {}
    last, pos = None, 0
    while pos + 1 < len(text):
        end = text.find("|", pos)
        part, pos = (text[pos:end], end + 1) if end >= 0 else (text[pos:], len(text))
        last = part
        for marker, name in _CITATION_FIELDS.items():
            if marker in part and name not in found:
                found[name] = part[len(marker) :]  # GDAL assumes the marker starts the field
    if not found and key == GEOG_CITATION and last is not None:
        found["gcs"] = last
    return found or None


@dataclass
class _ProjState:
    name: str | None = None
    unit: tuple[str, float, int | None] | None = None
    unit_set: bool = False


def _set_citation(st: _ProjState, text: str, key: int, k: _Keys) -> tuple[bool, str]:
    """GDAL's SetCitationToSRS: take the PROJCS name and linear units from a citation.

    Returns whether a name was found, and the citation as GDAL leaves it (ERDAS ones are rewritten).
    """
    st.unit_set = st.unit is not None and st.unit[0].lower() not in ("", "unknown")
    ok = False
    text = _imagine_citation(text, key) or text
    names = _parse_citation(text, key)
    if names:
        if st.name is None:
            st.name = "unnamed"
        if "pcs" in names:
            st.name, ok = names["pcs"], True
        if "lunits" in names:
            lunits = names["lunits"]
            size = max(len(lunits) - 1, 0)
            factor = next(
                (f for unit, f in _CITATION_UNITS if unit[:size].lower() == lunits[:size].lower()), 0.0
            )
            if factor == 0.0:
                factor = k.double(PROJ_LINEAR_UNIT_SIZE) or 0.0
            st.unit, st.unit_set = (lunits, factor, None), True
    if key == GT_CITATION and text and "PCS Name = " not in text:
        if (not st.name and "Projected Coordinates" not in text) or (st.name and "unnamed" in st.name):
            st.name = text
        ok = True
    return ok, text


def _projcs_name_and_units(k: _Keys, d: _Defn) -> _ProjState:
    st = _ProjState()
    if d.pcs != _USER_DEFINED:
        pcs = _pcs_info(d.pcs)
        st.name, st.unit = (pcs.name if pcs else "unnamed"), ("unknown", 1.0, None)
    else:
        try_gt = True
        pcs_citation = k.ascii(PCS_CITATION)
        if pcs_citation is not None:
            try_gt = False
            found, pcs_citation = _set_citation(st, pcs_citation, PCS_CITATION, k)
            if not found:
                if not pcs_citation.lower().startswith("lunits = "):
                    st.name, st.unit = pcs_citation, ("unknown", 1.0, None)
                else:
                    try_gt = True
        if try_gt:
            gt_citation = k.ascii(GT_CITATION)
            found, gt_citation = _set_citation(st, gt_citation, GT_CITATION, k) if gt_citation else (True, "")
            st.name = gt_citation if not found else "unnamed"
            st.unit = ("unknown", 1.0, None)
    if (gt_citation := k.ascii(GT_CITATION)) is not None:
        _set_citation(st, gt_citation, GT_CITATION, k)
    return st


# ---------------------------------------------------------------------------------------------------------
# PROJJSON building blocks


def _angular_unit(name: str, degrees: float) -> Any:
    if name == "degree" and degrees == 1.0:
        return "degree"
    return {"type": "AngularUnit", "name": name, "conversion_factor": degrees * math.pi / 180.0}


def _linear_unit(name: str, metres: float, code: int | None) -> Any:
    if metres == 1.0 and name == "metre":
        return "metre"
    unit: dict[str, Any] = {"type": "LinearUnit", "name": name, "conversion_factor": metres}
    if code is not None:
        unit["id"] = {"authority": "EPSG", "code": code}
    return unit


def _epsg_id(code: int) -> dict[str, Any]:
    return {"authority": "EPSG", "code": code}


def _without_schema(j: dict) -> dict:
    return {key: value for key, value in j.items() if key != "$schema"}


def _equivalent(a: CRS, b: CRS) -> bool:
    try:
        return a.equals(b, ignore_axis_order=True)
    except CRSError:
        return False


# Braces would make pyproj take our WKT for JSON when reading it back; control characters are no use.
_NAME_CLEANUP = {**{c: " " for c in (*range(0x20), 0x7F)}, ord("{"): "(", ord("}"): ")"}


def _clean_names(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {
            k: v.translate(_NAME_CLEANUP) if k == "name" and isinstance(v, str) else _clean_names(v)
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [_clean_names(v) for v in obj]
    return obj


def _crs_from_json(j: dict, what: str) -> CRS:
    try:
        return CRS.from_json_dict(_clean_names(j))
    except CRSError as exc:
        raise UnsupportedTiffError(f"{what} that PROJ cannot represent: {exc}") from None


def _with_id_if_same(j: dict, code: int, what: str) -> CRS:
    """The CRS of ``j``, carrying EPSG:code when it is equivalent to it (as GDAL's import keeps it)."""
    crs = _crs_from_json(j, what)
    reference = _epsg_crs(code)
    if reference is not None and _equivalent(crs, reference):
        return _crs_from_json({**j, "id": _epsg_id(code)}, what)
    return crs


@lru_cache(maxsize=128)
def _official_name(name: str, crs_type: str) -> str | None:
    """The EPSG name of a CRS known under ``name`` or its ESRI alias (GDAL's GTIFGetEPSGOfficialName)."""
    if not re.fullmatch(r"[\w .()/+-]+", name) or name.startswith("+"):
        return None
    try:
        crs = CRS.from_user_input(name)
        j = crs.to_json_dict()
        esri_wkt = crs.to_wkt(version="WKT1_ESRI") or ""
    except CRSError:
        return None
    if (j.get("id") or {}).get("authority") != "EPSG" or j.get("type") != crs_type:
        return None
    # PROJ falls back to approximate matches; GDAL takes exact names and aliases only.
    esri_name = esri_wkt.split('"', 2)[1] if esri_wkt.count('"') >= 2 else ""
    if _normalized_name(name) not in (_normalized_name(crs.name), _normalized_name(esri_name)):
        return None
    return crs.name


@lru_cache(maxsize=128)
def _conversion_json(projection: str, params: tuple[tuple[str, float], ...], webmerc: bool) -> dict:
    """PROJ's conversion (and axes) for a GDAL WKT1 PROJECTION/PARAMETER set in degrees and metres."""
    for name, value in params:
        if not math.isfinite(value):
            raise UnsupportedTiffError(f"projection parameter {name} = {value}")
    parts = ",".join(f'PARAMETER["{name}",{value!r}]' for name, value in params)
    extension = (
        ',EXTENSION["PROJ4","+proj=merc +a=6378137 +b=6378137 +lat_ts=0 +lon_0=0 +x_0=0 +y_0=0 +k=1 '
        '+units=m +nadgrids=@null +wktext +no_defs"]'
        if webmerc
        else ""
    )
    wkt = (
        'PROJCS["p",GEOGCS["g",DATUM["d",SPHEROID["s",6378137,298.257223563]],PRIMEM["Greenwich",0],'
        f'UNIT["degree",0.0174532925199433]],PROJECTION["{projection}"],{parts},UNIT["metre",1]{extension}]'
    )
    try:
        crs = CRS.from_wkt(wkt)
    except CRSError as exc:
        raise UnsupportedTiffError(f"projection {projection} that PROJ cannot represent: {exc}") from None
    if crs.coordinate_operation is None:
        raise UnsupportedTiffError(f"projection {projection} that PROJ cannot represent")
    # The axes come along: PROJ gives polar projections their EPSG axis directions, as GDAL does.
    return {
        "conversion": _without_schema(crs.coordinate_operation.to_json_dict()),
        "axis": crs.to_json_dict()["coordinate_system"]["axis"],
    }


def _wkt1_projection(d: _Defn) -> tuple[str, tuple[tuple[str, float], ...], bool]:
    """The OGR ``Set*`` call GDAL makes for the normalised projection (gt_wkt_srs.cpp)."""
    p, ct = d.parms, d.ct
    lat0, lon0, fe, fn = ("latitude_of_origin", p[0]), ("central_meridian", p[1]), p[5], p[6]
    center = (("latitude_of_center", p[0]), ("longitude_of_center", p[1]))
    tail = (("false_easting", fe), ("false_northing", fn))
    scale = ("scale_factor", p[4])
    table: dict[int, tuple[str, tuple[tuple[str, float], ...]]] = {
        1: ("Transverse_Mercator", (lat0, lon0, scale)),
        27: ("Transverse_Mercator_South_Orientated", (lat0, lon0, scale)),
        16: ("Oblique_Stereographic", (lat0, lon0, scale)),
        14: ("Stereographic", (lat0, lon0, scale)),
        3: ("Hotine_Oblique_Mercator", (*center, ("azimuth", p[2]), ("rectified_grid_angle", p[3]), scale)),
        9815: ("Hotine_Oblique_Mercator_Azimuth_Center",
               (*center, ("azimuth", p[2]), ("rectified_grid_angle", p[3]), scale)),
        4: ("Laborde_Oblique_Mercator", (*center, ("azimuth", p[2]), scale)),
        13: ("Equidistant_Conic", (("standard_parallel_1", p[0]), ("standard_parallel_2", p[1]),
                                   ("latitude_of_center", p[2]), ("longitude_of_center", p[3]))),
        18: ("Cassini_Soldner", (lat0, lon0)),
        22: ("Polyconic", (lat0, lon0)),
        12: ("Azimuthal_Equidistant", center),
        20: ("Miller_Cylindrical", center),
        17: ("Equirectangular", (lat0, lon0, ("standard_parallel_1", p[2]))),
        19: ("Gnomonic", (lat0, lon0)),
        10: ("Lambert_Azimuthal_Equal_Area", center),
        21: ("Orthographic", (lat0, lon0)),
        23: ("Robinson", (("longitude_of_center", p[1]),)),
        24: ("Sinusoidal", (("longitude_of_center", p[1]),)),
        25: ("VanDerGrinten", (lon0,)),
        # OGR's SetPS: variant B (latitude of true scale) unless a scale is given or the origin is a pole.
        15: ("Polar_Stereographic", (lat0, lon0) if p[4] == 1.0 and abs(abs(p[0]) - 90) > 1e-8
             else (lat0, lon0, scale)),
        8: ("Lambert_Conformal_Conic_2SP", (("standard_parallel_1", p[2]), ("standard_parallel_2", p[3]),
                                            lat0, lon0)),
        9: ("Lambert_Conformal_Conic_1SP", (lat0, lon0, scale)),
        11: ("Albers_Conic_Equal_Area", (("standard_parallel_1", p[0]), ("standard_parallel_2", p[1]),
                                         ("latitude_of_center", p[2]), ("longitude_of_center", p[3]))),
        26: ("New_Zealand_Map_Grid", (lat0, lon0)),
        28: ("Cylindrical_Equal_Area", (("standard_parallel_1", p[0]), lon0)),
    }  # fmt: skip
    if ct == 7:
        if d.parm_ids[2] == PROJ_STD_PARALLEL1:
            return "Mercator_2SP", (("standard_parallel_1", p[2]), lat0, lon0, *tail), False
        return "Mercator_1SP", (lat0, lon0, scale, *tail), d.projection in (1024, 9841)
    if ct not in table:
        if ct == _USER_DEFINED:
            raise UnsupportedTiffError(_missing_projection(d))
        name = _CT_NAMES.get(ct, f"EPSG:{d.projection}" if ct == d.projection else f"code {ct}")
        source = f" ({d.ct_source})" if d.ct_source else ""
        raise UnsupportedTiffError(f"projection method {name}{source}")
    projection, params = table[ct]
    return projection, (*params, *tail), False


def _missing_projection(d: _Defn) -> str:
    if d.pcs != _USER_DEFINED and _pcs_info(d.pcs) is None:
        pcs = d.pcs & 0xFFFF
        return f"ProjectedCSTypeGeoKey 3072 = {pcs}, not a projected CRS in this PROJ's EPSG database"
    if d.proj_code != _USER_DEFINED:
        code = d.proj_code & 0xFFFF
        return f"ProjectionGeoKey 3074 = {code}, not a conversion in this PROJ's EPSG database"
    return "a projected CRS without ProjectedCSTypeGeoKey, ProjectionGeoKey or ProjCoordTransGeoKey"


# ---------------------------------------------------------------------------------------------------------
# GTIFGetOGISDefnAsOSR: the CRS


def crs_from_geokeys(keys: Mapping[int, Any]) -> tuple[int | None, str | None]:
    """The CRS GDAL reports for a file's GeoKeys, as (EPSG code or None, WKT2:2019 or None).

    Parameters
    ----------
    keys : mapping
        As returned by :func:`parse_geokey_directory` (values typed as stored: SHORT keys are ints,
        DOUBLE keys floats, ASCII keys strings; a key of the wrong type is ignored, as libgeotiff does).

    Returns
    -------
    tuple
        ``(epsg, wkt)``: ``epsg`` is set when the CRS is exactly an EPSG CRS: the ProjectedCSTypeGeoKey
        / GeographicTypeGeoKey code when no other key changes its definition, or the code PROJ
        identifies a user-defined CRS with at full confidence (equivalent and same name). ``wkt`` is the
        WKT2:2019 of the CRS whenever there is one (axis order as EPSG defines it: latitude first for
        geographic CRSs). ``(None, None)`` when the keys define no CRS (no keys, or only keys GDAL turns
        into an empty LOCAL_CS). Vertical keys give a compound (or geographic 3D) CRS only where GDAL
        reports one: GeoTIFF 1.1 directories (KeyRevision.MinorRevision >= 1.1, read from the
        :data:`GEOKEY_DIRECTORY_VERSION` entry) or a GeographicTypeGeoKey that a vertical code promotes
        to its geographic 3D CRS.

    Raises
    ------
    UnsupportedTiffError
        For definitions GDAL cannot turn into a geodetic CRS either (it falls back to LOCAL_CS): an
        unknown projection method, a projected model without a projection, a geocentric model, an ESRI
        PE string PROJ cannot read, an unknown GTModelTypeGeoKey.
    """
    try:
        frozen = tuple(sorted(((int(key), _hashable(value)) for key, value in keys.items()), key=_first_item))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"GeoKeys must map int ids to values: {exc}") from None
    return _crs_cached(frozen)


def _first_item(item: tuple[int, Any]) -> int:
    return item[0]


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


@lru_cache(maxsize=1024)
def _crs_cached(frozen: tuple[tuple[int, Any], ...]) -> tuple[int | None, str | None]:
    crs = _build_crs(_Keys(dict(frozen)))
    if crs is None:
        return None, None
    wkt = crs.to_wkt()
    try:
        CRS.from_wkt(wkt)
    except CRSError as exc:
        raise UnsupportedTiffError(f"a CRS whose WKT PROJ cannot read back: {exc}") from None
    return _exact_epsg(crs), wkt


def _exact_epsg(crs: CRS) -> int | None:
    """The EPSG code PROJ identifies with full confidence (equivalent, and the same name) or None."""
    # PROJ's identification is slow for odd CRSs; a full-confidence match needs the name of an EPSG CRS,
    # and no EPSG CRS carries a TOWGS84 (BoundCRS).
    j = crs.to_json_dict()
    if j.get("type") == "BoundCRS":
        return None
    if "id" not in j and _normalized_name(crs.name or "") not in _epsg_crs_names():
        return None
    try:
        return crs.to_epsg(min_confidence=100)
    except CRSError:
        return None


def _normalized_name(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


@lru_cache(maxsize=1)
def _epsg_crs_names() -> frozenset[str]:
    from pyproj.database import query_crs_info

    return frozenset(
        _normalized_name(info.name) for info in query_crs_info(auth_name="EPSG", allow_deprecated=True)
    )


def _build_crs(k: _Keys) -> CRS | None:
    if not k.has_geokeys():
        return None
    d = _normalize(k)
    if d.model == _USER_DEFINED and d.pcs != _USER_DEFINED:
        d.model = _MODEL_PROJECTED  # GDAL ticket #3019: a PCS without GTModelTypeGeoKey
    if d.model not in (_MODEL_PROJECTED, _MODEL_GEOGRAPHIC, _MODEL_GEOCENTRIC):
        return _local_or_pe_string(k, d)
    if d.model == _MODEL_GEOCENTRIC:
        raise UnsupportedTiffError("a geocentric CRS (GTModelTypeGeoKey 1024 = 3)")

    state = _projcs_name_and_units(k, d) if d.model == _MODEL_PROJECTED else None
    geog = _geographic(k, d)
    vertical = _vertical_keys(k, geog.promoted)

    if state is not None:
        crs = _projected(k, d, state, geog)
    elif geog.promoted is not None:
        crs = geog.promoted
    else:
        crs = geog.crs()
        if d.towgs84:
            crs = _bound(crs, d.towgs84) or crs
    if vertical is not None and k.version()[1:] >= (1, 1):
        crs = _compound(k, crs, vertical)
    return crs


def _local_or_pe_string(k: _Keys, d: _Defn) -> CRS | None:
    pcs_citation = k.ascii(PCS_CITATION) or ""
    if _PE_MARKER in pcs_citation:
        wkt = pcs_citation[pcs_citation.index(_PE_MARKER) + len(_PE_MARKER) :]
        try:
            return CRS.from_wkt(wkt)
        except CRSError as exc:
            raise UnsupportedTiffError(f"an ESRI PE string citation PROJ cannot read: {exc}") from None
    if d.model in (_USER_DEFINED, 0):
        return None  # GDAL reports an empty LOCAL_CS: no CRS
    model = d.model & 0xFFFF
    raise UnsupportedTiffError(f"GTModelTypeGeoKey 1024 = {model} (neither projected nor geographic)")


@dataclass
class _Geog:
    json: dict  # PROJJSON GeographicCRS as GDAL builds it from the keys
    candidate: int | None  # EPSG code it carries when equivalent (GeographicTypeGeoKey)
    promoted: CRS | None  # the EPSG geographic 3D CRS GDAL promotes it to, if any

    def crs(self) -> CRS:
        if self.candidate is not None:
            return _with_id_if_same(self.json, self.candidate, "a geographic CRS")
        return _crs_from_json(self.json, "a geographic CRS")


def _geographic(k: _Keys, d: _Defn) -> _Geog:
    """The geographic CRS GDAL builds from the keys (names from citations, codes from EPSG)."""
    geog_name = datum_name = pm_name = sph_name = ang_name = None
    gcs = _gcs_info(d.gcs) if d.gcs != _USER_DEFINED else None
    if gcs is None:
        citation = k.ascii(GEOG_CITATION)
        if citation is not None:
            citation = _imagine_citation(citation, GEOG_CITATION) or citation
        names = _parse_citation(citation, GEOG_CITATION) if citation is not None else None
        if names:
            geog_name, datum_name = names.get("gcs"), names.get("datum")
            sph_name, pm_name, ang_name = names.get("ellipsoid"), names.get("primem"), names.get("aunits")
    else:
        geog_name = gcs.name
    if geog_name and geog_name.startswith("GCS_"):
        geog_name = _official_name(geog_name, "GeographicCRS") or geog_name
    if datum_name and "_" in datum_name:
        with contextlib.suppress(CRSError):
            datum_name = Datum.from_name(datum_name, auth_name="EPSG").name
    if sph_name and "_" in sph_name:
        with contextlib.suppress(CRSError):
            sph_name = Ellipsoid.from_name(sph_name, auth_name="EPSG").name
    if datum_name is None and d.datum != _USER_DEFINED and (datum := _datum_info(d.datum)) is not None:
        datum_name = datum[0]
    inv_flattening = 0.0
    if sph_name is None:
        ell = _ellipsoid_info(d.ellipsoid) if d.ellipsoid != _USER_DEFINED else None
        sph_name = ell[0] if ell else None
    else:
        if (v := k.double(GEOG_SEMI_MAJOR)) is not None:
            d.semi_major = v
        inv_flattening = k.double(GEOG_INV_FLATTENING) or 0.0
        if math.isinf(inv_flattening):
            inv_flattening = 0.0
    if pm_name is None:
        pm = _pm_info(d.pm) if d.pm != _USER_DEFINED else None
        pm_name = pm[0] if pm else None
    elif (v := k.double(GEOG_PRIME_MERIDIAN_LONG)) is not None:
        d.pm_long = v
    if ang_name is None:
        angle = _uom_angle(d.uom_angle) if d.uom_angle != _USER_DEFINED else None
        if angle is None:
            ang_name = "unknown"
        else:
            ang_name, d.uom_angle_deg = angle
    elif (v := k.double(GEOG_ANGULAR_UNIT_SIZE)) is not None:
        d.uom_angle_deg = v * 180.0 / math.pi
    if d.uom_angle_deg == 0:
        d.uom_angle_deg = 1.0

    semi_major = d.semi_major
    if semi_major == 0.0:
        sph_name, semi_major, inv_flattening = "unretrievable - using WGS84", _WGS84_A, _WGS84_RF
    elif inv_flattening == 0.0 and d.semi_minor / d.semi_major != 1.0:
        flattening = semi_major - d.semi_minor
        inv_flattening = 0.0 if abs(flattening) < 1e-8 else semi_major / flattening
        if abs(semi_major - _WGS84_A) < 1e-10 and abs(inv_flattening - _WGS84_RF) < 1e-10:
            inv_flattening = _WGS84_RF
    if not math.isfinite(semi_major) or not math.isfinite(inv_flattening) or semi_major <= 0:
        raise UnsupportedTiffError(f"an ellipsoid with semi-major axis {semi_major} and 1/f {inv_flattening}")
    if not geog_name:
        geog_name = datum_name or "unknown"

    ellipsoid: dict[str, Any] = {"name": sph_name or "unnamed", "semi_major_axis": semi_major}
    if inv_flattening == 0.0:
        ellipsoid = {"name": sph_name or "unnamed", "radius": semi_major}
    else:
        ellipsoid["inverse_flattening"] = inv_flattening
    prime_meridian = {
        "name": pm_name or ("Greenwich" if d.pm_long == 0.0 else "unnamed"),
        "longitude": {"value": d.pm_long, "unit": "degree"},
    }
    datum_json: dict[str, Any] = {
        "type": "GeodeticReferenceFrame",
        "name": datum_name or "unnamed",
        "ellipsoid": ellipsoid,
        "prime_meridian": prime_meridian,
    }
    unit = _angular_unit(ang_name, d.uom_angle_deg)
    geog_json: dict[str, Any] = {
        "type": "GeographicCRS",
        "name": geog_name,
        "datum": datum_json,
        "coordinate_system": {
            "subtype": "ellipsoidal",
            "axis": [
                {"name": "Latitude", "abbreviation": "lat", "direction": "north", "unit": unit},
                {"name": "Longitude", "abbreviation": "lon", "direction": "east", "unit": unit},
            ],
        },
    }

    # EPSG identity of the geographic part, GeoTIFF 1.0 style 3D codes, and datum/ellipsoid codes.
    set_codes, geog_3d, candidate = True, None, None
    if d.gcs != _USER_DEFINED:
        reference = _epsg_crs(d.gcs)
        if reference is None:
            set_codes = False
        elif d.model == _MODEL_GEOGRAPHIC and _is_dynamic(reference):
            geog_json, set_codes = _without_schema(reference.to_json_dict()), False
        else:
            candidate = d.gcs
        vert = k.short(VERTICAL_CS_TYPE) or 0
        if (k.short(VERTICAL_DATUM) or 0) == 6030 and d.gcs == 4326:
            vert = 4979
        if reference is not None and 0 < vert < _USER_DEFINED:
            promoted = _epsg_crs(vert)
            if (
                promoted is not None
                and _is_geographic(reference, 2)
                and _is_geographic(promoted, 3)
                and _datum_code(reference) is not None
                and _datum_code(reference) == _datum_code(promoted)
            ):
                geog_3d, set_codes = promoted, False
    if set_codes:
        if d.datum != _USER_DEFINED:
            datum_json["id"] = _epsg_id(d.datum)
        if d.ellipsoid != _USER_DEFINED:
            ellipsoid["id"] = _epsg_id(d.ellipsoid)
    return _Geog(geog_json, candidate, geog_3d)


def _is_dynamic(crs: CRS) -> bool:
    datum = crs.to_json_dict().get("datum")
    return isinstance(datum, dict) and datum.get("type") == "DynamicGeodeticReferenceFrame"


def _is_geographic(crs: CRS, dims: int) -> bool:
    return crs.to_json_dict().get("type") == "GeographicCRS" and len(crs.axis_info) == dims


def _datum_code(crs: CRS) -> int | None:
    datum = crs.datum
    return _id_code(datum.to_json_dict()) if datum is not None else None


def _datum_is_known(crs_json: dict) -> bool:
    """GDAL's StripTOWGS84IfKnownDatum test: the CRS or its datum has a code, or a known datum name."""
    if "id" in crs_json:
        return True
    base = crs_json.get("base_crs", crs_json)
    datum = base.get("datum") or base.get("datum_ensemble") or {}
    if "id" in datum:
        return True
    name = datum.get("name", "unknown")
    if name.lower() == "unknown":
        return False
    try:
        Datum.from_name(name)
    except CRSError:
        return False
    return True


def _bound(crs: CRS, towgs84: tuple[float, ...]) -> CRS | None:
    """``crs`` with its TOWGS84 (a BoundCRS to WGS 84), unless GDAL strips it for a known datum."""
    source = _without_schema(crs.to_json_dict())
    if _datum_is_known(source):
        return None
    values = (list(towgs84) + [0.0] * 7)[:7]
    names = ("X-axis translation", "Y-axis translation", "Z-axis translation", "X-axis rotation",
             "Y-axis rotation", "Z-axis rotation", "Scale difference")  # fmt: skip
    arcsec = {"type": "AngularUnit", "name": "arc-second", "conversion_factor": math.pi / 180.0 / 3600.0}
    ppm = {"type": "ScaleUnit", "name": "parts per million", "conversion_factor": 1e-06}
    units = ["metre"] * 3 + [arcsec] * 3 + [ppm]
    params = [
        {"name": n, "value": v, "unit": u, "id": _epsg_id(8605 + i)}
        for i, (n, v, u) in enumerate(zip(names, values, units, strict=True))
    ]
    bound = {
        "type": "BoundCRS",
        "source_crs": source,
        "target_crs": _without_schema(_epsg_crs(4326).to_json_dict()),  # type: ignore[union-attr]
        "transformation": {
            "name": f"Transformation from {crs.name} to WGS84",
            "method": {"name": "Position Vector transformation (geog2D domain)", "id": _epsg_id(9606)},
            "parameters": params,
        },
    }
    return _crs_from_json(bound, "a TOWGS84 transformation")


def _projected(k: _Keys, d: _Defn, st: _ProjState, geog: _Geog) -> CRS:
    if not st.unit_set:
        length = _uom_length(d.uom_length) if d.uom_length != _USER_DEFINED else None
        if length is not None:
            st.unit = (length[0], d.uom_length_m, d.uom_length)
        else:
            st.unit = ("unknown", d.uom_length_m, None)
    assert st.unit is not None
    unit_name, unit_metres, unit_code = st.unit

    # GDAL takes the EPSG definition as is when the keys hold little more than the PCS code.
    overrides = (PROJECTION, PROJ_COORD_TRANS, GEOGRAPHIC_TYPE, GEOG_GEODETIC_DATUM, GEOG_ELLIPSOID)
    if d.pcs != _USER_DEFINED and all(k.short(key) is None for key in overrides):
        reference = _epsg_crs(d.pcs)
        if reference is not None:
            return _from_epsg_pcs(reference, unit_name, unit_metres, unit_code, geog.promoted)

    projection, params, webmerc = _wkt1_projection(d)
    conversion = _conversion_json(projection, params, webmerc)
    unit = _linear_unit(unit_name, unit_metres, unit_code)
    axes = [{**axis, "unit": unit} for axis in conversion["axis"]]
    base = _without_schema(geog.crs().to_json_dict())
    proj_json: dict[str, Any] = {
        "type": "ProjectedCRS",
        "name": st.name or "unnamed",
        "base_crs": base,
        "conversion": conversion["conversion"],
        "coordinate_system": {"subtype": "Cartesian", "axis": axes},
    }
    if d.pcs != _USER_DEFINED and _epsg_crs(d.pcs) is not None:
        crs = _with_id_if_same(proj_json, d.pcs, "a projected CRS")
    else:
        crs = _crs_from_json(proj_json, "a projected CRS")
    crs = _renamed_projected(crs)
    if geog.promoted is not None:
        crs = crs.to_3d()
    if d.towgs84:
        crs = _bound(crs, d.towgs84) or crs
    return crs


def _from_epsg_pcs(
    reference: CRS, unit_name: str, unit_metres: float, unit_code: int | None, geog_3d: CRS | None
) -> CRS:
    crs = reference
    if reference.to_json_dict().get("type") == "ProjectedCRS":
        epsg_metres = reference.axis_info[0].unit_conversion_factor
        if abs(unit_metres - epsg_metres) > 1e-15 * unit_metres:
            # GDAL's SetLinearUnitsAndUpdateParameters: new axis units, same physical parameters.
            j = _without_schema(reference.to_json_dict())
            j.pop("id", None)
            unit = _linear_unit(unit_name, unit_metres, unit_code)
            for axis in j["coordinate_system"]["axis"]:
                axis["unit"] = unit
            crs = _crs_from_json(j, "a projected CRS")
    if geog_3d is not None:
        crs = crs.to_3d()
    return crs


def _renamed_projected(crs: CRS) -> CRS:
    """GDAL's final touches on PROJCS names: ESRI Web Mercator, and ESRI names morphed to EPSG ones."""
    name = crs.name or ""
    if name.lower() == "wgs_1984_web_mercator":
        return CRS.from_user_input("ESRI:102113")
    if name.lower() == "google maps global mercator":
        # GDAL labels this EPSG:900913, a code missing from the EPSG database: keep the definition only.
        j = _without_schema(CRS.from_epsg(3857).to_json_dict())
        j.pop("id", None)
        return _crs_from_json({**j, "name": name}, "a projected CRS")
    if "_" in name and (official := _official_name(name, "ProjectedCRS")) is not None:
        j = _without_schema(crs.to_json_dict())
        j["name"] = official
        return _crs_from_json(j, "a projected CRS")
    return crs


def _vertical_keys(k: _Keys, promoted: CRS | None) -> tuple[int, int, int] | None:
    if promoted is not None:
        return None
    vcs, vdatum, vunits = (k.short(key) or 0 for key in (VERTICAL_CS_TYPE, VERTICAL_DATUM, VERTICAL_UNITS))
    if not (vcs or vdatum or vunits):
        return None
    if k.version() == (1, 1, 0):  # GeoTIFF 1.0 files misused datum codes as vertical CS codes
        if 5101 <= vcs <= 5112 and vdatum == 0:
            vdatum, vcs = vcs, vcs + 600
        if vcs == 5171:
            vdatum, vcs = 5171, 5773
    if 5001 <= vcs <= 5033 and vdatum == 0:
        vdatum, vcs = vcs + 1000, 0
    if max(vcs, vdatum, vunits) > _USER_DEFINED:
        return None  # GDAL ignores vertical information in the private range
    if not (vcs or vdatum or vunits):
        return None
    return vcs, vdatum, vunits


def _compound(k: _Keys, horizontal: CRS, vertical: tuple[int, int, int]) -> CRS:
    """The compound CRS GDAL reports for GeoTIFF 1.1 files with vertical keys."""
    vcs, vdatum, vunits = vertical
    citation = k.ascii(VERTICAL_CITATION) or ""
    vert_name = "unknown"
    if citation.lower().startswith("vcs name = "):
        citation = citation[len("VCS Name = ") :].split("|", 1)[0]
        vert_name = citation
    if 0 < vcs < _USER_DEFINED:
        vert_crs = _epsg_crs(vcs)
        if vert_crs is None or vert_crs.to_json_dict().get("type") != "VerticalCRS":
            return horizontal
        vert_json = _without_schema(vert_crs.to_json_dict())
        vert_name = vert_crs.name
    else:
        vert_json = _manual_vertical(citation, vdatum, vunits)
    gt_citation = k.ascii(GT_CITATION)
    if gt_citation is not None and " = " not in gt_citation:
        name = gt_citation
    else:
        name = f"{horizontal.name or 'unnamed'} + {vert_name}"
    compound = {
        "type": "CompoundCRS",
        "name": name,
        "components": [_without_schema(horizontal.to_json_dict()), vert_json],
    }
    return _crs_from_json(compound, "a compound CRS")


@lru_cache(maxsize=64)
def _vertical_datum_named(name: str) -> tuple[str, dict | None] | None:
    """The datum shared by the vertical CRSs called ``name`` (GDAL's guess for a user-defined datum)."""
    found: tuple[str, dict | None] | None = None
    for info in _vertical_crs_infos():
        if info.name.lower() != name.lower():
            continue
        try:
            datum = CRS.from_authority(info.auth_name, info.code).datum
        except CRSError:
            continue
        if datum is None:
            continue
        ident = datum.to_json_dict().get("id")
        if found is not None and found[1] != ident:
            return datum.name, None
        found = (datum.name, ident)
    return found


@lru_cache(maxsize=1)
def _vertical_crs_infos() -> tuple:
    from pyproj.database import query_crs_info
    from pyproj.enums import PJType

    return tuple(query_crs_info(pj_types=PJType.VERTICAL_CRS, allow_deprecated=True))


def _manual_vertical(name: str, vdatum: int, vunits: int) -> dict:
    """GDAL's FillCompoundCRSWithManualVertCS: a vertical CRS from datum and unit codes."""
    datum: dict[str, Any] = {"type": "VerticalReferenceFrame", "name": "unknown"}
    if 0 < vdatum < _USER_DEFINED:
        datum["id"] = _epsg_id(vdatum)
        with contextlib.suppress(CRSError):
            datum["name"] = Datum.from_epsg(vdatum).name
    elif vdatum == _USER_DEFINED and (guess := _vertical_datum_named(name)) is not None:
        datum["name"] = guess[0]
        if guess[1] is not None:
            datum["id"] = guess[1]
    unit: Any = _linear_unit("metre", 1.0, 9001)
    if 0 < vunits < _USER_DEFINED and vunits != 9001 and (length := _uom_length(vunits)) is not None:
        unit = _linear_unit(length[0], length[1], vunits)
    return {
        "type": "VerticalCRS",
        "name": name,
        "datum": datum,
        "coordinate_system": {
            "subtype": "vertical",
            "axis": [{"name": "Up", "abbreviation": "H", "direction": "up", "unit": unit}],
        },
    }
