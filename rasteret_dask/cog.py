"""The COG reader on its own: fetch and parse a header in (usually) one GET, then read windows tile by tile.

>>> header = read_cog_header("https://example.com/scene/B04.tif")        # doctest: +SKIP
>>> header.read(window=((0, 512), (0, 512)), level=1)                     # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from affine import Affine
from pyproj import CRS

from .errors import MalformedTiffError, PlanError, TruncatedTiffError
from .geo.windows import PixelWindow, tile_overlap, tiles_touched
from .io.config import FileIdentity, IOConfig
from .io.loop import gather_or_cancel, get_loop, run_sync
from .io.reader import read_prefix_async, read_ranges_async
from .tiff.decode import decode_mask_tile, decode_tile, fill_scalar
from .tiff.header import NeedBytes, parse_header
from .tiff.ifd import FileBytes
from .tiff.model import TiffHeader, TileCodec
from .tiff.tags import PHOTOMETRIC_MASK

# The first GET: enough for every IFD of a GDAL COG and, for files up to some hundreds of MB, their
# tile-offset arrays too.
HEADER_PREFIX_BYTES = 64 * 1024
# Odd files (IFDs scattered through the file) may need several more requests; never loop for ever.
MAX_HEADER_REQUESTS = 32


_pool: ThreadPoolExecutor | None = None
_pool_pid = -1
_pool_lock = threading.Lock()


def decode_pool() -> ThreadPoolExecutor:
    """The process's tile-decoding threads (one per core; made again in a forked child)."""
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="rasteret-decode")
            _pool_pid = os.getpid()
        return _pool


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
        plan = plan_window_read(
            self.url, self.tiff, PixelWindow.from_slices(window, lvl.width, lvl.height), level=level
        )
        (pixels,) = await read_windows_async([plan], storage_options=self.storage_options, config=config)
        return pixels


@dataclass(frozen=True)
class TileRef:
    """One stored tile: its place in the level's tile grid and its bytes in the file (count 0: sparse)."""

    index: int
    plane: int
    tile_row: int
    tile_col: int
    offset: int
    count: int

    @property
    def sparse(self) -> bool:
        return self.offset == 0 or self.count == 0


@dataclass(frozen=True)
class WindowRead:
    """A plan to read ``window`` of one resolution level of one file: a small picklable value.

    It holds only the tiles the window touches (not the file's whole tile table). ``samples`` are the
    file's 0-based samples (bands) to return, in output order (a ``range`` when they are consecutive, so
    a file of thousands of bands plans small). In planar-separate files (``planar``) sample ``s`` lives
    in tile plane ``s - plane_base``; otherwise every sample is interleaved in plane 0. ``fill`` is what
    sparse tiles read as (nodata, else 0), as GDAL reads them. ``level_height`` sizes the last strip.
    """

    url: str
    codec: TileCodec
    window: PixelWindow
    samples: Sequence[int]
    planar: bool
    plane_base: int
    tiles: tuple[TileRef, ...]
    fill: float
    level_height: int
    tiled: bool
    identity: FileIdentity

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.samples), self.window.height, self.window.width)

    def stored_rows(self, tile: TileRef) -> int | None:
        """Rows in a tile's buffer: None (a full tile) for tiles, the real count for the last strip."""
        if self.tiled:
            return None
        return min(self.codec.tile_height, self.level_height - tile.tile_row * self.codec.tile_height)


def _compact(samples: Sequence[int]) -> Sequence[int]:
    """``samples`` as a range when they are consecutive and ascending, else as a tuple."""
    if isinstance(samples, range):
        return samples
    samples = tuple(int(s) for s in samples)
    if samples and samples == tuple(range(samples[0], samples[0] + len(samples))):
        return range(samples[0], samples[0] + len(samples))
    return samples


