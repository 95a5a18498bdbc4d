"""The parsed header as an Arrow struct: the ``{band}_metadata`` column of a collection (DESIGN.md §3).

Rasteret's fields come first, in Rasteret's order and types, so Rasteret reads our collections; ours
follow (Rasteret ignores fields it does not know). The conversion is lossless: ``struct_to_header``
gives back an equal :class:`~rasteret_dask.tiff.model.TiffHeader`.

Rasteret's ``transform`` is ``[scale_x, translate_x, scale_y, translate_y]`` (corner based, PixelIsPoint
already shifted); that is the whole affine because only axis-aligned grids are read.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..errors import SchemaError
from .model import GeoReference, ImageLevel, TiffHeader, TileCodec

_LEVEL_FIELDS = [
    pa.field("ifd_index", pa.int32()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("tiled", pa.bool_()),
    pa.field("tile_width", pa.int32()),
    pa.field("tile_height", pa.int32()),
    pa.field("compression", pa.int32()),
    pa.field("predictor", pa.int32()),
    pa.field("photometric", pa.int32()),
    pa.field("bits_per_sample", pa.int32()),
    pa.field("jpeg_tables", pa.binary()),
    pa.field("lerc_parameters", pa.list_(pa.int32())),
    pa.field("tile_offsets", pa.list_(pa.int64())),
    pa.field("tile_byte_counts", pa.list_(pa.int64())),
]
LEVEL_STRUCT = pa.struct(_LEVEL_FIELDS)
MASK_STRUCT = pa.struct([pa.field("level", pa.int32()), *_LEVEL_FIELDS])

RASTERET_FIELDS = [
    pa.field("image_width", pa.int32()),
    pa.field("image_height", pa.int32()),
    pa.field("tile_width", pa.int32()),
    pa.field("tile_height", pa.int32()),
    pa.field("dtype", pa.string()),
    pa.field("transform", pa.list_(pa.float64())),
    pa.field("predictor", pa.int32()),
    pa.field("compression", pa.int32()),
    pa.field("tile_offsets", pa.list_(pa.int64())),
    pa.field("tile_byte_counts", pa.list_(pa.int64())),
    pa.field("pixel_scale", pa.list_(pa.float64())),
    pa.field("tiepoint", pa.list_(pa.float64())),
    pa.field("nodata", pa.float64()),
    pa.field("samples_per_pixel", pa.int32()),
    pa.field("planar_configuration", pa.int32()),
    pa.field("photometric", pa.int32()),
    pa.field("extra_samples", pa.list_(pa.int32())),
]
EXTRA_FIELDS = [
    pa.field("byteorder", pa.string()),
    pa.field("bigtiff", pa.bool_()),
    pa.field("ifd_index", pa.int32()),
    pa.field("tiled", pa.bool_()),
    pa.field("bits_per_sample", pa.int32()),
    pa.field("jpeg_tables", pa.binary()),
    pa.field("lerc_parameters", pa.list_(pa.int32())),
    pa.field("crs_epsg", pa.int32()),
    pa.field("crs_wkt", pa.string()),
    pa.field("pixel_is_point", pa.bool_()),
    pa.field("model_transformation", pa.list_(pa.float64())),
    pa.field("scales", pa.list_(pa.float64())),
    pa.field("offsets", pa.list_(pa.float64())),
    pa.field("overviews", pa.list_(LEVEL_STRUCT)),
    pa.field("masks", pa.list_(MASK_STRUCT)),
    pa.field("file_size", pa.int64()),
    pa.field("etag", pa.string()),
    pa.field("last_modified", pa.string()),
    pa.field("plane", pa.int32()),
]
METADATA_STRUCT = pa.struct(RASTERET_FIELDS + EXTRA_FIELDS)
# What a header needs at the least; everything else has a default. (Rasteret also needs ``transform``;
# files without georeferencing have none, and only georeferenced reads ask for it.)
REQUIRED_FIELDS = ("tile_offsets", "tile_byte_counts", "tile_width", "tile_height", "dtype")


def _list(values) -> list | None:
    return None if values is None else [v.item() if hasattr(v, "item") else v for v in values]


def _plane_slice(level: ImageLevel, plane: int | None) -> slice:
    if plane is None or level.planes == 1:
        return slice(None)
    n = level.tiles_across * level.tiles_down
    return slice(plane * n, (plane + 1) * n)


def _level_dict(level: ImageLevel, plane: int | None = None) -> dict:
    c = level.codec
    tiles = _plane_slice(level, plane)
    return {
        "ifd_index": level.ifd_index,
        "width": level.width,
        "height": level.height,
        "tiled": level.tiled,
        "tile_width": c.tile_width,
        "tile_height": c.tile_height,
        "compression": c.compression,
        "predictor": c.predictor,
        "photometric": c.photometric,
        "bits_per_sample": c.bits_per_sample,
        "jpeg_tables": c.jpeg_tables,
        "lerc_parameters": _list(c.lerc_parameters),
        "tile_offsets": level.tile_offsets[tiles].astype(np.int64).tolist(),
        "tile_byte_counts": level.tile_byte_counts[tiles].astype(np.int64).tolist(),
    }


def header_to_dict(header: TiffHeader, band_index: int | None = None) -> dict:
    """The header as a plain dict with the fields of :data:`METADATA_STRUCT`.

    With ``band_index`` on a planar-separate file, the tile arrays hold that sample's plane only, as
    Rasteret stores a band's header (the ``plane`` field records which).
    """
    plane = header.stored_plane
    if plane is None and band_index is not None and header.planar_configuration == 2:
        plane = band_index
    full = header.levels[0]
    full_dict = _level_dict(full, plane if header.stored_plane is None else None)
    t = header.geo.transform
    return {
        "image_width": full.width,
        "image_height": full.height,
        "tile_width": full.tile_width,
        "tile_height": full.tile_height,
        "dtype": header.dtype,
        "transform": None if t is None else [t[0], t[2], t[4], t[5]],
        "predictor": full.codec.predictor,
        "compression": full.codec.compression,
        "tile_offsets": full_dict["tile_offsets"],
        "tile_byte_counts": full_dict["tile_byte_counts"],
        "pixel_scale": _list(header.geo.pixel_scale),
        "tiepoint": _list(header.geo.tiepoint),
        "nodata": header.nodata,
        "samples_per_pixel": header.samples_per_pixel,
        "planar_configuration": header.planar_configuration,
        "photometric": header.photometric,
        "extra_samples": list(header.extra_samples) or None,
        "byteorder": header.byteorder,
        "bigtiff": header.bigtiff,
        "ifd_index": full.ifd_index,
        "tiled": full.tiled,
        "bits_per_sample": full.codec.bits_per_sample,
        "jpeg_tables": full.codec.jpeg_tables,
        "lerc_parameters": _list(full.codec.lerc_parameters),
        "crs_epsg": header.geo.crs_epsg,
        "crs_wkt": header.geo.crs_wkt,
        "pixel_is_point": header.geo.pixel_is_point,
        "model_transformation": _list(header.geo.model_transformation),
        "scales": list(header.scales),
        "offsets": list(header.offsets),
        "overviews": [
            _level_dict(level, plane if header.stored_plane is None else None) for level in header.levels[1:]
        ],
        "masks": [{"level": i, **_level_dict(m)} for i, m in enumerate(header.masks) if m is not None],
        "file_size": header.file_size,
        "etag": header.etag,
        "last_modified": header.last_modified,
        "plane": plane,
    }


def headers_to_arrow(headers: list[TiffHeader | None]) -> pa.StructArray:
    """A ``{band}_metadata`` column: one struct per header, null where the header is None."""
    return pa.array([None if h is None else header_to_dict(h) for h in headers], type=METADATA_STRUCT)


def _level_from_dict(d: dict, *, dtype: str, byteorder: str, samples: int, planes: int) -> ImageLevel:
    codec = TileCodec(
        compression=d["compression"],
        predictor=d["predictor"],
        dtype=dtype,
        byteorder=byteorder,
        tile_width=d["tile_width"],
        tile_height=d["tile_height"],
        samples=samples,
        bits_per_sample=d["bits_per_sample"],
        photometric=d["photometric"],
        jpeg_tables=d["jpeg_tables"],
        lerc_parameters=None if d["lerc_parameters"] is None else tuple(d["lerc_parameters"]),
    )
    return ImageLevel(
        ifd_index=d["ifd_index"],
        width=d["width"],
        height=d["height"],
        tiled=d["tiled"],
        codec=codec,
        tile_offsets=np.asarray(d["tile_offsets"], dtype=np.uint64),
        tile_byte_counts=np.asarray(d["tile_byte_counts"], dtype=np.uint64),
        planes=planes,
    )


def _items(values) -> list:
    """A list from a struct field value that may be None, a list or a numpy array (pandas rows)."""
    return [] if values is None else list(values)


def _transform_from_rasteret(values: list[float] | None) -> tuple | None:
    if values is None:
        return None
    if len(values) == 4:
        sx, tx, sy, ty = values
        return (sx, 0.0, tx, 0.0, sy, ty)
    if len(values) == 6:
        return tuple(float(v) for v in values)
    raise SchemaError(f"a metadata transform needs 4 or 6 values, got {len(values)}")


def dict_to_header(d: dict, band_index: int | None = None) -> TiffHeader:
    """Rebuild a header from a ``{band}_metadata`` struct value (ours or one Rasteret wrote).

    Rasteret's structs lack our fields; their defaults are what Rasteret assumes (little-endian, tiled,
    one chunky sample, no overviews). Older Rasteret files name the size ``width``/``height``. A
    Rasteret struct of a planar-separate file holds one plane's tiles: ``band_index`` says which.
    """
    missing = [name for name in REQUIRED_FIELDS if d.get(name) is None]
    if missing:
        raise SchemaError(f"header metadata lacks {', '.join(missing)}")
    dtype = d["dtype"]
    byteorder = d.get("byteorder") or "<"
    spp = d.get("samples_per_pixel") or 1
    planar = d.get("planar_configuration") or 1
    width = d.get("image_width") or d.get("width")
    height = d.get("image_height") or d.get("height")
    if width is None or height is None:
        raise SchemaError("header metadata lacks image_width/image_height")
    plane = d.get("plane")
    tiles_per_plane = -(-width // d["tile_width"]) * -(-height // d["tile_height"])
    if plane is None and planar == 2 and spp > 1 and len(d["tile_offsets"]) == tiles_per_plane:
        if band_index is None:
            raise SchemaError("a planar-separate header holding one plane needs the asset's band_index")
        plane = band_index
    samples, planes = (1, spp if plane is None else 1) if planar == 2 else (spp, 1)
    bits = d.get("bits_per_sample") or np.dtype(dtype).itemsize * 8
    full = {
        "ifd_index": d.get("ifd_index") or 0,
        "width": width,
        "height": height,
        "tiled": True if d.get("tiled") is None else d["tiled"],
        "tile_width": d["tile_width"],
        "tile_height": d["tile_height"],
        "compression": d.get("compression") or 1,
        "predictor": d.get("predictor") or 1,
        "photometric": d.get("photometric") if d.get("photometric") is not None else 1,
        "bits_per_sample": bits,
        "jpeg_tables": d.get("jpeg_tables"),
        "lerc_parameters": d.get("lerc_parameters"),
        "tile_offsets": d["tile_offsets"],
        "tile_byte_counts": d["tile_byte_counts"],
    }
    levels = [_level_from_dict(full, dtype=dtype, byteorder=byteorder, samples=samples, planes=planes)]
    levels += [
        _level_from_dict(o, dtype=dtype, byteorder=byteorder, samples=samples, planes=planes)
        for o in _items(d.get("overviews"))
    ]
    masks: list[ImageLevel | None] = [None] * len(levels)
    for m in _items(d.get("masks")):
        if 0 <= m["level"] < len(levels):
            masks[m["level"]] = _level_from_dict(m, dtype="uint8", byteorder=byteorder, samples=1, planes=1)
    geo = GeoReference(
        transform=_transform_from_rasteret(d.get("transform")),
        crs_epsg=d.get("crs_epsg"),
        crs_wkt=d.get("crs_wkt"),
        pixel_is_point=bool(d.get("pixel_is_point")),
        pixel_scale=None if d.get("pixel_scale") is None else tuple(d["pixel_scale"]),
        tiepoint=None if d.get("tiepoint") is None else tuple(d["tiepoint"]),
        model_transformation=None
        if d.get("model_transformation") is None
        else tuple(d["model_transformation"]),
    )
    return TiffHeader(
        byteorder=byteorder,
        bigtiff=bool(d.get("bigtiff")),
        dtype=dtype,
        samples_per_pixel=spp,
        planar_configuration=planar,
        photometric=full["photometric"],
        extra_samples=tuple(_items(d.get("extra_samples"))),
        levels=tuple(levels),
        masks=tuple(masks),
        geo=geo,
        nodata=d.get("nodata"),
        scales=tuple(_items(d.get("scales")) or [1.0] * spp),
        offsets=tuple(_items(d.get("offsets")) or [0.0] * spp),
        file_size=d.get("file_size"),
        etag=d.get("etag"),
        last_modified=d.get("last_modified"),
        stored_plane=plane,
    )


def arrow_to_headers(
    column: pa.Array | pa.ChunkedArray, band_indexes: list[int | None] | None = None
) -> list[TiffHeader | None]:
    """Headers from a ``{band}_metadata`` column (None for null entries), with the assets' band indexes."""
    values = column.to_pylist()
    band_indexes = band_indexes or [None] * len(values)
    return [None if d is None else dict_to_header(d, b) for d, b in zip(values, band_indexes, strict=True)]
