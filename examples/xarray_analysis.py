"""NDVI median composite with get_xarray: lazy, chunked by source tiles, computed by Dask.

python examples/xarray_analysis.py [DEMO_DIR]
"""

import sys

from rasteret_dask.demo import demo_collection

collection = demo_collection(sys.argv[1] if len(sys.argv) > 1 else "rasteret-dask-demo")
west, south, east, north = collection.bounds
aoi = (
    (west + east) / 2 - 0.03,
    (south + north) / 2 - 0.02,
    (west + east) / 2 + 0.03,
    (south + north) / 2 + 0.02,
)
print(collection)
print(collection.get_xarray(bands=["B04", "B08"], bbox=aoi, crs="EPSG:32633", resolution=20, explain=True))

ds = collection.get_xarray(
    bands=["B04", "B08"], bbox=aoi, crs="EPSG:32633", resolution=20, resampling="average"
)
red, nir = (ds[b].where(ds[b] != ds[b].attrs["_FillValue"]).astype("float32") for b in ("B04", "B08"))
ndvi = ((nir - red) / (nir + red)).median("time")
print(ds)
print(f"median NDVI over the area: {float(ndvi.mean()):.3f} on {ndvi.shape} pixels")
