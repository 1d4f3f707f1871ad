"""An online A/B experiment as one object: assign units, ingest outcomes, read a verdict.

    exp = OnlineExperiment(
        "checkout-prompt-v2",
        weights={"control": 0.5, "treatment": 0.5},
        plan=OnlinePlan(primary_metric="success", primary_kind="binary",
                        guardrails=(Guardrail("error_rate", 0.01), Guardrail("latency_ms", 50.0))),
    )
    arm = exp.assign(user_id)                        # sticky: same user, same arm, any replica
    exp.record(user_id, {"success": 1.0, "error_rate": 0.0, "latency_ms": 412.0})
    v = exp.verdict()                                # readable at any time (sequential)
    v.status in {"collecting", "continue", "winner", "control_wins", "invalid", "guardrail_breached"}

It knows nothing of HTTP or Ray: a Serve app (or anything else) calls ``assign`` and
``record`` and reads ``verdict``. Several replicas each keep one and ``merge`` their
``snapshot()``s, since every per-arm summary is a mergeable (n, mean, m2).

Units are counted once, under the arm that actually served them (``record(..., arm=...)``
when it differs from the planned one, e.g. a fallback to control). That count feeds the
sample-ratio-mismatch check, so a skewed assignment or lost logging shows up as an SRM and
the verdict is "invalid" instead of a wrong winner. Once a sequential verdict is final
(winner, control_wins, guardrail_breached, invalid) it is kept: confidence sequences allow
stopping at the first crossing, not un-stopping later.
"""

from __future__ import annotations

import math
import numbers
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

from dspex.pipelines.experiments.assignment import Assigner
from dspex.pipelines.experiments.online_stats import (
    ArmSummary,
    Guardrail,
    OnlinePlan,
    OnlineVerdict,
    online_verdict,
)

from dspex.errors import ExperimentError
from dspex.telemetry import emit

__all__ = ["FINAL_STATUSES", "OnlineExperiment"]

#: verdicts after which the experiment should stop (and which are kept once reached)
FINAL_STATUSES = frozenset({"winner", "control_wins", "guardrail_breached", "invalid"})
RECORD_EVENT = ("dspex", "experiment", "online", "record")


