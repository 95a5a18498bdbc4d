"""STAC for tests: generated scenes and items, ``rustac serve`` as a real STAC API, a SAS-token stand-in.

Use as a pytest plugin (``pytest_plugins = ["tests.servers.stac"]`` in a test module):

- ``stac_world`` (session): 12 small COG scenes in two UTM zones either side of the antimeridian, 3
  single-band assets (B02, B03, B04) and one 4-band asset (``rgbn``, with ``raster:bands`` and
  ``eo:bands``) each, written by GDAL (rasterio) under the range server's root; their STAC items with
  http hrefs (``items``) and with local paths (``local_items``), and the facts the items were made
  from (``scenes``) to check records against.
- ``rustac_server`` (session): ``rustac serve`` on a free loopback port serving the collection of
  ``stac_world`` (more items than one page); ``rustac_server.requests("POST", "/search")`` counts
  requests from its own log.
- ``sas_server`` (session): a Planetary-Computer-like token service and a blob store that refuses any
  GET without a valid, unexpired SAS token (:class:`SasServer`).

Rustac's in-memory backend (the one used here) ignores the query extension (it returns no items for a
``query``) and rejects a bbox whose west is east of its east; it does not declare either feature.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
import shapely
from pyproj import CRS, Transformer
from rasterio.transform import from_origin

from tests.scenes import footprint_lonlat, write_cog

from ._net import free_port
from .range_server import _parse_range

# ------------------------------------------------------------------------------------------ scenes

# (EPSG, lon, lat of the first scene's top-left corner): UTM 60N just west and UTM 1N just east of 180°.
ZONES = ((32660, 179.20, 52.30), (32601, -179.33, 52.30))
DATES = 6
SIZE, RESOLUTION, BLOCK = 256, 60.0, 128
SINGLE_BANDS = ("B02", "B03", "B04")
MULTI_ASSET, MULTI_NAMES = "rgbn", ("red", "green", "blue", "nir")
COLLECTION = "test-scenes"
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
PROJ_V1 = "https://stac-extensions.github.io/projection/v1.1.0/schema.json"
PROJ_V2 = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"


@dataclass(frozen=True)
class Scene:
    """What an item was made from (the oracle for its record)."""

    id: str
    epsg: int
    datetime: datetime | None
    start: datetime | None
    footprint: shapely.Geometry
    files: dict[str, str]  # asset key -> path relative to the world's root
    cloud_cover: float
    proj_style: str  # which projection field the item carries


def _scene_data(rng, bands: int, shift: int) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    planes = [
        1000
        + 300 * np.sin((xx + 11 * b + shift) / 9.0) * np.cos(yy / 13.0)
        + rng.integers(0, 40, (SIZE, SIZE))
        for b in range(bands)
    ]
    data = np.stack(planes).astype("uint16")
    data[:, :, :3] = 0  # a nodata edge
    return data


def write_scenes(root: Path) -> list[Scene]:
    """Write the COGs of every scene under ``root/scenes``; return the scenes."""
    rng = np.random.default_rng(7)
    (root / "scenes").mkdir(parents=True, exist_ok=True)
    scenes = []
    styles = ("proj:epsg", "proj:code", "proj:wkt2", "proj:projjson")
    for z, (epsg, lon, lat) in enumerate(ZONES):
        x0, y0 = Transformer.from_crs("EPSG:4326", epsg, always_xy=True).transform(lon, lat)
        for d in range(DATES):
            index = z * DATES + d
            scene_id = f"S{z}_{d:02d}"
            transform = from_origin(round(x0) + 3000 * d, round(y0) - 1000 * d, RESOLUTION, RESOLUTION)
            files = {}
            for b, band in enumerate(SINGLE_BANDS):
                name = f"scenes/{scene_id}_{band}.tif"
                write_cog(root / name, _scene_data(rng, 1, b + d), epsg, transform, nodata=0, blocksize=BLOCK)
                files[band] = name
            name = f"scenes/{scene_id}_{MULTI_ASSET}.tif"
            write_cog(root / name, _scene_data(rng, 4, d), epsg, transform, nodata=0, blocksize=BLOCK)
            files[MULTI_ASSET] = name
            when = datetime(2024, 3, 1 + 3 * d, 10, 30 + z, tzinfo=UTC)
            last = index == len(ZONES) * DATES - 1  # dated by start_datetime only
            scenes.append(
                Scene(
                    id=scene_id,
                    epsg=epsg,
                    datetime=None if last else when,
                    start=when,
                    footprint=footprint_lonlat(epsg, transform, SIZE, SIZE),
                    files=files,
                    cloud_cover=float(index * 7 % 60) if index % 3 else int(index * 7 % 60),
                    proj_style=styles[index % 4],
                )
            )
    return scenes


def _proj_fields(scene: Scene) -> dict:
    crs = CRS.from_epsg(scene.epsg)
    value = {
        "proj:epsg": scene.epsg,
        "proj:code": f"EPSG:{scene.epsg}",
        "proj:wkt2": crs.to_wkt(),
        "proj:projjson": crs.to_json_dict(),
    }[scene.proj_style]
    return {scene.proj_style: value, "proj:shape": [SIZE, SIZE]}


def make_item(scene: Scene, href) -> dict:
    """The STAC item of ``scene``; ``href(relative file path)`` gives each asset's href."""
    properties = {
        "datetime": None if scene.datetime is None else scene.datetime.isoformat().replace("+00:00", "Z"),
        "eo:cloud_cover": scene.cloud_cover,
        "platform": "sentinel-2a" if scene.epsg == ZONES[0][0] else "sentinel-2b",
        "created": "2024-04-01T00:00:00Z",
        "view:sun_elevation": 30.5 + len(scene.id),
        "tags": ["test", scene.id[:2]],
        "processing": {"level": "L2A", "version": int(scene.id[-2:])},
        **_proj_fields(scene),
    }
    if scene.datetime is None:
        properties["start_datetime"] = scene.start.isoformat().replace("+00:00", "Z")
        properties["end_datetime"] = (scene.start + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assets = {
        band: {"href": href(scene.files[band]), "type": COG_TYPE, "roles": ["data"]} for band in SINGLE_BANDS
    }
    assets[MULTI_ASSET] = {
        "href": href(scene.files[MULTI_ASSET]),
        "type": COG_TYPE,
        "roles": ["data"],
        "eo:bands": [{"name": n, "common_name": n} for n in MULTI_NAMES],
        "raster:bands": [{"data_type": "uint16", "nodata": 0} for _ in MULTI_NAMES],
    }
    assets["thumbnail"] = {
        "href": href(f"scenes/{scene.id}.png"),
        "type": "image/png",
        "roles": ["thumbnail"],
    }
    west, south, east, north = scene.footprint.bounds
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [PROJ_V2 if scene.proj_style != "proj:epsg" else PROJ_V1],
        "id": scene.id,
        "collection": COLLECTION,
        "geometry": shapely.geometry.mapping(scene.footprint),
        "bbox": [west, south, east, north],
        "properties": properties,
        "links": [],
        "assets": assets,
    }


