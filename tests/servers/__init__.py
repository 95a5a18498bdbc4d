"""Loopback servers for tests and benchmarks: a byte-range HTTP server, moto's S3, a GCS emulator."""
