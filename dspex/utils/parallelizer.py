"""``Parallel`` and ``asyncify`` (DSPy's helpers for running programs concurrently)."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from typing import Any

from dspex.evaluate.parallel import Outcome, amap
from dspex.settings import settings
from dspex.utils.asyncio_bridge import run_sync

__all__ = ["Parallel", "asyncify"]


def asyncify(program: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """An async version of a sync callable: ``await asyncify(program)(**inputs)``."""

    async def call(*args: Any, **kwargs: Any) -> Any:
        ctx = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, lambda: ctx.run(program, *args, **kwargs))

    return call


class Parallel:
    """Run ``[(module, example_or_dict), ...]`` concurrently; results in order, None for failures."""

    def __init__(
        self,
        num_threads: int | None = None,
        max_errors: int | None = None,
        access_examples: bool = True,
        return_failed_examples: bool = False,
        provide_traceback: bool | None = None,
        disable_progress_bar: bool = False,
    ) -> None:
        self.num_threads = num_threads or settings.get("num_threads", 8)
        self.max_errors = max_errors if max_errors is not None else settings.get("max_errors")
        self.access_examples = access_examples
        self.return_failed_examples = return_failed_examples
        self.provide_traceback = provide_traceback
        self.disable_progress_bar = disable_progress_bar

    def __call__(self, exec_pairs: list[tuple[Any, Any]], num_threads: int | None = None) -> Any:
        from dspex.evaluate.parallel import has_native_async
        from dspex.primitives.example import Example

        concurrency = num_threads or self.num_threads

        async def run_one(pair: tuple[Any, Any]) -> Any:
            module, example = pair
            if isinstance(example, Example):
                args: dict[str, Any] = dict(example.inputs().items()) if self.access_examples and example._input_keys else dict(example.items())
            elif isinstance(example, dict):
                args = example
            elif isinstance(example, list | tuple):
                return await asyncify(module)(*example)
            else:
                return await asyncify(module)(example)
            if has_native_async(module):
                return await module.acall(**args)
            return await asyncify(module)(**args)

        outcomes: list[Outcome] = run_sync(
            amap(
                run_one,
                exec_pairs,
                concurrency=concurrency,
                max_errors=self.max_errors,
                provide_traceback=bool(self.provide_traceback),
            )
        )
        results = [o.value if o.error is None else None for o in outcomes]
        if self.return_failed_examples:
            failed = [exec_pairs[o.index][1] for o in outcomes if o.error is not None]
            errors = [o.error for o in outcomes if o.error is not None]
            return results, failed, errors
        return results
