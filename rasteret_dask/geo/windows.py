"""Pixel windows on a tiled grid: validation and the tiles a window touches. Pure integer arithmetic."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import PlanError


@dataclass(frozen=True)
class PixelWindow:
    """Rows [row_start, row_stop) and columns [col_start, col_stop) of a raster, like rasterio's Window."""

    row_start: int
    row_stop: int
    col_start: int
    col_stop: int

    @property
    def height(self) -> int:
        return self.row_stop - self.row_start

    @property
    def width(self) -> int:
        return self.col_stop - self.col_start

    @classmethod
    def from_slices(cls, window, width: int, height: int) -> PixelWindow:
        """A window given as ``((row_start, row_stop), (col_start, col_stop))``, or None for the whole raster.

        The window must lie inside the ``width`` x ``height`` raster and be non-empty.
        """
        if window is None:
            return cls(0, height, 0, width)
        try:
            (r0, r1), (c0, c1) = window
            r0, r1, c0, c1 = (int(v) for v in (r0, r1, c0, c1))
        except (TypeError, ValueError):
            raise PlanError(
                f"window must be ((row_start, row_stop), (col_start, col_stop)), got {window!r}"
            ) from None
        if not (0 <= r0 < r1 <= height and 0 <= c0 < c1 <= width):
            raise PlanError(
                f"window rows {r0}:{r1}, cols {c0}:{c1} is empty or outside the {height} x {width} raster"
            )
        return cls(r0, r1, c0, c1)


def tiles_touched(window: PixelWindow, tile_height: int, tile_width: int) -> tuple[range, range]:
    """The tile rows and tile columns whose tiles intersect ``window``."""
    return (
        range(window.row_start // tile_height, (window.row_stop - 1) // tile_height + 1),
        range(window.col_start // tile_width, (window.col_stop - 1) // tile_width + 1),
    )


def tile_overlap(
    window: PixelWindow, tile_row: int, tile_col: int, tile_height: int, tile_width: int
) -> tuple[slice, slice, slice, slice]:
    """Where tile (tile_row, tile_col) meets ``window``: (rows, cols) in the tile, then (rows, cols) in the window."""
    top, left = tile_row * tile_height, tile_col * tile_width
    r0, r1 = max(window.row_start, top), min(window.row_stop, top + tile_height)
    c0, c1 = max(window.col_start, left), min(window.col_stop, left + tile_width)
    return (
        slice(r0 - top, r1 - top),
        slice(c0 - left, c1 - left),
        slice(r0 - window.row_start, r1 - window.row_start),
        slice(c0 - window.col_start, c1 - window.col_start),
    )
