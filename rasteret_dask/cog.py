"""The COG reader on its own: fetch and parse a header in (usually) one GET, then read windows tile by tile.

>>> header = read_cog_header("https://example.com/scene/B04.tif")        # doctest: +SKIP
>>> header.read(window=((0, 512), (0, 512)), level=1)                     # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from affine import Affine
from pyproj import CRS

from .errors import MalformedTiffError, PlanError, TruncatedTiffError
from .geo.windows import PixelWindow, tile_overlap, tiles_touched
from .io.config import FileIdentity, IOConfig
from .io.loop import run_sync
from .io.reader import read_prefix_async, read_ranges_async
from .tiff.decode import decode_tile, fill_tile
from .tiff.header import NeedBytes, parse_header
from .tiff.ifd import FileBytes
from .tiff.model import ImageLevel, TiffHeader

# The first GET: enough for every IFD of a GDAL COG and, for files up to some hundreds of MB, their
# tile-offset arrays too.
HEADER_PREFIX_BYTES = 64 * 1024
# Odd files (IFDs scattered through the file) may need several more requests; never loop for ever.
MAX_HEADER_REQUESTS = 32


@dataclass(frozen=True)
class LevelInfo:
    """One resolution level: full resolution first, then overviews."""

    width: int
    height: int
    tile_width: int
    tile_height: int
    transform: Affine | None


@dataclass(frozen=True)
class CogHeader:
    """A parsed COG/GeoTIFF header bound to its URL: georeferencing, levels, and windowed reads.

    Build it with :func:`read_cog_header`. It is a small picklable value; :meth:`read` fetches only the
    tiles a window touches. ``storage_options`` are the fsspec options used for every request.
    """

    url: str
    tiff: TiffHeader
    storage_options: dict | None = None

    @property
    def identity(self) -> FileIdentity:
        """Size, ETag and Last-Modified seen when the header was read (a changed file fails reads)."""
        return FileIdentity(self.tiff.file_size, self.tiff.etag, self.tiff.last_modified)

    @property
    def width(self) -> int:
        return self.tiff.width

    @property
    def height(self) -> int:
        return self.tiff.height

    @property
    def count(self) -> int:
        """Number of samples (bands) per pixel."""
        return self.tiff.samples_per_pixel

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.tiff.dtype)

    @property
    def nodata(self) -> float | None:
        return self.tiff.nodata

    @property
    def transform(self) -> Affine | None:
        """Pixel-corner affine transform of the full-resolution grid, None when the file has none."""
        t = self.tiff.geo.transform
        return None if t is None else Affine(*t)

    @cached_property
    def crs(self) -> CRS | None:
        """The raster's CRS, None when the file declares none."""
        geo = self.tiff.geo
        if geo.crs_epsg is not None:
            return CRS.from_epsg(geo.crs_epsg)
        return None if geo.crs_wkt is None else CRS.from_wkt(geo.crs_wkt)

    @property
    def levels(self) -> list[LevelInfo]:
        """Full resolution first, then overviews from largest to smallest."""
        out = []
        for i, level in enumerate(self.tiff.levels):
            t = self.tiff.level_transform(i)
            out.append(
                LevelInfo(level.width, level.height, level.tile_width, level.tile_height, t and Affine(*t))
            )
        return out

    def read(self, *, window=None, level: int = 0) -> np.ndarray:
        """Read pixels as a ``(count, rows, cols)`` array in the native dtype.

        Parameters
        ----------
        window
            ``((row_start, row_stop), (col_start, col_stop))`` in pixels of ``level``, like rasterio's
            ``Window.from_slices``; None reads the whole level.
        level
            0 for full resolution, 1.. for overviews (see :attr:`levels`).

        Sparse tiles read as nodata (0 when the file has no nodata), as GDAL reads them.
        """
        return run_sync(self.read_async(window=window, level=level))

    async def read_async(self, *, window=None, level: int = 0, config: IOConfig | None = None) -> np.ndarray:
        """Asynchronous :meth:`read`."""
        if not 0 <= level < len(self.tiff.levels):
            raise PlanError(
                f"level {level} does not exist: this file has levels 0..{len(self.tiff.levels) - 1}"
            )
        lvl = self.tiff.levels[level]
        win = PixelWindow.from_slices(window, lvl.width, lvl.height)
        tiles = _tiles_for_window(lvl, win)
        ranges = [_byte_range(lvl, index, self.tiff.file_size) for *_, index in tiles]
        fetch = [r for r in ranges if r is not None]
        bodies = iter(
            await read_ranges_async(
                self.url, fetch, storage_options=self.storage_options, expect=self.identity, config=config
            )
            if fetch
            else []
        )
        out = np.empty((self.count, win.height, win.width), dtype=self.dtype)
        fill = 0 if self.nodata is None else self.nodata
        for (plane, tile_row, tile_col, _), byte_range in zip(tiles, ranges, strict=True):
            rows = None if lvl.tiled else min(lvl.tile_height, lvl.height - tile_row * lvl.tile_height)
            if byte_range is None:
                pixels = fill_tile(lvl.codec, fill, rows)
            else:
                pixels = decode_tile(next(bodies), lvl.codec, rows)
            in_tile_r, in_tile_c, in_out_r, in_out_c = tile_overlap(
                win, tile_row, tile_col, lvl.tile_height, lvl.tile_width
            )
            block = pixels[in_tile_r, in_tile_c, :]
            if lvl.planes > 1:
                out[plane, in_out_r, in_out_c] = block[:, :, 0]
            else:
                out[:, in_out_r, in_out_c] = np.moveaxis(block, 2, 0)
        return out


