"""The execution log: batches, flush on interval / size / close, bounded queue dropping the
oldest with a counted event, never blocking the caller, in-place totals, hooks."""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from dspex import telemetry
from dspex.store import ExecutionLog, ExecutionRecord, Store, open_store
from dspex.store.schema import ExecutionRow, ModelRow, ProgramModelRow, ProgramRow


def _rec(i: int = 0, **kw: Any) -> ExecutionRecord:
    base: dict[str, Any] = {"model": "m", "status": "success", "latency_ms": float(i), "at_s": time.time()}
    base.update(kw)
    return ExecutionRecord(**base)


def _count(store: Store) -> int:
    return int(store.read(lambda s: s.scalar(select(func.count()).select_from(ExecutionRow))) or 0)


@pytest.fixture
def events() -> Any:
    seen: list[tuple[tuple[str, ...], dict[str, Any]]] = []
    telemetry.attach_many(
        "test-execlog",
        [("dspex", "store", "execlog", "dropped"), ("dspex", "store", "execlog", "flush")],
        lambda ev, m, md, cfg: seen.append((ev, m)),
    )
    yield seen
    telemetry.detach("test-execlog")


def test_rows_are_written_in_batches_and_on_close(store: Store, events: Any) -> None:
    log = ExecutionLog(store, flush_interval_ms=60_000, batch_rows=10)
    for i in range(25):
        log.record(_rec(i, program="qa", input_tokens=3, output_tokens=4, cost_usd=0.5, hop=1, error_type=None))
    # full batches go out without waiting for the (one minute) interval
    deadline = time.time() + 5
    while _count(store) < 20 and time.time() < deadline:
        time.sleep(0.01)
    assert _count(store) >= 20
    log.close()
    assert _count(store) == 25
    assert log.written == 25 and log.pending() == 0
    flushes = [m["rows"] for ev, m in events if ev[-1] == "flush"]
    assert sum(flushes) == 25 and max(flushes) <= 10
    row = store.read(lambda s: s.scalars(select(ExecutionRow).where(ExecutionRow.latency_ms == 7.0)).one())
    assert (row.program, row.input_tokens, row.output_tokens, row.cost_usd, row.hop) == ("qa", 3, 4, 0.5, 1)
    assert row.created_at.tzinfo is not None
    log.record(_rec())  # after close: ignored, not raised
    assert log.pending() == 0


def test_interval_flush(store: Store) -> None:
    log = ExecutionLog(store, flush_interval_ms=20, batch_rows=1000)
    log.record(_rec())
    deadline = time.time() + 5
    while _count(store) < 1 and time.time() < deadline:
        time.sleep(0.01)
    assert _count(store) == 1
    log.close()


def test_full_queue_drops_oldest_counts_it_and_never_blocks(sqlite_url: str, events: Any) -> None:
    store = open_store(sqlite_url, shared=False, busy_timeout_ms=5000)
    log = ExecutionLog(store, flush_interval_ms=10, batch_rows=5, max_queue_rows=20)
    # Hold the database's write lock so no flush can finish: record() must still return at once.
    other = sqlite3.connect(str(store.url.database), isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    try:
        t0 = time.perf_counter()
        for i in range(100):
            log.record(_rec(i))
        elapsed = time.perf_counter() - t0
        assert elapsed < 0.05, f"record() blocked for {elapsed:.3f}s"
        assert log.pending() <= 20
    finally:
        other.execute("ROLLBACK")
        other.close()
    log.close()
    # at most 20 queued plus one batch (5) in flight survive; the rest were dropped and counted
    written = _count(store)
    assert written + log.dropped == 100
    assert 20 <= written <= 25
    lat = sorted(store.read(lambda s: s.scalars(select(ExecutionRow.latency_ms)).all()))
    assert lat[-1] == 99.0  # the newest rows are the ones kept
    dropped_events = sum(m["count"] for ev, m in events if ev[-1] == "dropped")
    assert dropped_events == log.dropped
    store.close()


def test_totals_of_assignments_are_incremented_in_place(store: Store) -> None:
    def seed(s: Session) -> str:
        p, m = ProgramRow(name="qa"), ModelRow(name="m", provider="openai", model_name="x")
        s.add_all([p, m])
        s.flush()
        pm = ProgramModelRow(program_id=p.id, model_id=m.id, total_requests=10, successful_requests=9,
                             total_cost_usd=1.0)
        s.add(pm)
        s.flush()
        return pm.id

    aid = store.write(seed)
    log = ExecutionLog(store, flush_interval_ms=60_000, batch_rows=4)
    for i in range(6):
        log.record(_rec(i, assignment_id=aid, status="success" if i % 3 else "error", cost_usd=0.25))
    # another writer adds to the same totals between our batches: nothing is overwritten
    store.write(lambda s: s.execute(update(ProgramModelRow).values(total_requests=ProgramModelRow.total_requests + 100)))
    log.close()
    pm = store.read(lambda s: s.get(ProgramModelRow, aid))
    assert pm is not None
    assert (pm.total_requests, pm.successful_requests) == (116, 13)
    assert pm.total_cost_usd == pytest.approx(2.5)


class _Hook:
    def __init__(self) -> None:
        self.value = 0
        self.written: list[int] = []
        self.lock = threading.Lock()

    def dirty(self) -> bool:
        return self.value != (self.written[-1] if self.written else 0)

    def write(self, session: Session) -> None:
        self.written.append(self.value)


def test_hooks_run_in_flushes_only_when_dirty(store: Store) -> None:
    hook = _Hook()
    log = ExecutionLog(store, flush_interval_ms=10, batch_rows=100)
    log.add_hook(hook)
    time.sleep(0.1)
    assert hook.written == []  # nothing to write, no transaction
    hook.value = 3
    deadline = time.time() + 5
    while not hook.written and time.time() < deadline:
        time.sleep(0.01)
    assert hook.written == [3]
    log.close()


def test_bad_settings_are_refused(store: Store) -> None:
    with pytest.raises(ValueError):
        ExecutionLog(store, batch_rows=0)
    with pytest.raises(ValueError):
        ExecutionLog(store, batch_rows=10, max_queue_rows=5)


def test_the_log_thread_ends_when_its_store_is_closed(sqlite_url: str) -> None:
    store = open_store(sqlite_url, shared=False)
    log = ExecutionLog(store, flush_interval_ms=10, batch_rows=100)
    log.record(_rec())
    deadline = time.time() + 5
    while _count(store) < 1 and time.time() < deadline:
        time.sleep(0.01)
    thread = log._thread
    store.close()
    assert thread is not None
    thread.join(5)
    assert not thread.is_alive()
    log.record(_rec())  # ignored, never raised
    log.close()
