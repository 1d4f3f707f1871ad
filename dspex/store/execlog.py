"""The execution log, written in batches off the hot path.

``record()`` appends to a bounded in-memory queue and returns at once: it never touches the
database and never blocks on it. A background thread flushes every ``flush_interval_ms`` or
as soon as ``batch_rows`` rows wait, writing each batch in one transaction: the execution
rows, plus the per-assignment totals (requests, successes, cost) incremented *in place*
(``total = total + n``), so any number of processes can add to the same totals without
overwriting each other. When the queue is full the oldest row is dropped and counted
(``("dspex", "store", "execlog", "dropped")``): losing a log row is better than slowing or
failing the call it describes. ``close()`` (also at interpreter exit) flushes what is left.

If the database is unreachable the batch goes back to the front of the queue (still bounded)
and the next flush tries again.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import insert, update
from sqlalchemy.orm import Session

from dspex import telemetry
from dspex.errors import DSPexError
from dspex.store.engine import Store
from dspex.store.schema import ExecutionRow, ProgramModelRow
from dspex.telemetry import names

__all__ = ["ExecutionLog", "ExecutionRecord", "FlushHook"]

log = logging.getLogger("dspex.store.execlog")

_DROPPED = names.EXECLOG_DROPPED
_FLUSH = names.EXECLOG_FLUSH
_FLUSH_ERROR = names.EXECLOG_FLUSH_ERROR


@dataclass(frozen=True, slots=True)
class ExecutionRecord:
    """One LM call attempt. ``at_s`` is a Unix time in seconds."""

    model: str
    status: str  # "success" | "error"
    latency_ms: float
    at_s: float
    program: str | None = None
    version_id: str | None = None
    model_id: str | None = None
    assignment_id: str | None = None
    error_type: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    hop: int = 0

    def row(self) -> dict[str, Any]:
        return {
            "created_at": datetime.fromtimestamp(self.at_s, UTC),
            "program": self.program,
            "version_id": self.version_id,
            "model": self.model,
            "model_id": self.model_id,
            "assignment_id": self.assignment_id,
            "status": self.status,
            "error_type": self.error_type,
            "latency_ms": float(self.latency_ms),
            "input_tokens": int(self.input_tokens),
            "output_tokens": int(self.output_tokens),
            "cost_usd": float(self.cost_usd),
            "hop": int(self.hop),
        }


class FlushHook(Protocol):
    """An extra writer run inside a flush's transaction (e.g. the registry's model metrics).

    ``dirty()`` says whether it has anything to write (checked every tick, so keep it cheap);
    ``write(session)`` writes absolute values, so a retried transaction can run it again.
    """

    def dirty(self) -> bool: ...

    def write(self, session: Session) -> None: ...


class ExecutionLog:
    """A batched, bounded, non-blocking writer of ``ExecutionRecord`` rows."""

    def __init__(
        self,
        store: Store,
        *,
        flush_interval_ms: float = 250.0,
        batch_rows: int = 500,
        max_queue_rows: int = 20_000,
        hooks: list[FlushHook] | None = None,
    ) -> None:
        if flush_interval_ms <= 0 or batch_rows <= 0 or max_queue_rows < batch_rows:
            raise ValueError(
                "ExecutionLog needs flush_interval_ms > 0, batch_rows > 0 and max_queue_rows >= batch_rows."
            )
        self.store = store
        self.flush_interval_s = flush_interval_ms / 1000.0
        self.batch_rows = int(batch_rows)
        self.max_queue_rows = int(max_queue_rows)
        self.hooks: list[FlushHook] = list(hooks or [])
        self._queue: deque[ExecutionRecord] = deque()
        self._lock = threading.Lock()  # guards the queue; never held while writing
        self._flush_lock = threading.Lock()  # one flush at a time, in order
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        #: rows dropped because the queue was full, since creation
        self.dropped = 0
        #: rows written, since creation
        self.written = 0
        _live.add(self)

    # -- hot path -------------------------------------------------------------------------
    def record(self, rec: ExecutionRecord) -> None:
        """Queue one row. O(1), never blocks on the database, never raises on a full queue."""
        dropped = False
        with self._lock:
            if self._closed:
                return
            if len(self._queue) >= self.max_queue_rows:
                self._queue.popleft()
                self.dropped += 1
                dropped = True
            self._queue.append(rec)
            size = len(self._queue)
            if self._thread is None:
                self._start()
        if dropped:
            telemetry.emit(_DROPPED, {"count": 1, "total": self.dropped}, {"queue_rows": size})
        if size >= self.batch_rows:
            self._wake.set()

    def add_hook(self, hook: FlushHook) -> None:
        """Run ``hook`` in every flush from now on (and start the flushing thread)."""
        with self._lock:
            if hook not in self.hooks:
                self.hooks.append(hook)
            if self._thread is None and not self._closed:
                self._start()

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    # -- background flushing --------------------------------------------------------------
    def _start(self) -> None:
        t = threading.Thread(target=self._run, name="dspex-execlog", daemon=True)
        self._thread = t
        t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            if self.store.closed:  # nothing can be written any more; the log is done
                with self._lock:
                    self._closed = True
                    lost = len(self._queue)
                    self._queue.clear()
                    self.dropped += lost
                if lost:
                    log.error("execution log dropped %d rows: its store was closed before the log", lost)
                    telemetry.emit(_DROPPED, {"count": lost, "total": self.dropped}, {"queue_rows": 0})
                _live.discard(self)
                return
            try:
                self.flush()
            except Exception:  # logged and counted in flush; the thread keeps going
                time.sleep(min(1.0, self.flush_interval_s))

    def flush(self) -> int:
        """Write everything queued now (in batches of ``batch_rows``). Returns rows written."""
        total = 0
        with self._flush_lock:
            while True:
                with self._lock:
                    n = min(len(self._queue), self.batch_rows)
                    batch = [self._queue.popleft() for _ in range(n)]
                if not batch and total:
                    break
                try:
                    self._write(batch)
                except Exception as exc:
                    self._requeue(batch)
                    telemetry.emit(_FLUSH_ERROR, {"rows": len(batch)}, {"error": type(exc).__name__})
                    log.warning("execution log flush of %d rows failed: %s", len(batch), exc)
                    raise
                total += len(batch)
                if len(batch) < self.batch_rows:
                    break
        return total

    def _requeue(self, batch: list[ExecutionRecord]) -> None:
        with self._lock:
            room = self.max_queue_rows - len(self._queue)
            keep = batch[-room:] if room > 0 else []
            lost = len(batch) - len(keep)
            self._queue.extendleft(reversed(keep))
            self.dropped += lost
        if lost:
            telemetry.emit(_DROPPED, {"count": lost, "total": self.dropped}, {"queue_rows": self.max_queue_rows})

    def _write(self, batch: list[ExecutionRecord]) -> None:
        t0 = time.perf_counter()
        rows = [r.row() for r in batch]
        totals: dict[str, list[float]] = {}
        for r in batch:
            if r.assignment_id is not None:
                t = totals.setdefault(r.assignment_id, [0, 0, 0.0])
                t[0] += 1
                t[1] += r.status == "success"
                t[2] += r.cost_usd
        hooks = [h for h in list(self.hooks) if h.dirty()]

        def fn(s: Session) -> None:
            if rows:
                s.execute(insert(ExecutionRow), rows)
            for aid in sorted(totals):  # a fixed order, so concurrent writers cannot deadlock
                n, ok, cost = totals[aid]
                s.execute(
                    update(ProgramModelRow)
                    .where(ProgramModelRow.id == aid)
                    .values(
                        total_requests=ProgramModelRow.total_requests + int(n),
                        successful_requests=ProgramModelRow.successful_requests + int(ok),
                        total_cost_usd=ProgramModelRow.total_cost_usd + float(cost),
                    )
                )
            for hook in hooks:
                hook.write(s)

        if not rows and not hooks:
            return
        self.store.write(fn)
        self.written += len(rows)
        if rows:
            telemetry.emit(_FLUSH, {"rows": len(rows), "duration_s": time.perf_counter() - t0}, {})

    # -- lifecycle ------------------------------------------------------------------------
    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the thread and flush what is queued. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        self._stop.set()
        self._wake.set()
        if thread is not None:
            thread.join(timeout_s)
        try:
            self.flush()
        except DSPexError as exc:
            log.error("execution log could not flush %d rows at close: %s", self.pending(), exc)
        _live.discard(self)

    def __enter__(self) -> ExecutionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_live: weakref.WeakSet[ExecutionLog] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for log_ in list(_live):
        try:
            log_.close(timeout_s=2.0)
        except Exception:  # at exit, a failed flush must not mask the real exit status
            pass
