"""The job engine on a real SQLite store with a manual clock: backoff to discarded with every
error kept, uniqueness, periodic schedules, pruning, operator actions, timeouts, results."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from fixtures.store import ManualClock
from jobs.jobs_support import KIND_COUNT, KIND_FAIL

from dspex import telemetry
from dspex.errors import InvalidTransition, JobError, NotFound
from dspex.pipelines.jobs import (
    InlineExecutor,
    JobEngine,
    JobState,
    ThreadExecutor,
    get_worker,
    list_workers,
    register_worker,
    unregister_worker,
)
from dspex.store import Store


def engine(store: Store, clock: ManualClock, **kw: Any) -> JobEngine:
    return JobEngine(store, clock=clock, heartbeat_interval_s=0.05, rescue_after_s=60, rng=lambda: 0.5, **kw)


def test_a_failing_job_backs_off_and_is_discarded_after_max_attempts_keeping_every_error(
    job_store: Store, clock: ManualClock
) -> None:
    eng = engine(job_store, clock)
    job = eng.enqueue(KIND_FAIL, {"x": 1}).job
    assert job.max_attempts == 20
    waits = []
    for attempt in range(1, 21):
        report = eng.tick()
        assert report.started == 1, attempt
        rec = eng.jobs.get(job.id)
        if attempt < 20:
            assert rec.state is JobState.RETRYABLE and rec.attempt == attempt
            waits.append(rec.scheduled_at - clock())
            assert eng.tick().started == 0  # not due yet: nothing runs
            clock.advance(rec.scheduled_at - clock())
    rec = eng.jobs.get(job.id)
    assert rec.state is JobState.DISCARDED and rec.attempt == 20 and rec.discarded_at is not None
    assert waits == [pytest.approx(15 + 2**n) for n in range(1, 20)]  # rng 0.5: no jitter
    attempts = eng.jobs.attempts(job.id)
    assert [a.attempt for a in attempts] == list(range(1, 21))
    assert all(a.outcome == "error" and a.error_type == "RuntimeError" for a in attempts)
    assert [a.error for a in attempts] == [f"RuntimeError: failure of attempt {n}" for n in range(1, 21)]
    assert "Traceback" in (attempts[0].traceback or "")
    assert rec.last_error == "RuntimeError: failure of attempt 20"
    assert eng.tick().started == 0  # discarded for good


def test_a_unique_job_submitted_twice_in_its_window_runs_once(
    job_store: Store, clock: ManualClock, tmp_path: Path
) -> None:
    eng = engine(job_store, clock)
    first = eng.enqueue(KIND_COUNT, {"dir": str(tmp_path), "name": "u"})
    clock.advance(30)
    second = eng.enqueue(KIND_COUNT, {"dir": str(tmp_path), "name": "u"})
    assert second.duplicate and second.job.id == first.job.id
    eng.drain()
    clock.advance(20)  # still inside the 60 s window, and already completed: still the same job
    assert eng.enqueue(KIND_COUNT, {"dir": str(tmp_path), "name": "u"}).duplicate
    eng.drain()
    assert (tmp_path / "ran-u").read_text().splitlines() == [f"{first.job.id} 1"]
    clock.advance(61)
    third = eng.enqueue(KIND_COUNT, {"dir": str(tmp_path), "name": "u"})
    assert not third.duplicate
    eng.drain()
    assert len((tmp_path / "ran-u").read_text().splitlines()) == 2


def test_periodic_schedules_insert_one_job_per_interval(job_store: Store, clock: ManualClock, tmp_path: Path) -> None:
    eng = engine(job_store, clock)
    other = engine(job_store, clock)  # a second engine on the same store
    t0 = clock()
    eng.schedule("tick", KIND_COUNT, every_s=100, args={"dir": str(tmp_path), "name": "p"}, first_at=t0 + 10)
    assert eng.tick().fired == 0
    clock.advance(10)
    assert eng.tick().fired == 1 and other.tick().fired == 0
    clock.advance(350)  # three runs missed while nobody ticked: one job, next run in the future
    assert other.tick().fired == 1
    [sch] = eng.jobs.schedules()
    assert sch.next_run_at == pytest.approx(t0 + 410)
    eng.drain()
    other.drain()
    runs = (tmp_path / "ran-p").read_text().splitlines()
    assert len(runs) == 2  # one per fired run, whichever engine fired it
    assert {j.meta["schedule"] for j in eng.jobs.find()} == {"tick"}
    with pytest.raises(NotFound):
        eng.schedule("x", "no.such.kind", every_s=10)


def test_finished_jobs_are_pruned_after_the_retention_window(job_store: Store, clock: ManualClock, tmp_path: Path) -> None:
    eng = engine(job_store, clock, retention_s=3600, prune_every_s=0)
    done = eng.enqueue(KIND_COUNT, {"dir": str(tmp_path), "name": "a"}).job
    eng.drain()
    pending = eng.enqueue(KIND_FAIL, {}, schedule_in_s=10_000).job
    clock.advance(3599)
    assert eng.tick().pruned == 0
    clock.advance(2)
    assert eng.tick().pruned == 1
    with pytest.raises(NotFound):
        eng.jobs.get(done.id)
    assert eng.jobs.get(pending.id).state is JobState.SCHEDULED


def test_operators_cancel_and_retry(job_store: Store, clock: ManualClock, tmp_path: Path) -> None:
    eng = engine(job_store, clock)
    job = eng.enqueue(KIND_FAIL, {}, max_attempts=1).job
    cancelled = eng.cancel(job.id, "not needed")
    assert cancelled.state is JobState.CANCELLED and eng.tick().started == 0
    with pytest.raises(InvalidTransition, match="Cannot cancel a job that is cancelled"):
        eng.cancel(job.id)
    again = eng.retry(job.id)
    assert again.state is JobState.AVAILABLE
    eng.drain()
    assert eng.jobs.get(job.id).state is JobState.DISCARDED  # max_attempts 1
    eng.retry(job.id)
    assert eng.jobs.get(job.id).max_attempts == 2  # one more attempt
    out = eng.run_now(job.id)
    assert out.state is JobState.DISCARDED and out.error == "RuntimeError: failure of attempt 2"
    with pytest.raises(JobError, match="not available"):
        eng.run_now(job.id)
    with pytest.raises(NotFound):
        eng.retry("missing")


def test_results_discard_and_bad_registrations(job_store: Store, clock: ManualClock) -> None:
    register_worker("test.result", lambda args, ctx: {"echo": args["v"], "attempt": ctx.attempt}, replace=True)
    register_worker("test.not_json", lambda args, ctx: {"x": object()}, replace=True, max_attempts=1)
    register_worker(
        "test.discard", lambda args, ctx: (_ for _ in ()).throw(JobError("bad args", discard=True)), replace=True
    )
    try:
        eng = engine(job_store, clock)
        ok = eng.enqueue("test.result", {"v": [1, 2]}).job
        bad_result = eng.enqueue("test.not_json", {}).job
        discard = eng.enqueue("test.discard", {}).job
        eng.drain()
        assert eng.jobs.get(ok.id).result == {"echo": [1, 2], "attempt": 1}
        assert "not JSON" in (eng.jobs.get(bad_result.id).last_error or "")
        d = eng.jobs.get(discard.id)
        assert d.state is JobState.DISCARDED and d.attempt == 1 and d.last_error == "JobError: bad args"
    finally:
        for k in ("test.result", "test.not_json", "test.discard"):
            unregister_worker(k)
    with pytest.raises(JobError, match="already registered"):
        register_worker("optimize", lambda a, c: None)
    with pytest.raises(JobError, match="kind"):
        register_worker("bad kind!", lambda a, c: None)
    with pytest.raises(JobError, match="max_attempts"):
        register_worker("x", lambda a, c: None, max_attempts=0)
    with pytest.raises(NotFound, match="kinds are"):
        get_worker("nope")
    kinds = {w.kind for w in list_workers()}
    assert {"optimize", "evaluate", "health_check", "experiment", "rollout_tick"} <= kinds
    with pytest.raises(JobError, match="rescue_after_s"):
        JobEngine(job_store, heartbeat_interval_s=10, rescue_after_s=5)


def test_an_attempt_past_its_timeout_fails_and_its_late_result_is_dropped(job_store: Store) -> None:
    release = threading.Event()

    def slow(args: dict[str, Any], ctx: Any) -> dict[str, Any]:
        while not ctx.should_stop():
            release.wait(0.01)
        return {"late": True}

    register_worker("test.slow", slow, replace=True, timeout_s=0.2, max_attempts=1)
    seen: list[tuple[str, ...]] = []
    telemetry.attach("t-jobs", ("dspex", "job", "exception"), lambda e, m, md, c: seen.append(e))
    telemetry.attach("t-jobs-stop", ("dspex", "job", "stop"), lambda e, m, md, c: seen.append(e))
    try:
        eng = JobEngine(job_store, executor=ThreadExecutor(2), heartbeat_interval_s=0.05, rescue_after_s=5)
        job = eng.enqueue("test.slow", {}).job
        eng.drain()
        rec = eng.jobs.get(job.id)
        assert rec.state is JobState.DISCARDED and rec.result is None
        assert "timeout" in (rec.last_error or "")
        assert eng.jobs.attempts(job.id)[0].error_type == "TimeoutError"
        assert ("dspex", "job", "exception") in seen
    finally:
        telemetry.detach("t-jobs")
        telemetry.detach("t-jobs-stop")
        unregister_worker("test.slow")
        release.set()


def test_two_engines_with_threads_run_every_job_exactly_once(job_store: Store, tmp_path: Path) -> None:
    from dspex.store import open_store

    second_store = open_store(job_store.url.render_as_string(hide_password=False), shared=False)
    try:
        a = JobEngine(job_store, executor=ThreadExecutor(3), heartbeat_interval_s=0.05, rescue_after_s=5)
        b = JobEngine(second_store, executor=ThreadExecutor(3), heartbeat_interval_s=0.05, rescue_after_s=5)
        ids = [a.enqueue(KIND_COUNT, {"dir": str(tmp_path), "name": f"n{i}"}).job.id for i in range(24)]
        done = threading.Thread(target=b.drain)
        done.start()
        a.drain()
        done.join()
        a.drain()
        ran = [line.split()[0] for i in range(24) for line in (tmp_path / f"ran-n{i}").read_text().splitlines()]
        assert sorted(ran) == sorted(ids)
        assert a.jobs.counts()["completed"] == 24
        workers = {a.jobs.get(i).worker for i in ids}
        assert len(workers) == 2  # both engines took some
    finally:
        second_store.close()


def test_inline_executor_is_the_default_and_queue_depth_is_reported(job_store: Store, clock: ManualClock, tmp_path: Path) -> None:
    eng = engine(job_store, clock)
    assert isinstance(eng.executor, InlineExecutor)
    for i in range(3):
        eng.enqueue(KIND_COUNT, {"dir": str(tmp_path), "name": f"q{i}"})
    seen: list[dict[str, Any]] = []
    telemetry.attach("t-depth", ("dspex", "queue", "depth"), lambda e, m, md, c: seen.append({**m, **md}))
    try:
        assert eng.queue_depth() == 3
    finally:
        telemetry.detach("t-depth")
    assert seen == [{"depth": 3, "component": "jobs"}]
