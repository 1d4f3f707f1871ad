"""Power and minimum detectable effect (MDE) for paired comparisons.

The question a report must answer when it finds no difference: was the test set big enough
to find one? For pass/fail metrics the power of McNemar's test is computed exactly (the same
exact-binomial / chi-square-with-correction rule the test uses, summed over the binomial
number of discordant pairs), so "the n the report asks for" really gives the promised power.
For scored metrics the paired t-test power from statsmodels (``TTestPower``) stands in for
the permutation test, to which it is asymptotically equivalent.

Nuisance parameters: McNemar's power depends on how many pairs disagree (the discordance
rate), a paired t's on the standard deviation of the differences. Both are read off the
observed results by ``power_report_from_results`` or given when planning. An effect of size
delta needs at least delta of pairs to disagree, so the discordance used at delta is
max(discordance, delta).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from dspex.pipelines.experiments._inputs import (
    ArrayLike,
    Kind,
    as_paired,
    check_alpha,
    check_probability,
)
from dspex.pipelines.experiments.paired_tests import EXACT_BELOW_DISCORDANT
from scipy import optimize, stats
from statsmodels.stats.power import TTestPower

from dspex.errors import ExperimentError

__all__ = [
    "PowerReport",
    "format_difference",
    "mcnemar_mde",
    "mcnemar_power",
    "mcnemar_sample_size",
    "paired_t_mde",
    "paired_t_power",
    "paired_t_sample_size",
    "power_report",
    "power_report_from_results",
]

#: Sample sizes beyond this are reported as unreachable rather than searched for.
MAX_SAMPLE_SIZE = 10**8


@dataclass(frozen=True)
class PowerReport:
    """What a test set of ``n`` paired examples can and cannot certify.

    ``mde``: the smallest |difference| detected with ``target_power`` at ``alpha`` (None when
    no difference at all is detectable at this n). With a ``margin``: the power to detect a
    difference of that size, the n needed for ``target_power``, and ``sufficient``.
    ``nuisance`` is the discordance rate (binary) or sd of the differences (scored) assumed.
    """

    kind: Kind
    n: int
    alpha: float
    target_power: float
    nuisance: float
    mde: float | None
    margin: float | None
    power_at_margin: float | None
    n_for_margin: int | None
    sufficient: bool | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def format_difference(value: float, kind: Kind) -> str:
    """Differences in pass rate read as percentage points; scores as plain numbers."""
    if kind == "binary":
        return f"{value * 100:.1f} pp"
    return f"{value:.4g}"


# --- pass/fail: McNemar, exact ------------------------------------------------------------


def _reject_prob_given_discordant(
    ms: np.ndarray, q: float, alpha: float, exact_below: int
) -> np.ndarray:
    """P(McNemar rejects | m discordant pairs), each a gain with probability q."""
    out = np.zeros(ms.shape, dtype=np.float64)
    for i, m in enumerate(ms.tolist()):
        if 0 < m < exact_below:  # exact binomial region: at most 24 small cases
            ks = np.arange(m + 1)
            p = np.minimum(1.0, 2.0 * stats.binom.cdf(np.minimum(ks, m - ks), m, 0.5))
            out[i] = float(np.sum(stats.binom.pmf(ks[p <= alpha], m, q)))
    large = ms >= max(exact_below, 1)
    if np.any(large):
        m = ms[large].astype(np.float64)
        # chi2 = (|2k - m| - 1)^2 / m >= crit  <=>  |2k - m| >= 1 + sqrt(crit * m)
        reach = 1.0 + np.sqrt(float(stats.chi2.isf(alpha, 1)) * m)
        k_lo = np.floor((m - reach) / 2.0)
        k_hi = np.ceil((m + reach) / 2.0)
        lower = np.where(k_lo >= 0, stats.binom.cdf(k_lo, m, q), 0.0)
        upper = np.where(k_hi <= m, stats.binom.sf(k_hi - 1, m, q), 0.0)
        out[large] = lower + upper
    return out


def mcnemar_power(
    n: int,
    p_gain: float,
    p_loss: float,
    *,
    alpha: float = 0.05,
    exact_below: int = EXACT_BELOW_DISCORDANT,
) -> float:
    """Exact power of the two-sided McNemar test at ``n`` pairs.

    ``p_gain``: probability an example passes with the variant and fails with the baseline;
    ``p_loss`` the reverse. The difference in pass rates is p_gain - p_loss.
    """
    alpha = check_alpha(alpha)
    if n < 1:
        raise ExperimentError(f"n must be at least 1, got {n}.")
    if p_gain < 0 or p_loss < 0 or p_gain + p_loss > 1:
        raise ExperimentError(
            f"Need p_gain, p_loss >= 0 and p_gain + p_loss <= 1, got {p_gain}, {p_loss}."
        )
    psi = p_gain + p_loss
    if psi == 0.0:
        return 0.0
    q = p_gain / psi
    # Only the discordant counts with non-negligible probability matter.
    m_lo = int(stats.binom.ppf(1e-12, n, psi))
    m_hi = int(stats.binom.isf(1e-12, n, psi))
    ms = np.arange(max(m_lo - 1, 0), min(m_hi + 1, n) + 1)
    weights = stats.binom.pmf(ms, n, psi)
    return float(
        np.clip(
            np.sum(weights * _reject_prob_given_discordant(ms, q, alpha, exact_below)), 0.0, 1.0
        )
    )


def _power_at(n: int, difference: float, discordance: float, alpha: float) -> float:
    psi = min(1.0, max(discordance, abs(difference)))
    return mcnemar_power(
        n, (psi + abs(difference)) / 2.0, (psi - abs(difference)) / 2.0, alpha=alpha
    )


def _smallest_n(power_of: Any, target: float, start: int) -> int | None:
    """Smallest n with power_of(n) >= target, by doubling then bisection (power rises with n
    up to the exact test's small saw-tooth)."""
    if power_of(1) >= target:
        return 1
    lo, hi = 1, max(2, start)
    if power_of(hi) >= target:
        # The guess already suffices: look below it, but not further than needed.
        probe = max(1, hi // 2)
        while probe > 1 and power_of(probe) >= target:
            hi, probe = probe, max(1, probe // 2)
        lo = probe
    else:
        while power_of(hi) < target:
            lo, hi = hi, hi * 2
            if hi > MAX_SAMPLE_SIZE:
                return None
    # invariant: power_of(lo) < target <= power_of(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if power_of(mid) >= target:
            hi = mid
        else:
            lo = mid
    return hi


def mcnemar_sample_size(
    difference: float, discordance: float, *, alpha: float = 0.05, power: float = 0.8
) -> int | None:
    """Pairs needed to detect a pass-rate ``difference`` with ``power`` (None: beyond 1e8)."""
    alpha = check_alpha(alpha)
    power = check_probability(power, "power")
    if not 0.0 < abs(difference) <= 1.0:
        raise ExperimentError(f"difference must be in (0, 1] in absolute value, got {difference}.")
    if not 0.0 <= discordance <= 1.0:
        raise ExperimentError(f"discordance must be in [0, 1], got {discordance}.")
    delta = abs(difference)
    psi = min(1.0, max(discordance, delta))
    # Connor (1987) normal approximation as the starting point of the exact search.
    za, zb = stats.norm.isf(alpha / 2.0), stats.norm.isf(1.0 - power)
    guess = ((za * math.sqrt(psi) + zb * math.sqrt(max(psi - delta**2, 0.0))) / delta) ** 2
    return _smallest_n(lambda n: _power_at(n, delta, psi, alpha), power, max(2, int(guess)))


def mcnemar_mde(
    n: int, discordance: float, *, alpha: float = 0.05, power: float = 0.8
) -> float | None:
    """Smallest |difference| in pass rates detected with ``power`` at ``n`` pairs (None: none is)."""
    alpha = check_alpha(alpha)
    power = check_probability(power, "power")
    if not 0.0 <= discordance <= 1.0:
        raise ExperimentError(f"discordance must be in [0, 1], got {discordance}.")
    if _power_at(n, 1.0, discordance, alpha) < power:
        return None
    lo, hi = 0.0, 1.0
    while hi - lo > 1e-4:
        mid = (lo + hi) / 2.0
        if _power_at(n, mid, discordance, alpha) >= power:
            hi = mid
        else:
            lo = mid
    return hi


# --- scored: paired t (statsmodels) -------------------------------------------------------


def _t_power(dz: float, n: int, alpha: float) -> float:
    """Two-sided paired t power (statsmodels). statsmodels returns NaN once the far tail
    underflows (large effects); then both tails are summed here with the negligible one as 0."""
    value = float(TTestPower().power(effect_size=dz, nobs=n, alpha=alpha))
    if math.isnan(value):
        t_crit = float(stats.t.isf(alpha / 2.0, n - 1))
        nc = dz * math.sqrt(n)
        upper = float(stats.nct.sf(t_crit, n - 1, nc))
        lower = float(np.nan_to_num(stats.nct.cdf(-t_crit, n - 1, nc), nan=0.0))
        value = upper + lower
        if math.isnan(value):
            raise ExperimentError(f"Could not compute the t-test power at dz={dz}, n={n}.")
    return min(1.0, value)


def paired_t_power(n: int, difference: float, sd_diff: float, *, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test for a mean difference with sd of differences."""
    alpha = check_alpha(alpha)
    if n < 2:
        raise ExperimentError(f"A paired t-test needs n >= 2, got {n}.")
    if sd_diff < 0:
        raise ExperimentError(f"sd_diff must be >= 0, got {sd_diff}.")
    if sd_diff == 0.0:
        return 1.0 if difference != 0 else alpha
    return _t_power(abs(difference) / sd_diff, n, alpha)


def paired_t_sample_size(
    difference: float, sd_diff: float, *, alpha: float = 0.05, power: float = 0.8
) -> int | None:
    alpha = check_alpha(alpha)
    power = check_probability(power, "power")
    if difference == 0:
        raise ExperimentError("difference must be non-zero to size a test for it.")
    if sd_diff <= 0.0:
        return 2
    dz = abs(difference) / sd_diff
    za, zb = stats.norm.isf(alpha / 2.0), stats.norm.isf(1.0 - power)
    guess = int(((za + zb) / dz) ** 2) + 2
    return _smallest_n(
        lambda n: _t_power(dz, n, alpha) if n >= 2 else 0.0,
        power,
        guess,
    )


def paired_t_mde(
    n: int, sd_diff: float, *, alpha: float = 0.05, power: float = 0.8
) -> float | None:
    alpha = check_alpha(alpha)
    power = check_probability(power, "power")
    if n < 2:
        return None
    if sd_diff == 0.0:
        return 0.0
    f = lambda dz: _t_power(dz, n, alpha) - power  # noqa: E731
    hi = 1.0
    while f(hi) < 0:
        hi *= 2.0
        if hi > 1e6:
            return None
    return float(optimize.brentq(f, 1e-9, hi, xtol=1e-10)) * sd_diff


# --- the report ---------------------------------------------------------------------------


def power_report(
    kind: Kind,
    n: int,
    *,
    nuisance: float,
    alpha: float = 0.05,
    power: float = 0.8,
    margin: float | None = None,
) -> PowerReport:
    """Power report for ``n`` paired examples.

    ``nuisance`` is the discordance rate (share of examples where the two arms disagree) for
    kind="binary", or the standard deviation of the per-example differences for "scored".
    """
    alpha = check_alpha(alpha)
    power = check_probability(power, "power")
    if kind not in ("binary", "scored"):
        raise ExperimentError(f"kind must be 'binary' or 'scored', got {kind!r}.")
    if n < 1:
        raise ExperimentError(f"n must be at least 1, got {n}.")
    if margin is not None and (margin <= 0 or (kind == "binary" and margin > 1)):
        raise ExperimentError(f"margin must be > 0 (and <= 1 for pass rates), got {margin}.")
    if nuisance < 0 or (kind == "binary" and nuisance > 1):
        raise ExperimentError(
            f"nuisance must be >= 0 (and <= 1 for a discordance rate), got {nuisance}."
        )
    if kind == "scored" and nuisance == 0.0:
        # Every paired difference equal: the data say nothing about their spread, and a
        # t-based MDE of 0 would claim a certainty we do not have.
        message = (
            f"All {n} paired differences are equal, so their spread, and with it the MDE, cannot "
            "be estimated; plan with power_report(kind='scored', nuisance=<sd of differences "
            "from a pilot>)."
        )
        return PowerReport(kind, n, alpha, power, 0.0, None, margin, None, None, None, message)
    if kind == "binary":
        mde = mcnemar_mde(n, nuisance, alpha=alpha, power=power)
        assumption = f"{nuisance * 100:.1f}% of pairs disagreeing"
    else:
        mde = paired_t_mde(n, nuisance, alpha=alpha, power=power)
        assumption = f"sd of differences {nuisance:.4g}"
    pct = f"{power * 100:.0f}%"
    if mde is None:
        message = (
            f"n={n} is too small to detect any difference with {pct} power at alpha={alpha:g}."
        )
    else:
        message = (
            f"n={n} detects a difference of {format_difference(mde, kind)} or more with {pct} power "
            f"at alpha={alpha:g} (assuming {assumption})."
        )
    power_at: float | None = None
    n_needed: int | None = None
    sufficient: bool | None = None
    if margin is not None:
        if kind == "binary":
            power_at = _power_at(n, margin, nuisance, alpha)
            n_needed = mcnemar_sample_size(margin, nuisance, alpha=alpha, power=power)
        else:
            power_at = paired_t_power(n, margin, nuisance, alpha=alpha) if n >= 2 else 0.0
            n_needed = paired_t_sample_size(margin, nuisance, alpha=alpha, power=power)
        sufficient = power_at >= power
        shown = format_difference(margin, kind)
        if sufficient:
            message += f" Enough to certify a difference of {shown} (power {power_at:.2f})."
        else:
            need = (
                f"n={n_needed:,}"
                if n_needed is not None
                else f"more than {MAX_SAMPLE_SIZE:,} examples"
            )
            message += (
                f" Too small to certify a difference of {shown} (power {power_at:.2f}); "
                f"{need} would be needed."
            )
    return PowerReport(
        kind, n, alpha, power, float(nuisance), mde, margin, power_at, n_needed, sufficient, message
    )


def power_report_from_results(
    baseline: ArrayLike,
    variant: ArrayLike,
    kind: Kind,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    margin: float | None = None,
) -> PowerReport:
    """Power report with the nuisance parameter read off finished paired results."""
    a, b = as_paired(baseline, variant, kind)
    d = b - a
    if kind == "binary":
        nuisance = float(np.mean(d != 0))
    else:
        nuisance = float(np.std(d, ddof=1)) if d.size >= 2 else 0.0
    return power_report(
        kind, int(d.size), nuisance=nuisance, alpha=alpha, power=power, margin=margin
    )