def make_collection(collection_id: str, items: list[dict]) -> dict:
    """A STAC collection document whose extent covers ``items``."""
    boxes = np.array([item["bbox"] for item in items])
    return {
        "type": "Collection",
        "stac_version": "1.1.0",
        "id": collection_id,
        "description": f"generated test collection {collection_id}",
        "license": "other",
        "extent": {
            "spatial": {"bbox": [[-180.0, float(boxes[:, 1].min()), 180.0, float(boxes[:, 3].max())]]},
            "temporal": {"interval": [["2024-01-01T00:00:00Z", None]]},
        },
        "links": [],
    }


def write_static_catalog(directory: Path, items: list[dict], *, asset_root: Path | None = None) -> Path:
    """A self-contained static catalog: catalog.json -> collection(s) -> items, all links relative.

    With ``asset_root``, asset hrefs that are paths under it become relative to each item's file.
    Returns the path of catalog.json.
    """
    directory.mkdir(parents=True, exist_ok=True)
    by_collection: dict[str, list[dict]] = {}
    for item in items:
        by_collection.setdefault(item["collection"], []).append(item)
    catalog = {
        "type": "Catalog",
        "stac_version": "1.1.0",
        "id": "test-catalog",
        "description": "generated static catalog",
        "links": [{"rel": "root", "href": "./catalog.json", "type": "application/json"}],
    }
    for collection_id, members in by_collection.items():
        catalog["links"].append({"rel": "child", "href": f"./{collection_id}/collection.json"})
        collection = make_collection(collection_id, members)
        collection["links"] = [
            {"rel": "root", "href": "../catalog.json"},
            {"rel": "parent", "href": "../catalog.json"},
        ]
        for item in members:
            folder = directory / collection_id / item["id"]
            folder.mkdir(parents=True, exist_ok=True)
            copy = json.loads(json.dumps(item))
            if asset_root is not None:
                for asset in copy["assets"].values():
                    path = Path(asset["href"])
                    if path.is_absolute() and asset_root in path.parents:
                        asset["href"] = os.path.relpath(path, folder)
            copy["links"] = [
                {"rel": "root", "href": "../../catalog.json"},
                {"rel": "parent", "href": "../collection.json"},
                {"rel": "collection", "href": "../collection.json"},
            ]
            (folder / f"{item['id']}.json").write_text(json.dumps(copy))
            collection["links"].append({"rel": "item", "href": f"./{item['id']}/{item['id']}.json"})
        (directory / collection_id / "collection.json").write_text(json.dumps(collection))
    (directory / "catalog.json").write_text(json.dumps(catalog))
    return directory / "catalog.json"