def plan_window_read(
    url: str,
    header: TiffHeader,
    window: PixelWindow,
    *,
    samples: Sequence[int] | None = None,
    level: int = 0,
) -> WindowRead:
    """Plan reading ``window`` (pixels of ``level``) of the file ``url`` whose header is ``header``.

    Pure: no request is sent. ``samples`` are the 0-based samples (bands) to return, all by default.
    """
    if not 0 <= level < len(header.levels):
        raise PlanError(f"level {level} does not exist: {url} has levels 0..{len(header.levels) - 1}")
    lvl = header.levels[level]
    stored = header.stored_plane
    if samples is None:
        samples = range(stored, stored + 1) if stored is not None else range(header.samples_per_pixel)
    samples = _compact(samples)
    planar = header.planar_configuration == 2
    if planar and stored is not None and any(s != stored for s in samples):
        raise PlanError(f"{url}: this header holds the tiles of sample {stored} only")
    if not samples or min(samples) < 0 or max(samples) >= header.samples_per_pixel:
        raise PlanError(f"{url} has {header.samples_per_pixel} sample(s); asked for {list(samples)[:8]}")
    plane_base = stored if (planar and stored is not None) else 0
    planes = sorted({s - plane_base for s in samples}) if planar else [0]
    rows, cols = tiles_touched(window, lvl.tile_height, lvl.tile_width)
    refs = []
    for plane in planes:
        for r in rows:
            for c in cols:
                index = lvl.tile_index(r, c, plane)
                offset, count = int(lvl.tile_offsets[index]), int(lvl.tile_byte_counts[index])
                refs.append(TileRef(index, plane, r, c, offset, count))
    return WindowRead(
        url=url,
        codec=lvl.codec,
        window=window,
        samples=samples,
        planar=planar,
        plane_base=plane_base,
        tiles=tuple(refs),
        fill=0.0 if header.nodata is None else header.nodata,
        level_height=lvl.height,
        tiled=lvl.tiled,
        identity=FileIdentity(header.file_size, header.etag, header.last_modified),
    )


def plan_mask_read(url: str, header: TiffHeader, window: PixelWindow, *, level: int = 0) -> WindowRead | None:
    """Plan reading the internal mask (NewSubfileType 4) of ``level`` over ``window``, None without one.

    The read returns a ``(1, rows, cols)`` uint8 array: 1 where pixels are valid, 0 where masked (sparse
    mask tiles read as masked).
    """
    mask = header.masks[level] if level < len(header.masks) else None
    if mask is None:
        return None
    rows, cols = tiles_touched(window, mask.tile_height, mask.tile_width)
    refs = []
    for r in rows:
        for c in cols:
            index = mask.tile_index(r, c)
            refs.append(
                TileRef(index, 0, r, c, int(mask.tile_offsets[index]), int(mask.tile_byte_counts[index]))
            )
    return WindowRead(
        url=url,
        codec=mask.codec,
        window=window,
        samples=range(1),
        planar=False,
        plane_base=0,
        tiles=tuple(refs),
        fill=0.0,
        level_height=mask.height,
        tiled=mask.tiled,
        identity=FileIdentity(header.file_size, header.etag, header.last_modified),
    )


def _checked_range(read: WindowRead, tile: TileRef) -> tuple[int, int]:
    size = read.identity.size
    if size is not None and tile.offset + tile.count > size:
        raise TruncatedTiffError(
            f"{read.url}: tile {tile.index} at byte {tile.offset} ({tile.count} bytes) runs past the end"
            f" of the file ({size})"
        )
    return tile.offset, tile.offset + tile.count


async def read_windows_async(
    reads: Sequence[WindowRead], *, storage_options: dict | None = None, config: IOConfig | None = None
) -> list[np.ndarray]:
    """Execute window reads: each distinct tile is fetched and decoded once, however many reads share it.

    Ranges of one file are merged (``IOConfig``), files are fetched concurrently, and tiles are decoded
    in a thread pool (the codecs release the GIL). Returns one ``(bands, rows, cols)`` array per read,
    in the native dtype.
    """
    out: list = [None] * len(reads)

    def keep(results: list[tuple[int, np.ndarray]], nbytes: int) -> None:
        for position, pixels in results:
            out[position] = pixels

    await _stream_windows(reads, keep, _Budget(None), storage_options, config)
    return out


