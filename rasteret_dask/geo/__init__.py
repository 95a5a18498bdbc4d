"""Pure geometry: pixel windows, grids and tile intersections. No I/O."""
