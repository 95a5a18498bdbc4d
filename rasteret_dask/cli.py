"""The ``rasteret-dask`` command. Thin: it parses arguments, calls the public API and prints."""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__
from .cog import read_cog_header
from .errors import RasteretDaskError


def _header_summary(url: str) -> dict:
    header = read_cog_header(url)
    return {
        "url": url,
        "width": header.width,
        "height": header.height,
        "count": header.count,
        "dtype": str(header.dtype),
        "crs": None if header.crs is None else header.crs.to_string(),
        "transform": None if header.transform is None else list(header.transform)[:6],
        "nodata": header.nodata,
        "compression": header.tiff.codec.compression,
        "predictor": header.tiff.codec.predictor,
        "levels": [
            {
                "width": lv.width,
                "height": lv.height,
                "tile_width": lv.tile_width,
                "tile_height": lv.tile_height,
            }
            for lv in header.levels
        ],
        "masks": [m is not None for m in header.tiff.masks],
        "file_size": header.tiff.file_size,
    }


def _cmd_header(args: argparse.Namespace) -> None:
    summary = _header_summary(args.url)
    if args.json:
        print(json.dumps(summary, indent=1))
        return
    print(f"{summary['url']}")
    print(f"  {summary['width']} x {summary['height']} px, {summary['count']} band(s) of {summary['dtype']}")
    print(f"  crs {summary['crs']}, nodata {summary['nodata']}")
    print(f"  transform {summary['transform']}")
    print(f"  compression {summary['compression']}, predictor {summary['predictor']}")
    for i, level in enumerate(summary["levels"]):
        mask = " + mask" if summary["masks"][i] else ""
        print(
            f"  level {i}: {level['width']} x {level['height']} px,"
            f" tiles {level['tile_width']} x {level['tile_height']}{mask}"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rasteret-dask", description="Cloud raster collections with cached COG headers, on Dask."
    )
    parser.add_argument("--version", action="version", version=f"rasteret-dask {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    header = commands.add_parser("header", help="read and print one COG/GeoTIFF header (one GET)")
    header.add_argument("url", help="local path or URL (file://, http(s)://, s3://, gs://)")
    header.add_argument("--json", action="store_true", help="print JSON instead of text")
    header.set_defaults(run=_cmd_header)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (RasteretDaskError, OSError) as exc:
        print(f"rasteret-dask: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