@dataclass
class StacWorld:
    """Generated scenes and their items.

    Attributes
    ----------
    root
        Directory holding ``scenes/`` (served by the range server at ``base_url``).
    base_url
        URL of ``root`` on the range server (ends with ``/``).
    scenes
        The facts each item was made from.
    items, local_items
        The items with http hrefs (range server) and with absolute local paths.
    """

    root: Path
    base_url: str
    scenes: list[Scene]
    items: list[dict]
    local_items: list[dict]

    def scene(self, scene_id: str) -> Scene:
        return next(s for s in self.scenes if s.id == scene_id)


@pytest.fixture(scope="session")
def stac_world(range_server_process) -> StacWorld:
    root = range_server_process.root / "stac"
    scenes = write_scenes(root)
    base_url = range_server_process.url_for("stac/")
    items = [make_item(s, lambda name: base_url + name) for s in scenes]
    local_items = [make_item(s, lambda name: str(root / name)) for s in scenes]
    return StacWorld(root, base_url, scenes, items, local_items)


# ------------------------------------------------------------------------------------------ rustac


def rustac_executable() -> str:
    """The ``rustac`` command of this Python environment (PyPI package ``rustac``)."""
    beside = Path(sys.executable).with_name("rustac")
    if beside.exists():
        return str(beside)
    found = shutil.which("rustac")
    if found is None:
        raise RuntimeError("the rustac command is missing: pip install rustac")
    return found


_REQUEST_LINE = re.compile(r"request; method=(\w+) uri=(\S+)")


