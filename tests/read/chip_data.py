"""Rasters, collections, AOI strategies and the rasterio oracle for the AOI chip tests.

Rasters are written by GDAL (rasterio) in pytest tmp dirs; the oracle for a (record, AOI) pair is
``rasterio.mask.mask(ds, [geom], crop=True, filled=True, all_touched=...)`` with the AOI moved to the
raster's CRS by ``rasterio.warp.transform_geom`` (DESIGN.md §4).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import rasterio.mask
import rasterio.warp
import shapely
from affine import Affine
from hypothesis import strategies as st
from pyproj import Transformer

import rasteret_dask as rd

WGS84, UTM32, UTM33 = "EPSG:4326", "EPSG:32632", "EPSG:32633"
# A place near 11.7° E / 48.3° N, 200 km east of UTM zone 32's central meridian: a zone-33 grid there
# is rotated by ~4.5° relative to a zone-32 one, so the same AOI meets both zones' records.
ORIGIN32 = (700_013.7, 5_350_021.3)
T0 = pd.Timestamp("2024-05-01", tz="UTC")


def to_crs(xy: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Points ``(n, 2)`` from ``src`` to ``dst`` (x/easting/longitude first)."""
    if src == dst:
        return np.asarray(xy, dtype=float)
    x, y = Transformer.from_crs(src, dst, always_xy=True).transform(xy[:, 0], xy[:, 1])
    return np.column_stack([x, y])


@dataclass(frozen=True)
class Raster:
    """A raster file written for a test: where it is and its grid."""

    path: Path
    crs: str
    transform: Affine
    width: int
    height: int
    count: int = 1

    def pixels_to_crs(self, colrow: np.ndarray, dst: str) -> np.ndarray:
        """Pixel coordinates ``(n, 2)`` (col, row) of this raster as points of ``dst``."""
        x, y = self.transform @ (colrow[:, 0], colrow[:, 1])
        return to_crs(np.column_stack([x, y]), self.crs, dst)

    def footprint(self, grow: float = 2.0) -> shapely.Polygon:
        """The raster's outline grown by ``grow`` pixels, densified, in CRS84 (covers every pixel)."""
        n = 32
        t = np.linspace(0.0, 1.0, n, endpoint=False)
        c0, c1, r0, r1 = -grow, self.width + grow, -grow, self.height + grow
        cols = np.concatenate([c0 + (c1 - c0) * t, np.full(n, c1), c1 - (c1 - c0) * t, np.full(n, c0)])
        rows = np.concatenate([np.full(n, r0), r0 + (r1 - r0) * t, np.full(n, r1), r1 - (r1 - r0) * t])
        return shapely.Polygon(self.pixels_to_crs(np.column_stack([cols, rows]), "OGC:CRS84"))


def grid(origin_xy, resolution: float, *, south_up: bool = False) -> Affine:
    """A north-up (or south-up: positive ``e``, origin at the bottom-left) transform."""
    x, y = origin_xy
    return Affine(resolution, 0.0, x, 0.0, resolution if south_up else -resolution, y)


def place(crs: str, resolution: float, *, south_up: bool = False, shift=(0.0, 0.0)) -> Affine:
    """A grid in ``crs`` whose corner is at ORIGIN32 (moved to ``crs``) plus ``shift`` metres."""
    ((x, y),) = to_crs(np.array([ORIGIN32]), UTM32, crs)
    return grid((x + shift[0], y + shift[1]), resolution, south_up=south_up)


