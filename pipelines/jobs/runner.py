"""Running one claimed job: the same code in this process, in a thread, or inside a Ray task.

``run_claimed(store, job, spec)`` starts a heartbeat thread (so a rescuer elsewhere can tell
this worker is alive), calls the worker function, and records the outcome through the state
machine with compare-and-set on (state=executing, attempt): if the job was cancelled, timed
out or rescued meanwhile, the late outcome is dropped, never applied twice. The heartbeat
thread also enforces the kind's ``timeout_s`` (the attempt fails; cooperative workers see
``ctx.should_stop()``) and notices a cancellation (the heartbeat finds the job moved).
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dspex.errors import DSPexError
from dspex.store.engine import Store
from dspex.store.jobs import AttemptEnd, JobRecord, JobState, JobStore
from dspex.telemetry import emit, span
from dspex.telemetry import names as n

from . import machine
from .registry import JobContext, WorkerSpec

__all__ = ["Outcome", "default_worker_id", "error_text", "finish", "run_claimed"]

log = logging.getLogger("dspex.jobs")

#: emitted when an outcome arrives after the job moved on (cancelled, rescued, timed out)
STALE_EVENT = ("dspex", "job", "stale_outcome")
HEARTBEAT_LOST_EVENT = ("dspex", "job", "heartbeat_lost")


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Outcome:
    """What happened to one attempt. ``recorded`` is False when the job had moved on (the
    outcome was dropped); ``job`` is then the record as the attempt started."""

    job: JobRecord
    state: JobState
    recorded: bool
    error: str | None = None


def error_text(exc: BaseException) -> str:
    """One line naming the error: ``Type: message`` (dspex errors carry no secrets)."""
    msg = exc.message if isinstance(exc, DSPexError) else str(exc)
    return f"{type(exc).__name__}: {msg}".strip()


def _as_result(kind: str, value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    data = dict(value) if isinstance(value, Mapping) else {"value": value}
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the {kind!r} worker returned a result that is not JSON: {exc}") from exc
    return data


class _Heartbeat(threading.Thread):
    """Beats every ``interval_s`` while the attempt runs; stops the attempt on timeout or when
    the job is no longer this attempt's."""

    def __init__(
        self,
        jobs: JobStore,
        job: JobRecord,
        ctx: JobContext,
        *,
        interval_s: float,
        timeout_s: float | None,
        clock: Callable[[], float],
        started_s: float,
    ) -> None:
        super().__init__(name=f"dspex-job-heartbeat:{job.id}", daemon=True)
        self.jobs, self.job, self.ctx = jobs, job, ctx
        self.interval_s, self.timeout_s = interval_s, timeout_s
        self.clock, self.started_s = clock, started_s
        self.done = threading.Event()
        self.timed_out = False

    def run(self) -> None:
        while not self.done.wait(self.interval_s):
            now = self.clock()
            if self.timeout_s is not None and now - self.started_s > self.timeout_s:
                self.timed_out = True
                self.ctx.stop_event.set()
                return
            try:
                alive = self.jobs.heartbeat(self.job.id, attempt=self.job.attempt, now=now)
            except Exception as exc:  # the store is unreachable: keep working, beat again later
                log.warning("heartbeat of job %s failed: %s", self.job.id, error_text(exc))
                continue
            if not alive:
                emit(HEARTBEAT_LOST_EVENT, {"count": 1}, {"kind": self.job.kind, "job_id": self.job.id})
                self.ctx.stop_event.set()
                return

    def stop(self) -> None:
        self.done.set()


def run_claimed(
    store: Store,
    job: JobRecord,
    spec: WorkerSpec,
    *,
    clock: Callable[[], float] = time.time,
    heartbeat_interval_s: float = 5.0,
    rng: Callable[[], float] = random.random,
) -> Outcome:
    """Run a job already claimed (state executing, this attempt) and record how it ended."""
    jobs = JobStore(store)
    ctx = JobContext(job=job, store=store, clock=clock)
    started = clock()
    beat = _Heartbeat(
        jobs, job, ctx, interval_s=heartbeat_interval_s, timeout_s=spec.timeout_s, clock=clock, started_s=started
    )
    beat.start()
    result: dict[str, Any] | None = None
    failure: BaseException | None = None
    try:
        with span(n.JOB, kind=job.kind, job_id=job.id, attempt=job.attempt):
            result = _as_result(job.kind, spec.fn(dict(job.args), ctx))
            if beat.timed_out:
                raise TimeoutError(f"the attempt ran past the {spec.timeout_s} s timeout of {job.kind!r} jobs")
    except Exception as exc:
        failure = exc
    finally:
        beat.stop()
    now = clock()
    if failure is None:
        rec = finish(jobs, job, lambda r: machine.complete(r, now, result), now, AttemptEnd("completed"))
        return _outcome(job, rec, None)
    text = error_text(failure)
    if beat.timed_out and not isinstance(failure, TimeoutError):
        text = f"TimeoutError: the attempt ran past the {spec.timeout_s} s timeout ({text})"
    end = AttemptEnd(
        "error",
        error_type=type(failure).__name__,
        error=text,
        traceback="".join(traceback.format_exception(failure)),
    )
    if getattr(failure, "discard", False) is True:
        rec = finish(jobs, job, lambda r: machine.discard(r, now, text), now, end)
    else:
        delay = machine.backoff_s(job.attempt, rng=rng)
        rec = finish(jobs, job, lambda r: machine.fail(r, now, text, backoff=delay), now, end)
    if rec is not None:
        log.info("job %s (%s) attempt %d failed: %s", job.id, job.kind, job.attempt, text)
    return _outcome(job, rec, text)


def finish(
    jobs: JobStore, job: JobRecord, fn: Callable[[JobRecord], JobRecord], now: float, end: AttemptEnd
) -> JobRecord | None:
    """Apply ``fn`` only if the job is still executing the attempt ``job`` started (else None)."""
    return jobs.update(
        job.id, fn, now=now, expect_state=JobState.EXECUTING, expect_attempt=job.attempt, end_attempt=end
    )


def _outcome(job: JobRecord, rec: JobRecord | None, error: str | None) -> Outcome:
    if rec is None:
        emit(STALE_EVENT, {"count": 1}, {"kind": job.kind, "job_id": job.id})
        return Outcome(job=job, state=job.state, recorded=False, error=error)
    return Outcome(job=rec, state=rec.state, recorded=True, error=error)
