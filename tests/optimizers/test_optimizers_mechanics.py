"""Mechanics of the optimizers with a scripted LM (no simulator, no Ray): demo selection,
traces, thresholds, rounds, the evaluation seam, results, telemetry and bad arguments."""

from __future__ import annotations

import json
import pickle

import pytest
from fixtures.optimizers import ToyLM, exact_match, float_match, toy_data

import dspex
from dspex import telemetry
from dspex.errors import ExecutionAborted, OptimizerError
from dspex.optimizers import (
    BootstrapFewShot,
    BootstrapFewShotWithRandomSearch,
    LabeledFewShot,
    LocalEvaluator,
    OptimizationResult,
)
from dspex.optimizers.evaluation import metered


@pytest.fixture
def toy() -> ToyLM:
    lm = ToyLM()
    dspex.configure(lm=lm)
    return lm


class TwoStep(dspex.Module):
    def __init__(self) -> None:
        super().__init__()
        self.draft = dspex.Predict("question -> answer")
        self.check = dspex.Predict("question, draft -> answer")

    def forward(self, question: str) -> dspex.Prediction:
        draft = self.draft(question=question).answer
        return self.check(question=question, draft=draft)


# -- LabeledFewShot ----------------------------------------------------------------------------
def test_labeled_few_shot_samples_k_reproducibly_and_first_k_without_sampling() -> None:
    train = toy_data(10)
    student = dspex.Predict("question -> answer")
    a = LabeledFewShot(k=3, progress=False).compile(student, trainset=train)
    b = LabeledFewShot(k=3, progress=False).compile(student, trainset=train)
    assert len(a.demos) == 3 and a.demos == b.demos
    assert all(d in train for d in a.demos)
    first = LabeledFewShot(k=3, progress=False).compile(student, trainset=train, sample=False)
    assert first.demos == train[:3]
    assert LabeledFewShot(k=50, progress=False).compile(student, trainset=train).demos.__len__() == 10
    assert a._compiled and not student._compiled and student.demos == []


# -- BootstrapFewShot --------------------------------------------------------------------------
def test_bootstrap_takes_demos_from_successful_teacher_traces_in_order(toy: ToyLM) -> None:
    train = toy_data(8)  # a = 1..8: the teacher is right on even a
    compiled = BootstrapFewShot(metric=exact_match, max_bootstrapped_demos=2, max_labeled_demos=5, progress=False).compile(
        dspex.Predict("question -> answer"), trainset=train
    )
    augmented = [d for d in compiled.demos if d.get("augmented")]
    labeled = [d for d in compiled.demos if not d.get("augmented")]
    assert [d.question for d in augmented] == ["What is 2 + 3?", "What is 4 + 5?"]
    assert [d.answer for d in augmented] == ["5", "9"]
    assert len(labeled) == 3 and all(d in train for d in labeled)
    assert not any(d.question in {"What is 2 + 3?", "What is 4 + 5?"} for d in labeled)
    result = compiled.optimization_result
    assert result.extras["bootstrapped"] == [1, 3]
    # The sequential loop would have run examples 1..4 and stopped: no call beyond them.
    asked = {c["messages"][-1]["content"].split("\n")[1] for c in toy.calls}
    assert asked == {f"What is {a} + {a + 1}?" for a in (1, 2, 3, 4)}
    assert result.lm_calls == 4


def test_teacher_never_sees_the_example_it_runs_on_as_a_demo(toy: ToyLM) -> None:
    train = toy_data(4)
    BootstrapFewShot(metric=exact_match, max_bootstrapped_demos=4, max_labeled_demos=4, progress=False).compile(
        dspex.Predict("question -> answer"), trainset=train
    )
    assert len(toy.calls) == 4
    for call in toy.calls:
        final = call["messages"][-1]["content"]
        demo_users = [m["content"] for m in call["messages"][1:-1] if m["role"] == "user"]
        question = final.split("\n")[1]
        assert len(demo_users) == 3 and not any(question in d for d in demo_users)


