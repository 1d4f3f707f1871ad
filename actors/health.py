"""The rollout health check: is the staged version as good as the active one? (pure)

It reads what the predictors measured over the check's window (``MetricsView``, merged over
each version's replicas) and compares the staged version (*candidate*) with the active one
(*baseline*) serving the same traffic at the same time, as the seed's check does:

- error rate of the candidate above ``max_error_rate``;
- candidate p95 latency above ``max_latency_ratio`` x the baseline's (and by more than
  ``min_latency_delta_ms``, so a 2 ms vs 1 ms blip does not count);
- candidate throughput per percent of traffic below ``min_throughput_ratio`` x the baseline's
  (a version that cannot keep up with its share).

With fewer than ``min_samples`` candidate executions the verdict is INSUFFICIENT: the rollout
holds its step rather than judging on noise. Latency and throughput are only compared when
the baseline has ``min_samples`` too.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from dspex.errors import ConfigurationError

from .metrics import MetricsView

__all__ = ["HealthPolicy", "HealthReport", "Verdict", "assess"]


class Verdict(enum.StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    INSUFFICIENT = "insufficient"


@dataclass(frozen=True)
class HealthPolicy:
    window_s: float = 30.0
    min_samples: int = 20
    max_error_rate: float = 0.05
    max_latency_ratio: float = 1.5
    min_latency_delta_ms: float = 50.0
    min_throughput_ratio: float = 0.5

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.min_samples < 1:
            raise ConfigurationError(f"HealthPolicy needs window_s > 0 and min_samples >= 1; got {self}.")
        if not 0.0 <= self.max_error_rate <= 1.0:
            raise ConfigurationError(f"max_error_rate is a fraction in [0, 1], got {self.max_error_rate}.")
        if self.max_latency_ratio < 1.0 or self.min_latency_delta_ms < 0 or not 0.0 <= self.min_throughput_ratio <= 1.0:
            raise ConfigurationError(
                "HealthPolicy needs max_latency_ratio >= 1, min_latency_delta_ms >= 0 and "
                f"0 <= min_throughput_ratio <= 1; got {self}."
            )


@dataclass(frozen=True)
class HealthReport:
    verdict: Verdict
    reasons: tuple[str, ...] = ()
    measured: dict[str, Any] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return self.verdict is Verdict.HEALTHY

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict.value, "reasons": list(self.reasons), "measured": dict(self.measured)}


def assess(
    candidate: MetricsView, baseline: MetricsView | None, weight_pct: float, policy: HealthPolicy
) -> HealthReport:
    """The verdict on ``candidate`` taking ``weight_pct`` % of traffic (see the module docstring)."""
    measured: dict[str, Any] = {
        "candidate": candidate.summary(),
        "baseline": baseline.summary() if baseline is not None else None,
        "weight_pct": weight_pct,
    }
    if candidate.count < policy.min_samples:
        return HealthReport(
            Verdict.INSUFFICIENT,
            (f"{candidate.count} execution(s) of the candidate, fewer than min_samples={policy.min_samples}",),
            measured,
        )
    reasons: list[str] = []
    rate = candidate.error_rate or 0.0
    if rate > policy.max_error_rate:
        reasons.append(f"error rate {rate:.1%} above {policy.max_error_rate:.1%} ({candidate.errors}/{candidate.count})")
    comparable = baseline is not None and baseline.count >= policy.min_samples
    if comparable:
        assert baseline is not None
        new_p95, base_p95 = candidate.p95_ms, baseline.p95_ms
        if (
            new_p95 is not None
            and base_p95 is not None
            and new_p95 > base_p95 * policy.max_latency_ratio
            and new_p95 - base_p95 > policy.min_latency_delta_ms
        ):
            reasons.append(
                f"p95 latency {new_p95:.0f} ms above {policy.max_latency_ratio:g} x the baseline's {base_p95:.0f} ms"
            )
        if 0.0 < weight_pct < 100.0 and baseline.throughput_per_s > 0:
            per_pct_new = candidate.throughput_per_s / weight_pct
            per_pct_base = baseline.throughput_per_s / (100.0 - weight_pct)
            if per_pct_new < policy.min_throughput_ratio * per_pct_base:
                reasons.append(
                    f"throughput {candidate.throughput_per_s:.2f}/s at {weight_pct:g} % of traffic is below "
                    f"{policy.min_throughput_ratio:g} x the baseline's per-percent rate "
                    f"({baseline.throughput_per_s:.2f}/s at {100 - weight_pct:g} %)"
                )
    if reasons:
        return HealthReport(Verdict.UNHEALTHY, tuple(reasons), measured)
    return HealthReport(Verdict.HEALTHY, (), measured)
