"""Build a collection from STAC items (here a static ItemCollection made from the demo's COGs).

Against a real STAC API: rd.build_from_stac("https://earth-search.aws.element84.com/v1",
collections=["sentinel-2-l2a"], bbox=..., date_range=("2024-06-01", "2024-06-30"), bands=["B04", "B08"])
python examples/build_from_stac.py [DEMO_DIR]
"""

import json
import sys
from pathlib import Path

import shapely

import rasteret_dask as rd
from rasteret_dask.demo import BANDS, demo_collection

directory = Path(sys.argv[1] if len(sys.argv) > 1 else "rasteret-dask-demo")
demo_collection(directory)
records = json.loads((directory / "cogs" / "records.json").read_text())
items = []
for r in records:
    footprint = shapely.from_wkt(r["geometry"])
    items.append(
        {
            "type": "Feature",
            "stac_version": "1.0.0",
            "id": r["id"],
            "geometry": shapely.geometry.mapping(footprint),
            "bbox": list(footprint.bounds),
            "properties": {
                "datetime": r["datetime"],
                "eo:cloud_cover": r["eo:cloud_cover"],
                "proj:epsg": r["proj:epsg"],
            },
            "assets": {
                b: {"href": r[b], "type": "image/tiff; application=geotiff; profile=cloud-optimized"}
                for b in BANDS
            },
            "links": [],
        }
    )
(directory / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": items}))
collection = rd.build_from_stac(str(directory / "items.json"), bands=["B04", "B08"], progress=False)
print(collection, collection.build_report, sep="\n")