class OnlineExperiment:
    """Sticky weighted assignment, per-arm accumulation and verdicts for one experiment.

    Args:
        name: the experiment's name; also the assignment salt unless ``salt`` is given.
        weights: arm -> weight (normalised); arms are laid out in this order.
        plan: how to read it (primary metric, alpha, mode, minimum sample, guardrails).
        control: the control arm (default: the first arm).
        clock: seconds, for the time a final verdict was reached.
        keep_units: remember unit keys (to count each unit once); without it every
            ``record`` of a new exposure counts, which suits per-request units.
    """

    def __init__(
        self,
        name: str,
        weights: Mapping[str, float],
        plan: OnlinePlan,
        *,
        control: str | None = None,
        salt: str | None = None,
        clock: Callable[[], float] = time.time,
        keep_units: bool = True,
    ) -> None:
        if not name:
            raise ExperimentError("An online experiment needs a name.")
        if not isinstance(plan, OnlinePlan):
            raise ExperimentError(f"plan must be an OnlinePlan, got {type(plan).__name__}.")
        self.name = name
        self.assigner = Assigner.create(salt or name, weights)
        if len(self.assigner.arms) < 2:
            raise ExperimentError(
                "An online experiment needs a control and at least one treatment arm."
            )
        self.control = control if control is not None else self.assigner.arms[0]
        if self.control not in self.assigner.arms:
            raise ExperimentError(
                f"Control {self.control!r} is not among the arms {list(self.assigner.arms)}."
            )
        self.plan = plan
        self.clock = clock
        self.keep_units = keep_units
        self._lock = threading.Lock()
        self._units: dict[str, str] = {}
        self._counts: dict[str, int] = dict.fromkeys(self.assigner.arms, 0)
        self._mismatched = 0
        self._summaries: dict[str, dict[str, ArmSummary]] = {a: {} for a in self.assigner.arms}
        self._final: OnlineVerdict | None = None
        self.final_at_s: float | None = None

    # -- traffic ------------------------------------------------------------------------------
    @property
    def arms(self) -> tuple[str, ...]:
        return self.assigner.arms

    @property
    def weights(self) -> dict[str, float]:
        return self.assigner.weights

    def assign(self, unit_key: str) -> str:
        """The unit's arm (sticky: a pure function of the experiment and the key)."""
        return self.assigner.assign(unit_key)

    def record(self, unit_key: str, metrics: Mapping[str, float], *, arm: str | None = None) -> str:
        """Add one observation of ``unit_key`` (metric name -> value); returns the arm it
        counted in. ``arm``: the arm that actually served it, when not the assigned one."""
        planned = self.assigner.assign(unit_key)
        served = planned if arm is None else arm
        if served not in self._summaries:
            raise ExperimentError(
                f"Arm {served!r} is not an arm of {self.name!r}: {list(self.arms)}."
            )
        if not metrics:
            raise ExperimentError("record() needs at least one metric, e.g. {'success': 1.0}.")
        for key, value in metrics.items():
            if not isinstance(value, numbers.Real):
                raise ExperimentError(
                    f"Metric {key!r} must be a number, got {type(value).__name__}."
                )
            if not math.isfinite(float(value)):  # checked before any count changes
                raise ExperimentError(f"Metric {key!r} is {value!r}, not a finite number.")
        with self._lock:
            if not self.keep_units:
                self._counts[served] += 1
            elif unit_key not in self._units:  # a unit counts once, in the arm first serving it
                self._units[unit_key] = served
                self._counts[served] += 1
            if served != planned:
                self._mismatched += 1
            arm_metrics = self._summaries[served]
            for key, value in metrics.items():
                arm_metrics[key] = arm_metrics.get(key, ArmSummary.empty()).add(float(value))
        emit(
            RECORD_EVENT,
            {"count": 1},
            {"experiment": self.name, "arm": served, "mismatch": served != planned},
        )
        return served

    # -- reading ------------------------------------------------------------------------------
    def units(self) -> dict[str, int]:
        """Units counted per arm (the SRM check's input)."""
        with self._lock:
            return dict(self._counts)

    @property
    def mismatched(self) -> int:
        """Observations served by another arm than the one assigned."""
        return self._mismatched

    def summaries(self) -> dict[str, dict[str, ArmSummary]]:
        with self._lock:
            return {a: dict(m) for a, m in self._summaries.items()}

    def _metric_names(self) -> list[str]:
        return [self.plan.primary_metric, *(g.metric for g in self.plan.guardrails)]

    def verdict(self) -> OnlineVerdict:
        """Read the experiment now. A final sequential verdict, once reached, is returned
        from then on (with ``final_at_s`` telling when)."""
        if self._final is not None:
            return self._final
        summaries = self.summaries()
        arms = {
            a: {m: summaries[a].get(m, ArmSummary.empty()) for m in self._metric_names()}
            for a in self.arms
        }
        verdict = online_verdict(
            self.plan, arms, weights=self.weights, control=self.control, assigned=self.units()
        )
        if verdict.status in FINAL_STATUSES and self.plan.mode == "sequential":
            with self._lock:
                if self._final is None:
                    self._final, self.final_at_s = verdict, self.clock()
        return verdict

    @property
    def final(self) -> OnlineVerdict | None:
        return self._final

    # -- replicas and persistence ---------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """JSON data of the counts and summaries (not the unit keys)."""
        with self._lock:
            return {
                "name": self.name,
                "salt": self.assigner.salt,
                "weights": self.weights,
                "control": self.control,
                "plan": _plan_to_dict(self.plan),
                "units": dict(self._counts),
                "mismatched": self._mismatched,
                "summaries": {
                    a: {m: s.to_dict() for m, s in ms.items()} for a, ms in self._summaries.items()
                },
                "final_status": None if self._final is None else self._final.status,
                "final_at_s": self.final_at_s,
            }

    def merge(self, snapshot: Mapping[str, Any]) -> None:
        """Add another replica's counts and summaries (same experiment, disjoint traffic)."""
        if snapshot.get("name") != self.name or snapshot.get("salt") != self.assigner.salt:
            raise ExperimentError(
                f"Cannot merge a snapshot of {snapshot.get('name')!r} into {self.name!r}."
            )
        if set(snapshot.get("units", {})) != set(self.arms):
            raise ExperimentError(
                f"The snapshot's arms {sorted(snapshot.get('units', {}))} differ from {list(self.arms)}."
            )
        with self._lock:
            for arm, n in snapshot["units"].items():
                self._counts[arm] += int(n)
            self._mismatched += int(snapshot.get("mismatched", 0))
            for arm, metrics in snapshot.get("summaries", {}).items():
                for metric, s in metrics.items():
                    other = ArmSummary(int(s["n"]), float(s["mean"]), float(s["m2"]))
                    self._summaries[arm][metric] = (
                        self._summaries[arm].get(metric, ArmSummary.empty()) + other
                    )

    @classmethod
    def from_snapshot(
        cls, snapshot: Mapping[str, Any], *, clock: Callable[[], float] = time.time
    ) -> OnlineExperiment:
        exp = cls(
            snapshot["name"],
            snapshot["weights"],
            _plan_from_dict(snapshot["plan"]),
            control=snapshot["control"],
            salt=snapshot["salt"],
            clock=clock,
        )
        exp.merge(snapshot)
        return exp


def _plan_to_dict(plan: OnlinePlan) -> dict[str, Any]:
    data = asdict(plan)
    data["guardrails"] = [asdict(g) for g in plan.guardrails]
    return data


def _plan_from_dict(data: Mapping[str, Any]) -> OnlinePlan:
    fields = dict(data)
    fields["guardrails"] = tuple(Guardrail(**g) for g in fields.get("guardrails", ()))
    return OnlinePlan(**fields)
