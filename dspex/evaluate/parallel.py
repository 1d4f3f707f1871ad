"""Run one function over many items concurrently, on asyncio, keeping order and errors.

Native async programs (Predict, ChainOfThought, ReAct, modules with ``aforward``) run as
coroutines on dspex's I/O loop: N in flight costs N small tasks, not N threads. Programs with
only a sync ``forward`` run in a thread pool of the same size. Either way, one failing item is
counted and reported, not fatal, until ``max_errors`` is exceeded.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import traceback
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from dspex.errors import ExecutionAborted
from dspex.settings import settings
from dspex.utils.asyncio_bridge import run_sync

__all__ = ["Outcome", "amap", "has_native_async", "run_parallel"]

log = logging.getLogger("dspex.parallel")


@dataclass(slots=True)
class Outcome:
    index: int
    value: Any = None
    error: BaseException | None = None


def has_native_async(program: Any) -> bool:
    """True when ``program.acall`` does not just push the sync ``forward`` into a thread."""
    from dspex.primitives.module import Module

    if not isinstance(program, Module):
        return asyncio.iscoroutinefunction(program)
    return type(program).aforward is not Module.aforward


async def amap(
    fn: Callable[[Any], Awaitable[Any]],
    items: Sequence[Any],
    *,
    concurrency: int,
    max_errors: int | None = None,
    on_done: Callable[[Outcome], None] | None = None,
    provide_traceback: bool = False,
) -> list[Outcome]:
    """Apply ``fn`` to every item with at most ``concurrency`` in flight; results in order.

    Raises ``ExecutionAborted`` (chained to the first error) once more than ``max_errors``
    items have failed; items not yet started are then never started.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency (num_threads) must be at least 1, got {concurrency}.")
    outcomes: list[Outcome | None] = [None] * len(items)
    next_index = 0
    errors = 0
    first_error: BaseException | None = None
    stop = False

    async def worker() -> None:
        nonlocal next_index, errors, first_error, stop
        while not stop:
            i = next_index
            if i >= len(items):
                return
            next_index += 1
            try:
                out = Outcome(i, value=await fn(items[i]))
            except Exception as exc:
                out = Outcome(i, error=exc)
                errors += 1
                if first_error is None:
                    first_error = exc
                if provide_traceback:
                    log.error("Error on item %d:\n%s", i, "".join(traceback.format_exception(exc)))
                else:
                    log.warning("Error on item %d: %s: %s", i, type(exc).__name__, exc)
                if max_errors is not None and errors > max_errors:
                    stop = True
            outcomes[i] = out
            if on_done is not None:
                on_done(out)

    workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, max(1, len(items))))]
    try:
        await asyncio.gather(*workers)
    finally:
        for w in workers:
            w.cancel()
    if stop:
        raise ExecutionAborted(
            f"Stopped after {errors} failed items (max_errors={max_errors}); the first error was "
            f"{type(first_error).__name__}: {first_error}.",
            errors=errors,
        ) from first_error
    return [o if o is not None else Outcome(i, error=RuntimeError("not run")) for i, o in enumerate(outcomes)]


def program_caller(program: Any, concurrency: int) -> tuple[Callable[[Any], Awaitable[Any]], ThreadPoolExecutor | None]:
    """An async ``call(inputs)`` for a program, native or through a bounded thread pool."""
    if has_native_async(program):

        async def call_async(inputs: Any) -> Any:
            if hasattr(program, "acall"):
                return await program.acall(**inputs)
            return await program(**inputs)

        return call_async, None
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="dspex-worker")

    async def call_thread(inputs: Any) -> Any:
        ctx = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, lambda: ctx.run(program, **inputs))

    return call_thread, pool


def run_parallel(
    program: Any,
    inputs: Sequence[Any],
    *,
    num_threads: int | None = None,
    max_errors: int | None = None,
    display_progress: bool = False,
    provide_traceback: bool | None = None,
) -> tuple[list[Any], list[Any], list[BaseException]]:
    """Call ``program(**x)`` for every ``x``: (results with None for failures, failed inputs, errors)."""
    concurrency = num_threads or settings.get("num_threads", 8)
    call, pool = program_caller(program, concurrency)
    bar = _progress(len(inputs), display_progress, "Processed")

    def done(out: Outcome) -> None:
        if bar is not None:
            bar.update(1)

    try:
        outcomes = run_sync(
            amap(
                call,
                list(inputs),
                concurrency=concurrency,
                max_errors=max_errors if max_errors is not None else settings.get("max_errors"),
                on_done=done,
                provide_traceback=bool(provide_traceback if provide_traceback is not None else settings.get("provide_traceback")),
            )
        )
    finally:
        if bar is not None:
            bar.close()
        if pool is not None:
            pool.shutdown(wait=False)
    results = [o.value if o.error is None else None for o in outcomes]
    failed = [inputs[o.index] for o in outcomes if o.error is not None]
    errors = [o.error for o in outcomes if o.error is not None]
    return results, failed, errors


def _progress(total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False)
