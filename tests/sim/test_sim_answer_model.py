"""The answer model: every lever has the documented sign and a visible size; the optimum is
known and beats the baseline; the expected score needs no calls."""

from __future__ import annotations

import math

import pytest

from dspex.errors import ConfigurationError
from dspex.sim import PARAMS, ModelSpec, expected_score, get_task, load_task, optimum
from dspex.sim.answer_model import DemoJudgement, demo_score, instruction_score, p_correct

TASKS = ["arithmetic", "classification", "multihop"]
# "visible on 50-200 examples": at least three standard errors of a 100-example accuracy
VISIBLE = 0.05


@pytest.fixture(scope="module")
def dev() -> dict[str, list]:
    return {t: load_task(t, n=150, seed=0, split="dev") for t in TASKS}


@pytest.mark.parametrize("name", TASKS)
def test_each_lever_has_its_documented_sign_and_a_visible_size(
    name: str, dev: dict[str, list]
) -> None:
    task = get_task(name)
    exs = dev[name]
    base = expected_score(name, exs, model="sim-medium")
    hints = expected_score(name, exs, model="sim-medium", instructions=task.best_instruction())
    one_hint = expected_score(name, exs, model="sim-medium", instructions=task.hints[0].phrase)
    misleading = expected_score(
        name, exs, model="sim-medium", instructions=task.misleading[0].phrase
    )
    train = load_task(name, n=40, seed=0, split="train")
    covering = [next(d for d in train if d.cluster == c) for c in task.clusters[:4]]
    demos = expected_score(name, exs, model="sim-medium", demos=covering)
    wrong = [d.copy(**{task.answer_field: d.distractors[0]}) for d in covering]
    wrong_demos = expected_score(name, exs, model="sim-medium", demos=wrong)
    reasoning = expected_score(name, exs, model="sim-medium", reasoning=True)
    small = expected_score(name, exs, model="sim-small")
    large = expected_score(name, exs, model="sim-large")

    assert hints - base > 2 * VISIBLE
    assert one_hint - base > VISIBLE
    assert base - misleading > VISIBLE
    assert demos - base > VISIBLE
    assert base - wrong_demos > 2 * VISIBLE
    assert reasoning - base > 2 * VISIBLE
    assert base - small > 2 * VISIBLE and large - base > 2 * VISIBLE
    # none dominates: no single lever gets within 0.1 of the best configuration
    best = optimum(name, exs, model="sim-medium").score
    for single in (hints, demos, reasoning):
        assert best - single > 0.1


@pytest.mark.parametrize("name", TASKS)
def test_optimum_beats_baseline_and_covers_clusters(name: str, dev: dict[str, list]) -> None:
    exs = dev[name]
    opt = optimum(name, exs, model="sim-medium", max_demos=4)
    assert opt.score > opt.baseline + 0.25
    assert len(opt.demos) == 4 and len(set(opt.demo_clusters)) == 4  # covering beats repeating
    assert opt.reasoning is True
    # the reported score is what expected_score says for the same configuration
    again = expected_score(
        name,
        exs,
        model="sim-medium",
        instructions=opt.instructions,
        demos=opt.demos,
        reasoning=True,
    )
    assert math.isclose(again, opt.score, rel_tol=1e-12)
    # any other 4-demo set of correct demos scores no higher
    task = get_task(name)
    train = load_task(name, n=40, seed=0, split="train")
    same_cluster = [d for d in train if d.cluster == task.clusters[0]][:4]
    other = expected_score(
        name,
        exs,
        model="sim-medium",
        instructions=opt.instructions,
        demos=same_cluster,
        reasoning=True,
    )
    assert other < opt.score


def test_optimum_with_a_larger_budget_uses_a_greedy_search(dev: dict[str, list]) -> None:
    small_budget = optimum("arithmetic", dev["arithmetic"], model="sim-small", max_demos=4)
    big_budget = optimum("arithmetic", dev["arithmetic"], model="sim-small", max_demos=16)
    assert len(big_budget.demos) == 16
    assert big_budget.score >= small_budget.score
    none = optimum("arithmetic", dev["arithmetic"], model="sim-small", max_demos=0)
    assert none.demos == [] and none.score < small_budget.score


