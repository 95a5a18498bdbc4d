"""A raster grid as a value: CRS, affine transform and shape. Pure arithmetic, no I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass

from affine import Affine

from ..errors import PlanError

# Bounds that are within this fraction of a pixel of a pixel edge snap to that edge instead of growing
# the grid by a pixel (floating-point noise in user bounds such as 0.1 * 3).
_SNAP_TOLERANCE = 1e-9


def _as_transform(transform) -> tuple[float, float, float, float, float, float]:
    try:
        values = tuple(float(v) for v in tuple(transform)[:6])
    except (TypeError, ValueError):
        raise PlanError(f"a grid transform must be 6 numbers (a, b, c, d, e, f), got {transform!r}") from None
    if len(values) != 6 or not all(math.isfinite(v) for v in values):
        raise PlanError(f"a grid transform must be 6 finite numbers (a, b, c, d, e, f), got {transform!r}")
    a, b, _, d, e, _ = values
    if a * e - b * d == 0.0:
        raise PlanError(f"a grid transform must be invertible, got {transform!r}")
    return values  # type: ignore[return-value]


@dataclass(frozen=True)
class Grid:
    """A raster grid: ``height`` x ``width`` pixels placed in ``crs`` by an affine ``transform``.

    Parameters
    ----------
    crs : str
        The grid's CRS as ``"EPSG:n"`` or WKT (anything ``pyproj.CRS.from_user_input`` accepts as a string).
    transform : tuple of 6 float
        The affine transform in rasterio / ``affine.Affine`` order ``(a, b, c, d, e, f)``: the pixel
        corner ``(col, row)`` lies at ``x = a * col + b * row + c``, ``y = d * col + e * row + f`` in CRS
        units. An ``affine.Affine`` is accepted and stored as its first six coefficients.
    width, height : int
        Size in pixels (columns, rows); both at least 1.

    Notes
    -----
    Two grids are equal when their CRS strings, transforms and shapes are equal; equal grids need no
    resampling at all (DESIGN.md §4).
    """

    crs: str
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int

    def __post_init__(self) -> None:
        if not isinstance(self.crs, str) or not self.crs.strip():
            raise PlanError(f"a grid CRS must be a non-empty string ('EPSG:n' or WKT), got {self.crs!r}")
        object.__setattr__(self, "transform", _as_transform(self.transform))
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not hasattr(value, "__index__"):
                raise PlanError(f"grid {name} must be an integer, got {value!r}")
            value = int(value)
            if value < 1:
                raise PlanError(f"grid {name} must be at least 1, got {value}")
            object.__setattr__(self, name, value)

    @property
    def affine(self) -> Affine:
        """The transform as an ``affine.Affine``."""
        return Affine(*self.transform)

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``, as numpy orders a 2-D array."""
        return (self.height, self.width)

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size ``(x, y)`` in CRS units, both positive (lengths of the pixel's sides)."""
        a, b, _, d, e, _ = self.transform
        return (math.hypot(a, d), math.hypot(b, e))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in CRS units: the box around the grid's four outer corners."""
        a, b, c, d, e, f = self.transform
        corners = [(a * i + b * j + c, d * i + e * j + f) for i in (0, self.width) for j in (0, self.height)]
        xs, ys = zip(*corners, strict=True)
        return (min(xs), min(ys), max(xs), max(ys))

    @classmethod
    def from_bounds(
        cls,
        crs: str,
        bounds: tuple[float, float, float, float],
        resolution: float | tuple[float, float],
    ) -> Grid:
        """The north-up grid of ``resolution`` covering ``bounds``, its edges snapped outward to whole pixels.

        Pixel edges lie on whole multiples of the resolution (as ``gdalwarp -tap`` and
        ``rasterio.warp.aligned_target``), so grids built from different bounds with the same resolution
        share pixel edges and tile each other. A bound within 1e-9 pixel of a pixel edge is taken to be
        on it (floating-point noise such as ``0.1 * 3`` does not add a pixel).

        Parameters
        ----------
        crs : str
            ``"EPSG:n"`` or WKT.
        bounds : (left, bottom, right, top)
            In ``crs`` units; ``left < right`` and ``bottom < top``.
        resolution : float or (float, float)
            Pixel size ``x`` (and ``y``) in ``crs`` units, positive.
        """
        try:
            left, bottom, right, top = (float(v) for v in bounds)
        except (TypeError, ValueError):
            raise PlanError(f"bounds must be (left, bottom, right, top), got {bounds!r}") from None
        xres, yres = (resolution, resolution) if isinstance(resolution, int | float) else resolution
        xres, yres = float(xres), float(yres)
        if not all(math.isfinite(v) for v in (left, bottom, right, top, xres, yres)):
            raise PlanError(f"bounds and resolution must be finite, got {bounds!r} and {resolution!r}")
        if xres <= 0 or yres <= 0:
            raise PlanError(f"resolution must be positive, got {resolution!r}")
        if not (left < right and bottom < top):
            raise PlanError(f"bounds must have left < right and bottom < top, got {bounds!r}")
        col0 = math.floor(left / xres + _SNAP_TOLERANCE)
        col1 = math.ceil(right / xres - _SNAP_TOLERANCE)
        row0 = math.floor(bottom / yres + _SNAP_TOLERANCE)
        row1 = math.ceil(top / yres - _SNAP_TOLERANCE)
        width, height = max(col1 - col0, 1), max(row1 - row0, 1)
        transform = (xres, 0.0, col0 * xres, 0.0, -yres, (row0 + height) * yres)
        return cls(crs, transform, width, height)

    def window_grid(self, row_off: int, col_off: int, height: int, width: int) -> Grid:
        """The grid of the ``height`` x ``width`` block whose top-left pixel is ``(row_off, col_off)`` here.

        The block may reach outside this grid (it is the same lattice of pixels, extended); it is the grid
        of one chunk of a larger output.
        """
        a, b, c, d, e, f = self.transform
        col, row = int(col_off), int(row_off)
        shifted = (a, b, a * col + b * row + c, d, e, d * col + e * row + f)
        return Grid(self.crs, shifted, int(width), int(height))
