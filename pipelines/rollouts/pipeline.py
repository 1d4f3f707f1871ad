"""The seed's DeploymentPipeline (Stage 4 §2.1): what starts deployments of a program, and how.

A pipeline is ``draft -> active <-> paused``, ``active | paused -> failed -> draft``. It holds the
trigger conditions, validation rules, deployment config (a ``RolloutSpec``), rollback config and
monitoring thresholds (seed defaults: success rate 0.95, latency 5000 ms, error rate 0.05).
``check_trigger(pipeline, facts)`` decides, purely, whether an active pipeline starts a deployment
now; ``validate(rules, facts)`` judges the seed's validation rules on measured facts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from dspex.errors import InvalidTransition, ValidationError

from . import _serde as s
from .gates import (
    Condition,
    Gate,
    NonInferiorityGate,
    NonInferiorityTest,
    error_rate,
    p95_latency,
    success_rate,
)
from .spec import CanaryTest, RolloutSpec

__all__ = [
    "CandidateVersion",
    "DeploymentPipeline",
    "MonitoringThresholds",
    "PipelineStatus",
    "RollbackConfig",
    "TriggerConditions",
    "TriggerDecision",
    "TriggerFacts",
    "ValidationFacts",
    "ValidationReport",
    "ValidationRule",
    "check_trigger",
    "validate",
]


class PipelineStatus(StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    PAUSED = "paused"
    FAILED = "failed"


_PIPELINE_TRANSITIONS: dict[str, tuple[tuple[PipelineStatus, ...], PipelineStatus]] = {
    "activate": ((PipelineStatus.DRAFT,), PipelineStatus.ACTIVE),
    "pause": ((PipelineStatus.ACTIVE,), PipelineStatus.PAUSED),
    "resume": ((PipelineStatus.PAUSED,), PipelineStatus.ACTIVE),
    "fail": ((PipelineStatus.ACTIVE, PipelineStatus.PAUSED), PipelineStatus.FAILED),
    "reset": ((PipelineStatus.FAILED,), PipelineStatus.DRAFT),
}


@dataclass(frozen=True)
class TriggerConditions:
    """When an active pipeline starts a deployment.

    * ``on_new_version``: a candidate version whose measured ``metric`` beats the champion's by
      more than ``min_improvement``;
    * ``schedule_interval_s``: every so often, the newest candidate;
    * ``on_degradation``: a firing telemetry alert (any, or one of ``alert_names``) deploys the
      best candidate.
    ``cooldown_s`` is the least time between two triggers.
    """

    on_new_version: bool = True
    metric: str = "score"
    min_improvement: float = 0.0
    schedule_interval_s: float | None = None
    on_degradation: bool = False
    alert_names: tuple[str, ...] = ()
    cooldown_s: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "alert_names", tuple(self.alert_names))
        if self.schedule_interval_s is not None and not self.schedule_interval_s > 0:
            raise ValidationError(
                f"schedule_interval_s must be > 0 or None, got {self.schedule_interval_s!r}.",
                field="schedule_interval_s",
                constraint="> 0",
            )
        if self.cooldown_s < 0 or self.min_improvement < 0:
            raise ValidationError(
                "cooldown_s and min_improvement cannot be negative.",
                field="cooldown_s",
                constraint=">= 0",
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "on_new_version": self.on_new_version,
            "metric": self.metric,
            "min_improvement": self.min_improvement,
            "schedule_interval_s": self.schedule_interval_s,
            "on_degradation": self.on_degradation,
            "alert_names": list(self.alert_names),
            "cooldown_s": self.cooldown_s,
        }

    @classmethod
    def from_dict(cls, data: Any) -> TriggerConditions:
        o = "TriggerConditions"
        d = s.as_mapping(o, data)
        return cls(
            on_new_version=s.get_bool(o, d, "on_new_version"),
            metric=s.get_str(o, d, "metric"),
            min_improvement=s.get_float(o, d, "min_improvement"),
            schedule_interval_s=s.opt_float(o, d, "schedule_interval_s"),
            on_degradation=s.get_bool(o, d, "on_degradation"),
            alert_names=tuple(str(a) for a in s.get_list(o, d, "alert_names")),
            cooldown_s=s.get_float(o, d, "cooldown_s"),
        )


_RULE_KINDS = ("performance_threshold", "minimum_executions", "canary_test")


@dataclass(frozen=True)
class ValidationRule:
    """One of the seed's validation rules; build with the class methods."""

    kind: str
    metric: str | None = None
    condition: Condition | None = None
    count: int | None = None
    canary_test: CanaryTest | None = None

    def __post_init__(self) -> None:
        ok = {
            "performance_threshold": self.metric is not None and self.condition is not None,
            "minimum_executions": self.count is not None and self.count >= 0,
            "canary_test": self.canary_test is not None,
        }
        if self.kind not in ok:
            raise ValidationError(
                f"Unknown validation rule {self.kind!r}; use one of {', '.join(_RULE_KINDS)}.",
                field="kind",
                constraint="rule kind",
            )
        if not ok[self.kind]:
            raise ValidationError(
                f"Validation rule {self.kind!r} is missing its parameters; build it with ValidationRule.{self.kind}(...).",
                field=self.kind,
                constraint="parameters",
            )

    @classmethod
    def performance_threshold(cls, metric: str, operator: str, threshold: float) -> ValidationRule:
        return cls(
            kind="performance_threshold", metric=metric, condition=Condition(operator, threshold)
        )

    @classmethod
    def minimum_executions(cls, count: int) -> ValidationRule:
        return cls(kind="minimum_executions", count=count)

    @classmethod
    def canary(
        cls, devset: str, min_score: float, max_examples: int | None = None
    ) -> ValidationRule:
        return cls(
            kind="canary_test",
            canary_test=CanaryTest(devset=devset, min_score=min_score, max_examples=max_examples),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "metric": self.metric,
            "condition": None if self.condition is None else self.condition.to_dict(),
            "count": self.count,
            "canary_test": None if self.canary_test is None else self.canary_test.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Any) -> ValidationRule:
        o = "ValidationRule"
        d = s.as_mapping(o, data)
        cond, ct, metric = d.get("condition"), d.get("canary_test"), d.get("metric")
        return cls(
            kind=s.get_str(o, d, "kind"),
            metric=None if metric is None else str(metric),
            condition=None if cond is None else Condition.from_dict(cond),
            count=s.opt_int(o, d, "count"),
            canary_test=None if ct is None else CanaryTest.from_dict(ct),
        )


