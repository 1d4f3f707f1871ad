"""Reasoning steps and chains (the seed's ``reasoning_step`` / ``reasoning_chain``).

A step has a thought (10-1000 characters), its reasoning (20-2000 characters), an optional
confidence and a step number from 1. A chain is 1 to 50 steps numbered 1, 2, 3, ... in order:
steps without a number are numbered by position, a step whose number is out of place is an
error, and so is a step that repeats an earlier thought (it does not move the reasoning on).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from dspex.types._coerce import parse_json_text
from dspex.types._errors import fail
from dspex.types._numeric import ConfidenceScore

__all__ = ["MAX_REASONING_STEPS", "ReasoningChain", "ReasoningStep"]

MAX_REASONING_STEPS = 50


def _same_text(a: str, b: str) -> bool:
    return " ".join(a.lower().split()) == " ".join(b.lower().split())


class ReasoningStep(BaseModel):
    """One step of a chain of thought: what the model considered and why."""

    # strip whitespace before the length checks: "   " is not a thought; forbid unknown keys so
    # a misspelled field is reported instead of dropped (and the JSON schema is closed)
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, defer_build=True)

    step_number: int | None = Field(
        default=None, ge=1, description="Position of the step in its chain, from 1."
    )
    thought: str = Field(min_length=10, max_length=1000, description="What this step considers.")
    reasoning: str = Field(
        min_length=20,
        max_length=2000,
        description="The argument that leads from the thought onward.",
    )
    confidence: ConfidenceScore | None = Field(
        default=None, description="Confidence in this step, 0 to 1."
    )

    @model_validator(mode="before")
    @classmethod
    def _from_json_text(cls, value: Any) -> Any:
        return parse_json_text(value, expect=dict)

    @model_validator(mode="after")
    def _reasoning_adds_something(self) -> ReasoningStep:
        if _same_text(self.thought, self.reasoning):
            fail(
                "reasoning_differs_from_thought",
                "must explain the thought, not repeat it word for word",
                at=("reasoning",),
            )
        return self


def _chain_before(value: Any) -> Any:
    value = parse_json_text(value, expect=list)
    if isinstance(value, tuple):
        return list(value)
    return value


def _check_chain(steps: list[ReasoningStep]) -> list[ReasoningStep]:
    out: list[ReasoningStep] = []
    for i, step in enumerate(steps):
        expected = i + 1
        if step.step_number is None:
            step = step.model_copy(update={"step_number": expected})
        elif step.step_number != expected:
            fail(
                "step_order",
                f"must be {expected}: steps are numbered 1, 2, 3, ... in order, got {step.step_number}",
                at=(i, "step_number"),
            )
        for j, earlier in enumerate(out):
            if _same_text(earlier.thought, step.thought):
                fail(
                    "distinct_steps",
                    f"repeats the thought of step {j + 1}; each step must move the reasoning on",
                    at=(i, "thought"),
                )
        out.append(step)
    return out


ReasoningChain = Annotated[
    list[ReasoningStep],
    Field(
        min_length=1,
        max_length=MAX_REASONING_STEPS,
        description="Reasoning steps in order, numbered from 1.",
    ),
    BeforeValidator(_chain_before),
    AfterValidator(_check_chain),
]
"""1 to 50 ``ReasoningStep`` in order; missing step numbers are filled in by position."""
