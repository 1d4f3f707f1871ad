"""Offline experiment statistics: variants vs a baseline on the same test examples.

Entry points:

- ``compare_variants(baseline, {name: results}, kind=...)``: one paired test per variant
  (McNemar for pass/fail, permutation + BCa bootstrap for scores), Holm (or BH) across
  variants, effect sizes with intervals, a power report per variant, and a conclusion
  written from those numbers. A variant wins only when it is significantly better after the
  correction AND its improvement is at least the practical ``margin``.
- ``non_inferiority(champion, canary, margin=..., kind=...)``: is the canary at most
  ``margin`` worse than the champion on paired (shadow) traffic? Used by rollouts.

The building blocks live in ``paired_tests`` and ``power`` and are re-exported here, so
``from dspex.pipelines.experiments import stats`` gives the whole offline toolbox.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from dspex.pipelines.experiments._inputs import (
    ArrayLike,
    Kind,
    as_binary,
    as_paired,
    check_alpha,
    check_kind,
    check_probability,
)
from dspex.pipelines.experiments.paired_tests import (
    AdjustedPValues,
    BootstrapResult,
    CohensDz,
    Correction,
    Interval,
    McNemarResult,
    PermutationResult,
    _all_equal,
    adjust_p_values,
    cohens_dz,
    mcnemar_test,
    paired_bootstrap,
    paired_permutation,
    tango_interval,
    tango_score,
    wilson_interval,
)
from dspex.pipelines.experiments.power import (
    PowerReport,
    format_difference,
    mcnemar_mde,
    mcnemar_power,
    mcnemar_sample_size,
    paired_t_mde,
    paired_t_power,
    paired_t_sample_size,
    power_report,
    power_report_from_results,
)
from scipy import stats as _scipy_stats

from dspex.errors import ExperimentError
from dspex.telemetry import span

__all__ = [
    "AdjustedPValues",
    "BootstrapResult",
    "CohensDz",
    "ComparisonReport",
    "Correction",
    "Interval",
    "Kind",
    "McNemarResult",
    "NonInferiorityResult",
    "PermutationResult",
    "PowerReport",
    "VariantComparison",
    "Verdict",
    "adjust_p_values",
    "cohens_dz",
    "compare_variants",
    "mcnemar_mde",
    "mcnemar_power",
    "mcnemar_sample_size",
    "mcnemar_test",
    "non_inferiority",
    "paired_bootstrap",
    "paired_permutation",
    "paired_t_mde",
    "paired_t_power",
    "paired_t_sample_size",
    "power_report",
    "power_report_from_results",
    "tango_interval",
    "tango_score",
    "wilson_interval",
]

#: better / worse: significant after correction and at least the margin; below_margin:
#: significant but smaller than the margin; no_detectable_difference: not significant.
Verdict = Literal["better", "worse", "below_margin", "no_detectable_difference"]


@dataclass(frozen=True)
class VariantComparison:
    """One variant against the baseline, on the same ``n`` examples.

    ``difference`` is mean(variant) - mean(baseline) (a pass-rate difference for binary),
    ``difference_interval`` its interval (Tango score for binary, BCa bootstrap for scored).
    ``p_value`` comes from ``test`` (McNemar or the paired permutation test) and
    ``p_value_adjusted`` from the correction across all variants of the comparison.
    """

    name: str
    kind: Kind
    n: int
    baseline_mean: float
    variant_mean: float
    difference: float
    difference_interval: Interval
    test: str
    p_value: float
    p_value_adjusted: float
    significant: bool
    verdict: Verdict
    variant_interval: Interval | None
    standardized: CohensDz | None
    mcnemar: McNemarResult | None
    bootstrap: BootstrapResult | None
    permutation: PermutationResult | None
    power: PowerReport

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ComparisonReport:
    """Every variant against the baseline, the winner (or None) and the written conclusion."""

    kind: Kind
    n: int
    alpha: float
    correction: Correction
    margin: float
    baseline_mean: float
    baseline_interval: Interval | None
    variants: tuple[VariantComparison, ...]
    adjusted: AdjustedPValues
    winner: str | None
    conclusion: str

    def variant(self, name: str) -> VariantComparison:
        for v in self.variants:
            if v.name == name:
                return v
        raise ExperimentError(
            f"No variant named {name!r}; the variants are {[v.name for v in self.variants]}."
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class NonInferiorityResult:
    """Is the canary no more than ``margin`` worse than the champion?

    ``lower_bound`` is the one-sided (1 - alpha) lower confidence bound of
    mean(canary) - mean(champion); the canary is non-inferior when it lies above -margin.
    """

    kind: Kind
    n: int
    margin: float
    alpha: float
    champion_mean: float
    canary_mean: float
    difference: float
    lower_bound: float
    p_value: float
    method: str
    non_inferior: bool
    conclusion: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_margin(margin: float, kind: Kind) -> float:
    value = float(margin)
    if not math.isfinite(value) or value < 0 or (kind == "binary" and value >= 1):
        raise ExperimentError(
            f"margin must be >= 0 (and < 1 for pass rates, e.g. 0.02 for 2 pp), got {margin!r}."
        )
    return value


def _verdict(significant: bool, difference: float, margin: float) -> Verdict:
    if not significant:
        return "no_detectable_difference"
    if abs(difference) < margin or difference == 0:
        return "below_margin"
    return "better" if difference > 0 else "worse"


def _compare_one(
    name: str,
    base: np.ndarray,
    var: np.ndarray,
    kind: Kind,
    *,
    confidence: float,
    power_alpha: float,
    power: float,
    margin: float,
    n_resamples: int,
    seed: int,
) -> tuple[dict[str, Any], float]:
    """Everything for one variant except what depends on the other variants."""
    n = int(base.size)
    report = power_report_from_results(
        base, var, kind, alpha=power_alpha, power=power, margin=margin if margin > 0 else None
    )
    fields: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "n": n,
        "baseline_mean": float(np.mean(base)),
        "variant_mean": float(np.mean(var)),
        "power": report,
        "mcnemar": None,
        "bootstrap": None,
        "permutation": None,
        "standardized": None,
        "variant_interval": None,
    }
    if kind == "binary":
        mc = mcnemar_test(base, var, confidence=confidence)
        fields.update(
            difference=mc.difference,
            difference_interval=mc.interval,
            test=f"mcnemar-{mc.method}",
            mcnemar=mc,
            variant_interval=wilson_interval(int(np.sum(var)), n, confidence=confidence),
        )
        return fields, mc.p_value
    boot = paired_bootstrap(base, var, confidence=confidence, n_resamples=n_resamples, seed=seed)
    perm = paired_permutation(base, var, n_resamples=n_resamples, seed=seed)
    d = var - base
    fields.update(
        difference=boot.difference,
        difference_interval=boot.interval,
        test="paired-permutation",
        bootstrap=boot,
        permutation=perm,
        standardized=None if _all_equal(d) else cohens_dz(base, var, confidence=confidence),
    )
    return fields, perm.p_value


def compare_variants(
    baseline: ArrayLike,
    variants: Mapping[str, ArrayLike],
    *,
    kind: Kind = "binary",
    alpha: float = 0.05,
    correction: Correction = "holm",
    margin: float = 0.0,
    power: float = 0.8,
    n_resamples: int = 9999,
    seed: int = 0,
) -> ComparisonReport:
    """Compare each variant with the baseline on paired per-example results.

    Args:
        baseline: per-example results of the baseline (0/1 for binary, floats for scored).
        variants: name -> per-example results on the SAME examples, in the same order.
        kind: "binary" (pass/fail; McNemar) or "scored" (permutation test + BCa bootstrap).
        alpha: family-wise (Holm) or false-discovery (BH) level across the variants.
        correction: "holm" (default), "bh" or "none".
        margin: the smallest improvement worth shipping (pass-rate points for binary, e.g.
            0.02; score units for scored). 0 means any significant improvement wins.
        power: target power of the power / MDE report.
        n_resamples, seed: for the bootstrap and permutation test (scored only).

    Returns:
        A ComparisonReport. Intervals are per-variant (1 - alpha) intervals; the power report
        of each variant is computed at alpha / number of variants when a correction is on
        (Holm's most stringent step), so its MDE holds whatever the other variants do.
    """
    alpha = check_alpha(alpha)
    power = check_probability(power, "power")
    margin = _check_margin(margin, kind)
    if not variants:
        raise ExperimentError("compare_variants needs at least one variant besides the baseline.")
    if correction not in ("holm", "bh", "none"):
        raise ExperimentError(f"correction must be 'holm', 'bh' or 'none', got {correction!r}.")
    confidence = 1.0 - alpha
    power_alpha = alpha / len(variants) if correction != "none" else alpha
    with span(("dspex", "experiment", "compare"), kind=kind, variants=len(variants)) as sp:
        partial: dict[str, dict[str, Any]] = {}
        raw: dict[str, float] = {}
        base_arr: np.ndarray | None = None
        for name, results in variants.items():
            base_arr, var_arr = as_paired(
                baseline, results, kind, ("baseline", f"variant {name!r}")
            )
            partial[name], raw[name] = _compare_one(
                name,
                base_arr,
                var_arr,
                kind,
                confidence=confidence,
                power_alpha=power_alpha,
                power=power,
                margin=margin,
                n_resamples=n_resamples,
                seed=seed,
            )
        assert base_arr is not None
        adjusted = adjust_p_values(raw, method=correction, alpha=alpha)
        comparisons: list[VariantComparison] = []
        for name, p_adj, reject in zip(
            adjusted.names, adjusted.adjusted, adjusted.reject, strict=True
        ):
            fields = partial[name]
            comparisons.append(
                VariantComparison(
                    p_value=raw[name],
                    p_value_adjusted=p_adj,
                    significant=reject,
                    verdict=_verdict(reject, fields["difference"], margin),
                    **fields,
                )
            )
        n = int(base_arr.size)
        better = sorted(
            (c for c in comparisons if c.verdict == "better"), key=lambda c: -c.difference
        )
        winner = better[0].name if better else None
        baseline_interval = (
            wilson_interval(int(np.sum(base_arr)), n, confidence=confidence)
            if kind == "binary"
            else None
        )
        report = ComparisonReport(
            kind=kind,
            n=n,
            alpha=alpha,
            correction=correction,
            margin=margin,
            baseline_mean=float(np.mean(base_arr)),
            baseline_interval=baseline_interval,
            variants=tuple(comparisons),
            adjusted=adjusted,
            winner=winner,
            conclusion=_conclusion(
                comparisons,
                winner,
                n=n,
                kind=kind,
                alpha=alpha,
                correction=correction,
                margin=margin,
            ),
        )
        sp.set(n=n)
        sp.meta(winner=winner)
    return report


# --- the written conclusion ---------------------------------------------------------------


def _fmt_signed(value: float, kind: Kind) -> str:
    text = format_difference(abs(value), kind)
    return ("+" if value >= 0 else "-") + text


def _fmt_interval(iv: Interval, kind: Kind) -> str:
    return f"{iv.level * 100:.0f}% CI {_fmt_signed(iv.low, kind)} to {_fmt_signed(iv.high, kind)}"


def _fmt_p(p: float) -> str:
    return "p<0.0001" if p < 1e-4 else f"p={p:.3g}"


def _line(c: VariantComparison, correction: Correction) -> str:
    adj = "" if correction == "none" else f", {correction}-adjusted {_fmt_p(c.p_value_adjusted)}"
    return (
        f"{_fmt_signed(c.difference, c.kind)} ({_fmt_interval(c.difference_interval, c.kind)}), "
        f"{c.test} {_fmt_p(c.p_value)}{adj}"
    )


def _conclusion(
    comparisons: list[VariantComparison],
    winner: str | None,
    *,
    n: int,
    kind: Kind,
    alpha: float,
    correction: Correction,
    margin: float,
) -> str:
    by_name = {c.name: c for c in comparisons}
    margin_txt = (
        f"the practical margin of {format_difference(margin, kind)}" if margin > 0 else "no margin"
    )
    lines: list[str] = []
    if winner is not None:
        w = by_name[winner]
        lines.append(
            f"Winner: {winner} beats the baseline by {_line(w, correction)}, n={n}, with {margin_txt}."
        )
    else:
        lines.append(f"No variant beats the baseline at alpha={alpha:g} with {margin_txt} (n={n}).")
    for c in comparisons:
        if c.name == winner:
            continue
        if c.verdict == "better":
            lines.append(
                f"{c.name} is also better: {_line(c, correction)}; it was not tested against {winner}."
            )
        elif c.verdict == "worse":
            lines.append(f"{c.name} is worse than the baseline: {_line(c, correction)}.")
        elif c.verdict == "below_margin":
            lines.append(
                f"{c.name} differs significantly but by less than the margin: {_line(c, correction)}."
            )
        else:
            mde = c.power.mde
            if mde is None:
                lines.append(
                    f"{c.name}: no detectable difference at n={n}: {_line(c, correction)}. "
                    f"{c.power.message}"
                )
            else:
                lines.append(
                    f"{c.name}: no detectable difference at n={n}, MDE {format_difference(mde, kind)} "
                    f"({c.power.target_power * 100:.0f}% power): {_line(c, correction)}."
                )
            if mde is not None and c.power.sufficient is False and c.power.n_for_margin is not None:
                lines.append(
                    f"  To certify a difference of {format_difference(margin, kind)} for {c.name}, "
                    f"about n={c.power.n_for_margin:,} examples are needed."
                )
    return "\n".join(lines)


# --- non-inferiority ----------------------------------------------------------------------


def non_inferiority(
    champion: ArrayLike,
    canary: ArrayLike,
    margin: float,
    kind: str = "binary",
    *,
    alpha: float = 0.05,
    n_resamples: int = 9999,
    seed: int = 0,
) -> NonInferiorityResult:
    """Test H0: mean(canary) - mean(champion) <= -margin against H1: > -margin, paired.

    binary: Tango's score test at delta0 = -margin (McNemar's test generalised to a non-zero
    margin; at margin 0 it is McNemar's z). The lower bound is where that score equals
    z_(1-alpha), so the decision and the bound always agree.
    scored: one-sided BCa bootstrap lower bound (the decision) and a sign-flip permutation
    test of the shifted differences (the p-value); they can disagree only at the boundary.

    ``margin`` and ``kind`` may be passed positionally: rollouts call it as
    ``test(champion_scores, canary_scores, margin, kind)``.
    """
    alpha = check_alpha(alpha)
    if alpha >= 0.5:
        raise ExperimentError(f"A one-sided test needs alpha < 0.5, got {alpha}; 0.05 is usual.")
    kind = check_kind(kind)
    margin = _check_margin(margin, kind)
    a, b = as_paired(champion, canary, kind, ("champion", "canary"))
    n = int(a.size)
    if kind == "binary":
        ca, cb = as_binary(a), as_binary(b)
        gains = int(np.sum((ca == 0) & (cb == 1)))
        losses = int(np.sum((ca == 1) & (cb == 0)))
        z = tango_score(gains, losses, n, -margin)
        p_value = float(_scipy_stats.norm.sf(z))
        lower = tango_interval(gains, losses, n, confidence=1.0 - 2.0 * alpha).low
        non_inferior = p_value <= alpha
        difference = (gains - losses) / n
        method = "tango-score"
    else:
        if n < 2:
            raise ExperimentError("A scored non-inferiority test needs at least 2 paired examples.")
        boot = paired_bootstrap(
            a, b, confidence=1.0 - alpha, n_resamples=n_resamples, seed=seed, alternative="greater"
        )
        perm = paired_permutation(
            a, b, n_resamples=n_resamples, seed=seed, alternative="greater", null_difference=-margin
        )
        lower, p_value, difference = boot.interval.low, perm.p_value, boot.difference
        non_inferior = lower > -margin
        method = "bootstrap-bca+permutation"
    shown_margin = format_difference(margin, kind)
    bound = f"one-sided {(1 - alpha) * 100:.0f}% lower bound {_fmt_signed(lower, kind)}"
    if non_inferior:
        conclusion = (
            f"Canary is non-inferior to the champion within {shown_margin}: difference "
            f"{_fmt_signed(difference, kind)}, {bound} > -{shown_margin} ({_fmt_p(p_value)}, n={n})."
        )
    else:
        conclusion = (
            f"Non-inferiority not shown: difference {_fmt_signed(difference, kind)}, {bound} does not "
            f"clear -{shown_margin} ({_fmt_p(p_value)}, n={n}); keep the champion or collect more traffic."
        )
    return NonInferiorityResult(
        kind=kind,
        n=n,
        margin=margin,
        alpha=alpha,
        champion_mean=float(np.mean(a)),
        canary_mean=float(np.mean(b)),
        difference=float(difference),
        lower_bound=float(lower),
        p_value=p_value,
        method=method,
        non_inferior=bool(non_inferior),
        conclusion=conclusion,
    )
