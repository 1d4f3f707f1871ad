"""Online A/B statistics: live traffic split between a control and treatment arms.

- ``ArmSummary``: mergeable sufficient statistics (n, mean, sum of squared deviations) per
  arm and metric, so the serving side never keeps raw observations.
- ``srm_check``: sample-ratio mismatch (chi-square goodness of fit against the configured
  weights; flagged at p < 0.001, checked only once every arm expects >= 8 units). An SRM
  means the assignment or the logging is broken, and no result is trustworthy.
- ``welch_t_test`` and ``two_proportion_z_test``: fixed-horizon tests, valid once, at the
  planned sample size.
- ``online_verdict``: reads an experiment at any time. In "sequential" mode (the default)
  the primary metric and the guardrails (error rate, latency, cost...) are judged with
  always-valid confidence sequences (see ``sequential``), after a minimum sample per arm;
  in "fixed" mode with Welch / z once every arm reaches the planned size.

Assignment itself is in ``assignment``; both are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from dspex.pipelines.experiments._inputs import ArrayLike, as_scores, check_alpha
from dspex.pipelines.experiments.assignment import Assigner, assign, unit_bucket
from dspex.pipelines.experiments.paired_tests import Interval
from dspex.pipelines.experiments.sequential import SequentialResult, difference_sequence
from scipy import stats
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from dspex.errors import ExperimentError
from dspex.telemetry import emit

__all__ = [
    "ArmComparison",
    "ArmSummary",
    "Assigner",
    "Guardrail",
    "GuardrailResult",
    "OnlinePlan",
    "OnlineVerdict",
    "SRMResult",
    "TwoSampleResult",
    "assign",
    "online_verdict",
    "sequential_difference",
    "srm_check",
    "two_proportion_z_test",
    "unit_bucket",
    "welch_t_test",
]

#: SRM is flagged below this p-value: strict, because a false alarm halts an experiment.
SRM_P_THRESHOLD = 0.001
#: ... and only checked once every arm expects at least this many units.
SRM_MIN_UNITS_PER_ARM = 8


@dataclass(frozen=True)
class ArmSummary:
    """Count, mean and sum of squared deviations (``m2``) of one metric in one arm.

    Built from values or from pass counts, merged with ``+`` (Chan et al.'s parallel update),
    so replicas can each summarise their traffic and the summaries be added up.
    """

    n: int
    mean: float
    m2: float

    @classmethod
    def empty(cls) -> ArmSummary:
        return cls(0, 0.0, 0.0)

    @classmethod
    def from_values(cls, values: ArrayLike) -> ArmSummary:
        arr = as_scores(values, "values")
        mean = float(np.mean(arr))
        return cls(int(arr.size), mean, float(np.sum((arr - mean) ** 2)))

    @classmethod
    def from_counts(cls, successes: int, n: int) -> ArmSummary:
        """A pass/fail metric: ``successes`` ones among ``n`` observations."""
        if n < 0 or successes < 0 or successes > n:
            raise ExperimentError(f"Need 0 <= successes <= n, got {successes}/{n}.")
        if n == 0:
            return cls.empty()
        p = successes / n
        return cls(n, p, n * p * (1.0 - p))

    def add(self, value: float) -> ArmSummary:
        """Welford's update with one observation."""
        if not math.isfinite(value):
            raise ExperimentError(f"Observation {value!r} is not a finite number.")
        n = self.n + 1
        delta = value - self.mean
        mean = self.mean + delta / n
        return ArmSummary(n, mean, self.m2 + delta * (value - mean))

    def __add__(self, other: ArmSummary) -> ArmSummary:
        if self.n == 0:
            return other
        if other.n == 0:
            return self
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * other.n / n
        return ArmSummary(n, mean, self.m2 + other.m2 + delta * delta * self.n * other.n / n)

    @property
    def variance(self) -> float:
        """Sample variance (ddof=1); 0 below two observations."""
        return self.m2 / (self.n - 1) if self.n > 1 else 0.0

    @property
    def successes(self) -> int:
        """For a pass/fail metric: the number of ones."""
        return round(self.mean * self.n)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _summary(x: ArmSummary | ArrayLike) -> ArmSummary:
    return x if isinstance(x, ArmSummary) else ArmSummary.from_values(x)


@dataclass(frozen=True)
class TwoSampleResult:
    """Fixed-horizon comparison: estimate = mean(treatment) - mean(control)."""

    test: str
    estimate: float
    interval: Interval
    statistic: float
    p_value: float
    df: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def welch_t_test(
    control: ArmSummary | ArrayLike, treatment: ArmSummary | ArrayLike, *, alpha: float = 0.05
) -> TwoSampleResult:
    """Welch's unequal-variance t-test (scipy) and its interval for the mean difference."""
    alpha = check_alpha(alpha)
    c, t = _summary(control), _summary(treatment)
    if c.n < 2 or t.n < 2:
        raise ExperimentError(
            f"Welch's t-test needs at least 2 units per arm, got {c.n} and {t.n}."
        )
    estimate = t.mean - c.mean
    vc, vt = c.variance / c.n, t.variance / t.n
    se = math.sqrt(vc + vt)
    if se == 0.0:
        p = 1.0 if estimate == 0 else 0.0
        return TwoSampleResult(
            "welch-t", estimate, Interval(estimate, estimate, 1 - alpha, "welch-t"), 0.0, p, None
        )
    res = stats.ttest_ind_from_stats(
        t.mean, math.sqrt(t.variance), t.n, c.mean, math.sqrt(c.variance), c.n, equal_var=False
    )
    df = (vc + vt) ** 2 / (vc**2 / (c.n - 1) + vt**2 / (t.n - 1))
    half = float(stats.t.isf(alpha / 2.0, df)) * se
    interval = Interval(estimate - half, estimate + half, 1 - alpha, "welch-t")
    return TwoSampleResult(
        "welch-t", estimate, interval, float(res.statistic), float(res.pvalue), float(df)
    )


def two_proportion_z_test(
    control_successes: int,
    control_n: int,
    treatment_successes: int,
    treatment_n: int,
    *,
    alpha: float = 0.05,
) -> TwoSampleResult:
    """Pooled two-proportion z-test (statsmodels) with Newcombe's hybrid score interval."""
    alpha = check_alpha(alpha)
    for s, n, arm in (
        (control_successes, control_n, "control"),
        (treatment_successes, treatment_n, "treatment"),
    ):
        if n < 1 or s < 0 or s > n:
            raise ExperimentError(
                f"The {arm} arm needs 0 <= successes <= n and n >= 1, got {s}/{n}."
            )
    estimate = treatment_successes / treatment_n - control_successes / control_n
    pooled = (control_successes + treatment_successes) / (control_n + treatment_n)
    if pooled in (0.0, 1.0):  # every unit the same: no evidence of any difference
        z, p = 0.0, 1.0
    else:
        z_arr, p_arr = proportions_ztest(
            [treatment_successes, control_successes], [treatment_n, control_n]
        )
        z, p = float(z_arr), float(p_arr)
    low, high = confint_proportions_2indep(
        treatment_successes,
        treatment_n,
        control_successes,
        control_n,
        method="newcomb",
        alpha=alpha,
    )
    return TwoSampleResult(
        "two-proportion-z",
        estimate,
        Interval(float(low), float(high), 1 - alpha, "newcombe"),
        z,
        p,
        None,
    )


def sequential_difference(
    control: ArmSummary, treatment: ArmSummary, *, alpha: float = 0.05, tuning_n: float = 5000
) -> SequentialResult:
    """Always-valid interval and p-value for mean(treatment) - mean(control) at this look."""
    alpha = check_alpha(alpha)
    est, low, high, p = difference_sequence(
        control.n,
        control.mean,
        control.variance,
        treatment.n,
        treatment.mean,
        treatment.variance,
        alpha=alpha,
        tuning_n=tuning_n,
    )
    return SequentialResult(
        float(est), float(low), float(high), float(p), alpha, control.n + treatment.n
    )


@dataclass(frozen=True)
class SRMResult:
    """Sample-ratio mismatch check. ``checked`` is False while some arm expects < 8 units."""

    observed: dict[str, int]
    expected: dict[str, float]
    statistic: float
    p_value: float
    checked: bool
    flagged: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def srm_check(
    counts: Mapping[str, int],
    weights: Mapping[str, float],
    *,
    p_threshold: float = SRM_P_THRESHOLD,
    min_units_per_arm: int = SRM_MIN_UNITS_PER_ARM,
) -> SRMResult:
    """Chi-square goodness of fit of the units per arm against the configured weights."""
    if set(counts) != set(weights):
        raise ExperimentError(
            f"counts has arms {sorted(counts)} but weights has {sorted(weights)}; they must match."
        )
    arms = list(weights)
    w = np.array([float(weights[a]) for a in arms])
    if np.any(~np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ExperimentError(f"weights must be finite, >= 0 and not all 0, got {dict(weights)}.")
    obs = np.array([int(counts[a]) for a in arms], dtype=np.float64)
    if np.any(obs < 0):
        raise ExperimentError(f"unit counts must be >= 0, got {dict(counts)}.")
    total = float(obs.sum())
    exp = total * w / w.sum()
    observed = {a: int(c) for a, c in zip(arms, obs, strict=True)}
    expected = {a: float(e) for a, e in zip(arms, exp, strict=True)}
    live = w > 0
    if np.any(obs[~live] > 0):  # an arm with weight 0 received traffic: a mismatch by definition
        msg = f"Units reached zero-weight arm(s) {[a for a, lv in zip(arms, live, strict=True) if not lv]}."
        return SRMResult(observed, expected, math.inf, 0.0, True, True, msg)
    if np.any(exp[live] < min_units_per_arm) or live.sum() < 2:
        msg = f"Not checked yet: every arm must expect at least {min_units_per_arm} units (total {int(total)})."
        return SRMResult(observed, expected, 0.0, 1.0, False, False, msg)
    res = stats.chisquare(obs[live], exp[live])
    p = float(res.pvalue)
    flagged = p < p_threshold
    ratio = ", ".join(f"{a}={observed[a]}" for a in arms)
    if flagged:
        msg = (
            f"Sample ratio mismatch: {ratio} vs expected "
            + ", ".join(f"{a}={expected[a]:.0f}" for a in arms)
            + f" (chi-square p={p:.2g} < {p_threshold:g}). Assignment or logging is broken; "
            "results are not trustworthy until it is fixed."
        )
    else:
        msg = f"Split matches the weights ({ratio}, chi-square p={p:.3g})."
    return SRMResult(observed, expected, float(res.statistic), p, True, flagged, msg)


@dataclass(frozen=True)
class Guardrail:
    """A metric that must not get worse by more than ``max_increase`` (metric units).

    E.g. Guardrail("error_rate", max_increase=0.01), Guardrail("latency_ms", 50),
    Guardrail("cost_usd", 0.0005). ``higher_is_worse=False`` for metrics where a drop hurts.
    Breached when the always-valid interval shows the degradation exceeds the threshold;
    ok when it shows it does not; inconclusive in between.
    """

    metric: str
    max_increase: float
    higher_is_worse: bool = True
    alpha: float | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.max_increase) or self.max_increase < 0:
            raise ExperimentError(
                f"Guardrail {self.metric!r}: max_increase must be finite and >= 0."
            )
        if self.alpha is not None:
            check_alpha(self.alpha, f"guardrail {self.metric!r} alpha")


GuardrailStatus = Literal["ok", "breached", "inconclusive", "collecting"]


@dataclass(frozen=True)
class GuardrailResult:
    metric: str
    arm: str
    status: GuardrailStatus
    degradation: float
    interval: Interval
    max_increase: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class OnlinePlan:
    """How an online experiment is read.

    mode="sequential": verdicts from always-valid confidence sequences as soon as every arm
    has ``min_units_per_arm`` units; read as often as you like. mode="fixed": Welch / z-test,
    once, when every arm reaches ``planned_units_per_arm``. ``tuning_n`` is the total sample
    size at which the confidence sequence is tightest (set it near the expected traffic).
    """

    primary_metric: str
    primary_kind: Literal["binary", "mean"] = "mean"
    higher_is_better: bool = True
    alpha: float = 0.05
    margin: float = 0.0
    mode: Literal["sequential", "fixed"] = "sequential"
    min_units_per_arm: int = 100
    planned_units_per_arm: int | None = None
    tuning_n: float = 5000
    guardrails: tuple[Guardrail, ...] = ()
    srm_p_threshold: float = SRM_P_THRESHOLD

    def __post_init__(self) -> None:
        check_alpha(self.alpha)
        if self.mode not in ("sequential", "fixed"):
            raise ExperimentError(f"mode must be 'sequential' or 'fixed', got {self.mode!r}.")
        if self.primary_kind not in ("binary", "mean"):
            raise ExperimentError(
                f"primary_kind must be 'binary' or 'mean', got {self.primary_kind!r}."
            )
        if self.mode == "fixed" and (
            self.planned_units_per_arm is None or self.planned_units_per_arm < 2
        ):
            raise ExperimentError(
                "mode='fixed' needs planned_units_per_arm >= 2 (from a power calculation)."
            )
        if self.min_units_per_arm < 2:
            raise ExperimentError("min_units_per_arm must be at least 2.")
        if self.margin < 0:
            raise ExperimentError("margin must be >= 0.")


ArmDecision = Literal["collecting", "better", "worse", "below_margin", "continue", "no_difference"]
VerdictStatus = Literal[
    "collecting",
    "invalid",
    "guardrail_breached",
    "winner",
    "control_wins",
    "continue",
    "no_difference",
]


@dataclass(frozen=True)
class ArmComparison:
    arm: str
    control_n: int
    treatment_n: int
    control_mean: float
    treatment_mean: float
    fixed: TwoSampleResult | None
    sequential: SequentialResult
    decision: ArmDecision

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class OnlineVerdict:
    status: VerdictStatus
    winner: str | None
    srm: SRMResult
    comparisons: tuple[ArmComparison, ...]
    guardrails: tuple[GuardrailResult, ...]
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fixed_test(
    plan: OnlinePlan, c: ArmSummary, t: ArmSummary, alpha: float
) -> TwoSampleResult | None:
    if c.n < 2 or t.n < 2:
        return None
    if plan.primary_kind == "binary":
        return two_proportion_z_test(c.successes, c.n, t.successes, t.n, alpha=alpha)
    return welch_t_test(c, t, alpha=alpha)


def _decide(plan: OnlinePlan, estimate: float, significant: bool) -> ArmDecision:
    if not significant:
        return "continue" if plan.mode == "sequential" else "no_difference"
    if abs(estimate) < plan.margin or estimate == 0:
        return "below_margin"
    gain = estimate if plan.higher_is_better else -estimate
    return "better" if gain > 0 else "worse"


def _metric(arms: Mapping[str, Mapping[str, ArmSummary]], arm: str, metric: str) -> ArmSummary:
    try:
        return arms[arm][metric]
    except KeyError as exc:
        raise ExperimentError(
            f"Arm {arm!r} has no summary for metric {metric!r}; record it for every arm."
        ) from exc


def online_verdict(
    plan: OnlinePlan,
    arms: Mapping[str, Mapping[str, ArmSummary]],
    *,
    weights: Mapping[str, float],
    control: str,
    assigned: Mapping[str, int] | None = None,
) -> OnlineVerdict:
    """Read an online experiment now.

    ``arms``: arm -> metric name -> ArmSummary. ``weights``: the configured split.
    ``assigned``: units assigned per arm (for the SRM check; defaults to the primary metric's
    counts). The primary metric's alpha is split evenly over the treatment arms (Bonferroni,
    valid under continuous monitoring); each guardrail uses its own alpha (default the plan's).
    """
    if control not in arms:
        raise ExperimentError(f"Control arm {control!r} is not among the arms {sorted(arms)}.")
    treatments = [a for a in arms if a != control]
    if not treatments:
        raise ExperimentError(
            "An online experiment needs at least one treatment arm besides the control."
        )
    counts = (
        assigned
        if assigned is not None
        else {a: _metric(arms, a, plan.primary_metric).n for a in arms}
    )
    srm = srm_check(counts, weights, p_threshold=plan.srm_p_threshold)
    arm_alpha = plan.alpha / len(treatments)
    need = (
        plan.min_units_per_arm
        if plan.mode == "sequential"
        else int(plan.planned_units_per_arm or 0)
    )
    collecting = any(_metric(arms, a, plan.primary_metric).n < need for a in arms)

    c_sum = _metric(arms, control, plan.primary_metric)
    comparisons: list[ArmComparison] = []
    for arm in treatments:
        t_sum = _metric(arms, arm, plan.primary_metric)
        seq = sequential_difference(c_sum, t_sum, alpha=arm_alpha, tuning_n=plan.tuning_n)
        fixed = _fixed_test(plan, c_sum, t_sum, arm_alpha)
        if collecting:
            decision: ArmDecision = "collecting"
        elif plan.mode == "sequential":
            decision = _decide(plan, seq.estimate, seq.excludes_zero)
        else:
            assert fixed is not None
            decision = _decide(plan, fixed.estimate, fixed.p_value <= arm_alpha)
        comparisons.append(
            ArmComparison(arm, c_sum.n, t_sum.n, c_sum.mean, t_sum.mean, fixed, seq, decision)
        )

    guard_results: list[GuardrailResult] = []
    for g in plan.guardrails:
        g_alpha = g.alpha if g.alpha is not None else plan.alpha
        gc = _metric(arms, control, g.metric)
        for arm in treatments:
            gt = _metric(arms, arm, g.metric)
            seq = sequential_difference(gc, gt, alpha=g_alpha, tuning_n=plan.tuning_n)
            sign = 1.0 if g.higher_is_worse else -1.0
            # degradation = how much worse the treatment is, in the guardrail's direction
            lo, hi = sorted((sign * seq.low, sign * seq.high))
            interval = Interval(lo, hi, 1 - g_alpha, "confidence-sequence")
            status: GuardrailStatus
            if min(gc.n, gt.n) < plan.min_units_per_arm:
                status = "collecting"
            elif lo > g.max_increase:
                status = "breached"
            elif hi <= g.max_increase:
                status = "ok"
            else:
                status = "inconclusive"
            guard_results.append(
                GuardrailResult(
                    g.metric, arm, status, sign * seq.estimate, interval, g.max_increase
                )
            )

    verdict = _summarise(plan, srm, collecting, comparisons, guard_results)
    emit(
        ("dspex", "experiment", "online", "verdict"),
        {"units": int(sum(counts.values())), "arms": len(arms)},
        {"status": verdict.status, "winner": verdict.winner, "srm_flagged": srm.flagged},
    )
    return verdict


def _summarise(
    plan: OnlinePlan,
    srm: SRMResult,
    collecting: bool,
    comparisons: Iterable[ArmComparison],
    guards: list[GuardrailResult],
) -> OnlineVerdict:
    comps = tuple(comparisons)
    g = tuple(guards)
    if srm.flagged:
        return OnlineVerdict("invalid", None, srm, comps, g, srm.message)
    breached = [r for r in g if r.status == "breached"]
    if breached:
        names = "; ".join(
            f"{r.arm} {r.metric} worse by {r.degradation:.4g} (interval {r.interval.low:.4g} to "
            f"{r.interval.high:.4g}) > allowed {r.max_increase:g}"
            for r in breached
        )
        return OnlineVerdict(
            "guardrail_breached", None, srm, comps, g, f"Stop: guardrail breached: {names}."
        )
    if collecting:
        need = plan.min_units_per_arm if plan.mode == "sequential" else plan.planned_units_per_arm
        smallest = min(min(c.control_n, c.treatment_n) for c in comps)
        return OnlineVerdict(
            "collecting",
            None,
            srm,
            comps,
            g,
            f"Collecting: the smallest arm has {smallest} units; a verdict needs {need} per arm.",
        )
    sign = 1.0 if plan.higher_is_better else -1.0
    better = sorted(
        (c for c in comps if c.decision == "better"), key=lambda c: -sign * c.sequential.estimate
    )
    if better:
        w = better[0]
        if plan.mode == "sequential":
            low, high = w.sequential.low, w.sequential.high
        else:
            assert w.fixed is not None
            low, high = w.fixed.interval.low, w.fixed.interval.high
        return OnlineVerdict(
            "winner",
            w.arm,
            srm,
            comps,
            g,
            f"{w.arm} beats control on {plan.primary_metric}: {w.treatment_mean:.4g} vs {w.control_mean:.4g} "
            f"(difference {w.sequential.estimate:+.4g}, interval {low:+.4g} to {high:+.4g}, {plan.mode}).",
        )
    if comps and all(c.decision == "worse" for c in comps):
        return OnlineVerdict(
            "control_wins",
            None,
            srm,
            comps,
            g,
            f"Every treatment is worse than control on {plan.primary_metric}.",
        )
    if plan.mode == "fixed":
        return OnlineVerdict(
            "no_difference",
            None,
            srm,
            comps,
            g,
            f"No significant difference on {plan.primary_metric} at the planned sample size.",
        )
    return OnlineVerdict(
        "continue",
        None,
        srm,
        comps,
        g,
        f"No decision yet on {plan.primary_metric}; keep collecting (results may be read at any time).",
    )
