"""The offline demo (``rasteret-dask demo``) and the small generated collection the examples use."""

from __future__ import annotations

from pathlib import Path

from .data import BANDS, make_collection


def demo_collection(directory: str | Path = "rasteret-dask-demo", *, size: int = 1024, dates: int = 4):
    """The demo's Sentinel-2-like collection on local disk, generated and built on first use.

    Writes the COGs under ``directory/cogs`` and the collection under ``directory/collection-local``
    (local paths, so it works without the demo's HTTP server); later calls load it.
    """
    from ..collection import build_from_table, load

    directory = Path(directory)
    target = directory / "collection-local"
    if target.exists():
        return load(str(target))
    records = make_collection(directory / "cogs", size=size, dates=dates)
    records["assets"] = [
        {band: {"href": row[band], "band_index": None} for band in BANDS} for _, row in records.iterrows()
    ]
    collection = build_from_table(
        records.drop(columns=list(BANDS)), name="demo-sentinel-2-local", progress=False
    )
    collection.export(str(target))
    return load(str(target))


__all__ = ["BANDS", "demo_collection"]
