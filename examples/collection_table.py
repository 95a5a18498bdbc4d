"""The collection is a table: query it with GeoPandas, pyarrow, or DuckDB when it is installed.

python examples/collection_table.py [DEMO_DIR]
"""

import sys

import pyarrow.compute as pc

import rasteret_dask as rd
from rasteret_dask.demo import demo_collection

directory = sys.argv[1] if len(sys.argv) > 1 else "rasteret-dask-demo"
demo_collection(directory)
path = f"{directory}/collection-local"

clear = rd.load(path, filters=pc.field("eo:cloud_cover") < 20)
print("clear scenes:", len(clear), clear.load_stats)
frame = clear.frame.compute()  # a GeoDataFrame: every GeoPandas operation works
print(frame[["id", "datetime", "eo:cloud_cover", "proj:epsg"]])
print("footprint area (deg²):", frame.geometry.area.round(4).tolist())

try:
    import duckdb
except ImportError:
    print("duckdb is not installed: pip install duckdb to query the Parquet files with SQL")
else:
    print(
        duckdb.sql(f"SELECT id, \"eo:cloud_cover\" FROM read_parquet('{path}/**/*.parquet') ORDER BY 2").df()
    )
