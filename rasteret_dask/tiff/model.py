"""Plain data produced by the header parser: no I/O, picklable, cheap to copy into Dask tasks.

A :class:`TiffHeader` describes one GeoTIFF/COG: how its pixels are encoded (:class:`TileCodec`), where
every tile of every resolution level lives (:class:`ImageLevel`), and how the full-resolution grid maps
to a CRS. Overview and mask levels share the full-resolution georeferencing, scaled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np


@dataclass(frozen=True)
class TileCodec:
    """Everything needed to turn one tile's (or strip's) stored bytes into pixels.

    ``samples`` is the number of samples interleaved in one tile buffer: ``samples_per_pixel`` for chunky
    (planar configuration 1) files, 1 for planar-separate files. ``bits_per_sample`` is 1 only for
    internal transparency masks.
    """

    compression: int
    predictor: int
    dtype: str
    byteorder: str
    tile_width: int
    tile_height: int
    samples: int
    bits_per_sample: int
    photometric: int
    jpeg_tables: bytes | None = None
    lerc_parameters: tuple[int, ...] | None = None

    @property
    def decoded_shape(self) -> tuple[int, int, int]:
        """Shape of a decoded tile: (tile_height, tile_width, samples)."""
        return (self.tile_height, self.tile_width, self.samples)


@dataclass(frozen=True, eq=False)
class ImageLevel:
    """One IFD holding pixels: the full-resolution image, an overview, or an internal mask.

    Tiles are numbered as TIFF numbers them: row-major within a plane, plane after plane for planar
    configuration 2. A strip is a tile as wide as the image. A byte count of 0 (or offset 0) marks a
    sparse tile, read as the fill value.
    """

    ifd_index: int
    width: int
    height: int
    tiled: bool
    codec: TileCodec
    tile_offsets: np.ndarray
    tile_byte_counts: np.ndarray
    planes: int = 1

    @property
    def tile_width(self) -> int:
        return self.codec.tile_width

    @property
    def tile_height(self) -> int:
        return self.codec.tile_height

    @property
    def tiles_across(self) -> int:
        return -(-self.width // self.tile_width)

    @property
    def tiles_down(self) -> int:
        return -(-self.height // self.tile_height)

    def tile_index(self, tile_row: int, tile_col: int, plane: int = 0) -> int:
        """Index into ``tile_offsets`` of the tile at (tile_row, tile_col) of ``plane``."""
        return (plane * self.tiles_down + tile_row) * self.tiles_across + tile_col

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ImageLevel):
            return NotImplemented
        return (
            (self.ifd_index, self.width, self.height, self.tiled, self.codec, self.planes)
            == (other.ifd_index, other.width, other.height, other.tiled, other.codec, other.planes)
            and np.array_equal(self.tile_offsets, other.tile_offsets)
            and np.array_equal(self.tile_byte_counts, other.tile_byte_counts)
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class GeoReference:
    """Georeferencing of the full-resolution grid.

    ``transform`` is the affine pixel-corner transform in rasterio order ``(a, b, c, d, e, f)``, with
    PixelIsPoint rasters already shifted by half a pixel as GDAL does. ``crs_epsg`` is set when the CRS is
    an EPSG code; ``crs_wkt`` holds a WKT2 string for user-defined CRSs (and for EPSG ones too, so that
    either field alone is enough). Raw model tag values are kept as Rasteret keeps them.
    """

    transform: tuple[float, float, float, float, float, float] | None
    crs_epsg: int | None = None
    crs_wkt: str | None = None
    pixel_is_point: bool = False
    pixel_scale: tuple[float, ...] | None = None
    tiepoint: tuple[float, ...] | None = None
    model_transformation: tuple[float, ...] | None = None


@dataclass(frozen=True, eq=False)
class TiffHeader:
    """A parsed GeoTIFF/COG header.

    ``levels[0]`` is the full-resolution image, then overviews from largest to smallest. ``masks`` lines
    up with ``levels``: ``masks[i]`` is the internal mask (NewSubfileType 4) of ``levels[i]`` or None.
    ``nodata`` is GDAL_NODATA as a float (NaN and infinities allowed), None when absent. ``scales`` and
    ``offsets`` have one value per sample (1.0 and 0.0 when GDAL_METADATA gives none).

    ``stored_plane`` is set when the levels of a planar-separate file hold the tiles of that one sample
    only (a collection's per-band header, as Rasteret stores them); None when they hold every plane.
    """

    byteorder: str
    bigtiff: bool
    dtype: str
    samples_per_pixel: int
    planar_configuration: int
    photometric: int
    extra_samples: tuple[int, ...]
    levels: tuple[ImageLevel, ...]
    masks: tuple[ImageLevel | None, ...]
    geo: GeoReference
    nodata: float | None = None
    scales: tuple[float, ...] = ()
    offsets: tuple[float, ...] = ()
    file_size: int | None = None
    etag: str | None = None
    last_modified: str | None = None
    stored_plane: int | None = None

    @property
    def width(self) -> int:
        return self.levels[0].width

    @property
    def height(self) -> int:
        return self.levels[0].height

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TiffHeader):
            return NotImplemented
        names = [f.name for f in fields(self) if f.name != "nodata"]
        same_nodata = self.nodata == other.nodata or (
            self.nodata is not None
            and other.nodata is not None
            and math.isnan(self.nodata)
            and math.isnan(other.nodata)
        )
        return same_nodata and all(getattr(self, n) == getattr(other, n) for n in names)

    __hash__ = None  # type: ignore[assignment]

    def plane_of_sample(self, sample: int) -> int:
        """The tile plane holding ``sample`` (0-based) in the stored tile arrays."""
        if self.planar_configuration != 2:
            return 0
        if self.stored_plane is None:
            return sample
        if sample != self.stored_plane:
            raise ValueError(f"this header stores the tiles of sample {self.stored_plane} only, not {sample}")
        return 0

    @property
    def codec(self) -> TileCodec:
        return self.levels[0].codec

    def level_transform(self, level: int) -> tuple[float, float, float, float, float, float] | None:
        """The affine transform of ``levels[level]``: the full-resolution one scaled as GDAL does."""
        base = self.geo.transform
        if base is None:
            return None
        full, this = self.levels[0], self.levels[level]
        sx, sy = full.width / this.width, full.height / this.height
        a, b, c, d, e, f = base
        return (a * sx, b * sy, c, d * sx, e * sy, f)
