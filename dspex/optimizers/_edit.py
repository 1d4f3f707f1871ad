"""Small edits optimizers make to a program's predictors: instructions, prefixes, reasoning, LM."""

from __future__ import annotations

from typing import Any

from dspex.signatures.field import OutputField

__all__ = [
    "REASONING_FIELD",
    "has_reasoning",
    "last_output_field",
    "output_prefix",
    "set_instructions",
    "set_reasoning",
]

REASONING_FIELD = "reasoning"


def last_output_field(predictor: Any) -> str:
    return list(predictor.signature.output_fields)[-1]


def output_prefix(predictor: Any) -> str | None:
    info = predictor.signature.output_fields[last_output_field(predictor)]
    extra = info.json_schema_extra or {}
    prefix = extra.get("prefix") if isinstance(extra, dict) else None
    return prefix if isinstance(prefix, str) else None


def set_instructions(predictor: Any, instructions: str, prefix: str | None = None) -> None:
    """Give ``predictor`` new instructions (and a new prefix on its last output field)."""
    sig = predictor.signature.with_instructions(instructions)
    if prefix is not None:
        sig = sig.with_updated_fields(last_output_field(predictor), prefix=prefix)
    predictor.signature = sig


def has_reasoning(predictor: Any) -> bool:
    return REASONING_FIELD in predictor.signature.output_fields


def set_reasoning(predictor: Any, on: bool) -> None:
    """Ask for step-by-step reasoning before the outputs (as ChainOfThought does), or not."""
    if on and not has_reasoning(predictor):
        field = OutputField(prefix="Reasoning: Let's think step by step in order to", desc="${reasoning}")
        predictor.signature = predictor.signature.prepend(REASONING_FIELD, field, str)
    elif not on and has_reasoning(predictor):
        predictor.signature = predictor.signature.delete(REASONING_FIELD)
