"""``JobEngine``: the seed's Oban on the store and Ray. A thin loop over the pure machine.

    engine = JobEngine(executor=RayExecutor())     # or ThreadExecutor(), InlineExecutor()
    engine.enqueue("optimize", {...}, unique_period_s=3600)
    engine.schedule("health", "health_check", every_s=300)
    engine.run_forever(stop_event)                 # or tick() from your own loop / a test

One ``tick()`` does what Oban's plugins do, in order:

1. collect finished attempts from the executor (a dead Ray task is rescued here);
2. stage: scheduled and retryable jobs whose time has come become available;
3. rescue: executing jobs whose worker has not beaten for ``rescue_after_s`` are given to
   another worker (or discarded when out of attempts), with the reason kept as the attempt's
   error;
4. periodic schedules that are due insert their job (once, whichever engine fires first);
5. prune: completed, cancelled and discarded jobs older than ``retention_s`` are deleted;
6. claim available jobs of the kinds this process knows, as many as the executor has free
   slots, and start them;
7. every 10 s, report the queue depth (``dspex_queue_depth{component="jobs"}``).

Any number of engines may share a store: claims, rescues and schedule firings are
compare-and-set, so each job attempt runs once. The clock is injected (epoch seconds);
nothing here sleeps except ``run_forever`` between ticks.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dspex.errors import InvalidTransition, JobError
from dspex.store import Store, open_store
from dspex.store.jobs import AttemptEnd, Inserted, JobRecord, JobState, JobStore, NewJob, Schedule
from dspex.telemetry import emit
from dspex.telemetry import names as n

from . import machine
from .executors import Executor, ExecutorContext, InlineExecutor
from .registry import get_worker, list_workers
from .runner import Outcome, default_worker_id

__all__ = ["JobEngine", "TickReport"]

log = logging.getLogger("dspex.jobs")

RESCUED_EVENT = ("dspex", "job", "rescued")
PRUNED_EVENT = ("dspex", "job", "pruned")
ENQUEUED_EVENT = ("dspex", "job", "enqueued")
TRANSITION_EVENT = ("dspex", "job", "transition")

_UNSET: Any = object()
_DEPTH_EVERY_S = 10.0  # how often a ticking engine reports the queue depth (a COUNT query)


@dataclass
class TickReport:
    staged: int = 0
    rescued: int = 0
    fired: int = 0
    pruned: int = 0
    started: int = 0
    finished: list[Outcome] = field(default_factory=list)


class JobEngine:
    """Runs durable jobs from a store. See the module docstring.

    Args:
        store: the store (default: ``open_store()``).
        executor: where attempts run (default: ``InlineExecutor``).
        queues: the queues this engine takes jobs from.
        kinds: the job kinds it takes (default: every registered kind).
        clock: epoch seconds (tests pass a manual clock).
        heartbeat_interval_s: how often a running attempt beats.
        rescue_after_s: silence after which an executing job's worker is presumed dead.
        retention_s: how long finished jobs are kept before pruning.
    """

    def __init__(
        self,
        store: Store | None = None,
        *,
        executor: Executor | None = None,
        queues: Sequence[str] = ("default",),
        kinds: Iterable[str] | None = None,
        clock: Callable[[], float] = time.time,
        heartbeat_interval_s: float = 5.0,
        rescue_after_s: float = 60.0,
        retention_s: float = 7 * 86_400.0,
        prune_every_s: float = 60.0,
        worker_id: str | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not heartbeat_interval_s > 0 or not rescue_after_s > heartbeat_interval_s:
            raise JobError(
                f"rescue_after_s ({rescue_after_s}) must exceed heartbeat_interval_s ({heartbeat_interval_s}) "
                "and both must be > 0, or live workers would be rescued."
            )
        if not retention_s > 0:
            raise JobError(f"retention_s must be > 0, got {retention_s}.")
        self.store = store if store is not None else open_store()
        self.jobs = JobStore(self.store)
        self.executor: Executor = executor if executor is not None else InlineExecutor()
        self.queues = tuple(queues)
        self.kinds = None if kinds is None else tuple(kinds)
        self.clock = clock
        self.heartbeat_interval_s = float(heartbeat_interval_s)
        self.rescue_after_s = float(rescue_after_s)
        self.retention_s = float(retention_s)
        self.prune_every_s = float(prune_every_s)
        self.worker_id = worker_id or f"{default_worker_id()}:{uuid.uuid4().hex[:6]}"
        self.rng = rng
        self._last_prune = -math.inf
        self._last_depth = -math.inf
        self.executor.bind(ExecutorContext(self.store, clock, self.heartbeat_interval_s, rng))

    # -- inserting -----------------------------------------------------------------------------
    def enqueue(
        self,
        kind: str,
        args: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        schedule_in_s: float | None = None,
        scheduled_at: float | None = None,
        unique_period_s: float | None = _UNSET,
        tags: Sequence[str] = (),
        meta: Mapping[str, Any] | None = None,
        job_id: str | None = None,
    ) -> Inserted:
        """Insert a job of ``kind`` (defaults from its registered worker). ``unique_period_s``
        (default: the kind's) makes an equal (kind, args) job inserted within that window the
        answer instead of a new one; ``job_id`` makes the insert idempotent by id."""
        spec = get_worker(kind)
        if schedule_in_s is not None and scheduled_at is not None:
            raise JobError("Give schedule_in_s or scheduled_at, not both.")
        now = self.clock()
        at = now + schedule_in_s if schedule_in_s is not None else scheduled_at
        new = NewJob(
            kind=kind,
            args=dict(args or {}),
            queue=queue or spec.queue,
            priority=spec.priority if priority is None else priority,
            max_attempts=spec.max_attempts if max_attempts is None else max_attempts,
            scheduled_at=at,
            tags=tuple(tags),
            meta=dict(meta or {}),
            unique_period_s=spec.unique_period_s if unique_period_s is _UNSET else unique_period_s,
            id=job_id,
        )
        out = self.jobs.insert(new, now=now)
        emit(ENQUEUED_EVENT, {"count": 1}, {"kind": kind, "duplicate": out.duplicate, "job_id": out.job.id})
        return out

    def schedule(
        self,
        name: str,
        kind: str,
        *,
        every_s: float,
        args: Mapping[str, Any] | None = None,
        first_at: float | None = None,
        queue: str | None = None,
        max_attempts: int | None = None,
        enabled: bool = True,
    ) -> Schedule:
        """A periodic job: ``kind`` with ``args`` every ``every_s`` seconds (first at
        ``first_at``, default now). Runs missed while no engine ran are not made up."""
        spec = get_worker(kind)
        return self.jobs.put_schedule(
            Schedule(
                name=name,
                kind=kind,
                every_s=float(every_s),
                next_run_at=self.clock() if first_at is None else float(first_at),
                args=dict(args or {}),
                queue=queue or spec.queue,
                priority=spec.priority,
                max_attempts=spec.max_attempts if max_attempts is None else max_attempts,
                enabled=enabled,
            )
        )

    # -- operator actions ----------------------------------------------------------------------
    def cancel(self, job_id: str, reason: str = "cancelled by an operator") -> JobRecord:
        """Cancel a job that has not finished. An executing attempt is stopped where the
        executor can (Ray), and its outcome is dropped either way."""
        now = self.clock()
        rec = self._update(job_id, lambda r: machine.cancel(r, now, reason), now, AttemptEnd("cancelled", error=reason))
        self.executor.cancel(job_id)
        return rec

    def retry(self, job_id: str) -> JobRecord:
        """Make a finished, failed or scheduled job available now."""
        now = self.clock()
        return self._update(job_id, lambda r: machine.retry(r, now), now, None)

    def _update(
        self, job_id: str, fn: Callable[[JobRecord], JobRecord], now: float, end: AttemptEnd | None
    ) -> JobRecord:
        for _ in range(5):  # the job may move between our read and our write: read again
            current = self.jobs.get(job_id)
            rec = self.jobs.update(
                job_id,
                fn,
                now=now,
                expect_state=current.state,
                expect_attempt=current.attempt,
                end_attempt=end if current.state is JobState.EXECUTING else None,
            )
            if rec is not None:
                emit(TRANSITION_EVENT, {"count": 1}, {"kind": rec.kind, "from": current.state.value, "to": rec.state.value})
                return rec
        raise JobError(f"Job {job_id} kept changing while it was being updated; try again.")

    # -- the loop ------------------------------------------------------------------------------
    def tick(self) -> TickReport:
        report = TickReport(finished=self.executor.poll())
        now = self.clock()
        report.staged = self._stage(now)
        report.rescued = self._rescue(now)
        report.fired = self._fire_schedules(now)
        if now - self._last_prune >= self.prune_every_s:
            report.pruned = self.prune(now)
        report.started = self._dispatch(now)
        report.finished += self.executor.poll()
        if now - self._last_depth >= _DEPTH_EVERY_S:
            self._last_depth = now
            self.queue_depth()
        return report

    def _stage(self, now: float) -> int:
        staged = 0
        for job in self.jobs.due((JobState.SCHEDULED, JobState.RETRYABLE), before=now + machine.DUE_SLACK_S):
            if self.jobs.update(job.id, lambda r: machine.stage(r, now), now=now, expect_state=job.state) is not None:
                staged += 1
        return staged

    def _rescue(self, now: float) -> int:
        rescued = 0
        for job in self.jobs.silent(heartbeat_before=now - self.rescue_after_s):
            last = job.heartbeat_at or job.attempted_at or now
            reason = (
                f"WorkerLost: worker {job.worker or '?'} stopped heart-beating during attempt {job.attempt} "
                f"(last beat {now - last:.0f} s ago); rescued"
            )
            end = AttemptEnd("rescued", error_type="WorkerLost", error=reason)
            rec = self.jobs.update(
                job.id,
                functools.partial(machine.rescue, now=now, reason=reason),
                now=now,
                expect_state=JobState.EXECUTING,
                expect_attempt=job.attempt,
                end_attempt=end,
            )
            if rec is not None:
                rescued += 1
                log.warning("job %s (%s): %s", job.id, job.kind, reason)
                emit(RESCUED_EVENT, {"count": 1}, {"kind": job.kind, "job_id": job.id, "to": rec.state.value})
        return rescued

    def _fire_schedules(self, now: float) -> int:
        fired = 0
        for sch in self.jobs.schedules():
            if not sch.enabled or sch.next_run_at > now + machine.DUE_SLACK_S:
                continue
            # skip the runs missed while nobody was ticking: the next one is in the future
            missed = math.floor(max(0.0, now - sch.next_run_at) / sch.every_s) + 1
            nxt = sch.next_run_at + missed * sch.every_s
            if self.jobs.fire_schedule(sch.name, expected_next_run_at=sch.next_run_at, next_run_at=nxt, now=now):
                fired += 1
        return fired

    def prune(self, now: float | None = None) -> int:
        now = self.clock() if now is None else now
        self._last_prune = now
        pruned = self.jobs.prune(before=now - self.retention_s)
        if pruned:
            emit(PRUNED_EVENT, {"count": pruned}, {})
        return pruned

    def _known_kinds(self) -> list[str]:
        return list(self.kinds) if self.kinds is not None else [w.kind for w in list_workers()]

    def _dispatch(self, now: float, *, ids: Sequence[str] | None = None) -> int:
        free = self.executor.free_slots()
        if free <= 0:
            return 0
        worker = f"{self.executor.label}:{self.worker_id}"
        claimed = self.jobs.claim(
            queues=self.queues,
            limit=free,
            now=now,
            start=lambda r: machine.start(r, now, worker=worker),
            kinds=self._known_kinds(),
            ids=ids,
        )
        for job in claimed:
            self.executor.submit(job, get_worker(job.kind))
        return len(claimed)

    def run_now(self, job_id: str) -> Outcome:
        """Run one available job at once in this thread (the CLI's local runs), whatever the
        engine's executor; raises ``JobError`` when the job is not available."""
        job = self.jobs.get(job_id)
        if job.state is not JobState.AVAILABLE:
            raise JobError(
                f"Job {job_id} is {job.state.value}, not available; `dspex jobs retry {job_id}` makes it available."
            )
        inline = InlineExecutor()
        inline.bind(ExecutorContext(self.store, self.clock, self.heartbeat_interval_s, self.rng))
        now = self.clock()
        worker = f"{inline.label}:{self.worker_id}"
        claimed = self.jobs.claim(
            queues=[job.queue], limit=1, now=now, start=lambda r: machine.start(r, now, worker=worker), ids=[job_id]
        )
        if not claimed:
            raise JobError(f"Job {job_id} was taken by another worker meanwhile; see `dspex jobs show {job_id}`.")
        inline.submit(claimed[0], get_worker(job.kind))
        return inline.poll()[0]

    def run_to_end(
        self,
        job_id: str,
        *,
        max_wait_s: float = 900.0,
        stop: threading.Event | None = None,
        on_attempt: Callable[[Outcome], None] | None = None,
    ) -> JobRecord:
        """Run one job in this thread until it is final (a Ray job's entry point does this):
        each attempt here, backoffs waited out, at most ``max_wait_s`` of waiting in all (then
        the job is returned as it stands, retryable, for a job engine to finish). Uses the
        real passage of time: call it with the wall clock."""
        stop = stop or threading.Event()
        waited = 0.0
        while not stop.is_set():
            job = self.jobs.get(job_id)
            if job.state.final:
                return job
            if job.state is JobState.AVAILABLE:
                try:
                    out = self.run_now(job_id)
                except JobError:
                    continue  # another worker took it first: look again
                if on_attempt is not None:
                    on_attempt(out)
                continue
            delay = (
                max(0.0, job.scheduled_at - self.clock())
                if job.state is not JobState.EXECUTING
                else self.heartbeat_interval_s  # someone else runs it: wait for them
            )
            if waited + delay > max_wait_s:
                return job
            stop.wait(delay)
            waited += delay
            if job.state is not JobState.EXECUTING:
                now = self.clock()
                try:
                    self.jobs.update(job_id, functools.partial(machine.stage, now=now), now=now, expect_state=job.state)
                except InvalidTransition:
                    continue  # woke a hair early: wait the rest
        return self.jobs.get(job_id)

    def drain(self, *, max_ticks: int = 100_000, wait_s: float = 0.2) -> list[Outcome]:
        """Tick until nothing is available to start and nothing runs (Oban's ``drain_queue``).
        Jobs scheduled in the future stay scheduled: advance the clock to run them."""
        finished: list[Outcome] = []
        for _ in range(max_ticks):
            report = self.tick()
            finished += report.finished
            if report.started == 0 and report.staged == 0 and report.rescued == 0:
                if self.executor.idle():
                    return finished
                self.executor.wait(wait_s)
        raise JobError(f"drain() did not finish within {max_ticks} ticks; a job keeps being re-queued.")

    def run_forever(self, stop: threading.Event, *, poll_interval_s: float = 1.0) -> None:
        """Tick until ``stop`` is set, then let running attempts end (Ray: cancel them)."""
        try:
            while not stop.is_set():
                try:
                    report = self.tick()
                except Exception as exc:  # a store hiccup must not kill the loop
                    log.warning("job engine tick failed: %s", exc)
                    report = TickReport()
                if report.started == 0:
                    if self.executor.idle():
                        stop.wait(poll_interval_s)
                    else:
                        self.executor.wait(poll_interval_s)
        finally:
            self.executor.shutdown()

    def close(self) -> None:
        self.executor.shutdown()

    def queue_depth(self) -> int:
        """Jobs waiting to run (available), emitted as ``dspex_queue_depth{component="jobs"}``."""
        depth = self.jobs.counts()[JobState.AVAILABLE.value]
        emit(n.QUEUE_DEPTH, {"depth": depth}, {"component": "jobs"})
        return depth
