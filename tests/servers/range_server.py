"""A loopback HTTP server for byte-range reads, with injectable latency and faults, and request counts.

It runs in its own process (so a benchmark measures the client, not the server) and is driven over
HTTP control endpoints, so tests and benchmarks in any process can change its behaviour:

>>> with serve_directory(tmp_dir, latency_ms=30) as server:                     # doctest: +SKIP
...     url = server.put("a.bin", b"0123456789")
...     server.add_fault("status", status=503, times=2)
...     ...  # read url
...     server.stats()["requests"]

What it serves (files under ``root``, re-read on every request):

- ``GET``/``HEAD`` with one ``Range: bytes=a-b`` / ``a-`` / ``-n``: 206 and ``Content-Range``; a range
  starting past the end: 416 with ``Content-Range: bytes */size``; no, several, or malformed ranges:
  200 and the whole file.
- a strong ``ETag`` (inode, mtime in ns, size) and ``Last-Modified``; ``If-Match`` that matches no
  current ETag: 412. Rewrite a file (``put``) to change it between reads.
- keep-alive, TCP_NODELAY (aiohttp sets it on every connection).

Faults (``add_fault``), consumed in the order added, each by the next ``times`` matching requests:

- ``status``: answer ``status`` (e.g. 503, 429, 500, 404) with an optional ``Retry-After``;
- ``reset``: abort the connection with a TCP RST, no response;
- ``truncate``: headers promise the whole range (``Content-Length``), half the body is sent, then the
  connection is closed;
- ``short``: a consistent 206 whose body and ``Content-Length`` hold only half the range that
  ``Content-Range`` announces;
- ``delay``: wait ``delay_ms`` more before answering normally (for timeouts);
- ``ignore_range``: answer 200 with the whole file.

Counts (``stats()``): requests, body bytes sent, the most requests in flight at once (latency
included), statuses, and per path requests and bytes. Control requests are not counted.

Run alone: ``python tests/servers/range_server.py --root DIR [--port P] [--latency-ms MS]`` prints
``PORT <n>`` on its first line and serves until its standard input closes (or it is killed).
"""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import json
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

CONTROL = "_control"

# ------------------------------------------------------------------------------------------ server side


class _State:
    def __init__(self, root: Path, latency_ms: float):
        self.root = root.resolve()
        self.latency_ms = latency_ms
        self.faults: list[dict] = []
        self.in_flight = 0  # a gauge: resets leave it alone
        self.reset_stats()

    def reset_stats(self) -> None:
        self.requests = 0
        self.bytes = 0
        self.max_in_flight = self.in_flight
        self.statuses: Counter = Counter()
        self.by_path: dict[str, dict[str, int]] = {}

    def stats(self) -> dict:
        return {
            "requests": self.requests,
            "bytes": self.bytes,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "by_path": self.by_path,
            "latency_ms": self.latency_ms,
            "faults": self.faults,
        }

    def take_fault(self, path: str) -> dict | None:
        for fault in self.faults:
            if fault["times"] != 0 and fault.get("path") in (None, path):
                if fault["times"] > 0:
                    fault["times"] -= 1
                return fault
        return None

    def file(self, path: str) -> Path | None:
        target = (self.root / path).resolve()
        if self.root not in target.parents or not target.is_file():
            return None
        return target


def _parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """(start, stop) of a single byte range, None to serve the whole file, "unsatisfiable"."""
    if not header or not header.strip().lower().startswith("bytes="):
        return None
    spec = header.strip()[6:].strip()
    if "," in spec or "-" not in spec:
        return None
    first, _, last = (part.strip() for part in spec.partition("-"))
    try:
        if not first:  # suffix: the last n bytes
            n = int(last)
            return (max(0, size - n), size) if n > 0 and size > 0 else "unsatisfiable"
        start = int(first)
        stop = size if not last else min(size, int(last) + 1)
    except ValueError:
        return None
    if start >= size:
        return "unsatisfiable"
    if stop <= start:
        return None
    return start, stop


