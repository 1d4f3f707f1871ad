"""The job tables on both databases: inserts with uniqueness in a window, claims that never hand
one job to two workers, compare-and-set updates, heartbeats, attempts, schedules, pruning."""

from __future__ import annotations

import math
import threading
from dataclasses import replace

import pytest
from sqlalchemy import select

from dspex.errors import NotFound, ValidationError
from dspex.store import Store, open_store
from dspex.store.jobs import AttemptEnd, JobRecord, JobState, JobStore, NewJob, Schedule, unique_key
from dspex.store.schema import JobAttemptRow

T0 = 1_800_000_000.0


def _start(now: float, worker: str = "w1"):
    def fn(r: JobRecord) -> JobRecord:
        return replace(r, state=JobState.EXECUTING, attempt=r.attempt + 1, attempted_at=now, heartbeat_at=now, worker=worker)

    return fn


def test_insert_reads_back_and_schedules_future_jobs(store: Store) -> None:
    jobs = JobStore(store)
    now_job = jobs.insert(NewJob("optimize", {"program": "qa", "n": 3}, tags=["nightly"]), now=T0).job
    later = jobs.insert(NewJob("optimize", {"program": "qa"}, scheduled_at=T0 + 60), now=T0).job
    assert (now_job.state, later.state) == (JobState.AVAILABLE, JobState.SCHEDULED)
    got = jobs.get(now_job.id)
    assert got.args == {"program": "qa", "n": 3}
    assert (got.attempt, got.max_attempts, got.tags, got.queue) == (0, 20, ("nightly",), "default")
    assert got.inserted_at == pytest.approx(T0) and got.scheduled_at == pytest.approx(T0)
    assert jobs.get(later.id).scheduled_at == pytest.approx(T0 + 60)
    assert jobs.counts()["available"] == 1 and jobs.counts()["scheduled"] == 1
    assert [j.id for j in jobs.find(states=["scheduled"])] == [later.id]
    assert [j.id for j in jobs.due([JobState.SCHEDULED], before=T0 + 59)] == []
    assert [j.id for j in jobs.due([JobState.SCHEDULED], before=T0 + 60)] == [later.id]


def test_bad_inserts_are_refused_and_nothing_is_written(store: Store) -> None:
    jobs = JobStore(store)
    with pytest.raises(ValidationError, match="JSON"):
        jobs.insert(NewJob("optimize", {"x": float("nan")}), now=T0)
    with pytest.raises(ValidationError, match="JSON"):
        jobs.insert(NewJob("optimize", {"x": object()}), now=T0)
    with pytest.raises(ValidationError, match="max_attempts"):
        jobs.insert(NewJob("optimize", {}, max_attempts=0), now=T0)
    with pytest.raises(ValidationError, match="kind"):
        jobs.insert(NewJob("", {}), now=T0)
    with pytest.raises(ValidationError, match="unique_period_s"):
        jobs.insert(NewJob("optimize", {}, unique_period_s=0), now=T0)
    with pytest.raises(ValidationError, match="job id"):
        jobs.insert(NewJob("optimize", {}, id="bad id!"), now=T0)
    assert sum(jobs.counts().values()) == 0
    with pytest.raises(NotFound, match="dspex jobs list"):
        jobs.get("nope")


def test_unique_jobs_within_their_window_are_one_job(store: Store) -> None:
    jobs = JobStore(store)
    first = jobs.insert(NewJob("health_check", {"model": "a"}, unique_period_s=60), now=T0)
    again = jobs.insert(NewJob("health_check", {"model": "a"}, unique_period_s=60), now=T0 + 59)
    other_args = jobs.insert(NewJob("health_check", {"model": "b"}, unique_period_s=60), now=T0 + 1)
    assert not first.duplicate and again.duplicate and again.job.id == first.job.id
    assert not other_args.duplicate
    # outside the window: a new job
    later = jobs.insert(NewJob("health_check", {"model": "a"}, unique_period_s=60), now=T0 + 61)
    assert not later.duplicate and later.job.id != first.job.id
    # key order of args does not matter
    assert unique_key("k", {"a": 1, "b": 2}) == unique_key("k", {"b": 2, "a": 1})
    # forever, but a discarded job no longer blocks (not among the default unique states)
    f1 = jobs.insert(NewJob("once", {"x": 1}, unique_period_s=math.inf), now=T0)
    assert jobs.insert(NewJob("once", {"x": 1}, unique_period_s=math.inf), now=T0 + 10**6).duplicate
    jobs.update(f1.job.id, lambda r: replace(r, state=JobState.DISCARDED, discarded_at=T0), now=T0)
    assert not jobs.insert(NewJob("once", {"x": 1}, unique_period_s=math.inf), now=T0 + 10**6).duplicate


