"""Offline experiments end to end on the simulated LM server, in process.

Real parts throughout: the sim server over HTTP on 127.0.0.1, dspex.LM with its response
cache, BootstrapFewShot, the store-backed model registry, the JSON archive.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from dspex.pipelines.experiments.record import ExperimentArchive, ExperimentRecord
from dspex.pipelines.experiments.runner import ExperimentRunner
from dspex.pipelines.experiments.spec import DatasetSpec, ExperimentSpec, LMSpec, VariantSpec

from dspex.clients.cache import LMCache, configure_cache
from dspex.errors import ExperimentError, InvalidTransition, NotFound
from dspex.sim import SimServer, expected_score, get_task

TASK = get_task("classification")


@pytest.fixture
def private_cache(tmp_path: Path) -> Iterator[LMCache]:
    """A response cache of this test only, so every first call is really paid for."""
    cache = configure_cache(disk_dir=tmp_path / "cache")
    yield cache
    configure_cache()  # back to the default location


def test_arms_run_on_the_same_examples_with_measured_cost_latency_and_statistics(
    sim: SimServer, private_cache: LMCache, tmp_path: Path
) -> None:
    small = LMSpec.from_sim(sim, "sim-small-fast", temperature=1.0)
    spec = ExperimentSpec(
        name="hints-model-bootstrap",
        hypothesis="A larger model beats prompt work on support tickets.",
        dataset=DatasetSpec(task="classification", n_train=20, n_test=120, seed=3),
        lm=small,
        variants=[
            VariantSpec(name="hints", instructions=TASK.best_instruction()),
            VariantSpec(
                name="large", model=LMSpec.from_sim(sim, "sim-large-fast", temperature=1.0)
            ),
            VariantSpec(
                name="bootstrap",
                optimizer="BootstrapFewShot",
                optimizer_params={"max_bootstrapped_demos": 3, "max_labeled_demos": 3},
            ),
        ],
        margin=0.02,
        target_effect=0.10,
        n_resamples=999,
        seed=11,
    )
    archive = ExperimentArchive(tmp_path / "experiments")
    runner = ExperimentRunner(backend="local", archive=archive)
    result = runner.run(spec)

    # Every arm on the same 120 test examples, in the same order.
    assert list(result.arms) == ["baseline", "hints", "large", "bootstrap"]
    assert result.n == 120 and len(set(result.example_ids)) == 120
    assert all(len(arm.examples) == 120 for arm in result.arms.values())
    test_refs = [f"classification:3:train:{i}" for i in result.split["test_indices"]]
    assert result.example_ids == test_refs
    assert result.split["stratified_by"] == "label"

    # Scores agree with the simulator's known expected scores (within 3 standard errors).
    from dspex.sim import load_task

    test_set = [load_task("classification", 140, seed=3)[i] for i in result.split["test_indices"]]
    for name, model, instructions in [
        ("baseline", "sim-small", ""),
        ("hints", "sim-small", TASK.best_instruction()),
        ("large", "sim-large", ""),
    ]:
        p = expected_score("classification", test_set, model=model, instructions=instructions)
        assert abs(result.arms[name].mean - p) < 3 * np.sqrt(p * (1 - p) / 120), name

    # Cost and latency from real calls: every call paid (fresh cache), summed cost = the
    # simulator's own bill per model.
    stats = sim.stats()["models"]
    small_cost = sum(
        a.cost_usd + a.optimization["cost_usd"] for n, a in result.arms.items() if n != "large"
    )
    assert small_cost == pytest.approx(stats["sim-small-fast"]["cost_usd"], rel=1e-6)
    assert result.arms["large"].cost_usd == pytest.approx(
        stats["sim-large-fast"]["cost_usd"], rel=1e-6
    )
    for arm in result.arms.values():
        assert arm.paid_calls == arm.lm_calls == 120
        p50, p95 = arm.latency_ms(0.5), arm.latency_ms(0.95)
        assert p50 is not None and p95 is not None and 0 < p50 <= p95
    assert result.arms["bootstrap"].optimization["lm_calls"] >= 3
    cost = {n: a.cost_per_example_usd for n, a in result.arms.items()}
    assert cost["large"] > 10 * cost["baseline"] > 0  # sim-large's prices are 25-33x sim-small's

    # Statistics: McNemar per variant, Holm, a written conclusion with cost and the front.
    assert result.kind == "binary"
    large = result.comparison.variant("large")
    assert large.test.startswith("mcnemar") and large.significant and large.verdict == "better"
    assert result.winner == "large"
    assert result.conclusion.startswith("Winner: large")
    assert "Cost and latency" in result.conclusion and "Pareto front" in result.conclusion
    assert result.trade_off and any(p.name == "large" and p.on_front for p in result.pareto)
    assert result.planning is not None and result.planning.margin == 0.10

    # Persisted: the record holds the spec, per-arm results and the report data.
    (record,) = archive.list()
    assert record.status == "completed" and record.duration_s is not None
    assert record.result is not None and record.result["winner"] == "large"
    assert set(record.arms) == set(result.arms)
    assert len(record.arms["hints"]["examples"]) == 120
    json.loads((tmp_path / "experiments" / f"{record.id}.json").read_text())

    # A rerun sends the same requests: all answered by the cache, same per-example scores.
    again = runner.run(spec)
    for name, arm in again.arms.items():
        assert arm.scores == result.arms[name].scores
        assert arm.paid_calls == 0 and arm.cost_usd == 0.0 and arm.cost_per_example_usd is None
    assert again.winner == "large"
    assert "every answer came from the cache" in again.conclusion


def test_repeats_average_independent_samples_and_switch_to_scored_tests(
    sim: SimServer, private_cache: LMCache
) -> None:
    spec = ExperimentSpec(
        name="repeats",
        dataset=DatasetSpec(task="arithmetic", n_train=0, n_test=30, seed=2),
        lm=LMSpec.from_sim(sim, "sim-medium-fast", temperature=1.0),
        variants=[
            VariantSpec(name="hints", instructions=get_task("arithmetic").best_instruction())
        ],
        repeats=3,
        n_resamples=999,
    )
    result = ExperimentRunner(backend="local").run(spec)
    base = result.arms["baseline"]
    assert all(len(e.scores) == 3 for e in base.examples)
    assert base.lm_calls == base.paid_calls == 90
    assert any(0 < e.score < 1 for e in base.examples)  # the repeats really differ
    assert result.kind == "scored"
    v = result.comparison.variant("hints")
    assert v.test == "paired-permutation" and v.bootstrap is not None
    assert v.difference == pytest.approx(result.arms["hints"].mean - base.mean)


def test_identical_arms_at_temperature_zero_agree_exactly(
    sim: SimServer, private_cache: LMCache
) -> None:
    spec = ExperimentSpec(
        name="greedy-aa",
        dataset=DatasetSpec(task="classification", n_train=0, n_test=40, seed=5),
        lm=LMSpec.from_sim(sim, "sim-medium-fast", temperature=0.0),
        variants=[VariantSpec(name="same")],
        n_resamples=999,
    )
    result = ExperimentRunner(backend="local").run(spec)
    assert result.arms["same"].scores == result.arms["baseline"].scores
    # the same 40 requests: each paid once, by whichever arm sent it first (the cache
    # coalesces the other arm's identical call in flight)
    assert result.arms["same"].paid_calls + result.arms["baseline"].paid_calls == 40
    v = result.comparison.variant("same")
    assert v.p_value == 1.0 and v.verdict == "no_detectable_difference"
    assert "no detectable difference at n=40" in result.conclusion


def test_a_failing_arm_fails_the_experiment_and_the_record_says_why(
    sim: SimServer, private_cache: LMCache, tmp_path: Path
) -> None:
    archive = ExperimentArchive(tmp_path)
    ghost = LMSpec(model="openai/sim-ghost", api_base=sim.openai_base_url, num_retries=0)
    spec = ExperimentSpec(
        name="ghost",
        dataset=DatasetSpec(task="classification", n_train=0, n_test=20, seed=1),
        lm=LMSpec.from_sim(sim, "sim-small-fast"),
        variants=[VariantSpec(name="ghost", model=ghost)],
    )
    with pytest.raises(ExperimentError, match="Arm 'ghost' failed") as info:
        ExperimentRunner(backend="local", archive=archive).run(spec)
    assert info.value.fields["arm"] == "ghost"
    (record,) = archive.list()
    assert record.status == "failed" and "ghost" in (record.error or "")
    assert record.result is None


def test_registry_models_resolve_to_their_client_settings_and_prices(
    sim: SimServer, private_cache: LMCache, sqlite_store: object
) -> None:
    from dspex.registry import ModelRegistry

    registry = ModelRegistry(sqlite_store)  # type: ignore[arg-type]
    registry.register(
        "medium",
        "openai_compatible",
        "sim-medium-fast",
        base_url=sim.openai_base_url,
        input_price_per_1m_usd=1.0,
        output_price_per_1m_usd=4.0,
        config={"temperature": 1.0},
    )
    registry.approve("medium")
    registry.register("old", "openai_compatible", "sim-small-fast", base_url=sim.openai_base_url)
    registry.approve("old")
    registry.deprecate("old")
    runner = ExperimentRunner(backend="local", registry=registry)
    resolved = runner.resolve_model("medium")
    assert resolved.model == "openai/sim-medium-fast" and resolved.temperature == 1.0
    assert (resolved.input_price_per_1m_usd, resolved.output_price_per_1m_usd) == (1.0, 4.0)
    assert resolved.api_base == sim.openai_base_url and resolved.num_retries >= 3
    with pytest.raises(ExperimentError, match="deprecated"):
        runner.resolve_model("old")
    with pytest.raises(ExperimentError, match="No model 'nope' in the registry"):
        runner.resolve_model("nope")

    spec = ExperimentSpec(
        name="registry",
        dataset=DatasetSpec(task="classification", n_train=0, n_test=20, seed=9),
        lm=LMSpec.from_sim(sim, "sim-small-fast", temperature=1.0),
        variants=[VariantSpec(name="medium", model="medium")],
        n_resamples=999,
    )
    result = runner.run(spec)
    arm = result.arms["medium"]
    assert arm.model == "openai/sim-medium-fast"
    assert arm.cost_usd == pytest.approx(
        sim.stats()["models"]["sim-medium-fast"]["cost_usd"], rel=1e-6
    )
    assert arm.cost_usd > 0


def test_record_state_machine_and_archive() -> None:
    now = iter([10.0, 11.0, 15.0])
    rec = ExperimentRecord(name="e", spec={"name": "e"}, created_s=next(now))
    rec.transition("start", next(now))
    with pytest.raises(InvalidTransition, match="allowed actions are: cancel, complete, fail"):
        rec.transition("start", 12.0)
    rec.transition("complete", next(now))
    assert rec.status == "completed" and rec.duration_s == 4.0
    with pytest.raises(InvalidTransition):
        rec.transition("cancel", 16.0)
    with pytest.raises(ExperimentError, match="Unknown experiment event"):
        rec.transition("pause", 16.0)
    assert ExperimentRecord.from_dict(rec.to_dict()) == rec
    with pytest.raises(ExperimentError, match="lacks the field"):
        ExperimentRecord.from_dict({"name": "x"})


def test_archive_roundtrip_and_errors(tmp_path: Path) -> None:
    archive = ExperimentArchive(tmp_path)
    rec = ExperimentRecord(name="e", spec={}, created_s=1.0, result={"score": float("nan")})
    archive.save(rec)
    loaded = archive.load(rec.id)
    assert loaded.result == {"score": None}  # strict JSON: NaN is stored as null
    with pytest.raises(NotFound):
        archive.load("0" * 32)
    with pytest.raises(ExperimentError, match="not an experiment id"):
        archive.load("../etc/passwd")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ExperimentError, match="Cannot read experiment"):
        archive.load("broken")


def test_demo_and_instruction_changes_reach_every_predictor(
    sim: SimServer, private_cache: LMCache
) -> None:
    from dspex import telemetry
    from dspex.sim import load_task

    demos = load_task("classification", 3, seed=12)
    events: list[tuple[tuple[str, ...], dict[str, object]]] = []
    names = [
        ("dspex", "experiment", "run", "stop"),
        ("dspex", "experiment", "arm", "stop"),
        ("dspex", "experiment", "status"),
    ]
    telemetry.attach_many(
        "test-exp-events", names, lambda e, m, md, _c: events.append((e, dict(md)))
    )
    spec = ExperimentSpec(
        name="changes",
        program={"signature": "text -> label", "module": "ChainOfThought"},
        dataset=DatasetSpec(task="classification", n_train=0, n_test=10, seed=13),
        lm=LMSpec.from_sim(sim, "sim-small-fast", temperature=1.0),
        variants=[VariantSpec(name="demos", demos=demos, instructions="Classify the ticket.")],
        n_resamples=999,
    )
    try:
        result = ExperimentRunner(backend="local").run(spec)
    finally:
        telemetry.detach("test-exp-events")
    changed = result.arms["demos"].program_state["predict"]
    plain = result.arms["baseline"].program_state["predict"]
    assert [d["sim_ref"] for d in changed["demos"]] == [d.sim_ref for d in demos]
    assert changed["signature"]["instructions"] == "Classify the ticket."
    assert plain["demos"] == [] and plain["signature"]["instructions"] != "Classify the ticket."
    assert "reasoning" in (result.arms["demos"].examples[0].output or {})  # ChainOfThought ran
    kinds = [e for e, _ in events]
    assert kinds.count(("dspex", "experiment", "arm", "stop")) == 2
    assert kinds.count(("dspex", "experiment", "run", "stop")) == 1
    moves = [(md["from"], md["to"]) for e, md in events if e == ("dspex", "experiment", "status")]
    assert moves == [("planned", "running"), ("running", "completed")]
