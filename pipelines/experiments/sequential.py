"""Always-valid inference for online experiments: confidence sequences you may peek at.

A fixed-horizon test read every hour rejects a true null far more often than alpha (the
peeking problem). A confidence sequence (CS) instead covers the true effect at every sample
size simultaneously with probability 1 - alpha, so it can be read after every unit and the
experiment stopped the first time it excludes zero.

We use the two-sided normal-mixture boundary (Robbins' mixture / mixture SPRT; Howard et al.
2021) in its asymptotic form for means of i.i.d. observations (Waudby-Smith et al. 2023,
"Time-uniform central limit theory and asymptotic confidence sequences"), as GrowthBook does.
For an estimate with variance V after n_total units, with s2 = n_total * V:

    radius = sqrt(s2) * sqrt( 2 (n rho^2 + 1) / (n^2 rho^2) * log( sqrt(n rho^2 + 1) / alpha ) )

rho sets where the sequence is tightest; ``mixture_rho(alpha, tuning_n)`` picks it so the
radius is smallest at n = tuning_n (set that near the traffic you expect). Inverting the
boundary at zero gives the always-valid p-value

    p = min(1, sqrt(n rho^2 + 1) * exp( -n^2 rho^2 estimate^2 / (2 s2 (n rho^2 + 1)) )).

The guarantee is asymptotic (it relies on the CLT at each n), so early looks are protected by
a minimum sample before any verdict (``OnlinePlan.min_units_per_arm``). Proportions are means
of 0/1 values and use the same formulas.

The kernels are vectorized numpy so a simulation can evaluate millions of looks at once.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from dspex.pipelines.experiments._inputs import check_alpha

from dspex.errors import ExperimentError

__all__ = [
    "SequentialMonitor",
    "SequentialResult",
    "difference_sequence",
    "mixture_rho",
    "sequence_p_value",
    "sequence_radius",
]

FloatArray = npt.NDArray[np.float64]


def mixture_rho(alpha: float, tuning_n: float) -> float:
    """Mixture scale that minimises the CS radius at ``tuning_n`` total units."""
    alpha = check_alpha(alpha)
    if tuning_n <= 0:
        raise ExperimentError(
            f"tuning_n must be > 0 (the sample size to optimise for), got {tuning_n}."
        )
    two_log = -2.0 * math.log(alpha)
    return math.sqrt((two_log + math.log(two_log + 1.0)) / tuning_n)


def sequence_radius(
    n_total: npt.ArrayLike, s2: npt.ArrayLike, alpha: float, tuning_n: float
) -> FloatArray:
    """Half-width of the (1 - alpha) confidence sequence; ``s2`` = n_total * Var(estimate)."""
    rho2 = mixture_rho(alpha, tuning_n) ** 2
    n = np.asarray(n_total, dtype=np.float64)
    s2_arr = np.asarray(s2, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        inner = 2.0 * (n * rho2 + 1.0) / (n * n * rho2) * np.log(np.sqrt(n * rho2 + 1.0) / alpha)
        out = np.sqrt(np.maximum(s2_arr, 0.0)) * np.sqrt(inner)
    return np.where(n > 0, out, np.inf)


def sequence_p_value(
    n_total: npt.ArrayLike,
    estimate: npt.ArrayLike,
    s2: npt.ArrayLike,
    alpha: float,
    tuning_n: float,
) -> FloatArray:
    """Always-valid p-value for H0: effect = 0 (the smallest alpha whose CS excludes 0).

    ``alpha`` only fixes the mixture scale (through ``mixture_rho``), as in the CS itself.
    """
    rho2 = mixture_rho(alpha, tuning_n) ** 2
    n = np.asarray(n_total, dtype=np.float64)
    est = np.asarray(estimate, dtype=np.float64)
    s2_arr = np.asarray(s2, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        exponent = -(n * n * rho2 * est * est) / (2.0 * s2_arr * (n * rho2 + 1.0))
        p = np.sqrt(n * rho2 + 1.0) * np.exp(exponent)
    # zero variance: the estimate is exact, so p is 0 unless it is exactly 0
    p = np.where(s2_arr > 0, p, np.where(est == 0, 1.0, 0.0))
    return np.minimum(np.where(n > 0, p, 1.0), 1.0)


def difference_sequence(
    n_control: npt.ArrayLike,
    mean_control: npt.ArrayLike,
    var_control: npt.ArrayLike,
    n_treatment: npt.ArrayLike,
    mean_treatment: npt.ArrayLike,
    var_treatment: npt.ArrayLike,
    *,
    alpha: float = 0.05,
    tuning_n: float = 5000,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """CS for mean(treatment) - mean(control) from per-arm counts, means and variances.

    Returns (estimate, low, high, p_value), each shaped like the inputs (broadcast).
    """
    n_c = np.asarray(n_control, dtype=np.float64)
    n_t = np.asarray(n_treatment, dtype=np.float64)
    estimate = np.asarray(mean_treatment, dtype=np.float64) - np.asarray(
        mean_control, dtype=np.float64
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        var_est = (
            np.asarray(var_treatment, dtype=np.float64) / n_t
            + np.asarray(var_control, dtype=np.float64) / n_c
        )
    n_total = n_c + n_t
    s2 = np.where((n_c > 0) & (n_t > 0), var_est * n_total, np.inf)
    radius = sequence_radius(n_total, s2, alpha, tuning_n)
    p = sequence_p_value(n_total, estimate, s2, alpha, tuning_n)
    return estimate, estimate - radius, estimate + radius, p


@dataclass(frozen=True)
class SequentialResult:
    """One look: the estimate, the always-valid interval and p-value at this look."""

    estimate: float
    low: float
    high: float
    p_value: float
    alpha: float
    n_total: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SequentialMonitor:
    """Remembers what the looks so far have shown, so a decision once reached stays reached.

    The time-uniform guarantee makes "stop the first time the CS excludes 0" a valid rule;
    this object keeps that first crossing, the running minimum p-value and the running
    intersection of the intervals (itself a valid CS; if the asymptotic approximation ever
    makes it empty the latest interval is kept instead).
    """

    alpha: float = 0.05
    tuning_n: float = 5000
    looks: int = 0
    low: float = -math.inf
    high: float = math.inf
    min_p_value: float = 1.0
    crossed_at_n: int | None = None
    crossed_sign: int = 0
    history: list[SequentialResult] = field(default_factory=list, repr=False)
    keep_history: bool = False

    def update(self, result: SequentialResult) -> SequentialResult:
        """Fold in one look; returns the look with the running interval and p-value."""
        self.looks += 1
        low, high = max(self.low, result.low), min(self.high, result.high)
        if low > high:
            low, high = result.low, result.high
        self.low, self.high = low, high
        self.min_p_value = min(self.min_p_value, result.p_value)
        if self.crossed_at_n is None and (low > 0 or high < 0):
            self.crossed_at_n = result.n_total
            self.crossed_sign = 1 if low > 0 else -1
        running = SequentialResult(
            result.estimate, low, high, self.min_p_value, result.alpha, result.n_total
        )
        if self.keep_history:
            self.history.append(running)
        return running
