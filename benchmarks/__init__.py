"""Benchmarks of rasteret_dask against its peers and a floor, printed, never asserted (DESIGN.md §8).

Run ``python -m benchmarks [--quick] [--only headers,decode]`` from the repository root. Each
``bench_*.py`` module is one benchmark (see :mod:`benchmarks.harness`); :mod:`benchmarks.data`
generates the synthetic Sentinel-2-like COGs they read.
"""