def test_a_caller_chosen_id_is_idempotent(store: Store) -> None:
    jobs = JobStore(store)
    a = jobs.insert(NewJob("optimize", {"n": 1}, id="raysubmit-abc123"), now=T0)
    b = jobs.insert(NewJob("optimize", {"n": 2}, id="raysubmit-abc123"), now=T0 + 5)
    assert not a.duplicate and b.duplicate and b.job.args == {"n": 1}
    assert sum(jobs.counts().values()) == 1


def test_concurrent_unique_inserts_make_one_job(store: Store) -> None:
    url = store.url.render_as_string(hide_password=False)
    stores = [open_store(url, shared=False) for _ in range(4)]
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def insert(s: Store) -> None:
        barrier.wait()
        out = JobStore(s).insert(NewJob("health_check", {"model": "m"}, unique_period_s=300), now=T0)
        results.append(out.duplicate)

    threads = [threading.Thread(target=insert, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert sorted(results) == [False, True, True, True]
    assert JobStore(store).counts()["available"] == 1


def test_claims_follow_priority_and_never_hand_a_job_to_two_workers(store: Store) -> None:
    jobs = JobStore(store)
    low = jobs.insert(NewJob("k", {"i": 0}, priority=5), now=T0).job
    for i in range(1, 9):
        jobs.insert(NewJob("k", {"i": i}), now=T0 + i)
    jobs.insert(NewJob("other", {}), now=T0)
    jobs.insert(NewJob("k", {"queue": "b"}, queue="b"), now=T0)
    first = jobs.claim(queues=["default"], limit=2, now=T0 + 10, start=_start(T0 + 10), kinds=["k"])
    assert [j.args["i"] for j in first] == [1, 2]  # priority 0 before 5, then oldest first
    assert all(j.state is JobState.EXECUTING and j.attempt == 1 for j in first)
    # four workers (own connections) claim the rest at once: disjoint, complete
    url = store.url.render_as_string(hide_password=False)
    stores = [open_store(url, shared=False) for _ in range(4)]
    got: list[list[str]] = []
    barrier = threading.Barrier(4)

    def claim(s: Store, name: str) -> None:
        barrier.wait()
        got.append([j.id for j in JobStore(s).claim(queues=["default"], limit=3, now=T0 + 11, start=_start(T0 + 11, name), kinds=["k"])])

    threads = [threading.Thread(target=claim, args=(s, f"w{i}")) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    ids = [i for batch in got for i in batch]
    assert len(ids) == len(set(ids)) == 7 and low.id in ids
    assert jobs.counts()["executing"] == 9
    assert jobs.counts()["available"] == 2  # the other kind and the other queue
    attempts = jobs.attempts(first[0].id)
    assert [(a.attempt, a.outcome, a.worker) for a in attempts] == [(1, "executing", "w1")]


def test_updates_are_compare_and_set_and_close_the_attempt(store: Store) -> None:
    jobs = JobStore(store)
    job = jobs.insert(NewJob("k", {}), now=T0).job
    [job] = jobs.claim(queues=["default"], limit=1, now=T0, start=_start(T0))
    # a stale writer (it thinks attempt 2 is running) changes nothing
    assert jobs.update(job.id, lambda r: replace(r, state=JobState.COMPLETED), now=T0, expect_attempt=2) is None
    assert jobs.update(job.id, lambda r: replace(r, state=JobState.COMPLETED), now=T0, expect_state=JobState.AVAILABLE) is None
    assert jobs.get(job.id).state is JobState.EXECUTING
    end = AttemptEnd("error", error_type="ValueError", error="ValueError: boom", traceback="Traceback ...\nValueError: boom")
    rec = jobs.update(
        job.id,
        lambda r: replace(r, state=JobState.RETRYABLE, scheduled_at=T0 + 17, last_error="ValueError: boom"),
        now=T0 + 1,
        expect_state=JobState.EXECUTING,
        expect_attempt=1,
        end_attempt=end,
    )
    assert rec is not None and rec.state is JobState.RETRYABLE
    [a] = jobs.attempts(job.id)
    assert (a.outcome, a.error_type, a.error, a.finished_at) == ("error", "ValueError", "ValueError: boom", pytest.approx(T0 + 1))
    assert a.traceback is not None and a.traceback.endswith("boom")
    # a function that raises writes nothing
    with pytest.raises(RuntimeError):
        jobs.update(job.id, lambda r: (_ for _ in ()).throw(RuntimeError("no")), now=T0)
    assert jobs.get(job.id).state is JobState.RETRYABLE
    with pytest.raises(ValidationError, match="JSON"):
        jobs.update(job.id, lambda r: replace(r, result={"x": float("inf")}), now=T0)


def test_heartbeats_only_count_for_the_running_attempt(store: Store) -> None:
    jobs = JobStore(store)
    job = jobs.insert(NewJob("k", {}), now=T0).job
    [job] = jobs.claim(queues=["default"], limit=1, now=T0, start=_start(T0))
    assert jobs.heartbeat(job.id, attempt=1, now=T0 + 5)
    assert jobs.get(job.id).heartbeat_at == pytest.approx(T0 + 5)
    assert not jobs.heartbeat(job.id, attempt=2, now=T0 + 6)
    assert [j.id for j in jobs.silent(heartbeat_before=T0 + 6)] == [job.id]
    assert jobs.silent(heartbeat_before=T0 + 4) == []
    jobs.update(job.id, lambda r: replace(r, state=JobState.CANCELLED, cancelled_at=T0 + 7), now=T0 + 7)
    assert not jobs.heartbeat(job.id, attempt=1, now=T0 + 8)
    jobs.set_ray_task_id(job.id, attempt=1, ray_task_id="abc")
    assert jobs.get(job.id).ray_task_id == "abc" and jobs.attempts(job.id)[0].ray_task_id == "abc"
    jobs.set_submission_id(job.id, "raysubmit_1")
    assert jobs.get(job.id).submission_id == "raysubmit_1"


def test_prune_deletes_old_finished_jobs_with_their_attempts(store: Store) -> None:
    jobs = JobStore(store)
    ids = {}
    for state, col in (("completed", "completed_at"), ("cancelled", "cancelled_at"), ("discarded", "discarded_at")):
        j = jobs.insert(NewJob("k", {"s": state}), now=T0).job
        [j] = jobs.claim(queues=["default"], limit=1, now=T0, start=_start(T0), ids=[j.id])
        jobs.update(j.id, lambda r, st=state, c=col: replace(r, state=JobState(st), **{c: T0 + 10}), now=T0 + 10)
        ids[state] = j.id
    fresh = jobs.insert(NewJob("k", {"s": "fresh"}), now=T0).job
    assert jobs.prune(before=T0 + 5) == 0
    assert jobs.prune(before=T0 + 11, states=[JobState.COMPLETED]) == 1
    assert jobs.prune(before=T0 + 11) == 2
    assert [j.id for j in jobs.find()] == [fresh.id]
    assert store.read(lambda s: list(s.scalars(select(JobAttemptRow)))) == []
    with pytest.raises(ValidationError, match="final"):
        jobs.prune(before=T0, states=[JobState.AVAILABLE])


def test_schedules_fire_once_per_run(store: Store) -> None:
    jobs = JobStore(store)
    sch = jobs.put_schedule(Schedule(name="health", kind="health_check", every_s=300, next_run_at=T0, args={"all": True}))
    assert sch.next_run_at == pytest.approx(T0)
    job = jobs.fire_schedule("health", expected_next_run_at=T0, next_run_at=T0 + 300, now=T0 + 1)
    assert job is not None and job.meta == {"schedule": "health"} and job.args == {"all": True}
    # a second scheduler that read the same next run fires nothing
    assert jobs.fire_schedule("health", expected_next_run_at=T0, next_run_at=T0 + 300, now=T0 + 1) is None
    [s] = jobs.schedules()
    assert s.next_run_at == pytest.approx(T0 + 300) and s.last_job_id == job.id
    # re-putting keeps the next run unless the interval changed
    jobs.put_schedule(Schedule(name="health", kind="health_check", every_s=300, next_run_at=T0 + 5))
    assert jobs.schedules()[0].next_run_at == pytest.approx(T0 + 300)
    jobs.put_schedule(Schedule(name="health", kind="health_check", every_s=60, next_run_at=T0 + 5))
    assert jobs.schedules()[0].next_run_at == pytest.approx(T0 + 5)
    with pytest.raises(ValidationError, match="every_s"):
        jobs.put_schedule(Schedule(name="bad", kind="k", every_s=0, next_run_at=T0))
    jobs.remove_schedule("health")
    assert jobs.schedules() == []
    with pytest.raises(NotFound):
        jobs.remove_schedule("health")
