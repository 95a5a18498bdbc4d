"""Chips for machine learning: one array per (AOI, record), native grid, rasterio's mask rules.

python examples/ml_chips.py [DEMO_DIR]
"""

import sys

import geopandas as gpd
import shapely

from rasteret_dask.demo import demo_collection

collection = demo_collection(sys.argv[1] if len(sys.argv) > 1 else "rasteret-dask-demo")
west, south, east, north = collection.bounds
centres = [
    (west + (east - west) * f, south + (north - south) * g) for f in (0.3, 0.5, 0.7) for g in (0.4, 0.6)
]
aois = gpd.GeoDataFrame(
    {"label": list(range(len(centres)))},
    geometry=[shapely.Point(x, y).buffer(0.004, quad_segs=2) for x, y in centres],
    crs="EPSG:4326",
)
chips = collection.get_gdf(aois, bands=["B02", "B03", "B04"]).compute()
print(chips[["aoi_index", "label", "record_id", "band"]].head())
print(len(chips), "chips; shapes:", sorted({c.shape for c in chips["data"]})[:4])
