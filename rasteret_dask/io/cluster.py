"""Shipping storage options to ``distributed`` workers (imported only by code that builds graphs)."""

from __future__ import annotations

from distributed import get_client
from distributed.diagnostics.plugin import WorkerPlugin

from .credentials import StorageRef, install, register, resolve


class StoragePlugin(WorkerPlugin):
    """A ``distributed`` worker plugin installing one set of storage options on every worker."""

    def __init__(self, token: str, options: dict):
        self.token, self.options = token, options
        self.name = f"rasteret-storage-{token}"

    def setup(self, worker=None) -> None:
        install(self.token, self.options)

    def __repr__(self) -> str:
        return f"<rasteret_dask storage options {self.token[:8]}>"


def for_graph(options: dict | None) -> StorageRef | None:
    """A reference to put in task graphs instead of ``options``, shipped to the active cluster's workers."""
    if not options:
        return None
    ref = register(options)
    try:
        client = get_client()
    except ValueError:  # no distributed client: the threaded scheduler reads this process's registry
        return ref
    plugin = StoragePlugin(ref.token, resolve(ref))
    client.register_plugin(plugin, name=plugin.name)
    return ref