def test_metric_threshold_on_a_float_metric(toy: ToyLM) -> None:
    train = toy_data(6)  # odd a: answer off by one -> float_match 0.5
    strict = BootstrapFewShot(metric=float_match, metric_threshold=1.0, max_bootstrapped_demos=6, max_labeled_demos=0, progress=False)
    loose = BootstrapFewShot(metric=float_match, metric_threshold=0.5, max_bootstrapped_demos=6, max_labeled_demos=0, progress=False)
    s = strict.compile(dspex.Predict("question -> answer"), trainset=train)
    lo = loose.compile(dspex.Predict("question -> answer"), trainset=train)
    assert len(s.demos) == 3 and all(int(d.question.split()[2]) % 2 == 0 for d in s.demos)
    assert len(lo.demos) == 6


def test_later_rounds_resample_with_temperature_and_rollout_id(toy: ToyLM) -> None:
    train = toy_data(2)  # a=1 fails in round 0, passes in round 1 (rollout_id set)
    compiled = BootstrapFewShot(metric=exact_match, max_bootstrapped_demos=2, max_labeled_demos=0, max_rounds=2, progress=False).compile(
        dspex.Predict("question -> answer"), trainset=train
    )
    assert len(compiled.demos) == 2
    retries = [c["kwargs"] for c in toy.calls if c["kwargs"].get("rollout_id") is not None]
    assert retries == [{**retries[0], "rollout_id": 1, "temperature": 1.0}]


def test_bootstrap_records_a_demo_per_predictor_of_a_multi_step_program(toy: ToyLM) -> None:
    compiled = BootstrapFewShot(metric=exact_match, max_bootstrapped_demos=1, max_labeled_demos=0, progress=False).compile(
        TwoStep(), trainset=toy_data(4)
    )
    assert [d.question for d in compiled.draft.demos] == ["What is 2 + 3?"]
    assert [set(d.keys()) for d in compiled.check.demos] == [{"augmented", "question", "draft", "answer"}]


def test_bootstrap_rejects_bad_arguments_and_structures(toy: ToyLM) -> None:
    with pytest.raises(OptimizerError, match="max_bootstrapped_demos"):
        BootstrapFewShot(metric=exact_match, max_bootstrapped_demos=-1)
    with pytest.raises(OptimizerError, match="max_rounds"):
        BootstrapFewShot(metric=exact_match, max_rounds=0)
    with pytest.raises(OptimizerError, match="callable"):
        BootstrapFewShot(metric="exact")  # type: ignore[arg-type]
    opt = BootstrapFewShot(metric=exact_match, progress=False)
    with pytest.raises(OptimizerError, match="trainset is required"):
        opt.compile(dspex.Predict("question -> answer"), trainset=None)  # type: ignore[arg-type]
    with pytest.raises(OptimizerError, match="inputs marked"):
        opt.compile(dspex.Predict("question -> answer"), trainset=[dspex.Example(question="q", answer="a")])
    with pytest.raises(OptimizerError, match=r"dspex\.Module"):
        opt.compile("question -> answer", trainset=toy_data(2))  # type: ignore[arg-type]
    with pytest.raises(OptimizerError, match="predictors"):
        opt.compile(dspex.Predict("question -> answer"), trainset=toy_data(2), teacher=TwoStep())
    done = LabeledFewShot(k=1, progress=False).compile(dspex.Predict("question -> answer"), trainset=toy_data(2))
    with pytest.raises(OptimizerError, match="already compiled"):
        opt.compile(done, trainset=toy_data(2))


def test_teacher_errors_abort_after_max_errors() -> None:
    dspex.configure(lm=ToyLM(fail=True))
    opt = BootstrapFewShot(metric=exact_match, max_bootstrapped_demos=2, max_labeled_demos=0, max_errors=3, progress=False)
    with pytest.raises(OptimizerError, match="3 failed teacher runs"):
        opt.compile(dspex.Predict("question -> answer"), trainset=toy_data(6))


