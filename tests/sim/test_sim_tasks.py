"""Synthetic tasks: seeded, recognisable, with gold answers, clusters, difficulties and
plausible distractors."""

from __future__ import annotations

import pickle
from collections import Counter

import pytest

from dspex.primitives.example import Example
from dspex.sim import AnswerMatch, get_task, list_tasks, load_task, normalize_answer
from dspex.sim.tasks import lookup_ref, parse_ref, sim_example
from dspex.sim.tasks.multihop import knowledge_base

TASKS = ["arithmetic", "classification", "multihop"]


def test_the_three_tasks_are_registered() -> None:
    assert list_tasks() == sorted(TASKS)


@pytest.mark.parametrize("name", TASKS)
def test_examples_are_a_pure_function_of_seed_split_index(name: str) -> None:
    a = load_task(name, n=30, seed=3, split="train")
    b = load_task(name, n=60, seed=3, split="train")
    assert [e.toDict() for e in a] == [
        e.toDict() for e in b[:30]
    ]  # a larger load extends a smaller one
    other_seed = load_task(name, n=30, seed=4, split="train")
    other_split = load_task(name, n=30, seed=3, split="test")
    assert (
        sum(
            x[get_task(name).key_input] == y[get_task(name).key_input]
            for x, y in zip(a, other_seed, strict=False)
        )
        == 0
    )
    assert len({e[get_task(name).key_input] for e in a + other_split}) == 60


@pytest.mark.parametrize("name", TASKS)
def test_examples_have_inputs_gold_cluster_difficulty_and_distractors(name: str) -> None:
    task = get_task(name)
    exs = load_task(name, n=300, seed=0, split="dev")
    for ex in exs:
        assert isinstance(ex, Example)
        assert set(ex.inputs().keys()) == set(task.input_fields)
        assert ex[task.answer_field]
        assert ex.cluster in task.clusters
        assert 0.0 <= ex.difficulty <= 1.0
        assert len(ex.distractors) >= 3
        gold = normalize_answer(ex[task.answer_field])
        assert gold not in {normalize_answer(d) for d in ex.distractors}
        assert len({normalize_answer(d) for d in ex.distractors}) == len(ex.distractors)
    clusters = Counter(e.cluster for e in exs)
    assert set(clusters) == set(task.clusters)  # every kind of problem shows up
    assert min(clusters.values()) >= 20
    diffs = sorted(e.difficulty for e in exs)
    assert diffs[30] < 0.35 and diffs[-30] > 0.55  # easy and hard examples both exist


def test_arithmetic_gold_answers_are_right() -> None:
    # the rationale ends in the computation whose result is the gold answer
    for ex in get_task("arithmetic").load(100, seed=1):
        assert (
            ex.rationale.rstrip(".").split("=")[-1].split()[0].strip() == ex.answer
            or ex.answer in ex.rationale
        )
        assert int(ex.answer) > 0


def test_multihop_context_holds_the_chain_and_the_answer() -> None:
    kb = knowledge_base(0)
    for ex in get_task("multihop").load(100, seed=0):
        context = ex.inputs["context"]
        assert any(ex.answer in fact for fact in context)
        assert len(context) >= 4  # supporting facts plus distractor facts
        hops = ex.extra["hops"]
        assert hops in (2, 3)
    assert len(set(kb.people)) == len(kb.people)
    assert knowledge_base(0) is knowledge_base(0) and knowledge_base(1).people != kb.people


def test_classification_labels_are_the_clusters() -> None:
    for ex in get_task("classification").load(100, seed=0):
        assert ex.answer == ex.cluster
        assert ex.distractors[0] != ex.answer


def test_reference_tags_round_trip() -> None:
    ex = load_task("multihop", n=5, seed=7, split="test")[4]
    assert parse_ref(ex.question) == ("multihop", 7, "test", 4)
    found = lookup_ref(ex.question)
    assert found is not None and found[1].answer == ex.answer
    assert sim_example(ex) == found
    assert sim_example({"question": "no tag here"}) is None
    assert lookup_ref("(ref unknowntask:0:train:1)") is None
    assert parse_ref("plain text") is None


def test_metric_normalizes_answers() -> None:
    metric = get_task("arithmetic").metric
    gold = Example(question="q", answer="42")
    assert metric(gold, {"answer": " 42. "})
    assert metric(gold, {"answer": "42.0"})
    assert metric(gold, {"answer": "$42"})
    assert not metric(gold, {"answer": "43"})
    assert not metric(gold, {"answer": None})
    assert not metric(gold, {})
    assert normalize_answer("1,200") == "1200"
    assert normalize_answer("«Billing»") == "billing"
    assert pickle.loads(pickle.dumps(metric)) == AnswerMatch("answer")


def test_task_declarations() -> None:
    for name in TASKS:
        task = get_task(name)
        assert "->" in task.signature
        assert task.answer_field in task.signature
        assert all(h.weight > 0 for h in task.hints) and all(h.weight < 0 for h in task.misleading)
        best = task.best_instruction()
        assert all(h.phrase.lower() in best.lower() for h in task.hints)
        assert not any(h.phrase.lower() in best.lower() for h in task.misleading)


def test_bad_input_is_refused_with_a_clear_message() -> None:
    with pytest.raises(KeyError, match="arithmetic"):
        load_task("no-such-task")
    with pytest.raises(ValueError, match="n must be"):
        load_task("arithmetic", n=-1)
    with pytest.raises(ValueError, match="seed must be"):
        load_task("arithmetic", seed=-5)
    with pytest.raises(ValueError, match="split"):
        load_task("arithmetic", split="Train/1")
