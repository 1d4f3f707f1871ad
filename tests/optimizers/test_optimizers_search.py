"""The search pieces (TPE searcher, trial runner, Pareto / hypervolume, diversity selection), the
registry, and the instruction optimizers' mechanics with a scripted LM."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest
from fixtures.optimizers import ToyLM, exact_match, toy_data

import dspex
from dspex import telemetry
from dspex.errors import NotFound, OptimizerError
from dspex.optimizers import (
    COPRO,
    AdvancedBootstrap,
    BayesianOptimizer,
    Categorical,
    FloatRange,
    IntRange,
    LocalEvaluator,
    LocalTrialRunner,
    MIPROv2,
    MultiObjective,
    Searcher,
    Teleprompter,
    TPESearcher,
    get_optimizer,
    info,
    list_optimizers,
    register_optimizer,
)
from dspex.optimizers.advanced_bootstrap import kmeans, select_diverse, text_vectors
from dspex.optimizers.pareto import NSGA2Search, choose_by_weights, hypervolume, nondominated


@pytest.fixture
def toy() -> ToyLM:
    lm = ToyLM()
    dspex.configure(lm=lm)
    return lm


class Quadratic:
    """A picklable objective; fails on k == 2 when ``fail_k2``."""

    def __init__(self, fail_k2: bool = False, sleep_s: float = 0.0) -> None:
        self.fail_k2 = fail_k2
        self.sleep_s = sleep_s
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, params: dict[str, Any], number: int, evaluator: Any) -> dict[str, float]:
        with self._lock:
            self.calls += 1
        time.sleep(self.sleep_s)
        if self.fail_k2 and params["k"] == 2:
            raise RuntimeError("k=2 is broken")
        return {"score": -((params["x"] - 0.3) ** 2) + 0.1 * params["k"]}


def space() -> dict[str, Any]:
    return {"x": FloatRange(0.0, 1.0), "k": Categorical([0, 1, 2])}


# -- searcher and trial runner -------------------------------------------------------------------
def test_tpe_searcher_same_seed_same_suggestions_and_best() -> None:
    runs = []
    for _ in range(2):
        s = TPESearcher(space(), seed=3, n_startup_trials=4)
        LocalTrialRunner().run(Quadratic(), s, num_trials=12, evaluator=LocalEvaluator())
        runs.append([r.params for r in s.records()])
    assert runs[0] == runs[1] and len(runs[0]) == 12
    best = s.best()
    assert best is not None and best.values["score"] == max(r.values["score"] for r in s.records())  # type: ignore[index]


def test_stopped_search_resumes_with_its_searcher_state(tmp_path) -> None:  # type: ignore[no-untyped-def]
    straight = TPESearcher(space(), seed=5, n_startup_trials=3)
    LocalTrialRunner().run(Quadratic(), straight, num_trials=10, evaluator=LocalEvaluator())

    ckpt = tmp_path / "searcher.pkl"
    first = TPESearcher(space(), seed=5, n_startup_trials=3)
    LocalTrialRunner().run(Quadratic(), first, num_trials=4, evaluator=LocalEvaluator(), checkpoint_path=ckpt)
    number, params = first.ask()  # a trial in flight when the search stopped
    first.save(ckpt)
    resumed = Searcher.load(ckpt)
    assert resumed.pending() == [(number, params)]
    objective = Quadratic()
    LocalTrialRunner().run(objective, resumed, num_trials=6, evaluator=LocalEvaluator(), checkpoint_path=ckpt)
    assert objective.calls == 6 and resumed.pending() == []
    assert [r.params for r in resumed.records()] == [r.params for r in straight.records()]
    assert Searcher.load(ckpt).records()[-1].number == 9


def test_a_failing_trial_is_retried_then_recorded_failed_and_the_search_goes_on() -> None:
    retries: list[dict[str, Any]] = []
    telemetry.attach("test-trial-retry", ("dspex", "error", "recovery"), lambda e, m, md, c: retries.append(md))
    try:
        s = TPESearcher({"x": FloatRange(0.0, 1.0), "k": Categorical([2])}, seed=0)
        records = LocalTrialRunner(max_retries=2).run(Quadratic(fail_k2=True), s, num_trials=3, evaluator=LocalEvaluator())
    finally:
        telemetry.detach("test-trial-retry")
    assert [r.state for r in records] == ["failed"] * 3
    assert all(r.attempts == 3 and "k=2 is broken" in (r.error or "") for r in records)
    assert len(retries) == 6 and retries[0]["strategy"] == "retry"
    mixed = TPESearcher(space(), seed=1, n_startup_trials=20)
    recs = LocalTrialRunner(max_retries=0).run(Quadratic(fail_k2=True), mixed, num_trials=12, evaluator=LocalEvaluator())
    assert {r.state for r in recs} == {"complete", "failed"} and len(recs) == 12


def test_trials_run_concurrently_in_threads_with_the_callers_settings() -> None:
    seen: list[Any] = []

    class Reads:
        def __call__(self, params: dict[str, Any], number: int, evaluator: Any) -> dict[str, float]:
            time.sleep(0.05)
            seen.append(dspex.settings.get("marker"))
            return {"score": params["x"]}

    s = TPESearcher({"x": FloatRange(0, 1)}, seed=0)
    t0 = time.perf_counter()
    with dspex.context(marker="m"):
        LocalTrialRunner(max_concurrent=4).run(Reads(), s, num_trials=8, evaluator=LocalEvaluator())
    assert time.perf_counter() - t0 < 0.3  # 8 x 50 ms, four at a time
    assert seen == ["m"] * 8 and len(s.records()) == 8


def test_search_space_and_searcher_bad_input() -> None:
    with pytest.raises(OptimizerError):
        Categorical([])
    with pytest.raises(OptimizerError):
        FloatRange(1.0, 0.0)
    with pytest.raises(OptimizerError):
        IntRange(3, 1)
    with pytest.raises(OptimizerError, match="mode"):
        TPESearcher(space(), mode="up")
    s = TPESearcher(space(), seed=0)
    with pytest.raises(OptimizerError, match="not asked"):
        s.tell(42, {"score": 1.0})
    number, _ = s.ask()
    with pytest.raises(OptimizerError, match="metric"):
        s.tell(number, {"other": 1.0})
    with pytest.raises(OptimizerError, match="missing"):
        s.add({"x": 0.5}, {"score": 1.0})
    with pytest.raises(OptimizerError):
        LocalTrialRunner(max_concurrent=0)


# -- Pareto, hypervolume, selection ---------------------------------------------------------------
def test_nondominated_hypervolume_and_weighted_choice_on_known_points() -> None:
    F = np.array([[1.0, 4.0], [2.0, 2.0], [4.0, 1.0], [3.0, 3.0], [2.0, 2.0]])
    assert nondominated(F).tolist() == [0, 1, 2]
    # boxes to ref (5, 5): the union of [1,5]x[4,5], [2,5]x[2,5], [4,5]x[1,5]
    assert hypervolume(F, [5.0, 5.0]) == pytest.approx(4 + 6 + 1)
    assert hypervolume(np.array([[6.0, 6.0]]), [5.0, 5.0]) == 0.0
    points = [{"accuracy": 0.9, "latency_ms": 500.0}, {"accuracy": 0.7, "latency_ms": 100.0}]
    assert choose_by_weights(points, {"accuracy": 1.0, "latency_ms": 0.0}, {"accuracy"}) == 0
    assert choose_by_weights(points, {"accuracy": 0.2, "latency_ms": 0.8}, {"accuracy"}) == 1
    with pytest.raises(OptimizerError):
        choose_by_weights(points, {"accuracy": 0.0}, {"accuracy"})


def test_nsga2_ask_tell_finds_the_integer_front() -> None:
    search = NSGA2Search([3, 3], n_obj=2, pop_size=6, n_gen=6, seed=0)
    seen: dict[tuple[int, ...], list[float]] = {}
    while search.has_next():
        batch = search.ask()
        assert all(0 <= v <= 3 for x in batch for v in x)
        values = [[float(x[0]), float(3 - x[0] + x[1])] for x in batch]  # front: x[1] == 0
        seen.update(zip(batch, values, strict=True))
        search.tell(values)
    front = [x for x, f in seen.items() if x[1] == 0]
    assert len(front) >= 3
    with pytest.raises(OptimizerError):
        NSGA2Search([1], n_obj=1, pop_size=1, n_gen=1, seed=0)


def test_diversity_aware_selection_and_clustering() -> None:
    texts = ["add apples now", "add apples today", "divide cookies fairly", "divide cookies evenly", "percent off sale"]
    X = text_vectors(texts)
    assert X.shape == (5, 256) and np.allclose(np.linalg.norm(X, axis=1), 1.0)
    labels = kmeans(X, 3, seed=0)
    assert labels[0] == labels[1] and labels[2] == labels[3] and len(set(labels.tolist())) == 3
    q = [1.0, 1.0, 1.0, 1.0, 1.0]
    assert sorted(select_diverse(q, X, 3, 0.3)) == [0, 2, 4]  # one of each kind
    assert select_diverse(q, X, 3, 0.0) == [0, 1, 2]  # quality only: first come
    assert select_diverse([0.2, 1.0, 1.0, 1.0, 1.0], X, 1, 0.3) == [1]


# -- registry -------------------------------------------------------------------------------------
def test_registry_lists_gets_and_describes_every_optimizer() -> None:
    names = list_optimizers()
    assert names == sorted(
        ["AdvancedBootstrap", "BayesianOptimizer", "BootstrapFewShot", "BootstrapFewShotWithRandomSearch", "COPRO",
         "LabeledFewShot", "MIPROv2", "MultiObjective"]
    )
    assert get_optimizer("MIPRO") is MIPROv2
    for name in names:
        spec = info(name)
        assert spec.name == name and spec.description
        assert spec.parameters, name
        for p in spec.parameters:
            assert p.description, f"{name}.{p.name} has no description"
            assert (p.type and p.type != "Any") or p.name in {"prompt_model", "task_model"}, (name, p.name, p.type)
        assert spec.to_dict()["parameters"][0]["name"] == spec.parameters[0].name
    adv = {p.name: p for p in info("AdvancedBootstrap").parameters}
    assert (adv["max_demos"].default, adv["quality_threshold"].default, adv["diversity_factor"].default) == (8, 0.8, 0.3)
    assert adv["adaptive_sampling"].type == "bool" and adv["metric"].required
    with pytest.raises(NotFound, match="Unknown optimizer 'Nope'"):
        get_optimizer("Nope")


def test_register_optimizer() -> None:
    class Mine(Teleprompter):
        description = "mine"
        param_docs = {"k": "a number"}

        def __init__(self, k: int = 1) -> None:
            self.k = k

    register_optimizer("Mine-test", Mine)
    assert get_optimizer("Mine-test") is Mine and info("Mine-test").parameters[0].description == "a number"
    with pytest.raises(OptimizerError, match="already registered"):
        register_optimizer("Mine-test", Mine)
    with pytest.raises(OptimizerError):
        register_optimizer("bad", dict)


def test_constructors_reject_bad_arguments() -> None:
    with pytest.raises(OptimizerError, match="auto"):
        MIPROv2(metric=exact_match, auto="turbo")
    with pytest.raises(OptimizerError, match="breadth"):
        COPRO(metric=exact_match, breadth=1)
    with pytest.raises(OptimizerError, match="metric"):
        COPRO(metric=None)
    with pytest.raises(OptimizerError, match="diversity_factor"):
        AdvancedBootstrap(metric=exact_match, diversity_factor=1.5)
    with pytest.raises(OptimizerError, match="objectives"):
        MultiObjective(metric=exact_match, objectives={"speed": 1.0})
    with pytest.raises(OptimizerError, match="weights"):
        MultiObjective(metric=exact_match, objectives={"accuracy": 0.0})
    with pytest.raises(OptimizerError, match="temperature"):
        BayesianOptimizer(metric=exact_match, temperature=(1.0, 0.5))
    with pytest.raises(OptimizerError, match="num_trials"):
        BayesianOptimizer(metric=exact_match, num_trials=0)


def test_mipro_checks_its_run_settings(toy: ToyLM) -> None:
    student = dspex.Predict("question -> answer")
    with pytest.raises(OptimizerError, match="auto"):
        MIPROv2(metric=exact_match, auto="light").compile(student, trainset=toy_data(10), num_trials=3)
    with pytest.raises(OptimizerError, match="num_candidates"):
        MIPROv2(metric=exact_match, auto=None).compile(student, trainset=toy_data(10))
    with pytest.raises(OptimizerError, match="minibatch_size"):
        MIPROv2(metric=exact_match, auto=None, num_candidates=2).compile(
            student, trainset=toy_data(6), valset=toy_data(5), num_trials=2, minibatch_size=10
        )


# -- instruction optimizers with the scripted LM --------------------------------------------------
def test_copro_proposes_scores_and_keeps_the_instruction_that_works(toy: ToyLM) -> None:
    train = toy_data(6)
    compiled = COPRO(metric=exact_match, breadth=3, depth=2, track_stats=True, progress=False).compile(
        dspex.Predict("question -> answer"), trainset=train
    )
    assert "carefully" in compiled.signature.instructions.lower()
    result = compiled.optimization_result
    assert result.best_score == 100.0
    instructions = [c.config["instruction"] for c in result.candidates]
    assert instructions[:3] == ["Add carefully, variant 0.", "Add carefully, variant 1.", "Given the fields `question`, produce the fields `answer`."]
    assert result.candidates[2].score == 50.0
    proposal_calls = [c for c in toy.calls if "proposed_instruction" in c["messages"][-1]["content"]]
    assert [c["kwargs"]["n"] for c in proposal_calls] == [2, 3]
    attempts = proposal_calls[1]["messages"][-1]["content"]
    assert "Instruction #1" in attempts and "Resulting Score #3: 100.0" in attempts
    assert result.extras["results_best"][0]["max"] == 100.0


def test_mipro_search_with_the_scripted_lm_finds_the_instruction(toy: ToyLM, tmp_path) -> None:  # type: ignore[no-untyped-def]
    train, dev = toy_data(10), toy_data(8, start=40)
    opt = MIPROv2(metric=exact_match, auto=None, num_candidates=3, max_bootstrapped_demos=1, max_labeled_demos=1, progress=False, seed=2)
    compiled = opt.compile(dspex.Predict("question -> answer"), trainset=train, valset=dev, num_trials=6, minibatch=False)
    result = compiled.optimization_result
    assert compiled.score == 100.0 and "carefully" in compiled.signature.instructions
    assert len([t for t in result.trials if not t.user_attrs.get("full_eval")]) == 6
    assert result.trials[0].user_attrs == {"full_eval": True} and result.trials[0].values == {"score": 50.0}
    assert {p for t in result.trials for p in t.params} == {"0_predictor_instruction", "0_predictor_demos"}
    assert all(len(c["program"].demos) <= 1 for c in compiled.candidate_programs)
    compiled.save(tmp_path / "mipro.json")  # the learned instruction and demos load into a fresh program
    fresh = dspex.Predict("question -> answer")
    fresh.load(tmp_path / "mipro.json")
    assert fresh.signature.instructions == compiled.signature.instructions
    assert LocalEvaluator().evaluate_one(fresh, dev, exact_match).score == 100.0


def test_a_stopped_mipro_run_resumes_from_its_checkpoint(toy: ToyLM, tmp_path) -> None:  # type: ignore[no-untyped-def]
    train, dev = toy_data(10), toy_data(8, start=40)

    def run(trials: int):  # type: ignore[no-untyped-def]
        opt = MIPROv2(metric=exact_match, auto=None, num_candidates=3, max_bootstrapped_demos=1, max_labeled_demos=1, progress=False, seed=4)
        return opt.compile(dspex.Predict("question -> answer"), trainset=train, valset=dev, num_trials=trials, minibatch=False,
                           checkpoint_dir=tmp_path / "mipro")

    first = run(3).optimization_result
    proposals = sum("proposed_instruction" in c["messages"][-1]["content"] for c in toy.calls)
    resumed = run(6).optimization_result
    assert sum("proposed_instruction" in c["messages"][-1]["content"] for c in toy.calls) == proposals  # setup reused
    assert [(t.params, t.values) for t in resumed.trials[:4]] == [(t.params, t.values) for t in first.trials]
    assert len([t for t in resumed.trials if not t.user_attrs.get("full_eval")]) == 6
    assert (tmp_path / "mipro" / "setup.pkl").exists() and (tmp_path / "mipro" / "searcher.pkl").exists()


def test_advanced_bootstrap_scores_quality_on_the_teachers_trace(toy: ToyLM) -> None:
    seen: list[int] = []

    def traced(example, prediction, trace=None):  # type: ignore[no-untyped-def]
        seen.append(len(trace or []))
        return exact_match(example, prediction)

    compiled = AdvancedBootstrap(metric=traced, max_demos=2, quality_threshold=1.0, num_candidates=10, probe_size=4, progress=False).compile(
        dspex.Predict("question -> answer"), trainset=toy_data(12)
    )
    result = compiled.optimization_result
    teacher_runs = [c for c in result.candidates]
    assert len(teacher_runs) == 10 and seen.count(1) == 10  # one trace step per teacher run; the probe has no trace
    passed = result.extras["quality_filtered"]
    assert passed >= 2 and len(compiled.demos) == 2
    assert all(int(d.question.split()[2]) % 2 == 0 for d in compiled.demos)
    assert all(c.config["passed"] == (c.score == 1.0) for c in teacher_runs)
    by = result.extras["by_strategy"]
    assert sum(v["tried"] for v in by.values()) == 10 and result.extras["final_selected"] == 2
    hard = [c.config["example"] for c in teacher_runs if c.config["strategy"] == "hard"]
    assert hard and all((c + 1) % 2 == 1 for c in hard)  # the toy LM fails on odd a (example i has a = i + 1)
