"""Gate semantics, table-driven (Argo Rollouts' analysis_test.go is the model)."""

from __future__ import annotations

import math
import pickle
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest
from dspex.pipelines.rollouts import (
    Condition,
    Gate,
    GateRun,
    GateStatus,
    Measurement,
    MeasurementPhase,
    MetricsSnapshot,
    MissingData,
    NonInferiorityGate,
    Outcome,
    ShadowPairs,
    VersionMetrics,
    analyze,
    assess,
    cost_per_call,
    error_rate,
    gate_from_dict,
    minimum_executions,
    non_inferiority,
    p95_latency,
    performance_threshold,
    success_rate,
)
from scipy import stats

from dspex.errors import ValidationError

P = MeasurementPhase
CHAMP, CANARY = 1, 2


def snap(
    canary: VersionMetrics | None = None, champion: VersionMetrics | None = None, **kw: object
) -> MetricsSnapshot:
    versions = {}
    if canary is not None:
        versions[CANARY] = canary
    if champion is not None:
        versions[CHAMP] = champion
    return MetricsSnapshot(taken_at=100.0, versions=versions, **kw)  # type: ignore[arg-type]


def vm(executions: int = 100, errors: int = 0, **kw: object) -> VersionMetrics:
    return VersionMetrics(executions=executions, errors=errors, **kw)  # type: ignore[arg-type]


def measure(gate: Gate, snapshot: MetricsSnapshot) -> Measurement:
    return gate.measure(snapshot, champion=CHAMP, canary=CANARY, now=100.0)


# -- one measurement: Argo's success / failure condition table ---------------------------------


@pytest.mark.parametrize(
    ("success", "failure", "errors", "expected"),
    [
        (Condition("<=", 0.05), None, 1, P.SUCCESSFUL),
        (Condition("<=", 0.05), None, 10, P.FAILED),
        (None, Condition(">", 0.2), 10, P.SUCCESSFUL),
        (None, Condition(">", 0.2), 30, P.FAILED),
        (Condition("<=", 0.05), Condition(">", 0.2), 1, P.SUCCESSFUL),
        (Condition("<=", 0.05), Condition(">", 0.2), 10, P.INCONCLUSIVE),
        (Condition("<=", 0.05), Condition(">", 0.2), 30, P.FAILED),
        # both hold: failure wins
        (Condition("<=", 0.5), Condition(">=", 0.3), 40, P.FAILED),
        (Condition("<", 0.1), None, 10, P.FAILED),  # strict comparison at the boundary
        (Condition(">=", 0.1), None, 10, P.SUCCESSFUL),
    ],
)
def test_conditions_decide_the_measurement(
    success: Condition | None, failure: Condition | None, errors: int, expected: MeasurementPhase
) -> None:
    gate = Gate(name="err", metric="error_rate", success=success, failure=failure)
    m = measure(gate, snap(vm(100, errors)))
    assert m.phase is expected
    assert m.value == pytest.approx(errors / 100)
    assert m.gate == "err" and m.at == 100.0
    assert "error_rate" in m.message


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (MissingData.WAIT, P.PENDING),
        (MissingData.INCONCLUSIVE, P.INCONCLUSIVE),
        (MissingData.FAIL, P.FAILED),
    ],
)
@pytest.mark.parametrize(
    ("snapshot", "why"),
    [
        (snap(vm(5, 0)), "only 5 executions of version 2, need 20"),
        (snap(None), "only 0 executions of version 2, need 20"),
        (snap(vm(100, 0)), "latency_p95_ms of version 2 was not reported"),
    ],
)
def test_missing_data_follows_the_gates_policy(
    policy: MissingData, expected: MeasurementPhase, snapshot: MetricsSnapshot, why: str
) -> None:
    gate = p95_latency(1000, missing_data=policy)
    m = measure(gate, snapshot)
    assert m.phase is expected
    assert m.value is None
    assert why in m.message


