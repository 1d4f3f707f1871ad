"""Global configuration: ``configure(...)`` and ``context(...)``, safe across threads and tasks.

``configure`` sets process-wide defaults (under a lock; any thread may call it — DSPy allows
only the thread that first configured it, dspex relaxes that). ``context`` overrides them for
the current thread or asyncio task only, through a ``ContextVar``, so concurrent tasks with
different LMs never see each other's settings. Threads started by dspex (Evaluate, batch,
optimizers) copy the caller's context.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["Settings", "configure", "context", "settings"]

_DEFAULTS: dict[str, Any] = {
    "lm": None,
    "adapter": None,
    "rm": None,
    "trace": None,  # a list while an optimizer records traces, else None
    "callbacks": [],
    "async_max_workers": 8,
    "num_threads": 8,
    "max_errors": 10,
    "max_trace_size": 10_000,
    "max_history_size": 10_000,
    "track_usage": False,
    "usage_tracker": None,
    "disable_history": False,
    "caller_predict": None,
    "provide_traceback": False,
    "send_stream": None,
    "stream_listeners": [],
    "refine_hint": None,
}

_overrides: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "dspex_settings", default=None
)


class Settings:
    """Read settings as attributes (``settings.lm``) or with ``get``; write with ``configure``."""

    def __init__(self) -> None:
        object.__setattr__(self, "_lock", threading.RLock())
        object.__setattr__(self, "_global", dict(_DEFAULTS))

    def get(self, key: str, default: Any = None) -> Any:
        ov = _overrides.get()
        if ov is not None and key in ov:
            return ov[key]
        return self._global.get(key, default)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        ov = _overrides.get()
        if ov is not None and key in ov:
            return ov[key]
        try:
            return self._global[key]
        except KeyError:
            raise AttributeError(f"dspex has no setting {key!r}.") from None

    def __getitem__(self, key: str) -> Any:
        return self.__getattr__(key)

    def __setattr__(self, key: str, value: Any) -> None:
        self.configure(**{key: value})

    def __contains__(self, key: str) -> bool:
        ov = _overrides.get()
        return (ov is not None and key in ov) or key in self._global

    def configure(self, **kwargs: Any) -> None:
        with self._lock:
            new = dict(self._global)
            new.update(kwargs)
            object.__setattr__(self, "_global", new)

    @contextlib.contextmanager
    def context(self, **kwargs: Any) -> Iterator[None]:
        ov = _overrides.get()
        merged = dict(ov) if ov else {}
        merged.update(kwargs)
        token = _overrides.set(merged)
        try:
            yield
        finally:
            _overrides.reset(token)

    def copy(self) -> dict[str, Any]:
        """The effective settings in this context, as a dict."""
        out = dict(self._global)
        ov = _overrides.get()
        if ov:
            out.update(ov)
        return out

    def reset(self) -> None:
        """Back to the defaults (for tests)."""
        with self._lock:
            object.__setattr__(self, "_global", dict(_DEFAULTS))

    @property
    def config(self) -> dict[str, Any]:
        return self.copy()

    def __repr__(self) -> str:
        keys = {k: type(v).__name__ for k, v in self.copy().items() if v not in (None, [], False)}
        return f"Settings({keys})"


settings = Settings()


def configure(**kwargs: Any) -> None:
    """Set process-wide defaults, e.g. ``configure(lm=dspex.LM("openai/gpt-4o-mini"))``."""
    settings.configure(**kwargs)


def context(**kwargs: Any) -> contextlib.AbstractContextManager[None]:
    """Override settings for the current thread / asyncio task: ``with context(lm=lm2): ...``."""
    return settings.context(**kwargs)
