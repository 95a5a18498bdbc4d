"""Header -> Arrow struct -> Parquet -> header is lossless, and the struct starts with Rasteret's fields.

Rasteret's fields are read from /work/shared/RASTERET_SCHEMA.md (the table of the ``{band}_metadata``
struct) at test time, so the check follows that document rather than a copy of it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rasteret_dask.cog import CogHeader, read_cog_header
from rasteret_dask.errors import SchemaError, TiffError
from rasteret_dask.tiff.arrow import (
    METADATA_STRUCT,
    RASTERET_FIELDS,
    arrow_to_headers,
    header_to_dict,
    headers_to_arrow,
)
from tests.tiff.matrix import FAST_SPECS, matrix_files_fixture, same_header  # noqa: F401 - a fixture
from tests.tiff.test_corpus import NAMES, UNREADABLE

SCHEMA_DOC = Path(__file__).resolve().parents[2] / ".." / "shared" / "RASTERET_SCHEMA.md"
SECTION = "## `{band}_metadata` struct, in this field order"
_SCALARS = {"int32": pa.int32(), "int64": pa.int64(), "double": pa.float64(), "string": pa.string()}


def _arrow_type(text: str) -> pa.DataType:
    """An Arrow type from the document's notation: ``int32``, ``string``, ``list<double>``, ..."""
    text = text.strip()
    inner = re.fullmatch(r"list<(.+)>", text)
    if inner:
        return pa.list_(_arrow_type(inner.group(1)))
    return _SCALARS[text]


def rasteret_fields() -> list[tuple[str, pa.DataType]]:
    """(name, type) of Rasteret's ``{band}_metadata`` fields, in order, parsed from RASTERET_SCHEMA.md."""
    section = SCHEMA_DOC.read_text().split(SECTION, 1)[1]
    rows = []
    for line in section.lstrip().splitlines():
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    assert rows[0][:2] == ["field", "type"] and set(rows[1][0]) <= {"-", ":"}
    fields = []
    for cells in rows[2:]:
        kind = _arrow_type(cells[1].split(",")[0])  # "list<double>, 4 values" -> list<double>
        fields += [(name, kind) for name in re.findall(r"`([^`]+)`", cells[0])]
    return fields


def _roundtrip(headers, path: Path, struct: pa.StructType = METADATA_STRUCT):
    """Through an Arrow column and a Parquet file and back."""
    column = headers_to_arrow(headers) if struct is METADATA_STRUCT else _column(headers, struct)
    pq.write_table(pa.table({"B01_metadata": column}), path)
    table = pq.read_table(path)
    assert table.schema.field("B01_metadata").type == struct
    return arrow_to_headers(table.column("B01_metadata"))


def _column(headers, struct: pa.StructType) -> pa.Array:
    """A column of a narrower struct (only ``struct``'s fields of each header's dict)."""
    names = [f.name for f in struct]
    return pa.array(
        [None if h is None else {n: header_to_dict(h)[n] for n in names} for h in headers], type=struct
    )


def _assert_same(ours, back, what):
    assert (ours is None) == (back is None), what
    if ours is not None:
        assert same_header(ours, back), what


def test_metadata_struct_starts_with_rasteret_fields():
    expected = rasteret_fields()
    assert len(expected) == 17  # the document's table as of Rasteret 0.4.1
    ours = [(f.name, f.type) for f in METADATA_STRUCT]
    assert ours[: len(expected)] == expected
    assert [(f.name, f.type) for f in RASTERET_FIELDS] == expected
    names = [name for name, _ in ours]
    assert len(set(names)) == len(names)  # our extra fields never shadow Rasteret's


def test_corpus_headers_roundtrip_through_parquet(corpus_dir, tmp_path):
    headers = []
    for name in NAMES:
        try:
            headers.append(read_cog_header(str(corpus_dir / name)).tiff)
        except TiffError:
            assert name in UNREADABLE, name
    assert len(headers) >= len(NAMES) - len(UNREADABLE)
    headers.insert(3, None)  # a record whose enrichment failed
    back = _roundtrip(headers, tmp_path / "corpus.parquet")
    assert len(back) == len(headers)
    for i, (ours, theirs) in enumerate(zip(headers, back, strict=True)):
        _assert_same(ours, theirs, i)


