"""Building collections from STAC: an API search, a static catalog, an ItemCollection or stac-geoparquet.

Items become records (one row per item): ``id``, ``datetime``, the footprint, ``collection``, the
selected assets, the raster CRS (``proj:epsg`` and ``crs``, from either version of the projection
extension) and every item property as a column. Header enrichment then runs as Dask work exactly as for
:func:`~rasteret_dask.collection.build.build_from_table`.

Every filter (collections, bbox, date range, query) is applied to the records here, exactly, whatever
the source, so an API search, its static copy and its stac-geoparquet export give the same collection.
An API is asked to filter too, so that only matching pages travel.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import posixpath
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import urljoin

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyproj
import shapely
import shapely.geometry

from ..errors import CollectionError, PlanError, RasteretDaskError, SchemaError
from ..io.config import IOConfig, MiB
from ..io.loop import run_sync
from ..io.reader import read_prefix_async
from ..io.signing import check_options, store_options
from .build import finish_build, records_from_table
from .collection import Collection
from .filters import bbox_geometry, date_bounds
from .schema import ASSETS, CRS_COLUMN, DATETIME, GEOMETRY, ID, PROJ_EPSG, assets_type

log = logging.getLogger(__name__)

# A STAC JSON document larger than this is refused (a catalog, an item or an ItemCollection).
MAX_DOCUMENT_BYTES = 256 * MiB
# Item documents of a static catalog fetched at once.
DOCUMENT_BATCH = 256

_GEOPARQUET_SUFFIXES = (".parquet", ".geoparquet", ".pq")
_ITEM_SEARCH = re.compile(r"/item-search/?$")
_DATETIME_PROPERTIES = ("start_datetime", "end_datetime", "created", "updated", "published", "expires")
_PROJ_KEYS = ("proj:epsg", "proj:code", "proj:wkt2", "proj:projjson")
_RECORD_COLUMNS = (ID, DATETIME, GEOMETRY, ASSETS, "bbox", "collection", PROJ_EPSG, CRS_COLUMN)
_QUERY_OPS = ("eq", "neq", "lt", "lte", "gt", "gte", "startsWith", "endsWith", "contains", "in")


@dataclass
class StacStats:
    """What a STAC build read: the source kind, items seen and kept, and API pages or documents fetched.

    Attributes
    ----------
    kind
        ``"api"``, ``"catalog"``, ``"item-collection"``, ``"item"``, ``"geoparquet"`` or ``"objects"``.
    items_read
        Items the source delivered (before the exact filters here).
    items_kept
        Records in the collection.
    pages
        Result pages fetched from an API (0 for other sources).
    documents
        JSON documents fetched for a static catalog (catalogs, collections, items).
    """

    kind: str
    items_read: int = 0
    items_kept: int = 0
    pages: int = 0
    documents: int = 0


# ------------------------------------------------------------------------------------------ filters


@dataclass(frozen=True)
class _Search:
    """The user's filters, validated once, applied exactly to every record."""

    collections: tuple[str, ...] | None
    bbox: tuple[float, float, float, float] | None
    date_range: tuple | None
    query: dict | None
    max_items: int | None
    area: shapely.Geometry | None = field(default=None, compare=False)
    lo: pd.Timestamp | None = None
    hi: pd.Timestamp | None = None

    @classmethod
    def make(cls, collections, bbox, date_range, query, max_items) -> _Search:
        if isinstance(collections, str):
            collections = (collections,)
        elif collections is not None:
            collections = tuple(str(c) for c in collections)
        area = None
        if bbox is not None:
            area = bbox_geometry(bbox)
            bbox = tuple(float(v) for v in bbox)
        lo, hi = date_bounds(date_range) if date_range is not None else (None, None)
        if query is not None:
            _check_query(query)
        if max_items is not None and max_items < 1:
            raise PlanError(f"max_items must be at least 1, got {max_items}")
        return cls(collections, bbox, date_range, query, max_items, area, lo, hi)

    def keeps(self, record: dict, properties: dict) -> bool:
        if self.collections is not None and record["collection"] not in self.collections:
            return False
        if self.lo is not None or self.hi is not None:
            when = record[DATETIME]
            if (
                when is None
                or (self.lo is not None and when < self.lo)
                or (self.hi is not None and when >= self.hi)
            ):
                return False
        if self.area is not None:
            footprint = record[GEOMETRY]
            if footprint is None or not self.area.intersects(footprint):
                return False
        return self.query is None or _query_matches(self.query, record, properties)

    def api_datetime(self) -> str | None:
        """The date range as a STAC API interval (inclusive ends, RFC 3339, ``..`` for open ends)."""
        if self.lo is None and self.hi is None:
            return None

        def text(ts):
            return ".." if ts is None else ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

        return f"{text(self.lo)}/{text(None if self.hi is None else self.hi - pd.Timedelta(microseconds=1))}"

    def api_bboxes(self) -> list[list[float] | None]:
        """One bbox per API search: a box crossing the antimeridian (west > east) becomes two."""
        if self.bbox is None:
            return [None]
        west, south, east, north = self.bbox
        if west > east:
            return [[west, south, 180.0, north], [-180.0, south, east, north]]
        return [list(self.bbox)]

    def describe(self) -> str:
        parts = [
            f"{name}={value!r}"
            for name, value in (
                ("collections", list(self.collections) if self.collections else None),
                ("bbox", self.bbox),
                ("date_range", self.date_range),
                ("query", self.query),
            )
            if value is not None
        ]
        return ", ".join(parts) or "no filters"


