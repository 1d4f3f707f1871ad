"""Pareto fronts, hypervolume and NSGA-II: our own calls around pymoo (guarded import).

Everything here minimizes: an objective to maximize (accuracy) enters negated. ``NSGA2Search``
is an ask / tell loop over integer decision variables, so the caller decides how a population
is evaluated (all at once, through the evaluator seam, locally or on Ray).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dspex.errors import OptimizerError

__all__ = ["NSGA2Search", "choose_by_weights", "hypervolume", "import_pymoo", "nondominated"]


def import_pymoo() -> Any:
    try:
        import pymoo
    except ImportError as exc:  # pragma: no cover - pymoo is a dependency of dspex
        raise OptimizerError("MultiObjective searches with pymoo; install it: pip install 'pymoo>=0.6.1'.") from exc
    return pymoo


def nondominated(F: np.ndarray) -> np.ndarray:
    """Indices of the rows of ``F`` (minimized) no other row dominates; duplicates kept once."""
    F = np.asarray(F, dtype=float)
    keep: list[int] = []
    for i in range(len(F)):
        dominated = np.any(np.all(F <= F[i], axis=1) & np.any(F < F[i], axis=1))
        duplicate = any(np.array_equal(F[i], F[j]) for j in keep)
        if not dominated and not duplicate:
            keep.append(i)
    return np.array(keep, dtype=int)


def hypervolume(F: np.ndarray, ref_point: Sequence[float]) -> float:
    """The volume dominated by the rows of ``F`` (minimized) and bounded by ``ref_point``;
    points not better than the reference in every objective add nothing."""
    import_pymoo()
    from pymoo.indicators.hv import HV

    F = np.asarray(F, dtype=float)
    ref = np.asarray(ref_point, dtype=float)
    if F.size == 0:
        return 0.0
    inside = F[np.all(F < ref, axis=1)]
    if inside.size == 0:
        return 0.0
    return float(HV(ref_point=ref)(inside))


def choose_by_weights(objectives: Sequence[Mapping[str, float]], weights: Mapping[str, float], maximize: set[str]) -> int:
    """The index of the point with the best weighted sum of min-max normalized goodness
    (1 best, 0 worst on each objective over the given points)."""
    if not objectives:
        raise OptimizerError("There is no point to choose from.")
    total = sum(abs(w) for w in weights.values())
    if total <= 0:
        raise OptimizerError(f"The weights must not all be zero, got {dict(weights)}.")
    best, best_score = 0, -float("inf")
    ranges = {k: (min(o[k] for o in objectives), max(o[k] for o in objectives)) for k in weights}
    for i, obj in enumerate(objectives):
        score = 0.0
        for k, w in weights.items():
            lo, hi = ranges[k]
            norm = 1.0 if hi == lo else (obj[k] - lo) / (hi - lo)
            score += w * (norm if k in maximize else 1.0 - norm)
        if score > best_score + 1e-12:
            best, best_score = i, score
    return best


class NSGA2Search:
    """NSGA-II over integer variables ``0 <= x[j] <= upper[j]``, asked and told one
    generation at a time."""

    def __init__(self, upper: Sequence[int], *, n_obj: int, pop_size: int, n_gen: int, seed: int | None) -> None:
        import_pymoo()
        from pymoo.algorithms.moo.nsga2 import NSGA2
        from pymoo.core.problem import Problem
        from pymoo.operators.crossover.sbx import SBX
        from pymoo.operators.mutation.pm import PM
        from pymoo.operators.repair.rounding import RoundingRepair
        from pymoo.operators.sampling.rnd import IntegerRandomSampling
        from pymoo.termination import get_termination

        if pop_size < 2:
            raise OptimizerError(f"population_size must be at least 2, got {pop_size}.")
        if n_gen < 1:
            raise OptimizerError(f"generations must be at least 1, got {n_gen}.")
        xu = np.asarray(list(upper), dtype=int)
        self.problem = Problem(n_var=len(xu), n_obj=n_obj, xl=np.zeros(len(xu), dtype=int), xu=xu, vtype=int)
        self.algorithm = NSGA2(
            pop_size=pop_size,
            sampling=IntegerRandomSampling(),
            crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
            mutation=PM(eta=20, vtype=float, repair=RoundingRepair()),
            eliminate_duplicates=True,
        )
        self.algorithm.setup(self.problem, termination=get_termination("n_gen", n_gen), seed=seed, verbose=False)
        self._pop: Any = None

    def has_next(self) -> bool:
        return bool(self.algorithm.has_next())

    def ask(self) -> list[tuple[int, ...]]:
        self._pop = self.algorithm.ask()
        X = np.asarray(self._pop.get("X"))
        return [tuple(int(np.rint(v)) for v in row) for row in X]

    def tell(self, F: Sequence[Sequence[float]]) -> None:
        if self._pop is None:
            raise OptimizerError("tell() without a population asked for.")
        F_arr = np.asarray(F, dtype=float)
        if F_arr.shape != (len(self._pop), self.problem.n_obj):
            raise OptimizerError(f"Expected {len(self._pop)} x {self.problem.n_obj} objective values, got {F_arr.shape}.")
        self._pop.set("F", F_arr)
        self.algorithm.tell(infills=self._pop)
        self._pop = None