def test_default_missing_data_policy_is_wait_and_min_executions_20() -> None:
    gate = error_rate(0.05)
    assert gate.missing_data is MissingData.WAIT
    assert (gate.failure_limit, gate.inconclusive_limit, gate.consecutive_error_limit) == (0, 0, 4)
    assert (
        measure(gate, snap(vm(19, 19))).phase is P.PENDING
    )  # 100 % errors, but too few calls to judge
    assert measure(gate, snap(vm(20, 19))).phase is P.FAILED


def test_collection_error_is_an_error_measurement() -> None:
    m = measure(error_rate(0.05), snap(vm(100, 0), collection_error="prometheus timed out"))
    assert m.phase is P.ERROR
    assert "prometheus timed out" in m.message


def test_non_finite_value_is_an_error() -> None:
    m = measure(p95_latency(1000), snap(vm(100, 0, latency_p95_ms=math.nan)))
    assert m.phase is P.ERROR


@pytest.mark.parametrize(
    ("canary_ms", "champion_ms", "expected", "value"),
    [
        (300.0, 200.0, P.FAILED, 1.5),
        (220.0, 200.0, P.SUCCESSFUL, 1.1),
        (220.0, None, P.PENDING, None),
    ],
)
def test_relative_to_champion(
    canary_ms: float, champion_ms: float | None, expected: MeasurementPhase, value: float | None
) -> None:
    gate = Gate(
        name="lat", metric="latency_p95_ms", success=Condition("<=", 1.2), relative_to_champion=True
    )
    champion = None if champion_ms is None else vm(100, 0, latency_p95_ms=champion_ms)
    m = measure(gate, snap(vm(100, 0, latency_p95_ms=canary_ms), champion))
    assert m.phase is expected
    assert m.value == (None if value is None else pytest.approx(value))


@pytest.mark.parametrize(
    ("gate", "metrics", "expected"),
    [
        (
            performance_threshold("accuracy", 0.8),
            vm(50, 0, scores={"accuracy": 0.83}, scored=50),
            P.SUCCESSFUL,
        ),
        (
            performance_threshold("accuracy", 0.8),
            vm(50, 0, scores={"accuracy": 0.71}, scored=50),
            P.FAILED,
        ),
        (
            performance_threshold("accuracy", 0.8),
            vm(50, 0, scores={"f1": 0.9}, scored=50),
            P.PENDING,
        ),
        (minimum_executions(200), vm(150, 0), P.PENDING),
        (minimum_executions(200), vm(200, 0), P.SUCCESSFUL),
        (success_rate(0.95), vm(100, 4), P.SUCCESSFUL),
        (success_rate(0.95), vm(100, 6), P.FAILED),
        (p95_latency(5000), vm(100, 0, latency_p95_ms=5200.0), P.FAILED),
        (cost_per_call(0.002), vm(100, 0, cost_per_call_usd=0.0015), P.SUCCESSFUL),
        (cost_per_call(0.002), vm(100, 0, cost_per_call_usd=0.003), P.FAILED),
    ],
)
def test_built_in_gates(gate: Gate, metrics: VersionMetrics, expected: MeasurementPhase) -> None:
    assert measure(gate, snap(metrics)).phase is expected


# -- a gate's run over several ticks: Argo's assessMetricStatus --------------------------------


@dataclass
class RunCase:
    limits: dict[str, int]
    phases: Sequence[MeasurementPhase]
    status: GateStatus