def write_raster(
    path: Path,
    data: np.ndarray,
    *,
    crs: str,
    transform: Affine,
    nodata=None,
    driver: str = "GTiff",
    blocksize: int = 32,
    mask: np.ndarray | None = None,
    interleave: str = "pixel",
    compress: str = "deflate",
) -> Raster:
    """Write ``data`` (bands, rows, cols) with GDAL: a tiled GTiff or a COG (GDAL warns about COG blocks
    under 128 pixels but writes them).

    ``mask`` (rows, cols; nonzero = valid) is written as an internal mask (GDAL_TIFF_INTERNAL_MASK).
    ``interleave="band"`` writes a planar-separate file (GTiff only).
    """
    count, height, width = data.shape
    profile = {
        "driver": driver,
        "width": width,
        "height": height,
        "count": count,
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "compress": compress,
    }
    if driver == "COG":
        profile.update(blocksize=blocksize, overview_resampling="nearest")
    else:
        profile.update(tiled=True, blockxsize=blocksize, blockysize=blocksize, interleave=interleave)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        if mask is not None:
            ds.write_mask(np.where(mask, 255, 0).astype("uint8"))
    return Raster(Path(path), crs, transform, width, height, count)


def sample_data(rng: np.random.Generator, dtype, shape, nodata=None) -> np.ndarray:
    """Values spread over ``dtype``'s range with ``nodata`` (when set) in about a tenth of the pixels."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        data = (rng.standard_normal(shape) * 1000).astype(dtype)
    else:
        info = np.iinfo(dtype)
        data = rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    if nodata is not None:
        data[rng.random(shape) < 0.1] = nodata
    return data


@dataclass(frozen=True)
class Record:
    """One record of a test collection: its id, time, and band -> (raster, 0-based band_index or None)."""

    id: str
    datetime: pd.Timestamp
    assets: dict[str, tuple[Raster, int | None]]

    def footprint(self) -> shapely.Geometry:
        return shapely.union_all([r.footprint() for r, _ in self.assets.values()])


def records_table(records: list[Record], href=lambda path: str(path)) -> gpd.GeoDataFrame:
    """The records as a table ``build_from_table`` takes (``href`` maps a local path to the asset URL)."""
    rows = [
        {
            "id": rec.id,
            "datetime": rec.datetime,
            "geometry": rec.footprint(),
            "assets": {b: {"href": href(r.path), "band_index": i} for b, (r, i) in rec.assets.items()},
        }
        for rec in records
    ]
    return gpd.GeoDataFrame(rows, geometry="geometry", crs="OGC:CRS84")


def build(records: list[Record], *, href=lambda path: str(path), **kwargs) -> rd.Collection:
    """A Collection of ``records`` with enriched headers."""
    return rd.build_from_table(records_table(records, href), progress=False, **kwargs)


# ------------------------------------------------------------------------------------------- the oracle


def oracle_chip(path, aoi: shapely.Geometry, aoi_crs: str, *, all_touched: bool, indexes=1):
    """rasterio's chip of ``aoi`` (in ``aoi_crs``): ``(data, transform 6-tuple, any pixel inside)``.

    None where rasterio raises "Input shapes do not overlap raster".
    """
    with rasterio.open(path) as ds:
        geom = rasterio.warp.transform_geom(aoi_crs, ds.crs, shapely.geometry.mapping(aoi))
        try:
            data, transform = rasterio.mask.mask(
                ds, [geom], crop=True, filled=True, all_touched=all_touched, indexes=indexes
            )
        except ValueError as exc:
            if "Input shapes do not overlap raster" in str(exc):
                return None
            raise
        outside, _, _ = rasterio.mask.raster_geometry_mask(ds, [geom], crop=True, all_touched=all_touched)
    return data, tuple(transform)[:6], bool((~outside).any())


def same_bits(ours: np.ndarray, theirs: np.ndarray) -> bool:
    """Equal dtype, shape and bits (every NaN equals every NaN)."""
    if ours.dtype != theirs.dtype or ours.shape != theirs.shape:
        return False
    a = np.ascontiguousarray(ours).view(f"u{ours.dtype.itemsize}")
    b = np.ascontiguousarray(theirs).view(f"u{theirs.dtype.itemsize}")
    equal = a == b
    if ours.dtype.kind == "f":
        equal |= np.isnan(ours) & np.isnan(theirs)
    return bool(equal.all())


def lonlat(aoi: shapely.Geometry, aoi_crs: str) -> shapely.Geometry:
    """``aoi`` in CRS84, vertex by vertex."""
    return shapely.transform(aoi, lambda xy: to_crs(xy, aoi_crs, "OGC:CRS84"))


@dataclass
class Expected:
    """rasterio's chips by ``(aoi_index, record_id, band)``: ``required`` must be read, ``optional`` may be.

    A pair is optional when the AOI misses the record's footprint (the collection's spatial filter
    drops it) while its bounding box still meets the raster, where rasterio returns a chip of fill
    only; such a chip must have no pixel inside the AOI (else the footprint would hide pixels).
    """

    required: dict
    optional: dict


def expected_chips(records: list[Record], aois: list, aoi_crs: str, bands, *, all_touched: bool) -> Expected:
    """What rasterio reads for every (AOI, record, band)."""
    out = Expected({}, {})
    for k, aoi in enumerate(aois):
        # Shrunk by ~1 cm: a pair whose AOI only grazes the footprint's edge may go either way.
        query = lonlat(aoi, aoi_crs)
        for rec in records:
            candidate = query.intersects(rec.footprint().buffer(-1e-7))
            for band in bands:
                raster, index = rec.assets[band]
                found = oracle_chip(
                    raster.path, aoi, aoi_crs, all_touched=all_touched, indexes=(index or 0) + 1
                )
                if found is None:
                    continue
                data, transform, covered = found
                if candidate:
                    out.required[(k, rec.id, band)] = (data, transform)
                else:
                    assert not covered, f"AOI {k} covers pixels of {rec.id} outside its footprint"
                    out.optional[(k, rec.id, band)] = (data, transform)
    return out


def assert_chips_match(gdf: pd.DataFrame, expected: Expected) -> None:
    """Every row of ``gdf`` equals its rasterio chip bit for bit; no required pair missing, none extra."""
    got = {(int(r["aoi_index"]), r["record_id"], r["band"]): r for _, r in gdf.iterrows()}
    assert len(got) == len(gdf), "an (aoi, record, band) appears twice"
    missing = sorted(set(expected.required) - set(got))
    extra = sorted(set(got) - set(expected.required) - set(expected.optional))
    assert not missing and not extra, f"missing {missing[:5]}, extra {extra[:5]}"
    for key, row in got.items():
        data, transform = expected.required.get(key) or expected.optional[key]
        assert tuple(row["transform"]) == transform, (key, tuple(row["transform"]), transform)
        assert same_bits(row["data"], data), (key, row["data"].shape, data.shape, row["data"], data)


# ----------------------------------------------------------------------------------- AOI strategies

# AOIs are drawn in the pixel space (col, row) of an anchor raster, then mapped vertex by vertex to the
# CRS they are given in. Centres range over the raster and 30% beyond it on every side, so AOIs often
# hang over its edges or miss it.


KINDS = ("polygon", "rotated_box", "holes", "multi", "tiny", "snapped")


def _star(centre, radii, angles) -> np.ndarray:
    return np.column_stack([centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)])


@st.composite
def star_rings(draw, centre, max_radius: float, *, min_vertices: int = 3):
    """A simple star-shaped ring (convex or concave) around ``centre``, and a radius that it contains."""
    n = draw(st.integers(min_vertices, 9))
    step = 2 * np.pi / n
    jitter = draw(st.lists(st.floats(-0.35, 0.35), min_size=n, max_size=n))
    angles = step * (np.arange(n) + np.asarray(jitter)) + draw(st.floats(0, 2 * np.pi))
    fractions = draw(st.lists(st.floats(0.3, 1.0), min_size=n, max_size=n))
    radii = max_radius * np.asarray(fractions)
    # Consecutive vertices are less than pi apart, so every edge stays r_min * cos(gap / 2) from the centre.
    gap = np.max(np.diff(np.append(angles, angles[0] + 2 * np.pi)))
    return _star(centre, radii, angles), float(radii.min() * np.cos(gap / 2))


@st.composite
def pixel_polygons(draw, width: int, height: int, kinds=KINDS):
    """A polygonal AOI of one of ``kinds`` in pixel coordinates of a ``width`` x ``height`` raster."""
    kind = draw(st.sampled_from(kinds))
    cx = draw(st.floats(-0.3 * width, 1.3 * width))
    cy = draw(st.floats(-0.3 * height, 1.3 * height))
    size = draw(st.floats(0.6, 0.6 * max(width, height)))
    if kind == "tiny":  # smaller than a pixel: all_touched decides
        ring, _ = draw(star_rings((cx, cy), draw(st.floats(0.05, 0.7))))
        return shapely.Polygon(ring)
    if kind == "snapped":  # vertices on pixel corners and centres: edges through pixel centres
        c0, r0 = draw(st.integers(-10, width + 5)), draw(st.integers(-10, height + 5))
        c1, r1 = c0 + draw(st.integers(1, 30)) / 2, r0 + draw(st.integers(1, 30)) / 2
        return shapely.box(c0 / 2 if draw(st.booleans()) else c0, r0, c1, r1)
    if kind == "rotated_box":
        w, h = size, draw(st.floats(0.3, 1.0)) * size
        angle = draw(st.floats(0, np.pi))
        corners = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        return shapely.Polygon(corners @ rot.T + [cx, cy])
    if kind == "polygon":
        ring, _ = draw(star_rings((cx, cy), size))
        return shapely.Polygon(ring)
    if kind == "holes":
        ring, inner = draw(star_rings((cx, cy), size, min_vertices=5))
        holes = []
        for _ in range(draw(st.integers(1, 2))):
            hole_r = inner * draw(st.floats(0.15, 0.4))
            dx, dy = draw(st.floats(-0.45, 0.45)) * inner, draw(st.floats(-0.45, 0.45)) * inner
            hole, _ = draw(star_rings((cx + dx, cy + dy), hole_r))
            holes.append(hole)
        polygon = shapely.Polygon(ring, holes)
        if not polygon.is_valid:  # two holes that meet: keep one
            polygon = shapely.Polygon(ring, holes[:1])
        return polygon
    # multi: parts around centres far enough apart never to meet
    parts = []
    direction = draw(st.floats(0, 2 * np.pi))
    for i in range(draw(st.integers(2, 3))):
        r = size * draw(st.floats(0.2, 0.5))
        centre = (cx + 1.1 * size * i * np.cos(direction), cy + 1.1 * size * i * np.sin(direction))
        ring, _ = draw(star_rings(centre, r))
        parts.append(shapely.Polygon(ring))
    return shapely.MultiPolygon(parts)


def map_geometry(geom: shapely.Geometry, raster: Raster, crs: str) -> shapely.Geometry:
    """``geom`` from ``raster``'s pixel space to ``crs``, vertex by vertex."""
    return shapely.transform(geom, lambda colrow: raster.pixels_to_crs(colrow, crs))


