"""One asyncio event loop per process, in a daemon thread, for synchronous callers.

Dask runs tasks in worker threads (and processes); they all funnel their I/O into this one loop, so
connections, filesystem objects and per-host limits are shared by every task of a process.

The loop starts on first use. A forked child cannot use its parent's loop (the thread does not exist
there and its sockets are shared with the parent): ``os.register_at_fork`` and a pid check make the
child start its own, and the parent's objects are left untouched (never closed) in the child.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import threading
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_pid = os.getpid()
# Loops inherited from a parent process: kept referenced so the garbage collector never finalises
# (and closes) objects whose sockets belong to the parent.
_abandoned: list[Any] = []
_states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict] = weakref.WeakKeyDictionary()
_closers: list = []


def _after_fork_in_child() -> None:
    global _lock, _loop, _thread, _pid, _states
    _abandoned.append((_loop, _thread, _states))
    _lock = threading.Lock()
    _loop, _thread, _pid = None, None, os.getpid()
    _states = weakref.WeakKeyDictionary()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _start() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()

    thread = threading.Thread(target=run, name="rasteret-dask-io", daemon=True)
    thread.start()
    ready.wait()
    global _thread
    _thread = thread
    return loop


def get_loop() -> asyncio.AbstractEventLoop:
    """The process's I/O event loop, started on first use (and again in a forked child)."""
    global _loop, _pid
    loop = _loop
    if loop is not None and _pid == os.getpid() and loop.is_running():
        return loop
    with _lock:
        if _pid != os.getpid():  # forked without the at-fork hook (should not happen; be safe)
            _after_fork_in_child()
        if _loop is None or not _loop.is_running():
            _loop = _start()
        return _loop


def in_loop_thread() -> bool:
    """True when called from the I/O loop's own thread."""
    return _thread is not None and threading.current_thread() is _thread and _pid == os.getpid()


def run_sync(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run ``coro`` on the process's I/O loop and wait for its result, from any thread.

    Parameters
    ----------
    coro
        The coroutine to run.
    timeout
        Seconds to wait; on expiry the coroutine is cancelled and ``TimeoutError`` raised. The I/O
        functions bound their own time (``IOConfig``), so None is the usual value.

    Raises
    ------
    RuntimeError
        When called from the loop thread itself, which would wait for itself for ever: ``await``
        the coroutine there instead.
    """
    if in_loop_thread():
        coro.close()
        raise RuntimeError(
            "run_sync() was called from the rasteret_dask I/O loop thread; await the coroutine instead"
        )
    future = asyncio.run_coroutine_threadsafe(coro, get_loop())
    try:
        return future.result(timeout)
    except BaseException:  # timeout, KeyboardInterrupt: do not leave the work running
        future.cancel()
        raise


def loop_state() -> dict:
    """A dict private to the running event loop, for objects bound to it (sessions, semaphores).

    Must be called from a coroutine. Works on any loop, not only ours, so ``*_async`` functions may be
    awaited from an application's own loop.
    """
    loop = asyncio.get_running_loop()
    state = _states.get(loop)
    if state is None:
        state = _states[loop] = {}
    return state


def on_shutdown(closer) -> None:
    """Register ``async closer(state)`` to run on our loop's state at interpreter exit (best effort)."""
    _closers.append(closer)


async def _close_all() -> None:
    state = _states.get(asyncio.get_running_loop(), {})
    for closer in _closers:
        with contextlib.suppress(Exception):  # shutdown is best effort
            await closer(state)


@atexit.register
def _shutdown() -> None:
    loop = _loop
    if loop is None or _pid != os.getpid() or not loop.is_running() or in_loop_thread():
        return
    with contextlib.suppress(Exception):  # shutdown is best effort
        asyncio.run_coroutine_threadsafe(_close_all(), loop).result(2.0)


async def gather_or_cancel(coros) -> list:
    """Await all, results in order; on the first failure cancel the others and raise that failure itself
    (not an ``ExceptionGroup``, so callers see our own exception types)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    if not tasks:
        return []
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                raise task.exception()
        return [task.result() for task in tasks]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