RUN_CASES = {
    "one failure over limit 0": RunCase({}, [P.FAILED], GateStatus.FAILED),
    "failures within limit 2": RunCase(
        {"failure_limit": 2}, [P.FAILED, P.FAILED], GateStatus.RUNNING
    ),
    "failures over limit 2": RunCase(
        {"failure_limit": 2}, [P.FAILED, P.SUCCESSFUL, P.FAILED, P.FAILED], GateStatus.FAILED
    ),
    "inconclusive within limit 1": RunCase(
        {"inconclusive_limit": 1}, [P.INCONCLUSIVE], GateStatus.RUNNING
    ),
    "inconclusive over limit 1": RunCase(
        {"inconclusive_limit": 1}, [P.INCONCLUSIVE, P.INCONCLUSIVE], GateStatus.INCONCLUSIVE
    ),
    "errors within consecutive limit": RunCase(
        {"consecutive_error_limit": 2}, [P.ERROR, P.ERROR], GateStatus.RUNNING
    ),
    "errors over consecutive limit": RunCase(
        {"consecutive_error_limit": 2}, [P.ERROR] * 3, GateStatus.ERROR
    ),
    "a success resets consecutive errors": RunCase(
        {"consecutive_error_limit": 2},
        [P.ERROR, P.ERROR, P.SUCCESSFUL, P.ERROR, P.ERROR],
        GateStatus.RUNNING,
    ),
    "default consecutive error limit is 4": RunCase({}, [P.ERROR] * 4, GateStatus.RUNNING),
    "five errors over the default": RunCase({}, [P.ERROR] * 5, GateStatus.ERROR),
    "failed ranks before inconclusive": RunCase({}, [P.INCONCLUSIVE, P.FAILED], GateStatus.FAILED),
    "pending is never counted": RunCase({}, [P.PENDING] * 10, GateStatus.RUNNING),
}


@pytest.mark.parametrize("case", RUN_CASES.values(), ids=RUN_CASES.keys())
def test_gate_run_assessment(case: RunCase) -> None:
    gate = error_rate(0.05, **case.limits)
    run = GateRun(gate=gate.name)
    for i, phase in enumerate(case.phases):
        run = run.record(
            Measurement(gate=gate.name, phase=phase, value=None, message="", at=float(i))
        )
    assert assess(gate, run) is case.status
    counted = [p for p in case.phases if p is not P.PENDING]
    assert run.count == len(counted)
    assert run.failed == counted.count(P.FAILED)
    assert run.inconclusive == counted.count(P.INCONCLUSIVE)
    assert run.errors == counted.count(P.ERROR)
    assert run.last is not None and run.last.phase is case.phases[-1]


# -- folding gates into a tick's outcome -------------------------------------------------------


def test_analyze_outcomes() -> None:
    lenient = error_rate(0.05, failure_limit=1)
    good, bad = snap(vm(100, 1)), snap(vm(100, 30))

    first = analyze([lenient], [], bad, champion=CHAMP, canary=CANARY, now=1.0)
    assert first.outcome is Outcome.HOLD  # a failure within the gate's limit holds the step
    assert not first.waiting
    second = analyze([lenient], first.runs, bad, champion=CHAMP, canary=CANARY, now=2.0)
    assert second.outcome is Outcome.FAIL
    assert "failed 2/limit 1" in second.reason
    # the gate stays Failed (Argo), but a tick whose measurement passed is not a failed check
    third = analyze([lenient], second.runs, good, champion=CHAMP, canary=CANARY, now=3.0)
    assert third.outcome is Outcome.PASS
    assert assess(lenient, third.runs[0]) is GateStatus.FAILED

    waiting = analyze([minimum_executions(500)], [], good, champion=CHAMP, canary=CANARY, now=1.0)
    assert waiting.outcome is Outcome.HOLD and waiting.waiting

    flaky = Gate(
        name="f", metric="error_rate", success=Condition("<=", 0.05), failure=Condition(">", 0.2)
    )
    paused = analyze([flaky], [], snap(vm(100, 10)), champion=CHAMP, canary=CANARY, now=1.0)
    assert paused.outcome is Outcome.PAUSE

    # FAIL wins over PAUSE and HOLD in the same tick
    mixed = analyze(
        [flaky, error_rate(0.01, name="strict"), minimum_executions(500)],
        [],
        snap(vm(100, 10)),
        champion=CHAMP,
        canary=CANARY,
        now=1.0,
    )
    assert mixed.outcome is Outcome.FAIL and "strict" in mixed.reason

    assert analyze([], [], good, champion=CHAMP, canary=CANARY, now=1.0).outcome is Outcome.PASS


# -- non-inferiority on paired shadow traffic --------------------------------------------------


