"""The Collection: an immutable wrapper around a dask-geopandas frame of records with cached headers."""

from __future__ import annotations

from collections.abc import Callable

import dask
import dask.array as da
import dask.dataframe as dd
import dask_geopandas
import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyproj
import shapely

from ..errors import CollectionError, PlanError, SchemaError
from ..io.cluster import for_graph
from ..io.config import IOConfig
from ..read.aois import normalise_aois
from ..read.arrays import build_stack, mask_outside, time_steps, to_dataset
from ..read.chips import chips_frame, stack_chips
from ..read.grids import choose_grid
from ..read.points import points_frame, sample_graph, sample_partition
from ..read.records import record_sources
from ..read.sample_spec import SampleSpec, check_sample_args
from ..read.stack import check_methods
from ..read.window import WindowReader, merge_grid
from . import filters
from .schema import (
    CRS_COLUMN,
    DATETIME,
    ID,
    bands_of,
    check_required,
    metadata_column,
    normalise_records,
)
from .tables import to_geodataframe

_WINDOW_READERS_KEPT = 8


class Collection:
    """Records (one row per raster item) with their assets and parsed COG headers, as a Dask frame.

    Every filtering method returns a new Collection; the wrapped frame is never modified. ``frame`` is
    the ``dask_geopandas.GeoDataFrame`` itself, for any Dask/GeoPandas operation; wrap a result back
    with :func:`rasteret_dask.as_collection`.

    Parameters
    ----------
    frame
        A dask-geopandas frame with the collection's columns (DESIGN.md §3), already normalised.
    name, description, data_source
        Free text kept in exported files (Rasteret's file metadata keys).
    storage_options
        fsspec options used to read the assets (credentials stay in the worker's environment when
        possible; these are plain picklable dicts and are never written to files).
    """

    def __init__(
        self,
        frame: dask_geopandas.GeoDataFrame,
        *,
        name: str = "",
        description: str = "",
        data_source: str = "",
        storage_options: dict | None = None,
    ):
        check_required(frame.columns, "the collection frame")
        self._frame = frame
        self.name, self.description, self.data_source = name, description, data_source
        self.storage_options = dict(storage_options or {})
        self.build_report = None  # set by the build functions
        self._records = None  # the computed frame, for synchronous window reads
        self._window_readers: dict = {}  # WindowReaders of recent read_window selections

    def _derive(self, frame: dask_geopandas.GeoDataFrame) -> Collection:
        return Collection(
            frame,
            name=self.name,
            description=self.description,
            data_source=self.data_source,
            storage_options=self.storage_options,
        )

    @property
    def frame(self) -> dask_geopandas.GeoDataFrame:
        """The records as a ``dask_geopandas.GeoDataFrame`` (lazy)."""
        return self._frame

    @property
    def bands(self) -> list[str]:
        """Band codes of the assets."""
        return bands_of(self._frame._meta)

    @property
    def npartitions(self) -> int:
        return self._frame.npartitions

    def __len__(self) -> int:
        return int(self._frame.map_partitions(len).compute().sum())

    def head(self, n: int = 5) -> gpd.GeoDataFrame:
        """The first ``n`` records (computes only what it needs)."""
        return self._frame.head(n, npartitions=-1)

    @property
    def crs(self) -> set[str]:
        """The raster CRSs of the records (``crs`` column values such as ``"EPSG:32633"``)."""
        if CRS_COLUMN not in self._frame.columns:
            return set()
        return set(self._distinct_crs().compute())

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) of all footprints, in CRS84 degrees."""
        parts = self._frame.map_partitions(
            lambda p: pd.DataFrame(
                [shapely.total_bounds(np.asarray(p.geometry.array))], columns=list("abcd")
            ),
            meta=pd.DataFrame({c: pd.Series(dtype="float64") for c in "abcd"}),
        ).compute()
        return (
            float(parts["a"].min()),
            float(parts["b"].min()),
            float(parts["c"].max()),
            float(parts["d"].max()),
        )

    def _distinct_crs(self) -> dd.Series:
        """Distinct raster CRSs of each partition (a lazy series with repeats across partitions; no shuffle)."""
        return self._frame[CRS_COLUMN].map_partitions(_distinct, meta=pd.Series(dtype=object))

    def persist(self) -> Collection:
        """Compute the frame into (cluster) memory and return it as a new Collection."""
        return self._derive(self._frame.persist())

    def summary(self) -> dict:
        """Record count, bands, time range, CRSs and partitions, computed in one pass."""
        stats = self._frame.map_partitions(
            lambda p: pd.DataFrame({"n": [len(p)], "t0": [p[DATETIME].min()], "t1": [p[DATETIME].max()]}),
            meta=pd.DataFrame(
                {
                    "n": pd.Series(dtype="int64"),
                    "t0": pd.Series(dtype="datetime64[us, UTC]"),
                    "t1": pd.Series(dtype="datetime64[us, UTC]"),
                }
            ),
        )
        crs = self._distinct_crs() if CRS_COLUMN in self._frame.columns else None
        stats, crs = dask.compute(stats, crs)
        return {
            "records": int(stats["n"].sum()),
            "bands": self.bands,
            "start": None if stats["t0"].isna().all() else stats["t0"].min(),
            "end": None if stats["t1"].isna().all() else stats["t1"].max(),
            "crs": sorted(set(crs)) if crs is not None else [],
            "partitions": self.npartitions,
        }

    def __repr__(self) -> str:
        s = self.summary()
        start = "?" if s["start"] is None else s["start"].isoformat()
        end = "?" if s["end"] is None else s["end"].isoformat()
        names = [c if len(c) < 40 else pyproj.CRS(c).name for c in s["crs"][:5]]
        crs = ", ".join(names) + (" ..." if len(s["crs"]) > 5 else "")
        title = f" {self.name!r}" if self.name else ""
        return (
            f"<Collection{title}: {s['records']} records, bands {', '.join(s['bands'])}, "
            f"{start} .. {end}, CRS {crs or 'unknown'}, {s['partitions']} partitions>"
        )

    # -- filtering ---------------------------------------------------------------------------------

    def subset(
        self,
        *,
        cloud_cover_lt: float | None = None,
        date_range: tuple | None = None,
        bbox: tuple[float, float, float, float] | None = None,
        geometries=None,
        split: str | list[str] | None = None,
    ) -> Collection:
        """Records matching every given condition.

        Parameters
        ----------
        cloud_cover_lt
            Keep records whose ``eo:cloud_cover`` is below this percentage.
        date_range
            ``(start, end)``, inclusive; a date-only end includes that whole day (UTC).
        bbox
            ``(west, south, east, north)`` in CRS84 degrees; footprints must really intersect it.
            west > east crosses the antimeridian.
        geometries
            Shapely geometries, GeoJSON dicts or a GeoDataFrame (CRS84 when they carry no CRS):
            footprints must intersect at least one.
        split
            Value(s) of the ``split`` column to keep.
        """
        predicate = filters.record_predicate(
            cloud_cover_lt=cloud_cover_lt,
            date_range=date_range,
            bbox=bbox,
            geometries=geometries,
            split=split,
        )
        return self._derive(self._frame.map_partitions(predicate, meta=self._frame._meta))

    def select_split(self, name: str) -> Collection:
        """Records whose ``split`` column equals ``name`` (e.g. "train")."""
        if "split" not in self._frame.columns:
            raise SchemaError("the collection has no split column")
        return self.subset(split=name)

    def where(self, expr: str | pa.compute.Expression | Callable) -> Collection:
        """Records matching a pandas query string, a pyarrow compute expression, or a callable on a partition."""
        predicate = filters.expression_predicate(expr)
        return self._derive(self._frame.map_partitions(predicate, meta=self._frame._meta))

    def export(self, path: str, **kwargs) -> str:
        """Write the collection as GeoParquet under ``path``; see :func:`rasteret_dask.collection.parquet.export`."""
        from .parquet import export  # parquet builds Collections, so it imports this module

        return export(self, path, **kwargs)

    # -- reads -------------------------------------------------------------------------------------

    def _check_bands(self, bands) -> list[str]:
        bands = [bands] if isinstance(bands, str) else list(bands)
        unknown = [b for b in bands if b not in self.bands]
        if unknown or not bands:
            raise PlanError(
                f"band(s) {unknown or bands} are not in this collection; its bands are {self.bands}"
            )
        return bands

    def get_gdf(
        self,
        geometries,
        *,
        bands,
        all_touched: bool = False,
        geometry_crs=None,
        errors: str = "warn",
        config: IOConfig | None = None,
    ) -> dask_geopandas.GeoDataFrame:
        """AOI chips as a lazy dask-geopandas frame: one row per (record, AOI, band).

        Each chip is read on the record's native grid with rasterio's window and mask rules
        (``rasterio.mask.mask(crop=True, filled=True, all_touched=...)``): ``data`` is a 2-D array in the
        band's dtype with pixels outside the AOI (or masked) set to the band's nodata, 0 without one;
        ``transform`` is the chip's affine (rasterio order) in ``crs``, the record's CRS. Columns:
        ``aoi_index`` (position of the AOI in the input), ``record_id``, ``datetime``, ``band``, ``data``,
        ``transform``, ``crs``, then every column of the AOI table and its ``geometry`` (CRS84).

        Parameters
        ----------
        geometries
            AOIs: a bbox tuple, shapely geometries, GeoJSON, WKB/WKT, a (dask-)GeoDataFrame or a GeoArrow
            table. Inputs without a CRS are in ``geometry_crs``, EPSG:4326 by default.
        bands
            Band codes to read.
        errors
            "warn" skips records whose band header is missing, with a warning naming them; "raise"
            raises instead.
        """
        bands = self._check_bands(bands)
        aois = normalise_aois(geometries, geometry_crs, keep_crs=True)
        candidates = self.subset(geometries=aois)
        return chips_frame(
            candidates.frame,
            aois,
            bands,
            all_touched=all_touched,
            storage_options=for_graph(self.storage_options),
            config=config,
            errors=errors,
        )

    def window_records(self, *, record_ids=None, date_range=None) -> gpd.GeoDataFrame:
        """The records (computed, in memory) in mosaic order: ``record_ids`` order when given, else
        (datetime, id). The whole table is computed once per Collection and reused."""
        if self._records is None:
            self._records = self._frame.compute().sort_values([DATETIME, ID], kind="stable")
        frame = self._records
        if date_range is not None:
            frame = filters.record_predicate(date_range=date_range)(frame)
        if record_ids is not None:
            wanted = [str(i) for i in ([record_ids] if isinstance(record_ids, str) else record_ids)]
            position = pd.Series(range(len(frame)), index=frame[ID].astype(str).to_numpy())
            missing = [i for i in wanted if i not in position.index]
            if missing:
                raise PlanError(f"record id(s) {missing[:5]} are not in this collection (or date_range)")
            frame = frame.iloc[[int(position[i]) for i in dict.fromkeys(wanted)]]
        return frame.reset_index(drop=True)

    def read_window(
        self,
        *,
        bounds,
        res,
        crs=None,
        bands,
        record_ids=None,
        date_range=None,
        groupby=None,
        fuse: str = "first",
        resampling: str = "nearest",
        fill_value=None,
        errors: str = "warn",
        config: IOConfig | None = None,
    ) -> np.ndarray:
        """Read one window on a fixed grid, synchronously (no Dask): ``[C, H, W]``, or ``[T, C, H, W]``
        with ``groupby``.

        The grid is ``rasterio.merge``'s: ``bounds`` (left, bottom, right, top) in ``crs`` (default: the
        CRS of the first matching record), ``round((right - left) / res)`` x ``round((top - bottom) /
        res)`` pixels from the top-left corner. Records on the grid's lattice are copied; others are
        resampled with ``resampling`` (the kernels of :meth:`get_xarray`). Records are mosaicked first
        valid pixel first in (datetime, id) order, or in ``record_ids`` order when given (``fuse``
        chooses another rule); pixels nothing covers get ``fill_value`` (default each band's nodata,
        else 0). Bands of different dtypes are promoted to a common one.

        One plan, one merged fetch per file, all files concurrently, tiles decoded in a thread pool. The
        records' parsed headers are kept for the next windows with the same selection and options.

        Parameters
        ----------
        res
            Pixel size in ``crs`` units: a number or ``(xres, yres)``.
        record_ids, date_range
            Restrict (and with ``record_ids``, order) the records used.
        groupby
            None (one mosaic), "time", "solar_day", "id", a column name or a callable: one step per group,
            as in :meth:`get_xarray`.

        Raises
        ------
        PlanError
            Bad bounds or res, an unknown band or record id, or no record overlapping the window.
        """
        bands = self._check_bands(bands)
        if record_ids is not None and not isinstance(record_ids, str):
            record_ids = tuple(record_ids)
        if date_range is not None:
            date_range = tuple(date_range)
        key = (tuple(bands), record_ids, date_range, resampling, fuse, fill_value, errors, config)
        try:
            reader = self._window_readers.get(key)
        except TypeError:  # an unhashable argument: no reuse
            key, reader = None, None
        if reader is None:
            frame = self.window_records(record_ids=record_ids, date_range=date_range)
            if frame.empty:
                raise PlanError("no record of the collection matches record_ids/date_range")
            reader = WindowReader(
                frame,
                bands,
                resampling=resampling,
                fuse=fuse,
                fill_value=fill_value,
                storage_options=self.storage_options,
                config=config,
                errors=errors,
            )
            # Parsed headers are reused by later windows with the same selection (a few kept).
            if key is not None:
                if len(self._window_readers) >= _WINDOW_READERS_KEPT:
                    self._window_readers.pop(next(iter(self._window_readers)))
                self._window_readers[key] = reader
        grid = merge_grid(bounds, res, crs or reader.first_crs)
        if not len(reader.overlapping(grid)):
            raise PlanError(f"no record overlaps the window {tuple(bounds)} in {grid.crs}")
        return reader.read([grid], groupby)[0]

    def to_torchgeo_dataset(
        self,
        *,
        bands,
        res=None,
        crs=None,
        time_series: bool = False,
        groupby="solar_day",
        label_band: str | None = None,
        transforms=None,
        resampling: str = "nearest",
        fill_value=None,
    ):
        """The collection as a ``torchgeo.datasets.GeoDataset``, for torchgeo's samplers and a DataLoader.

        Needs the ``torchgeo`` extra (``pip install rasteret_dask[torchgeo]``). Its ``index`` holds each
        record's raster bounds in ``crs`` by the record's datetime (tz-naive UTC, as an instant; with
        ``time_series`` every entry spans the collection's whole time range). A query ``(slice(xmin,
        xmax, xres), slice(ymin, ymax, yres), slice(tmin, tmax))`` is read as :meth:`read_window` reads
        ``bounds=(xmin, ymin, xmax, ymax), res=(xres, yres)`` from the records whose datetime lies in
        ``[tmin, tmax]``; a batch of queries (the DataLoader's ``__getitems__``) is fetched in one go.
        Samples are torchgeo's dicts: ``image`` (float32 ``[C, H, W]``, ``[T, C, H, W]`` with
        ``time_series`` plus ``time``, each step's POSIX seconds), ``mask`` (int64 ``[H, W]``, with
        ``label_band``), ``crs`` and ``bounds``. The differences from torchgeo's ``RasterDataset`` are
        listed in :mod:`rasteret_dask.read.torchgeo`.

        Parameters
        ----------
        bands
            Bands of the image, in order (``label_band``, if among them, goes to ``mask`` instead).
        res
            Default pixel size of a query in ``crs`` units, a number or ``(xres, yres)``; default the
            finest native one among the bands of the records in ``crs`` (a PlanError when none is
            there: give ``res`` then).
        crs
            The dataset CRS (anything ``pyproj.CRS.from_user_input`` takes); default the first record's
            in (datetime, id) order.
        time_series, groupby
            One step per ``groupby`` group ("solar_day", "time", "id", a column or a callable, as in
            :meth:`get_xarray`) instead of one mosaic. Steps vary with the window: batch with
            ``torchgeo.datasets.utils.pad_across_batches`` when they may differ.
        label_band
            A band holding labels, returned as ``mask`` (the first valid label over time).
        transforms
            A callable applied to each sample dict (as torchgeo's datasets apply theirs).
        resampling, fill_value
            As in :meth:`read_window`.

        Raises
        ------
        PlanError
            An unknown band, a ``res`` that is not positive, or no ``res`` with no record in ``crs``.
        ImportError
            torch or torchgeo is not installed.
        """
        from ..read.torchgeo import CollectionGeoDataset  # torch and torchgeo are optional

        bands = self._check_bands(bands)
        if label_band is not None:
            self._check_bands([label_band])
            bands = [*bands, label_band] if label_band not in bands else bands
        return CollectionGeoDataset(
            self.window_records(),
            bands,
            res=res,
            crs=crs,
            time_series=time_series,
            groupby=groupby,
            label_band=label_band,
            transforms=transforms,
            resampling=resampling,
            fill_value=fill_value,
            storage_options=self.storage_options,
        )

    def get_numpy(
        self,
        geometries,
        *,
        bands,
        all_touched: bool = False,
        geometry_crs=None,
        errors: str = "warn",
        config: IOConfig | None = None,
    ) -> np.ndarray:
        """AOI chips as one array ``[N, C, H, W]`` (``[N, H, W]`` for one band), computed now.

        N runs over (AOI, record) pairs ordered by AOI (input order), then datetime, then record id.
        Pixels follow :meth:`get_gdf`. Chips of different shapes (AOIs of different sizes, records in
        different CRSs, bands of different resolutions) raise a PlanError: use :meth:`get_gdf` for
        ragged chips, or ``get_xarray(crs=..., resolution=...)`` to put everything on one grid.
        """
        bands = self._check_bands(bands)
        chips = self.get_gdf(
            geometries,
            bands=bands,
            all_touched=all_touched,
            geometry_crs=geometry_crs,
            errors=errors,
            config=config,
        ).compute()
        return stack_chips(chips, bands)

    def _stack(
        self,
        geometries,
        bands,
        *,
        bbox,
        crs,
        resolution,
        chunks,
        resampling,
        groupby,
        fuse,
        fill_value,
        geometry_crs,
        errors,
        config,
    ):
        bands = self._check_bands(bands)
        check_methods(resampling, fuse)
        aoi = None
        if geometries is not None:
            aoi = shapely.union_all(np.asarray(normalise_aois(geometries, geometry_crs).geometry.array))
        if bbox is not None:
            box = normalise_aois(tuple(bbox), geometry_crs).geometry.iloc[0]
            aoi = box if aoi is None else shapely.intersection(aoi, box)
        selected = self.subset(geometries=[aoi]) if aoi is not None else self
        frame = selected.frame.compute().sort_values(["datetime", "id"], kind="stable").reset_index(drop=True)
        if frame.empty:
            raise PlanError("no record of the collection overlaps the requested area")
        records = record_sources(frame, bands, errors=errors)
        grid = choose_grid(records, aoi, crs=crs, resolution=resolution)
        steps = time_steps(records, groupby, frame)
        stack = build_stack(
            records,
            bands,
            grid,
            steps,
            chunks=chunks,
            resampling=resampling,
            fuse=fuse,
            fill_value=fill_value,
            storage_options=for_graph(self.storage_options),
            config=config,
        )
        return stack, aoi

    def get_xarray(
        self,
        geometries=None,
        *,
        bands,
        bbox=None,
        crs=None,
        resolution=None,
        chunks=None,
        resampling: str = "nearest",
        groupby=None,
        fuse: str = "first",
        all_touched: bool = False,
        fill_value=None,
        explain: bool = False,
        geometry_crs=None,
        errors: str = "warn",
        config: IOConfig | None = None,
    ):
        """A lazy ``xarray.Dataset``: one variable per band, dims ``(time, y, x)``, backed by dask.

        Building it sends no request: the grid and the read plan come from the cached headers.

        Parameters
        ----------
        geometries, bbox
            The area to read (AOIs as for :meth:`get_gdf`; ``bbox`` as ``(west, south, east, north)``), in
            ``geometry_crs`` (EPSG:4326 by default). Pixels outside ``geometries`` get the fill value
            (``all_touched`` as in rasterio). Neither: every record's full extent.
        crs, resolution
            The output grid: the area's bounds in ``crs`` snapped outward to whole pixels of
            ``resolution`` (CRS units). Without them: the records' native grid when they share one, else
            the CRS covering most of the area at the finest resolution there (with a warning).
        chunks
            ``{"time": ..., "y": ..., "x": ...}``; default: whole source tiles, one time step per chunk,
            with chunk edges on the tile edges of the first record on the output grid's lattice (so the
            first and last row or column of chunks may be narrower).
        resampling
            nearest, bilinear, cubic, average, mode, min or max, used where a record is not on the output
            grid (nodata never bleeds). Coarser outputs read the overview GDAL's warper would choose.
        groupby, fuse
            Merge records into time steps (None, "time", "solar_day", a column, or a callable on a
            record row) with first/last valid pixel in (datetime, id) order, or min/max/mean/median.
        fill_value
            Value of pixels nothing valid covers; default the band's nodata, else 0 (``_FillValue``).
        explain
            Return the read plan (a pandas DataFrame per record and band: chunks, tiles, GETs, bytes,
            with totals) instead of data.
        """
        stack, aoi = self._stack(
            geometries,
            bands,
            bbox=bbox,
            crs=crs,
            resolution=resolution,
            chunks=chunks,
            resampling=resampling,
            groupby=groupby,
            fuse=fuse,
            fill_value=fill_value,
            geometry_crs=geometry_crs,
            errors=errors,
            config=config,
        )
        if explain:
            return stack.explain(config)
        ds = to_dataset(stack)
        if geometries is not None:
            ds = mask_outside(ds, stack, aoi, all_touched=all_touched)
        return ds

    def get_dask_array(self, geometries=None, *, bands, **kwargs):
        """The same read as :meth:`get_xarray`, as one dask array ``(time, band, y, x)``.

        Bands of different dtypes are promoted to a common one (numpy's rules).
        """
        ds = self.get_xarray(geometries, bands=bands, **kwargs)
        bands = [bands] if isinstance(bands, str) else list(bands)
        return da.stack([ds[b].data for b in bands], axis=1)

    def band_dtypes(self, bands: list[str]) -> list[str]:
        """The numpy dtype name of each band, from the first record with a header for it."""
        out = []
        for band in bands:
            first = self._frame[metadata_column(band)].dropna().head(1, npartitions=-1)
            if len(first) == 0:
                raise PlanError(f"no record has a header for band {band!r}: build with enrichment first")
            out.append(pa.array(first.array)[0].as_py()["dtype"])
        return out

    def sample_points(
        self,
        points,
        *,
        bands,
        x_column: str | None = None,
        y_column: str | None = None,
        geometry_column: str | None = None,
        geometry_crs=None,
        match: str = "all",
        max_distance_pixels: int = 0,
        layout: str = "wide",
        errors: str = "warn",
        storage_options: dict | None = None,
        config: IOConfig | None = None,
    ) -> dd.DataFrame:
        """Pixel values at points, as a lazy dask DataFrame: one read per tile, however many points.

        The pixel is the one containing the point in the record's own CRS, exactly rasterio's
        ``DatasetReader.index``/``sample`` (a point on a pixel edge belongs to the pixel east/south of it).

        Parameters
        ----------
        points
            A pandas DataFrame, GeoDataFrame, dask (geo)dataframe, pyarrow Table or Parquet path/URL
            (``storage_options`` for it). Point coordinates come from ``x_column``/``y_column`` (then
            ``geometry_crs`` is required) or from a geometry column (its CRS, or ``geometry_crs``).
            Rows without coordinates (null or empty geometries, NaN x/y) are dropped; geometries other
            than points raise ``PlanError``. Points are sorted along a Hilbert curve into spatial
            partitions of at most 100,000 points (one task each; more tasks when the input has more
            partitions and there are more worker threads) unless they already carry spatial
            partitions; one partition that is to stay one keeps its order.
        bands
            Band codes to sample.
        match
            "all": one row per (point, record) covering it, a time series; "latest": per point and band
            the newest record with a valid value there, falling back to older ones (columns
            ``{band}_record_id`` and ``{band}_datetime`` say which).
        max_distance_pixels
            When the pixel is invalid, take the nearest valid pixel within this many pixels (Chebyshev
            rings; nearest by distance from the point to the pixel's rectangle, ties in row-major order);
            ``{band}_row``/``{band}_col`` give the pixel used.
        layout
            "wide": point columns, ``record_id``, ``datetime`` and one column per band in the band's
            dtype as a pandas nullable dtype (NA where nodata, masked or sparse). "long": one row per
            (point, record, band) with ``band`` and a float64 ``value``, as Rasteret lays it out.

        A point outside a record's raster gives no row for that record; a point no record covers gives
        no row at all.
        """
        bands = self._check_bands(bands)
        check_sample_args(match, layout, max_distance_pixels)
        frame = points_frame(points, storage_options=storage_options)
        if x_column is not None or y_column is not None:
            if x_column is None or y_column is None:
                raise PlanError("give both x_column and y_column")
            missing = [c for c in (x_column, y_column) if c not in frame.columns]
            if missing:
                raise SchemaError(f"the points lack the column(s) {missing}")
            if geometry_crs is None:
                raise PlanError("x/y columns carry no CRS: pass geometry_crs= (e.g. 'EPSG:4326')")
            crs, geometry_column = geometry_crs, None
        else:
            geometry_column = geometry_column or getattr(frame._meta, "_geometry_column_name", None)
            if geometry_column is None or geometry_column not in frame.columns:
                raise SchemaError(
                    "the points have no geometry column: pass x_column=, y_column= and geometry_crs="
                )
            own = getattr(frame, "crs", None)
            if own is not None and geometry_crs is not None and not pyproj.CRS(own).equals(geometry_crs):
                raise PlanError(
                    f"the points' geometry is in {pyproj.CRS(own).to_string()}, not {geometry_crs}: drop geometry_crs="
                    " or reproject the points first"
                )
            crs = own or geometry_crs
            if crs is None:
                raise PlanError("the points' geometry has no CRS: pass geometry_crs=")
        spec = SampleSpec(
            bands=tuple(bands),
            dtypes=tuple(self.band_dtypes(bands)),
            point_crs=pyproj.CRS.from_user_input(crs).to_wkt(),
            x_column=x_column,
            y_column=y_column,
            geometry_column=geometry_column,
            match=match,
            max_distance_pixels=max_distance_pixels,
            layout=layout,
            errors=errors,
            storage_options=for_graph(self.storage_options),
            config=config,
        )
        return sample_graph(self._frame, frame, spec, sample_partition(frame._meta, spec=spec))

    def header_column(self, band: str) -> str:
        """The name of ``band``'s metadata column; raises when the band does not exist."""
        if band not in self.bands:
            raise CollectionError(f"band {band!r} is not in this collection; its bands are {self.bands}")
        return metadata_column(band)


def as_collection(data, **kwargs) -> Collection:
    """Wrap a dask-geopandas frame, GeoDataFrame, pandas frame or Arrow table as a Collection.

    Validates the columns (SchemaError names the missing ones) and normalises their types. Keyword
    arguments go to :class:`Collection`; ``npartitions`` sets the partition count for in-memory input.
    """
    npartitions = kwargs.pop("npartitions", None)
    if isinstance(data, Collection):
        return data
    if isinstance(data, dask_geopandas.GeoDataFrame):
        check_required(data.columns)
        frame = data.map_partitions(normalise_records)
        return Collection(frame, **kwargs)
    gdf = normalise_records(to_geodataframe(data))
    gdf = gdf.sort_values([DATETIME, ID]).reset_index(drop=True)
    n = npartitions or max(1, -(-len(gdf) // 5000))
    return Collection(dask_geopandas.from_geopandas(gdf, npartitions=n), **kwargs)


def _distinct(series: pd.Series) -> pd.Series:
    return pd.Series(series.dropna().astype(str).unique(), dtype=object)
