"""A local HTTP server honouring byte ranges, so the demo's reads are real range requests."""

from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web


@dataclass
class ServerStats:
    """Requests and bytes served, counted by the server itself."""

    requests: int = 0
    bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, n: int) -> None:
        with self.lock:
            self.requests += 1
            self.bytes += n


def _handler(root: Path, stats: ServerStats):
    async def serve(request: web.Request) -> web.StreamResponse:
        path = (root / request.match_info["name"]).resolve()
        if root not in path.parents or not path.is_file():
            return web.Response(status=404)
        size = path.stat().st_size
        spec = request.headers.get("Range")
        start, stop = 0, size
        if spec and spec.startswith("bytes="):
            first, _, last = spec[6:].partition("-")
            start = int(first or 0)
            stop = min(int(last) + 1, size) if last else size
            if start >= size:
                return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
        with open(path, "rb") as f:
            f.seek(start)
            body = f.read(stop - start)
        stats.add(len(body))
        headers = {"Accept-Ranges": "bytes", "ETag": f'"{int(path.stat().st_mtime_ns)}-{size}"'}
        if spec:
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
            return web.Response(status=206, body=body, headers=headers)
        return web.Response(body=body, headers=headers)

    return serve


class RangeServer:
    """Serve a folder on 127.0.0.1 (a free port) from a background thread until ``close()``."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.stats = ServerStats()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rasteret-demo-http", daemon=True)
        self._thread.start()
        self._started.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_for(self, path: Path) -> str:
        return f"{self.url}/{Path(path).resolve().relative_to(self.root).as_posix()}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/{name:.+}", _handler(self.root, self.stats))
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._runner = runner
        self._started.set()
        self._loop.run_forever()

    def close(self) -> None:
        async def stop():
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> RangeServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