def _abort(request, rst: bool) -> None:
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if rst and sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _make_app(state: _State):
    import asyncio

    from aiohttp import web

    async def control(request):
        name = request.match_info["name"]
        if name == "stats":
            return web.json_response(state.stats())
        payload = await request.json() if request.can_read_body else {}
        if name == "reset":
            state.reset_stats()
            state.faults.clear()
            state.latency_ms = 0.0
        elif name == "reset_stats":
            state.reset_stats()
        elif name == "latency":
            state.latency_ms = float(payload["ms"])
        elif name == "fault":
            state.faults.append(payload)
        elif name == "clear_faults":
            state.faults.clear()
        else:
            raise web.HTTPNotFound()
        return web.json_response({"ok": True})

    async def serve(request):
        path = request.match_info["path"]
        state.requests += 1
        counts = state.by_path.setdefault(path, {"requests": 0, "bytes": 0})
        counts["requests"] += 1
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            response = await _respond(request, path)
        finally:
            state.in_flight -= 1
        if response is not None:
            state.statuses[response.status] += 1
        return response

    def sent(path: str, n: int) -> None:
        state.bytes += n
        state.by_path[path]["bytes"] += n

    async def _respond(request, path):
        if state.latency_ms > 0:
            await asyncio.sleep(state.latency_ms / 1000)
        fault = state.take_fault(path) or {}
        kind = fault.get("kind")
        if kind == "delay":
            await asyncio.sleep(float(fault.get("delay_ms", 0)) / 1000)
        if kind == "status":
            headers = {}
            if fault.get("retry_after") is not None:
                headers["Retry-After"] = str(fault["retry_after"])
            return web.Response(status=int(fault["status"]), text="injected fault\n", headers=headers)
        if kind == "reset":
            _abort(request, rst=True)
            return web.Response(status=499)  # never sent: the connection is gone
        target = state.file(path)
        if target is None:
            return web.Response(status=404, text="not found\n")
        with open(target, "rb") as f:
            st = os.fstat(f.fileno())
            size = st.st_size
            etag = f'"{st.st_ino:x}-{st.st_mtime_ns:x}-{size:x}"'
            headers = {
                "ETag": etag,
                "Last-Modified": email.utils.formatdate(st.st_mtime, usegmt=True),
                "Accept-Ranges": "bytes",
                "Content-Type": "application/octet-stream",
            }
            if_match = request.headers.get("If-Match")
            if if_match is not None:
                tags = [t.strip() for t in if_match.split(",")]
                if "*" not in tags and etag not in tags:
                    return web.Response(status=412, text="precondition failed\n", headers=headers)
            wanted = None if kind == "ignore_range" else _parse_range(request.headers.get("Range"), size)
            if wanted == "unsatisfiable":
                headers["Content-Range"] = f"bytes */{size}"
                return web.Response(status=416, headers=headers)
            start, stop = (0, size) if wanted is None else wanted
            is_head = request.method == "HEAD"
            if is_head:  # the headers only: never read the body
                body = b""
                headers["Content-Length"] = str(stop - start)
            else:
                body = os.pread(f.fileno(), stop - start, start) if stop > start else b""
        status = 200 if wanted is None else 206
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        if kind == "short" and status == 206 and len(body) > 1:
            body = body[: len(body) // 2]
        if kind == "truncate" and len(body) > 1 and not is_head:
            response = web.StreamResponse(status=status, headers=headers)
            response.content_length = len(body)
            await response.prepare(request)
            half = body[: len(body) // 2]
            await response.write(half)
            sent(path, len(half))
            _abort(request, rst=False)
            return response
        if not is_head:
            sent(path, len(body))
        return web.Response(status=status, body=body, headers=headers)

    app = web.Application()
    app.router.add_route("*", f"/{CONTROL}/{{name}}", control)
    app.router.add_get("/{path:.+}", serve)  # HEAD included
    return app


def main(argv: list[str] | None = None) -> None:
    """Serve ``--root`` until standard input closes; print ``PORT <n>`` first."""
    import asyncio

    from aiohttp import web

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", default=0, type=int)
    parser.add_argument("--latency-ms", default=0.0, type=float)
    args = parser.parse_args(argv)

    async def run() -> None:
        # handler_cancellation: a request the client gave up on stops counting as in flight at once.
        app = _make_app(_State(args.root, args.latency_ms))
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
        site = web.SockSite(runner, sock, backlog=1024)
        await site.start()
        print(f"PORT {sock.getsockname()[1]}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def watch_stdin() -> None:
            with contextlib.suppress(Exception):
                while sys.stdin.buffer.read(4096):
                    pass
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=watch_stdin, daemon=True).start()
        await stop.wait()
        await runner.cleanup()

    asyncio.run(run())


# ------------------------------------------------------------------------------------------ client side


class RangeServer:
    """Handle on a running range server: URLs, files, faults, latency and counts.

    Attributes
    ----------
    root
        Directory served; files written there are served at ``url_for(name)``.
    port
        TCP port on 127.0.0.1.
    url
        Base URL, ending in ``/``.
    """

    def __init__(self, root: Path, port: int, process: subprocess.Popen | None = None):
        self.root = Path(root)
        self.port = port
        self.url = f"http://127.0.0.1:{port}/"
        self._process = process

    def url_for(self, name: str) -> str:
        """URL of the file ``root / name``."""
        return self.url + name

    def put(self, name: str, data: bytes) -> str:
        """Write (or atomically replace) ``root / name``; returns its URL. A replaced file gets a new ETag."""
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        return self.url_for(name)

    def _control(self, name: str, payload: dict | None = None) -> dict:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            f"{self.url}{CONTROL}/{name}",
            data=data,
            method="GET" if name == "stats" else "POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stats(self) -> dict:
        """Counts since the last reset: ``requests``, ``bytes``, ``max_in_flight``, ``in_flight``,
        ``statuses`` ({"206": n}), ``by_path`` ({name: {"requests", "bytes"}}), plus the current
        ``latency_ms`` and ``faults``."""
        return self._control("stats")

    def requests(self, name: str | None = None) -> int:
        """Requests served in all, or for one file."""
        stats = self.stats()
        return stats["requests"] if name is None else stats["by_path"].get(name, {}).get("requests", 0)

    def reset(self) -> None:
        """Zero the counts, drop every fault, set the latency to 0."""
        self._control("reset", {})

    def reset_stats(self) -> None:
        """Zero the counts only."""
        self._control("reset_stats", {})

    def set_latency(self, ms: float) -> None:
        """Delay every response by ``ms`` milliseconds."""
        self._control("latency", {"ms": ms})

    def add_fault(
        self,
        kind: str,
        *,
        times: int = 1,
        path: str | None = None,
        status: int = 503,
        retry_after: float | None = None,
        delay_ms: float = 0.0,
    ) -> None:
        """Inject a fault (see the module doc for kinds) into the next ``times`` requests (-1: all)
        for ``path`` (a name under root; None: any file)."""
        if kind not in ("status", "reset", "truncate", "short", "delay", "ignore_range"):
            raise ValueError(f"unknown fault kind {kind!r}")
        fault = {"kind": kind, "times": times, "path": path, "status": status}
        fault.update({"retry_after": retry_after, "delay_ms": delay_ms})
        self._control("fault", fault)

    def clear_faults(self) -> None:
        """Drop every fault not yet consumed."""
        self._control("clear_faults", {})

    def close(self) -> None:
        """Stop the server process."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            process.stdin.close()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        if process.stdout is not None:
            process.stdout.close()


def start_server(root: str | os.PathLike, *, latency_ms: float = 0.0, timeout: float = 30.0) -> RangeServer:
    """Start a range server process serving ``root`` on a free port of 127.0.0.1; ``close()`` it."""
    command = [sys.executable, os.path.abspath(__file__), "--root", os.fspath(root)]
    process = subprocess.Popen(
        [*command, "--latency-ms", str(latency_ms)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline().decode() if ready else ""
    if not line.startswith("PORT "):
        process.kill()
        process.wait()
        raise RuntimeError(f"the range server did not start (said {line!r}, exit code {process.poll()})")
    return RangeServer(Path(root), int(line.split()[1]), process)


@contextlib.contextmanager
def serve_directory(root: str | os.PathLike, *, latency_ms: float = 0.0) -> Iterator[RangeServer]:
    """Serve ``root`` over HTTP on 127.0.0.1 from a separate process for the duration of the block."""
    server = start_server(root, latency_ms=latency_ms)
    try:
        yield server
    finally:
        server.close()


if __name__ == "__main__":
    main()
