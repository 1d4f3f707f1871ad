"""One analysis tick: measure every gate, fold the results into a verdict for the rollout.

Two layers of tolerance, as in Argo Rollouts and Flagger together:

* per gate, ``failure_limit`` / ``inconclusive_limit`` / ``consecutive_error_limit`` (Argo): a
  bad measurement within its gate's limit only *holds* the step;
* per rollout, ``threshold`` (Flagger): a tick is a *failed check* when some gate measured
  Failed (or Error) this tick and that gate is over its limit. ``threshold`` failed checks roll
  the rollout back. A gate that recovers stops producing failed checks, so a transient blip over
  the limit costs one check, not the rollout.

A gate over its inconclusive limit that measured Inconclusive this tick pauses the rollout for a
human (Argo's behaviour). A gate waiting for data holds the step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from .gates import Gate, GateRun, GateStatus, Measurement, MeasurementPhase, assess
from .snapshot import MetricsSnapshot

__all__ = ["Analysis", "Outcome", "analyze"]


class Outcome(StrEnum):
    PASS = "pass"
    HOLD = "hold"
    FAIL = "fail"
    PAUSE = "pause"


@dataclass(frozen=True)
class Analysis:
    outcome: Outcome
    runs: tuple[GateRun, ...]
    measurements: tuple[Measurement, ...]
    reason: str

    @property
    def waiting(self) -> bool:
        """Some gate is waiting for data (its window should keep accumulating)."""
        return any(m.phase is MeasurementPhase.PENDING for m in self.measurements)


def analyze(
    gates: Sequence[Gate],
    runs: Sequence[GateRun],
    snapshot: MetricsSnapshot,
    *,
    champion: int | None,
    canary: int,
    now: float,
) -> Analysis:
    by_name = {r.gate: r for r in runs}
    new_runs: list[GateRun] = []
    measurements: list[Measurement] = []
    failing: list[str] = []
    pausing: list[str] = []
    holding: list[str] = []
    for gate in gates:
        m = gate.measure(snapshot, champion=champion, canary=canary, now=now)
        run = by_name.get(gate.name, GateRun(gate=gate.name)).record(m)
        status = assess(gate, run)
        new_runs.append(run)
        measurements.append(m)
        if m.phase in (MeasurementPhase.FAILED, MeasurementPhase.ERROR) and status in (
            GateStatus.FAILED,
            GateStatus.ERROR,
        ):
            failing.append(f"{gate.name} {status.value}: {m.message} ({_counts(gate, run)})")
        elif m.phase is MeasurementPhase.INCONCLUSIVE and status is GateStatus.INCONCLUSIVE:
            pausing.append(f"{gate.name} inconclusive: {m.message} ({_counts(gate, run)})")
        elif m.phase is not MeasurementPhase.SUCCESSFUL:
            holding.append(f"{gate.name}: {m.message}")
    if failing:
        outcome, reason = Outcome.FAIL, "; ".join(failing)
    elif pausing:
        outcome, reason = Outcome.PAUSE, "; ".join(pausing)
    elif holding:
        outcome, reason = Outcome.HOLD, "; ".join(holding)
    else:
        outcome, reason = Outcome.PASS, "all gates passed" if gates else "no gates configured"
    return Analysis(
        outcome=outcome, runs=tuple(new_runs), measurements=tuple(measurements), reason=reason
    )


def _counts(gate: Gate, run: GateRun) -> str:
    return (
        f"failed {run.failed}/limit {gate.failure_limit}, inconclusive {run.inconclusive}/limit "
        f"{gate.inconclusive_limit}, consecutive errors {run.consecutive_errors}/limit {gate.consecutive_error_limit}"
    )