# -- random search ------------------------------------------------------------------------------
def test_random_search_builds_dspy_candidates_and_keeps_the_best(toy: ToyLM) -> None:
    train, dev = toy_data(8), toy_data(6, start=20)
    compiled = BootstrapFewShotWithRandomSearch(
        metric=exact_match, max_bootstrapped_demos=2, max_labeled_demos=3, num_candidate_programs=2, progress=False
    ).compile(dspex.Predict("question -> answer"), trainset=train, valset=dev)
    result = compiled.optimization_result
    assert [c.config["kind"] for c in result.candidates] == ["zero_shot", "labeled", "bootstrap", "bootstrap_shuffled", "bootstrap_shuffled"]
    assert [c.config["seed"] for c in result.candidates] == [-3, -2, -1, 0, 1]
    scores = [d["score"] for d in compiled.candidate_programs]
    assert scores == sorted(scores, reverse=True) and compiled.score == scores[0] == result.best_score
    assert result.candidates[0].state is not None and result.candidates[0].config["size"] is None
    # the ToyLM is right on even a only; dev a = 20..25 -> 50 % for every candidate
    assert scores == [50.0] * 5 and result.chosen_index == 0


def test_random_search_restrict_and_stop_at_score(toy: ToyLM) -> None:
    opt = BootstrapFewShotWithRandomSearch(metric=exact_match, num_candidate_programs=3, stop_at_score=40.0, progress=False)
    compiled = opt.compile(dspex.Predict("question -> answer"), trainset=toy_data(6), valset=toy_data(4, start=30), restrict=[-3, 1, 2])
    assert [c.config["seed"] for c in compiled.optimization_result.candidates] == [-3]
    with pytest.raises(OptimizerError, match="restrict"):
        opt.compile(dspex.Predict("question -> answer"), trainset=toy_data(6), restrict=[99])


# -- the evaluation seam -----------------------------------------------------------------------
def test_local_evaluator_scores_in_order_and_meters_each_example(toy: ToyLM) -> None:
    dev = toy_data(6)
    evs = LocalEvaluator(num_threads=4).evaluate([dspex.Predict("question -> answer"), TwoStep()], dev, exact_match)
    assert [r.index for r in evs[0].results] == list(range(6))
    assert evs[0].scores == [0.0, 1.0, 0.0, 1.0, 0.0, 1.0] and evs[0].score == 50.0
    assert [r.lm_calls for r in evs[0].results] == [1] * 6 and [r.lm_calls for r in evs[1].results] == [2] * 6
    assert evs[1].lm_calls == 12 and evs[1].paid_calls == 12
    with metered() as outer:
        LocalEvaluator().evaluate_one(dspex.Predict("question -> answer"), dev, exact_match)
    assert outer.lm_calls == 6 and outer.input_tokens == 60


def test_local_evaluator_failure_score_and_max_errors() -> None:
    dspex.configure(lm=ToyLM(fail=True))
    ev = LocalEvaluator(failure_score=0.25, max_errors=10).evaluate_one(dspex.Predict("question -> answer"), toy_data(3), exact_match)
    assert ev.scores == [0.25] * 3 and ev.errors == 3 and "toy LM is down" in (ev.results[0].error or "")
    with pytest.raises(ExecutionAborted):
        LocalEvaluator(max_errors=1).evaluate_one(dspex.Predict("question -> answer"), toy_data(5), exact_match)
    with pytest.raises(OptimizerError, match="num_threads"):
        LocalEvaluator(num_threads=0)


