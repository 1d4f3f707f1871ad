"""Run coroutines from synchronous code on one shared background event loop.

Async clients (httpx over aiohttp) are bound to the loop that created their connections, so
every sync wrapper in dspex submits its coroutine to this one loop instead of calling
``asyncio.run`` per call (which would create and tear down a loop and a pool each time).
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["SyncCallOnIOLoop", "background_loop", "run_sync"]

T = TypeVar("T")

class SyncCallOnIOLoop(RuntimeError):
    """A blocking dspex call was made on dspex's own I/O loop, where it would deadlock.

    Raised before anything is sent, so the caller may safely retry the call in a thread.
    """


_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def background_loop() -> asyncio.AbstractEventLoop:
    """The shared loop, started on first use in a daemon thread."""
    global _loop, _thread
    loop = _loop
    if loop is not None and loop.is_running():
        return loop
    with _lock:
        if _loop is not None and _loop.is_running():
            return _loop
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def _run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        t = threading.Thread(target=_run, name="dspex-io", daemon=True)
        t.start()
        ready.wait()
        _loop, _thread = loop, t
        return loop


def run_sync(coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
    """Run ``coro`` on the background loop and wait for its result in this thread.

    The caller's context variables (settings overrides, the current span) travel with it.
    """
    loop = background_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise SyncCallOnIOLoop(
            "A synchronous dspex call was made from inside dspex's own I/O loop; "
            "use the async form (acall / aforward) there."
        )
    ctx = contextvars.copy_context()
    fut = asyncio.run_coroutine_threadsafe(_in_context(coro, ctx), loop)
    return fut.result(timeout_s)


async def _in_context(coro: Coroutine[Any, Any, T], ctx: contextvars.Context) -> T:
    # Run the coroutine as a task created inside the caller's copied context.
    task: asyncio.Task[T] = asyncio.get_running_loop().create_task(coro, context=ctx)
    return await task


def _shutdown() -> None:
    """At exit: let async generators parked on the loop run their ``finally`` (the HTTP
    transports close their sessions there), then stop the loop."""
    loop = _loop
    if loop is not None and loop.is_running():
        try:
            asyncio.run_coroutine_threadsafe(loop.shutdown_asyncgens(), loop).result(timeout=5)
        except Exception:  # exiting anyway; a stuck close must not hang the interpreter
            pass
        loop.call_soon_threadsafe(loop.stop)


atexit.register(_shutdown)
