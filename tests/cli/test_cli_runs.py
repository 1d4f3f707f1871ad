"""``dspex optimize``, ``evaluate``, ``experiments`` and ``jobs`` through typer's runner: real runs on
the simulated LM server recorded as durable jobs; bad input (unknown model or optimizer,
malformed files, illegal transitions) exits 1 with one sentence and writes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from jobs.jobs_support import KIND_COUNT, KIND_FAIL

from dspex.pipelines.jobs import JobEngine, JobState, JobStore
from dspex.sim import SimServer, get_task
from dspex.store import Programs, Store
from dspex.store.experiments import ExperimentStore

Run = Callable[..., Result]
ErrorOf = Callable[[Result], str]


def _lm(sim: SimServer, model: str = "sim-medium-fast") -> list[str]:
    return ["--lm", f"openai/{model}", "--api-base", sim.openai_base_url]


def test_optimize_then_evaluate_the_saved_version(run: Run, cli_store: Store, sim: SimServer) -> None:
    r = run("optimize", "--program", "question -> answer", "--task", "arithmetic", "--n", "10", "--val-n", "12",
            "--param", "max_bootstrapped_demos=2", "--param", "max_labeled_demos=2", *_lm(sim), "--save-as", "arith",
            "--tag", "cli")
    assert r.exit_code == 0, r.output
    assert "optimize job" in r.stdout and "completed" in r.stdout and "arith" in r.stdout
    v = Programs(cli_store).version("arith", 1)
    assert v.tags == ("cli",) and v.notes["optimizer_params"] == {"max_bootstrapped_demos": 2, "max_labeled_demos": 2}
    [job] = JobStore(cli_store).find(kinds=["optimize"])
    assert job.state is JobState.COMPLETED and job.max_attempts == 1

    r = run("evaluate", "--program", "arith@1", "--task", "arithmetic", "--n", "20", *_lm(sim), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["state"] == "completed" and out["result"]["n"] == 20 and out["result"]["version"] == 1
    assert 0 <= out["result"]["score_pct"] <= 100


def test_bad_optimize_and_evaluate_input_writes_nothing(run: Run, error_of: ErrorOf, cli_store: Store, sim: SimServer, tmp_path: Path) -> None:
    malformed = tmp_path / "bad.jsonl"
    malformed.write_text('{"question": "1+1?", "answer": "2"}\n{"question": oops}\n')
    base = ["--program", "question -> answer"]
    cases: list[tuple[list[str], str]] = [
        (["optimize", *base, "--task", "arithmetic", "--n", "4", *_lm(sim), "--save-as", "x", "--optimizer", "Nope"], "Unknown optimizer 'Nope'"),
        (["optimize", *base, "--task", "arithmetic", "--n", "4", "--model", "ghost", "--save-as", "x"], "ghost"),
        (["optimize", *base, "--data", str(malformed), *_lm(sim), "--save-as", "x"], "line 2 is not JSON"),
        (["optimize", *base, "--data", str(tmp_path / "missing.jsonl"), *_lm(sim), "--save-as", "x"], "No dataset file"),
        (["optimize", *base, "--task", "arithmetic", "--n", "4", "--data", str(malformed), *_lm(sim), "--save-as", "x"], "not both"),
        (["optimize", *base, "--task", "arithmetic", "--n", "4", *_lm(sim)], "--save-as"),
        (["optimize", *base, "--task", "arithmetic", "--n", "4", *_lm(sim), "--save-as", "x", "--param", "oops"], "key=value"),
        (["optimize", "--program", "nosuch.module:prog", "--task", "arithmetic", "--n", "4", *_lm(sim), "--save-as", "x"], "nosuch"),
        (["evaluate", "--program", "ghost@2", "--task", "arithmetic", "--n", "4", *_lm(sim)], "No program named 'ghost'"),
        (["evaluate", *base, "--task", "chess", "--n", "4", *_lm(sim)], "No simulated task 'chess'"),
        (["evaluate", *base, "--task", "arithmetic", "--n", "4", "--lm", "noslash"], "provider/name"),
        (["evaluate", *base, "--task", "arithmetic", "--n", "4"], "Name the model"),
    ]
    for args, want in cases:
        line = error_of(run(*args))
        assert want in line, (args, line)
    assert JobStore(cli_store).find() == [] and Programs(cli_store).all() == []
    bad_usage = run("optimize", "--task", "arithmetic")
    assert bad_usage.exit_code == 2  # typer's own: a required option is missing


def test_a_failing_local_run_exits_1_and_keeps_its_error(run: Run, error_of: ErrorOf, cli_store: Store, sim: SimServer) -> None:
    r = run("evaluate", "--program", "question -> answer", "--task", "arithmetic", "--n", "4",
            "--lm", "openai/sim-small-fast", "--api-base", "http://127.0.0.1:9/v1")
    line = error_of(r)
    [job] = JobStore(cli_store).find()
    assert f"evaluate job {job.id} is discarded: JobError: All 4 examples failed" in line and "dspex jobs show" in line
    assert job.state is JobState.DISCARDED and JobStore(cli_store).attempts(job.id)[0].outcome == "error"


def _spec(sim: SimServer) -> dict[str, Any]:
    from dspex.pipelines.experiments import LMSpec

    return {
        "name": "cli-hints",
        "dataset": {"task": "classification", "n_train": 4, "n_test": 24, "seed": 5},
        "lm": LMSpec.from_sim(sim, "sim-small-fast").model_dump(exclude_none=True),
        "variants": [{"name": "hints", "instructions": get_task("classification").best_instruction()}],
        "n_resamples": 99,
    }


def test_experiments_run_and_report(run: Run, error_of: ErrorOf, cli_store: Store, sim: SimServer, tmp_path: Path) -> None:
    spec_file = tmp_path / "exp.json"
    spec_file.write_text(json.dumps(_spec(sim)))
    r = run("experiments", "run", str(spec_file), "--backend", "local", "--json")
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)["result"]
    exp_id = result["experiment_id"]
    assert result["n"] == 24 and result["conclusion"]
    listed = run("experiments", "report", "--list", "--json")
    assert [e["id"] for e in json.loads(listed.stdout)] == [exp_id]
    md = run("experiments", "report", "cli-hints")
    assert md.exit_code == 0 and md.stdout.startswith("# Experiment: cli-hints") and "## Conclusion" in md.stdout
    out = run("experiments", "report", exp_id, "--out", str(tmp_path / "rep"), "--json")
    assert out.exit_code == 0, out.output
    paths = json.loads(out.stdout)["paths"]
    assert {"report.md", "experiment.json", "forest.png"} <= set(paths) and all(Path(p).exists() for p in paths.values())
    assert "cli-hints" in run("experiments", "report", "--list").stdout

    # bad input: malformed file, invalid spec, unknown experiment; nothing more is written
    malformed = tmp_path / "bad.json"
    malformed.write_text('{"name": "x",')
    yaml_bad = tmp_path / "bad.yaml"
    yaml_bad.write_text("name: [x\n")
    assert "is not valid JSON" in error_of(run("experiments", "run", str(malformed)))
    assert "is not valid YAML" in error_of(run("experiments", "run", str(yaml_bad)))
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps({**_spec(sim), "variants": []}))
    assert "Invalid ExperimentSpec" in error_of(run("experiments", "run", str(invalid)))
    assert "No such file" in error_of(run("experiments", "run", str(tmp_path / "missing.json")))
    assert "No experiment named 'ghost'" in error_of(run("experiments", "report", "ghost"))
    assert "--backend" in error_of(run("experiments", "run", str(spec_file), "--backend", "cloud"))
    assert len(ExperimentStore(cli_store).find()) == 1 and len(JobStore(cli_store).find()) == 1


def test_jobs_list_show_retry_cancel_and_work(run: Run, error_of: ErrorOf, cli_store: Store, tmp_path: Path) -> None:
    engine = JobEngine(cli_store)
    failing = engine.enqueue(KIND_FAIL, {"why": "test"}, max_attempts=1).job
    engine.drain()
    waiting = engine.enqueue(KIND_COUNT, {"dir": str(tmp_path), "name": "w"}).job

    listed = json.loads(run("jobs", "list", "--json").stdout)
    assert listed["counts"]["discarded"] == 1 and listed["counts"]["available"] == 1
    assert [j["id"] for j in listed["jobs"]] == [waiting.id, failing.id]
    table = run("jobs", "list", "--state", "discarded").stdout
    assert failing.id in table and waiting.id not in table and "RuntimeError: failure of attempt 1" in table

    shown = json.loads(run("jobs", "show", failing.id, "--json").stdout)
    assert shown["state"] == "discarded" and shown["attempts"][0]["error"] == "RuntimeError: failure of attempt 1"
    assert "failure of attempt 1" in run("jobs", "show", failing.id).stdout

    line = error_of(run("jobs", "retry", failing.id, "--run"))  # one more attempt, which fails too
    assert f"job {failing.id} is discarded: RuntimeError: failure of attempt 2" in line
    assert len(JobStore(cli_store).attempts(failing.id)) == 2
    assert "Cannot cancel a job that is discarded" in error_of(run("jobs", "cancel", failing.id))
    r = run("jobs", "retry", failing.id)
    assert r.exit_code == 0 and "available again" in r.stdout
    r = run("jobs", "cancel", failing.id, "--reason", "not needed")
    assert r.exit_code == 0 and JobStore(cli_store).get(failing.id).state is JobState.CANCELLED

    worked = run("jobs", "work", "--once", "--threads", "2")
    assert worked.exit_code == 0, worked.output
    assert JobStore(cli_store).get(waiting.id).state is JobState.COMPLETED

    assert "No job 'nope'" in error_of(run("jobs", "show", "nope"))
    assert "No job 'nope'" in error_of(run("jobs", "retry", "nope"))
    assert "No job 'nope'" in error_of(run("jobs", "cancel", "nope"))
    assert "Unknown job state 'done'" in error_of(run("jobs", "list", "--state", "done"))
    assert "--threads" in error_of(run("jobs", "work", "--threads", "0"))


@pytest.mark.ray
def test_evaluate_submitted_as_a_ray_job_through_the_cli(run: Run, cli_store: Store, sim_server: SimServer, ray_job_server: Any) -> None:
    r = run("evaluate", "--program", "question -> answer", "--task", "arithmetic", "--n", "6", *_lm(sim_server),
            "--submit", "--address", ray_job_server.dashboard_url, "--job-id", "clisubmit1", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["id"] == "clisubmit1" and out["state"] == "completed" and out["result"]["n"] == 6
    assert "attempt 1: completed" in r.stderr  # the job's logs, tailed
    again = run("evaluate", "--program", "question -> answer", "--task", "arithmetic", "--n", "6", *_lm(sim_server),
                "--submit", "--address", ray_job_server.dashboard_url, "--job-id", "clisubmit1", "--no-follow", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["created"] is False
    assert len(JobStore(cli_store).attempts("clisubmit1")) == 1


@pytest.mark.ray
def test_jobs_work_runs_the_queue_as_ray_tasks(run: Run, cli_store: Store, ray_session: Any, tmp_path: Path) -> None:
    engine = JobEngine(cli_store)
    ids = [engine.enqueue(KIND_COUNT, {"dir": str(tmp_path), "name": f"r{i}"}).job.id for i in range(3)]
    r = run("jobs", "work", "--ray", "--once", "--threads", "3")
    assert r.exit_code == 0, r.output
    for job_id in ids:
        job = JobStore(cli_store).get(job_id)
        assert job.state is JobState.COMPLETED and job.ray_task_id and (job.worker or "").startswith("ray:")
