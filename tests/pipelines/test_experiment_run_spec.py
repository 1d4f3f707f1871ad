"""Experiment specs: validation with clear ExperimentErrors, serialisation, the seeded split."""

from __future__ import annotations

import json
import pickle
from collections import Counter

import pytest
from dspex.pipelines.experiments.spec import (
    DatasetSpec,
    ExperimentSpec,
    LMSpec,
    ProgramSpec,
    VariantSpec,
    resolve_optimizer,
)
from dspex.pipelines.experiments.split import is_discrete, split_examples

import dspex
from dspex.errors import ExperimentError
from dspex.sim import load_task

LM = LMSpec(model="openai/sim-small-fast", api_base="http://127.0.0.1:9/v1", temperature=1.0)


def spec(**overrides: object) -> ExperimentSpec:
    fields: dict[str, object] = {
        "name": "exp",
        "dataset": DatasetSpec(task="classification", n_train=10, n_test=40, seed=1),
        "lm": LM,
        "variants": [VariantSpec(name="bootstrap", optimizer="BootstrapFewShot")],
    }
    fields.update(overrides)
    return ExperimentSpec(**fields)  # type: ignore[arg-type]


def test_a_valid_spec_defaults_from_the_task_and_serialises() -> None:
    s = spec(repeats=3, margin=0.02)
    assert s.program_spec().signature == "text -> label"
    assert s.metric_fn()(dspex.Example(label="billing"), dspex.Prediction(label="Billing"))
    assert [a.name for a in s.arms()] == ["baseline", "bootstrap"]
    assert s.planned_effect() == 0.02
    data = s.to_dict()
    json.dumps(data)  # JSON data all the way down
    assert data["variants"][0]["optimizer"] == "BootstrapFewShot"
    assert data["metric"] == "task:classification"
    assert data["lm"]["model"] == "openai/sim-small-fast"


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"variants": []}, "variants"),
        ({"variants": [VariantSpec(name="baseline")]}, "unique"),
        ({"alpha": 0.7}, "alpha"),
        ({"alpha": "often"}, "alpha"),
        ({"correction": "bonferroni"}, "correction"),
        ({"repeats": 0}, "repeats"),
        ({"repeats": 3, "lm": LM.model_copy(update={"temperature": 0.0})}, "temperature"),
        ({"lm": None}, "no model"),
        ({"metric": "no_such_module:fn"}, "Cannot import"),
        ({"metric_kind": "binary", "margin": 1.5}, "pass-rate"),
        (
            {
                "dataset": DatasetSpec(task="classification", n=20),
                "program": None,
                "variants": [VariantSpec(name="v", optimizer="BootstrapFewShot")],
                "metric": None,
            },
            None,
        ),
    ],
)
def test_bad_specs_fail_with_experiment_errors_that_name_the_field(
    overrides: dict[str, object], needle: str | None
) -> None:
    if needle is None:  # the last case is valid: n alone is split by test_fraction
        s = spec(**overrides)
        assert s.dataset.train_size() == 10 and s.dataset.test_size() == 10
        return
    with pytest.raises(ExperimentError) as info:
        spec(**overrides)
    assert needle in str(info.value)
    pickle.loads(pickle.dumps(info.value))  # errors cross process boundaries


def test_variant_checks() -> None:
    with pytest.raises(ExperimentError, match="Unknown optimizer"):
        VariantSpec(name="x", optimizer="NoSuchOptimizer")
    with pytest.raises(ExperimentError, match="not both"):
        VariantSpec(name="x", optimizer="BootstrapFewShot", demos=[dspex.Example(a=1)])
    with pytest.raises(ExperimentError, match="without an optimizer"):
        VariantSpec(name="x", optimizer_params={"k": 2})
    with pytest.raises(ExperimentError, match="arm name"):
        VariantSpec(name="has space")
    with pytest.raises(ExperimentError, match="blank"):
        VariantSpec(name="x", instructions="   ")
    assert resolve_optimizer("dspex.optimizers.labeled:LabeledFewShot").__name__ == "LabeledFewShot"
    with pytest.raises(ExperimentError, match="not an optimizer"):
        resolve_optimizer("json:dumps")


