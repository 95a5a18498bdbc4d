"""What every benchmark shares: options, fresh-process measurements, interleaving, medians, table rows.

A benchmark is a module ``benchmarks/bench_<name>.py`` with two functions:

- ``run(opts: Options) -> list[Row]``, in the parent process: prepares data (and servers), measures
  each tool with :func:`measure_interleaved` and returns the rows it wants printed;
- ``measure(tool: str, params: dict) -> dict``, in a fresh child process (started by
  :func:`run_fresh`): imports what ``tool`` needs, then times only the work, and returns plain JSON
  (at least ``seconds``).

Optional module attributes: ``NAME`` (what ``--only`` selects; defaults to the part after ``bench_``),
``ORDER`` (position in the table, default 100) and ``TITLE``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCALES = ("full", "quick", "smoke")


@dataclass(frozen=True)
class Options:
    """How big and how often to run.

    Attributes
    ----------
    scale
        ``"full"`` (the sizes the issues quote), ``"quick"`` (minutes on 2 cores) or ``"smoke"`` (a
        handful of tiny files, for CI: checks that benchmarks run, measures nothing useful).
    repeats
        Fresh processes per tool and case; the median is reported.
    data_root
        Cache directory for generated data (None: ``benchmarks.data.cache_root()``).
    log
        Progress messages go here (the table goes to standard output).
    """

    scale: str = "full"
    repeats: int = 3
    data_root: Path | None = None
    log: Callable[[str], None] = field(default=lambda message: print(message, file=sys.stderr, flush=True))

    def pick(self, full, quick, smoke):
        """The value for the current scale."""
        return {"full": full, "quick": quick, "smoke": smoke}[self.scale]


@dataclass
class Row:
    """One line of the results table (already formatted strings)."""

    benchmark: str
    case: str
    tool: str
    time: str = ""
    rate: str = ""
    requests: str = ""
    bytes: str = ""
    ratio: str = ""
    target: str = ""
    failed: bool = False


class MeasurementError(RuntimeError):
    """A child process failed; the message holds the end of its standard error."""


def run_fresh(
    module: str, tool: str, params: dict, *, env: dict | None = None, timeout: float = 900.0
) -> dict:
    """Run ``benchmarks.<module>.measure(tool, params)`` in a new Python process and return its result.

    Parameters
    ----------
    module
        Module name inside the ``benchmarks`` package, e.g. ``"bench_headers"``.
    tool, params
        Passed to ``measure``; ``params`` must be JSON-able.
    env
        Extra environment variables for the child (e.g. GDAL configuration options).
    timeout
        Seconds before the child is killed.
    """
    child_env = dict(os.environ)
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), child_env.get("PYTHONPATH")]))
    child_env.update(env or {})
    with tempfile.TemporaryDirectory(prefix="rdbench-") as tmp:
        params_path, result_path = Path(tmp) / "params.json", Path(tmp) / "result.json"
        params_path.write_text(json.dumps(params))
        command = [
            sys.executable,
            "-m",
            "benchmarks._worker",
            module,
            tool,
            str(params_path),
            str(result_path),
        ]
        try:
            proc = subprocess.run(
                command, cwd=REPO, env=child_env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise MeasurementError(f"{module}:{tool} took more than {timeout:.0f} s") from None
        if proc.returncode != 0 or not result_path.exists():
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            raise MeasurementError(f"{module}:{tool} exited with {proc.returncode}:\n{tail}")
        return json.loads(result_path.read_text())


def process_cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) used so far by process ``pid``; None where /proc is not available."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_interleaved(
    tools: Sequence[str], repeats: int, measure_one: Callable[[str], dict], log=None
) -> dict[str, list[dict]]:
    """Measure every tool ``repeats`` times, interleaved (t1 t2 t3, t2 t3 t1, ...).

    ``measure_one(tool)`` does one measurement (usually :func:`run_fresh` plus server counts). A failed
    measurement is kept as ``{"error": message}``; the tool's other repetitions still run.
    """
    results: dict[str, list[dict]] = {tool: [] for tool in tools}
    for rep in range(repeats):
        shift = rep % len(tools)
        for tool in list(tools[shift:]) + list(tools[:shift]):
            try:
                result = measure_one(tool)
            except MeasurementError as exc:
                result = {"error": str(exc)}
            if log is not None:
                shown = f"{result['seconds']:.3f} s" if "seconds" in result else "FAILED"
                log(f"  {tool} #{rep + 1}: {shown}")
                if "error" in result:
                    log(result["error"])
            results[tool].append(result)
    return results


def median_of(results: list[dict], key: str = "seconds") -> float | None:
    """Median of ``key`` over the successful results, None when none succeeded."""
    values = [r[key] for r in results if "error" not in r and r.get(key) is not None]
    return statistics.median(values) if values else None


def spread(results: list[dict], key: str = "seconds") -> str:
    """``"median s"`` or, with several results, ``"median s (min-max)"``; ``"failed"`` if none succeeded."""
    values = [r[key] for r in results if "error" not in r]
    if not values:
        return "failed"
    text = f"{statistics.median(values):.3f} s"
    if len(values) > 1:
        text += f" ({min(values):.3f}–{max(values):.3f})"
    return text


def failed(results: list[dict]) -> bool:
    return any("error" in r for r in results)


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, None when either is unknown or b is 0."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}×"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return ""
    for unit, size in (("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def render_table(rows: list[Row]) -> str:
    """The rows as one Markdown table."""
    head = ["benchmark", "case", "tool", "time (median)", "throughput", "requests / item", "bytes / item"]
    head += ["ratio", "target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.benchmark, r.case, r.tool, r.time, r.rate, r.requests, r.bytes, r.ratio, r.target]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)