def _check_query(query) -> None:
    if not isinstance(query, Mapping):
        raise PlanError('query must be a dict like {"eo:cloud_cover": {"lt": 20}} (the STAC query extension)')
    for name, ops in query.items():
        if not isinstance(ops, Mapping) or not ops:
            raise PlanError(f"query[{name!r}] must be a dict of operator -> value, e.g. {{'lt': 20}}")
        bad = [op for op in ops if op not in _QUERY_OPS]
        if bad:
            raise PlanError(f"unknown query operator(s) {bad} for {name!r}; use {', '.join(_QUERY_OPS)}")


def _compare(op: str, value, target) -> bool:
    try:
        if op == "eq":
            return value == target
        if op == "neq":
            return value != target
        if op == "lt":
            return value < target
        if op == "lte":
            return value <= target
        if op == "gt":
            return value > target
        if op == "gte":
            return value >= target
        if op == "startsWith":
            return isinstance(value, str) and value.startswith(target)
        if op == "endsWith":
            return isinstance(value, str) and value.endswith(target)
        if op == "contains":
            return target in value if isinstance(value, str | list | tuple) else False
        if op == "in":
            return value in target
    except TypeError:  # comparing values of different kinds matches nothing, as STAC APIs do
        return False
    return False


def _query_matches(query: Mapping, record: dict, properties: dict) -> bool:
    """The STAC query extension's semantics: every operator of every property holds; missing fails."""
    for name, ops in query.items():
        if name in properties:
            value = properties[name]
        elif name in ("id", "collection"):
            value = record[name]
        else:
            return False
        if value is None or not all(_compare(op, value, target) for op, target in ops.items()):
            return False
    return True


# ------------------------------------------------------------------------------------ item -> record


def _join(base: str | None, href: str) -> str:
    """``href`` made absolute against the document it was read from (URL or local path)."""
    if base is None or "://" in href:
        return href
    scheme, sep, rest = base.partition("://")
    if not sep:
        return href if os.path.isabs(href) else os.path.normpath(os.path.join(os.path.dirname(base), href))
    if scheme.lower() in ("http", "https", "file"):
        return urljoin(base, href)
    bucket, _, key = rest.partition("/")  # object stores: s3://bucket/key, gs://, memory://
    if href.startswith("/"):
        return f"{scheme}://{bucket}{posixpath.normpath(href)}"
    return f"{scheme}://{bucket}/{posixpath.normpath(posixpath.join(posixpath.dirname(key), href))}"


@lru_cache(maxsize=256)
def _identify_crs(text: str) -> tuple[int | None, str]:
    """(EPSG code or None, ``crs`` column value) of a WKT2 or PROJJSON CRS."""
    try:
        crs = pyproj.CRS.from_user_input(json.loads(text) if text.lstrip().startswith("{") else text)
        epsg = crs.to_epsg(min_confidence=100)
    except (pyproj.exceptions.CRSError, ValueError, TypeError):
        return None, text
    return (epsg, f"EPSG:{epsg}") if epsg is not None else (None, text)


