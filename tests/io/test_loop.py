"""The per-process I/O loop: many threads at once, re-entry from the loop, forked children."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from rasteret_dask.io import close_stores, read_ranges, read_ranges_async
from rasteret_dask.io.loop import get_loop, run_sync


def test_one_loop_serves_every_thread():
    async def where():
        await asyncio.sleep(0.01)
        return asyncio.get_running_loop(), threading.current_thread().name

    with ThreadPoolExecutor(16) as pool:
        seen = list(pool.map(lambda _: run_sync(where()), range(64)))
    assert {loop for loop, _ in seen} == {get_loop()}
    assert {name for _, name in seen} == {"rasteret-dask-io"}


def test_many_threads_read_at_once(tmp_path):
    data = os.urandom(50_000)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    ranges = [(i * 997 % 40_000, i * 997 % 40_000 + 500) for i in range(20)]

    def read(_):
        return [bytes(b) for b in read_ranges(str(path), ranges)]

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(read, range(48)))
    assert all(r == [data[a:b] for a, b in ranges] for r in results)


def test_exceptions_cross_back_to_the_caller():
    async def fail():
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        run_sync(fail())


def test_run_sync_inside_the_loop_raises_instead_of_deadlocking():
    async def nested():
        return run_sync(asyncio.sleep(0))

    with pytest.raises(RuntimeError, match="await the coroutine"):
        run_sync(nested(), timeout=5)


def test_run_sync_timeout_cancels_the_work():
    started, cancelled = threading.Event(), threading.Event()

    async def slow():
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError):
        run_sync(slow(), timeout=0.1)
    assert started.is_set() and cancelled.wait(5)


def _child_read(url, path, ranges, queue):
    try:
        http = [bytes(b) for b in read_ranges(url, ranges)]
        local = [bytes(b) for b in read_ranges(path, ranges)]
        queue.put((os.getpid(), id(get_loop()), http, local))
    except BaseException as exc:  # report anything to the parent
        queue.put(repr(exc))


def test_forked_child_gets_its_own_working_loop(range_server, tmp_path):
    data = os.urandom(20_000)
    url = range_server.put("fork.bin", data)
    path = str(tmp_path / "fork.bin")
    with open(path, "wb") as f:
        f.write(data)
    ranges = [(0, 100), (5000, 9000)]
    expected = [data[a:b] for a, b in ranges]
    # The parent uses its loop and HTTP session first: the children must not inherit them.
    assert [bytes(b) for b in read_ranges(url, ranges)] == expected
    parent_loop = id(get_loop())

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    children = [ctx.Process(target=_child_read, args=(url, path, ranges, queue)) for _ in range(2)]
    for child in children:
        child.start()
    results = [queue.get(timeout=30) for _ in children]
    for child in children:
        child.join(10)
        assert child.exitcode == 0
    for result in results:
        assert not isinstance(result, str), result
        pid, _, http, local = result
        assert pid != os.getpid()
        assert http == expected and local == expected
    assert id(get_loop()) == parent_loop  # the parent's loop is untouched
    assert [bytes(b) for b in read_ranges(url, ranges)] == expected


def test_async_functions_work_on_an_applications_own_loop(range_server):
    data = os.urandom(5000)
    url = range_server.put("own-loop.bin", data)

    async def main():
        bodies = await read_ranges_async(url, [(0, 10), (4000, 5000)])
        await close_stores()  # this loop is about to close: release its HTTP session
        return [bytes(b) for b in bodies]

    for _ in range(2):  # a second loop gets its own session
        assert asyncio.run(main()) == [data[:10], data[4000:5000]]
