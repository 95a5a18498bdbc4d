"""Storage options out of task graphs: tasks carry a :class:`StorageRef`, processes hold the options.

Storage options can hold secrets (keys, tokens). A Dask graph is pickled, shipped, logged on errors and
shown on dashboards, so reads put only a ``StorageRef`` in it. The options stay in this process's
registry and reach ``distributed`` workers through a worker plugin, sent once over the cluster's
connections (never inside a task); workers that join later receive it too. The I/O functions accept a
``StorageRef`` wherever they accept options and resolve it where the read runs.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass

from ..errors import ReadError

_lock = threading.Lock()
_options: dict[str, dict] = {}
_tokens: dict[str, str] = {}


@dataclass(frozen=True)
class StorageRef:
    """Stands for a dict of storage options registered in every process that reads with it."""

    token: str

    def __repr__(self) -> str:
        return f"StorageRef({self.token[:8]})"


def _canonical(options: dict) -> str:
    return json.dumps(options, sort_keys=True, default=repr)


def register(options: dict) -> StorageRef:
    """Register ``options`` in this process and return their reference (the same for equal options)."""
    key = _canonical(options)
    with _lock:
        token = _tokens.get(key)
        if token is None:
            token = _tokens[key] = uuid.uuid4().hex
            _options[token] = dict(options)
    return StorageRef(token)


def install(token: str, options: dict) -> None:
    """Make ``options`` resolvable as ``StorageRef(token)`` in this process (what the worker plugin does)."""
    with _lock:
        _options[token] = dict(options)
        _tokens.setdefault(_canonical(options), token)


def resolve(options) -> dict | None:
    """The options a ``StorageRef`` stands for; plain dicts and None pass through."""
    if not isinstance(options, StorageRef):
        return options
    with _lock:
        found = _options.get(options.token)
    if found is None:
        raise ReadError(
            f"{options!r} is not registered in this process: the storage options were not sent to this "
            "worker. Build the read while a distributed Client is connected, so they are shipped to its "
            "workers, or give the workers credentials through their environment"
        )
    return found