def _projjson_text(value) -> str:
    """PROJJSON as PROJ writes it, so that the same CRS gives the same text whatever wrote the item."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return _canonical_projjson(text)


@lru_cache(maxsize=256)
def _canonical_projjson(text: str) -> str:
    try:
        return pyproj.CRS.from_json(text).to_json()
    except (pyproj.exceptions.CRSError, ValueError, TypeError):
        return text


def _crs_of(fields: Mapping) -> tuple[int | None, str | None] | None:
    """(proj:epsg, crs) from projection-extension fields of either version; None when there are none."""
    epsg = fields.get("proj:epsg")
    if epsg is not None:
        try:
            return int(epsg), f"EPSG:{int(epsg)}"
        except (TypeError, ValueError):
            pass
    code = fields.get("proj:code")
    if isinstance(code, str) and code:
        authority, _, number = code.partition(":")
        if authority.upper() == "EPSG" and number.isdigit():
            return int(number), f"EPSG:{int(number)}"
        return None, code
    wkt = fields.get("proj:wkt2")
    if isinstance(wkt, str) and wkt:
        return _identify_crs(wkt)
    projjson = fields.get("proj:projjson")
    if projjson:
        return _identify_crs(projjson if isinstance(projjson, str) else json.dumps(projjson, sort_keys=True))
    return None


def _parse_time(value) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        return None
    if ts is pd.NaT:
        return None
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).as_unit("us")


def _footprint(item: Mapping) -> shapely.Geometry | None:
    geometry = item.get("geometry")
    if geometry:
        try:
            return shapely.geometry.shape(geometry)
        except (ValueError, TypeError, AttributeError, shapely.errors.GEOSException):
            raise SchemaError(f"item {item.get('id')!r} has a geometry that is not GeoJSON") from None
    bbox = item.get("bbox")
    if bbox and len(bbox) in (4, 6):
        west, south, east, north = (
            (bbox[0], bbox[1], bbox[2], bbox[3]) if len(bbox) == 4 else bbox[0:2] + bbox[3:5]
        )
        if west > east:  # crosses the antimeridian
            return shapely.union(shapely.box(west, south, 180, north), shapely.box(-180, south, east, north))
        return shapely.box(west, south, east, north)
    return None


def _item_record(item: Mapping, base: str | None) -> tuple[dict, dict, dict]:
    """(record fields, properties, absolute-href assets) of one STAC item (a GeoJSON Feature dict)."""
    if not isinstance(item, Mapping) or "id" not in item:
        raise SchemaError(f"not a STAC item (no id): {str(item)[:120]}")
    properties = dict(item.get("properties") or {})
    when = _parse_time(properties.get("datetime")) or _parse_time(properties.get("start_datetime"))
    assets = {}
    self_href = next(
        (link.get("href") for link in item.get("links") or () if link.get("rel") == "self"), None
    )
    base = base or self_href
    for key, asset in (item.get("assets") or {}).items():
        if isinstance(asset, Mapping) and isinstance(asset.get("href"), str):
            assets[str(key)] = {**asset, "href": _join(base, asset["href"])}
            alternates = asset.get("alternate")
            if isinstance(alternates, Mapping):
                assets[str(key)]["alternate"] = {
                    name: {**alt, "href": _join(base, alt["href"])}
                    for name, alt in alternates.items()
                    if isinstance(alt, Mapping) and isinstance(alt.get("href"), str)
                }
    record = {
        ID: str(item["id"]),
        DATETIME: when,
        GEOMETRY: _footprint(item),
        "collection": item.get("collection"),
    }
    return record, properties, assets


# ---------------------------------------------------------------------------------------- bands


def _is_raster_asset(asset: Mapping) -> bool:
    media = str(asset.get("type") or "").lower()
    if media:
        return "tiff" in media
    return asset["href"].split("?", 1)[0].lower().endswith((".tif", ".tiff"))


def _band_names(asset: Mapping) -> list[list[str]]:
    """Names each sample of a multi-band asset goes by (``bands``, ``eo:bands``, ``raster:bands``)."""
    lists = [asset.get(key) for key in ("bands", "eo:bands", "raster:bands")]
    lists = [x for x in lists if isinstance(x, list) and x]
    if not lists:
        return []
    names: list[list[str]] = [[] for _ in range(max(len(x) for x in lists))]
    for entries in lists:
        for i, entry in enumerate(entries):
            if isinstance(entry, Mapping):
                for key in ("name", "common_name", "eo:common_name"):
                    if isinstance(entry.get(key), str):
                        names[i].append(entry[key].lower())
    return names


@dataclass(frozen=True)
class _Bands:
    """Band codes -> asset keys and sample indices (explicit or from the assets' band lists)."""

    codes: tuple[str, ...]
    asset_of: dict[str, str]
    index_of: dict[str, int]
    alternate: str | None
    rewrites: tuple[tuple[str, str], ...]

    def assets(self, item_id: str, assets: Mapping) -> dict:
        shared = {}
        for code in self.codes:
            shared.setdefault(self.asset_of[code], []).append(code)
        out = {}
        for code in self.codes:
            key = self.asset_of[code]
            asset = assets.get(key)
            if asset is None:
                out[code] = None
                continue
            href = asset["href"]
            alternate = (asset.get("alternate") or {}).get(self.alternate) if self.alternate else None
            if alternate:
                href = alternate["href"]
            for old, new in self.rewrites:
                if href.startswith(old):
                    href = new + href[len(old) :]
                    break
            out[code] = {"href": href, "band_index": self._band_index(item_id, code, key, asset, shared[key])}
        return out

    def _band_index(
        self, item_id: str, code: str, key: str, asset: Mapping, sharing: list[str]
    ) -> int | None:
        if code in self.index_of:
            return self.index_of[code]
        names = _band_names(asset)
        matches = [i for i, aliases in enumerate(names) if code.lower() in aliases]
        if len(matches) == 1:
            return matches[0]
        if len(sharing) > 1:
            listed = [aliases[0] if aliases else "?" for aliases in names]
            raise SchemaError(
                f"bands {sharing} all map to asset {key!r} of item {item_id!r} (bands {listed}) and band "
                f"{code!r} is not one of its band names: pass band_index_map={{band: sample index}}"
            )
        return None  # the whole (possibly multi-sample) asset


def _plan_bands(
    records: list[tuple[dict, dict, dict]],
    bands: Sequence[str] | None,
    band_map: Mapping[str, str] | None,
    band_index_map: Mapping[str, int] | None,
    alternate: str | None,
    href_rewrites: Mapping[str, str] | None,
) -> _Bands:
    seen: dict[str, None] = {}
    raster: dict[str, None] = {}
    for _, _, assets in records:
        for key, asset in assets.items():
            seen.setdefault(key)
            if _is_raster_asset(asset):
                raster.setdefault(key)
    if band_map:
        asset_of = {str(code): str(key) for code, key in band_map.items()}
        if bands is not None:
            unknown = [b for b in bands if b not in asset_of]
            if unknown:
                raise SchemaError(f"band(s) {unknown} are not in band_map; it maps {list(asset_of)}")
            codes = list(bands)
        else:
            codes = [c for c in asset_of if asset_of[c] in seen]
            dropped = [c for c in asset_of if asset_of[c] not in seen]
            if dropped:
                log.info("band_map entries with no asset in any item are left out: %s", dropped)
            if not codes:
                raise SchemaError(
                    f"no item has any asset of band_map {dict(asset_of)}; the items' assets are {list(seen)}"
                )
    else:
        codes = list(bands) if bands is not None else list(raster)
        asset_of = {c: c for c in codes}
        if not codes:
            raise SchemaError(
                f"no GeoTIFF asset found in the items (assets: {list(seen)}); choose them with bands=[...]"
            )
    missing = [c for c in codes if asset_of[c] not in seen]
    if missing:
        raise SchemaError(
            f"band(s) {missing} name assets that no item has ({[asset_of[c] for c in missing]}); "
            f"the items' assets are {list(seen)}"
        )
    index_of = {str(k): int(v) for k, v in (band_index_map or {}).items()}
    unknown = [k for k in index_of if k not in codes]
    if unknown:
        raise SchemaError(f"band_index_map names band(s) {unknown} that are not selected ({codes})")
    rewrites = tuple(sorted((href_rewrites or {}).items(), key=lambda kv: -len(kv[0])))
    return _Bands(tuple(codes), {c: asset_of[c] for c in codes}, index_of, alternate, rewrites)


# ------------------------------------------------------------------------------------ record table


def _column(name: str, values: list) -> pa.Array:
    """An Arrow column of property values: inferred, datetimes as UTC timestamps, JSON text otherwise."""
    if name == "eo:cloud_cover":
        try:
            return pa.array(values, type=pa.float64())
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
    if name == "proj:projjson":  # a CRS is one value: PROJ's own JSON text, not a struct of its parts
        return pa.array([None if v is None else _projjson_text(v) for v in values], type=pa.string())
    if name in _DATETIME_PROPERTIES:
        stamps = [_parse_time(v) for v in values]
        if all((s is None) == (v is None) for s, v in zip(stamps, values, strict=True)):
            return pa.array(stamps, type=pa.timestamp("us", tz="UTC"))
    try:
        array = pa.array(values)
        if _writable(array.type):
            return array
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        pass
    return pa.array(
        [
            None if v is None else v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
            for v in values
        ],
        type=pa.string(),
    )


def _writable(arrow_type: pa.DataType) -> bool:
    """Whether Parquet stores the type and pandas round-trips it (no empty structs or null leaves)."""
    if pa.types.is_null(arrow_type):
        return False
    if pa.types.is_struct(arrow_type):
        return arrow_type.num_fields > 0 and all(_writable(f.type) for f in arrow_type)
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return _writable(arrow_type.value_type)
    return True


def _records_table(rows: list[tuple[dict, dict, dict]], plan: _Bands) -> pa.Table:
    """One Arrow table of records: the collection's columns first, then every property."""
    crs_info = []
    for _, properties, assets in rows:
        found = _crs_of(properties)
        if found is None:  # projection fields on the selected assets instead of the item
            for code in plan.codes:
                asset = assets.get(plan.asset_of[code])
                if asset is not None and (found := _crs_of(asset)) is not None:
                    break
        crs_info.append(found or (None, None))
    names: dict[str, None] = {}
    for _, properties, _ in rows:
        for name in properties:
            if name not in _RECORD_COLUMNS and name != "datetime":
                names.setdefault(name)
    geometries = np.asarray([record[GEOMETRY] for record, _, _ in rows], dtype=object)
    columns = {
        ID: pa.array([record[ID] for record, _, _ in rows], type=pa.string()),
        DATETIME: pa.array([record[DATETIME] for record, _, _ in rows], type=pa.timestamp("us", tz="UTC")),
        GEOMETRY: pa.array(shapely.to_wkb(geometries, flavor="iso"), type=pa.binary()),
        ASSETS: pa.array(
            [plan.assets(record[ID], assets) for record, _, assets in rows],
            type=assets_type(list(plan.codes)),
        ),
        "collection": pa.array([record["collection"] for record, _, _ in rows], type=pa.string()),
        PROJ_EPSG: pa.array([epsg for epsg, _ in crs_info], type=pa.int32()),
        CRS_COLUMN: pa.array([crs for _, crs in crs_info], type=pa.string()),
    }
    for name in names:
        columns[name] = _column(name, [properties.get(name) for _, properties, _ in rows])
    return pa.table(columns)


# ---------------------------------------------------------------------------------------- sources


def _read_documents(hrefs: list[str], storage_options: dict | None, config: IOConfig | None) -> list[dict]:
    """JSON documents at ``hrefs`` (any protocol of :mod:`rasteret_dask.io`), fetched concurrently."""

    async def one(href: str) -> dict:
        body, _ = await read_prefix_async(
            href, MAX_DOCUMENT_BYTES + 1, storage_options=storage_options, config=config
        )
        if len(body) > MAX_DOCUMENT_BYTES:
            raise CollectionError(f"{href} is larger than {MAX_DOCUMENT_BYTES} bytes: not read as STAC JSON")
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CollectionError(f"{href} is not JSON: {exc}") from None

    async def all_of() -> list[dict]:
        return list(await asyncio.gather(*(one(h) for h in hrefs)))

    try:
        return run_sync(all_of())
    except CollectionError:
        raise
    except (RasteretDaskError, ValueError) as exc:
        raise CollectionError(f"cannot read STAC document(s): {exc}") from None


def _is_api(doc: Mapping) -> bool:
    conforms = doc.get("conformsTo") or []
    if any(isinstance(c, str) and _ITEM_SEARCH.search(c) for c in conforms):
        return True
    return any(
        link.get("rel") == "search" and "json" in str(link.get("type", "json"))
        for link in doc.get("links") or []
    )


def _static_items(
    root: dict, root_href: str, search: _Search, options: dict | None, config, stats: StacStats
) -> Iterator[tuple[dict, str]]:
    """Items of a static catalog, breadth first; collections not asked for contribute no items."""
    level, visited = [(root, root_href)], {root_href}
    while level:
        children, items = [], []
        for doc, href in level:
            if not isinstance(doc, Mapping):
                raise CollectionError(f"{href} is not a STAC catalog or collection document")
            skip = (
                doc.get("type") == "Collection"
                and search.collections is not None
                and doc.get("id") not in search.collections
            )
            for link in doc.get("links") or []:
                if not isinstance(link, Mapping) or not isinstance(link.get("href"), str):
                    continue
                target = _join(href, link["href"])
                if link.get("rel") == "child" and target not in visited:
                    visited.add(target)
                    children.append(target)
                elif link.get("rel") == "item" and not skip and target not in visited:
                    visited.add(target)
                    items.append(target)
        for start in range(0, len(items), DOCUMENT_BATCH):
            batch = items[start : start + DOCUMENT_BATCH]
            stats.documents += len(batch)
            yield from zip(_read_documents(batch, options, config), batch, strict=True)
        stats.documents += len(children)
        level = (
            list(zip(_read_documents(children, options, config), children, strict=True)) if children else []
        )


def _api_items(
    url: str, search: _Search, limit: int | None, headers: dict | None, stats: StacStats
) -> Iterator[tuple[dict, str | None]]:
    """Items of a STAC API search through pystac-client, page by page (stops when the caller does)."""
    from pystac_client import Client, ConformanceClasses
    from pystac_client.exceptions import APIError

    try:
        client = Client.open(url, headers=headers)
    except (APIError, OSError) as exc:
        raise CollectionError(f"cannot open the STAC API at {url}: {exc}") from None
    query = search.query
    if query is not None and not client.conforms_to(ConformanceClasses.QUERY):
        log.info("%s does not declare the query extension: the query is applied to the results here", url)
        query = None
    for bbox in search.api_bboxes():
        parameters = {
            "collections": list(search.collections) if search.collections else None,
            "bbox": bbox,
            "datetime": search.api_datetime(),
            "query": query,
            "limit": limit,
        }
        item_search = client.search(**{k: v for k, v in parameters.items() if v is not None})
        try:
            for page in item_search.pages_as_dicts():
                stats.pages += 1
                for item in page.get("features") or []:
                    yield item, None
        except (APIError, OSError) as exc:
            raise CollectionError(f"the STAC API search at {url} failed: {exc}") from None


def _missing_collections(url: str, wanted: Sequence[str], headers: dict | None) -> str:
    """A hint naming asked-for collections an API does not have (empty when all exist or unknown)."""
    from pystac_client import Client
    from pystac_client.exceptions import APIError

    try:
        have = {c.id for c in Client.open(url, headers=headers).get_collections()}
    except (APIError, OSError):
        return ""
    missing = [c for c in wanted if c not in have]
    return f"; the API has no collection {missing} (it has {sorted(have)})" if missing else ""


def _geoparquet_items(
    source, search: _Search, options: dict, stats: StacStats
) -> Iterator[tuple[dict, str | None]]:
    """Items of a stac-geoparquet file or dataset (or an Arrow table in that layout)."""
    try:
        from stac_geoparquet.arrow import stac_table_to_items
    except ImportError:  # pragma: no cover - a dependency
        raise CollectionError("reading stac-geoparquet needs the stac-geoparquet package") from None
    if isinstance(source, pa.Table):
        dataset, base = pads.dataset(source), None
    else:
        base = os.fspath(source)
        try:
            dataset = pads.dataset(base, format="parquet", filesystem=_arrow_filesystem(base, options))
        except (OSError, pa.ArrowInvalid) as exc:
            raise CollectionError(f"cannot read the stac-geoparquet at {base}: {exc}") from None
    expr = _pushdown(dataset.schema, search)
    try:
        batches = dataset.to_batches(filter=expr) if expr is not None else dataset.to_batches()
        first = next(batches, None)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        batches = dataset.to_batches()
        first = next(batches, None)
    if first is None:
        return
    for batch in _chain(first, batches):
        if batch.num_rows:
            for item in stac_table_to_items(pa.Table.from_batches([batch])):
                yield item, base


def _chain(first, rest):
    yield first
    yield from rest


def _catalog_options(href: str, storage_options: dict | None, catalog_options, headers) -> dict:
    """Options for reading STAC documents and stac-geoparquet at ``href``.

    ``catalog_options`` when given; otherwise, for http(s), only the API ``headers`` (assets' options,
    such as S3 settings, mean nothing to a web server), and for object stores the assets' options.
    """
    if catalog_options is not None:
        return dict(catalog_options)
    if href.partition("://")[0].lower() in ("http", "https"):
        return {"headers": dict(headers)} if headers else {}
    return store_options(storage_options)


def _arrow_filesystem(url: str, options: dict):
    """A pyarrow filesystem for a stac-geoparquet URL (None for local paths)."""
    import fsspec
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    protocol = fsspec.utils.get_protocol(url)
    if protocol in ("file", "local"):
        return None
    if protocol in ("http", "https"):  # fsspec's HTTP filesystem takes request options only
        options = {k: v for k, v in options.items() if k in ("headers", "client_kwargs")}
    return PyFileSystem(FSSpecHandler(fsspec.filesystem(protocol, **options)))


def _pushdown(schema: pa.Schema, search: _Search) -> pc.Expression | None:
    """A loose pre-filter on stac-geoparquet columns (the exact filter runs on the records)."""
    expr = None

    def both(a, b):
        return b if a is None else a & b

    names = schema.names
    if search.collections is not None and "collection" in names:
        expr = both(expr, pc.field("collection").isin(list(search.collections)))
    if DATETIME in names and pa.types.is_timestamp(schema.field(DATETIME).type):
        kind = schema.field(DATETIME).type
        slack = pd.Timedelta(milliseconds=1)  # a coarser stored unit must not lose edge items

        def stamp(ts):
            ts = ts if kind.tz is not None else ts.tz_localize(None)
            return pa.scalar(ts.to_pydatetime(), type=pa.timestamp("us", tz=kind.tz)).cast(kind, safe=False)

        when = None
        if search.lo is not None:
            when = pc.field(DATETIME) >= stamp(search.lo - slack)
        if search.hi is not None:
            when = both(when, pc.field(DATETIME) <= stamp(search.hi + slack))
        if when is not None:
            expr = both(expr, when | pc.field(DATETIME).is_null())
    box = schema.field("bbox").type if "bbox" in names else None
    corners = {"xmin", "ymin", "xmax", "ymax"}
    if (
        search.bbox is not None
        and box is not None
        and pa.types.is_struct(box)
        and corners <= {f.name for f in box}
    ):
        west, south, east, north = search.bbox
        xmin, xmax = pc.field("bbox", "xmin"), pc.field("bbox", "xmax")
        crossing = west > east  # the asked box crosses the antimeridian: either side
        across = ((xmax >= west) | (xmin <= east)) if crossing else ((xmin <= east) & (xmax >= west))
        across = across | (xmin > xmax)  # items that cross the antimeridian themselves
        rows = (pc.field("bbox", "ymin") <= north) & (pc.field("bbox", "ymax") >= south)
        expr = both(expr, across & rows)
    return expr


def _object_items(source) -> tuple[str, Iterator[tuple[dict, str | None]]]:
    """Items of pystac objects, a pystac-client search, or an iterable of item dicts/pystac Items."""
    import pystac

    def from_pystac(items) -> Iterator[tuple[dict, str | None]]:
        for item in items:
            if isinstance(item, pystac.Item):
                yield item.to_dict(include_self_link=False, transform_hrefs=False), item.get_self_href()
            else:
                yield item, None

    try:
        from pystac_client import ItemSearch
    except ImportError:  # pragma: no cover - a dependency
        ItemSearch = ()
    if isinstance(source, ItemSearch):
        return "api", ((item, None) for item in source.items_as_dicts())
    if isinstance(source, pystac.ItemCollection):
        return "item-collection", from_pystac(source.items)
    if isinstance(source, pystac.Item):
        return "item", from_pystac([source])
    if isinstance(source, pystac.Catalog):
        return "catalog", from_pystac(source.get_items(recursive=True))
    if isinstance(source, Iterable) and not isinstance(source, str | bytes | Mapping):
        return "objects", from_pystac(source)
    if isinstance(source, Mapping):
        if source.get("type") == "FeatureCollection":
            return "item-collection", ((item, None) for item in source.get("features") or [])
        return "item", iter([(source, None)])
    raise CollectionError(f"cannot read STAC items from {type(source).__name__}")


def _source_items(
    source,
    search: _Search,
    *,
    storage_options: dict | None,
    catalog_options: dict | None,
    config: IOConfig | None,
    limit: int | None,
    headers: dict | None,
) -> tuple[StacStats, Iterator[tuple[dict, str | None]]]:
    if isinstance(source, pa.Table):
        stats = StacStats("geoparquet")
        return stats, _geoparquet_items(source, search, {}, stats)
    if not isinstance(source, str | os.PathLike):
        kind, items = _object_items(source)
        return StacStats(kind), items
    href = os.fspath(source)
    options = _catalog_options(href, storage_options, catalog_options, headers)
    if href.split("?", 1)[0].lower().endswith(_GEOPARQUET_SUFFIXES) or (
        "://" not in href and os.path.isdir(href)
    ):
        stats = StacStats("geoparquet")
        return stats, _geoparquet_items(href, search, options, stats)
    (doc,) = _read_documents([href], options, config)
    if not isinstance(doc, Mapping):
        raise CollectionError(f"{href} is not a STAC document")
    kind = doc.get("type")
    if kind == "FeatureCollection":
        return StacStats("item-collection", documents=1), ((item, href) for item in doc.get("features") or [])
    if kind == "Feature":
        return StacStats("item", documents=1), iter([(doc, href)])
    if _is_api(doc):
        stats = StacStats("api")
        return stats, _api_items(href, search, limit, headers, stats)
    if kind in ("Catalog", "Collection") or "links" in doc:
        stats = StacStats("catalog", documents=1)
        return stats, _static_items(doc, href, search, options, config, stats)
    raise CollectionError(f"{href} is neither a STAC catalog, collection, item nor ItemCollection")


# ------------------------------------------------------------------------------------------ build


def records_from_stac(
    source,
    *,
    collections: str | Sequence[str] | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    date_range: tuple | None = None,
    query: dict | None = None,
    bands: Sequence[str] | None = None,
    band_map: Mapping[str, str] | None = None,
    band_index_map: Mapping[str, int] | None = None,
    max_items: int | None = None,
    limit: int | None = None,
    storage_options: dict | None = None,
    catalog_options: dict | None = None,
    config: IOConfig | None = None,
    headers: dict | None = None,
    alternate: str | None = None,
    href_rewrites: Mapping[str, str] | None = None,
):
    """Normalised records (a GeoDataFrame) of the matching items, before enrichment; see :func:`build_from_stac`.

    Returns ``(records, band codes, StacStats)``.
    """
    search = _Search.make(collections, bbox, date_range, query, max_items)
    stats, items = _source_items(
        source,
        search,
        storage_options=storage_options,
        catalog_options=catalog_options,
        config=config,
        limit=limit,
        headers=headers,
    )
    rows, seen = [], set()
    try:
        for item, base in items:
            stats.items_read += 1
            record, properties, assets = _item_record(item, base)
            key = (record["collection"], record[ID])
            if key in seen or not search.keeps(record, properties):
                continue
            seen.add(key)
            rows.append((record, properties, assets))
            if search.max_items is not None and len(rows) >= search.max_items:
                break
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()  # stop paging
    if not rows:
        hint = ""
        if stats.kind == "api" and search.collections:
            hint = _missing_collections(os.fspath(source), search.collections, headers)
        raise CollectionError(
            f"no STAC item matched ({search.describe()}) in {_describe_source(source)}"
            f" after reading {stats.items_read} item(s){hint}; a collection needs at least one record"
        )
    ids = pd.Series([record[ID] for record, _, _ in rows])
    if ids.duplicated().any():
        repeated = ids[ids.duplicated()].unique()[:5].tolist()
        raise SchemaError(
            f"item ids {repeated} occur in several collections; build one collection per STAC collection"
        )
    plan = _plan_bands(rows, bands, band_map, band_index_map, alternate, href_rewrites)
    stats.items_kept = len(rows)
    frame = records_from_table(_records_table(rows, plan))
    return frame, list(plan.codes), stats


def _describe_source(source) -> str:
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    return f"a {type(source).__name__}"


def build_from_stac(
    source,
    *,
    collections: str | Sequence[str] | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    date_range: tuple | None = None,
    query: dict | None = None,
    bands: Sequence[str] | None = None,
    band_map: Mapping[str, str] | None = None,
    band_index_map: Mapping[str, int] | None = None,
    max_items: int | None = None,
    limit: int | None = None,
    storage_options: dict | None = None,
    catalog_options: dict | None = None,
    headers: dict | None = None,
    alternate: str | None = None,
    href_rewrites: Mapping[str, str] | None = None,
    enrich: bool = True,
    npartitions: int | None = None,
    config: IOConfig | None = None,
    progress: bool | None = None,
    name: str = "",
    description: str = "",
    data_source: str = "",
) -> Collection:
    """Build a collection from STAC items, parsing every selected asset's COG header once.

    Parameters
    ----------
    source
        Where the items are:

        - the root URL of a STAC API (a document declaring the ``item-search`` conformance class or
          a ``search`` link): searched with pystac-client, following every ``next`` page;
        - the path or URL (``file``, ``http(s)``, ``s3``, ``gs``, ``memory``) of a static catalog,
          a collection, an item or an ItemCollection (GeoJSON FeatureCollection): catalogs are walked
          through their ``child`` and ``item`` links, relative hrefs resolved against each document;
        - a stac-geoparquet file or folder (``.parquet``/``.geoparquet``/``.pq``), or an Arrow table in
          that layout;
        - pystac objects (Catalog, Collection, ItemCollection, Item), a pystac-client ``ItemSearch``,
          or an iterable of item dicts or pystac Items.
    collections
        STAC collection id(s) to keep.
    bbox
        ``(west, south, east, north)`` in CRS84 degrees; footprints must intersect it. West > east
        means the box crosses the antimeridian: longitudes from west to 180 and from -180 to east
        (an API is sent two searches, one per side).
    date_range
        ``(start, end)``, inclusive, as in :meth:`Collection.subset` (a date-only end includes that
        whole day, UTC). An item without ``datetime`` is dated by its ``start_datetime``.
    query
        STAC query-extension filter on properties, e.g. ``{"eo:cloud_cover": {"lt": 20}}`` (operators
        eq, neq, lt, lte, gt, gte, startsWith, endsWith, contains, in). Sent to APIs that declare the
        extension and always applied to the results here (so servers without it, and static sources,
        give the same records).
    bands
        Band codes to keep, in this order: keys of ``band_map``, or asset keys when there is none.
        Default: every band of ``band_map`` that some item has, or every GeoTIFF asset (media type
        containing ``tiff``, or an href ending in ``.tif``/``.tiff``).
    band_map
        ``{band code: asset key}``, e.g. ``{"B04": "red"}``. Several codes may name one multi-band
        asset; each gets the ``band_index`` of the sample whose name (``bands``/``eo:bands``/
        ``raster:bands`` ``name``, ``common_name`` or ``eo:common_name``) equals the code, unless
        ``band_index_map`` gives it.
    band_index_map
        ``{band code: sample index}`` (0-based) for multi-band assets.
    max_items
        Keep at most this many records (the first ones the source delivers that pass the filters);
        an API search stops paging once it has them.
    limit
        Items per API page (the server's default when None).
    storage_options
        Options for reading the assets (see :mod:`rasteret_dask.io.stores`;
        ``{"signer": "planetary_computer"}`` signs URLs at read time, see :mod:`rasteret_dask.io.signing`).
        Kept in memory with the collection, never written.
    catalog_options
        Options for reading static STAC documents and stac-geoparquet. Default: ``{"headers": headers}``
        for http(s) sources, ``storage_options`` (without the signer) for object stores.
    headers
        HTTP headers for STAC API requests and http(s) STAC documents (e.g. authorisation).
    alternate
        Use each asset's ``alternate[alternate]`` href when it has one (alternate-assets extension,
        e.g. ``"s3"``).
    href_rewrites
        ``{prefix: replacement}`` applied to asset hrefs (longest prefix first), e.g.
        ``{"https://landsatlook.usgs.gov/data/": "s3://usgs-landsat/"}``.
    enrich, npartitions, config, progress, name, description, data_source
        As for :func:`~rasteret_dask.collection.build.build_from_table`.

    Returns
    -------
    Collection
        With ``build_report`` (header failures per band; an asset href that leads nowhere is a failure
        of that band in that record, not of the build) and ``stac_stats`` (:class:`StacStats`).

    Raises
    ------
    CollectionError
        When no item matches: an empty collection would have no bands to enrich or read. The message
        repeats the filters (and names collections an API does not have).
    SchemaError
        When items or band selections are inconsistent (unknown bands, ambiguous multi-band assets,
        one id in several collections).

    The records hold the unsigned hrefs, ``proj:epsg``/``crs`` from ``proj:epsg``, ``proj:code``,
    ``proj:wkt2`` or ``proj:projjson`` (item properties first, then the selected assets; headers fill
    what STAC leaves out), ``collection``, and every item property as a column (``eo:cloud_cover``
    as double, the common date properties as UTC timestamps, values of mixed kinds as JSON text).
    """
    try:
        check_options(storage_options)
    except ValueError as exc:
        raise CollectionError(str(exc)) from None
    frame, codes, stats = records_from_stac(
        source,
        collections=collections,
        bbox=bbox,
        date_range=date_range,
        query=query,
        bands=bands,
        band_map=band_map,
        band_index_map=band_index_map,
        max_items=max_items,
        limit=limit,
        storage_options=storage_options,
        catalog_options=catalog_options,
        config=config,
        headers=headers,
        alternate=alternate,
        href_rewrites=href_rewrites,
    )
    if not name:
        found = sorted({c for c in frame["collection"].dropna()})
        name = ", ".join(found)
    data_source = data_source or _describe_source(source)
    collection = finish_build(
        frame,
        enrich=enrich,
        bands=codes,
        storage_options=storage_options,
        config=config,
        npartitions=npartitions,
        progress=progress,
        name=name,
        description=description,
        data_source=data_source,
    )
    collection.stac_stats = stats
    return collection
