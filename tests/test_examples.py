"""The examples run end to end against a small demo collection (each in its own process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rasteret_dask.demo import demo_collection

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("demo")
    demo_collection(directory, size=256, dates=2)
    return directory


def test_there_are_examples():
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs(example, demo_dir):
    args = [sys.executable, str(example), str(demo_dir)]
    if example.stem == "points_to_parquet":
        args.append("5000")
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip()
