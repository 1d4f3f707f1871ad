"""The staged traffic shift of a hot swap, as a pure state machine (STYLE.md 14).

    start ──> ROLLING ──tick (step time up, healthy)──> next step ... ──> COMPLETE (100 %)
                 │  └──tick (unhealthy ``failure_threshold`` times in a row)──> ROLLED_BACK
                 ├──promote──> next step (or COMPLETE with full=True)
                 ├──pause──> MANUAL (weights set from outside) ──promote / resume──> ROLLING
                 └──rollback──> ROLLED_BACK

Every function takes the state, the event's data and ``now`` (seconds, any monotonic clock)
and returns a new state; nothing here sleeps, reads a clock or talks to Ray. The
``HotSwapSupervisor`` is the thin loop around it: it reads the predictors' metrics, runs the
health check, calls ``tick`` and applies ``state.weights`` to the routing table.

A step holds while the health check has too few executions to judge (INSUFFICIENT); with
``max_hold_s`` set, holding longer than that past the step's time rolls back (a version that
gets no traffic cannot be proven healthy).
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field, replace
from typing import Any

from dspex.errors import ConfigurationError, InvalidTransition

from .health import HealthPolicy, HealthReport, Verdict
from .spec import VersionId

__all__ = ["Phase", "RolloutPlan", "RolloutState", "pause", "promote", "resume", "rollback", "start", "tick"]

MACHINE = "rollout"


class Phase(enum.StrEnum):
    ROLLING = "rolling"
    MANUAL = "manual"
    COMPLETE = "complete"
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True)
class RolloutPlan:
    """How to shift traffic: percent steps, time per step, and when to give up."""

    steps: tuple[float, ...] = (5.0, 10.0, 25.0, 50.0, 100.0)
    step_s: float = 30.0
    failure_threshold: int = 2
    auto_rollback: bool = True
    health: HealthPolicy = field(default_factory=HealthPolicy)
    max_hold_s: float | None = None

    def __post_init__(self) -> None:
        steps = tuple(float(s) for s in self.steps)
        object.__setattr__(self, "steps", steps)
        if not steps or steps[-1] != 100.0:
            raise ConfigurationError(f"Rollout steps must end at 100 (percent), got {list(steps)}.")
        if any(not 0.0 < s <= 100.0 for s in steps) or any(b <= a for a, b in itertools.pairwise(steps)):
            raise ConfigurationError(f"Rollout steps must rise strictly within (0, 100], got {list(steps)}.")
        if self.step_s < 0 or self.failure_threshold < 1:
            raise ConfigurationError(
                f"A rollout needs step_s >= 0 and failure_threshold >= 1, got {self.step_s} and {self.failure_threshold}."
            )
        if self.max_hold_s is not None and self.max_hold_s < 0:
            raise ConfigurationError(f"max_hold_s must be >= 0 or None, got {self.max_hold_s}.")

    @classmethod
    def immediate(cls) -> RolloutPlan:
        """All traffic to the new version at once (the old one drains)."""
        return cls(steps=(100.0,), step_s=0.0)

    @classmethod
    def staged(cls, steps: tuple[float, ...] = (5.0, 10.0, 25.0, 50.0, 100.0), step_s: float = 30.0, **kw: Any) -> RolloutPlan:
        return cls(steps=steps, step_s=step_s, **kw)


@dataclass(frozen=True)
class RolloutState:
    active: VersionId | None  # the version serving before the rollout (the rollback target)
    staged: VersionId
    plan: RolloutPlan
    phase: Phase
    step: int
    weight: float  # percent of traffic to the staged version
    started_s: float
    step_started_s: float
    failed_checks: int = 0
    reason: str = ""
    finished_s: float | None = None
    last_report: HealthReport | None = None

    @property
    def done(self) -> bool:
        return self.phase in (Phase.COMPLETE, Phase.ROLLED_BACK)

    @property
    def weights(self) -> dict[VersionId, float]:
        """The traffic split this state asks for."""
        if self.active is None or self.active == self.staged:
            return {self.staged: 100.0 if self.phase is not Phase.ROLLED_BACK else 0.0}
        return {self.active: 100.0 - self.weight, self.staged: self.weight}

    def describe(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "staged": self.staged,
            "phase": self.phase.value,
            "step": self.step,
            "steps": list(self.plan.steps),
            "weight": self.weight,
            "failed_checks": self.failed_checks,
            "reason": self.reason,
            "started_s": self.started_s,
            "finished_s": self.finished_s,
            "last_report": self.last_report.to_dict() if self.last_report else None,
        }


_ALLOWED: dict[Phase, tuple[str, ...]] = {
    Phase.ROLLING: ("tick", "promote", "pause", "rollback"),
    Phase.MANUAL: ("tick", "promote", "resume", "rollback"),
    Phase.COMPLETE: (),
    Phase.ROLLED_BACK: (),
}


def _refuse(state: RolloutState, event: str) -> InvalidTransition:
    return InvalidTransition.of(MACHINE, state.phase.value, event, _ALLOWED[state.phase])


def start(active: VersionId | None, staged: VersionId, plan: RolloutPlan, now: float) -> RolloutState:
    """Begin shifting traffic from ``active`` to ``staged``. With no active version (a first
    deploy) or a first step of 100 % the rollout completes at once."""
    state = RolloutState(active, staged, plan, Phase.ROLLING, 0, plan.steps[0], now, now)
    if active is None or active == staged or plan.steps[0] >= 100.0:
        return replace(state, phase=Phase.COMPLETE, step=len(plan.steps) - 1, weight=100.0, finished_s=now,
                       reason="immediate" if active is not None else "first version")
    return state


def _advance(state: RolloutState, now: float, reason: str) -> RolloutState:
    nxt = state.step + 1
    if nxt >= len(state.plan.steps) or state.plan.steps[nxt] >= 100.0:
        return replace(state, phase=Phase.COMPLETE, step=len(state.plan.steps) - 1, weight=100.0,
                       failed_checks=0, finished_s=now, reason=reason)
    return replace(state, phase=Phase.ROLLING, step=nxt, weight=state.plan.steps[nxt], step_started_s=now,
                   failed_checks=0, reason=reason)


def tick(state: RolloutState, now: float, report: HealthReport | None) -> RolloutState:
    """One health check at ``now``. Only a ROLLING state moves; others come back unchanged."""
    if state.phase is not Phase.ROLLING:
        return state
    plan = state.plan
    state = replace(state, last_report=report)
    verdict = report.verdict if report is not None else Verdict.INSUFFICIENT
    if verdict is Verdict.UNHEALTHY:
        failed = state.failed_checks + 1
        state = replace(state, failed_checks=failed)
        if plan.auto_rollback and failed >= plan.failure_threshold:
            assert report is not None
            return rollback(state, now, "unhealthy: " + "; ".join(report.reasons))
        return state
    if verdict is Verdict.HEALTHY:
        state = replace(state, failed_checks=0)
    if now - state.step_started_s < plan.step_s:
        return state
    if verdict is Verdict.HEALTHY:
        return _advance(state, now, f"step {state.weight:g} % healthy")
    # INSUFFICIENT: hold the step until there is enough traffic to judge
    if plan.max_hold_s is not None and now - state.step_started_s >= plan.step_s + plan.max_hold_s:
        return rollback(state, now, f"not enough executions to judge the {state.weight:g} % step within max_hold_s")
    return state


def promote(state: RolloutState, now: float, *, full: bool = False) -> RolloutState:
    """Manual promotion: one step, or all the way (``full``)."""
    if state.phase not in (Phase.ROLLING, Phase.MANUAL):
        raise _refuse(state, "promote")
    if full:
        return replace(state, phase=Phase.COMPLETE, step=len(state.plan.steps) - 1, weight=100.0, failed_checks=0,
                       finished_s=now, reason="promoted")
    # from MANUAL the next step is the first one above the weight set by hand
    if state.phase is Phase.MANUAL:
        higher = [i for i, s in enumerate(state.plan.steps) if s > state.weight]
        idx = higher[0] if higher else len(state.plan.steps) - 1
        return _advance(replace(state, step=idx - 1), now, "promoted")
    return _advance(state, now, "promoted")


def pause(state: RolloutState, now: float, weight: float) -> RolloutState:
    """Weights now come from outside (``set_weights``): stop stepping and auto-rollback."""
    if state.done:
        raise _refuse(state, "pause")
    return replace(state, phase=Phase.MANUAL, weight=float(weight), reason="weights set by hand")


def resume(state: RolloutState, now: float) -> RolloutState:
    """Back to automatic stepping from the current weight (the step timer restarts)."""
    if state.phase is not Phase.MANUAL:
        raise _refuse(state, "resume")
    lower = [i for i, s in enumerate(state.plan.steps) if s <= state.weight]
    idx = lower[-1] if lower else 0
    return replace(state, phase=Phase.ROLLING, step=idx, weight=state.plan.steps[idx], step_started_s=now,
                   failed_checks=0, reason="resumed")


def rollback(state: RolloutState, now: float, reason: str = "rolled back by operator") -> RolloutState:
    if state.done:
        raise _refuse(state, "rollback")
    return replace(state, phase=Phase.ROLLED_BACK, weight=0.0, finished_s=now, reason=reason)