def paired_t_non_inferiority(
    champion: Sequence[float], canary: Sequence[float], margin: float, kind: str
) -> dict[str, object]:
    """A simple test of our own (H0: mean(canary - champion) <= -margin), one-sided at 5 %."""
    d = np.asarray(canary, dtype=float) - np.asarray(champion, dtype=float)
    result = stats.ttest_1samp(d, -margin, alternative="greater")
    return {"non_inferior": bool(result.pvalue < 0.05), "p_value": float(result.pvalue)}


def bernoulli_pairs(p_champion: float, p_canary: float, n: int, seed: int = 7) -> ShadowPairs:
    rng = np.random.default_rng(seed)
    return ShadowPairs(
        champion=CHAMP,
        canary=CANARY,
        champion_scores=tuple(float(x) for x in rng.random(n) < p_champion),
        canary_scores=tuple(float(x) for x in rng.random(n) < p_canary),
    )


def ni_gate(**kw: object) -> NonInferiorityGate:
    return non_inferiority(0.05, test=paired_t_non_inferiority, min_pairs=30, **kw)  # type: ignore[arg-type]


def test_non_inferiority_accepts_an_equal_version() -> None:
    m = measure(ni_gate(), snap(shadow=bernoulli_pairs(0.8, 0.8, 2000)))
    assert m.phase is P.SUCCESSFUL, m.message
    assert "non-inferior" in m.message and "p = " in m.message


def test_non_inferiority_rejects_a_version_10pp_worse() -> None:
    m = measure(ni_gate(), snap(shadow=bernoulli_pairs(0.8, 0.7, 2000)))
    assert m.phase is P.FAILED, m.message
    assert m.value is not None and m.value < -0.05


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (MissingData.WAIT, P.PENDING),
        (MissingData.INCONCLUSIVE, P.INCONCLUSIVE),
        (MissingData.FAIL, P.FAILED),
    ],
)
def test_non_inferiority_without_enough_evidence_follows_the_policy(
    policy: MissingData, expected: MeasurementPhase
) -> None:
    small = bernoulli_pairs(0.8, 0.78, 40, seed=3)  # within the margin, too few pairs to show it
    m = measure(ni_gate(missing_data=policy), snap(shadow=small))
    assert m.phase is expected, m.message
    too_few = measure(ni_gate(missing_data=policy), snap(shadow=bernoulli_pairs(0.8, 0.8, 10)))
    assert too_few.phase is expected and "only 10 paired shadow results, need 30" in too_few.message


def test_non_inferiority_needs_pairs_for_these_versions() -> None:
    other = ShadowPairs(
        champion=CHAMP, canary=9, champion_scores=(1.0,) * 50, canary_scores=(1.0,) * 50
    )
    assert measure(ni_gate(), snap(shadow=other)).phase is P.PENDING
    assert measure(ni_gate(), snap()).phase is P.PENDING


def test_non_inferiority_test_results_and_failures() -> None:
    pairs = snap(shadow=bernoulli_pairs(0.8, 0.8, 100))

    @dataclass
    class Result:
        non_inferior: bool
        p_value: float

    assert measure(non_inferiority(0.05, test=lambda *a: True), pairs).phase is P.SUCCESSFUL
    assert (
        measure(non_inferiority(0.05, test=lambda *a: Result(True, 0.01)), pairs).phase
        is P.SUCCESSFUL
    )

    def boom(*args: object) -> bool:
        raise ZeroDivisionError("degenerate data")

    m = measure(non_inferiority(0.05, test=boom), pairs)
    assert m.phase is P.ERROR and "ZeroDivisionError" in m.message
    m = measure(non_inferiority(0.05, test=lambda *a: 0.03), pairs)
    assert m.phase is P.ERROR and "non_inferior" in m.message

    seen: list[tuple[int, float, str]] = []

    def spy(champion: Sequence[float], canary: Sequence[float], margin: float, kind: str) -> bool:
        seen.append((len(champion), margin, kind))
        return True

    measure(non_inferiority(0.07, kind="scored", test=spy), pairs)
    assert seen == [(100, 0.07, "scored")]


def test_non_inferiority_without_an_injected_or_installed_test_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "dspex.pipelines.experiments.stats", None)  # import now fails
    m = measure(non_inferiority(0.05), snap(shadow=bernoulli_pairs(0.8, 0.8, 100)))
    assert m.phase is P.ERROR and "pass test=" in m.message


