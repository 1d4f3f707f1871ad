"""DSPy's callbacks: ``BaseCallback`` hooks around modules, LMs, adapters, tools and Evaluate.

Callbacks come from ``dspex.configure(callbacks=[...])`` (global) and from an instance's own
``callbacks`` list. A callback that raises is logged and never breaks the call. When no
callback is registered the hooks cost one settings read per call.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from dspex.settings import settings

__all__ = ["BaseCallback", "active_callbacks", "with_callbacks", "with_callbacks_async"]

log = logging.getLogger("dspex.callback")
T = TypeVar("T")



class BaseCallback:
    """Override the hooks you need. ``call_id`` pairs a start with its end."""

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        pass

    def on_module_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        pass

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        pass

    def on_lm_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        pass

    def on_adapter_format_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        pass

    def on_adapter_format_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        pass

    def on_adapter_parse_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        pass

    def on_adapter_parse_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        pass

    def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        pass

    def on_tool_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        pass

    def on_evaluate_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        pass

    def on_evaluate_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        pass


def active_callbacks(instance: Any) -> list[BaseCallback]:
    glob = settings.get("callbacks")
    own = getattr(instance, "callbacks", None)
    if not glob and not own:
        return []
    return [*(glob or []), *(own or [])]


def _start(cbs: list[BaseCallback], kind: str, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
    for cb in cbs:
        try:
            getattr(cb, f"on_{kind}_start")(call_id=call_id, instance=instance, inputs=inputs)
        except Exception:
            log.warning("callback %r raised in on_%s_start", cb, kind, exc_info=True)


def _end(cbs: list[BaseCallback], kind: str, call_id: str, outputs: Any, exc: Exception | None) -> None:
    for cb in cbs:
        try:
            getattr(cb, f"on_{kind}_end")(call_id=call_id, outputs=outputs, exception=exc)
        except Exception:
            log.warning("callback %r raised in on_%s_end", cb, kind, exc_info=True)


def with_callbacks(cbs: list[BaseCallback], kind: str, instance: Any, inputs: dict[str, Any], fn: Callable[[], T]) -> T:
    call_id = uuid.uuid4().hex
    _start(cbs, kind, call_id, instance, inputs)
    try:
        out = fn()
    except Exception as exc:
        _end(cbs, kind, call_id, None, exc)
        raise
    _end(cbs, kind, call_id, out, None)
    return out


async def with_callbacks_async(
    cbs: list[BaseCallback], kind: str, instance: Any, inputs: dict[str, Any], fn: Callable[[], Awaitable[T]]
) -> T:
    call_id = uuid.uuid4().hex
    _start(cbs, kind, call_id, instance, inputs)
    try:
        out = await fn()
    except Exception as exc:
        _end(cbs, kind, call_id, None, exc)
        raise
    _end(cbs, kind, call_id, out, None)
    return out
