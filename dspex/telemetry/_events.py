"""Events and spans in the shape of Erlang's ``:telemetry``.

An event name is a tuple of strings, e.g. ``("dspex", "predict", "stop")``. Handlers are
attached by a unique id to a list of event names and called synchronously, in the emitting
thread, as ``handler(event, measurements, metadata, config)``. A handler that raises is
detached and a warning is logged: telemetry never breaks the call it observes.

``span(event, **metadata)`` emits ``event + ("start",)`` on entry and ``event + ("stop",)``
(or ``event + ("exception",)``) on exit, with ``duration_s`` and, when anyone listens, trace,
span and parent ids so exporters can rebuild the tree (program -> module -> predict -> LM call).

Cost: when nothing is attached to an event, ``emit`` is one dict lookup (~25 ns over an empty
call) and ``span`` returns a shared no-op span, reading no clock (~220 ns for enter + exit);
measured in benchmarks/telemetry.py. A handler that raises is detached and reported as
``("dspex", "telemetry", "handler_detached")``.
"""

from __future__ import annotations

import contextvars
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

__all__ = [
    "Event",
    "Handler",
    "Span",
    "attach",
    "attach_many",
    "current_span",
    "detach",
    "emit",
    "list_handlers",
    "span",
]

log = logging.getLogger("dspex.telemetry")

Event = tuple[str, ...]
_HANDLER_DETACHED: Event = ("dspex", "telemetry", "handler_detached")  # names.TELEMETRY_HANDLER_DETACHED
Handler = Callable[[Event, dict[str, Any], dict[str, Any], Any], None]


@dataclass(frozen=True)
class _Attached:
    handler_id: str
    events: tuple[Event, ...]
    fn: Handler
    config: Any


_lock = threading.Lock()
# event -> tuple of attachments. Replaced wholesale on attach/detach (copy-on-write), so emit
# reads it without a lock.
_table: dict[Event, tuple[_Attached, ...]] = {}
_by_id: dict[str, _Attached] = {}


def attach(handler_id: str, event: Event, fn: Handler, config: Any = None) -> None:
    """Attach ``fn`` to one event under a unique ``handler_id``."""
    attach_many(handler_id, [event], fn, config)


def attach_many(handler_id: str, events: Iterable[Event], fn: Handler, config: Any = None) -> None:
    """Attach ``fn`` to several events under one unique ``handler_id``.

    Raises ValueError when the id is taken (as ``:telemetry`` returns ``already_exists``).
    """
    evs = tuple(tuple(e) for e in events)
    for e in evs:
        if not e or not all(isinstance(p, str) for p in e):
            raise ValueError(f"An event name is a non-empty tuple of strings, got {e!r}.")
    global _table
    with _lock:
        if handler_id in _by_id:
            raise ValueError(
                f"A telemetry handler with id {handler_id!r} is already attached; "
                "detach it first or pick another id."
            )
        att = _Attached(handler_id, evs, fn, config)
        _by_id[handler_id] = att
        table = dict(_table)
        for e in evs:
            table[e] = (*table.get(e, ()), att)
        _table = table


def detach(handler_id: str) -> bool:
    """Detach a handler; returns False when no handler had that id."""
    global _table
    with _lock:
        att = _by_id.pop(handler_id, None)
        if att is None:
            return False
        table = dict(_table)
        for e in att.events:
            rest = tuple(a for a in table.get(e, ()) if a.handler_id != handler_id)
            if rest:
                table[e] = rest
            else:
                table.pop(e, None)
        _table = table
        return True


def list_handlers(prefix: Event = ()) -> list[tuple[str, tuple[Event, ...]]]:
    """Attached handlers whose events start with ``prefix``: (id, events)."""
    n = len(prefix)
    return [
        (a.handler_id, a.events)
        for a in list(_by_id.values())
        if any(e[:n] == prefix for e in a.events)
    ]


def has_handlers(event: Event) -> bool:
    return event in _table


def emit(event: Event, measurements: Mapping[str, Any], metadata: Mapping[str, Any] | None = None) -> None:
    """Call every handler attached to ``event``. Cheap when none is."""
    handlers = _table.get(event)
    if not handlers:
        return
    _dispatch(handlers, event, dict(measurements), dict(metadata) if metadata else {})


