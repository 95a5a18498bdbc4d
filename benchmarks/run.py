"""Run the benchmarks and print one Markdown table: ``python -m benchmarks [--quick] [--only a,b]``.

Every ``benchmarks/bench_*.py`` module is a benchmark (see :mod:`benchmarks.harness` for the two
functions it defines); nothing needs registering. Progress goes to standard error, the report to
standard output. The exit status is 1 when any measurement failed (figures are printed, never asserted).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import pkgutil
import platform
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType

from .harness import REPO, SCALES, Options, Row, render_table


def discover() -> list[ModuleType]:
    """Every benchmark module, in table order (``ORDER``, then name)."""
    package = Path(__file__).resolve().parent
    modules = [
        importlib.import_module(f"benchmarks.{info.name}")
        for info in pkgutil.iter_modules([str(package)])
        if info.name.startswith("bench_")
    ]
    return sorted(modules, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def benchmark_name(module: ModuleType) -> str:
    return getattr(module, "NAME", module.__name__.rsplit(".", 1)[-1].removeprefix("bench_"))


def machine_info() -> list[tuple[str, str]]:
    """(item, value) pairs describing the machine and the library versions."""
    info = [("CPU", _cpu_model()), ("cores", _cores()), ("memory", _memory())]
    info.append(("OS", f"{platform.system()} {platform.release()} ({platform.machine()})"))
    info.append(("python", platform.python_version()))
    info.append(("rasteret_dask", _version("rasteret_dask")))
    try:
        import rasterio

        info.append(("rasterio / GDAL", f"{rasterio.__version__} / {rasterio.__gdal_version__}"))
    except ImportError:
        info.append(("rasterio / GDAL", "not installed"))
    info.append(("imagecodecs", _imagecodecs_version()))
    info += [(name, _version(name)) for name in ("numpy", "aiohttp")]
    return info


def _version(module: str) -> str:
    try:
        return getattr(importlib.import_module(module), "__version__", "?")
    except Exception as exc:
        return f"import failed ({type(exc).__name__})"


def _imagecodecs_version() -> str:
    try:
        import imagecodecs
    except ImportError:
        return "not installed"
    libs = dict(part.strip().rsplit("-", 1) for part in imagecodecs.version().split(",") if "-" in part)
    wanted = ", ".join(f"{k} {libs[k]}" for k in ("libdeflate", "zlib_ng", "zstd") if k in libs)
    return f"{imagecodecs.__version__} ({wanted})"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _cores() -> str:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{usable} usable ({os.cpu_count()} logical)"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "?"


def _load() -> str:
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "?"


def report(rows: list[Row], opts: Options, modules: list[ModuleType], elapsed: float, load: str) -> str:
    """The whole printed report: title, machine table, results table, notes."""
    lines = [
        f"### rasteret_dask benchmarks ({opts.scale}, median of {opts.repeats} fresh process"
        f"{'es' if opts.repeats > 1 else ''} per tool, interleaved; {elapsed:.0f} s)",
        "",
        "| machine | |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in [*machine_info(), ("load average (1 min), start → end", load)]]
    lines += ["", render_table(rows), ""]
    for module in modules:
        doc = (module.__doc__ or "").strip().splitlines()
        if doc:
            lines.append(f"- **{benchmark_name(module)}**: {doc[0]}")
    lines.append("- Times are medians (min–max); ratios use medians; targets are printed, never asserted.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the selected benchmarks, print the report; 1 if a measurement failed."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # the test servers live in tests/servers
    modules = discover()
    names = [benchmark_name(m) for m in modules]
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller data, one repetition (minutes)")
    parser.add_argument("--scale", choices=SCALES, help="full (default), quick, or smoke (CI: tiny data)")
    parser.add_argument("--only", help=f"comma-separated benchmarks to run, of: {', '.join(names)}")
    parser.add_argument("--repeats", type=int, help="fresh processes per tool (default 3; 1 with --quick)")
    parser.add_argument("--data-dir", type=Path, help="cache of generated data (default ~/.cache/...)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON to this file")
    args = parser.parse_args(argv)

    scale = args.scale or ("quick" if args.quick else "full")
    repeats = args.repeats or (3 if scale == "full" else 1)
    if repeats < 1:
        parser.error("--repeats must be at least 1")
    selected = modules
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(names)}")
        selected = [m for m in modules if benchmark_name(m) in wanted]
    opts = Options(scale=scale, repeats=repeats, data_root=args.data_dir)

    load_before = _load()
    started = time.perf_counter()
    rows: list[Row] = []
    for module in selected:
        try:
            rows += module.run(opts)
        except Exception:
            opts.log(traceback.format_exc())
            rows.append(Row(benchmark_name(module), "", "FAILED", time="see standard error", failed=True))
    load = f"{load_before} → {_load()}"
    print(report(rows, opts, selected, time.perf_counter() - started, load), flush=True)
    if args.json:
        args.json.write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=1))
    return 1 if any(r.failed for r in rows) else 0
