"""What a point-sampling job asks for: the spec every task carries, its checks and output columns."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import PlanError
from ..io.config import IOConfig

MATCHES = ("all", "latest")
LAYOUTS = ("wide", "long")


@dataclass(frozen=True)
class SampleSpec:
    """What every sampling task needs (small and picklable: no collection, no client)."""

    bands: tuple[str, ...]
    dtypes: tuple[str, ...]
    point_crs: str
    x_column: str | None
    y_column: str | None
    geometry_column: str | None
    match: str = "all"
    max_distance_pixels: int = 0
    layout: str = "wide"
    errors: str = "warn"
    storage_options: dict | None = field(default=None, compare=False)
    config: IOConfig | None = None


def output_columns(spec: SampleSpec) -> list[str]:
    """The columns sampling adds to the points' own columns, for ``spec``'s match, layout and bands."""
    nearest = spec.max_distance_pixels > 0
    if spec.layout == "long":
        return ["record_id", "datetime", "band", "value", *(["row", "col"] if nearest else [])]
    out = ["record_id", "datetime"] if spec.match == "all" else []
    for band in spec.bands:
        out.append(band)
        if spec.match == "latest":
            out += [f"{band}_record_id", f"{band}_datetime"]
        if nearest:
            out += [f"{band}_row", f"{band}_col"]
    return out


def check_sample_args(match: str, layout: str, max_distance_pixels: int) -> None:
    if match not in MATCHES:
        raise PlanError(f"match must be one of {MATCHES}, got {match!r}")
    if layout not in LAYOUTS:
        raise PlanError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if not isinstance(max_distance_pixels, int) or max_distance_pixels < 0:
        raise PlanError(f"max_distance_pixels must be a non-negative integer, got {max_distance_pixels!r}")