@dataclass(frozen=True)
class ValidationFacts:
    """What was measured about the version before deploying it (registry scores, executions)."""

    version: int
    metrics: Mapping[str, float] = field(default_factory=dict)
    executions: int = 0
    canary_test_score: float | None = None


@dataclass(frozen=True)
class ValidationReport:
    passed: bool
    errors: tuple[str, ...]
    details: tuple[Mapping[str, Any], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "errors": list(self.errors),
            "details": [dict(x) for x in self.details],
        }


def validate(rules: Sequence[ValidationRule], facts: ValidationFacts) -> ValidationReport:
    """Judge every rule on ``facts``. A canary_test rule without a score yet is deferred to the
    rollout's canary_test phase (``RolloutSpec.canary_test``), which runs it before live traffic."""
    details: list[dict[str, Any]] = []
    for rule in rules:
        if rule.kind == "performance_threshold":
            assert rule.metric is not None and rule.condition is not None
            value = facts.metrics.get(rule.metric)
            passed = value is not None and rule.condition.holds(float(value))
            error = (
                None
                if passed
                else (
                    f"{rule.metric} was not measured for version {facts.version}"
                    if value is None
                    else f"{rule.metric} ({value:g}) does not meet {rule.condition}"
                )
            )
            details.append(
                {
                    "rule": rule.kind,
                    "passed": passed,
                    "error": error,
                    "metric": rule.metric,
                    "value": value,
                    "threshold": str(rule.condition),
                }
            )
        elif rule.kind == "minimum_executions":
            assert rule.count is not None
            passed = facts.executions >= rule.count
            error = None if passed else f"only {facts.executions} executions, need {rule.count}"
            details.append(
                {
                    "rule": rule.kind,
                    "passed": passed,
                    "error": error,
                    "required": rule.count,
                    "actual": facts.executions,
                }
            )
        else:
            assert rule.canary_test is not None
            score, ct = facts.canary_test_score, rule.canary_test
            if score is None:
                details.append(
                    {
                        "rule": rule.kind,
                        "passed": True,
                        "error": None,
                        "deferred": True,
                        "devset": ct.devset,
                    }
                )
                continue
            passed = score >= ct.min_score
            error = (
                None
                if passed
                else f"canary test score {score:g} < {ct.min_score:g} on {ct.devset!r}"
            )
            details.append(
                {
                    "rule": rule.kind,
                    "passed": passed,
                    "error": error,
                    "score": score,
                    "min_score": ct.min_score,
                }
            )
    errors = tuple(str(d["error"]) for d in details if not d["passed"])
    return ValidationReport(passed=not errors, errors=errors, details=tuple(details))


