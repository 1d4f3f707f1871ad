"""The job state machine, pure: every transition, illegal events refused naming the state, and
the backoff formula (15 + 2**attempt s, +-10 % jitter)."""

from __future__ import annotations

import pytest

from dspex.errors import InvalidTransition
from dspex.pipelines.jobs import machine
from dspex.pipelines.jobs.machine import allowed_events, backoff_s
from dspex.store.jobs import JobRecord, JobState

S = JobState
T = 1000.0


def job(state: JobState = S.AVAILABLE, attempt: int = 0, max_attempts: int = 3, **kw: object) -> JobRecord:
    return JobRecord(id="j1", kind="k", args={}, state=state, attempt=attempt, max_attempts=max_attempts, scheduled_at=T, **kw)  # type: ignore[arg-type]


def test_a_job_runs_and_completes() -> None:
    running = machine.start(job(), T, worker="w")
    assert (running.state, running.attempt, running.attempted_at, running.heartbeat_at, running.worker) == (
        S.EXECUTING, 1, T, T, "w",
    )
    done = machine.complete(running, T + 5, {"score": 1})
    assert (done.state, done.completed_at, done.result) == (S.COMPLETED, T + 5, {"score": 1})


def test_failures_back_off_then_discard_at_max_attempts() -> None:
    j = machine.start(job(), T, worker="w")
    j = machine.fail(j, T + 1, "ValueError: x", backoff=17.0)
    assert (j.state, j.scheduled_at, j.last_error) == (S.RETRYABLE, T + 18, "ValueError: x")
    with pytest.raises(InvalidTransition, match="not due"):
        machine.stage(j, T + 17)
    j = machine.start(machine.stage(j, T + 18), T + 18, worker="w")
    j = machine.start(machine.stage(machine.fail(j, T + 19, "e2", backoff=19), T + 50), T + 50, worker="w")
    assert j.attempt == 3
    last = machine.fail(j, T + 51, "e3", backoff=23)
    assert (last.state, last.discarded_at, last.last_error) == (S.DISCARDED, T + 51, "e3")


def test_discard_rescue_cancel_and_retry() -> None:
    running = machine.start(job(), T, worker="w")
    assert machine.discard(running, T, "bad args").state is S.DISCARDED
    rescued = machine.rescue(running, T + 60, "WorkerLost")
    assert (rescued.state, rescued.scheduled_at, rescued.attempt) == (S.AVAILABLE, T + 60, 1)
    out_of_attempts = machine.start(job(attempt=2), T, worker="w")
    assert machine.rescue(out_of_attempts, T, "WorkerLost").state is S.DISCARDED
    for state in (S.SCHEDULED, S.AVAILABLE, S.EXECUTING, S.RETRYABLE):
        c = machine.cancel(job(state), T + 3, "operator")
        assert (c.state, c.cancelled_at, c.meta["cancel_reason"]) == (S.CANCELLED, T + 3, "operator")
    exhausted = job(S.DISCARDED, attempt=3, max_attempts=3, discarded_at=T)
    again = machine.retry(exhausted, T + 9)
    assert (again.state, again.max_attempts, again.discarded_at, again.scheduled_at) == (S.AVAILABLE, 4, None, T + 9)
    assert machine.retry(job(S.COMPLETED, attempt=1, completed_at=T), T).state is S.AVAILABLE


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (S.COMPLETED, "cancel"),
        (S.EXECUTING, "retry"),
        (S.AVAILABLE, "complete"),
        (S.RETRYABLE, "start"),
        (S.CANCELLED, "stage"),
        (S.DISCARDED, "rescue"),
    ],
)
def test_illegal_events_are_refused_with_the_state_and_what_is_allowed(state: JobState, event: str) -> None:
    calls = {
        "cancel": lambda j: machine.cancel(j, T),
        "retry": lambda j: machine.retry(j, T),
        "complete": lambda j: machine.complete(j, T),
        "start": lambda j: machine.start(j, T, worker="w"),
        "stage": lambda j: machine.stage(j, T),
        "rescue": lambda j: machine.rescue(j, T, "x"),
    }
    with pytest.raises(InvalidTransition) as info:
        calls[event](job(state))
    err = info.value
    assert err.state == state.value and err.event == event and err.allowed == allowed_events(state)
    assert f"that is {state.value}" in str(err)


def test_backoff_is_15_plus_2_to_the_attempt_with_ten_percent_jitter() -> None:
    assert backoff_s(1, rng=lambda: 0.5) == 17.0
    assert backoff_s(5, rng=lambda: 0.5) == 47.0
    assert backoff_s(10, rng=lambda: 0.5) == 15 + 1024
    assert backoff_s(5, rng=lambda: 0.0) == pytest.approx(47 * 0.9)
    assert backoff_s(5, rng=lambda: 1.0) == pytest.approx(47 * 1.1)
    assert backoff_s(200, rng=lambda: 0.5) == 15 + 2.0**30  # capped, finite
    draws = [backoff_s(3) for _ in range(200)]
    assert min(draws) >= 23 * 0.9 and max(draws) <= 23 * 1.1 and len(set(draws)) > 100
