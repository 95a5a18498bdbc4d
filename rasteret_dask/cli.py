"""The ``rasteret-dask`` command. Thin: it parses arguments, calls the public API and prints.

User mistakes end in one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from . import __version__
from .errors import RasteretDaskError


def _bbox(text: str) -> tuple[float, float, float, float]:
    try:
        west, south, east, north = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WEST,SOUTH,EAST,NORTH in degrees, got {text!r}") from None
    return west, south, east, north


def _date_range(text: str) -> tuple[str | None, str | None]:
    start, sep, end = text.partition(",")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected START,END (ISO dates, either may be empty), got {text!r}")
    return start or None, end or None


def _options(pairs: list[str] | None) -> dict | None:
    """``KEY=VALUE`` storage options; VALUE is parsed as JSON when it can be (true, 3, {...})."""
    if not pairs:
        return None
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise RasteretDaskError(f"storage options are KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@contextlib.contextmanager
def _scheduler(address: str | None):
    """A distributed Client for ``address`` (prints the dashboard link), or nothing for local threads."""
    if not address:
        yield None
        return
    from distributed import Client

    with Client(address) as client:
        print(f"connected to {address}; dashboard: {client.dashboard_link}", file=sys.stderr)
        yield client


def _cmd_header(args: argparse.Namespace) -> None:
    from .cog import read_cog_header

    header = read_cog_header(args.url, storage_options=_options(args.storage_option))
    summary = {
        "url": args.url,
        "width": header.width,
        "height": header.height,
        "count": header.count,
        "dtype": str(header.dtype),
        "crs": None if header.crs is None else header.crs.to_string(),
        "transform": None if header.transform is None else list(header.transform)[:6],
        "nodata": header.nodata,
        "compression": header.tiff.codec.compression,
        "predictor": header.tiff.codec.predictor,
        "levels": [[lv.width, lv.height, lv.tile_width, lv.tile_height] for lv in header.levels],
        "masks": [m is not None for m in header.tiff.masks],
        "file_size": header.tiff.file_size,
    }
    if args.json:
        print(json.dumps(summary, indent=1))
        return
    print(summary["url"])
    print(f"  {header.width} x {header.height} px, {header.count} band(s) of {header.dtype}")
    print(f"  crs {summary['crs']}, nodata {header.nodata}")
    print(f"  transform {summary['transform']}")
    print(f"  compression {summary['compression']}, predictor {summary['predictor']}")
    for i, (w, h, tw, th) in enumerate(summary["levels"]):
        mask = " + mask" if summary["masks"][i] else ""
        print(f"  level {i}: {w} x {h} px, tiles {tw} x {th}{mask}")


def _source_kind(source: str, forced: str | None) -> str:
    if forced:
        return forced
    from .collection import catalog

    if source in catalog.DatasetRegistry.ids():
        return "dataset"
    if source.lower().split("?", 1)[0].endswith((".parquet", ".geoparquet", ".pq")):
        return "table"
    return "stac"


def _cmd_build(args: argparse.Namespace) -> None:
    from . import collection as col

    options = _options(args.storage_option)
    common = {"storage_options": options, "progress": not args.quiet}
    if args.bands:
        common["bands"] = args.bands.split(",")
    kind = _source_kind(args.source, args.kind)
    with _scheduler(args.scheduler):
        if kind == "dataset":
            built = col.build(args.source, bbox=args.bbox, date_range=args.date_range, **common)
        elif kind == "stac":
            collections = args.collections.split(",") if args.collections else None
            built = col.build_from_stac(
                args.source,
                collections=collections,
                bbox=args.bbox,
                date_range=args.date_range,
                max_items=args.max_items,
                **common,
            )
        else:
            band_index_map = json.loads(args.band_index_map) if args.band_index_map else None
            built = col.build_from_table(
                args.source, href_column=args.href_column, band_index_map=band_index_map, **common
            )
        built.export(args.out, overwrite=args.overwrite, storage_options=_options(args.out_option))
    report = built.build_report
    print(f"wrote {args.out}: {report}" if report is not None else f"wrote {args.out}")


def _cmd_info(args: argparse.Namespace) -> None:
    from .collection import load

    collection = load(args.path, storage_options=_options(args.storage_option))
    s = collection.summary()
    info = {
        "path": args.path,
        "name": collection.name,
        "records": s["records"],
        "bands": s["bands"],
        "start": None if s["start"] is None else s["start"].isoformat(),
        "end": None if s["end"] is None else s["end"].isoformat(),
        "crs": s["crs"],
        "bounds": list(collection.bounds) if s["records"] else None,
        "files": collection.load_stats.files,
        "partitions": s["partitions"],
    }
    if args.json:
        print(json.dumps(info, indent=1))
        return
    for key, value in info.items():
        print(f"{key:>10}: {value}")


def _cmd_datasets(args: argparse.Namespace) -> None:
    from .collection.catalog import DatasetRegistry

    if args.action == "list":
        for descriptor in DatasetRegistry.list():
            print(f"{descriptor.id:<28} {descriptor.title}")
        return
    if not args.id:
        raise RasteretDaskError("datasets info needs a dataset id (see `rasteret-dask datasets list`)")
    d = DatasetRegistry.get(args.id)
    facts = {
        "id": d.id,
        "title": d.title,
        "description": d.description,
        "stac_api": d.stac_api,
        "collections": ", ".join(d.collections),
        "bands": ", ".join(d.bands),
        "storage": ", ".join(f"{k}={v}" for k, v in d.storage_options.items()) or "default",
        "signer": d.signer or "none",
        "license": d.license,
    }
    for key, value in facts.items():
        print(f"{key:>12}: {value}")


def _progress_compute(collection, client) -> None:
    """Compute a dask collection with a progress bar (distributed's with a client, else dask's)."""
    if client is not None:
        from distributed import progress

        future = client.compute(collection)
        progress(future, notebook=False)
        print(file=sys.stderr)
        future.result()
        return
    from dask.diagnostics import ProgressBar

    with ProgressBar(out=sys.stderr):
        collection.compute()


def _cmd_sample(args: argparse.Namespace) -> None:
    from .collection import load

    collection = load(args.collection, storage_options=_options(args.storage_option))
    with _scheduler(args.scheduler) as client:
        samples = collection.sample_points(
            args.points,
            bands=args.bands.split(","),
            x_column=args.x_column,
            y_column=args.y_column,
            geometry_crs=args.crs,
            match=args.match,
            layout=args.layout,
            max_distance_pixels=args.max_distance_pixels,
        )
        written = samples.to_parquet(args.out, compute=False, write_index=False)
        _progress_compute(written, client)
    print(f"wrote {args.out}")


def _cmd_explain(args: argparse.Namespace) -> None:
    from .collection import load

    collection = load(args.collection, storage_options=_options(args.storage_option))
    plan = collection.get_xarray(
        bands=args.bands.split(","),
        bbox=args.bbox,
        crs=args.crs,
        resolution=args.resolution,
        explain=True,
    )
    total = plan.iloc[-1]
    print(plan.to_string(index=False))
    print(
        f"\n{len(plan) - 1} record-bands, {int(total['tiles'])} tiles, {int(total['gets'])} GETs,"
        f" {int(total['bytes']) / 1e6:.1f} MB"
    )


def _cmd_demo(args: argparse.Namespace) -> None:
    from .demo.run import run_demo

    run_demo(Path(args.out), workers=args.workers, points=args.points)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rasteret-dask", description="Cloud raster collections with cached COG headers, on Dask."
    )
    parser.add_argument("--version", action="version", version=f"rasteret-dask {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    header = commands.add_parser("header", help="read and print one COG/GeoTIFF header (one GET)")
    header.add_argument("url", help="local path or URL (file://, http(s)://, s3://, gs://)")
    header.add_argument("--json", action="store_true", help="print JSON instead of text")
    header.add_argument("--storage-option", action="append", metavar="KEY=VALUE", help="fsspec option")
    header.set_defaults(run=_cmd_header)

    build = commands.add_parser(
        "build", help="build a collection (dataset id, STAC API/catalog or records table) and export it"
    )
    build.add_argument(
        "source", help="a dataset id (see `datasets list`), a STAC URL/path, or a Parquet table"
    )
    build.add_argument("--out", required=True, help="folder to write the GeoParquet collection to")
    build.add_argument("--kind", choices=["dataset", "stac", "table"], help="how to read SOURCE (guessed)")
    build.add_argument("--bands", help="comma-separated band codes to keep")
    build.add_argument("--bbox", type=_bbox, help="WEST,SOUTH,EAST,NORTH in degrees (STAC searches)")
    build.add_argument("--date-range", type=_date_range, help="START,END ISO dates (STAC searches)")
    build.add_argument("--collections", help="comma-separated STAC collection ids")
    build.add_argument("--max-items", type=int, help="stop a STAC search after this many items")
    build.add_argument("--href-column", help="tables: column of asset URLs")
    build.add_argument("--band-index-map", help='tables: JSON {"band": sample index} for multi-band files')
    build.add_argument(
        "--storage-option", action="append", metavar="KEY=VALUE", help="options for the assets"
    )
    build.add_argument("--out-option", action="append", metavar="KEY=VALUE", help="options for --out")
    build.add_argument("--scheduler", help="address of a Dask scheduler (default: local threads)")
    build.add_argument("--overwrite", action="store_true", help="replace an existing collection at --out")
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    build.set_defaults(run=_cmd_build)

    info = commands.add_parser("info", help="summarise a collection: records, bands, time range, CRSs")
    info.add_argument("path", help="folder (or URL) of an exported collection")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.add_argument("--storage-option", action="append", metavar="KEY=VALUE", help="fsspec option")
    info.set_defaults(run=_cmd_info)

    datasets = commands.add_parser("datasets", help="the built-in dataset catalog")
    datasets.add_argument("action", choices=["list", "info"])
    datasets.add_argument("id", nargs="?", help="dataset id (for info)")
    datasets.set_defaults(run=_cmd_datasets)
    sample = commands.add_parser("sample", help="sample points through a collection, streaming to Parquet")
    sample.add_argument("collection", help="folder (or URL) of an exported collection")
    sample.add_argument("points", help="Parquet file of points (GeoParquet, or x/y columns with --crs)")
    sample.add_argument("--bands", required=True, help="comma-separated band codes")
    sample.add_argument("--out", required=True, help="Parquet folder to write the samples to")
    sample.add_argument("--x-column", help="x/longitude column (with --y-column and --crs)")
    sample.add_argument("--y-column", help="y/latitude column")
    sample.add_argument("--crs", help="CRS of the x/y columns, e.g. EPSG:4326")
    sample.add_argument("--match", choices=["all", "latest"], default="all")
    sample.add_argument("--layout", choices=["wide", "long"], default="wide")
    sample.add_argument("--max-distance-pixels", type=int, default=0)
    sample.add_argument("--scheduler", help="address of a Dask scheduler (default: local threads)")
    sample.add_argument("--storage-option", action="append", metavar="KEY=VALUE", help="fsspec option")
    sample.set_defaults(run=_cmd_sample)

    explain = commands.add_parser(
        "explain", help="print the read plan of an area: records, tiles, GETs, bytes"
    )
    explain.add_argument("collection", help="folder (or URL) of an exported collection")
    explain.add_argument("--bands", required=True, help="comma-separated band codes")
    explain.add_argument("--bbox", type=_bbox, required=True, help="WEST,SOUTH,EAST,NORTH in degrees")
    explain.add_argument("--crs", help="output CRS (with --resolution)")
    explain.add_argument("--resolution", type=float, help="output pixel size in CRS units")
    explain.add_argument("--storage-option", action="append", metavar="KEY=VALUE", help="fsspec option")
    explain.set_defaults(run=_cmd_explain)

    demo = commands.add_parser(
        "demo", help="run the offline demo: build, median composite, 100k point samples"
    )
    demo.add_argument("--out", default="rasteret-dask-demo", help="folder for the data and outputs")
    demo.add_argument("--workers", type=int, default=2, help="worker processes of the LocalCluster")
    demo.add_argument("--points", type=int, default=100_000, help="points to sample")
    demo.set_defaults(run=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (RasteretDaskError, OSError, ValueError) as exc:
        print(f"rasteret-dask: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rasteret-dask: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