def test_models_form_a_pareto_front(dev: dict[str, list]) -> None:
    from dspex.sim import SimConfig

    cfg = SimConfig.default()
    rows = [(m.skill, m.latency.base_ms, m.price.output_per_1m_usd) for m in cfg.models]
    assert rows == sorted(rows)  # more skill costs more and is slower
    scores = [expected_score("multihop", dev["multihop"], model=m.name) for m in cfg.models]
    assert scores == sorted(scores)
    # an optimized small model beats an unoptimized large one: optimization pays
    assert optimum("multihop", dev["multihop"], model="sim-small").score > scores[-1]


def test_hints_have_diminishing_returns_and_misleading_phrases_subtract() -> None:
    task = get_task("arithmetic")
    sums = []
    text = ""
    for h in task.hints:
        text += " " + h.sentence()
        sums.append(instruction_score(task, text))
    gains = [b - a for a, b in zip([0.0, *sums], sums, strict=False)]
    assert all(g > 0 for g in gains)
    assert sums[-1] < sum(h.weight for h in task.hints)  # saturates below the raw sum
    assert sums[-1] < PARAMS.hint_cap
    assert instruction_score(task, "ROUND THE RESULT   to the nearest ten") == pytest.approx(-0.55)
    assert instruction_score(task, "nothing relevant") == 0.0


def test_demo_term_saturates_and_counts_wrong_demos() -> None:
    task = get_task("arithmetic")
    ok_same = DemoJudgement("arithmetic", "add", True)
    ok_other = DemoJudgement("arithmetic", "percent", True)
    wrong = DemoJudgement("arithmetic", "add", False)
    foreign = DemoJudgement("multihop", "hq_country", True)
    unanswered = DemoJudgement("arithmetic", "add", None)
    one = demo_score(task, "add", [ok_same])
    two = demo_score(task, "add", [ok_same, ok_same])
    assert 0 < one < two < 2 * one  # the second demo of a cluster adds less
    assert demo_score(task, "add", [ok_other]) < one
    assert demo_score(task, "add", [wrong]) == pytest.approx(-PARAMS.demo_wrong)
    assert demo_score(task, "add", [foreign, unanswered]) == 0.0
    assert demo_score(task, "add", [ok_same] * 50) < PARAMS.demo_cap


def test_reasoning_helps_hard_examples_more() -> None:
    task = get_task("arithmetic")
    exs = task.load(200, seed=0)
    easy = min(exs, key=lambda e: e.difficulty)
    hard = max(exs, key=lambda e: e.difficulty)

    def gain(ex: object) -> float:
        return p_correct(task, ex, 0.6, reasoning=True) - p_correct(task, ex, 0.6)

    assert gain(hard) > gain(easy) > 0


def test_task_skill_overrides_the_model_skill(dev: dict[str, list]) -> None:
    spec = ModelSpec(name="mixed", skill=0.3, task_skill={"arithmetic": 0.9})
    assert expected_score("arithmetic", dev["arithmetic"], model=spec) > expected_score(
        "arithmetic", dev["arithmetic"], model=0.3
    )
    assert expected_score("multihop", dev["multihop"], model=spec) == expected_score(
        "multihop", dev["multihop"], model=0.3
    )


def test_bad_arguments(dev: dict[str, list]) -> None:
    with pytest.raises(ConfigurationError, match="not an example"):
        expected_score("arithmetic", dev["multihop"])
    with pytest.raises(ConfigurationError, match="at least one"):
        expected_score("arithmetic", [])
    with pytest.raises(ConfigurationError, match="no model"):
        expected_score("arithmetic", dev["arithmetic"], model="gpt-99")
    with pytest.raises(ConfigurationError, match=r"\[0, 1\]"):
        expected_score("arithmetic", dev["arithmetic"], model=1.5)
    with pytest.raises(ConfigurationError, match="max_demos"):
        optimum("arithmetic", dev["arithmetic"], max_demos=-1)
