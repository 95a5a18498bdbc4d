"""Small Sentinel-2-like scenes for tests: COGs written by GDAL (rasterio) and their records table."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from pyproj import Transformer
from rasterio.transform import from_origin

# (EPSG, origin x, origin y) of the two UTM zones the scenes sit in, near 12° E / 48° N.
ZONES = ((32632, 700_000.0, 5_350_000.0), (32633, 250_000.0, 5_350_000.0))


def write_cog(
    path: Path, data: np.ndarray, crs: int, transform, *, nodata=None, blocksize=128, **options
) -> None:
    """Write ``data`` (bands, rows, cols) as a COG with GDAL's COG driver (deflate, predictor 2)."""
    profile = {
        "driver": "COG",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": f"EPSG:{crs}",
        "transform": transform,
        "blocksize": blocksize,
        "compress": "deflate",
        "predictor": 2,
        "nodata": nodata,
        "overview_resampling": "nearest",
        **options,
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)


def footprint_lonlat(crs: int, transform, width: int, height: int) -> shapely.Polygon:
    """The raster's outline in CRS84, densified so that it follows the projected edges."""
    left, top = transform.c, transform.f
    right, bottom = left + transform.a * width, top + transform.e * height
    ring = shapely.segmentize(shapely.box(left, bottom, right, top), max(right - left, top - bottom) / 16)
    to_lonlat = Transformer.from_crs(crs, "OGC:CRS84", always_xy=True)
    xs, ys = to_lonlat.transform(*np.asarray(ring.exterior.coords).T)
    return shapely.Polygon(np.column_stack([xs, ys]))


def make_scenes(
    directory: Path,
    *,
    dates: int = 3,
    bands: tuple[str, ...] = ("B02", "B03", "B04", "B08"),
    size: int = 256,
    resolution: float = 10.0,
    blocksize: int = 128,
    nodata: int | None = 0,
    seed: int = 0,
) -> gpd.GeoDataFrame:
    """Write ``dates`` scenes in each of two UTM zones, one uint16 COG per band; return their records.

    Each scene has nodata edges (a band of nodata along its west side) when ``nodata`` is set. The
    records have ``id``, ``datetime``, ``geometry`` (CRS84 footprint), ``eo:cloud_cover``, ``proj:epsg``
    and one ``{band}_href`` column per band.
    """
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    for zone, (epsg, x0, y0) in enumerate(ZONES):
        for day in range(dates):
            scene = f"S{zone}_{day:02d}"
            transform = from_origin(
                x0 + 37 * day * resolution, y0 - 23 * day * resolution, resolution, resolution
            )
            record = {
                "id": scene,
                "datetime": pd.Timestamp("2024-05-01", tz="UTC") + pd.Timedelta(days=5 * day, hours=zone),
                "geometry": footprint_lonlat(epsg, transform, size, size),
                "eo:cloud_cover": float(rng.uniform(0, 100)),
                "proj:epsg": epsg,
            }
            yy, xx = np.mgrid[0:size, 0:size]
            for b, band in enumerate(bands):
                base = 1000 + 400 * np.sin((xx + 13 * b + day) / 17.0) * np.cos((yy - 7 * zone) / 23.0)
                data = (base + rng.integers(0, 50, (size, size))).astype("uint16")[None]
                if nodata is not None:
                    data[:, :, : 5 + 3 * day] = nodata
                path = directory / f"{scene}_{band}.tif"
                write_cog(path, data, epsg, transform, nodata=nodata, blocksize=blocksize)
                record[f"{band}_href"] = str(path)
            rows.append(record)
    return gpd.GeoDataFrame(rows, geometry="geometry", crs="OGC:CRS84")


def with_assets(records: gpd.GeoDataFrame, bands, href=lambda path: path) -> gpd.GeoDataFrame:
    """``records`` with an ``assets`` column made from its ``{band}_href`` columns (mapped by ``href``)."""
    out = records.copy()
    out["assets"] = [
        {band: {"href": href(row[f"{band}_href"]), "band_index": None} for band in bands}
        for _, row in records.iterrows()
    ]
    return out.drop(columns=[f"{band}_href" for band in bands])