def test_the_evaluator_setting_routes_every_optimizer_through_it(toy: ToyLM) -> None:
    seen: list[int] = []

    class Counting(LocalEvaluator):
        def evaluate(self, programs, devset, metric, **kw):  # type: ignore[no-untyped-def]
            seen.append(len(programs))
            return super().evaluate(programs, devset, metric, **kw)

    with dspex.context(optimizer_evaluator=Counting()):
        BootstrapFewShotWithRandomSearch(metric=exact_match, num_candidate_programs=1, progress=False).compile(
            dspex.Predict("question -> answer"), trainset=toy_data(4)
        )
    assert seen == [4]  # four candidates, one batch
    with pytest.raises(OptimizerError, match="Evaluator"):
        BootstrapFewShot(metric=exact_match, progress=False).compile(
            dspex.Predict("question -> answer"), trainset=toy_data(2), valset=toy_data(2), evaluator=object()  # type: ignore[arg-type]
        )


# -- results, saving, telemetry ----------------------------------------------------------------
def test_compiled_program_and_result_save_and_load(toy: ToyLM, tmp_path) -> None:  # type: ignore[no-untyped-def]
    compiled = BootstrapFewShot(metric=exact_match, max_bootstrapped_demos=2, max_labeled_demos=3, progress=False).compile(
        dspex.Predict("question -> answer"), trainset=toy_data(6), valset=toy_data(4, start=10)
    )
    compiled.save(tmp_path / "prog.json")
    loaded = dspex.Predict("question -> answer")
    loaded.load(tmp_path / "prog.json")
    assert [d.toDict() for d in loaded.demos] == [d.toDict() for d in compiled.demos]
    result = compiled.optimization_result
    result.save(tmp_path / "result.json")
    again = OptimizationResult.load(tmp_path / "result.json")
    assert again.to_dict() == json.loads(json.dumps(result.to_dict()))
    assert again.best_score == result.best_score == 50.0 and again.candidates[0].state == result.candidates[0].state
    clone = pickle.loads(pickle.dumps(result))
    assert clone.candidates[0].program is None and clone.candidates[0].score == 50.0
    compiled.save(tmp_path / "whole", save_program=True)
    with pytest.raises(Exception, match=r"\.json"):
        result.save(tmp_path / "result.txt")


def test_every_run_emits_a_compile_span_and_iteration_events(toy: ToyLM) -> None:
    events: list[tuple[tuple[str, ...], dict, dict]] = []
    names = [("dspex", "optimizer", "iteration"), ("dspex", "optimizer", "compile", "stop")]
    telemetry.attach_many("test-opt-events", names, lambda e, m, md, c: events.append((e, m, md)))
    try:
        BootstrapFewShotWithRandomSearch(metric=exact_match, num_candidate_programs=1, progress=False).compile(
            dspex.Predict("question -> answer"), trainset=toy_data(4)
        )
    finally:
        telemetry.detach("test-opt-events")
    iterations = [e for e in events if e[0][-1] == "iteration"]
    assert len(iterations) == 4
    assert [md["iteration"] for _, _, md in iterations] == [1, 2, 3, 4]
    assert all(md["optimizer"] == "BootstrapFewShotWithRandomSearch" and "converged" in md for _, _, md in iterations)
    assert all(m["duration_s"] >= 0 and 0 <= m["score"] <= 100 and m["best_score"] >= m["score"] - 1e-9 for _, m, _ in iterations)
    stops = [e for e in events if e[0][-1] == "stop"]
    assert len(stops) == 1 and stops[0][2]["optimizer"] == "BootstrapFewShotWithRandomSearch"


def test_dspy_module_name_and_layering() -> None:
    import subprocess
    import sys

    from dspex import teleprompt

    assert teleprompt.BootstrapFewShot is BootstrapFewShot and teleprompt.Teleprompter is teleprompt.Optimizer
    code = (
        "import sys, dspex.optimizers, dspex.teleprompt, dspex.pipelines.optimization; "
        "print(sorted(m for m in ('ray', 'optuna', 'pymoo') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"  # Ray, optuna and pymoo load when a search or a cluster run needs them
