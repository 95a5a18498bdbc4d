"""Known datasets: descriptors of STAC sources with their band maps and access settings, and ``build(id)``.

>>> import rasteret_dask as rd                                                        # doctest: +SKIP
>>> [d.id for d in rd.DatasetRegistry.list()]
>>> c = rd.build("earthsearch/sentinel-2-l2a", bbox=(11.0, 47.0, 11.2, 47.2),
...              date_range=("2024-06-01", "2024-06-30"), bands=["B04", "B08"])

A descriptor holds only plain values (picklable, no secrets). Credentials come from the environment of
the process that reads (AWS variables for requester-pays buckets; ``PC_SDK_SUBSCRIPTION_KEY`` for the
Planetary Computer, optional), and signed URLs are made at read time on the workers, never stored.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from ..errors import CollectionError
from .collection import Collection
from .stac import build_from_stac

SENTINEL2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")


@dataclass(frozen=True)
class DatasetDescriptor:
    """A STAC dataset: where to search, which assets are which bands, how to read them.

    Attributes
    ----------
    id
        Namespaced id, e.g. ``"earthsearch/sentinel-2-l2a"``.
    title, description
        Human-readable name and one line about it.
    stac_api
        Root URL of the STAC API (or the path/URL of a static catalog or stac-geoparquet file: anything
        :func:`~rasteret_dask.collection.stac.build_from_stac` takes as ``source``).
    collections
        STAC collection id(s) to search.
    band_map
        ``{band code: STAC asset key}``; several codes may name one multi-band asset.
    band_index_map
        ``{band code: sample index}`` (0-based) for multi-band assets.
    storage_options
        Options for reading the assets, e.g. ``{"anon": True}`` or ``{"requester_pays": True}``.
    signer
        Name of the URL signer applied at read time (``"planetary_computer"``), or None.
    query
        Default STAC query-extension filter, merged under the caller's.
    alternate
        Asset alternate to prefer (``"s3"``), for the alternate-assets extension.
    href_rewrites
        ``{href prefix: replacement}`` applied to asset hrefs.
    license
        SPDX id or ``"proprietary"``.
    """

    id: str
    title: str
    description: str = ""
    stac_api: str = ""
    collections: tuple[str, ...] = ()
    band_map: dict[str, str] = field(default_factory=dict)
    band_index_map: dict[str, int] = field(default_factory=dict)
    storage_options: dict = field(default_factory=dict)
    signer: str | None = None
    query: dict | None = None
    alternate: str | None = None
    href_rewrites: dict[str, str] = field(default_factory=dict)
    license: str = ""

    def __post_init__(self):
        if not self.id or not isinstance(self.id, str):
            raise ValueError("a DatasetDescriptor needs a non-empty string id")
        if not self.stac_api:
            raise ValueError(f"DatasetDescriptor {self.id!r} needs stac_api (a STAC API root or catalog)")
        collections = (self.collections,) if isinstance(self.collections, str) else tuple(self.collections)
        object.__setattr__(self, "collections", collections)
        for name in ("band_map", "band_index_map", "storage_options", "href_rewrites"):
            object.__setattr__(self, name, dict(getattr(self, name) or {}))
        stray = [b for b in self.band_index_map if b not in self.band_map]
        if stray:
            raise ValueError(
                f"DatasetDescriptor {self.id!r}: band_index_map names bands {stray} not in band_map"
            )

    @property
    def bands(self) -> list[str]:
        """The band codes of ``band_map``, in order."""
        return list(self.band_map)

    def replace(self, **changes) -> DatasetDescriptor:
        """A copy with some fields changed (e.g. ``stac_api`` pointing at a mirror)."""
        return dataclasses.replace(self, **changes)

    def read_options(self, storage_options: dict | None = None) -> dict:
        """The storage options reads use: the descriptor's, the caller's over them, and the signer."""
        options = {**self.storage_options, **(storage_options or {})}
        if self.signer is not None:
            options.setdefault("signer", self.signer)
        return options


class DatasetRegistry:
    """The registry of known datasets (process-wide), used by :func:`build`.

    >>> DatasetRegistry.list()                                                         # doctest: +SKIP
    >>> DatasetRegistry.register(DatasetDescriptor(id="me/mine", title="Mine", stac_api="https://..."))
    """

    _descriptors: ClassVar[dict[str, DatasetDescriptor]] = {}

    @classmethod
    def list(cls) -> list[DatasetDescriptor]:
        """Every registered descriptor, sorted by id."""
        return [cls._descriptors[k] for k in sorted(cls._descriptors)]

    @classmethod
    def ids(cls) -> list[str]:
        """Every registered id, sorted."""
        return sorted(cls._descriptors)

    @classmethod
    def get(cls, dataset_id: str) -> DatasetDescriptor:
        """The descriptor registered as ``dataset_id``.

        Raises
        ------
        CollectionError
            For an unknown id; the message lists the known ones (closest first).
        """
        try:
            return cls._descriptors[dataset_id]
        except (KeyError, TypeError):
            close = difflib.get_close_matches(str(dataset_id), cls.ids(), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise CollectionError(
                f"unknown dataset {dataset_id!r}.{hint} Known datasets: {', '.join(cls.ids())}"
                " (add one with DatasetRegistry.register(DatasetDescriptor(...)))"
            ) from None

    @classmethod
    def register(cls, descriptor: DatasetDescriptor, overwrite: bool = False) -> DatasetDescriptor:
        """Add ``descriptor``; an id already registered is an error unless ``overwrite``."""
        if not isinstance(descriptor, DatasetDescriptor):
            raise TypeError(f"register() takes a DatasetDescriptor, not {type(descriptor).__name__}")
        if descriptor.id in cls._descriptors and not overwrite:
            raise CollectionError(
                f"dataset {descriptor.id!r} is registered already; pass overwrite=True to replace it"
            )
        cls._descriptors[descriptor.id] = descriptor
        return descriptor

    @classmethod
    def unregister(cls, dataset_id: str) -> DatasetDescriptor:
        """Remove and return the descriptor registered as ``dataset_id`` (unknown ids raise)."""
        descriptor = cls.get(dataset_id)
        del cls._descriptors[dataset_id]
        return descriptor


def build(
    dataset_id: str,
    *,
    bbox: tuple[float, float, float, float] | None = None,
    date_range: tuple | None = None,
    query: dict | None = None,
    bands: Sequence[str] | None = None,
    max_items: int | None = None,
    storage_options: dict | None = None,
    **kwargs,
) -> Collection:
    """Build a collection of a registered dataset (see :class:`DatasetRegistry`).

    Parameters
    ----------
    dataset_id
        A registered id, e.g. ``"earthsearch/sentinel-2-l2a"``.
    bbox, date_range, max_items
        As for :func:`~rasteret_dask.collection.stac.build_from_stac` (bbox in CRS84 degrees, west >
        east crossing the antimeridian; date range inclusive).
    query
        STAC query filter, merged over the descriptor's default query.
    bands
        Band codes of the descriptor's ``band_map`` to keep (default: all that the items have).
    storage_options
        Merged over the descriptor's (e.g. an ``endpoint_url``, or ``signer_options``).
    **kwargs
        Passed on to ``build_from_stac`` (``limit``, ``npartitions``, ``progress``, ``config``,
        ``headers``, ``enrich``, ...).
    """
    descriptor = DatasetRegistry.get(dataset_id)
    merged_query = {**(descriptor.query or {}), **(query or {})} or None
    kwargs.setdefault("name", descriptor.id)
    kwargs.setdefault("description", descriptor.title)
    kwargs.setdefault("data_source", descriptor.stac_api)
    return build_from_stac(
        descriptor.stac_api,
        collections=list(descriptor.collections) or None,
        bbox=bbox,
        date_range=date_range,
        query=merged_query,
        bands=bands,
        band_map=descriptor.band_map or None,
        band_index_map=descriptor.band_index_map or None,
        max_items=max_items,
        storage_options=descriptor.read_options(storage_options),
        alternate=descriptor.alternate,
        href_rewrites=descriptor.href_rewrites or None,
        **kwargs,
    )


# ----------------------------------------------------------------------------------------- built-ins

_EARTH_SEARCH = "https://earth-search.aws.element84.com/v1"
_PLANETARY_COMPUTER = "https://planetarycomputer.microsoft.com/api/stac/v1"
_US_WEST_2 = {"client_kwargs": {"region_name": "us-west-2"}}

BUILTIN_DATASETS: tuple[DatasetDescriptor, ...] = (
    DatasetDescriptor(
        id="earthsearch/sentinel-2-l2a",
        title="Sentinel-2 Level-2A (Earth Search)",
        description="Surface reflectance, 10-60 m, global, 2015-; COGs on AWS, public.",
        stac_api=_EARTH_SEARCH,
        collections=("sentinel-2-l2a",),
        band_map={
            "B01": "coastal",
            "B02": "blue",
            "B03": "green",
            "B04": "red",
            "B05": "rededge1",
            "B06": "rededge2",
            "B07": "rededge3",
            "B08": "nir",
            "B8A": "nir08",
            "B09": "nir09",
            "B11": "swir16",
            "B12": "swir22",
            "SCL": "scl",
        },
        storage_options={"anon": True},
        license="proprietary",
    ),
    DatasetDescriptor(
        id="earthsearch/landsat-c2-l2",
        title="Landsat Collection 2 Level-2 (Earth Search, USGS requester-pays bucket)",
        description="Surface reflectance and temperature, 30 m, 1982-; s3://usgs-landsat is requester-pays:"
        " reads are billed to the AWS credentials of the reading process.",
        stac_api=_EARTH_SEARCH,
        collections=("landsat-c2-l2",),
        band_map={
            "B1": "coastal",
            "B2": "blue",
            "B3": "green",
            "B4": "red",
            "B5": "nir08",
            "B6": "swir16",
            "B7": "swir22",
            "ST_B10": "lwir11",
            "qa_pixel": "qa_pixel",
            "qa_radsat": "qa_radsat",
            "qa_aerosol": "qa_aerosol",
        },
        storage_options={"requester_pays": True, **_US_WEST_2},
        alternate="s3",
        href_rewrites={"https://landsatlook.usgs.gov/data/": "s3://usgs-landsat/"},
        license="proprietary",
    ),
    DatasetDescriptor(
        id="earthsearch/cop-dem-glo-30",
        title="Copernicus DEM GLO-30 (Earth Search)",
        description="Digital surface model, 30 m, global; COGs on AWS, public.",
        stac_api=_EARTH_SEARCH,
        collections=("cop-dem-glo-30",),
        band_map={"DEM": "data"},
        storage_options={"anon": True},
        license="proprietary",
    ),
    DatasetDescriptor(
        id="earthsearch/cop-dem-glo-90",
        title="Copernicus DEM GLO-90 (Earth Search)",
        description="Digital surface model, 90 m, global; COGs on AWS, public.",
        stac_api=_EARTH_SEARCH,
        collections=("cop-dem-glo-90",),
        band_map={"DEM": "data"},
        storage_options={"anon": True},
        license="proprietary",
    ),
    DatasetDescriptor(
        id="earthsearch/naip",
        title="NAIP (Earth Search, requester-pays bucket)",
        description="Aerial imagery, 0.6-1 m, CONUS; one 4-band (R, G, B, NIR) COG per tile in the"
        " requester-pays s3://naip-analytic bucket.",
        stac_api=_EARTH_SEARCH,
        collections=("naip",),
        band_map={"R": "image", "G": "image", "B": "image", "NIR": "image"},
        band_index_map={"R": 0, "G": 1, "B": 2, "NIR": 3},
        storage_options={"requester_pays": True, **_US_WEST_2},
        license="proprietary",
    ),
    DatasetDescriptor(
        id="pc/sentinel-2-l2a",
        title="Sentinel-2 Level-2A (Planetary Computer)",
        description="Surface reflectance, 10-60 m, global, 2015-; Azure Blob COGs read with SAS tokens"
        " fetched at read time.",
        stac_api=_PLANETARY_COMPUTER,
        collections=("sentinel-2-l2a",),
        band_map={**{b: b for b in SENTINEL2_BANDS}, "SCL": "SCL"},
        signer="planetary_computer",
        license="proprietary",
    ),
)

for _descriptor in BUILTIN_DATASETS:
    DatasetRegistry.register(_descriptor)