def _dispatch(
    handlers: tuple[_Attached, ...], event: Event, measurements: dict[str, Any], metadata: dict[str, Any]
) -> None:
    for att in handlers:
        try:
            att.fn(event, measurements, metadata, att.config)
        except Exception:
            detach(att.handler_id)
            log.warning(
                "telemetry handler %r raised on event %s and was detached",
                att.handler_id,
                ".".join(event),
                exc_info=True,
            )
            # Tell the metrics (dspex_telemetry_handler_failures_total). Terminates: a handler
            # that raises on this event is detached in turn, and there are finitely many.
            failed = _table.get(_HANDLER_DETACHED)
            if failed:
                _dispatch(failed, _HANDLER_DETACHED, {"count": 1}, {"handler": att.handler_id, "event": event})


_phase_cache: dict[Event, tuple[Event, Event, Event]] = {}


def _phases(event: Event) -> tuple[Event, Event, Event]:
    """(start, stop, exception) names of a span, built once per span name."""
    p = _phase_cache.get(event)
    if p is None:
        p = ((*event, "start"), (*event, "stop"), (*event, "exception"))
        if len(_phase_cache) < 10_000:  # span names are code constants; bound it anyway
            _phase_cache[event] = p
    return p


_current: contextvars.ContextVar[Span | None] = contextvars.ContextVar("dspex_span", default=None)


def current_span() -> Span | None:
    """The innermost live span in this thread / asyncio task, if anyone is listening."""
    return _current.get()


class Span:
    """A span over ``event``. Use as ``with span(...) as s:`` or ``async with``.

    ``s.set(**measurements)`` adds measurements to the stop event (tokens, cost, ...);
    ``s.meta(**metadata)`` adds metadata to it.
    """

    __slots__ = (
        "_active",
        "_start",
        "_token",
        "event",
        "measurements",
        "metadata",
        "parent_id",
        "span_id",
        "trace_id",
    )

    def __init__(self, event: Event, metadata: dict[str, Any]) -> None:
        self.event = event
        self.metadata = metadata
        self.measurements: dict[str, Any] = {}
        self._active = False
        self._token: contextvars.Token[Span | None] | None = None
        self.span_id = 0
        self.trace_id = 0
        self.parent_id: int | None = None
        self._start = 0.0

    def set(self, **measurements: Any) -> None:
        self.measurements.update(measurements)

    def meta(self, **metadata: Any) -> None:
        self.metadata.update(metadata)

    def __enter__(self) -> Span:
        t = _table
        start, stop, exception = _phases(self.event)
        if start not in t and stop not in t and exception not in t:
            return self
        self._active = True
        parent = _current.get()
        self.span_id = random.getrandbits(64) or 1
        if parent is not None:
            self.trace_id = parent.trace_id
            self.parent_id = parent.span_id
        else:
            self.trace_id = random.getrandbits(128) or 1
        self.metadata["trace_id"] = self.trace_id
        self.metadata["span_id"] = self.span_id
        self.metadata["parent_id"] = self.parent_id
        self._token = _current.set(self)
        self._start = time.perf_counter()
        h = t.get(start)
        if h:
            _dispatch(h, start, {"system_time": time.time()}, dict(self.metadata))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._active:
            return
        duration = time.perf_counter() - self._start
        if self._token is not None:
            try:
                _current.reset(self._token)
            except ValueError:  # exited in another context (generator closed elsewhere)
                pass
        self._active = False
        measurements = {"duration_s": duration, **self.measurements}
        _start, stop, exception = _phases(self.event)
        if exc is not None:
            ev = exception
            md = {**self.metadata, "kind": exc_type.__name__ if exc_type else "", "reason": exc}
        else:
            ev = stop
            md = dict(self.metadata)
        h = _table.get(ev)
        if h:
            _dispatch(h, ev, measurements, md)

    async def __aenter__(self) -> Span:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class _NoopSpan(Span):
    """What ``span`` returns when nothing listens to the span's events: one shared, stateless
    object whose methods do nothing, so an unobserved span costs a lookup and no allocation."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(("dspex", "noop"), {})

    def set(self, **measurements: Any) -> None:
        pass

    def meta(self, **metadata: Any) -> None:
        pass

    def __enter__(self) -> Span:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pass


_NOOP = _NoopSpan()


def span(event: Event, **metadata: Any) -> Span:
    """A span over ``event`` (a context manager, sync and async). See the module docstring.

    When no handler is attached to any of its start/stop/exception events, this returns a
    shared no-op span (``set``/``meta`` do nothing): handlers attached while it runs miss it.
    """
    t = _table
    start, stop, exception = _phases(event)
    if start not in t and stop not in t and exception not in t:
        return _NOOP
    return Span(event, metadata)
