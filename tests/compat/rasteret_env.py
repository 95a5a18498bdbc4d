"""Rasteret in its own virtual environment, driven through a subprocess.

Rasteret 0.4.1 needs Python >= 3.12 and must never be imported into the test process, so the
compatibility tests find (or make) a separate venv and run ``run_rasteret.py`` with its python.

Where the venv's python comes from, in order:

1. ``RASTERET_PYTHON`` (a python executable that can import rasteret);
2. ``<repo>/.venv-rasteret/bin/python`` when it exists and imports rasteret;
3. when ``RASTERET_CREATE_VENV=1`` (``.ci/run`` sets it): a new ``<repo>/.venv-rasteret`` made with
   pyenv's newest 3.12 (else 3.13, else ``python3.12``/``python3.13`` on PATH), then
   ``pip install rasteret==0.4.1``.

Run as a script (``python tests/compat/rasteret_env.py``) it locates or creates the venv and prints
its python, which is how ``.ci/run`` prepares it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".venv-rasteret"
RUNNER = Path(__file__).resolve().with_name("run_rasteret.py")
RASTERET_VERSION = "0.4.1"
PYTHON_VERSIONS = ("3.12", "3.13")


class RasteretUnavailable(RuntimeError):
    """Rasteret's venv could not be found or made; the message says why and what to do."""


class RasteretFailed(RuntimeError):
    """The Rasteret runner process failed (not a failed job: those come back as results)."""


def _clean_env() -> dict[str, str]:
    """This process's environment without what would point another Python at our packages."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _imports_rasteret(python: Path) -> str | None:
    """None when ``python`` imports rasteret at the pinned version, else why not."""
    if not python.exists():
        return f"{python} does not exist"
    probe = "import rasteret, sys; sys.stdout.write(rasteret.__version__)"
    try:
        done = subprocess.run(
            [str(python), "-c", probe], capture_output=True, text=True, timeout=120, env=_clean_env()
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{python} cannot run: {exc}"
    if done.returncode != 0:
        return f"{python} cannot import rasteret: {done.stderr.strip().splitlines()[-1:]}"
    if done.stdout.strip() != RASTERET_VERSION:
        return f"{python} has rasteret {done.stdout.strip()}, not {RASTERET_VERSION}"
    return None


def _pyenv_root() -> Path:
    pyenv = shutil.which("pyenv")
    if pyenv:
        try:
            done = subprocess.run([pyenv, "root"], capture_output=True, text=True, timeout=30)
            if done.returncode == 0 and done.stdout.strip():
                return Path(done.stdout.strip())
        except (OSError, subprocess.TimeoutExpired):
            pass
    return Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")


def base_python() -> Path | None:
    """A Python 3.12 (or 3.13) interpreter to make the venv with: pyenv's newest, else one on PATH."""
    versions = _pyenv_root() / "versions"
    installed = [p.name for p in versions.iterdir()] if versions.is_dir() else []
    for wanted in PYTHON_VERSIONS:
        found = [v for v in installed if v.startswith(wanted + ".") and v[len(wanted) + 1 :].isdigit()]
        for version in sorted(found, key=lambda v: int(v.rsplit(".", 1)[1]), reverse=True):
            python = versions / version / "bin" / "python"
            if python.exists():
                return python
    for wanted in PYTHON_VERSIONS:
        on_path = shutil.which(f"python{wanted}")
        if on_path:
            return Path(on_path)
    return None


def create_venv(venv: Path = VENV, *, quiet: bool = True) -> Path:
    """Make ``venv`` with Python 3.12/3.13 and install rasteret into it; return its python."""
    base = base_python()
    if base is None:
        raise RasteretUnavailable(
            "no Python 3.12 or 3.13 found (pyenv versions or python3.12 on PATH) to make the Rasteret venv"
        )
    python = venv / "bin" / "python"
    quiet_flags = ["--quiet"] if quiet else []
    steps = [
        [str(base), "-m", "venv", "--clear", str(venv)],
        [str(python), "-m", "pip", "install", *quiet_flags, "--upgrade", "pip"],
        [str(python), "-m", "pip", "install", *quiet_flags, f"rasteret=={RASTERET_VERSION}"],
    ]
    for i, step in enumerate(steps):
        done = subprocess.run(step, capture_output=True, text=True, timeout=1800, env=_clean_env())
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
            raise RasteretUnavailable(f"making the Rasteret venv failed at {' '.join(step)}:\n{tail}")
        if i == 0:  # keep the venv out of git, as Python >= 3.13's venv does
            (venv / ".gitignore").write_text("*\n")
    problem = _imports_rasteret(python)
    if problem:
        raise RasteretUnavailable(f"the new Rasteret venv does not work: {problem}")
    return python


def rasteret_python() -> Path:
    """The python of a venv with Rasteret (see the module docstring); raises RasteretUnavailable."""
    given = os.environ.get("RASTERET_PYTHON")
    if given:
        problem = _imports_rasteret(Path(given))
        if problem:
            raise RasteretUnavailable(f"RASTERET_PYTHON={given}: {problem}")
        return Path(given)
    python = VENV / "bin" / "python"
    problem = _imports_rasteret(python)
    if problem is None:
        return python
    if os.environ.get("RASTERET_CREATE_VENV") == "1":
        return create_venv(VENV)
    raise RasteretUnavailable(
        f"Rasteret {RASTERET_VERSION} is not available ({problem}); set RASTERET_PYTHON to a python "
        f"that imports it, or RASTERET_CREATE_VENV=1 to make {VENV}"
    )


def run_jobs(python: Path, jobs: list[dict], *, timeout: float = 300) -> list[dict]:
    """Run ``jobs`` (see ``run_rasteret.py``) in one Rasteret process; return their results in order.

    A job that failed inside Rasteret returns ``{"error": ...}``; a runner that crashed raises
    RasteretFailed with its stderr.
    """
    try:
        done = subprocess.run(
            [str(python), str(RUNNER)],
            input=json.dumps({"jobs": jobs}),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_clean_env(),
            cwd=str(RUNNER.parent),
        )
    except subprocess.TimeoutExpired as exc:
        raise RasteretFailed(f"the Rasteret runner took more than {timeout} s: {exc.stderr}") from None
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        raise RasteretFailed(f"the Rasteret runner exited with {done.returncode}:\n{done.stderr[-4000:]}")
    results = json.loads(lines[-1])["results"]
    for result in results:
        if "error" in result:
            result["stderr"] = done.stderr[-4000:]
    return results


def main() -> int:
    """Locate or make the venv (honouring RASTERET_CREATE_VENV) and print its python."""
    try:
        python = rasteret_python()
    except RasteretUnavailable as exc:
        print(exc, file=sys.stderr)
        return 1
    print(python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