class _Budget:
    """Decoded bytes that a stream's consumer has not taken yet, at most ``limit`` (None: no limit).

    Used on the I/O loop only (the consumer releases through ``call_soon_threadsafe``). One file always
    proceeds when nothing is held, so a file larger than the limit cannot stall the stream.
    """

    def __init__(self, limit: int | None):
        self.limit, self.held = limit, 0
        self._waiters: list[asyncio.Future] = []

    async def acquire(self, nbytes: int) -> None:
        while self.limit is not None and self.held and self.held + nbytes > self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        self.held += nbytes

    def release(self, nbytes: int) -> None:
        self.held -= nbytes
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


def _decoded_bytes(reads: Sequence[WindowRead], tiles: dict) -> int:
    """Bytes of a file's decoded tiles plus its assembled windows (an upper bound: views copy nothing)."""

    def size(codec: TileCodec, shape) -> int:
        return int(np.prod(shape)) * np.dtype(codec.dtype).itemsize

    tile_bytes = sum(size(read.codec, read.codec.decoded_shape) for read, _ in tiles.values())
    return tile_bytes + sum(size(read.codec, read.shape) for read in reads)


async def _stream_windows(reads, emit, budget: _Budget, storage_options, config) -> None:
    """Fetch and decode file by file (concurrently, within ``budget``); as each file is decoded, hand its
    assembled windows to ``emit([(position, pixels), ...], nbytes)``; the consumer releases ``nbytes``
    when it is done with them (an unlimited budget needs no release)."""
    positions_of: dict[str, list[int]] = {}
    for position, read in enumerate(reads):
        positions_of.setdefault(read.url, []).append(position)
    loop = asyncio.get_running_loop()
    pool = decode_pool()

    async def one_file(url: str, positions: list[int]) -> None:
        mine = [reads[p] for p in positions]
        tiles: dict[tuple, tuple[WindowRead, TileRef]] = {}
        for read in mine:
            for tile in read.tiles:
                if not tile.sparse:
                    tiles.setdefault(_tile_key(read, tile), (read, tile))
        nbytes = _decoded_bytes(mine, tiles)
        await budget.acquire(nbytes)
        try:
            decoded = await _fetch_and_decode(
                url, tiles, mine[0].identity, loop, pool, storage_options, config
            )
            results = [(p, _assemble(reads[p], decoded)) for p in positions]
        except BaseException:
            budget.release(nbytes)
            raise
        emit(results, nbytes)

    await gather_or_cancel(one_file(url, positions) for url, positions in positions_of.items())


async def _fetch_and_decode(url, tiles, identity, loop, pool, storage_options, config) -> dict:
    """The distinct ``tiles`` of one file, fetched (ranges merged) and decoded in ``pool``, by tile key."""
    if not tiles:
        return {}
    ranges = list(dict.fromkeys(_checked_range(read, tile) for read, tile in tiles.values()))
    bodies = await read_ranges_async(
        url, ranges, storage_options=storage_options, expect=identity, config=config
    )
    body_of = dict(zip(ranges, bodies, strict=True))
    results = await gather_or_cancel(
        loop.run_in_executor(
            pool,
            _decode_mask if read.codec.photometric == PHOTOMETRIC_MASK else decode_tile,
            body_of[(tile.offset, tile.offset + tile.count)],
            read.codec,
            read.stored_rows(tile),
        )
        for read, tile in tiles.values()
    )
    return dict(zip(tiles, results, strict=True))


def iter_windows(
    reads: Sequence[WindowRead],
    *,
    storage_options: dict | None = None,
    config: IOConfig | None = None,
    max_bytes: int = 256 * 1024 * 1024,
) -> Iterator[tuple[int, np.ndarray]]:
    """:func:`read_windows`, streamed: ``(position, pixels)`` for each read as soon as its file is decoded.

    Files arrive in completion order, all reads of one file together. The caller works on one file's
    windows while later files are fetched and decoded; at most about ``max_bytes`` of decoded pixels
    wait for it (more files wait until it asks for the next window), and a file's tiles are dropped once
    it has moved on, so memory stays bounded and is reused however many files the reads touch.
    """
    if not reads:
        return
    loop = get_loop()
    budget = _Budget(max_bytes)
    ready: queue.SimpleQueue = queue.SimpleQueue()
    future = asyncio.run_coroutine_threadsafe(
        _stream_windows(
            reads, lambda results, nbytes: ready.put((results, nbytes)), budget, storage_options, config
        ),
        loop,
    )
    future.add_done_callback(lambda _: ready.put(None))
    try:
        while (item := ready.get()) is not None:
            results, nbytes = item
            yield from results
            del results, item
            loop.call_soon_threadsafe(budget.release, nbytes)
        future.result()  # raises the stream's failure, if any
    finally:
        future.cancel()