@dataclass(frozen=True)
class RollbackConfig:
    """``window``: the last N live versions redeploy without gates; ``scale_down_delay_s``: how
    long a blue-green switch keeps the old version for an instant abort."""

    window: int = 3
    scale_down_delay_s: float = 30.0

    def to_dict(self) -> dict[str, Any]:
        return {"window": self.window, "scale_down_delay_s": self.scale_down_delay_s}

    @classmethod
    def from_dict(cls, data: Any) -> RollbackConfig:
        d = s.as_mapping("RollbackConfig", data)
        return cls(
            window=s.get_int("RollbackConfig", d, "window"),
            scale_down_delay_s=s.get_float("RollbackConfig", d, "scale_down_delay_s"),
        )


@dataclass(frozen=True)
class MonitoringThresholds:
    """The seed's monitoring defaults, enforced as gates on every rollout of the pipeline."""

    success_rate: float = 0.95
    latency_ms: float = 5000.0
    error_rate: float = 0.05

    def gates(self) -> tuple[Gate, ...]:
        return (
            success_rate(self.success_rate),
            p95_latency(self.latency_ms),
            error_rate(self.error_rate),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "success_rate": self.success_rate,
            "latency_ms": self.latency_ms,
            "error_rate": self.error_rate,
        }

    @classmethod
    def from_dict(cls, data: Any) -> MonitoringThresholds:
        o = "MonitoringThresholds"
        d = s.as_mapping(o, data)
        return cls(
            success_rate=s.get_float(o, d, "success_rate"),
            latency_ms=s.get_float(o, d, "latency_ms"),
            error_rate=s.get_float(o, d, "error_rate"),
        )


@dataclass(frozen=True)
class DeploymentPipeline:
    name: str
    program: str
    status: PipelineStatus = PipelineStatus.DRAFT
    description: str = ""
    triggers: TriggerConditions = field(default_factory=TriggerConditions)
    validation_rules: tuple[ValidationRule, ...] = ()
    deployment_config: RolloutSpec = field(default_factory=RolloutSpec)
    rollback: RollbackConfig = field(default_factory=RollbackConfig)
    monitoring: MonitoringThresholds = field(default_factory=MonitoringThresholds)
    created_at: float = 0.0
    updated_at: float = 0.0
    last_triggered_at: float | None = None
    failure_reason: str = ""

    def __post_init__(self) -> None:
        if not self.name or not self.program:
            raise ValidationError(
                "A pipeline needs a name and a program.", field="name", constraint="non-empty"
            )
        object.__setattr__(self, "validation_rules", tuple(self.validation_rules))

    def allowed_events(self) -> tuple[str, ...]:
        return tuple(
            sorted(e for e, (sources, _) in _PIPELINE_TRANSITIONS.items() if self.status in sources)
        )

    def apply(self, event: str, now: float, reason: str = "") -> DeploymentPipeline:
        """``activate`` / ``pause`` / ``resume`` / ``fail`` / ``reset``; raises InvalidTransition."""
        rule = _PIPELINE_TRANSITIONS.get(event)
        if rule is None or self.status not in rule[0]:
            raise InvalidTransition.of("pipeline", self.status.value, event, self.allowed_events())
        failure = (
            reason
            if rule[1] is PipelineStatus.FAILED
            else ("" if rule[1] is PipelineStatus.DRAFT else self.failure_reason)
        )
        return replace(self, status=rule[1], updated_at=now, failure_reason=failure)

    def triggered(self, now: float) -> DeploymentPipeline:
        return replace(self, last_triggered_at=now, updated_at=now)

    def rollout_spec(
        self, *, non_inferiority_test: NonInferiorityTest | None = None
    ) -> RolloutSpec:
        """The spec a deployment of this pipeline rolls out with: the deployment config plus the
        monitoring gates (unless a gate of the same name is configured), the canary_test rule and
        the rollback config."""
        spec = self.deployment_config
        names = {g.name for g in spec.gates}
        gates = [*spec.gates, *(g for g in self.monitoring.gates() if g.name not in names)]
        if non_inferiority_test is not None:
            gates = [
                g.with_test(non_inferiority_test) if isinstance(g, NonInferiorityGate) else g
                for g in gates
            ]
        canary = next(
            (r.canary_test for r in self.validation_rules if r.canary_test is not None),
            spec.canary_test,
        )
        return replace(
            spec,
            gates=tuple(gates),
            canary_test=canary,
            rollback_window=self.rollback.window,
            scale_down_delay_s=self.rollback.scale_down_delay_s,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "program": self.program,
            "status": self.status.value,
            "description": self.description,
            "triggers": self.triggers.to_dict(),
            "validation_rules": [r.to_dict() for r in self.validation_rules],
            "deployment_config": self.deployment_config.to_dict(),
            "rollback": self.rollback.to_dict(),
            "monitoring": self.monitoring.to_dict(),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "last_triggered_at": self.last_triggered_at,
            "failure_reason": self.failure_reason,
        }

    @classmethod
    def from_dict(
        cls, data: Any, *, non_inferiority_test: NonInferiorityTest | None = None
    ) -> DeploymentPipeline:
        o = "DeploymentPipeline"
        d = s.as_mapping(o, data)
        return cls(
            name=s.get_str(o, d, "name"),
            program=s.get_str(o, d, "program"),
            status=s.get_enum(o, d, "status", PipelineStatus),
            description=s.get_str(o, d, "description"),
            triggers=TriggerConditions.from_dict(s.get(o, d, "triggers")),
            validation_rules=tuple(
                ValidationRule.from_dict(r) for r in s.get_list(o, d, "validation_rules")
            ),
            deployment_config=RolloutSpec.from_dict(
                s.get(o, d, "deployment_config"), non_inferiority_test=non_inferiority_test
            ),
            rollback=RollbackConfig.from_dict(s.get(o, d, "rollback")),
            monitoring=MonitoringThresholds.from_dict(s.get(o, d, "monitoring")),
            created_at=s.get_float(o, d, "created_at"),
            updated_at=s.get_float(o, d, "updated_at"),
            last_triggered_at=s.opt_float(o, d, "last_triggered_at"),
            failure_reason=s.get_str(o, d, "failure_reason"),
        )


