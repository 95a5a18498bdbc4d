"""pytest fixtures starting the loopback servers (registered as a plugin by tests/conftest.py).

- ``range_server_process`` (session): one range-server process for the whole run.
- ``range_server`` (function): that server, reset (no faults, no latency, zero counts) before each test.
- ``s3_server`` (session): moto's S3 server; ``s3_server.put(bucket, key, data) -> "s3://..."``.
- ``gcs_server`` (session): the GCS emulator; ``gcs_server.put(bucket, key, data) -> "gs://..."``.
"""

from __future__ import annotations

import pytest

from .gcs import GCSServer
from .range_server import RangeServer, serve_directory
from .s3 import S3Server


@pytest.fixture(scope="session")
def range_server_process(tmp_path_factory) -> RangeServer:
    with serve_directory(tmp_path_factory.mktemp("range-server")) as server:
        yield server


@pytest.fixture
def range_server(range_server_process) -> RangeServer:
    range_server_process.reset()
    yield range_server_process
    range_server_process.reset()


@pytest.fixture(scope="session")
def s3_server() -> S3Server:
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gcs_server() -> GCSServer:
    server = GCSServer()
    yield server
    server.stop()
