"""Reasoning steps and chains: lengths, numbering, repetition, JSON text from an LM."""

import itertools
import json

import pytest
from pydantic import BaseModel

from dspex.errors import ValidationError
from dspex.types import MAX_REASONING_STEPS, ReasoningChain, ReasoningStep, validate

_serial = itertools.count()


def step(i: int | None = None, **kw):
    """A valid step dict; each call gets a distinct thought unless one is given."""
    n = next(_serial)
    d = {
        "thought": kw.pop("thought", f"Consider part {n} of the problem"),
        "reasoning": kw.pop("reasoning", f"Part {n} follows because the premises state it plainly"),
    }
    if i is not None:
        d["step_number"] = i
    d.update(kw)
    return d


def test_step_valid_and_whitespace_stripped():
    s = ReasoningStep.model_validate(
        step(1, thought="   Look at the two numbers   ", confidence="90%")
    )
    assert s.thought == "Look at the two numbers"
    assert s.confidence == 0.9 and s.step_number == 1


def test_step_from_json_text():
    s = validate("reasoning_step", json.dumps(step(2)))
    assert isinstance(s, ReasoningStep) and s.step_number == 2


@pytest.mark.parametrize(
    ("data", "where", "constraint", "phrase"),
    [
        (
            step(thought="short"),
            "s.thought",
            "min_length=10",
            "must have at least 10 characters (min_length=10, max_length=1000), got 'short'",
        ),
        (
            step(thought="x" * 1001),
            "s.thought",
            "max_length=1000",
            "must have at most 1000 characters",
        ),
        (
            step(thought="          "),
            "s.thought",
            "min_length=10",
            "s.thought must have at least 10 characters",
        ),
        (
            step(reasoning="too brief"),
            "s.reasoning",
            "min_length=20",
            "must have at least 20 characters (min_length=20, max_length=2000)",
        ),
        (step(reasoning="y" * 2001), "s.reasoning", "max_length=2000", "at most 2000 characters"),
        (step(0), "s.step_number", "ge=1", "s.step_number must be >= 1 (ge=1), got 0"),
        (
            step(confidence=1.5),
            "s.confidence",
            "le=1",
            "s.confidence must be <= 1 (ge=0, le=1), got 1.5",
        ),
        (
            {"thought": "Consider the problem carefully"},
            "s.reasoning",
            "required",
            "s.reasoning is required but missing",
        ),
        (
            step(conclusion="extra"),
            "s.conclusion",
            "no_extra_fields",
            "s.conclusion is not an allowed field",
        ),
        (
            step(thought="The sum of two and three", reasoning="  the SUM of two and   three "),
            "s.reasoning",
            "reasoning_differs_from_thought",
            "s.reasoning must explain the thought",
        ),
        (
            step(
                thought="The sum of two and three is five",
                reasoning="the SUM of two and   three is five",
            ),
            "s.reasoning",
            "reasoning_differs_from_thought",
            "must explain the thought, not repeat it",
        ),
        ("not json", "s", "type=object", "s must be a JSON object"),
        (42, "s", "type=object", "s must be an object"),
    ],
)
def test_step_rejects(data, where, constraint, phrase):
    with pytest.raises(ValidationError) as info:
        validate(ReasoningStep, data, field="s")
    assert info.value.field == where
    assert info.value.constraint == constraint
    assert phrase in str(info.value)


def test_chain_numbers_unnumbered_steps_by_position():
    chain = validate(ReasoningChain, [step(), step(), step(3)])
    assert [s.step_number for s in chain] == [1, 2, 3]
    assert all(isinstance(s, ReasoningStep) for s in chain)


def test_chain_from_json_text_and_code_fence():
    text = "```json\n" + json.dumps([step(1), step(2)]) + "\n```"
    chain = validate("reasoning_chain", text)
    assert [s.step_number for s in chain] == [1, 2]


def test_chain_step_out_of_order():
    with pytest.raises(ValidationError) as info:
        validate(ReasoningChain, [step(1), step(3)], field="chain")
    err = info.value
    assert (
        str(err)
        == "chain[1].step_number must be 2: steps are numbered 1, 2, 3, ... in order, got 3"
    )
    assert (err.field, err.constraint) == ("chain[1].step_number", "step_order")


def test_chain_starting_at_two_is_out_of_order():
    with pytest.raises(ValidationError, match=r"chain\[0\].step_number must be 1"):
        validate(ReasoningChain, [step(2), step(3)], field="chain")


def test_chain_repeated_thought():
    a = step(thought="Check the units first")
    b = step(
        thought="check the   units FIRST", reasoning="A different argument that is long enough"
    )
    with pytest.raises(ValidationError) as info:
        validate(ReasoningChain, [a, step(), b], field="chain")
    assert info.value.field == "chain[2].thought"
    assert info.value.constraint == "distinct_steps"
    assert "repeats the thought of step 1" in str(info.value)


def test_chain_length_bounds():
    chain = validate(
        ReasoningChain,
        [step(thought=f"Consider fact number {i}") for i in range(MAX_REASONING_STEPS)],
    )
    assert len(chain) == MAX_REASONING_STEPS
    with pytest.raises(ValidationError) as info:
        validate(
            ReasoningChain,
            [step(thought=f"Consider fact number {i}") for i in range(51)],
            field="chain",
        )
    assert "chain must have at most 50 items (min_length=1, max_length=50), got 51" in str(
        info.value
    )
    with pytest.raises(ValidationError) as info:
        validate(ReasoningChain, [], field="chain")
    assert "chain must have at least 1 item" in str(info.value)
    assert info.value.constraint == "min_length=1"


def test_chain_reports_nested_problems_with_their_location():
    with pytest.raises(ValidationError) as info:
        validate(ReasoningChain, [step(), step(confidence=7), step(thought="tiny")], field="chain")
    err = info.value
    assert err.field == "chain[1].confidence"
    assert "chain[1].confidence must be <= 1 (ge=0, le=1), got 7" in str(err)
    assert "chain[2].thought must have at least 10 characters" in str(err)
    assert [e[0] for e in err.errors] == ["chain[1].confidence", "chain[2].thought"]


class Solved(BaseModel):
    steps: ReasoningChain
    answer: str


def test_chain_schema_and_model_use():
    schema = Solved.model_json_schema()
    steps = schema["properties"]["steps"]
    assert steps["type"] == "array" and steps["minItems"] == 1 and steps["maxItems"] == 50
    assert steps["items"] == {"$ref": "#/$defs/ReasoningStep"}
    rs = schema["$defs"]["ReasoningStep"]
    assert rs["additionalProperties"] is False
    assert set(rs["required"]) == {"thought", "reasoning"}
    assert rs["properties"]["thought"]["minLength"] == 10
    assert rs["properties"]["confidence"]["anyOf"][0]["maximum"] == 1
    solved = Solved.model_validate({"steps": json.dumps([step(), step()]), "answer": "5"})
    assert solved.steps[1].step_number == 2
