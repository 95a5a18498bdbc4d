"""Synthetic Sentinel-2-like COGs for the benchmarks: deterministic, cached on disk, with a JSON manifest.

A data set is ``n_dates`` acquisitions over one 10 m tile in each of two UTM zones (EPSG:32632 and
EPSG:32633), one single-band COG per band (``B02``, ``B03``, ``B04``, ``B08``), laid out as the public
Sentinel-2 COG buckets are: ``<root>/<scene id>/<band>.tif``. Pixels are a smooth multi-octave land
field shared by all dates of a zone, a fine texture, a band gain, slowly varying haze per date and
sensor noise, so that deflate with predictor 2 compresses them about as much as real Sentinel-2 L2A:
a full-resolution 1024 x 1024 uint16 tile is ~1.37 MB (median; ratio ~1.5:1), a 2048 x 2048 file with
its overviews ~6.7 MB. Half the acquisitions have a swath edge: a corner of the tile is nodata (0), as
at the edge of a Sentinel-2 orbit.

Files are written with GDAL's COG driver (through rasterio): ``uint16``, deflate, predictor 2, 1024-pixel
tiles and overviews by averaging, by default; :class:`DatasetSpec` changes any of it (the decode
benchmark also uses ``float32`` + zstd + floating-point predictor 3, nodata NaN). A data set lives in
``<cache>/<spec key>/`` and is complete once its ``manifest.json`` exists; the cache is
``$RASTERET_DASK_BENCH_DATA`` or ``~/.cache/rasteret_dask_bench``.

>>> ds = ensure_dataset(DatasetSpec(n_dates=2, size=1024))          # doctest: +SKIP
>>> ds.files[0]["scene_id"], ds.path(ds.files[0])                   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ENV_VAR = "RASTERET_DASK_BENCH_DATA"
# Bump when the generator changes what it writes, so old caches are not reused.
GENERATOR_VERSION = 1

# Upper-left corners of the 10 m tiles, one per UTM zone (two neighbouring tiles around 47.8 deg N).
_ORIGINS = {32632: (600000.0, 5300040.0), 32633: (300000.0, 5300040.0)}
# Per band: (mean surface reflectance x 10000 + 1000 offset, contrast of the land field, noise sigma).
_BANDS = {"B02": (1400, 500, 30), "B03": (1700, 700, 34), "B04": (1900, 1100, 38), "B08": (3200, 1500, 45)}


@dataclass(frozen=True)
class DatasetSpec:
    """What to generate. Every field is part of the cache key.

    Attributes
    ----------
    n_dates
        Acquisitions per zone; the data set has ``n_dates * len(zones) * len(bands)`` files.
    zones
        EPSG codes of the UTM zones, one tile each.
    bands
        Band names, one file each per scene (keys of the built-in band table).
    size
        Width and height of the full-resolution image in pixels (10 m pixels).
    tile
        Tile width and height in pixels (a multiple of 16).
    dtype
        ``"uint16"`` (nodata 0, digital numbers as Sentinel-2 L2A) or ``"float32"`` (reflectance, nodata NaN).
    compression, predictor, level
        GDAL COG creation options COMPRESS, PREDICTOR (1 none, 2 horizontal, 3 floating point) and LEVEL.
    min_overview
        Overviews halve the size until the next one would be smaller than this many pixels.
    seed
        Seed of every random draw: the same spec always gives the same pixels.
    start, every_days
        Date of the first acquisition (ISO) and days between acquisitions.
    """

    n_dates: int = 25
    zones: tuple[int, ...] = (32632, 32633)
    bands: tuple[str, ...] = ("B02", "B03", "B04", "B08")
    size: int = 2048
    tile: int = 1024
    dtype: str = "uint16"
    compression: str = "deflate"
    predictor: int = 2
    level: int = 6
    min_overview: int = 256
    seed: int = 0
    start: str = "2024-01-05"
    every_days: int = 5

    def __post_init__(self):
        if self.dtype not in ("uint16", "float32"):
            raise ValueError(f"dtype must be uint16 or float32, not {self.dtype!r}")
        unknown = set(self.bands) - set(_BANDS)
        if unknown:
            raise ValueError(f"unknown bands {sorted(unknown)}; known: {sorted(_BANDS)}")
        unknown = set(self.zones) - set(_ORIGINS)
        if unknown:
            raise ValueError(f"unknown zones {sorted(unknown)}; known: {sorted(_ORIGINS)}")
        if self.tile % 16 or self.tile <= 0 or self.size <= 0 or self.n_dates <= 0:
            raise ValueError("need size > 0, n_dates > 0 and a tile size that is a positive multiple of 16")

    @property
    def n_files(self) -> int:
        return self.n_dates * len(self.zones) * len(self.bands)

    @property
    def overview_count(self) -> int:
        count, size = 0, self.size
        while size // 2 >= self.min_overview:
            size //= 2
            count += 1
        return count

    @property
    def key(self) -> str:
        """Directory name: readable parameters plus a hash of the whole spec and generator version."""
        blob = json.dumps([GENERATOR_VERSION, dataclasses.asdict(self)], sort_keys=True).encode()
        digest = hashlib.sha1(blob).hexdigest()[:8]
        return (
            f"s2_{self.dtype}_{self.compression}p{self.predictor}_{self.size}px_t{self.tile}"
            f"_{self.n_dates}x{len(self.zones)}x{len(self.bands)}_{digest}"
        )


@dataclass(frozen=True)
class Dataset:
    """A generated data set: its directory and one manifest record per file (plain JSON-able dicts).

    Record keys: ``scene_id``, ``datetime`` (ISO 8601 UTC), ``zone`` (EPSG code), ``band``, ``path``
    (relative to ``root``, POSIX), ``crs`` (``"EPSG:<code>"``), ``transform`` (rasterio order a..f),
    ``bounds`` (left, bottom, right, top in the file's CRS), ``bounds_lonlat`` (the same in CRS84),
    ``width``, ``height``, ``dtype``, ``nodata`` (None for NaN), ``compression``, ``predictor``,
    ``tile``, ``overviews`` and ``bytes`` (file size).
    """

    root: Path
    spec: DatasetSpec
    files: list[dict] = field(default_factory=list)

    def path(self, record: dict) -> Path:
        """Absolute path of a record's file."""
        return self.root / record["path"]

    def urls(self, base: str) -> list[str]:
        """Every file's URL under ``base`` (e.g. ``http://127.0.0.1:8000``), in manifest order."""
        return [f"{base.rstrip('/')}/{r['path']}" for r in self.files]

    @property
    def total_bytes(self) -> int:
        return sum(r["bytes"] for r in self.files)


def cache_root() -> Path:
    """Where data sets are cached: ``$RASTERET_DASK_BENCH_DATA`` or ``~/.cache/rasteret_dask_bench``."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rasteret_dask_bench"


def ensure_dataset(spec: DatasetSpec, root: Path | str | None = None, workers: int | None = None) -> Dataset:
    """The data set for ``spec``, generated (in ``workers`` processes) unless already cached.

    Parameters
    ----------
    spec
        What to generate.
    root
        Cache directory; :func:`cache_root` when None. The data set goes to ``root / spec.key``.
    workers
        Processes writing files; the number of CPUs when None.
    """
    directory = Path(root or cache_root()) / spec.key
    manifest = directory / "manifest.json"
    if manifest.exists():
        return load_dataset(directory)
    directory.mkdir(parents=True, exist_ok=True)
    jobs = [
        (spec, str(directory), z, d, b)
        for z in range(len(spec.zones))
        for d in range(spec.n_dates)
        for b in range(len(spec.bands))
    ]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    if workers == 1:
        records = [_write_file(*job) for job in jobs]
    else:
        with ProcessPoolExecutor(workers) as pool:
            records = list(pool.map(_write_file, *zip(*jobs, strict=True), chunksize=1))
    payload = {"generator_version": GENERATOR_VERSION, "spec": dataclasses.asdict(spec), "files": records}
    _write_atomically(manifest, json.dumps(payload, indent=1).encode())
    return Dataset(directory, spec, records)


def load_dataset(directory: Path | str) -> Dataset:
    """A data set from its directory (which holds ``manifest.json``)."""
    directory = Path(directory)
    payload = json.loads((directory / "manifest.json").read_text())
    spec_fields = payload["spec"]
    spec_fields["zones"] = tuple(spec_fields["zones"])
    spec_fields["bands"] = tuple(spec_fields["bands"])
    return Dataset(directory, DatasetSpec(**spec_fields), payload["files"])


def scene_id(spec: DatasetSpec, zone_index: int, date_index: int) -> str:
    """Sentinel-2-like scene id, e.g. ``S2X_32TXX_20240105_0_L2A``."""
    day = acquisition_time(spec, date_index)
    return f"S2X_{spec.zones[zone_index] % 100}TXX_{day:%Y%m%d}_0_L2A"


def acquisition_time(spec: DatasetSpec, date_index: int) -> dt.datetime:
    """UTC time of acquisition ``date_index`` (10:20:31 on its day)."""
    start = dt.datetime.fromisoformat(spec.start).replace(hour=10, minute=20, second=31, tzinfo=dt.UTC)
    return start + dt.timedelta(days=spec.every_days * date_index)


def transform_of(spec: DatasetSpec, zone_index: int) -> tuple[float, float, float, float, float, float]:
    """Affine transform (rasterio order) of a zone's tile: 10 m pixels, north up."""
    x0, y0 = _ORIGINS[spec.zones[zone_index]]
    return (10.0, 0.0, x0, 0.0, -10.0, y0)


def scene_pixels(spec: DatasetSpec, zone_index: int, date_index: int, band_index: int) -> np.ndarray:
    """The full-resolution pixels of one file, ``(size, size)`` in ``spec.dtype`` (pure, deterministic)."""
    n = spec.size
    land, texture = _zone_fields(spec.seed, zone_index, n)
    rng = np.random.default_rng([spec.seed, zone_index, 2, date_index])
    haze = _field(rng, n, (2, 4, 8), 0.7)
    band_rng = np.random.default_rng([spec.seed, zone_index, 3, date_index, band_index])
    mean, contrast, noise = _BANDS[spec.bands[band_index]]
    season = 1.0 + 0.15 * np.sin(2 * np.pi * date_index / 73.0)
    value = mean * season + contrast * land + 0.25 * contrast * texture + 600.0 * np.maximum(haze, 0)
    value += band_rng.standard_normal((n, n), dtype=np.float32) * noise
    valid = _swath_mask(rng, n)
    if spec.dtype == "uint16":
        out = np.clip(np.rint(value), 1, 65535).astype(np.uint16)
        out[~valid] = 0
    else:
        out = ((value - 1000.0) / 10000.0).astype(np.float32)
        out[~valid] = np.nan
    return out


@functools.lru_cache(maxsize=2)
def _zone_fields(seed: int, zone_index: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The land field and texture shared by every date and band of a zone (cached: costly at 2048 px)."""
    land = _field(np.random.default_rng([seed, zone_index, 0]), n, (4, 8, 16, 32, 64, 128, 256), 0.6)
    texture = _field(np.random.default_rng([seed, zone_index, 1]), n, (128, 256, 512, 1024), 1.0)
    return land, texture


def _field(rng: np.random.Generator, n: int, octaves: tuple[int, ...], persistence: float) -> np.ndarray:
    """Sum of bilinearly upsampled Gaussian grids (value noise), about unit scale, float32 ``(n, n)``."""
    out = np.zeros((n, n), np.float32)
    amplitude, total = 1.0, 0.0
    for cells in octaves:
        cells = min(cells, n - 1)
        out += amplitude * _upsample(rng.standard_normal((cells + 1, cells + 1), dtype=np.float32), n)
        total += amplitude
        amplitude *= persistence
    return out / np.float32(total)


def _upsample(grid: np.ndarray, n: int) -> np.ndarray:
    h, w = grid.shape
    ys = np.linspace(0, h - 1, n, dtype=np.float32)
    xs = np.linspace(0, w - 1, n, dtype=np.float32)
    y0 = np.minimum(ys.astype(np.intp), h - 2)
    x0 = np.minimum(xs.astype(np.intp), w - 2)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    rows = grid[y0] * (1 - fy) + grid[y0 + 1] * fy
    return rows[:, x0] * (1 - fx) + rows[:, x0 + 1] * fx


def _swath_mask(rng: np.random.Generator, n: int) -> np.ndarray:
    """True inside the swath. Half the acquisitions lose a corner (up to ~40 % of the tile) to the edge."""
    valid = np.ones((n, n), bool)
    if rng.random() < 0.5:
        return valid
    reach = rng.uniform(0.3, 0.9) * n  # the edge cuts both sides of one corner at this distance
    corner = int(rng.integers(4))
    rows, cols = np.ogrid[:n, :n]
    r = rows if corner < 2 else n - 1 - rows
    c = cols if corner % 2 == 0 else n - 1 - cols
    valid &= (r + c) >= reach
    return valid


def _creation_options(spec: DatasetSpec) -> dict:
    return {
        "driver": "COG",
        "compress": spec.compression.upper(),
        "predictor": str(spec.predictor),
        "level": str(spec.level),
        "blocksize": str(spec.tile),
        "overview_count": str(spec.overview_count),
        "overview_resampling": "AVERAGE",
        "num_threads": "1",
        "bigtiff": "NO",
    }


def _write_file(spec: DatasetSpec, directory: str, zone_index: int, date_index: int, band_index: int) -> dict:
    import rasterio
    from rasterio.transform import Affine
    from rasterio.warp import transform_bounds

    sid = scene_id(spec, zone_index, date_index)
    band = spec.bands[band_index]
    relative = f"{sid}/{band}.tif"
    target = Path(directory) / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    pixels = scene_pixels(spec, zone_index, date_index, band_index)
    nodata = 0 if spec.dtype == "uint16" else float("nan")
    transform = Affine(*transform_of(spec, zone_index))
    crs = f"EPSG:{spec.zones[zone_index]}"
    fd, tmp = tempfile.mkstemp(suffix=".tif", dir=target.parent)
    os.close(fd)
    try:
        profile = {
            "width": spec.size,
            "height": spec.size,
            "count": 1,
            "dtype": spec.dtype,
            "crs": crs,
            "transform": transform,
            "nodata": nodata,
        }
        with rasterio.open(tmp, "w", **profile, **_creation_options(spec)) as dst:
            dst.write(pixels, 1)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with rasterio.open(target) as src:
        bounds = tuple(src.bounds)
        overviews = src.overviews(1)
    return {
        "scene_id": sid,
        "datetime": acquisition_time(spec, date_index).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "zone": spec.zones[zone_index],
        "band": band,
        "path": relative,
        "crs": crs,
        "transform": list(transform)[:6],
        "bounds": list(bounds),
        "bounds_lonlat": list(transform_bounds(crs, "OGC:CRS84", *bounds)),
        "width": spec.size,
        "height": spec.size,
        "dtype": spec.dtype,
        "nodata": None if spec.dtype == "float32" else 0,
        "compression": spec.compression,
        "predictor": spec.predictor,
        "tile": spec.tile,
        "overviews": list(overviews),
        "bytes": target.stat().st_size,
    }


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def remove_dataset(spec: DatasetSpec, root: Path | str | None = None) -> None:
    """Delete a cached data set."""
    shutil.rmtree(Path(root or cache_root()) / spec.key, ignore_errors=True)
