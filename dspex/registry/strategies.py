"""Routing strategies: small classes with one method, ``choose`` (as Ray Serve's request
router is one abstract class and ``pow_2_router`` one implementation).

The router filters a program's assignments down to the candidates of a call (available,
fitting the context window, not cooling, conditions met) and dispatches as the seed's
``select_by_strategy`` does: a primary among the candidates decides (``PrimaryStrategy``);
otherwise the first strategy group present in the order cost_optimized, latency_optimized,
load_balanced chooses within its group; otherwise the highest-priority candidate serves.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dspex.registry.assignment import ProgramModel, Strategy
from dspex.registry.model import HealthStatus, Model, estimate_tokens

__all__ = [
    "CostOptimizedStrategy",
    "FirstByPriority",
    "LatencyOptimizedStrategy",
    "LoadBalancedStrategy",
    "PrimaryStrategy",
    "RouteRequest",
    "RoutingContext",
    "RoutingStrategy",
    "default_strategies",
]

#: the seed's stand-in for a model with no measured latency
UNMEASURED_LATENCY_MS = 1000.0
#: the seed's stand-in for a model with no measured success rate
UNMEASURED_SUCCESS_RATE = 0.5


class RouteRequest:
    """One call as the router sees it. Sizes are computed once, on first use."""

    __slots__ = ("_chars", "context", "inputs", "output_tokens", "program")

    def __init__(self, program: str, inputs: Any, context: Mapping[str, Any], output_tokens: int = 0) -> None:
        self.program = program
        self.inputs = inputs
        self.context = context
        self.output_tokens = int(output_tokens or 0)
        self._chars: int | None = None

    def input_chars(self) -> int:
        """The inputs' size as JSON characters (the seed's ``estimate_input_size``).

        Chat messages with plain-text content are measured without encoding them (the length of
        each text plus the JSON around it), so a long prompt costs the router nothing extra.
        """
        if self._chars is None:
            self._chars = _message_chars(self.inputs)
            if self._chars is None:
                self._chars = len(json.dumps(self.inputs, ensure_ascii=False, default=str))
        return self._chars

    def input_tokens(self) -> int:
        return estimate_tokens(self.input_chars())

    def needed_tokens(self) -> int:
        """Prompt tokens plus the tokens reserved for the reply (the call's max_tokens)."""
        return self.input_tokens() + self.output_tokens


@dataclass(slots=True)
class RoutingContext:
    """What a strategy may consult besides the candidates."""

    now_s: float  # wall-clock seconds, for health ages
    stale_after_s: float
    random: Callable[[], float]  # uniform in [0, 1)
    #: take a trial slot for a model in poor health (see ``CooldownTracker.try_trial``)
    trial: Callable[[Model], bool]
    #: ask the health checker to probe a model soon
    request_check: Callable[[Model], None]


class RoutingStrategy(ABC):
    """Chooses one of ``candidates`` (non-empty, highest priority first) and says why."""

    @abstractmethod
    def choose(
        self, candidates: Sequence[ProgramModel], request: RouteRequest, ctx: RoutingContext
    ) -> tuple[ProgramModel, str]: ...


class FirstByPriority(RoutingStrategy):
    def choose(
        self, candidates: Sequence[ProgramModel], request: RouteRequest, ctx: RoutingContext
    ) -> tuple[ProgramModel, str]:
        return candidates[0], "highest-priority candidate"


class PrimaryStrategy(RoutingStrategy):
    """The primary while it is healthy, degraded or not yet observed; a fallback assignment
    while it is unhealthy or its health is stale, with an occasional trial call to the primary
    so real traffic shows when it has recovered (the seed diverted for good)."""

    def choose(
        self, candidates: Sequence[ProgramModel], request: RouteRequest, ctx: RoutingContext
    ) -> tuple[ProgramModel, str]:
        primary = next(pm for pm in candidates if pm.strategy is Strategy.PRIMARY)
        m = primary.model
        health = m.health_status(ctx.now_s, ctx.stale_after_s)
        if health in (HealthStatus.HEALTHY, HealthStatus.UNKNOWN):
            return primary, f"primary, health {health.value}{_rate(m)}"
        if health is HealthStatus.DEGRADED:
            ctx.request_check(m)
            return primary, f"primary, health degraded{_rate(m)}; a health check was requested"
        fallback = next((pm for pm in candidates if pm.strategy is Strategy.FALLBACK), None)
        if fallback is None:
            return primary, f"primary is {health.value}{_rate(m)} but no fallback assignment is a candidate"
        ctx.request_check(m)
        if ctx.trial(m):
            return primary, f"primary is {health.value}{_rate(m)}; trial call to see whether it recovered"
        return fallback, f"primary {m.name!r} is {health.value}{_rate(m)}; using the fallback"


class CostOptimizedStrategy(RoutingStrategy):
    """The cheapest candidate for this call: prompt tokens at the input price plus the reserved
    (or expected) reply at the output price. Ties go to the higher priority."""

    def choose(
        self, candidates: Sequence[ProgramModel], request: RouteRequest, ctx: RoutingContext
    ) -> tuple[ProgramModel, str]:
        tin = request.input_tokens()
        costs = [
            pm.model.cost_usd(tin, request.output_tokens or pm.model.expected_output_tokens()) for pm in candidates
        ]
        best = min(range(len(candidates)), key=lambda i: costs[i])
        others = sorted(c for i, c in enumerate(costs) if i != best)
        vs = f" vs ${others[0]:.6f}" if others else ""
        return candidates[best], f"cheapest: estimated ${costs[best]:.6f}{vs}"


class LatencyOptimizedStrategy(RoutingStrategy):
    """The candidate with the lowest average latency (1000 ms assumed when unmeasured)."""

    def choose(
        self, candidates: Sequence[ProgramModel], request: RouteRequest, ctx: RoutingContext
    ) -> tuple[ProgramModel, str]:
        lat = [
            pm.model.average_latency_ms if pm.model.average_latency_ms is not None else UNMEASURED_LATENCY_MS
            for pm in candidates
        ]
        best = min(range(len(candidates)), key=lambda i: lat[i])
        return candidates[best], f"fastest: average latency {lat[best]:.1f} ms"


class LoadBalancedStrategy(RoutingStrategy):
    """A weighted random pick, weight x success rate (0.5 assumed when unmeasured)."""

    def choose(
        self, candidates: Sequence[ProgramModel], request: RouteRequest, ctx: RoutingContext
    ) -> tuple[ProgramModel, str]:
        weights = [
            pm.weight * (pm.model.success_rate if pm.model.success_rate is not None else UNMEASURED_SUCCESS_RATE)
            for pm in candidates
        ]
        total = sum(weights)
        if total <= 0:
            return candidates[0], "load balanced: every weight is 0; highest priority"
        r = ctx.random() * total
        acc = 0.0
        for pm, w in zip(candidates, weights, strict=True):
            acc += w
            if r < acc:
                return pm, f"load balanced: weighted pick with share {w / total:.0%}"
        return candidates[-1], f"load balanced: weighted pick with share {weights[-1] / total:.0%}"


def default_strategies() -> dict[Strategy, RoutingStrategy]:
    return {
        Strategy.PRIMARY: PrimaryStrategy(),
        Strategy.COST_OPTIMIZED: CostOptimizedStrategy(),
        Strategy.LATENCY_OPTIMIZED: LatencyOptimizedStrategy(),
        Strategy.LOAD_BALANCED: LoadBalancedStrategy(),
        Strategy.FALLBACK: FirstByPriority(),
    }


_MESSAGE_JSON_CHARS = 32  # {"role": "assistant", "content": ""}, plus the list's comma


def _message_chars(inputs: Any) -> int | None:
    """JSON size of a list of text chat messages without encoding them; None for anything else."""
    if not isinstance(inputs, list):
        return None
    total = 2
    for msg in inputs:
        if not isinstance(msg, dict) or len(msg) > 2:
            return None
        content = msg.get("content")
        if not isinstance(content, str) or not isinstance(msg.get("role"), str):
            return None
        total += len(content) + _MESSAGE_JSON_CHARS
    return total


def _rate(m: Model) -> str:
    return f" (success rate {m.success_rate:.2f})" if m.success_rate is not None else ""
