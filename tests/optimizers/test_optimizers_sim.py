"""The optimizers against the simulated LM's synthetic tasks, where the best configuration and
the expected score of any configuration are known (dspex/sim/README.md)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import dspex
from dspex.optimizers import (
    COPRO,
    AdvancedBootstrap,
    BayesianOptimizer,
    BootstrapFewShot,
    BootstrapFewShotWithRandomSearch,
    LocalEvaluator,
    MIPROv2,
    MultiObjective,
    front_hypervolume,
)
from dspex.sim import (
    LatencySpec,
    ModelSpec,
    PriceSpec,
    SimConfig,
    SimServer,
    expected_score,
    get_task,
    load_task,
    optimum,
)
from dspex.sim.answer_model import instruction_score

TASK = get_task("arithmetic")
MODEL = "sim-medium-fast"


@pytest.fixture
def sim_lm(sim: SimServer) -> Iterator[dspex.LM]:
    lm = dspex.LM(f"openai/{MODEL}", api_base=sim.openai_base_url, api_key="sim", num_retries=0)
    dspex.configure(lm=lm)
    yield lm


def expected(program: Any, examples: list[Any], *, model: str = MODEL) -> float:
    predictor = program.predictors()[0]
    return expected_score(
        TASK,
        examples,
        model=model,
        instructions=predictor.signature.instructions,
        demos=predictor.demos,
        reasoning="reasoning" in predictor.signature.output_fields,
    )


def clusters(demos: list[Any]) -> set[str]:
    found = set()
    for d in demos:
        ref = d.get("sim_ref")
        ex = next((e for e in POOL if e.get("sim_ref") == ref or e.question == d.get("question")), None)
        if ex is not None:
            found.add(ex.cluster)
    return found


POOL = load_task("arithmetic", n=60, seed=0, split="train")


def test_bootstrap_beats_zero_shot_by_at_least_the_documented_demo_effect(sim_lm: dspex.LM) -> None:
    train, dev = POOL[:40], load_task("arithmetic", n=200, seed=0, split="dev")
    # The README's demo effect: one correct demo of each of 4 clusters, against no demos.
    four = []
    for ex in train:
        if ex.cluster not in {d.cluster for d in four}:
            four.append(ex)
        if len(four) == 4:
            break
    baseline = expected_score(TASK, dev, model=MODEL)
    effect = expected_score(TASK, dev, model=MODEL, demos=four) - baseline
    assert effect > 0.08

    zero_shot = dspex.Predict(TASK.signature)
    compiled = BootstrapFewShot(metric=TASK.metric, max_bootstrapped_demos=4, progress=False).compile(zero_shot, trainset=train)
    assert len([d for d in compiled.demos if d.get("augmented")]) == 4
    assert expected(compiled, dev) - expected(zero_shot, dev) >= effect
    measured = LocalEvaluator(num_threads=32).evaluate([zero_shot, compiled], dev, TASK.metric)
    assert (measured[1].mean - measured[0].mean) >= effect - 0.05  # 200 examples: sampling noise ~0.045


def test_mipro_reaches_90_percent_of_the_known_optimum_within_its_budget(sim_lm: dspex.LM) -> None:
    train, dev = POOL[:40], load_task("arithmetic", n=60, seed=3, split="dev")
    best = optimum(TASK, dev, model=MODEL, max_demos=4, demo_pool=train)
    # "medium": 6 instruction and 12 demo-set candidates, 18 trials. (With "light", 3 and 6 and 10
    # trials, about one seed in four stays near 0.87: both of its two proposals were poor.)
    opt = MIPROv2(metric=TASK.metric, auto="medium", seed=11, num_threads=32, progress=False)
    compiled = opt.compile(dspex.ChainOfThought(TASK.signature), trainset=train, valset=dev)
    result = compiled.optimization_result
    minibatch_trials = [t for t in result.trials if not t.user_attrs.get("full_eval")]
    assert len(minibatch_trials) == 18  # int(max(2 * 2 * log2(12), 1.5 * 12)) trials, as DSPy
    reached = expected(compiled, dev)
    assert reached >= 0.9 * best.score, (reached, best.score, compiled.predict.signature.instructions)
    assert reached > best.baseline + 0.2


def test_mipro_same_seed_same_result(sim_lm: dspex.LM) -> None:
    train, dev = POOL[:30], load_task("arithmetic", n=40, seed=4, split="dev")

    def run(seed: int) -> tuple[Any, ...]:
        opt = MIPROv2(metric=TASK.metric, auto=None, num_candidates=4, seed=seed, num_threads=32, progress=False)
        c = opt.compile(dspex.Predict(TASK.signature), trainset=train, valset=dev, num_trials=6, minibatch_size=20)
        r = c.optimization_result
        trials = [(t.params, (t.values or {}).get("score")) for t in r.trials]  # usage differs: the rerun hits the cache
        return c.signature.instructions, [d.toDict() for d in c.demos], trials, r.best_score

    first, again = run(5), run(5)
    assert first == again
    assert run(6)[2] != first[2]


def test_random_search_on_the_sim_keeps_its_best_candidate(sim_lm: dspex.LM) -> None:
    train, dev = POOL[:30], load_task("arithmetic", n=60, seed=5, split="dev")
    compiled = BootstrapFewShotWithRandomSearch(
        metric=TASK.metric, max_bootstrapped_demos=3, max_labeled_demos=4, num_candidate_programs=3, num_threads=32, progress=False
    ).compile(dspex.Predict(TASK.signature), trainset=train, valset=dev)
    scores = {d["seed"]: d["score"] for d in compiled.candidate_programs}
    assert set(scores) == {-3, -2, -1, 0, 1, 2}
    assert compiled.score == max(scores.values()) > scores[-3]
    assert expected(compiled, dev) > expected(dspex.Predict(TASK.signature), dev)


def test_copro_finds_instructions_with_the_tasks_hints(sim_lm: dspex.LM) -> None:
    train = POOL[:40]
    student = dspex.Predict(TASK.signature)
    compiled = COPRO(metric=TASK.metric, breadth=5, depth=2, init_temperature=1.0, num_threads=32, progress=False).compile(student, trainset=train)
    result = compiled.optimization_result
    start = next(c for c in result.candidates if c.config["instruction"] == student.signature.instructions)
    assert result.best_score is not None and start.score is not None and result.best_score >= start.score
    assert instruction_score(TASK, compiled.signature.instructions) > 0
    assert len(result.candidates) > 5  # the second round proposed new instructions from the scored attempts


def test_advanced_bootstrap_measures_quality_and_selects_diverse_demos(sim_lm: dspex.LM) -> None:
    train, dev = POOL[:48], load_task("arithmetic", n=100, seed=6, split="dev")
    student = dspex.Predict(TASK.signature)
    adaptive = AdvancedBootstrap(metric=TASK.metric, max_demos=4, quality_threshold=1.0, num_candidates=18, seed=1, num_threads=32, progress=False)
    compiled = adaptive.compile(student, trainset=train)
    result = compiled.optimization_result
    infos = [c.config for c in result.candidates]
    assert len(infos) == 18 and {i["strategy"] for i in infos} == {"random", "hard", "diverse"}
    assert all(c.score in (0.0, 1.0) for c in result.candidates)  # quality = the metric on the teacher's run
    assert all(i["passed"] for i in infos if i["selected"]) and len([i for i in infos if i["selected"]]) == 4
    assert result.extras["quality_filtered"] == sum(i["passed"] for i in infos)
    # hard candidates are examples the program got wrong
    hard = [train[i["example"]] for i in infos if i["strategy"] == "hard"]
    assert hard and LocalEvaluator().evaluate_one(student, hard, TASK.metric).mean < 0.5
    top = AdvancedBootstrap(metric=TASK.metric, max_demos=4, quality_threshold=1.0, num_candidates=18, seed=1,
                            adaptive_sampling=False, num_threads=32, progress=False).compile(student, trainset=train)
    assert len(clusters(compiled.demos)) >= len(clusters(top.demos)) and len(clusters(compiled.demos)) >= 3
    assert expected(compiled, dev) > expected(student, dev) + 0.05


def test_bayesian_optimizer_over_model_demos_and_reasoning(sim: SimServer) -> None:
    lms = [dspex.LM(f"openai/{m}", api_base=sim.openai_base_url, api_key="sim") for m in ("sim-small-fast", "sim-medium-fast", "sim-large-fast")]
    dspex.configure(lm=lms[0])
    train, dev = POOL[:30], load_task("arithmetic", n=50, seed=7, split="dev")
    opt = BayesianOptimizer(metric=TASK.metric, models=lms, max_demos=3, num_trials=14, seed=0, num_threads=32, progress=False)
    compiled = opt.compile(dspex.Predict(TASK.signature), trainset=train, valset=dev)
    result = compiled.optimization_result
    params = result.extras["best_params"]
    assert set(params) == {"model", "num_demos", "reasoning"} and len(result.trials) == 14
    assert compiled.predictors()[0].lm.model == lms[params["model"]].model
    best_expected = max(
        expected_score(TASK, dev, model=m, reasoning=True, demos=compiled.predictors()[0].demos) for m in ("sim-large-fast",)
    )
    chosen = expected_score(
        TASK, dev, model=lms[params["model"]].model.split("/")[1], demos=compiled.predictors()[0].demos, reasoning=bool(params["reasoning"])
    )
    assert chosen >= 0.9 * best_expected


BASE_MS = {"mo-small": 10.0, "mo-medium": 40.0, "mo-large": 100.0}
TRADEOFF = SimConfig(
    models=[
        ModelSpec(name="mo-small", skill=0.35, latency=LatencySpec(base_ms=10), price=PriceSpec(input_per_1m_usd=0.15, output_per_1m_usd=0.6)),
        ModelSpec(name="mo-medium", skill=0.6, latency=LatencySpec(base_ms=40), price=PriceSpec(input_per_1m_usd=1.0, output_per_1m_usd=4.0)),
        ModelSpec(name="mo-large", skill=0.85, latency=LatencySpec(base_ms=100), price=PriceSpec(input_per_1m_usd=5.0, output_per_1m_usd=15.0)),
    ]
)


@pytest.fixture(scope="module")
def tradeoff_sim() -> Iterator[SimServer]:
    """Three models on an accuracy / latency / cost trade-off, with short fixed latencies."""
    with SimServer(TRADEOFF) as server:
        server.register_prices(TRADEOFF)
        yield server


def test_multi_objective_front_reaches_90_percent_of_the_true_fronts_hypervolume(tradeoff_sim: SimServer) -> None:
    names = list(BASE_MS)
    lms = [dspex.LM(f"openai/{m}", api_base=tradeoff_sim.openai_base_url, api_key="sim") for m in names]
    dspex.configure(lm=lms[1])
    train, dev = POOL[:30], load_task("arithmetic", n=40, seed=8, split="dev")
    student = dspex.Predict(TASK.signature)

    def optimizer(**kw: Any) -> MultiObjective:
        return MultiObjective(metric=TASK.metric, models=lms, max_demos=4, search_reasoning=True, num_threads=48, progress=False, **kw)

    # Every configuration, measured: cost is exact (tokens x the price table); accuracy and
    # latency are then replaced by their true values (the answer model's expected score, the
    # model's configured latency), so the comparison below is free of measurement noise.
    every = [{"model": m, "num_demos": d, "reasoning": r} for m in range(3) for d in range(5) for r in range(2)]
    measured = optimizer().compile(student, trainset=train, valset=dev, configurations=every).optimization_result
    assert len(measured.candidates) == 30

    def key(config: dict[str, int]) -> tuple[Any, ...]:
        return tuple(sorted(config.items()))

    truth: dict[tuple[Any, ...], dict[str, float]] = {}
    for c in measured.candidates:
        p = c.program.predictors()[0]
        truth[key(c.config)] = {
            "accuracy": expected_score(TASK, dev, model=names[c.config["model"]], config=TRADEOFF, demos=p.demos,
                                       reasoning=bool(c.config["reasoning"])),
            "latency_ms": BASE_MS[names[c.config["model"]]],
            "cost_usd": (c.objectives or {})["cost_usd"],
        }
    by_model = [measured.candidates[i].objectives for i in (0, 10, 20)]  # model 0/1/2, no demos, no reasoning
    # measured wall time (median per candidate): on a loaded 2-core machine only the 10 ms vs
    # 100 ms gap is safe to assert, and only on each model's fastest candidate (the first
    # candidate also pays 40 connections opened at once)
    fastest = [min((c.objectives or {})["latency_ms"] for c in measured.candidates if c.config["model"] == m) for m in range(3)]
    assert 10.0 <= fastest[0] < fastest[2] and fastest[2] >= 100.0
    assert 0 < by_model[0]["cost_usd"] < by_model[1]["cost_usd"] < by_model[2]["cost_usd"]  # type: ignore[index]
    ref = {"accuracy": 0.0, "latency_ms": 110.0, "cost_usd": 1.1 * max(v["cost_usd"] for v in truth.values())}
    true_hv = front_hypervolume(list(truth.values()), ref)

    compiled = optimizer(population_size=8, pareto_iterations=3, seed=0).compile(student, trainset=train, valset=dev)
    result = compiled.optimization_result
    assert len(result.candidates) <= 24  # a search within its budget, not an enumeration
    history = result.hypervolume_history
    assert len(history) == 3 and history == sorted(history) and history[0] > 0
    found_hv = front_hypervolume([truth[key(c.config)] for c in result.pareto_front], ref)
    assert found_hv >= 0.9 * true_hv, found_hv / true_hv
    for point in result.pareto_front:
        assert set(point.objectives or {}) == {"accuracy", "latency_ms", "cost_usd"} and point.program is not None
    assert result.best in result.pareto_front
    assert compiled.predictors()[0].lm.cache is True  # scored uncached; the returned program caches again

    # weights pick different points
    pair = [{"model": 0, "num_demos": 0, "reasoning": 0}, {"model": 2, "num_demos": 2, "reasoning": 1}]
    accurate = optimizer(objectives={"accuracy": 1.0}).compile(student, trainset=train, valset=dev, configurations=pair)
    cheap = optimizer(objectives={"accuracy": 0.1, "cost": 0.9}).compile(student, trainset=train, valset=dev, configurations=pair)
    assert accurate.optimization_result.best.config == pair[1]  # type: ignore[union-attr]
    assert cheap.optimization_result.best.config == pair[0]  # type: ignore[union-attr]
    assert accurate.predictors()[0].lm.model == "openai/mo-large" and len(accurate.predictors()[0].demos) == 2
