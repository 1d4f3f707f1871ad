"""Rollout gates with Argo Rollouts' AnalysisTemplate semantics, on program metrics.

A gate measures one metric of the new version from a ``MetricsSnapshot`` once per analysis tick:

* a measurement is Successful, Failed, Inconclusive or Error (Argo's phases). With both a success
  and a failure condition, failure wins, then success, else Inconclusive; with only a success
  condition a miss is Failed; with only a failure condition a miss is Successful.
* the run of a gate counts measurements; the gate is Failed once ``failed > failure_limit``,
  Inconclusive once ``inconclusive > inconclusive_limit`` and Error once ``consecutive_errors >
  consecutive_error_limit`` (Argo's defaults: 0, 0, 4).
* missing data (too few executions, a metric not reported, too few shadow pairs) follows the
  gate's explicit ``missing_data`` policy: ``wait`` (the default: the rollout holds its step until
  data arrives or the progress deadline passes), ``inconclusive`` (counts as Inconclusive, which
  pauses the rollout) or ``fail`` (counts as Failed, Flagger's behaviour and its most reported
  problem, fluxcd/flagger#1689). A waiting gate records nothing: its measurement is Pending.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from statistics import NormalDist
from typing import Any, ClassVar

from dspex.errors import ValidationError

from . import _serde as s
from .snapshot import METRIC_NAMES, MetricsSnapshot, ShadowPairs

__all__ = [
    "Condition",
    "Gate",
    "GateRun",
    "GateStatus",
    "Measurement",
    "MeasurementPhase",
    "MissingData",
    "NonInferiorityGate",
    "NonInferiorityTest",
    "assess",
    "cost_per_call",
    "error_rate",
    "gate_from_dict",
    "minimum_executions",
    "non_inferiority",
    "p95_latency",
    "performance_threshold",
    "success_rate",
]

#: ``test(champion_scores, canary_scores, margin, kind)``; returns a bool, or an object or mapping
#: with a boolean ``non_inferior`` (and optionally ``p_value``). ``kind`` is "binary" or "scored".
NonInferiorityTest = Callable[[Sequence[float], Sequence[float], float, str], Any]


class MeasurementPhase(StrEnum):
    SUCCESSFUL = "successful"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"
    ERROR = "error"
    #: not a measurement: data is missing and the gate's policy is to wait. Never recorded.
    PENDING = "pending"


class MissingData(StrEnum):
    WAIT = "wait"
    INCONCLUSIVE = "inconclusive"
    FAIL = "fail"


class GateStatus(StrEnum):
    RUNNING = "running"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"
    ERROR = "error"


_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": lambda v, t: v < t,
    "<=": lambda v, t: v <= t,
    ">": lambda v, t: v > t,
    ">=": lambda v, t: v >= t,
}


@dataclass(frozen=True)
class Condition:
    """``value <op> threshold``, e.g. ``Condition("<=", 0.05)``."""

    op: str
    threshold: float

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValidationError(
                f"Unknown comparison {self.op!r}; use one of <, <=, >, >=.",
                field="op",
                constraint="comparison",
            )
        if not s.finite(float(self.threshold)):
            raise ValidationError(
                f"A condition threshold must be a finite number, got {self.threshold!r}.",
                field="threshold",
                constraint="finite",
            )

    def holds(self, value: float) -> bool:
        return _OPS[self.op](value, self.threshold)

    def __str__(self) -> str:
        return f"{self.op} {self.threshold:g}"

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "threshold": self.threshold}

    @classmethod
    def from_dict(cls, data: Any) -> Condition:
        d = s.as_mapping("Condition", data)
        return cls(
            op=s.get_str("Condition", d, "op"), threshold=s.get_float("Condition", d, "threshold")
        )


@dataclass(frozen=True)
class Measurement:
    gate: str
    phase: MeasurementPhase
    value: float | None
    message: str
    at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "phase": self.phase.value,
            "value": self.value,
            "message": self.message,
            "at": self.at,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Measurement:
        d = s.as_mapping("Measurement", data)
        return cls(
            gate=s.get_str("Measurement", d, "gate"),
            phase=s.get_enum("Measurement", d, "phase", MeasurementPhase),
            value=s.opt_float("Measurement", d, "value"),
            message=s.get_str("Measurement", d, "message"),
            at=s.get_float("Measurement", d, "at"),
        )


def _check_limit(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(
            f"{name} must be an integer >= 0, got {value!r}.", field=name, constraint="int >= 0"
        )


@dataclass(frozen=True)
class Gate:
    """A metric gate on the new version (optionally relative to the champion).

    ``metric`` is one of ``snapshot.METRIC_NAMES`` or ``"score:<name>"`` (the program's own metric).
    With ``relative_to_champion`` the measured value is canary / champion (e.g. latency ratio).
    ``min_executions`` is the least number of canary executions in the window before measuring.
    """

    kind: ClassVar[str] = "metric"

    name: str
    metric: str = "error_rate"
    success: Condition | None = None
    failure: Condition | None = None
    failure_limit: int = 0
    inconclusive_limit: int = 0
    consecutive_error_limit: int = 4
    min_executions: int = 20
    missing_data: MissingData = MissingData.WAIT
    relative_to_champion: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValidationError(
                "A gate needs a non-empty name.", field="name", constraint="non-empty"
            )
        if self.metric not in METRIC_NAMES and not (
            self.metric.startswith("score:") and len(self.metric) > len("score:")
        ):
            raise ValidationError(
                f"Gate {self.name!r}: unknown metric {self.metric!r}; use one of "
                f"{', '.join(METRIC_NAMES)} or 'score:<metric name>'.",
                field="metric",
                constraint="known metric",
            )
        if self.success is None and self.failure is None and self.kind == "metric":
            raise ValidationError(
                f"Gate {self.name!r} has neither a success nor a failure condition; give at least one.",
                field="success",
                constraint="success or failure condition",
            )
        for limit in (
            "failure_limit",
            "inconclusive_limit",
            "consecutive_error_limit",
            "min_executions",
        ):
            _check_limit(limit, getattr(self, limit))
        object.__setattr__(self, "missing_data", MissingData(self.missing_data))

    # -- measuring -------------------------------------------------------------------------

    def measure(
        self, snapshot: MetricsSnapshot, *, champion: int | None, canary: int, now: float
    ) -> Measurement:
        if snapshot.collection_error is not None:
            return self._m(
                MeasurementPhase.ERROR,
                None,
                f"metrics unavailable: {snapshot.collection_error}",
                now,
            )
        vm = snapshot.of(canary)
        executions = 0 if vm is None else vm.executions
        if vm is None or executions < self.min_executions:
            return self._missing(
                f"only {executions} executions of version {canary}, need {self.min_executions}", now
            )
        value = vm.value(self.metric)
        if value is None:
            return self._missing(f"{self.metric} of version {canary} was not reported", now)
        if self.relative_to_champion:
            base_vm = snapshot.of(champion)
            base = None if base_vm is None else base_vm.value(self.metric)
            if base is None or base == 0:
                return self._missing(
                    f"{self.metric} of champion {champion} was not reported (or is 0)", now
                )
            value = value / base
        if not s.finite(value):
            return self._m(
                MeasurementPhase.ERROR, None, f"{self.metric} is not a finite number ({value})", now
            )
        return self._judge(value, now)

    def _judge(self, value: float, now: float) -> Measurement:
        label = f"{self.metric}{' / champion' if self.relative_to_champion else ''} = {value:.6g}"
        if self.failure is not None and self.failure.holds(value):
            return self._m(
                MeasurementPhase.FAILED,
                value,
                f"{label} meets failure condition {self.failure}",
                now,
            )
        if self.success is not None:
            if self.success.holds(value):
                return self._m(
                    MeasurementPhase.SUCCESSFUL, value, f"{label} meets {self.success}", now
                )
            if self.failure is None:
                return self._m(
                    MeasurementPhase.FAILED, value, f"{label} does not meet {self.success}", now
                )
            return self._m(
                MeasurementPhase.INCONCLUSIVE,
                value,
                f"{label} meets neither {self.success} nor failure {self.failure}",
                now,
            )
        return self._m(
            MeasurementPhase.SUCCESSFUL,
            value,
            f"{label} does not meet failure condition {self.failure}",
            now,
        )

    def _missing(self, why: str, now: float) -> Measurement:
        if self.missing_data is MissingData.FAIL:
            return self._m(MeasurementPhase.FAILED, None, f"no data ({why}); policy is fail", now)
        if self.missing_data is MissingData.INCONCLUSIVE:
            return self._m(
                MeasurementPhase.INCONCLUSIVE, None, f"no data ({why}); policy is inconclusive", now
            )
        return self._m(MeasurementPhase.PENDING, None, f"waiting for data: {why}", now)

    def _m(
        self, phase: MeasurementPhase, value: float | None, message: str, now: float
    ) -> Measurement:
        return Measurement(gate=self.name, phase=phase, value=value, message=message, at=now)

    # -- persistence -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "metric": self.metric,
            "success": None if self.success is None else self.success.to_dict(),
            "failure": None if self.failure is None else self.failure.to_dict(),
            "failure_limit": self.failure_limit,
            "inconclusive_limit": self.inconclusive_limit,
            "consecutive_error_limit": self.consecutive_error_limit,
            "min_executions": self.min_executions,
            "missing_data": self.missing_data.value,
            "relative_to_champion": self.relative_to_champion,
        }

    @classmethod
    def _common(cls, d: Mapping[str, Any]) -> dict[str, Any]:
        owner = f"{cls.__name__}"
        succ, fail = d.get("success"), d.get("failure")
        return {
            "name": s.get_str(owner, d, "name"),
            "failure_limit": s.get_int(owner, d, "failure_limit"),
            "inconclusive_limit": s.get_int(owner, d, "inconclusive_limit"),
            "consecutive_error_limit": s.get_int(owner, d, "consecutive_error_limit"),
            "min_executions": s.get_int(owner, d, "min_executions"),
            "missing_data": s.get_enum(owner, d, "missing_data", MissingData),
            "success": None if succ is None else Condition.from_dict(succ),
            "failure": None if fail is None else Condition.from_dict(fail),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Gate:
        d = s.as_mapping("Gate", data)
        return cls(
            metric=s.get_str("Gate", d, "metric"),
            relative_to_champion=bool(d.get("relative_to_champion", False)),
            **cls._common(d),
        )


@dataclass(frozen=True)
class NonInferiorityGate(Gate):
    """The canary is no worse than the champion by more than ``margin`` on paired shadow traffic.

    Each analysis tick runs ``test`` (injected; by default
    ``dspex.pipelines.experiments.stats.non_inferiority``) on the paired scores. Non-inferiority
    shown: Successful. Inferiority shown — the upper one-sided ``1 - alpha`` confidence bound of
    the mean paired difference (canary - champion, normal approximation) lies below ``-margin``:
    Failed. Neither yet: not enough evidence, handled by the missing-data policy (wait by
    default), as are fewer than ``min_pairs`` pairs. Judging the point estimate alone would fail
    an equal version about a third of the time at 40 pairs.
    """

    kind: ClassVar[str] = "non_inferiority"

    metric: str = "score:shadow"  # a label only: this gate reads ``snapshot.shadow``
    margin: float = 0.02
    test_kind: str = "binary"
    min_pairs: int = 30
    alpha: float = 0.05  # for the inferiority bound; ``test`` uses its own for non-inferiority
    min_executions: int = 0
    test: NonInferiorityTest | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (
            isinstance(self.margin, int | float)
            and s.finite(float(self.margin))
            and self.margin >= 0
        ):
            raise ValidationError(
                f"Gate {self.name!r}: margin must be a finite number >= 0, got {self.margin!r}.",
                field="margin",
                constraint=">= 0",
            )
        if self.test_kind not in ("binary", "scored"):
            raise ValidationError(
                f"Gate {self.name!r}: test_kind must be 'binary' or 'scored', got {self.test_kind!r}.",
                field="test_kind",
                constraint="binary | scored",
            )
        _check_limit("min_pairs", self.min_pairs)
        if not (isinstance(self.alpha, float) and 0.0 < self.alpha < 0.5):
            raise ValidationError(
                f"Gate {self.name!r}: alpha must be a float in (0, 0.5), got {self.alpha!r}.",
                field="alpha",
                constraint="0 < alpha < 0.5",
            )

    def with_test(self, test: NonInferiorityTest) -> NonInferiorityGate:
        return replace(self, test=test)

    def measure(
        self, snapshot: MetricsSnapshot, *, champion: int | None, canary: int, now: float
    ) -> Measurement:
        if snapshot.collection_error is not None:
            return self._m(
                MeasurementPhase.ERROR,
                None,
                f"metrics unavailable: {snapshot.collection_error}",
                now,
            )
        pairs = snapshot.shadow
        if pairs is None or pairs.canary != canary or pairs.champion != champion:
            return self._missing(
                f"no paired shadow results for champion {champion} vs canary {canary}", now
            )
        if len(pairs) < max(self.min_pairs, 1):
            return self._missing(
                f"only {len(pairs)} paired shadow results, need {self.min_pairs}", now
            )
        test = self.test or _default_test()
        if test is None:
            return self._m(
                MeasurementPhase.ERROR,
                None,
                "no non-inferiority test available: pass test= to the gate "
                "(dspex.pipelines.experiments.stats is not installed)",
                now,
            )
        diff, upper = _upper_bound(pairs, self.alpha)
        try:
            verdict, p_value = _read_verdict(
                test(pairs.champion_scores, pairs.canary_scores, self.margin, self.test_kind)
            )
        except (
            Exception
        ) as exc:  # the injected test is third-party code to us: any failure is an Error
            return self._m(
                MeasurementPhase.ERROR,
                diff,
                f"non-inferiority test raised {type(exc).__name__}: {exc}",
                now,
            )
        p = "" if p_value is None else f", p = {p_value:.4g}"
        label = (
            f"canary - champion = {diff:+.4f} (upper {1 - self.alpha:.0%} bound {upper:+.4f}) "
            f"over {len(pairs)} pairs (margin {self.margin:g}{p})"
        )
        if verdict:
            return self._m(MeasurementPhase.SUCCESSFUL, diff, f"non-inferior: {label}", now)
        if upper < -self.margin:
            return self._m(MeasurementPhase.FAILED, diff, f"worse than the margin: {label}", now)
        return self._missing(f"non-inferiority not shown yet: {label}", now)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.update(
            margin=self.margin, test_kind=self.test_kind, min_pairs=self.min_pairs, alpha=self.alpha
        )
        return out

    @classmethod
    def from_dict(cls, data: Any, test: NonInferiorityTest | None = None) -> NonInferiorityGate:
        d = s.as_mapping("NonInferiorityGate", data)
        return cls(
            margin=s.get_float("NonInferiorityGate", d, "margin"),
            test_kind=s.get_str("NonInferiorityGate", d, "test_kind"),
            min_pairs=s.get_int("NonInferiorityGate", d, "min_pairs"),
            alpha=s.get_float("NonInferiorityGate", d, "alpha"),
            test=test,
            **cls._common(d),
        )


def _upper_bound(pairs: ShadowPairs, alpha: float) -> tuple[float, float]:
    """Mean paired difference (canary - champion) and its upper one-sided 1 - alpha bound."""
    d = [b - a for a, b in zip(pairs.champion_scores, pairs.canary_scores, strict=True)]
    n = len(d)
    mean = math.fsum(d) / n
    var = math.fsum((x - mean) ** 2 for x in d) / (n - 1) if n > 1 else 0.0
    return mean, mean + NormalDist().inv_cdf(1.0 - alpha) * math.sqrt(var / n)


def _default_test() -> NonInferiorityTest | None:
    try:  # written by the experiments engineer; the gate works without it when a test is injected
        from dspex.pipelines.experiments.stats import non_inferiority as test
    except ImportError:
        return None
    fn: NonInferiorityTest = test
    return fn


def _read_verdict(result: Any) -> tuple[bool, float | None]:
    if isinstance(result, bool):
        return result, None
    if isinstance(result, Mapping):
        verdict, p_value = result.get("non_inferior"), result.get("p_value")
    else:
        verdict, p_value = getattr(result, "non_inferior", None), getattr(result, "p_value", None)
    if not isinstance(verdict, bool):
        raise TypeError(
            f"expected a bool or a result with a boolean 'non_inferior', got {type(result).__name__}"
        )
    return verdict, None if p_value is None else float(p_value)


def gate_from_dict(data: Any, *, non_inferiority_test: NonInferiorityTest | None = None) -> Gate:
    """Load any gate from its dict; a non-inferiority gate gets ``non_inferiority_test`` injected."""
    d = s.as_mapping("Gate", data)
    kind = d.get("kind", "metric")
    if kind == "metric":
        return Gate.from_dict(d)
    if kind == "non_inferiority":
        return NonInferiorityGate.from_dict(d, test=non_inferiority_test)
    raise s.bad("Gate", "kind", f"must be 'metric' or 'non_inferiority', got {kind!r}")


# -- runs and assessment ---------------------------------------------------------------------


@dataclass(frozen=True)
class GateRun:
    """The measurements a gate has recorded during one rollout (reset on restart and retry)."""

    gate: str
    count: int = 0
    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    errors: int = 0
    consecutive_errors: int = 0
    last: Measurement | None = None

    def record(self, m: Measurement) -> GateRun:
        if m.phase is MeasurementPhase.PENDING:
            return replace(self, last=m)
        return replace(
            self,
            count=self.count + 1,
            successful=self.successful + (m.phase is MeasurementPhase.SUCCESSFUL),
            failed=self.failed + (m.phase is MeasurementPhase.FAILED),
            inconclusive=self.inconclusive + (m.phase is MeasurementPhase.INCONCLUSIVE),
            errors=self.errors + (m.phase is MeasurementPhase.ERROR),
            consecutive_errors=self.consecutive_errors + 1
            if m.phase is MeasurementPhase.ERROR
            else 0,
            last=m,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "count": self.count,
            "successful": self.successful,
            "failed": self.failed,
            "inconclusive": self.inconclusive,
            "errors": self.errors,
            "consecutive_errors": self.consecutive_errors,
            "last": None if self.last is None else self.last.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Any) -> GateRun:
        d = s.as_mapping("GateRun", data)
        last = d.get("last")
        ints = {
            k: s.get_int("GateRun", d, k)
            for k in (
                "count",
                "successful",
                "failed",
                "inconclusive",
                "errors",
                "consecutive_errors",
            )
        }
        return cls(
            gate=s.get_str("GateRun", d, "gate"),
            last=None if last is None else Measurement.from_dict(last),
            **ints,
        )


def assess(gate: Gate, run: GateRun) -> GateStatus:
    """Argo's order: failed over its limit, then inconclusive, then consecutive errors."""
    if run.failed > gate.failure_limit:
        return GateStatus.FAILED
    if run.inconclusive > gate.inconclusive_limit:
        return GateStatus.INCONCLUSIVE
    if run.consecutive_errors > gate.consecutive_error_limit:
        return GateStatus.ERROR
    return GateStatus.RUNNING


# -- built-in gates --------------------------------------------------------------------------


def performance_threshold(
    metric: str, min_score: float, *, name: str | None = None, **options: Any
) -> Gate:
    """The program's own metric (mean over scored executions) must reach ``min_score``."""
    return Gate(
        name=name or f"{metric}>={min_score:g}",
        metric=f"score:{metric}",
        success=Condition(">=", min_score),
        **options,
    )


def minimum_executions(count: int, *, name: str | None = None, **options: Any) -> Gate:
    """Holds the rollout until the new version has served ``count`` calls in the window."""
    options.setdefault("min_executions", count)
    return Gate(
        name=name or f"executions>={count}",
        metric="executions",
        success=Condition(">=", count),
        **options,
    )


def error_rate(max_rate: float, *, name: str | None = None, **options: Any) -> Gate:
    return Gate(
        name=name or "error_rate", metric="error_rate", success=Condition("<=", max_rate), **options
    )


def success_rate(min_rate: float, *, name: str | None = None, **options: Any) -> Gate:
    return Gate(
        name=name or "success_rate",
        metric="success_rate",
        success=Condition(">=", min_rate),
        **options,
    )


def p95_latency(max_ms: float, *, name: str | None = None, **options: Any) -> Gate:
    return Gate(
        name=name or "latency_p95",
        metric="latency_p95_ms",
        success=Condition("<=", max_ms),
        **options,
    )


def cost_per_call(max_usd: float, *, name: str | None = None, **options: Any) -> Gate:
    return Gate(
        name=name or "cost_per_call",
        metric="cost_per_call_usd",
        success=Condition("<=", max_usd),
        **options,
    )


def non_inferiority(
    margin: float,
    *,
    kind: str = "binary",
    min_pairs: int = 30,
    test: NonInferiorityTest | None = None,
    name: str | None = None,
    **options: Any,
) -> NonInferiorityGate:
    """Canary vs champion on paired shadow traffic (same inputs to both), within ``margin``."""
    return NonInferiorityGate(
        name=name or "non_inferiority",
        margin=margin,
        test_kind=kind,
        min_pairs=min_pairs,
        test=test,
        **options,
    )