# -- triggers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CandidateVersion:
    """A registered version that could be deployed, with its measured scores (from the registry)."""

    version: int
    scores: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TriggerFacts:
    """What the pipeline's watcher knows at ``now``."""

    now: float
    champion: int | None
    champion_scores: Mapping[str, float] = field(default_factory=dict)
    candidates: tuple[CandidateVersion, ...] = ()
    firing_alerts: tuple[str, ...] = ()
    deployment_in_progress: bool = False
    rejected_versions: tuple[int, ...] = ()


@dataclass(frozen=True)
class TriggerDecision:
    fire: bool
    reason: str
    version: int | None = None
    trigger: str | None = None


def check_trigger(pipeline: DeploymentPipeline, facts: TriggerFacts) -> TriggerDecision:
    """Whether ``pipeline`` starts a deployment now, of which version, and why.

    Order: degradation alerts first (the champion is hurting users), then a better new version,
    then the schedule. Rejected (rolled back) versions and the champion are never candidates.
    """
    t = pipeline.triggers
    if pipeline.status is not PipelineStatus.ACTIVE:
        return TriggerDecision(False, f"pipeline is {pipeline.status.value}, not active")
    if facts.deployment_in_progress:
        return TriggerDecision(False, "a deployment is already in progress")
    last = pipeline.last_triggered_at
    if last is not None and facts.now - last < t.cooldown_s:
        return TriggerDecision(
            False,
            f"cooling down: last trigger {facts.now - last:.0f} s ago (cooldown {t.cooldown_s:g} s)",
        )
    eligible = [
        c
        for c in facts.candidates
        if c.version != facts.champion and c.version not in facts.rejected_versions
    ]
    scored = [c for c in eligible if t.metric in c.scores]
    best = max(scored, key=lambda c: (c.scores[t.metric], c.version), default=None)
    if t.on_degradation:
        alerts = [a for a in facts.firing_alerts if not t.alert_names or a in t.alert_names]
        if alerts:
            if best is None:
                return TriggerDecision(
                    False, f"alert {alerts[0]} is firing but no scored candidate version exists"
                )
            return TriggerDecision(
                True,
                f"alert {alerts[0]} is firing; deploying best candidate {best.version}",
                best.version,
                "degradation",
            )
    if t.on_new_version and best is not None:
        champ = facts.champion_scores.get(t.metric)
        score = best.scores[t.metric]
        if champ is None:
            return TriggerDecision(
                True,
                f"version {best.version} scores {t.metric}={score:g}; the champion has no score",
                best.version,
                "new_version",
            )
        if score > champ + t.min_improvement:
            return TriggerDecision(
                True,
                f"version {best.version} beats the champion on {t.metric}: {score:g} > {champ:g} + margin {t.min_improvement:g}",
                best.version,
                "new_version",
            )
    if (
        t.schedule_interval_s is not None
        and eligible
        and (last is None or facts.now - last >= t.schedule_interval_s)
    ):
        newest = max(eligible, key=lambda c: c.version)
        return TriggerDecision(
            True,
            f"scheduled every {t.schedule_interval_s:g} s; deploying newest version {newest.version}",
            newest.version,
            "schedule",
        )
    return TriggerDecision(False, "no trigger condition holds")
