"""What the gates read: a snapshot of measured metrics per program version.

The live controller fills a ``MetricsSnapshot`` before every tick (from telemetry sketches,
execution records and the shadow-traffic recorder) covering the window the rollout asks for
(``RolloutState.window_start_s`` to now). The state machine and the gates only read it, so a
test can hand them any situation exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dspex.errors import ValidationError

from . import _serde as s

__all__ = ["METRIC_NAMES", "MetricsSnapshot", "ShadowPairs", "VersionMetrics"]

#: the metric selectors a gate may name; ``score:<name>`` reads the program's own metric
METRIC_NAMES = (
    "executions",
    "errors",
    "error_rate",
    "success_rate",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "cost_per_call_usd",
)


@dataclass(frozen=True)
class VersionMetrics:
    """Measured facts about one program version over the snapshot's window.

    ``scores`` holds the mean of the program's own metric(s) by name (e.g. ``{"accuracy": 0.81}``)
    over ``scored`` executions that could be scored (live feedback, shadow or devset replay).
    """

    executions: int = 0
    errors: int = 0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    cost_per_call_usd: float | None = None
    scores: Mapping[str, float] = field(default_factory=dict)
    scored: int = 0

    def __post_init__(self) -> None:
        if self.executions < 0 or self.errors < 0 or self.scored < 0:
            raise ValidationError(
                f"Metric counts cannot be negative (executions={self.executions}, "
                f"errors={self.errors}, scored={self.scored}).",
                field="executions",
                constraint=">= 0",
            )
        if self.errors > self.executions:
            raise ValidationError(
                f"errors ({self.errors}) cannot exceed executions ({self.executions}); "
                "count every failed call as an execution too.",
                field="errors",
                constraint="<= executions",
            )

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.executions if self.executions else None

    def value(self, metric: str) -> float | None:
        """The value of a metric selector, or None when it was not measured."""
        if metric.startswith("score:"):
            name = metric[len("score:") :]
            if self.scored == 0 or name not in self.scores:
                return None
            return float(self.scores[name])
        if metric == "executions":
            return float(self.executions)
        if metric == "errors":
            return float(self.errors)
        if metric == "error_rate":
            return self.error_rate
        if metric == "success_rate":
            rate = self.error_rate
            return None if rate is None else 1.0 - rate
        if metric in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "cost_per_call_usd"):
            value: float | None = getattr(self, metric)
            return value
        raise ValidationError(
            f"Unknown metric {metric!r}; use one of {', '.join(METRIC_NAMES)} or 'score:<metric name>'.",
            field="metric",
            constraint="known metric",
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "executions": self.executions,
            "errors": self.errors,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p95_ms": self.latency_p95_ms,
            "latency_p99_ms": self.latency_p99_ms,
            "cost_per_call_usd": self.cost_per_call_usd,
            "scores": dict(self.scores),
            "scored": self.scored,
        }

    @classmethod
    def from_dict(cls, data: Any) -> VersionMetrics:
        d = s.as_mapping("VersionMetrics", data)
        scores = d.get("scores") or {}
        if not isinstance(scores, Mapping):
            raise s.bad("VersionMetrics", "scores", "must be a dict of metric name to mean score")
        return cls(
            executions=s.get_int("VersionMetrics", d, "executions"),
            errors=s.get_int("VersionMetrics", d, "errors"),
            latency_p50_ms=s.opt_float("VersionMetrics", d, "latency_p50_ms"),
            latency_p95_ms=s.opt_float("VersionMetrics", d, "latency_p95_ms"),
            latency_p99_ms=s.opt_float("VersionMetrics", d, "latency_p99_ms"),
            cost_per_call_usd=s.opt_float("VersionMetrics", d, "cost_per_call_usd"),
            scores={str(k): float(v) for k, v in scores.items()},
            scored=int(d.get("scored", 0)),
        )


@dataclass(frozen=True)
class ShadowPairs:
    """Paired shadow results: the same inputs sent to both versions, scored by the program's metric.

    ``champion_scores[i]`` and ``canary_scores[i]`` belong to the same input. Binary metrics use
    0.0 / 1.0; scored metrics any float.
    """

    champion: int
    canary: int
    champion_scores: tuple[float, ...] = ()
    canary_scores: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if len(self.champion_scores) != len(self.canary_scores):
            raise ValidationError(
                f"Shadow pairs must align: {len(self.champion_scores)} champion scores but "
                f"{len(self.canary_scores)} canary scores. Record a pair only when both versions answered.",
                field="canary_scores",
                constraint="same length as champion_scores",
            )

    def __len__(self) -> int:
        return len(self.canary_scores)

    def to_dict(self) -> dict[str, Any]:
        return {
            "champion": self.champion,
            "canary": self.canary,
            "champion_scores": list(self.champion_scores),
            "canary_scores": list(self.canary_scores),
        }

    @classmethod
    def from_dict(cls, data: Any) -> ShadowPairs:
        d = s.as_mapping("ShadowPairs", data)
        return cls(
            champion=s.get_int("ShadowPairs", d, "champion"),
            canary=s.get_int("ShadowPairs", d, "canary"),
            champion_scores=tuple(
                float(x) for x in s.get_list("ShadowPairs", d, "champion_scores")
            ),
            canary_scores=tuple(float(x) for x in s.get_list("ShadowPairs", d, "canary_scores")),
        )


@dataclass(frozen=True)
class MetricsSnapshot:
    """Metrics per version at ``taken_at``, over ``[window_start_s, taken_at]``.

    ``collection_error`` says the metrics source itself failed (the gates then record an Error
    measurement, as Argo does when a provider query fails). ``rolling_progress`` is the fraction
    (0..1) of Serve replicas already replaced by the new version during a rolling update.
    """

    taken_at: float
    versions: Mapping[int, VersionMetrics] = field(default_factory=dict)
    window_start_s: float | None = None
    shadow: ShadowPairs | None = None
    rolling_progress: float | None = None
    collection_error: str | None = None

    def __post_init__(self) -> None:
        if self.rolling_progress is not None and not 0.0 <= self.rolling_progress <= 1.0:
            raise ValidationError(
                f"rolling_progress is a fraction of replicas, 0..1; got {self.rolling_progress}.",
                field="rolling_progress",
                constraint="0 <= x <= 1",
            )

    def of(self, version: int | None) -> VersionMetrics | None:
        return None if version is None else self.versions.get(version)

    def to_dict(self) -> dict[str, Any]:
        return {
            "taken_at": self.taken_at,
            "window_start_s": self.window_start_s,
            "versions": {str(v): m.to_dict() for v, m in self.versions.items()},
            "shadow": None if self.shadow is None else self.shadow.to_dict(),
            "rolling_progress": self.rolling_progress,
            "collection_error": self.collection_error,
        }

    @classmethod
    def from_dict(cls, data: Any) -> MetricsSnapshot:
        d = s.as_mapping("MetricsSnapshot", data)
        versions = s.int_keyed("MetricsSnapshot", "versions", d.get("versions") or {})
        shadow = d.get("shadow")
        err = d.get("collection_error")
        return cls(
            taken_at=s.get_float("MetricsSnapshot", d, "taken_at"),
            window_start_s=s.opt_float("MetricsSnapshot", d, "window_start_s"),
            versions={v: VersionMetrics.from_dict(m) for v, m in versions.items()},
            shadow=None if shadow is None else ShadowPairs.from_dict(shadow),
            rolling_progress=s.opt_float("MetricsSnapshot", d, "rolling_progress"),
            collection_error=None if err is None else str(err),
        )
