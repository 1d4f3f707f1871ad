"""The built-in job kinds end to end on the simulated LM server over HTTP, in process: optimize
(saved as a version, idempotent across retries), evaluate (a stored version), health checks,
an experiment recorded in the store, rollout ticks through the installed ticker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dspex.errors import JobError
from dspex.pipelines.experiments import LMSpec
from dspex.pipelines.experiments.store_archive import StoreArchive
from dspex.pipelines.jobs import JobEngine, JobState, set_rollout_ticker
from dspex.pipelines.jobs.inputs import build_program, load_dataset, parse_program_ref
from dspex.registry import ModelRegistry
from dspex.sim import SimServer, get_task
from dspex.store import Programs, Store


def _lm(sim: SimServer, model: str = "sim-medium-fast") -> dict[str, Any]:
    return LMSpec.from_sim(sim, model).model_dump(exclude_none=True)


def _has_key(value: Any, key: str) -> bool:
    if isinstance(value, dict):
        return key in value or any(_has_key(v, key) for v in value.values())
    if isinstance(value, list):
        return any(_has_key(v, key) for v in value)
    return False


def test_optimize_saves_a_version_once_and_evaluate_scores_it(job_store: Store, sim: SimServer) -> None:
    eng = JobEngine(job_store, heartbeat_interval_s=0.2, rescue_after_s=30)
    args = {
        "program": {"signature": "question -> answer", "module": "Predict"},
        "trainset": {"task": "arithmetic", "n": 12, "seed": 0, "split": "train"},
        "valset": {"task": "arithmetic", "n": 16, "seed": 0, "split": "dev"},
        "optimizer": "BootstrapFewShot",
        "optimizer_params": {"max_bootstrapped_demos": 2, "max_labeled_demos": 2},
        "lm": _lm(sim),
        "save_as": "arith",
        "tags": ["candidate"],
    }
    job = eng.enqueue("optimize", args).job
    [out] = eng.drain()
    assert out.state is JobState.COMPLETED, out.error
    result = eng.jobs.get(job.id).result
    assert result is not None and result["program"] == "arith" and result["version"] == 1
    assert result["optimizer"] == "BootstrapFewShot" and result["lm"] == "openai/sim-medium-fast"
    v = Programs(job_store).version("arith", 1)
    assert v.created_by == f"job:{job.id}" and v.tags == ("candidate",)
    assert v.notes["recipe"] == {"signature": "question -> answer", "module": "Predict"}
    assert v.score is not None and 0 <= v.score <= 1 and v.trainset_hash
    assert not _has_key(v.state, "lm")  # the run's model is not pinned into the version
    assert 1 <= len(v.state["demos"]) <= 4  # a Predict's state is its own
    # an operator retries the completed job: the version it saved is found, not saved again
    eng.retry(job.id)
    [again] = eng.drain()
    assert again.state is JobState.COMPLETED and again.job.result is not None
    assert again.job.result["resumed"] is True and again.job.result["version"] == 1
    assert [x.version for x in Programs(job_store).versions("arith")] == [1]

    ev = eng.enqueue(
        "evaluate",
        {"program": {"stored": "arith", "version": 1}, "devset": {"task": "arithmetic", "n": 20, "split": "dev"}, "lm": _lm(sim)},
    ).job
    [done] = eng.drain()
    assert done.state is JobState.COMPLETED, done.error
    r = eng.jobs.get(ev.id).result
    assert r is not None and r["n"] == 20 and 0 <= r["score_pct"] <= 100 and r["version"] == 1


def test_bad_args_are_discarded_at_once_with_a_clear_error(job_store: Store, sim: SimServer, tmp_path: Path) -> None:
    eng = JobEngine(job_store, heartbeat_interval_s=0.2, rescue_after_s=30)
    cases = {
        "optimize": [
            ({"program": {"import": "no_such_module:prog"}, "trainset": {"task": "arithmetic", "n": 4}, "lm": _lm(sim), "save_as": "x"}, "no_such_module"),
            ({"program": {"signature": "question -> answer"}, "trainset": {"task": "arithmetic", "n": 4}, "lm": _lm(sim), "save_as": "x", "optimizer": "Nope"}, "Unknown optimizer"),
            ({"program": {"signature": "question -> answer"}, "trainset": {"task": "arithmetic", "n": 4}, "lm": {"registry": "ghost"}, "save_as": "x"}, "ghost"),
        ],
        "evaluate": [
            ({"program": {"stored": "missing"}, "devset": {"task": "arithmetic", "n": 4}, "lm": _lm(sim)}, "missing"),
            ({"program": {"signature": "question -> answer"}, "devset": {"path": str(tmp_path / "nope.jsonl")}, "lm": _lm(sim)}, "No dataset file"),
            ({"program": {"signature": "question -> answer"}, "devset": {"task": "chess", "n": 4}, "lm": _lm(sim)}, "No simulated task"),
            ({"program": {"signature": "question -> answer"}}, "lack"),
        ],
    }
    ids = [(eng.enqueue(kind, a).job.id, want) for kind, items in cases.items() for a, want in items]
    eng.drain()
    for job_id, want in ids:
        rec = eng.jobs.get(job_id)
        assert rec.state is JobState.DISCARDED and rec.attempt == 1, (want, rec.last_error)
        assert want in (rec.last_error or ""), (want, rec.last_error)
    assert Programs(job_store).all() == []


def test_jsonl_datasets_and_program_refs(tmp_path: Path) -> None:
    data = tmp_path / "qa.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2"}\n\n{"question": "2+2?", "answer": "4"}\n')
    program, info = build_program(parse_program_ref("question -> answer"))
    examples = load_dataset({"path": str(data)}, program)
    assert [e.question for e in examples] == ["1+1?", "2+2?"] and set(examples[0].inputs().keys()) == {"question"}
    assert info["recipe"] == {"signature": "question -> answer", "module": "Predict"}
    assert parse_program_ref("qa@champion") == {"stored": "qa", "version": "champion"}
    assert parse_program_ref("qa@3") == {"stored": "qa", "version": 3}
    assert parse_program_ref("qa", version="2") == {"stored": "qa", "version": 2}
    assert parse_program_ref("pkg.mod:attr") == {"import": "pkg.mod:attr"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1"}\n{not json}\n')
    with pytest.raises(JobError, match="line 2 is not JSON"):
        load_dataset({"path": str(bad)}, program)
    bad.write_text('{"q": "1"}\n')
    with pytest.raises(JobError, match=r"line 1 lacks the input field\(s\) \['question'\]"):
        load_dataset({"path": str(bad)}, program)
    bad.write_text('[1, 2]\n')
    with pytest.raises(JobError, match="not a JSON object"):
        load_dataset({"path": str(bad)}, program)
    with pytest.raises(JobError, match="version only applies"):
        parse_program_ref("pkg.mod:attr", version=3)
    with pytest.raises(JobError, match="--module"):
        parse_program_ref("q -> a", module="ReAct")


def test_health_checks_probe_models_and_record_their_health(job_store: Store, sim: SimServer) -> None:
    reg = ModelRegistry(job_store)
    reg.register("medium", "openai", "sim-medium-fast", base_url=sim.openai_base_url)
    reg.register("gone", "openai", "sim-small-fast", base_url="http://127.0.0.1:9/v1", config={"timeout_s": 2})
    reg.register("old", "openai", "sim-small-fast", base_url=sim.openai_base_url)
    reg.deprecate("old")
    eng = JobEngine(job_store, heartbeat_interval_s=0.2, rescue_after_s=30)
    job = eng.enqueue("health_check", {"timeout_s": 5}).job
    assert eng.enqueue("health_check", {"timeout_s": 5}).duplicate  # unique for 60 s by default
    [out] = eng.drain()
    assert out.state is JobState.COMPLETED, out.error
    r = eng.jobs.get(job.id).result
    assert r is not None and r["checked"] == 2 and r["healthy"] == 1
    assert r["models"]["medium"]["success"] and r["models"]["medium"]["health"] == "healthy"
    assert not r["models"]["gone"]["success"] and r["models"]["gone"]["error"]
    fresh = ModelRegistry(job_store)
    assert fresh.get("medium").last_health_check_s is not None
    assert fresh.get("old").last_health_check_s is None  # deprecated: not probed


def test_an_experiment_job_records_its_run_in_the_store(job_store: Store, sim: SimServer, tmp_path: Path) -> None:
    task = get_task("classification")
    spec = {
        "name": "hints-job",
        "dataset": {"task": "classification", "n_train": 4, "n_test": 24, "seed": 2},
        "lm": _lm(sim, "sim-small-fast"),
        "variants": [{"name": "hints", "instructions": task.best_instruction()}],
        "n_resamples": 99,
    }
    eng = JobEngine(job_store, heartbeat_interval_s=0.2, rescue_after_s=30)
    job = eng.enqueue("experiment", {"spec": spec, "backend": "local", "report_dir": str(tmp_path / "report")}).job
    [out] = eng.drain()
    assert out.state is JobState.COMPLETED, out.error
    r = eng.jobs.get(job.id).result
    assert r is not None and r["n"] == 24 and r["conclusion"]
    record = StoreArchive(job_store).load(r["experiment_id"])
    assert record.status == "completed" and set(record.arms) == {"baseline", "hints"}
    assert (tmp_path / "report" / "report.md").exists()
    bad = eng.enqueue("experiment", {"spec": {**spec, "variants": []}}).job
    eng.drain()
    assert eng.jobs.get(bad.id).state is JobState.DISCARDED
    assert "variants" in (eng.jobs.get(bad.id).last_error or "")


def test_rollout_ticks_call_the_installed_ticker(job_store: Store) -> None:
    seen: list[tuple[dict[str, Any], int]] = []

    def ticker(args: dict[str, Any], ctx: Any) -> dict[str, Any]:
        seen.append((args, ctx.attempt))
        return {"phase": "progressing", "weight": 10.0}

    eng = JobEngine(job_store, heartbeat_interval_s=0.2, rescue_after_s=30)
    set_rollout_ticker(ticker)
    try:
        job = eng.enqueue("rollout_tick", {"program": "qa"}).job
        eng.drain()
    finally:
        set_rollout_ticker(None)
    assert seen == [({"program": "qa"}, 1)]
    assert eng.jobs.get(job.id).result == {"phase": "progressing", "weight": 10.0}
    missing = eng.enqueue("rollout_tick", {"program": "qa", "ticker": "dspex.pipelines.rollouts.no_such:tick"}).job
    eng.drain()
    rec = eng.jobs.get(missing.id)
    assert rec.state is JobState.DISCARDED and "No rollout controller is installed" in (rec.last_error or "")
