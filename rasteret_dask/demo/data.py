"""A small but realistic Sentinel-2-like collection, generated on local disk (deterministic)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from pyproj import Transformer

from .cogs import write_cog

BANDS = ("B02", "B03", "B04", "B08")
# Two UTM zones meeting at 12° E, near 48° N: scenes on both sides overlap the same area of interest.
ZONES = ((32632, 640_000.0, 5_360_000.0), (32633, 195_000.0, 5_362_000.0))
_BASE = {"B02": 900, "B03": 1100, "B04": 1000, "B08": 2600}


def _field(size: int, seed: int) -> np.ndarray:
    """Smooth 'landscape' in 0..1: a few octaves of interpolated noise."""
    rng = np.random.default_rng(seed)
    out = np.zeros((size, size))
    for octave in (8, 16, 32, 64):
        coarse = rng.random((octave + 1, octave + 1))
        idx = np.linspace(0, octave, size)
        i0 = np.minimum(idx.astype(int), octave - 1)
        t = idx - i0
        rows = coarse[i0] * (1 - t)[:, None] + coarse[i0 + 1] * t[:, None]
        out += (rows[:, i0] * (1 - t) + rows[:, i0 + 1] * t) / octave
    return (out - out.min()) / (np.ptp(out) or 1)


def make_collection(
    directory: Path, *, dates: int = 4, size: int = 1024, tile: int = 512, seed: int = 7
) -> pd.DataFrame:
    """Write ``dates`` scenes in each of two UTM zones (4 uint16 bands each) and return the records table.

    Scenes have a nodata wedge along one edge (as Sentinel-2 granules do) and bright "clouds" that a
    temporal median removes. Returns columns ``id``, ``datetime``, ``geometry`` (WKT, lon/lat),
    ``eo:cloud_cover``, ``proj:epsg`` and one ``{band}`` path column per band; also writes
    ``records.json`` beside the files.
    """
    directory.mkdir(parents=True, exist_ok=True)
    land = _field(size, seed)
    rng = np.random.default_rng(seed)
    rows = []
    yy, xx = np.mgrid[0:size, 0:size]
    for zone, (epsg, x0, y0) in enumerate(ZONES):
        to_lonlat = Transformer.from_crs(epsg, "OGC:CRS84", always_xy=True)
        for day in range(dates):
            scene = f"S2{'AB'[zone]}_{day:02d}"
            transform = (10.0, 0.0, x0 + 310.0 * day, 0.0, -10.0, y0 - 170.0 * day)
            clouds = np.zeros((size, size))
            for _ in range(int(rng.integers(0, 4))):
                cy, cx = rng.integers(0, size, 2).tolist()
                radius = int(rng.integers(size // 16, size // 5))
                clouds = np.maximum(clouds, np.clip(1 - np.hypot(yy - cy, xx - cx) / radius, 0, 1))
            wedge = xx + yy * 0.35 < size * (0.08 + 0.05 * day)
            record = {
                "id": scene,
                "datetime": (
                    pd.Timestamp("2024-06-01", tz="UTC") + pd.Timedelta(days=5 * day, hours=10)
                ).isoformat(),
                "eo:cloud_cover": round(float(clouds.mean() * 100), 2),
                "proj:epsg": epsg,
            }
            for b, band in enumerate(BANDS):
                value = _BASE[band] * (0.6 + 0.8 * np.roll(land, 37 * b, axis=1)) + rng.normal(
                    0, 25, (size, size)
                )
                value = value * (1 - clouds) + 9000 * clouds
                data = np.clip(value, 1, 10000).astype("uint16")
                data[wedge] = 0
                path = directory / f"{scene}_{band}.tif"
                write_cog(path, data, epsg=epsg, transform=transform, nodata=0, tile=tile)
                record[band] = str(path)
            left, top = transform[2], transform[5]
            edge = np.linspace(0, size * 10.0, 9)
            xs = np.concatenate(
                [left + edge, np.full(9, left + size * 10.0), left + edge[::-1], np.full(9, left)]
            )
            ys = np.concatenate(
                [np.full(9, top), top - edge, np.full(9, top - size * 10.0), top - edge[::-1]]
            )
            lon, lat = to_lonlat.transform(xs, ys)
            record["geometry"] = (
                "POLYGON (("
                + ", ".join(f"{x:.7f} {y:.7f}" for x, y in zip(lon, lat, strict=True))
                + f", {lon[0]:.7f} {lat[0]:.7f}))"
            )
            rows.append(record)
    (directory / "records.json").write_text(json.dumps(rows, indent=1))
    return pd.DataFrame(rows)
