"""Pure TIFF/GeoTIFF knowledge: header bytes to :class:`TiffHeader`, tile bytes to pixels. No I/O."""

from .header import NeedBytes, parse_header
from .ifd import FileBytes
from .model import GeoReference, ImageLevel, TiffHeader, TileCodec

__all__ = ["FileBytes", "GeoReference", "ImageLevel", "NeedBytes", "TiffHeader", "TileCodec", "parse_header"]
