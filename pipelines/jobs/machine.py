"""The job state machine (Oban's), as pure functions: a record and a time in, a record out.

::

    insert ──> scheduled ──(due)──> available ──start──> executing ──complete──> completed
                               ^                            │
                               │                            ├─fail (attempts left)──> retryable
               retryable ──(due)┘                           ├─fail (no attempts left)──> discarded
                                                            ├─discard (permanent error)──> discarded
                                                            └─rescue (worker lost)──> available | discarded
    scheduled, available, executing, retryable ──cancel──> cancelled
    scheduled, retryable, completed, discarded, cancelled ──retry──> available

Backoff after the n-th failed attempt: ``15 + 2**n`` seconds with +-10 % jitter (Oban's
default). A rescued job (its worker stopped heart-beating) is available again at once: the
worker died, not the job's logic, so it does not wait a backoff; the attempt still counts.
Nothing here reads a clock, touches the store or sleeps.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

from dspex.errors import InvalidTransition
from dspex.store.jobs import JobRecord, JobState

__all__ = [
    "BACKOFF_BASE_S",
    "BACKOFF_JITTER",
    "DEFAULT_MAX_ATTEMPTS",
    "DUE_SLACK_S",
    "allowed_events",
    "backoff_s",
    "cancel",
    "complete",
    "discard",
    "fail",
    "rescue",
    "retry",
    "stage",
    "start",
]

DEFAULT_MAX_ATTEMPTS = 20
#: "due" allows this much: the store keeps times to the microsecond, so a time read back may
#: lie a fraction of a microsecond after the float it was written from
DUE_SLACK_S = 1e-3
BACKOFF_BASE_S = 15.0
BACKOFF_JITTER = 0.1
_MAX_POW = 30  # 2**30 s is 34 years: enough; keeps the float finite

S = JobState
_EVENTS: dict[str, frozenset[JobState]] = {
    "stage": frozenset({S.SCHEDULED, S.RETRYABLE}),
    "start": frozenset({S.AVAILABLE}),
    "complete": frozenset({S.EXECUTING}),
    "fail": frozenset({S.EXECUTING}),
    "discard": frozenset({S.EXECUTING}),
    "rescue": frozenset({S.EXECUTING}),
    "cancel": frozenset({S.SCHEDULED, S.AVAILABLE, S.EXECUTING, S.RETRYABLE}),
    "retry": frozenset({S.SCHEDULED, S.RETRYABLE, S.COMPLETED, S.DISCARDED, S.CANCELLED}),
}


def allowed_events(state: JobState) -> tuple[str, ...]:
    return tuple(sorted(e for e, sources in _EVENTS.items() if state in sources))


def _check(job: JobRecord, event: str) -> None:
    if job.state not in _EVENTS[event]:
        raise InvalidTransition.of("job", job.state.value, event, allowed_events(job.state))


def backoff_s(
    attempt: int,
    *,
    base_s: float = BACKOFF_BASE_S,
    jitter: float = BACKOFF_JITTER,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    raw = base_s + 2.0 ** min(max(int(attempt), 0), _MAX_POW)
    return raw * (1.0 + jitter * (2.0 * rng() - 1.0))


def stage(job: JobRecord, now: float) -> JobRecord:
    """A scheduled or retryable job whose time has come becomes available."""
    _check(job, "stage")
    if job.scheduled_at > now + DUE_SLACK_S:
        raise InvalidTransition(
            f"Job {job.id} is not due until {job.scheduled_at:.3f} (now {now:.3f}); it stays {job.state.value}.",
            machine="job",
            state=job.state.value,
            event="stage",
            allowed=allowed_events(job.state),
        )
    return replace(job, state=S.AVAILABLE)


def start(job: JobRecord, now: float, *, worker: str, ray_task_id: str | None = None) -> JobRecord:
    """A worker takes the job: the attempt counter moves and its heartbeat starts."""
    _check(job, "start")
    return replace(
        job,
        state=S.EXECUTING,
        attempt=job.attempt + 1,
        attempted_at=now,
        heartbeat_at=now,
        worker=worker,
        ray_task_id=ray_task_id,
    )


def complete(job: JobRecord, now: float, result: dict[str, object] | None = None) -> JobRecord:
    _check(job, "complete")
    return replace(job, state=S.COMPLETED, completed_at=now, result=result)


def fail(job: JobRecord, now: float, error: str, *, backoff: float) -> JobRecord:
    """The attempt raised: retryable after ``backoff`` seconds, or discarded when it was the last."""
    _check(job, "fail")
    if job.attempt >= job.max_attempts:
        return replace(job, state=S.DISCARDED, discarded_at=now, last_error=error)
    return replace(job, state=S.RETRYABLE, scheduled_at=now + max(0.0, backoff), last_error=error)


def discard(job: JobRecord, now: float, error: str) -> JobRecord:
    """The attempt raised an error no retry can fix (bad args, unknown kind): stop now."""
    _check(job, "discard")
    return replace(job, state=S.DISCARDED, discarded_at=now, last_error=error)


def rescue(job: JobRecord, now: float, reason: str) -> JobRecord:
    """The job's worker stopped heart-beating (it died): run it again, or discard it when it
    has used all its attempts."""
    _check(job, "rescue")
    if job.attempt >= job.max_attempts:
        return replace(job, state=S.DISCARDED, discarded_at=now, last_error=reason)
    return replace(job, state=S.AVAILABLE, scheduled_at=now, last_error=reason)


def cancel(job: JobRecord, now: float, reason: str = "cancelled") -> JobRecord:
    _check(job, "cancel")
    return replace(job, state=S.CANCELLED, cancelled_at=now, meta={**job.meta, "cancel_reason": reason})


def retry(job: JobRecord, now: float) -> JobRecord:
    """Run the job again now (an operator's retry). A job that used all its attempts gets one
    more (Oban's ``retry_job``)."""
    _check(job, "retry")
    return replace(
        job,
        state=S.AVAILABLE,
        scheduled_at=now,
        max_attempts=max(job.max_attempts, job.attempt + 1),
        completed_at=None,
        cancelled_at=None,
        discarded_at=None,
    )