# -- construction and persistence --------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Condition("==", 1.0), "op"),
        (lambda: Condition("<", math.inf), "threshold"),
        (lambda: Gate(name="x", metric="error_rate"), "success"),
        (lambda: Gate(name="", metric="error_rate", success=Condition("<", 1)), "name"),
        (lambda: Gate(name="x", metric="throughput", success=Condition("<", 1)), "metric"),
        (lambda: Gate(name="x", metric="score:", success=Condition("<", 1)), "metric"),
        (lambda: error_rate(0.05, failure_limit=-1), "failure_limit"),
        (lambda: error_rate(0.05, consecutive_error_limit=1.5), "consecutive_error_limit"),
        (lambda: error_rate(0.05, missing_data="ignore"), None),
        (lambda: non_inferiority(-0.1), "margin"),
        (lambda: non_inferiority(0.05, kind="ordinal"), "test_kind"),
        (lambda: non_inferiority(0.05, alpha=0.7), "alpha"),
        (lambda: VersionMetrics(executions=5, errors=6), "errors"),
        (lambda: VersionMetrics(executions=-1), "executions"),
        (
            lambda: ShadowPairs(champion=1, canary=2, champion_scores=(1.0,), canary_scores=()),
            "canary_scores",
        ),
        (lambda: MetricsSnapshot(taken_at=0.0, rolling_progress=1.5), "rolling_progress"),
    ],
)
def test_bad_gate_input_is_refused(build: object, field: str | None) -> None:
    with pytest.raises((ValidationError, ValueError)) as info:
        build()  # type: ignore[operator]
    if field is not None:
        assert isinstance(info.value, ValidationError) and info.value.field == field
        assert pickle.loads(pickle.dumps(info.value)).message == info.value.message


def test_unknown_metric_selector_on_read() -> None:
    with pytest.raises(ValidationError, match="Unknown metric"):
        VersionMetrics().value("throughput")


def test_gates_round_trip_through_dicts() -> None:
    gates: list[Gate] = [
        error_rate(0.05, failure_limit=2, missing_data=MissingData.FAIL),
        Gate(
            name="band",
            metric="latency_p95_ms",
            success=Condition("<=", 1.1),
            failure=Condition(">", 1.5),
            relative_to_champion=True,
            inconclusive_limit=3,
            min_executions=50,
        ),
        performance_threshold("accuracy", 0.8),
        non_inferiority(0.03, kind="scored", min_pairs=200, test=paired_t_non_inferiority),
    ]
    for gate in gates:
        back = gate_from_dict(gate.to_dict(), non_inferiority_test=paired_t_non_inferiority)
        assert back == gate and type(back) is type(gate)
    ni = gate_from_dict(gates[-1].to_dict(), non_inferiority_test=paired_t_non_inferiority)
    assert isinstance(ni, NonInferiorityGate) and ni.test is paired_t_non_inferiority
    with pytest.raises(ValidationError, match="kind"):
        gate_from_dict({**gates[0].to_dict(), "kind": "magic"})
    with pytest.raises(ValidationError, match="failure_limit"):
        gate_from_dict({**gates[0].to_dict(), "failure_limit": "two"})


def test_default_test_is_the_experiments_non_inferiority() -> None:
    """With no test injected, the gate uses dspex.pipelines.experiments.stats.non_inferiority
    (Tango's score test for binary pairs)."""
    from dspex.pipelines.experiments.stats import non_inferiority as tango

    gate = non_inferiority(0.05, min_pairs=30)
    assert gate.test is None
    equal = measure(gate, snap(shadow=bernoulli_pairs(0.8, 0.8, 2000)))
    assert equal.phase is P.SUCCESSFUL, equal.message
    worse = measure(gate, snap(shadow=bernoulli_pairs(0.8, 0.7, 2000)))
    assert worse.phase is P.FAILED, worse.message
    injected = measure(
        non_inferiority(0.05, test=tango), snap(shadow=bernoulli_pairs(0.8, 0.8, 2000))
    )
    assert injected.message == equal.message
