"""The ``gcp-storage-emulator`` GCS server on 127.0.0.1, in threads of this process, with helpers."""

from __future__ import annotations

import json
import logging
import urllib.request
from urllib.parse import quote

from ._net import free_port, wait_listening

PROJECT = "test-project"


class GCSServer:
    """A running GCS emulator (in memory).

    Attributes
    ----------
    endpoint_url
        ``http://127.0.0.1:<port>``.
    storage_options
        The gcsfs options to reach it (a fresh dict each time): ``endpoint_url``, ``token="anon"``,
        ``project``.
    """

    def __init__(self):
        from gcp_storage_emulator.server import create_server

        logging.getLogger("gcp_storage_emulator").setLevel(logging.WARNING)
        port = free_port()
        self._server = create_server("127.0.0.1", port, in_memory=True)
        self._server.start()
        wait_listening("127.0.0.1", port)
        self.endpoint_url = f"http://127.0.0.1:{port}"
        self._buckets: set[str] = set()

    @property
    def storage_options(self) -> dict:
        return {"endpoint_url": self.endpoint_url, "token": "anon", "project": PROJECT}

    def _post(self, url: str, data: bytes, content_type: str) -> dict:
        headers = {"Content-Type": content_type}
        request = urllib.request.Request(url, data=data, method="POST", headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"{}")

    def create_bucket(self, bucket: str) -> None:
        """Create ``bucket`` unless it exists."""
        if bucket not in self._buckets:
            body = json.dumps({"name": bucket}).encode()
            self._post(f"{self.endpoint_url}/storage/v1/b?project={PROJECT}", body, "application/json")
            self._buckets.add(bucket)

    def put(self, bucket: str, key: str, data: bytes) -> str:
        """Upload ``data`` to ``bucket/key`` (creating the bucket); returns ``gs://bucket/key``."""
        self.create_bucket(bucket)
        query = f"uploadType=media&name={quote(key, safe='')}"
        url = f"{self.endpoint_url}/upload/storage/v1/b/{bucket}/o?{query}"
        self._post(url, data, "application/octet-stream")
        return f"gs://{bucket}/{key}"

    def stop(self) -> None:
        self._server.stop()
