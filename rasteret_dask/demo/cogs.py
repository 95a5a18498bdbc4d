"""A small Cloud-Optimized GeoTIFF writer for the demo data: numpy and imagecodecs, no GDAL.

Layout as GDAL's COG driver lays it out: the file header, then every IFD (full resolution first, then
overviews) with their tag values, then the tiles from the smallest overview to full resolution. So a
reader gets every IFD and tile table with one small GET. Single band, deflate with horizontal
predictor, 2x2 decimated overviews down to one tile.
"""

from __future__ import annotations

import struct
from pathlib import Path

import imagecodecs
import numpy as np

_TYPES = {"H": 3, "I": 4, "d": 12, "s": 2}  # SHORT, LONG, DOUBLE, ASCII
_SAMPLE_FORMAT = {"u": 1, "i": 2, "f": 3}


def _levels(data: np.ndarray, tile: int) -> list[np.ndarray]:
    levels = [data]
    while max(levels[-1].shape) > tile:
        levels.append(levels[-1][::2, ::2])
    return levels


def _tiles(level: np.ndarray, tile: int, nodata) -> list[bytes]:
    rows, cols = -(-level.shape[0] // tile), -(-level.shape[1] // tile)
    out = []
    for r in range(rows):
        for c in range(cols):
            block = np.full((tile, tile), 0 if nodata is None else nodata, dtype=level.dtype)
            part = level[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile]
            block[: part.shape[0], : part.shape[1]] = part
            if block.dtype.kind in "iu":
                block = imagecodecs.delta_encode(block, axis=-1)  # TIFF predictor 2
            out.append(imagecodecs.zlib_encode(np.ascontiguousarray(block).tobytes(), level=6))
    return out


def _geokeys(epsg: int) -> tuple[int, ...]:
    projected = not (4000 <= epsg < 5000)
    keys = [(1024, 0, 1, 1 if projected else 2), (1025, 0, 1, 1)]
    keys.append((3072, 0, 1, epsg) if projected else (2048, 0, 1, epsg))
    header = (1, 1, 0, len(keys))
    return header + tuple(v for key in keys for v in key)


def write_cog(path: Path, data: np.ndarray, *, epsg: int, transform, nodata=None, tile: int = 512) -> None:
    """Write a single-band 2-D array as a COG (deflate, predictor 2 for integers, overviews)."""
    data = np.ascontiguousarray(data)
    if data.ndim != 2 or data.dtype.kind not in "uif":
        raise ValueError("write_cog writes one 2-D band of integers or floats")
    a, _, c, _, e, f = tuple(transform)[:6]
    levels = _levels(data, tile)
    tiles = [_tiles(level, tile, nodata) for level in levels]
    ifds = []
    for index, level in enumerate(levels):
        n = len(tiles[index])
        entries = [
            (254, "I", [0 if index == 0 else 1]),
            (256, "I", [level.shape[1]]),
            (257, "I", [level.shape[0]]),
            (258, "H", [data.dtype.itemsize * 8]),
            (259, "H", [8]),
            (262, "H", [1]),
            (277, "H", [1]),
            (284, "H", [1]),
            (317, "H", [2 if data.dtype.kind in "iu" else 1]),
            (322, "H", [tile]),
            (323, "H", [tile]),
            (324, "I", [0] * n),
            (325, "I", [len(t) for t in tiles[index]]),
            (339, "H", [_SAMPLE_FORMAT[data.dtype.kind]]),
        ]
        if index == 0:
            entries += [
                (33550, "d", [a, -e, 0.0]),
                (33922, "d", [0.0, 0.0, 0.0, c, f, 0.0]),
                (34735, "H", list(_geokeys(epsg))),
            ]
            if nodata is not None:
                entries.append((42113, "s", f"{nodata:g}"))
        ifds.append(sorted(entries))

    def value_bytes(fmt, values) -> bytes:
        if fmt == "s":
            return values.encode("ascii") + b"\0"
        return struct.pack(f"<{len(values)}{fmt}", *values)

    # Sizes first, to place every IFD, its out-of-line values, then the tiles.
    offset = 8
    placed = []
    for entries in ifds:
        start = offset
        offset += 2 + 12 * len(entries) + 4
        extra = {}
        for code, fmt, values in entries:
            size = len(value_bytes(fmt, values))
            if size > 4:
                extra[code] = offset
                offset += size + (size & 1)
        placed.append((start, extra))
    tile_offsets = {}
    for index in reversed(range(len(levels))):
        tile_offsets[index] = []
        for t in tiles[index]:
            tile_offsets[index].append(offset)
            offset += len(t)
    with open(path, "wb") as out:
        out.write(b"II*\0" + struct.pack("<I", 8))
        for index, (entries, (_, extra)) in enumerate(zip(ifds, placed, strict=True)):
            entries = [
                (code, fmt, tile_offsets[index] if code == 324 else values) for code, fmt, values in entries
            ]
            following = placed[index + 1][0] if index + 1 < len(placed) else 0
            out.write(struct.pack("<H", len(entries)))
            blobs = []
            for code, fmt, values in entries:
                raw = value_bytes(fmt, values)
                count = len(raw) if fmt == "s" else len(values)
                field = raw.ljust(4, b"\0") if len(raw) <= 4 else struct.pack("<I", extra[code])
                out.write(struct.pack("<HHI", code, _TYPES[fmt], count) + field)
                if len(raw) > 4:
                    blobs.append(raw + (b"\0" if len(raw) & 1 else b""))
            out.write(struct.pack("<I", following))
            for blob in blobs:
                out.write(blob)
        for index in reversed(range(len(levels))):
            for t in tiles[index]:
                out.write(t)