class RustacServer:
    """``rustac serve`` (in-memory backend) on 127.0.0.1 serving the given collection and item files.

    Attributes
    ----------
    url
        The API root, ``http://127.0.0.1:<port>/``.
    """

    def __init__(self, hrefs: list[Path], log_path: Path, timeout: float = 30.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - open for the life of the process
        command = [rustac_executable(), "-vvv", "serve", "--addr", f"127.0.0.1:{self.port}"]
        self._process = subprocess.Popen(
            [*command, *map(str, hrefs)], stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                self.close()
                raise RuntimeError(f"rustac serve exited: {log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"rustac serve did not answer within {timeout} s")
            time.sleep(0.1)

    def requests(self, method: str | None = None, path: str | None = None) -> int:
        """Requests the server logged (``path`` without query string), waiting for its log to settle."""
        previous, stable = -1, 0
        while stable < 3:  # the log is written asynchronously; wait until it stops growing
            size = self.log_path.stat().st_size
            stable = stable + 1 if size == previous else 0
            previous = size
            time.sleep(0.05)
        count = 0
        for m in _REQUEST_LINE.finditer(self.log_path.read_text(errors="replace")):
            if (method is None or m[1] == method) and (path is None or m[2].split("?", 1)[0] == path):
                count += 1
        return count

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        self._log.close()


def serve_items(directory: Path, collections: dict[str, list[dict]]) -> RustacServer:
    """Start rustac serving ``{collection id: items}`` (collection documents are generated)."""
    directory.mkdir(parents=True, exist_ok=True)
    hrefs = []
    for collection_id, items in collections.items():
        collection_path = directory / f"{collection_id}.collection.json"
        collection_path.write_text(json.dumps(make_collection(collection_id, items)))
        items_path = directory / f"{collection_id}.items.json"
        items_path.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
        hrefs += [collection_path, items_path]
    return RustacServer(hrefs, directory / "rustac.log")


@pytest.fixture(scope="session")
def rustac_server(stac_world, tmp_path_factory) -> RustacServer:
    server = serve_items(tmp_path_factory.mktemp("rustac"), {COLLECTION: stac_world.items})
    yield server
    server.close()


# ------------------------------------------------------------------------------------- SAS stand-in


class SasServer:
    """A Planetary-Computer-like token service and a blob store that checks its tokens, in a thread.

    - ``GET /api/sas/v1/token/{account}/{container}`` answers ``{"msft:expiry", "token"}``; the token
      is an Azure-like SAS query string with a fresh random ``sig``, valid for ``token_lifetime`` s.
    - ``GET /{account}/{container}/{blob}`` serves ``root/account/container/blob`` (one byte range,
      ETag, If-Match) only when the query's ``sig`` is an unexpired token of that container; else 403.

    Counts: ``token_requests`` (Counter of (account, container)), ``gets`` (accepted blob GETs),
    ``rejected`` (403s), ``sigs_seen`` (the ``sig`` of every accepted GET).
    """

    def __init__(self, root: Path, token_lifetime: float = 3600.0):
        self.root = Path(root)
        self.token_lifetime = token_lifetime
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.token_url = f"http://{self.host}/api/sas/v1/token"
        self.subscription_keys: list[str | None] = []
        self._lock = threading.Lock()
        self._token_faults: list[int] = []
        self._valid: dict[tuple[str, str], dict[str, float]] = {}
        self.reset()
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True, name="sas-server")
        self._thread.start()
        if not started.wait(20):
            raise RuntimeError("the SAS stand-in did not start")

    def reset(self) -> None:
        """Zero the counts and drop faults (tokens issued stay valid until they expire)."""
        with self._lock:
            self.token_requests: Counter = Counter()
            self.gets = 0
            self.rejected = 0
            self.sigs_seen: list[str] = []
            self._token_faults.clear()
            self.subscription_keys.clear()

    def fail_tokens(self, status: int, times: int = 1) -> None:
        """Answer the next ``times`` token requests with ``status``."""
        with self._lock:
            self._token_faults += [status] * times

    def blob_url(self, account: str, container: str, blob: str) -> str:
        return f"http://{self.host}/{account}/{container}/{blob}"

    def put(self, account: str, container: str, blob: str, data: bytes) -> str:
        """Store a blob; returns its (unsigned) URL."""
        target = self.root / account / container / blob
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return self.blob_url(account, container, blob)

    def _run(self, started: threading.Event) -> None:
        from aiohttp import web

        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/api/sas/v1/token/{account}/{container}", self._token)
        app.router.add_get("/{account}/{container}/{blob:.+}", self._blob)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        started.set()
        self._loop.run_forever()

    async def _token(self, request):
        from aiohttp import web

        where = (request.match_info["account"], request.match_info["container"])
        with self._lock:
            self.token_requests[where] += 1
            self.subscription_keys.append(request.headers.get("Ocp-Apim-Subscription-Key"))
            if self._token_faults:
                return web.Response(status=self._token_faults.pop(0), text="injected fault")
            sig = secrets.token_urlsafe(12) + "+/="  # characters that must survive URL quoting
            expiry = datetime.now(UTC) + timedelta(seconds=self.token_lifetime)
            self._valid.setdefault(where, {})[sig] = expiry.timestamp()
        stamp = expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
        token = f"st={quote(stamp)}&se={quote(stamp)}&sp=rl&sv=2024-05-04&sr=c&sig={quote(sig, safe='')}"
        return web.json_response({"msft:expiry": stamp, "token": token})

    async def _blob(self, request):
        from aiohttp import web

        where = (request.match_info["account"], request.match_info["container"])
        sig = request.query.get("sig")
        with self._lock:
            expiry = self._valid.get(where, {}).get(sig)
            if expiry is None or time.time() >= expiry:
                self.rejected += 1
                return web.Response(status=403, text="AuthenticationFailed")
            self.gets += 1
            self.sigs_seen.append(sig)
        path = self.root / where[0] / where[1] / request.match_info["blob"]
        if not path.is_file():
            return web.Response(status=404, text="BlobNotFound")
        data = path.read_bytes()
        st = path.stat()
        headers = {
            "ETag": f'"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"',
            "Last-Modified": email.utils.formatdate(st.st_mtime, usegmt=True),
            "Accept-Ranges": "bytes",
        }
        if_match = request.headers.get("If-Match")
        if if_match is not None and headers["ETag"] not in [t.strip() for t in if_match.split(",")]:
            return web.Response(status=412, headers=headers)
        wanted = _parse_range(request.headers.get("Range"), len(data))
        if wanted == "unsatisfiable":
            return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{len(data)}"})
        if wanted is None:
            return web.Response(status=200, body=data, headers=headers)
        start, stop = wanted
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(data)}"
        return web.Response(status=206, body=data[start:stop], headers=headers)

    def close(self) -> None:
        async def stop():
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="session")
def sas_server(tmp_path_factory) -> SasServer:
    server = SasServer(tmp_path_factory.mktemp("sas"))
    yield server
    server.close()
