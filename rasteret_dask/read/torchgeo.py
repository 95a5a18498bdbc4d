"""A TorchGeo dataset over a collection's records: ``Collection.to_torchgeo_dataset``.

:class:`CollectionGeoDataset` is a ``torchgeo.datasets.GeoDataset``: its ``index`` is a GeoDataFrame of the
records' raster bounds in the dataset CRS, indexed by a closed ``pandas.IntervalIndex`` of their datetimes,
and it answers torchgeo's queries (``GeoSlice``: ``(slice(xmin, xmax, xres), slice(ymin, ymax, yres),
slice(tmin, tmax))``) with torchgeo's sample dicts. Pixels come from a
:class:`~rasteret_dask.read.window.WindowReader` on ``rasterio.merge``'s grid of the query, so a batch
(``__getitems__``, which torch's DataLoader calls with a whole batch of queries) is planned together and
fetched in one go: tiles shared by samples are fetched once.

Differences from torchgeo's ``RasterDataset`` (0.8), which merges files with ``rasterio.merge``:

- Mosaics take the first valid pixel in (datetime, id) order (``RasterDataset``: ``rasterio.merge``'s
  ``"first"`` in sorted file path order); records in another CRS or off the grid's lattice are warped with
  GDAL's warper kernels (``rasterio.warp.reproject``), nearest by default (``RasterDataset``: a WarpedVRT
  then ``rasterio.merge``'s decimated read, bilinear for float images).
- A query's time slice selects the records whose datetime lies in ``[tmin, tmax]``, both ends included
  (``RasterDataset`` intersects the index with the right-closed ``(tmin, tmax]``, which misses records
  stamped exactly ``tmin``, so a zero-length interval never matches there); ``tmin:tmax:step`` steps are
  ignored.
- Index times are the records' datetimes (UTC, tz-naive as torchgeo's are) as instants ``[t, t]``;
  ``RasterDataset`` takes them from file names, usually whole days. With ``time_series=True`` every index
  entry spans the collection's whole time range, so that a sampler's queries ask for all dates.
- ``image`` is always float32 (as ``RasterDataset``'s default); ``mask`` (``label_band``) is int64.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS
from pyproj.exceptions import CRSError

from ..errors import PlanError
from ..geo.grid import Grid
from ..io.config import IOConfig
from .arrays import time_steps
from .grids import bounds_in, crs_key, raster_outline
from .window import WindowReader, merge_grid

_MISSING = "the TorchGeo dataset needs torch and torchgeo: pip install rasteret_dask[torchgeo]"

try:
    import torch
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(_MISSING) from exc

# The schemas defined by _import_torchvision when torchvision's compiled ops cannot load; the Library
# object must stay alive for the definitions to stay registered.
_torchvision_fragment = None


def _import_torchvision() -> None:
    """Import torchvision (torchgeo needs it), working around a torchvision whose C++ ops cannot load.

    A torchvision wheel built for another torch (e.g. a CUDA build next to a CPU torch) fails to load its
    compiled extension, and ``import torchvision`` then fails in ``torchvision/_meta_registrations.py``
    ("operator torchvision::nms does not exist") because it registers fake kernels for ops that were never
    defined. Defining the two op schemas it registers fakes for lets torchvision (and torchgeo) import;
    only torchvision's compiled ops (``torchvision.ops.nms``...) stay unusable, which torchgeo's datasets
    and samplers never call. A no-op when torchvision imports (or is absent: torchgeo's import then says so).
    """
    global _torchvision_fragment
    try:
        import torchvision
    except ImportError:
        return
    except RuntimeError as exc:
        if "torchvision::" not in str(exc) or _torchvision_fragment is not None:
            raise
        fragment = torch.library.Library("torchvision", "FRAGMENT")
        for op in ("nms", "qnms"):
            fragment.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _torchvision_fragment = fragment
        warnings.warn(
            f"torchvision's compiled operators are unavailable with this torch build ({exc}); "
            "torchvision and torchgeo are imported without them",
            RuntimeWarning,
            stacklevel=2,
        )
        import torchvision  # noqa: F401


_import_torchvision()
try:
    from torchgeo.datasets import GeoDataset
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(_MISSING) from exc


def _instant(value) -> pd.Timestamp:
    """A query time as a tz-naive UTC Timestamp (torchgeo's index times are tz-naive)."""
    stamp = pd.Timestamp(value)
    return stamp.tz_convert(None) if stamp.tzinfo is not None else stamp


def _frame_without_headers(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame without its ``{band}_metadata`` header columns (and their ``{band}_error`` notes)."""
    bands = [c[: -len("_metadata")] for c in frame.columns if c.endswith("_metadata")]
    return frame.drop(columns=[c for b in bands for c in (f"{b}_metadata", f"{b}_error") if c in frame])


def _dataset_crs(crs) -> str:
    try:
        return crs_key(CRS.from_user_input(crs).to_wkt())
    except CRSError as exc:
        raise PlanError(f"unknown crs {crs!r}: {exc}") from None


def _native_resolution(reader: WindowReader, crs: str) -> tuple[float, float]:
    """The finest pixel size (x, y) among the bands of the records in ``crs``."""
    xs, ys = [], []
    for record in reader.records:
        if crs_key(record.crs) != crs:
            continue
        for source in record.bands:
            if source is not None and source.header.geo.transform is not None:
                a, b, _, d, e, _ = source.header.geo.transform
                xs.append(math.hypot(a, d))
                ys.append(math.hypot(b, e))
    if not xs:
        raise PlanError(f"no record is in the dataset CRS {crs}: pass res= (the pixel size in its units)")
    return min(xs), min(ys)


def _checked_resolution(res) -> tuple[float, float]:
    try:
        xres, yres = (float(res), float(res)) if np.isscalar(res) else (float(res[0]), float(res[1]))
    except (TypeError, ValueError, IndexError):
        raise PlanError(f"res must be a number or (xres, yres), got {res!r}") from None
    if not (xres > 0 and yres > 0 and math.isfinite(xres) and math.isfinite(yres)):
        raise PlanError(f"res must be positive, got {res!r}")
    return xres, yres


def _index(reader: WindowReader, crs: str, time_series: bool) -> gpd.GeoDataFrame:
    """The records' raster bounds in ``crs`` (each a box around all its bands), by datetime interval."""
    ids, boxes, rows = [], [], []
    for row, record in enumerate(reader.records):
        found = []
        for source in record.bands:
            if source is None or source.header.geo.transform is None:
                continue
            h = source.header
            box = bounds_in(raster_outline(h.geo.transform, h.width, h.height), record.crs, crs)
            if box is not None:
                found.append(box)
        if found:
            b = np.asarray(found)
            boxes.append(shapely.box(b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()))
            ids.append(record.record_id)
            rows.append(row)
    if not rows:
        raise PlanError(f"no record has a georeferenced header placing it in {crs}")
    left, right = reader.times[0][rows], reader.times[1][rows]
    if time_series:
        left, right = np.full_like(left, left.min()), np.full_like(right, right.max())
    times = pd.IntervalIndex.from_arrays(
        pd.to_datetime(left, unit="ns"), pd.to_datetime(right, unit="ns"), closed="both", name="datetime"
    )
    return gpd.GeoDataFrame({"id": ids}, index=times, geometry=boxes, crs=CRS.from_user_input(crs))


class CollectionGeoDataset(GeoDataset):
    """A torchgeo ``GeoDataset`` reading a collection's records on the grid of each query.

    Build it with :meth:`rasteret_dask.Collection.to_torchgeo_dataset` (which documents the parameters).
    A query ``(slice(xmin, xmax, xres), slice(ymin, ymax, yres), slice(tmin, tmax))`` (missing parts are
    the dataset's bounds and ``res``, as torchgeo's datasets fill them) is read on ``rasterio.merge``'s grid
    ``merge_grid((xmin, ymin, xmax, ymax), (xres, yres), crs)`` from the records whose datetime lies in
    ``[tmin, tmax]``. A sample holds ``image`` (float32 ``[C, H, W]``, or ``[T, C, H, W]`` with
    ``time_series``, one step per ``groupby`` group, plus ``time``: each step's POSIX seconds as a float64
    ``[T]`` tensor), ``mask`` (int64 ``[H, W]``, with ``label_band``: its first valid value over time),
    ``crs`` (the dataset's ``pyproj.CRS``) and ``bounds`` (the query as given), as torchgeo's
    ``RasterDataset`` gives them; ``transforms`` then applies to the sample.

    It pickles as plain data (the index, the records and their headers, options): every DataLoader worker
    process runs its own reads and I/O loop.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        bands: Sequence[str],
        *,
        res: float | tuple[float, float] | None = None,
        crs=None,
        time_series: bool = False,
        groupby="solar_day",
        label_band: str | None = None,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        resampling: str = "nearest",
        fill_value=None,
        storage_options: dict | None = None,
        config: IOConfig | None = None,
        errors: str = "warn",
    ):
        self.image_bands = [b for b in bands if b != label_band]
        if not self.image_bands:
            raise PlanError("give at least one image band besides label_band")
        self.label_band = label_band
        self.time_series, self.groupby = bool(time_series), groupby
        self.transforms = transforms
        self.paths: list[str] = []  # GeoDataset.files: the records are not local files
        self.reader = WindowReader(
            frame,
            self.image_bands + ([label_band] if label_band is not None else []),
            resampling=resampling,
            fill_value=fill_value,
            storage_options=storage_options,
            config=config,
            errors=errors,
        )
        # Headers now live parsed in the reader's records: the frame keeps the columns groupby may use.
        self.reader.frame = _frame_without_headers(self.reader.frame)
        key = _dataset_crs(crs) if crs is not None else crs_key(self.reader.first_crs)
        self._res = _native_resolution(self.reader, key) if res is None else _checked_resolution(res)
        self.index = _index(self.reader, key, self.time_series)

    def _window(self, query) -> tuple[Grid, tuple[int, int]]:
        """The grid and time interval (ns, UTC) of a query; IndexError when no index entry meets it."""
        x, y, t = self._disambiguate_slice(query)
        grid = merge_grid((x.start, y.start, x.stop, y.stop), (x.step, y.step), crs_key(self.crs.to_wkt()))
        tmin, tmax = _instant(t.start), _instant(t.stop)
        times = self.index.index
        box = shapely.box(x.start, y.start, x.stop, y.stop)
        hits = shapely.intersects(np.asarray(self.index.geometry.array), box)
        hits &= np.asarray((times.left <= tmax) & (times.right >= tmin))
        if not hits.any():
            raise IndexError(f"query: {query} not found in index with bounds: {self.bounds}")
        return grid, (tmin.as_unit("ns").value, tmax.as_unit("ns").value)

    def _step_times(self, grid: Grid, times: tuple[int, int]) -> torch.Tensor:
        selected = self.reader.overlapping(grid, times)
        records = [self.reader.records[i] for i in selected]
        steps = time_steps(records, self.groupby, self.reader.frame.iloc[selected])
        seconds = [math.nan if pd.isna(s.time) else pd.Timestamp(s.time).timestamp() for s in steps]
        return torch.tensor(seconds, dtype=torch.float64)

    def _sample(self, query, window: tuple[Grid, tuple[int, int]], pixels: np.ndarray) -> dict[str, Any]:
        n = len(self.image_bands)
        image = pixels[..., :n, :, :]
        sample: dict[str, Any] = {
            "crs": self.crs,
            "bounds": query,
            "image": torch.from_numpy(image.astype(np.float32, copy=False)),
        }
        if self.label_band is not None:
            labels = pixels[..., n, :, :]
            if self.time_series:
                labels = _first_valid(labels, self.reader.fills[n])
            if labels.dtype.kind == "f":
                labels = np.nan_to_num(labels, nan=0.0)
            sample["mask"] = torch.from_numpy(labels.astype(np.int64))
        if self.time_series:
            sample["time"] = self._step_times(*window)
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def __getitems__(self, queries: Sequence) -> list[dict[str, Any]]:
        """The samples of a batch of queries, planned together and fetched in one go."""
        windows = [self._window(q) for q in queries]
        blocks = self.reader.read(
            [grid for grid, _ in windows],
            self.groupby if self.time_series else None,
            [times for _, times in windows],
            # images are float32, cast once while stacking (a label band keeps the native values)
            dtype=np.float32 if self.label_band is None else None,
        )
        return [self._sample(q, w, b) for q, w, b in zip(queries, windows, blocks, strict=True)]

    def __getitem__(self, query) -> dict[str, Any]:
        """The sample of one query (see the class docstring)."""
        return self.__getitems__([query])[0]


def _first_valid(steps: np.ndarray, fill) -> np.ndarray:
    """Per pixel, the first of the ``[T, H, W]`` values that is not ``fill`` (``fill`` where none is)."""
    if steps.shape[0] == 0:
        return np.full(steps.shape[1:], fill, dtype=steps.dtype)
    valid = ~np.isnan(steps) if isinstance(fill, float) and math.isnan(fill) else steps != fill
    first = np.take_along_axis(steps, valid.argmax(axis=0)[None], axis=0)[0]
    return np.where(valid.any(axis=0), first, fill).astype(steps.dtype, copy=False)