def iter_masked_windows(
    pairs: Sequence[tuple[WindowRead, WindowRead | None]], **kwargs
) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    """:func:`iter_windows` for (window, its mask read or None) pairs: ``(index, pixels, mask)`` per pair.

    A window and its mask (:func:`plan_mask_read`) lie in one file, so they arrive together.
    """
    reads, owner = [], []
    for index, (read, mask) in enumerate(pairs):
        for part in (read, mask):
            if part is not None:
                reads.append(part)
                owner.append(index)
    waiting: dict[int, list] = {}
    for position, pixels in iter_windows(reads, **kwargs):
        index = owner[position]
        parts = waiting.setdefault(index, [])
        parts.append(pixels)  # the window first, then its mask
        if len(parts) == (1 if pairs[index][1] is None else 2):
            del waiting[index]
            yield index, parts[0], parts[1] if len(parts) == 2 else None


def _tile_key(read: WindowRead, tile: TileRef) -> tuple:
    """Reads share a decoded tile when they want the same bytes decoded the same way."""
    return read.url, tile.offset, tile.count, read.stored_rows(tile), read.codec


def _decode_mask(body, codec: TileCodec, rows: int | None) -> np.ndarray:
    """A mask tile as a decoded tile of one uint8 sample: 1 valid, 0 masked."""
    return decode_mask_tile(body, codec, rows).view(np.uint8)[:, :, None]


def _assemble(read: WindowRead, decoded: dict) -> np.ndarray:
    win, codec = read.window, read.codec
    if len(read.tiles) == 1 and not read.tiles[0].sparse and not read.planar:
        # A window within one tile: a view of the decoded tile, no copy (reads sharing a tile may share
        # its buffer, so callers treat results as read-only).
        tile = read.tiles[0]
        in_r, in_c, _, _ = tile_overlap(
            win, tile.tile_row, tile.tile_col, codec.tile_height, codec.tile_width
        )
        chosen = slice(None) if read.samples == range(codec.samples) else np.asarray(read.samples)
        return np.moveaxis(decoded[_tile_key(read, tile)][in_r, in_c][:, :, chosen], 2, 0)
    out = np.empty(read.shape, dtype=np.dtype(read.codec.dtype))
    if read.planar:
        position = {s: i for i, s in enumerate(read.samples)}
    else:  # one plane: pick the samples out of each decoded tile, all at once
        chosen = slice(None) if read.samples == range(codec.samples) else np.asarray(read.samples)
    for tile in read.tiles:
        in_r, in_c, out_r, out_c = tile_overlap(
            win, tile.tile_row, tile.tile_col, codec.tile_height, codec.tile_width
        )
        bands = position[tile.plane + read.plane_base] if read.planar else slice(None)
        if tile.sparse:  # filled in place: a sparse tile of many samples must never be allocated whole
            out[bands, out_r, out_c] = (
                0 if codec.photometric == PHOTOMETRIC_MASK else fill_scalar(codec, read.fill)
            )
            continue
        block = decoded[_tile_key(read, tile)][in_r, in_c]
        if read.planar:
            out[bands, out_r, out_c] = block[:, :, 0]
        else:
            out[:, out_r, out_c] = np.moveaxis(block[:, :, chosen], 2, 0)
    return out


def read_windows(
    reads: Sequence[WindowRead], *, storage_options: dict | None = None, config: IOConfig | None = None
) -> list[np.ndarray]:
    """Synchronous :func:`read_windows_async`, for any thread (Dask tasks included)."""
    return run_sync(read_windows_async(reads, storage_options=storage_options, config=config))


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
