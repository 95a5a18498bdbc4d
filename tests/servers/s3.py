"""moto's S3 server on 127.0.0.1, in a thread of this process, with bucket and upload helpers."""

from __future__ import annotations

import logging

KEY, SECRET, REGION = "testing-key", "testing-secret", "us-east-1"


class S3Server:
    """A running moto S3 server.

    Attributes
    ----------
    endpoint_url
        ``http://127.0.0.1:<port>``.
    storage_options
        The s3fs options to reach it (a fresh dict each time): endpoint, dummy key and secret, region.
    client
        A boto3 S3 client on the server, for setting up and changing objects.
    """

    def __init__(self):
        import boto3
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        self.client = boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=KEY,
            aws_secret_access_key=SECRET,
            region_name=REGION,
        )
        self._buckets: set[str] = set()

    @property
    def storage_options(self) -> dict:
        return {
            "endpoint_url": self.endpoint_url,
            "key": KEY,
            "secret": SECRET,
            "client_kwargs": {"region_name": REGION},
        }

    def create_bucket(self, bucket: str) -> None:
        """Create ``bucket`` unless it exists."""
        if bucket not in self._buckets:
            self.client.create_bucket(Bucket=bucket)
            self._buckets.add(bucket)

    def put(self, bucket: str, key: str, data: bytes) -> str:
        """Upload ``data`` to ``bucket/key`` (creating the bucket); returns ``s3://bucket/key``."""
        self.create_bucket(bucket)
        self.client.put_object(Bucket=bucket, Key=key, Body=data)
        return f"s3://{bucket}/{key}"

    def stop(self) -> None:
        self._server.stop()
