"""Durable job records in the store: insert (with uniqueness in a window), claim, compare-and-set
updates, heartbeats, attempts with their errors, periodic schedules and pruning.

This module is data access only. What a job may do next (the state machine: scheduled ->
available -> executing -> completed / retryable / discarded, cancelled, rescued) lives in
``dspex.pipelines.jobs.machine`` as pure functions on ``JobRecord``; the repository applies
such a function to a row inside one transaction, with the row locked (``FOR UPDATE`` on
PostgreSQL; SQLite serialises writers), and only if the row is still in the state and attempt
the caller saw. A late writer (a worker that was presumed dead and rescued) therefore cannot
complete a job a second time.

Times in records are seconds since the epoch (the engine's injected clock); the tables hold
aware UTC datetimes.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session

from dspex.errors import AlreadyExists, NotFound, ValidationError
from dspex.store.engine import Store
from dspex.store.schema import JobAttemptRow, JobRow, JobScheduleRow, new_id

__all__ = [
    "DEFAULT_UNIQUE_STATES",
    "FINAL_STATES",
    "AttemptEnd",
    "Inserted",
    "JobAttempt",
    "JobRecord",
    "JobState",
    "JobStore",
    "NewJob",
    "Schedule",
    "unique_key",
]


class JobState(StrEnum):
    SCHEDULED = "scheduled"
    AVAILABLE = "available"
    EXECUTING = "executing"
    RETRYABLE = "retryable"
    COMPLETED = "completed"
    DISCARDED = "discarded"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({JobState.COMPLETED, JobState.DISCARDED, JobState.CANCELLED})
#: a job in one of these states blocks an equal (kind, args) job inside its uniqueness window
DEFAULT_UNIQUE_STATES = frozenset(
    {JobState.SCHEDULED, JobState.AVAILABLE, JobState.EXECUTING, JobState.RETRYABLE, JobState.COMPLETED}
)
_MAX_TEXT = 20_000  # error messages and tracebacks are cut to this many characters


def _dt(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _opt_dt(seconds: float | None) -> datetime | None:
    return None if seconds is None else _dt(seconds)


def _s(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _canonical(kind: str, doc: Any) -> str:
    try:
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"The args of a {kind!r} job must be JSON (dicts, lists, strings, finite numbers, "
            f"booleans, None): {exc}.",
            field="args",
        ) from exc


def unique_key(kind: str, args: Mapping[str, Any]) -> str:
    """The digest that makes two jobs "the same" for uniqueness: kind and canonical args."""
    return hashlib.sha256(f"{kind}\n{_canonical(kind, dict(args))}".encode()).hexdigest()[:64]


@dataclass(frozen=True)
class JobRecord:
    """One job as stored. Times are epoch seconds."""

    id: str
    kind: str
    args: dict[str, Any]
    state: JobState
    queue: str = "default"
    priority: int = 0
    attempt: int = 0
    max_attempts: int = 20
    unique_key: str | None = None
    tags: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    last_error: str | None = None
    worker: str | None = None
    ray_task_id: str | None = None
    submission_id: str | None = None
    inserted_at: float = 0.0
    scheduled_at: float = 0.0
    attempted_at: float | None = None
    heartbeat_at: float | None = None
    completed_at: float | None = None
    cancelled_at: float | None = None
    discarded_at: float | None = None

    @property
    def finished_at(self) -> float | None:
        return self.completed_at or self.discarded_at or self.cancelled_at

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "args": self.args,
            "state": self.state.value,
            "queue": self.queue,
            "priority": self.priority,
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "unique_key": self.unique_key,
            "tags": list(self.tags),
            "meta": self.meta,
            "result": self.result,
            "last_error": self.last_error,
            "worker": self.worker,
            "ray_task_id": self.ray_task_id,
            "submission_id": self.submission_id,
            "inserted_at": self.inserted_at,
            "scheduled_at": self.scheduled_at,
            "attempted_at": self.attempted_at,
            "heartbeat_at": self.heartbeat_at,
            "completed_at": self.completed_at,
            "cancelled_at": self.cancelled_at,
            "discarded_at": self.discarded_at,
        }


@dataclass(frozen=True)
class JobAttempt:
    job_id: str
    attempt: int
    outcome: str  # executing | completed | error | rescued | cancelled
    worker: str | None
    ray_task_id: str | None
    started_at: float
    finished_at: float | None
    error_type: str | None = None
    error: str | None = None
    traceback: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "outcome": self.outcome,
            "worker": self.worker,
            "ray_task_id": self.ray_task_id,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error_type": self.error_type,
            "error": self.error,
            "traceback": self.traceback,
        }


@dataclass(frozen=True)
class AttemptEnd:
    """How the current attempt ended, written to its ``job_attempts`` row."""

    outcome: str
    error_type: str | None = None
    error: str | None = None
    traceback: str | None = None


@dataclass(frozen=True)
class NewJob:
    """A job to insert. ``unique_period_s`` (None: not unique; ``math.inf``: forever) makes an
    equal (kind, args) job in one of ``unique_states`` inserted within that many seconds win:
    the insert returns it instead. ``id`` may be chosen by the caller (a Ray submission id);
    inserting an id that exists returns the existing job."""

    kind: str
    args: Mapping[str, Any] = field(default_factory=dict)
    queue: str = "default"
    priority: int = 0
    max_attempts: int = 20
    scheduled_at: float | None = None
    tags: Sequence[str] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)
    unique_period_s: float | None = None
    unique_states: frozenset[JobState] = DEFAULT_UNIQUE_STATES
    id: str | None = None


@dataclass(frozen=True)
class Inserted:
    job: JobRecord
    #: True when an equal job (or the same id) already existed and was returned instead
    duplicate: bool


@dataclass(frozen=True)
class Schedule:
    """A periodic job (``every_s`` seconds, first at ``next_run_at``)."""

    name: str
    kind: str
    every_s: float
    next_run_at: float
    args: dict[str, Any] = field(default_factory=dict)
    queue: str = "default"
    priority: int = 0
    max_attempts: int = 20
    enabled: bool = True
    last_job_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "every_s": self.every_s,
            "next_run_at": self.next_run_at,
            "args": self.args,
            "queue": self.queue,
            "priority": self.priority,
            "max_attempts": self.max_attempts,
            "enabled": self.enabled,
            "last_job_id": self.last_job_id,
        }


def _record(row: JobRow) -> JobRecord:
    return JobRecord(
        id=row.id,
        kind=row.kind,
        args=dict(row.args or {}),
        state=JobState(row.state),
        queue=row.queue,
        priority=row.priority,
        attempt=row.attempt,
        max_attempts=row.max_attempts,
        unique_key=row.unique_key,
        tags=tuple(str(t) for t in row.tags or ()),
        meta=dict(row.meta or {}),
        result=None if row.result is None else dict(row.result),
        last_error=row.last_error,
        worker=row.worker,
        ray_task_id=row.ray_task_id,
        submission_id=row.submission_id,
        inserted_at=row.inserted_at.timestamp(),
        scheduled_at=row.scheduled_at.timestamp(),
        attempted_at=_s(row.attempted_at),
        heartbeat_at=_s(row.heartbeat_at),
        completed_at=_s(row.completed_at),
        cancelled_at=_s(row.cancelled_at),
        discarded_at=_s(row.discarded_at),
    )


def _write(row: JobRow, rec: JobRecord) -> None:
    """Copy the mutable fields of ``rec`` onto ``row`` (kind, args and id never change)."""
    if rec.result is not None:
        _canonical(rec.kind, rec.result)
    row.state = rec.state.value
    row.queue = rec.queue
    row.priority = rec.priority
    row.attempt = rec.attempt
    row.max_attempts = rec.max_attempts
    row.tags = list(rec.tags)
    row.meta = dict(rec.meta)
    row.result = rec.result
    row.last_error = None if rec.last_error is None else rec.last_error[:_MAX_TEXT]
    row.worker = rec.worker
    row.ray_task_id = rec.ray_task_id
    row.submission_id = rec.submission_id
    row.scheduled_at = _dt(rec.scheduled_at)
    row.attempted_at = _opt_dt(rec.attempted_at)
    row.heartbeat_at = _opt_dt(rec.heartbeat_at)
    row.completed_at = _opt_dt(rec.completed_at)
    row.cancelled_at = _opt_dt(rec.cancelled_at)
    row.discarded_at = _opt_dt(rec.discarded_at)


def _attempt(row: JobAttemptRow) -> JobAttempt:
    return JobAttempt(
        job_id=row.job_id,
        attempt=row.attempt,
        outcome=row.outcome,
        worker=row.worker,
        ray_task_id=row.ray_task_id,
        started_at=row.started_at.timestamp(),
        finished_at=_s(row.finished_at),
        error_type=row.error_type,
        error=row.error,
        traceback=row.traceback,
    )


def _schedule(row: JobScheduleRow) -> Schedule:
    return Schedule(
        name=row.name,
        kind=row.kind,
        every_s=row.every_s,
        next_run_at=row.next_run_at.timestamp(),
        args=dict(row.args or {}),
        queue=row.queue,
        priority=row.priority,
        max_attempts=row.max_attempts,
        enabled=row.enabled,
        last_job_id=row.last_job_id,
    )


def _check_new(new: NewJob) -> None:
    if not isinstance(new.kind, str) or not new.kind or len(new.kind) > 100:
        raise ValidationError(f"A job kind is a name of 1-100 characters, got {new.kind!r}.", field="kind")
    if not isinstance(new.max_attempts, int) or new.max_attempts < 1:
        raise ValidationError(
            f"max_attempts must be an integer >= 1, got {new.max_attempts!r}.", field="max_attempts"
        )
    if new.unique_period_s is not None and not new.unique_period_s > 0:
        raise ValidationError(
            f"unique_period_s must be > 0 (math.inf for forever) or None, got {new.unique_period_s!r}.",
            field="unique_period_s",
        )
    if not new.queue or len(new.queue) > 64:
        raise ValidationError(f"A queue is a name of 1-64 characters, got {new.queue!r}.", field="queue")
    if new.id is not None and (not new.id or len(new.id) > 32 or not new.id.replace("-", "").isalnum()):
        raise ValidationError(
            f"A job id is 1-32 letters, digits or '-', got {new.id!r}.", field="id"
        )


class JobStore:
    """The job tables of one store. Thread-safe (every method is one transaction)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- inserting -----------------------------------------------------------------------------
    def insert(self, new: NewJob, *, now: float) -> Inserted:
        _check_new(new)
        _canonical(new.kind, dict(new.args))
        _canonical(new.kind, dict(new.meta))
        try:
            return self.store.write(lambda s: self._insert(s, new, now))
        except AlreadyExists:
            # two writers inserted the same caller-chosen id at once: the other one won
            if new.id is None:
                raise
            return Inserted(self.get(new.id), duplicate=True)

    def _insert(self, s: Session, new: NewJob, now: float) -> Inserted:
        if new.id is not None:
            existing = s.get(JobRow, new.id)
            if existing is not None:
                return Inserted(_record(existing), duplicate=True)
        key = unique_key(new.kind, new.args)
        if new.unique_period_s is not None:
            if s.get_bind().dialect.name == "postgresql":
                # Serialise inserts of equal jobs; SQLite already serialises all writers.
                s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": int(key[:15], 16)})
            q = select(JobRow).where(
                JobRow.kind == new.kind,
                JobRow.unique_key == key,
                JobRow.state.in_([st.value for st in new.unique_states]),
            )
            if math.isfinite(new.unique_period_s):
                q = q.where(JobRow.inserted_at >= _dt(now - new.unique_period_s))
            found = s.scalars(q.order_by(JobRow.inserted_at.desc()).limit(1)).first()
            if found is not None:
                return Inserted(_record(found), duplicate=True)
        at = now if new.scheduled_at is None else float(new.scheduled_at)
        row = JobRow(
            id=new.id or new_id(),
            kind=new.kind,
            queue=new.queue,
            args=dict(new.args),
            state=(JobState.SCHEDULED if at > now else JobState.AVAILABLE).value,
            priority=int(new.priority),
            attempt=0,
            max_attempts=int(new.max_attempts),
            unique_key=key,
            tags=[str(t) for t in new.tags],
            meta=dict(new.meta),
            inserted_at=_dt(now),
            scheduled_at=_dt(at),
        )
        s.add(row)
        s.flush()
        return Inserted(_record(row), duplicate=False)

    # -- reading -------------------------------------------------------------------------------
    def get(self, job_id: str) -> JobRecord:
        def fn(s: Session) -> JobRecord:
            row = s.get(JobRow, job_id)
            if row is None:
                raise NotFound(
                    f"No job {job_id!r} in the store.", hint="List jobs with `dspex jobs list`."
                )
            return _record(row)

        return self.store.read(fn)

    def find(
        self,
        *,
        states: Iterable[JobState | str] | None = None,
        kinds: Iterable[str] | None = None,
        queues: Iterable[str] | None = None,
        limit: int = 50,
        offset: int = 0,
        newest_first: bool = True,
    ) -> list[JobRecord]:
        q = select(JobRow)
        if states is not None:
            q = q.where(JobRow.state.in_([JobState(st).value for st in states]))
        if kinds is not None:
            q = q.where(JobRow.kind.in_(list(kinds)))
        if queues is not None:
            q = q.where(JobRow.queue.in_(list(queues)))
        order = (JobRow.inserted_at.desc(), JobRow.id.desc()) if newest_first else (JobRow.inserted_at, JobRow.id)
        q = q.order_by(*order).limit(max(0, int(limit))).offset(max(0, int(offset)))
        return self.store.read(lambda s: [_record(r) for r in s.scalars(q)])

    def counts(self) -> dict[str, int]:
        """Jobs per state (every state present, zeros included)."""
        rows = self.store.read(
            lambda s: s.execute(select(JobRow.state, func.count()).group_by(JobRow.state)).all()
        )
        out = {st.value: 0 for st in JobState}
        out.update({str(state): int(n) for state, n in rows})
        return out

    def attempts(self, job_id: str) -> list[JobAttempt]:
        self.get(job_id)  # NotFound for an unknown id
        return self.store.read(
            lambda s: [
                _attempt(r)
                for r in s.scalars(
                    select(JobAttemptRow).where(JobAttemptRow.job_id == job_id).order_by(JobAttemptRow.attempt)
                )
            ]
        )

    def due(self, states: Iterable[JobState], *, before: float, limit: int = 500) -> list[JobRecord]:
        """Jobs in ``states`` whose ``scheduled_at`` is at or before ``before``."""
        q = (
            select(JobRow)
            .where(JobRow.state.in_([st.value for st in states]), JobRow.scheduled_at <= _dt(before))
            .order_by(JobRow.scheduled_at)
            .limit(limit)
        )
        return self.store.read(lambda s: [_record(r) for r in s.scalars(q)])

    def silent(self, *, heartbeat_before: float, limit: int = 500) -> list[JobRecord]:
        """Executing jobs whose worker has not beaten since ``heartbeat_before``."""
        q = (
            select(JobRow)
            .where(
                JobRow.state == JobState.EXECUTING.value,
                func.coalesce(JobRow.heartbeat_at, JobRow.attempted_at) < _dt(heartbeat_before),
            )
            .limit(limit)
        )
        return self.store.read(lambda s: [_record(r) for r in s.scalars(q)])

    # -- claiming and updating -----------------------------------------------------------------
    def claim(
        self,
        *,
        queues: Sequence[str],
        limit: int,
        now: float,
        start: Callable[[JobRecord], JobRecord],
        kinds: Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[JobRecord]:
        """Take up to ``limit`` available jobs (by priority, then scheduled time; only ``kinds``
        / ``ids`` when given), apply ``start`` (the machine's available -> executing) and open
        an attempt row for each."""
        if limit <= 0:
            return []

        def fn(s: Session) -> list[JobRecord]:
            q = select(JobRow).where(JobRow.state == JobState.AVAILABLE.value, JobRow.queue.in_(list(queues)))
            if kinds is not None:
                q = q.where(JobRow.kind.in_(list(kinds)))
            if ids is not None:
                q = q.where(JobRow.id.in_(list(ids)))
            q = q.order_by(JobRow.priority, JobRow.scheduled_at, JobRow.id).limit(limit)
            rows = list(s.scalars(q.with_for_update(skip_locked=True)))
            out = []
            for row in rows:
                rec = start(_record(row))
                _write(row, rec)
                s.add(
                    JobAttemptRow(
                        job_id=row.id,
                        attempt=rec.attempt,
                        worker=rec.worker,
                        ray_task_id=rec.ray_task_id,
                        outcome="executing",
                        started_at=_dt(now),
                    )
                )
                out.append(rec)
            s.flush()
            return out

        return self.store.write(fn)

    def update(
        self,
        job_id: str,
        fn: Callable[[JobRecord], JobRecord],
        *,
        now: float,
        expect_state: JobState | Iterable[JobState] | None = None,
        expect_attempt: int | None = None,
        end_attempt: AttemptEnd | None = None,
    ) -> JobRecord | None:
        """Apply ``fn`` to the job in one transaction, with its row locked.

        Returns the new record, or None when the job is no longer in ``expect_state`` /
        ``expect_attempt`` (someone else moved it: nothing is written). ``end_attempt`` closes
        the attempt row of the attempt the job was at. ``fn`` may raise (an illegal transition);
        nothing is written then either.
        """
        wanted: set[str] | None = None
        if expect_state is not None:
            states = [expect_state] if isinstance(expect_state, JobState) else list(expect_state)
            wanted = {st.value for st in states}

        def tx(s: Session) -> JobRecord | None:
            row = s.scalars(select(JobRow).where(JobRow.id == job_id).with_for_update()).first()
            if row is None:
                raise NotFound(f"No job {job_id!r} in the store.", hint="List jobs with `dspex jobs list`.")
            if (wanted is not None and row.state not in wanted) or (
                expect_attempt is not None and row.attempt != expect_attempt
            ):
                return None
            before_attempt = row.attempt
            rec = fn(_record(row))
            _write(row, rec)
            if end_attempt is not None and before_attempt > 0:
                s.execute(
                    update(JobAttemptRow)
                    .where(JobAttemptRow.job_id == job_id, JobAttemptRow.attempt == before_attempt)
                    .values(
                        outcome=end_attempt.outcome,
                        error_type=end_attempt.error_type,
                        error=None if end_attempt.error is None else end_attempt.error[:_MAX_TEXT],
                        traceback=None if end_attempt.traceback is None else end_attempt.traceback[-_MAX_TEXT:],
                        finished_at=_dt(now),
                    )
                )
            s.flush()
            return rec

        return self.store.write(tx)

    def heartbeat(self, job_id: str, *, attempt: int, now: float) -> bool:
        """Record that the worker of ``attempt`` is alive. False when the job is no longer
        executing that attempt (cancelled, or rescued and given to another worker)."""

        def fn(s: Session) -> bool:
            res = s.execute(
                update(JobRow)
                .where(
                    JobRow.id == job_id,
                    JobRow.state == JobState.EXECUTING.value,
                    JobRow.attempt == attempt,
                )
                .values(heartbeat_at=_dt(now))
            )
            return bool(res.rowcount)  # type: ignore[attr-defined]

        return self.store.write(fn)

    def set_ray_task_id(self, job_id: str, *, attempt: int, ray_task_id: str) -> None:
        def fn(s: Session) -> None:
            s.execute(
                update(JobRow).where(JobRow.id == job_id, JobRow.attempt == attempt).values(ray_task_id=ray_task_id)
            )
            s.execute(
                update(JobAttemptRow)
                .where(JobAttemptRow.job_id == job_id, JobAttemptRow.attempt == attempt)
                .values(ray_task_id=ray_task_id)
            )

        self.store.write(fn)

    def set_submission_id(self, job_id: str, submission_id: str) -> None:
        self.store.write(
            lambda s: s.execute(update(JobRow).where(JobRow.id == job_id).values(submission_id=submission_id))
        )

    def prune(self, *, before: float, states: Iterable[JobState] = FINAL_STATES, limit: int = 10_000) -> int:
        """Delete jobs that reached a final state in ``states`` before ``before`` (with their
        attempts). Returns how many were deleted."""
        cutoff = _dt(before)
        columns = {
            JobState.COMPLETED: JobRow.completed_at,
            JobState.CANCELLED: JobRow.cancelled_at,
            JobState.DISCARDED: JobRow.discarded_at,
        }

        def fn(s: Session) -> int:
            ids: list[str] = []
            for st in states:
                col = columns.get(JobState(st))
                if col is None:
                    raise ValidationError(f"Only final states can be pruned, not {st!r}.", field="states")
                ids += list(
                    s.scalars(
                        select(JobRow.id).where(JobRow.state == JobState(st).value, col < cutoff).limit(limit)
                    )
                )
            if ids:
                s.execute(delete(JobAttemptRow).where(JobAttemptRow.job_id.in_(ids)))
                s.execute(delete(JobRow).where(JobRow.id.in_(ids)))
            return len(ids)

        return self.store.write(fn)

    # -- periodic schedules --------------------------------------------------------------------
    def put_schedule(self, schedule: Schedule) -> Schedule:
        """Create or replace a schedule (its next run time is kept when it exists, unless the
        interval changed)."""
        if not schedule.every_s > 0 or not math.isfinite(schedule.every_s):
            raise ValidationError(
                f"A schedule's every_s must be a positive number of seconds, got {schedule.every_s!r}.",
                field="every_s",
            )
        _check_new(NewJob(kind=schedule.kind, queue=schedule.queue, max_attempts=schedule.max_attempts))
        _canonical(schedule.kind, schedule.args)

        def fn(s: Session) -> Schedule:
            row = s.get(JobScheduleRow, schedule.name)
            if row is None:
                row = JobScheduleRow(name=schedule.name, next_run_at=_dt(schedule.next_run_at))
                s.add(row)
            elif row.every_s != schedule.every_s:
                row.next_run_at = _dt(schedule.next_run_at)
            row.kind = schedule.kind
            row.args = dict(schedule.args)
            row.queue = schedule.queue
            row.priority = schedule.priority
            row.max_attempts = schedule.max_attempts
            row.every_s = float(schedule.every_s)
            row.enabled = schedule.enabled
            s.flush()
            return _schedule(row)

        return self.store.write(fn)

    def schedules(self) -> list[Schedule]:
        return self.store.read(
            lambda s: [_schedule(r) for r in s.scalars(select(JobScheduleRow).order_by(JobScheduleRow.name))]
        )

    def remove_schedule(self, name: str) -> None:
        def fn(s: Session) -> None:
            row = s.get(JobScheduleRow, name)
            if row is None:
                raise NotFound(f"No job schedule named {name!r}.")
            s.delete(row)

        self.store.write(fn)

    def fire_schedule(self, name: str, *, expected_next_run_at: float, next_run_at: float, now: float) -> JobRecord | None:
        """Insert the schedule's job and move its next run to ``next_run_at``, if its next run is
        still ``expected_next_run_at`` (another scheduler did not fire it meanwhile)."""

        def fn(s: Session) -> JobRecord | None:
            row = s.scalars(select(JobScheduleRow).where(JobScheduleRow.name == name).with_for_update()).first()
            if row is None or not row.enabled or abs(row.next_run_at.timestamp() - expected_next_run_at) > 1e-3:
                return None
            new = NewJob(
                kind=row.kind,
                args=dict(row.args or {}),
                queue=row.queue,
                priority=row.priority,
                max_attempts=row.max_attempts,
                meta={"schedule": name},
            )
            job = self._insert(s, new, now).job
            row.next_run_at = _dt(next_run_at)
            row.last_job_id = job.id
            s.flush()
            return job

        return self.store.write(fn)