def test_lm_spec_keeps_keys_out_and_needs_a_provider() -> None:
    with pytest.raises(ExperimentError, match="provider/name"):
        LMSpec(model="gpt-4o-mini")
    with pytest.raises(ExperimentError, match="keys never go into a spec"):
        LMSpec(model="openai/x", settings={"api_key": "sk-secret"})
    with pytest.raises(ExperimentError, match="both"):
        LMSpec(model="openai/x", input_price_per_1m_usd=1.0)
    lm = LMSpec(
        model="openai/sim-x", input_price_per_1m_usd=2.0, output_price_per_1m_usd=4.0
    ).build(seed=5)
    assert lm.kwargs["seed"] == 5
    from dspex.clients import price_for

    price = price_for("sim-x", "openai")
    assert price is not None and price.input_per_1m_usd == 2.0


def test_dataset_checks() -> None:
    with pytest.raises(ExperimentError, match="exactly one of task"):
        DatasetSpec()
    with pytest.raises(ExperimentError, match="no simulated task"):
        DatasetSpec(task="chess", n=10)
    with pytest.raises(ExperimentError, match="n_train and n_test"):
        DatasetSpec(task="classification")
    with pytest.raises(ExperimentError, match="exceeds"):
        DatasetSpec(examples=load_task("arithmetic", 10), n_train=8, n_test=5)
    with pytest.raises(ExperimentError, match="no inputs marked"):
        DatasetSpec(examples=[dspex.Example(q="a", a="b"), dspex.Example(q="c", a="d")])
    own = DatasetSpec(examples=load_task("arithmetic", 30), test_fraction=0.3)
    assert (own.train_size(), own.test_size()) == (21, 9)
    assert own.label() == "answer"
    with pytest.raises(ExperimentError, match="program is required"):
        spec(dataset=own)


def test_program_spec_forms() -> None:
    assert isinstance(
        ProgramSpec(signature="q -> a", module="ChainOfThought").build(), dspex.ChainOfThought
    )
    base = dspex.Predict("q -> a")
    built = ProgramSpec(instance=base).build()
    assert built is not base and isinstance(built, dspex.Predict)
    with pytest.raises(ExperimentError, match="exactly one"):
        ProgramSpec(signature="q -> a", factory="m:f")
    with pytest.raises(ExperimentError, match="factory must be"):
        ProgramSpec(factory="not a path")
    with pytest.raises(ExperimentError, match="at least one predictor"):
        ProgramSpec(factory="builtins:dict").build()
    with pytest.raises(ExperimentError, match="factory json:dumps raised TypeError"):
        ProgramSpec(factory="json:dumps").build()
    coerced = spec(program="q -> a")
    assert coerced.program is not None and coerced.program.signature == "q -> a"


def test_split_is_seeded_disjoint_and_stratified_for_discrete_labels() -> None:
    data = load_task("classification", 300, seed=4)
    a = split_examples(data, n_train=60, n_test=120, seed=7, label_field="label")
    b = split_examples(data, n_train=60, n_test=120, seed=7, label_field="label")
    c = split_examples(data, n_train=60, n_test=120, seed=8, label_field="label")
    assert a.test_indices == b.test_indices and a.test_indices != c.test_indices
    assert a.stratified_by == "label"
    train_refs = {e.sim_ref for e in a.train}
    assert not train_refs & {e.sim_ref for e in a.test} and len(a.train) == 60
    whole = Counter(e.label for e in data)
    test = Counter(e.label for e in a.test)
    for label, count in whole.items():  # each class within one example of its share
        assert abs(test[label] - 120 * count / 300) < 1.0 + 1e-9


def test_continuous_labels_are_not_stratified() -> None:
    data = load_task("arithmetic", 100, seed=1)
    assert not is_discrete([e.answer for e in data])
    s = split_examples(data, n_train=10, n_test=50, seed=0, label_field="answer")
    assert s.stratified_by is None and len(s.test) == 50
    assert not is_discrete([0.5, 0.25, 0.5, 0.25])
    assert is_discrete(["a", "b"] * 10)
    with pytest.raises(ExperimentError, match="Cannot split"):
        split_examples(data, n_train=60, n_test=50, seed=0)
    with pytest.raises(ExperimentError, match="label_field"):
        split_examples(data, n_train=1, n_test=5, seed=0, stratify=True)