def test_matrix_headers_roundtrip_through_parquet(matrix_files, tmp_path):
    cogs = [read_cog_header(str(matrix_files.path(spec))) for spec in FAST_SPECS]
    back = _roundtrip([c.tiff for c in cogs], tmp_path / "matrix.parquet")
    for spec, cog, header in zip(FAST_SPECS, cogs, back, strict=True):
        _assert_same(cog.tiff, header, spec.id)
        level = len(header.levels) - 1
        np.testing.assert_array_equal(CogHeader(cog.url, header).read(level=level), cog.read(level=level))


# Files within Rasteret's reach: georeferenced (Rasteret requires a transform), little-endian, tiled, no
# JPEG/WebP (JPEG needs JPEGTables, an extra field), and LERC only without a deflate/ZSTD layer (that is in
# LercParameters, an extra field).
RASTERET_STYLE = [
    s
    for s in FAST_SPECS
    if s.crs != "none"
    and not s.big_endian
    and s.block is not None
    and s.codec not in ("jpeg", "webp", "lerc_deflate", "lerc_zstd")
]


@pytest.mark.parametrize("old_names", [False, True], ids=["image_width", "width"])
def test_rasteret_style_struct_reads_the_same_pixels(matrix_files, tmp_path, old_names):
    """A struct with only Rasteret's fields (no overviews, byte order, ... ) reads level 0 identically."""
    assert len(RASTERET_STYLE) > 10
    cogs = [read_cog_header(str(matrix_files.path(spec))) for spec in RASTERET_STYLE]
    struct = pa.struct(RASTERET_FIELDS)
    if old_names:  # older Rasteret files: width/height
        renamed = {"image_width": "width", "image_height": "height"}
        struct = pa.struct([pa.field(renamed.get(f.name, f.name), f.type) for f in RASTERET_FIELDS])
        rows = [header_to_dict(c.tiff) for c in cogs]
        column = pa.array([{renamed.get(k, k): v for k, v in row.items() if k in renamed or k in struct.names}
                           for row in rows], type=struct)  # fmt: skip
        pq.write_table(pa.table({"B01_metadata": column}), tmp_path / "old.parquet")
        back = arrow_to_headers(pq.read_table(tmp_path / "old.parquet").column("B01_metadata"))
    else:
        back = _roundtrip([c.tiff for c in cogs], tmp_path / "rasteret.parquet", struct)
    for spec, cog, header in zip(RASTERET_STYLE, cogs, back, strict=True):
        assert len(header.levels) == 1 and header.masks == (None,), spec.id
        ours, theirs = header.levels[0], cog.tiff.levels[0]
        assert (ours.width, ours.height, ours.tile_width, ours.tile_height) == (
            theirs.width, theirs.height, theirs.tile_width, theirs.tile_height
        ), spec.id  # fmt: skip
        np.testing.assert_array_equal(ours.tile_offsets, theirs.tile_offsets)
        np.testing.assert_array_equal(ours.tile_byte_counts, theirs.tile_byte_counts)
        assert (header.dtype, header.nodata is None, header.geo.transform) == (
            cog.tiff.dtype, cog.tiff.nodata is None, cog.tiff.geo.transform
        ), spec.id  # fmt: skip
        window = ((0, cog.height), (0, cog.width))
        np.testing.assert_array_equal(
            CogHeader(cog.url, header).read(window=window), cog.read(), err_msg=spec.id
        )


def test_struct_without_required_fields_is_a_schema_error(matrix_files):
    cog = read_cog_header(str(matrix_files.path(FAST_SPECS[0])))
    row = header_to_dict(cog.tiff)
    row["tile_offsets"] = None
    with pytest.raises(SchemaError, match="tile_offsets"):
        arrow_to_headers(pa.array([row], type=METADATA_STRUCT))