@st.composite
def aoi_lists(draw, anchors: list[Raster], crs: str, *, max_size: int = 3, kinds=KINDS):
    """1..max_size AOIs in ``crs``, each drawn around one of ``anchors``."""
    out = []
    for _ in range(draw(st.integers(1, max_size))):
        anchor = draw(st.sampled_from(anchors))
        geom = draw(pixel_polygons(anchor.width, anchor.height, kinds))
        out.append(map_geometry(geom, anchor, crs))
    return out


# ------------------------------------------------------------------------------------------- data sets

# (dtype, nodata) of the dtype matrix: every integer and float type, nodata unset, integer, float, NaN.
DTYPE_CASES = [
    ("uint8", None),
    ("uint8", 255),
    ("int8", None),
    ("int8", -128),
    ("uint16", None),
    ("uint16", 0),
    ("int16", None),
    ("int16", -32768),
    ("uint32", None),
    ("uint32", 4294967295),
    ("int32", None),
    ("int32", -2147483648),
    ("uint64", None),
    ("uint64", 7),
    ("int64", None),
    ("int64", -(2**63)),
    ("float32", None),
    ("float32", -9999.0),
    ("float32", float("nan")),
    ("float64", None),
    ("float64", -9999.0),
    ("float64", float("nan")),
]
# (dtype, nodata) of files with an internal mask (GDAL_TIFF_INTERNAL_MASK): the mask wins over nodata.
MASKED_CASES = [("uint8", None), ("int16", -5), ("float64", float("nan"))]


