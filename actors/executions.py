"""Execution records of a Predictor, and the sinks that carry them to the store.

A ``Predictor`` keeps its last executions in memory (bounded) and hands every one to its
sinks without waiting: ``SinkDispatcher`` puts the record on a bounded queue drained by one
background thread, so a slow or failing sink never slows or fails a call. When the queue is
full the oldest record is dropped and counted (``SINK_DROPPED``): losing a log row is better
than blocking a prediction.

A sink is anything with ``record(execution) -> None`` (``ExecutionSink``). The store's
``ExecutionLog`` takes LM-call rows; ``ExecutionLogSink`` maps a program execution onto one.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from dspex import telemetry

from ._events import SINK_DROPPED

__all__ = ["Execution", "ExecutionLogSink", "ExecutionSink", "SinkDispatcher"]

log = logging.getLogger("dspex.actors.executions")


@dataclass(frozen=True, slots=True)
class Execution:
    """One call of a hosted program. ``at_s`` is a Unix time; ``latency_ms`` is None when the
    call was rejected before it ran."""

    execution_id: str
    program: str
    version: int | str
    predictor: str
    status: str  # "success" | "error" | "rejected"
    at_s: float
    latency_ms: float | None = None
    error_type: str | None = None
    error: str | None = None
    inputs: dict[str, Any] | None = None
    model: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class ExecutionSink(Protocol):
    """Receives every execution. Called from a background thread, one record at a time."""

    def record(self, execution: Execution) -> None: ...


class CallbackSink:
    """A sink from a plain function."""

    def __init__(self, fn: Callable[[Execution], None]) -> None:
        self.fn = fn

    def record(self, execution: Execution) -> None:
        self.fn(execution)


class ExecutionLogSink:
    """Writes program executions to the store's ``ExecutionLog`` (``dspex.store.execlog``).

    Give an ``ExecutionLog`` (same process), or nothing / a store URL: the sink then opens the
    store lazily in the process that records, so it can be shipped to predictors on other
    workers (with no URL: ``DSPEX_DATABASE_URL`` there, else the default file). A URL with a
    password is refused, since the sink travels in Ray's stored actor arguments: put such a
    URL in ``DSPEX_DATABASE_URL`` on the workers instead.

    The log's rows describe LM calls; a program execution maps onto one with ``model`` set to
    the program's LM model (or ``program:<name>`` when unknown) and ``version_id`` to the
    version. Rejected calls are not written (they never reached a model).
    """

    def __init__(self, execution_log: Any = None, *, url: str | None = None) -> None:
        if url is not None and _has_password(url):
            from dspex.errors import ConfigurationError

            raise ConfigurationError(
                "ExecutionLogSink(url=...) would carry the database password to every predictor; "
                "set DSPEX_DATABASE_URL on the workers and pass no url."
            )
        self.log = execution_log
        self.url = url
        self._given = execution_log is not None
        self._lock = threading.Lock()

    def _log(self) -> Any:
        if self.log is None:
            with self._lock:
                if self.log is None:
                    from dspex.store import ExecutionLog, open_store

                    self.log = ExecutionLog(open_store(self.url))
        return self.log

    def record(self, execution: Execution) -> None:
        if execution.status == "rejected":
            return
        from dspex.store.execlog import ExecutionRecord

        self._log().record(
            ExecutionRecord(
                model=execution.model or f"program:{execution.program}",
                status="success" if execution.status == "success" else "error",
                latency_ms=execution.latency_ms or 0.0,
                at_s=execution.at_s,
                program=execution.program,
                version_id=str(execution.version),
                error_type=execution.error_type,
            )
        )

    def __getstate__(self) -> dict[str, Any]:
        if self._given:
            from dspex.errors import ConfigurationError

            raise ConfigurationError(
                "An ExecutionLogSink around an ExecutionLog object cannot leave its process; build it "
                "with ExecutionLogSink() or ExecutionLogSink(url=...) to ship it to predictors."
            )
        return {"url": self.url}  # the receiver opens its own store

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.log = None
        self.url = state["url"]
        self._given = False
        self._lock = threading.Lock()


def _has_password(url: str) -> bool:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).password is not None
    except Exception:
        return False


class SinkDispatcher:
    """Hands executions to sinks off the caller's path (see the module docstring)."""

    def __init__(self, sinks: Sequence[ExecutionSink], *, max_queue: int = 10_000, component: str = "predictor") -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}.")
        self.sinks = list(sinks)
        self.max_queue = max_queue
        self.component = component
        self.dropped = 0
        self.failures = 0
        self.delivered = 0
        self._queue: deque[Execution] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None

    def submit(self, execution: Execution) -> None:
        """Queue ``execution`` for every sink. Never blocks, never raises."""
        if not self.sinks or self._closed:
            return
        dropped = False
        with self._cond:
            if len(self._queue) >= self.max_queue:
                self._queue.popleft()
                self.dropped += 1
                dropped = True
            self._queue.append(execution)
            self._idle.clear()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="dspex-exec-sinks", daemon=True)
                self._thread.start()
            self._cond.notify()
        if dropped:
            telemetry.emit(SINK_DROPPED, {"count": 1}, {"component": self.component})

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._idle.set()
                    self._cond.wait()
                if not self._queue and self._closed:
                    self._idle.set()
                    return
                execution = self._queue.popleft()
            for sink in self.sinks:
                try:
                    sink.record(execution)
                    self.delivered += 1
                except Exception:
                    self.failures += 1
                    log.warning("execution sink %r failed", sink, exc_info=True)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until the queue is empty (tests, shutdown). True when it emptied in time."""
        return self._idle.wait(timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def pending(self) -> int:
        return len(self._queue)
