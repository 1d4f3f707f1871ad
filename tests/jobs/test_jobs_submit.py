"""Ray job submission on a real cluster started with ``ray start --head`` (the session's): an
optimize job submitted through ``JobSubmissionClient`` with the runtime_env dspex builds (the
code-only dspex wheel in ``py_modules``), run by ``python -m dspex.jobs.optimize``, its result
in the store; submitting the same job id again starts nothing."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import pytest

from dspex.cluster.submit import Submitter, build_wheel, code_only_wheel, entrypoint, runtime_env
from dspex.errors import ConfigurationError
from dspex.pipelines.experiments import LMSpec
from dspex.pipelines.jobs import JobState, JobStore
from dspex.sim import SimServer
from dspex.store import Programs, open_store

pytestmark = pytest.mark.ray


def test_an_optimize_job_submitted_to_ray_runs_from_the_shipped_wheel_and_lands_in_the_store(
    ray_job_server: Any, sim_server: SimServer, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'cluster.db'}"
    store = open_store(url, shared=False)
    env = runtime_env(store_url=url)
    wheel = Path(env["py_modules"][0])
    assert wheel.suffix == ".whl" and env["env_vars"]["DSPEX_DATABASE_URL"] == url
    sub = Submitter(ray_job_server.dashboard_url, store=store, env=env)
    args = {
        "program": {"signature": "question -> answer", "module": "Predict"},
        "trainset": {"task": "arithmetic", "n": 8, "seed": 1, "split": "train"},
        "valset": {"task": "arithmetic", "n": 12, "seed": 1, "split": "dev"},
        "ray": True,  # the valset is scored on Ray workers of the job's cluster
        "optimizer": "BootstrapFewShot",
        "optimizer_params": {"max_bootstrapped_demos": 2, "max_labeled_demos": 2},
        "lm": LMSpec.from_sim(sim_server, "sim-medium-fast").model_dump(exclude_none=True),
        "save_as": "arith-on-ray",
    }
    first = sub.submit("optimize", args, max_attempts=2)
    assert first.created and first.entrypoint == f"python -P -m dspex.jobs.optimize --job-id {first.job_id}"
    again = sub.submit("optimize", args, job_id=first.job_id)
    assert not again.created and again.job_id == first.job_id
    lines: list[str] = []
    status = sub.follow(first.job_id, lines.append, timeout_s=240)
    logs = "\n".join(lines) or sub.logs(first.job_id)
    assert status == "SUCCEEDED", logs
    assert "runtime_resources" in logs and "/work/main/dspex" not in logs.split("from ", 1)[1].splitlines()[0]
    assert f"job {first.job_id} attempt 1: completed" in logs
    job = JobStore(store).get(first.job_id)
    assert job.state is JobState.COMPLETED and job.submission_id == first.job_id
    assert job.result is not None and job.result["program"] == "arith-on-ray" and job.result["version"] == 1
    v = Programs(store).version("arith-on-ray", 1)
    assert v.created_by == f"job:{first.job_id}" and v.state["demos"]
    jobs = [j for j in sub.client.list_jobs() if j.submission_id == first.job_id]
    assert len(jobs) == 1  # submitted once
    assert job.result["best_score_pct"] is not None  # scored on the valset
    from ray.util.state import list_actors

    workers = list_actors(filters=[("class_name", "=", "OptimizationWorker")], detail=True, address=ray_job_server.gcs_address)
    assert any(a.job_id == jobs[0].job_id for a in workers), "the job's evaluation did not run on Ray workers"
    store.close()


def test_the_wheel_is_code_only_and_cached(tmp_path: Path) -> None:
    wheel = build_wheel()
    assert build_wheel() == wheel  # same sources: the cached wheel
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "Requires-Dist" not in meta.split("\n\n")[0] and "Name: dspex" in meta
    for module in ("dspex/jobs/optimize.py", "dspex/pipelines/jobs/engine.py", "dspex/cluster/submit.py", "dspex/store/jobs.py"):
        assert module in names
    # the RECORD matches the rewritten files: pip accepts the wheel
    copy = code_only_wheel(wheel, tmp_path / wheel.name)
    import subprocess
    import sys

    target = tmp_path / "site"
    out = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-index", "--quiet", f"--target={target}", str(copy)],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert (target / "dspex" / "jobs" / "_entry.py").exists()


def test_runtime_env_never_carries_secrets() -> None:
    env = runtime_env(wheel=Path("/tmp/x.whl"), store_url="postgresql://dspex:hunter2@db:5432/dspex")
    assert "DSPEX_DATABASE_URL" not in env["env_vars"] and "hunter2" not in repr(env)
    rel = runtime_env(wheel=None, build=False, store_url="sqlite:///rel/path.db", pip=["rich"])
    assert rel["env_vars"]["DSPEX_DATABASE_URL"].startswith("sqlite:////") and rel["pip"] == ["rich"]
    assert "py_modules" not in rel
    with pytest.raises(ConfigurationError, match="secrets"):
        runtime_env(wheel=None, build=False, env_vars={"OPENAI_API_KEY": "sk-..."})
    assert entrypoint("health_check", "abc") == "python -P -m dspex.jobs.health --job-id abc"
    assert entrypoint("custom.kind", "abc") == "python -P -m dspex.jobs.run --job-id abc"
