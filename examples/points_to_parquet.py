"""Sample many points through every record and stream the samples to Parquet without collecting them.

python examples/points_to_parquet.py [DEMO_DIR] [N_POINTS]
"""

import sys

import numpy as np
import pandas as pd

from rasteret_dask.demo import demo_collection

directory = sys.argv[1] if len(sys.argv) > 1 else "rasteret-dask-demo"
n = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
collection = demo_collection(directory)
west, south, east, north = collection.bounds
rng = np.random.default_rng(0)
points = pd.DataFrame(
    {"pid": np.arange(n), "lon": rng.uniform(west, east, n), "lat": rng.uniform(south, north, n)}
)

samples = collection.sample_points(
    points, bands=["B04", "B08"], x_column="lon", y_column="lat", geometry_crs="EPSG:4326", match="latest"
)
samples.to_parquet(f"{directory}/points-latest.parquet", write_index=False)
print(pd.read_parquet(f"{directory}/points-latest.parquet").head())
