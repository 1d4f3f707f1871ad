"""A job whose worker is killed mid-run is rescued, retried, and completes once: a worker
process killed with SIGKILL (found by its silent heartbeat), and a Ray worker killed under a
Ray task (found by ``ray.wait`` at once)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fixtures.store import ManualClock
from jobs.jobs_support import KIND_BLOCK

from dspex.pipelines.jobs import JobEngine, JobState, RayExecutor
from dspex.store import Store

TESTS = Path(__file__).resolve().parent.parent


def _wait_for(path: Path, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.05)  # polling a file another process writes
    raise AssertionError(f"{path} did not appear within {timeout_s} s")


def test_a_killed_worker_process_is_rescued_by_heartbeat_and_the_job_completes_once(
    job_store: Store, clock: ManualClock, tmp_path: Path
) -> None:
    eng = JobEngine(job_store, clock=clock, heartbeat_interval_s=0.1, rescue_after_s=60)
    job = eng.enqueue(KIND_BLOCK, {"dir": str(tmp_path)}).job
    url = job_store.url.render_as_string(hide_password=False)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(TESTS / "jobs" / "jobs_support.py"), url, job.id], env=env)
    try:
        pid = int(_wait_for(tmp_path / "started-1"))
        assert pid == proc.pid
        first_beat = eng.jobs.get(job.id).heartbeat_at
        deadline = time.monotonic() + 10
        while eng.jobs.get(job.id).heartbeat_at == first_beat and time.monotonic() < deadline:
            time.sleep(0.05)  # the worker beats every 0.1 s
        assert eng.jobs.get(job.id).heartbeat_at != first_beat
        clock.t = time.time()
        assert eng.tick().rescued == 0  # alive and beating: left alone
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    running = eng.jobs.get(job.id)
    assert running.state is JobState.EXECUTING and running.attempt == 1
    clock.t = (running.heartbeat_at or 0) + 59
    assert eng.tick().rescued == 0
    clock.advance(2)
    report = eng.tick()  # rescues it, then runs attempt 2 here
    assert report.rescued == 1 and report.started == 1
    done = eng.jobs.get(job.id)
    assert done.state is JobState.COMPLETED and done.attempt == 2 and done.result == {"attempt": 2, "pid": os.getpid()}
    attempts = eng.jobs.attempts(job.id)
    assert [(a.attempt, a.outcome) for a in attempts] == [(1, "rescued"), (2, "completed")]
    assert attempts[0].error_type == "WorkerLost" and "stopped heart-beating" in (attempts[0].error or "")
    assert (tmp_path / "completed").read_text().splitlines() == ["attempt 2"]
    eng.drain()
    assert (tmp_path / "completed").read_text().splitlines() == ["attempt 2"]


@pytest.mark.ray
def test_a_killed_ray_worker_is_rescued_and_the_job_completes_once_on_ray(
    ray_session: Any, job_store: Store, tmp_path: Path
) -> None:
    eng = JobEngine(job_store, executor=RayExecutor(max_in_flight=2), heartbeat_interval_s=0.2, rescue_after_s=30)
    job = eng.enqueue(KIND_BLOCK, {"dir": str(tmp_path)}).job
    assert eng.tick().started == 1
    pid = int(_wait_for(tmp_path / "started-1", timeout_s=120))
    running = eng.jobs.get(job.id)
    assert running.state is JobState.EXECUTING and running.ray_task_id
    assert running.worker is not None and running.worker.startswith("ray:")
    os.kill(pid, signal.SIGKILL)  # the Ray worker process running attempt 1
    deadline = time.monotonic() + 120
    while eng.jobs.get(job.id).state is not JobState.COMPLETED and time.monotonic() < deadline:
        eng.tick()
        eng.executor.wait(0.5)
    done = eng.jobs.get(job.id)
    assert done.state is JobState.COMPLETED and done.attempt == 2
    assert done.result is not None and done.result["pid"] != pid
    attempts = eng.jobs.attempts(job.id)
    assert [(a.attempt, a.outcome) for a in attempts] == [(1, "rescued"), (2, "completed")]
    assert "Ray task" in (attempts[0].error or "") and attempts[0].ray_task_id == running.ray_task_id
    assert (tmp_path / "completed").read_text().splitlines() == ["attempt 2"]
    finished = eng.drain()  # the task returns just after it recorded the outcome
    assert [o.state for o in finished] in ([], [JobState.COMPLETED]) and eng.executor.idle()
