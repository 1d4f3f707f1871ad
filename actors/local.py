"""Local mode: an actor object in this process behind Ray's calling convention.

``LocalActor(obj).method.remote(*args)`` starts ``obj.method(*args)`` as an asyncio task on
the running loop and returns it (awaitable, like an ``ObjectRef``), so code written against
actor handles — ``ProgramClient``, the ``HotSwapSupervisor``, the shared signature cache —
runs unchanged on plain objects: in unit tests, and in a single process without Ray. Method
arguments are not copied (Ray would pickle them); callers must not mutate them afterwards.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

__all__ = ["LocalActor"]


class _Method:
    __slots__ = ("_fn", "_name")

    def __init__(self, fn: Any, name: str) -> None:
        self._fn = fn
        self._name = name

    def remote(self, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        try:
            result = self._fn(*args, **kwargs)
        except BaseException as exc:
            fut: asyncio.Future[Any] = loop.create_future()
            fut.set_exception(exc)
            return fut
        if inspect.isawaitable(result):
            return asyncio.ensure_future(result)
        done: asyncio.Future[Any] = loop.create_future()
        done.set_result(result)
        return done


class LocalActor:
    """Wraps ``obj`` so ``handle.name.remote(...)`` calls ``obj.name(...)`` (see module docstring)."""

    def __init__(self, obj: Any) -> None:
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "killed", False)

    @property
    def obj(self) -> Any:
        return self._obj

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("_"):
            raise AttributeError(name)
        if self.killed:
            from dspex.errors import DeploymentError

            raise DeploymentError(f"The local actor {type(self._obj).__name__} was killed.")
        fn = getattr(self._obj, name)
        if not callable(fn):
            raise AttributeError(f"{type(self._obj).__name__}.{name} is not a method")
        return _Method(fn, name)

    def kill(self) -> None:
        object.__setattr__(self, "killed", True)

    def __repr__(self) -> str:
        return f"LocalActor({type(self._obj).__name__})"