def geometry_set(directory: Path) -> list[Record]:
    """Records of one band ``b`` over one place, in two UTM zones, north-up and south-up, one masked.

    - ``a32``: zone 32, north-up COG, uint16, nodata 0, 10 m;
    - ``b33``: zone 33 (a grid rotated ~4.5° against zone 32's), north-up COG, int16, nodata -1, 9.5 m;
    - ``c32``: zone 32, south-up tiled GTiff (positive ``e``), float32, nodata NaN, 12 m;
    - ``d32``: zone 32, tiled GTiff with an internal mask, uint8 without nodata, 7.5 m.
    """
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(32)
    out = []

    def add(name, dtype, nodata, transform, shape, *, driver="COG", crs=UTM32, mask=False):
        data = sample_data(rng, dtype, (1, *shape), nodata)
        valid = rng.random(shape) > 0.25 if mask else None
        if valid is not None:
            valid[:, : shape[1] // 5] = False
        raster = write_raster(
            directory / f"{name}.tif",
            data,
            crs=crs,
            transform=transform,
            nodata=nodata,
            driver=driver,
            mask=valid,
        )
        out.append(Record(name, T0 + pd.Timedelta(hours=len(out)), {"b": (raster, None)}))

    add("a32", "uint16", 0, place(UTM32, 10.0), (80, 96))
    add("b33", "int16", -1, place(UTM33, 9.5, shift=(-120.0, 70.0)), (88, 90), crs=UTM33)
    add(
        "c32",
        "float32",
        float("nan"),
        place(UTM32, 12.0, south_up=True, shift=(37.0, -830.0)),
        (64, 80),
        driver="GTiff",
    )
    add("d32", "uint8", None, place(UTM32, 7.5, shift=(95.0, -40.0)), (96, 96), driver="GTiff", mask=True)
    return out


def dtype_set(directory: Path) -> list[Record]:
    """One record (band ``b``) per DTYPE_CASES and MASKED_CASES entry, all on one zone-32 grid."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(64)
    shape = (40, 48)
    out = []
    for i, (dtype, nodata) in enumerate(DTYPE_CASES + MASKED_CASES):
        masked = i >= len(DTYPE_CASES)
        valid = rng.random(shape) > 0.3 if masked else None
        raster = write_raster(
            directory / f"{i:02d}_{dtype}.tif",
            sample_data(rng, dtype, (1, *shape), nodata),
            crs=UTM32,
            transform=place(UTM32, 10.0),
            nodata=nodata,
            driver="GTiff" if masked else "COG",
            blocksize=16,
            compress="lzw" if i % 2 else "deflate",
            mask=valid,
        )
        name = f"{i:02d}_{dtype}_{'none' if nodata is None else nodata}{'_mask' if masked else ''}"
        out.append(Record(name, T0 + pd.Timedelta(minutes=i), {"b": (raster, None)}))
    return out


def band_set(directory: Path) -> list[Record]:
    """Two 3-band uint16 files (nodata 0) with bands r, g, b mapped by ``band_index``: ``chunky`` (a COG,
    pixel-interleaved) and ``planar`` (a planar-separate tiled GTiff)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    data = sample_data(rng, "uint16", (3, 72, 80), 0)
    chunky = write_raster(
        directory / "chunky.tif", data, crs=UTM32, transform=place(UTM32, 10.0), nodata=0, driver="COG"
    )
    planar = write_raster(
        directory / "planar.tif",
        data[::-1].copy(),
        crs=UTM32,
        transform=place(UTM32, 10.0, shift=(50.0, 30.0)),
        nodata=0,
        interleave="band",
    )
    return [
        Record("chunky", T0, {b: (chunky, i) for i, b in enumerate("rgb")}),
        Record("planar", T0 + pd.Timedelta(days=1), {b: (planar, i) for i, b in enumerate("rgb")}),
    ]
