"""The persisted state of one rollout, and how a rollout starts.

The state is a frozen dataclass that round-trips through JSON (``to_dict`` / ``from_dict``), so
the controller stores it after every tick and a restarted controller resumes at the same step.
Times are seconds from the controller's injected clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from dspex.errors import DeploymentError, ValidationError

from . import _serde as s
from .gates import GateRun, NonInferiorityTest
from .spec import RolloutSpec, Strategy

__all__ = ["HISTORY_LIMIT", "Phase", "RolloutState", "Transition", "start_rollout"]

#: transitions kept in the state (the deployment record keeps the full log)
HISTORY_LIMIT = 50


class Phase(StrEnum):
    INITIALIZING = "initializing"
    CANARY_TEST = "canary_test"
    PROGRESSING = "progressing"
    PREVIEW = "preview"
    ROLLING = "rolling"
    PAUSED = "paused"
    PROMOTING = "promoting"
    SCALE_DOWN_DELAY = "scale_down_delay"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"

    @property
    def terminal(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED, Phase.ROLLED_BACK, Phase.ABORTED)

    @property
    def code(self) -> int:
        """A stable number for the ``dspex_rollout_phase`` gauge (declaration order)."""
        return list(Phase).index(self)


@dataclass(frozen=True)
class Transition:
    at: float
    from_phase: Phase
    to_phase: Phase
    reason: str
    step_index: int
    weight: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "from": self.from_phase.value,
            "to": self.to_phase.value,
            "reason": self.reason,
            "step_index": self.step_index,
            "weight": self.weight,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Transition:
        d = s.as_mapping("Transition", data)
        return cls(
            at=s.get_float("Transition", d, "at"),
            from_phase=s.get_enum("Transition", d, "from", Phase),
            to_phase=s.get_enum("Transition", d, "to", Phase),
            reason=s.get_str("Transition", d, "reason"),
            step_index=s.get_int("Transition", d, "step_index"),
            weight=s.get_float("Transition", d, "weight"),
        )


@dataclass(frozen=True)
class RolloutState:
    """Where a rollout of ``canary`` (replacing ``champion``) stands.

    ``weight`` is the canary's share of live traffic in percent; ``step_index`` its canary step
    (-1 before the first). ``window_start_s`` is where the metrics snapshot for the next analysis
    should begin: the last analysis, unless a gate was still waiting for enough calls then (the
    window keeps growing), or the last step change or resume. ``progress_at`` is the last time the rollout made
    progress; the progress deadline counts from it. ``strategy`` is the effective strategy
    (``immediate`` for a redeploy inside the rollback window).
    """

    spec: RolloutSpec
    program: str
    canary: int
    champion: int | None
    strategy: Strategy
    started_at: float
    rollout_id: str = ""
    phase: Phase = Phase.INITIALIZING
    step_index: int = -1
    weight: float = 0.0
    failed_checks: int = 0
    passed_iterations: int = 0
    gate_runs: tuple[GateRun, ...] = ()
    phase_since: float = 0.0
    progress_at: float = 0.0
    window_start_s: float = 0.0
    last_analysis_at: float | None = None
    promoted_at: float | None = None
    finished_at: float | None = None
    paused_from: Phase | None = None
    skip_analysis: bool = False
    fast_track: bool = False
    shadow_active: bool = False
    canary_test_score: float | None = None
    restarts: int = 0
    attempts: int = 1
    superseded: tuple[int, ...] = ()
    message: str = ""
    history: tuple[Transition, ...] = field(default=(), compare=True)

    @property
    def live_phase(self) -> Phase:
        """The phase that decides what is deployed: ``paused_from`` while paused."""
        if self.phase is Phase.PAUSED and self.paused_from is not None:
            return self.paused_from
        return self.phase

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_dict(),
            "program": self.program,
            "canary": self.canary,
            "champion": self.champion,
            "strategy": self.strategy.value,
            "started_at": self.started_at,
            "rollout_id": self.rollout_id,
            "phase": self.phase.value,
            "step_index": self.step_index,
            "weight": self.weight,
            "failed_checks": self.failed_checks,
            "passed_iterations": self.passed_iterations,
            "gate_runs": [r.to_dict() for r in self.gate_runs],
            "phase_since": self.phase_since,
            "progress_at": self.progress_at,
            "window_start_s": self.window_start_s,
            "last_analysis_at": self.last_analysis_at,
            "promoted_at": self.promoted_at,
            "finished_at": self.finished_at,
            "paused_from": None if self.paused_from is None else self.paused_from.value,
            "skip_analysis": self.skip_analysis,
            "fast_track": self.fast_track,
            "shadow_active": self.shadow_active,
            "canary_test_score": self.canary_test_score,
            "restarts": self.restarts,
            "attempts": self.attempts,
            "superseded": list(self.superseded),
            "message": self.message,
            "history": [t.to_dict() for t in self.history],
        }

    @classmethod
    def from_dict(
        cls, data: Any, *, non_inferiority_test: NonInferiorityTest | None = None
    ) -> RolloutState:
        """Load a persisted state; non-inferiority gates get ``non_inferiority_test`` injected."""
        o = "RolloutState"
        d = s.as_mapping(o, data)
        paused_from = d.get("paused_from")
        return cls(
            spec=RolloutSpec.from_dict(
                s.get(o, d, "spec"), non_inferiority_test=non_inferiority_test
            ),
            program=s.get_str(o, d, "program"),
            canary=s.get_int(o, d, "canary"),
            champion=s.opt_int(o, d, "champion"),
            strategy=s.get_enum(o, d, "strategy", Strategy),
            started_at=s.get_float(o, d, "started_at"),
            rollout_id=s.get_str(o, d, "rollout_id"),
            phase=s.get_enum(o, d, "phase", Phase),
            step_index=s.get_int(o, d, "step_index"),
            weight=s.get_float(o, d, "weight"),
            failed_checks=s.get_int(o, d, "failed_checks"),
            passed_iterations=s.get_int(o, d, "passed_iterations"),
            gate_runs=tuple(GateRun.from_dict(r) for r in s.get_list(o, d, "gate_runs")),
            phase_since=s.get_float(o, d, "phase_since"),
            progress_at=s.get_float(o, d, "progress_at"),
            window_start_s=s.get_float(o, d, "window_start_s"),
            last_analysis_at=s.opt_float(o, d, "last_analysis_at"),
            promoted_at=s.opt_float(o, d, "promoted_at"),
            finished_at=s.opt_float(o, d, "finished_at"),
            paused_from=None if paused_from is None else s.get_enum(o, d, "paused_from", Phase),
            skip_analysis=s.get_bool(o, d, "skip_analysis"),
            fast_track=s.get_bool(o, d, "fast_track"),
            shadow_active=s.get_bool(o, d, "shadow_active"),
            canary_test_score=s.opt_float(o, d, "canary_test_score"),
            restarts=s.get_int(o, d, "restarts"),
            attempts=s.get_int(o, d, "attempts"),
            superseded=tuple(int(v) for v in s.get_list(o, d, "superseded")),
            message=s.get_str(o, d, "message"),
            history=tuple(Transition.from_dict(t) for t in s.get_list(o, d, "history")),
        )


def start_rollout(
    spec: RolloutSpec,
    *,
    program: str,
    canary: int,
    champion: int | None,
    now: float,
    recent_versions: Sequence[int] = (),
    rollout_id: str | None = None,
) -> RolloutState:
    """A new rollout in ``initializing``; the first tick deploys the canary.

    ``recent_versions`` lists the program's previously live versions, most recent first. A
    ``canary`` among the first ``spec.rollback_window`` of them is a rollback to a known-good
    version: it redeploys at once, without gates or canary test (Argo's rollbackWindow).
    """
    if not isinstance(program, str) or not program:
        raise ValidationError(
            "A rollout needs the program's name.", field="program", constraint="non-empty"
        )
    for name, value in (("canary", canary), ("champion", champion)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValidationError(
                f"{name} must be an integer program version, got {value!r}.",
                field=name,
                constraint="int",
            )
    if canary == champion:
        raise DeploymentError(
            f"Version {canary} of {program!r} is already the champion; there is nothing to roll out."
        )
    if champion is None and spec.strategy is not Strategy.IMMEDIATE:
        raise DeploymentError(
            f"A {spec.strategy.value} rollout of {program!r} needs a champion to compare with and fall back to; "
            "deploy the first version with strategy 'immediate'."
        )
    if spec.strategy is Strategy.ROLLING and spec.shadow_gates:
        raise DeploymentError(
            "Non-inferiority gates need the champion running beside the new version on shadow traffic; "
            "a rolling update replaces it. Use strategy 'canary' or 'blue_green'."
        )
    fast_track = (
        spec.rollback_window > 0 and canary in list(recent_versions)[: spec.rollback_window]
    )
    return RolloutState(
        spec=spec,
        program=program,
        canary=canary,
        champion=champion,
        strategy=Strategy.IMMEDIATE if fast_track else spec.strategy,
        started_at=now,
        rollout_id=rollout_id or f"{program}:{canary}@{now:.0f}",
        phase_since=now,
        progress_at=now,
        window_start_s=now,
        skip_analysis=fast_track,
        fast_track=fast_track,
        message="redeploy within the rollback window: no gates" if fast_track else "created",
    )
