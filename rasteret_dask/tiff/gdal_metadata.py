"""GDAL's private TIFF tags: GDAL_NODATA (42113) and the GDAL_METADATA XML (42112)."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

import numpy as np

from ..errors import MalformedTiffError

_LEADING_INTEGER = re.compile(r"[+-]?\d+")
# GDAL_METADATA is a small XML document; refuse to parse anything absurdly large.
MAX_METADATA_CHARS = 1 << 22


def parse_nodata(text: str | None, dtype: str) -> float | None:
    """GDAL_NODATA as a float ("nan", "inf" and "-inf" included), None when the tag is absent or empty.

    For 32-bit (and 16-bit) float rasters the value is rounded to float32, as GDAL reports it, so that it
    compares equal to the pixels that hold it. For 64-bit integer rasters only the leading integer counts,
    as in GDAL (values beyond 2**53 lose precision as floats).
    """
    if text is None:
        return None
    text = text.strip()
    if not text:
        return None
    if dtype in ("int64", "uint64"):
        # GDAL reads 64-bit integer nodata with strtoll/strtoull: the leading integer of the text only.
        leading = _LEADING_INTEGER.match(text)
        if leading is None:
            raise MalformedTiffError(f"GDAL_NODATA is not an integer: {text[:40]!r}")
        return float(int(leading.group()))
    try:
        value = float(text)
    except ValueError:
        raise MalformedTiffError(f"GDAL_NODATA is not a number: {text[:40]!r}") from None
    if dtype in ("float16", "float32"):
        with np.errstate(over="ignore"):
            value = float(np.float32(value))
    return value


def parse_scales_offsets(xml_text: str | None, samples: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-sample scale and offset from GDAL_METADATA items with role "scale"/"offset" (1.0 and 0.0 default).

    Malformed XML is ignored, as GDAL ignores it (the pixels stay readable).
    """
    scales, offsets = [1.0] * samples, [0.0] * samples
    if not xml_text or len(xml_text) > MAX_METADATA_CHARS:
        return tuple(scales), tuple(offsets)
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError:
        return tuple(scales), tuple(offsets)
    for item in root.iter("Item"):
        role, sample = item.get("role"), item.get("sample")
        if role not in ("scale", "offset") or sample is None or not sample.isdigit():
            continue
        index = int(sample)
        try:
            value = float((item.text or "").strip())
        except ValueError:
            continue
        if index < samples and math.isfinite(value):
            (scales if role == "scale" else offsets)[index] = value
    return tuple(scales), tuple(offsets)
