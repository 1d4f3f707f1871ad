"""``ProgramModel``: a program's assignment of one model, with its routing rule (Stage 4 §1.2).

Conditions (all must hold for the assignment to be a candidate of a call):

- ``input_size_max``: the inputs, as JSON, are at most this many characters;
- ``context_required``: this key (or every key of a list) is present in the call's context;
- ``cost_limit``: the estimated cost of the call (input tokens at the input price plus the
  expected reply at the output price) is at most this many USD.

Unknown condition names are refused when the assignment is made (the seed ignored them, which
hides typos).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from dspex.errors import ValidationError
from dspex.registry.model import Model

__all__ = ["CONDITIONS", "ProgramModel", "Strategy", "check_conditions", "unmet_condition"]


class Strategy(StrEnum):
    PRIMARY = "primary"
    FALLBACK = "fallback"
    LOAD_BALANCED = "load_balanced"
    COST_OPTIMIZED = "cost_optimized"
    LATENCY_OPTIMIZED = "latency_optimized"


CONDITIONS = frozenset({"input_size_max", "context_required", "cost_limit"})


def check_conditions(conditions: Mapping[str, Any] | None) -> dict[str, Any]:
    out = dict(conditions or {})
    unknown = sorted(set(out) - CONDITIONS)
    if unknown:
        raise ValidationError(
            f"Unknown routing condition(s) {unknown}; the conditions are: {sorted(CONDITIONS)}.",
            field="conditions",
        )
    if "input_size_max" in out:
        v = out["input_size_max"]
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValidationError("input_size_max is a positive number of characters.", field="conditions")
    if "cost_limit" in out:
        v = out["cost_limit"]
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            raise ValidationError("cost_limit is a non-negative amount in USD.", field="conditions")
        out["cost_limit"] = float(v)
    if "context_required" in out:
        v = out["context_required"]
        keys = [v] if isinstance(v, str) else v
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) and k for k in keys):
            raise ValidationError("context_required is a context key, or a list of keys.", field="conditions")
    return out


@dataclass(slots=True, eq=False)
class ProgramModel:
    """One assignment. ``model`` is the registry's live ``Model``."""

    id: str
    program: str
    program_id: str
    model: Model
    strategy: Strategy = Strategy.PRIMARY
    priority: int = 0
    weight: int = 100
    conditions: dict[str, Any] = field(default_factory=dict)
    # measured totals (this process's view: the store's totals at load, plus calls since)
    total_requests: int = 0
    successful_requests: int = 0
    total_cost_usd: float = 0.0

    def describe(self) -> str:
        return f"{self.model.name!r} ({self.strategy.value}, priority {self.priority})"


def unmet_condition(
    pm: ProgramModel, input_chars: int, context: Mapping[str, Any], output_tokens: int
) -> str | None:
    """Why ``pm``'s conditions rule it out for this call, or None when they all hold."""
    cond = pm.conditions
    if not cond:
        return None
    limit = cond.get("input_size_max")
    if limit is not None and input_chars > limit:
        return f"input of {input_chars} characters exceeds input_size_max {limit}"
    need = cond.get("context_required")
    if need is not None:
        keys = [need] if isinstance(need, str) else need
        missing = [k for k in keys if k not in context]
        if missing:
            return f"context lacks required key(s) {missing}"
    cap = cond.get("cost_limit")
    if cap is not None:
        m = pm.model
        tin = -(-input_chars // 4)
        cost = m.cost_usd(tin, output_tokens or m.expected_output_tokens())
        if cost > cap:
            return f"estimated cost ${cost:.6f} exceeds cost_limit ${cap:.6f}"
    return None
