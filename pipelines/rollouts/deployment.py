"""The seed's Deployment record (Stage 4 §2.2): one attempt to put a version live.

``pending -> validating -> deploying (step, weight) <-> paused -> deployed | failed | rolled_back``,
with the program snapshot, validation results, logs, health checks, measured metrics and start /
completion / rollback times. ``sync(rollout_state)`` keeps the record in step with the rollout
that carries it out, so the record is what an operator reads and the store persists.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from dspex.errors import InvalidTransition

from . import _serde as s
from .pipeline import ValidationReport
from .snapshot import MetricsSnapshot
from .state import Phase, RolloutState, Transition

__all__ = ["HEALTH_CHECK_LIMIT", "LOG_LIMIT", "Deployment", "DeploymentStatus", "status_for_phase"]

LOG_LIMIT = 500
HEALTH_CHECK_LIMIT = 200


class DeploymentStatus(StrEnum):
    PENDING = "pending"
    VALIDATING = "validating"
    DEPLOYING = "deploying"
    PAUSED = "paused"
    DEPLOYED = "deployed"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


_S = DeploymentStatus
_TRANSITIONS: dict[str, tuple[tuple[DeploymentStatus, ...], DeploymentStatus]] = {
    "start_validation": ((_S.PENDING,), _S.VALIDATING),
    "start_deployment": ((_S.VALIDATING,), _S.DEPLOYING),
    "pause": ((_S.DEPLOYING,), _S.PAUSED),
    "resume": ((_S.PAUSED,), _S.DEPLOYING),
    "complete": ((_S.DEPLOYING,), _S.DEPLOYED),
    "fail": ((_S.PENDING, _S.VALIDATING, _S.DEPLOYING, _S.PAUSED), _S.FAILED),
    "rollback": ((_S.DEPLOYING, _S.PAUSED, _S.DEPLOYED, _S.FAILED), _S.ROLLED_BACK),
    # a newer version superseded the one being deployed: validate it from the start
    "restart": ((_S.VALIDATING, _S.DEPLOYING, _S.PAUSED), _S.VALIDATING),
    # an operator retried the rollout
    "retry": ((_S.FAILED, _S.ROLLED_BACK), _S.VALIDATING),
}
_FINAL = (_S.DEPLOYED, _S.FAILED, _S.ROLLED_BACK)

_PHASE_STATUS = {
    Phase.INITIALIZING: _S.VALIDATING,
    Phase.CANARY_TEST: _S.VALIDATING,
    Phase.PROGRESSING: _S.DEPLOYING,
    Phase.PREVIEW: _S.DEPLOYING,
    Phase.ROLLING: _S.DEPLOYING,
    Phase.PROMOTING: _S.DEPLOYING,
    Phase.SCALE_DOWN_DELAY: _S.DEPLOYING,
    Phase.PAUSED: _S.PAUSED,
    Phase.SUCCEEDED: _S.DEPLOYED,
    Phase.FAILED: _S.FAILED,
    Phase.ABORTED: _S.FAILED,
    Phase.ROLLED_BACK: _S.ROLLED_BACK,
}


def status_for_phase(phase: Phase) -> DeploymentStatus:
    return _PHASE_STATUS[phase]


def _path(start: DeploymentStatus, goal: DeploymentStatus) -> list[str] | None:
    """The shortest chain of events from ``start`` to ``goal`` (breadth-first; the graph is tiny)."""
    queue: deque[tuple[DeploymentStatus, list[str]]] = deque([(start, [])])
    seen = {start}
    while queue:
        here, events = queue.popleft()
        if here is goal:
            return events
        for event, (sources, target) in _TRANSITIONS.items():
            if here in sources and target not in seen:
                seen.add(target)
                queue.append((target, [*events, event]))
    return None


@dataclass(frozen=True)
class Deployment:
    id: str
    program: str
    version: int
    pipeline: str | None = None
    trigger_reason: str = "manual"
    config: Mapping[str, Any] = field(default_factory=dict)
    status: DeploymentStatus = DeploymentStatus.PENDING
    step_index: int = -1
    weight: float = 0.0
    program_snapshot: Mapping[str, Any] = field(default_factory=dict)
    validation_results: Mapping[str, Any] | None = None
    logs: tuple[str, ...] = ()
    health_checks: tuple[Mapping[str, Any], ...] = ()
    metrics: Mapping[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    started_at: float | None = None
    completed_at: float | None = None
    rollback_at: float | None = None
    last_logged: Mapping[str, Any] | None = None

    def allowed_events(self) -> tuple[str, ...]:
        return tuple(
            sorted(e for e, (sources, _) in _TRANSITIONS.items() if self.status in sources)
        )

    def apply(self, event: str, now: float, note: str = "") -> Deployment:
        rule = _TRANSITIONS.get(event)
        if rule is None or self.status not in rule[0]:
            raise InvalidTransition.of(
                "deployment", self.status.value, event, self.allowed_events()
            )
        target = rule[1]
        dep = replace(
            self,
            status=target,
            started_at=self.started_at
            if self.started_at is not None or target is _S.PENDING
            else now,
            completed_at=now if target in _FINAL else None,
            rollback_at=now if target is _S.ROLLED_BACK else self.rollback_at,
        )
        return dep.log(
            f"{self.status.value} -> {target.value}" + (f": {note}" if note else ""), now
        )

    def log(self, message: str, now: float) -> Deployment:
        return replace(self, logs=(*self.logs, f"[{now:.3f}] {message}")[-LOG_LIMIT:])

    def record_validation(self, report: ValidationReport, now: float) -> Deployment:
        dep = replace(self, validation_results=report.to_dict())
        verdict = "passed" if report.passed else "failed: " + "; ".join(report.errors)
        return dep.log(f"validation {verdict}", now)

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.completed_at is None:
            return None
        return self.completed_at - self.started_at

    def sync(
        self, rollout: RolloutState, now: float, snapshot: MetricsSnapshot | None = None
    ) -> Deployment:
        """Follow ``rollout``: status, step and weight, its new transitions as log lines, its new
        gate measurements as health checks, and the snapshot's metrics for both versions."""
        dep = self
        new = _new_transitions(rollout.history, self.last_logged)
        for t in new:
            dep = dep.log(f"rollout {t.from_phase.value} -> {t.to_phase.value}: {t.reason}", t.at)
        if new:
            dep = replace(dep, last_logged=new[-1].to_dict())
        if rollout.canary != dep.version and dep.status in _TRANSITIONS["restart"][0]:
            dep = replace(
                dep.apply("restart", now, f"version {rollout.canary} replaces {dep.version}"),
                version=rollout.canary,
            )
        target = status_for_phase(rollout.phase)
        if target is not dep.status:
            events = _path(dep.status, target)
            if events is None:
                raise InvalidTransition.of(
                    "deployment",
                    dep.status.value,
                    f"follow the rollout to {target.value}",
                    dep.allowed_events(),
                )
            for event in events:
                dep = dep.apply(event, now, rollout.message)
        last_check = dep.health_checks[-1]["at"] if dep.health_checks else float("-inf")
        fresh = sorted(
            (r.last for r in rollout.gate_runs if r.last is not None and r.last.at > last_check),
            key=lambda m: (m.at, m.gate),
        )
        checks = (*dep.health_checks, *(m.to_dict() for m in fresh))[-HEALTH_CHECK_LIMIT:]
        metrics = dict(dep.metrics)
        if snapshot is not None:
            for role, version in (("canary", rollout.canary), ("champion", rollout.champion)):
                vm = snapshot.of(version)
                if vm is not None:
                    metrics[role] = {"version": version, "at": snapshot.taken_at, **vm.to_dict()}
        return replace(
            dep,
            version=rollout.canary,
            step_index=rollout.step_index,
            weight=rollout.weight,
            health_checks=checks,
            metrics=metrics,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "program": self.program,
            "version": self.version,
            "pipeline": self.pipeline,
            "trigger_reason": self.trigger_reason,
            "config": dict(self.config),
            "status": self.status.value,
            "step_index": self.step_index,
            "weight": self.weight,
            "program_snapshot": dict(self.program_snapshot),
            "validation_results": None
            if self.validation_results is None
            else dict(self.validation_results),
            "logs": list(self.logs),
            "health_checks": [dict(h) for h in self.health_checks],
            "metrics": dict(self.metrics),
            "created_at": self.created_at,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "rollback_at": self.rollback_at,
            "last_logged": None if self.last_logged is None else dict(self.last_logged),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Deployment:
        o = "Deployment"
        d = s.as_mapping(o, data)
        pipeline, validation, last_logged = (
            d.get("pipeline"),
            d.get("validation_results"),
            d.get("last_logged"),
        )
        return cls(
            id=s.get_str(o, d, "id"),
            program=s.get_str(o, d, "program"),
            version=s.get_int(o, d, "version"),
            pipeline=None if pipeline is None else str(pipeline),
            trigger_reason=s.get_str(o, d, "trigger_reason"),
            config=dict(s.as_mapping(o, d.get("config", {}))),
            status=s.get_enum(o, d, "status", DeploymentStatus),
            step_index=s.get_int(o, d, "step_index"),
            weight=s.get_float(o, d, "weight"),
            program_snapshot=dict(s.as_mapping(o, d.get("program_snapshot", {}))),
            validation_results=None if validation is None else dict(s.as_mapping(o, validation)),
            logs=tuple(str(x) for x in s.get_list(o, d, "logs")),
            health_checks=tuple(
                dict(s.as_mapping(o, h)) for h in s.get_list(o, d, "health_checks")
            ),
            metrics=dict(s.as_mapping(o, d.get("metrics", {}))),
            created_at=s.get_float(o, d, "created_at"),
            started_at=s.opt_float(o, d, "started_at"),
            completed_at=s.opt_float(o, d, "completed_at"),
            rollback_at=s.opt_float(o, d, "rollback_at"),
            last_logged=None if last_logged is None else dict(s.as_mapping(o, last_logged)),
        )


def _new_transitions(
    history: tuple[Transition, ...], last: Mapping[str, Any] | None
) -> list[Transition]:
    if last is None:
        return list(history)
    for i in range(len(history) - 1, -1, -1):
        if history[i].to_dict() == dict(last):
            return list(history[i + 1 :])
    # the last logged transition rotated out of the bounded history: log what is newer
    at = float(last.get("at", float("-inf")))
    return [t for t in history if t.at > at]