def _tiles_for_window(level: ImageLevel, win: PixelWindow) -> list[tuple[int, int, int, int]]:
    """(plane, tile_row, tile_col, tile index) of every tile the window needs, planes outermost."""
    rows, cols = tiles_touched(win, level.tile_height, level.tile_width)
    return [
        (plane, r, c, level.tile_index(r, c, plane))
        for plane in range(level.planes)
        for r in rows
        for c in cols
    ]


def _byte_range(level: ImageLevel, index: int, file_size: int | None) -> tuple[int, int] | None:
    """The stored bytes of a tile, or None for a sparse tile (offset or byte count 0)."""
    offset, count = int(level.tile_offsets[index]), int(level.tile_byte_counts[index])
    if offset == 0 or count == 0:
        return None
    if file_size is not None and offset + count > file_size:
        raise TruncatedTiffError(
            f"tile {index} at byte {offset} ({count} bytes) runs past the end of the file ({file_size})"
        )
    return offset, offset + count


async def read_cog_header_async(
    url: str,
    *,
    storage_options: dict | None = None,
    prefix_bytes: int = HEADER_PREFIX_BYTES,
    config: IOConfig | None = None,
) -> CogHeader:
    """Asynchronous :func:`read_cog_header`."""
    prefix, identity = await read_prefix_async(
        url, prefix_bytes, storage_options=storage_options, config=config
    )
    known = FileBytes.from_prefix(prefix, identity.size)
    for _ in range(MAX_HEADER_REQUESTS):
        result = parse_header(known)
        if not isinstance(result, NeedBytes):
            tiff = dataclasses.replace(
                result, file_size=identity.size, etag=identity.etag, last_modified=identity.last_modified
            )
            return CogHeader(url, tiff, storage_options)
        bodies = await read_ranges_async(
            url, list(result.ranges), storage_options=storage_options, expect=identity, config=config
        )
        for (start, _), body in zip(result.ranges, bodies, strict=True):
            known.add(start, body)
    raise MalformedTiffError(f"{url}: the header is spread over more than {MAX_HEADER_REQUESTS} requests")


def read_cog_header(
    url: str,
    *,
    storage_options: dict | None = None,
    prefix_bytes: int = HEADER_PREFIX_BYTES,
    config: IOConfig | None = None,
) -> CogHeader:
    """Fetch and parse the header of the GeoTIFF/COG at ``url``.

    One GET of the first ``prefix_bytes`` bytes serves an ordinary COG; when tag arrays reach past it, one
    more GET fetches exactly the missing ranges (a bounded loop for files with IFDs spread through them).

    Parameters
    ----------
    url
        A local path, ``file://``, ``http(s)://``, ``s3://``, ``gs://`` or ``memory://`` URL.
    storage_options
        fsspec options for the URL's filesystem (credentials, ``anon``, ``endpoint_url``, ...).

    Raises
    ------
    TiffError
        The file is not a TIFF, is damaged, or uses a feature this library does not read.
    ReadError
        The bytes could not be fetched.
    """
    return run_sync(
        read_cog_header_async(url, storage_options=storage_options, prefix_bytes=prefix_bytes, config=config)
    )
