"""The analysis of a finished offline experiment: paired statistics, power, cost, Pareto view.

``analyze(spec, arms, ...)`` takes the per-example results of every arm (all on the same
test examples, in the same order) and computes:

- ``compare_variants``: McNemar for pass/fail metrics, paired permutation + BCa bootstrap for
  scored ones, Holm / BH across the variants, intervals, per-variant power and a conclusion;
- a planning power report: what the test set can certify, and the n needed for the
  experiment's target effect (``spec.target_effect``, else its margin);
- cost per example and latency percentiles per arm (measured on calls that reached the
  model), and the quality / cost Pareto front.

The written conclusion is the statistics' conclusion followed by cost, latency and the
trade-off, all from the numbers above.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from dspex.pipelines.experiments._inputs import Kind
from dspex.pipelines.experiments.arm import ArmResult
from dspex.pipelines.experiments.power import PowerReport, format_difference, power_report
from dspex.pipelines.experiments.record import jsonable
from dspex.pipelines.experiments.spec import ExperimentSpec
from dspex.pipelines.experiments.stats import ComparisonReport, compare_variants

from dspex.errors import ExperimentError

__all__ = ["ExperimentResult", "ParetoPoint", "analyze", "decide_kind", "pareto_front"]


@dataclass(frozen=True)
class ParetoPoint:
    name: str
    score: float
    cost_per_example_usd: float
    on_front: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "score": self.score,
            "cost_per_example_usd": self.cost_per_example_usd,
            "on_front": self.on_front,
        }


def pareto_front(points: dict[str, tuple[float, float]]) -> list[ParetoPoint]:
    """name -> (score, cost): each point flagged when no other is at least as good on both
    and strictly better on one (higher score, lower cost). Sorted by cost."""
    out = []
    for name, (score, cost) in points.items():
        dominated = any(
            s >= score and c <= cost and (s > score or c < cost)
            for other, (s, c) in points.items()
            if other != name
        )
        out.append(ParetoPoint(name, score, cost, not dominated))
    return sorted(out, key=lambda p: (p.cost_per_example_usd, -p.score, p.name))


def decide_kind(spec_kind: str, arms: dict[str, ArmResult]) -> Kind:
    """ "auto": binary when every per-example score of every arm is 0 or 1, else scored."""
    if spec_kind == "binary":
        return "binary"
    if spec_kind == "scored":
        return "scored"
    values = np.concatenate([np.asarray(a.scores, dtype=float) for a in arms.values()])
    return "binary" if bool(np.all((values == 0.0) | (values == 1.0))) else "scored"


@dataclass
class ExperimentResult:
    """Everything the report shows. ``arms`` is ordered: the baseline first."""

    name: str
    kind: Kind
    baseline: str
    arms: dict[str, ArmResult]
    comparison: ComparisonReport
    planning: PowerReport | None
    pareto: list[ParetoPoint]
    trade_off: bool
    conclusion: str
    split: dict[str, Any]
    example_ids: list[str]
    repeats: int
    experiment_id: str | None = None
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def winner(self) -> str | None:
        return self.comparison.winner

    @property
    def n(self) -> int:
        return self.comparison.n

    def to_dict(self) -> dict[str, Any]:
        """Strict JSON data (NaN -> None), per-example results included."""
        return jsonable(
            {
                "experiment_id": self.experiment_id,
                "name": self.name,
                "kind": self.kind,
                "n": self.n,
                "repeats": self.repeats,
                "baseline": self.baseline,
                "winner": self.winner,
                "conclusion": self.conclusion,
                "split": self.split,
                "example_ids": self.example_ids,
                "comparison": self.comparison.to_dict(),
                "planning": None if self.planning is None else self.planning.to_dict(),
                "pareto": [p.to_dict() for p in self.pareto],
                "trade_off": self.trade_off,
                "arms": {name: arm.to_dict() for name, arm in self.arms.items()},
                "spec": self.spec,
            }
        )


def _fmt_score(value: float, kind: Kind) -> str:
    return f"{value * 100:.1f}%" if kind == "binary" else f"{value:.4g}"


def _fmt_usd(value: float | None) -> str:
    return "n/a" if value is None else f"${value:.6f}"


def _fmt_ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


def _cost_lines(
    result_arms: dict[str, ArmResult], kind: Kind, baseline: str, winner: str | None
) -> list[str]:
    lines = ["Cost and latency per test example (measured on calls that reached the model):"]
    for name, arm in result_arms.items():
        lines.append(
            f"  {name}: {_fmt_score(arm.mean, kind)}, {_fmt_usd(arm.cost_per_example_usd)}/example, "
            f"p50 {_fmt_ms(arm.latency_ms(0.5))}, p95 {_fmt_ms(arm.latency_ms(0.95))}"
        )
    if winner is not None:
        w, b = result_arms[winner].cost_per_example_usd, result_arms[baseline].cost_per_example_usd
        if w is not None and b is not None and b > 0:
            lines.append(f"The winner {winner} costs {w / b:.2f}x the baseline per example.")
    return lines


def _pareto_line(front: list[ParetoPoint], kind: Kind, trade_off: bool) -> str:
    on = [p for p in front if p.on_front]
    if not on:
        return "Cost was not measured for any arm (every answer came from the cache), so there is no cost view."
    desc = ", ".join(
        f"{p.name} ({_fmt_score(p.score, kind)} at {_fmt_usd(p.cost_per_example_usd)})" for p in on
    )
    if trade_off:
        return f"Quality and cost trade off: the Pareto front (cheapest first) is {desc}."
    return f"No trade-off: {desc} is at least as good and no more expensive than every other arm."


def analyze(
    spec: ExperimentSpec,
    arms: dict[str, ArmResult],
    *,
    split: dict[str, Any],
    example_ids: list[str],
    experiment_id: str | None = None,
) -> ExperimentResult:
    baseline = spec.baseline.name
    if baseline not in arms:
        raise ExperimentError(f"No results for the baseline {baseline!r}.")
    variants = [v.name for v in spec.variants]
    missing = [v for v in variants if v not in arms]
    if missing:
        raise ExperimentError(f"No results for the variant(s) {missing}.")
    ordered = {baseline: arms[baseline], **{v: arms[v] for v in variants}}
    kind = decide_kind(spec.metric_kind, ordered)
    comparison = compare_variants(
        arms[baseline].scores,
        {v: arms[v].scores for v in variants},
        kind=kind,
        alpha=spec.alpha,
        correction=spec.correction,
        margin=spec.margin,
        power=spec.power,
        n_resamples=spec.n_resamples,
        seed=spec.seed,
    )
    # Plan with the noisiest comparison, at Holm's most stringent step: the n it asks for
    # suffices for every variant.
    noisiest = max(comparison.variants, key=lambda c: c.power.nuisance)
    if noisiest.power.margin == spec.planned_effect():
        planning = noisiest.power  # compare_variants planned for the same effect already
    else:
        planning = power_report(
            kind,
            comparison.n,
            nuisance=noisiest.power.nuisance,
            alpha=noisiest.power.alpha,
            power=spec.power,
            margin=spec.planned_effect(),
        )
    costs = {
        name: (arm.mean, arm.cost_per_example_usd)
        for name, arm in ordered.items()
        if arm.cost_per_example_usd is not None
    }
    front = pareto_front({k: (s, c) for k, (s, c) in costs.items() if c is not None})
    trade_off = sum(1 for p in front if p.on_front) > 1
    lines = [comparison.conclusion, ""]
    lines += _cost_lines(ordered, kind, baseline, comparison.winner)
    lines.append(_pareto_line(front, kind, trade_off))
    effect = spec.planned_effect()
    lines.append(
        f"Power: {planning.message}"
        if effect is None
        else f"Power for a {format_difference(effect, kind)} difference: {planning.message}"
    )
    return ExperimentResult(
        name=spec.name,
        kind=kind,
        baseline=baseline,
        arms=ordered,
        comparison=comparison,
        planning=planning,
        pareto=front,
        trade_off=trade_off,
        conclusion="\n".join(lines),
        split=split,
        example_ids=example_ids,
        repeats=spec.repeats,
        experiment_id=experiment_id,
        spec=spec.to_dict(),
    )
