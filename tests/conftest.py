"""Shared fixtures: the real-file corpus in ../shared/corpus and the loopback servers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest_plugins = ["tests.servers.fixtures"]

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    if not (CORPUS / "oracle.json").exists():
        pytest.fail(f"the shared corpus is missing: expected it at {CORPUS}")
    return CORPUS


@pytest.fixture(scope="session")
def corpus_oracle(corpus_dir) -> dict:
    return json.loads((corpus_dir / "oracle.json").read_text())
