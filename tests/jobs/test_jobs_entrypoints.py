"""``python -m dspex.jobs.<kind>`` as ``ray job submit`` runs it (a subprocess here): exit codes
scripts can trust, a completed job is not run twice, bad usage is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dspex.pipelines.jobs import JobEngine, JobState, JobStore
from dspex.store import open_store


def _run(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-P", "-m", *args], capture_output=True, text=True, timeout=timeout_s)


def test_entry_points_run_a_job_once_and_exit_with_its_outcome(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'entry.db'}"
    first = _run("dspex.jobs.health", "--store", url, "--args", "{}", "--job-id", "health1")
    assert first.returncode == 0, first.stderr
    assert "job health1 (health_check) created" in first.stdout and "attempt 1: completed" in first.stdout
    record = json.loads(first.stdout.strip().splitlines()[-1])
    assert record["state"] == "completed" and record["result"] == {"checked": 0, "healthy": 0, "models": {}}
    again = _run("dspex.jobs.run", "--store", url, "--job-id", "health1")
    assert again.returncode == 0 and "attempt 2" not in again.stdout  # completed: not run again
    store = open_store(url, shared=False)
    try:
        assert len(JobStore(store).attempts("health1")) == 1

        bad = _run("dspex.jobs.health", "--store", url, "--args", '{"model": "ghost"}')
        assert bad.returncode == 1
        assert json.loads(bad.stdout.strip().splitlines()[-1])["state"] == "discarded"
        assert "No model" in bad.stdout

        other = JobEngine(store).enqueue("evaluate", {"program": {"signature": "q -> a"}}).job
        wrong = _run("dspex.jobs.optimize", "--store", url, "--job-id", other.id)
        assert wrong.returncode == 2 and "is a 'evaluate' job" in wrong.stderr
        assert JobStore(store).get(other.id).state is JobState.AVAILABLE  # untouched
    finally:
        store.close()
    missing = _run("dspex.jobs.run", "--store", url, "--job-id", "nope")
    assert missing.returncode == 1 and "No job 'nope'" in missing.stderr
    not_json = _run("dspex.jobs.health", "--store", url, "--args", "{oops")
    assert not_json.returncode == 2 and "not JSON" in not_json.stderr
    nothing = _run("dspex.jobs.health", "--store", url)
    assert nothing.returncode == 2 and "--job-id" in nothing.stderr
