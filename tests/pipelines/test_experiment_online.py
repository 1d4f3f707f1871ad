"""OnlineExperiment: sticky assignment, SRM, sequential verdicts, guardrails, replicas."""

from __future__ import annotations

import numpy as np
import pytest
from dspex.pipelines.experiments.online import OnlineExperiment
from dspex.pipelines.experiments.online_stats import ArmSummary, Guardrail, OnlinePlan

from dspex.errors import ExperimentError

BINARY = OnlinePlan(
    primary_metric="success", primary_kind="binary", min_units_per_arm=100, tuning_n=4000
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def feed(
    exp: OnlineExperiment,
    rng: np.random.Generator,
    units: range,
    rates: dict[str, float],
    **extra: dict[str, float],
) -> None:
    """Each unit gets its sticky arm and a pass/fail outcome at that arm's rate."""
    for i in units:
        key = f"user-{i}"
        arm = exp.assign(key)
        metrics = {"success": float(rng.random() < rates[arm])}
        for metric, by_arm in extra.items():
            metrics[metric] = by_arm[arm] + rng.normal(0, 5.0)
        exp.record(key, metrics)


def test_assignment_is_sticky_weighted_and_the_same_on_every_replica() -> None:
    a = OnlineExperiment("exp-w", {"control": 0.2, "treatment": 0.8}, BINARY)
    b = OnlineExperiment("exp-w", {"control": 0.2, "treatment": 0.8}, BINARY)
    keys = [f"u{i}" for i in range(5000)]
    arms = [a.assign(k) for k in keys]
    assert arms == [b.assign(k) for k in keys] == [a.assign(k) for k in keys]
    share = arms.count("treatment") / len(arms)
    assert abs(share - 0.8) < 0.02
    other = OnlineExperiment("exp-other", {"control": 0.2, "treatment": 0.8}, BINARY)
    assert [other.assign(k) for k in keys] != arms  # each experiment has its own salt


def test_a_clear_winner_is_found_and_the_final_verdict_is_kept() -> None:
    clock = Clock()
    exp = OnlineExperiment("exp-win", {"control": 1, "treatment": 1}, BINARY, clock=clock)
    rng = np.random.default_rng(3)
    feed(exp, rng, range(0, 100), {"control": 0.5, "treatment": 0.7})
    assert exp.verdict().status == "collecting"
    status = "collecting"
    start = 100
    while status in ("collecting", "continue") and start < 6000:
        feed(exp, rng, range(start, start + 100), {"control": 0.5, "treatment": 0.7})
        start += 100
        clock.now += 60
        status = exp.verdict().status
    final = exp.verdict()
    assert final.status == "winner" and final.winner == "treatment"
    assert exp.final is final and exp.final_at_s == clock.now
    comp = final.comparisons[0]
    assert comp.sequential.low > 0 and comp.decision == "better"
    assert not final.srm.flagged and exp.mismatched == 0
    # Later data cannot un-stop a stopped experiment.
    feed(exp, rng, range(start, start + 200), {"control": 0.7, "treatment": 0.5})
    assert exp.verdict() is final


def test_peeking_at_aa_experiments_rarely_declares_a_winner() -> None:
    false_winners = 0
    for run in range(40):
        exp = OnlineExperiment(f"aa-{run}", {"control": 1, "treatment": 1}, BINARY)
        rng = np.random.default_rng(run)
        for start in range(0, 1200, 100):  # twelve looks
            feed(exp, rng, range(start, start + 100), {"control": 0.5, "treatment": 0.5})
            if exp.verdict().status in ("winner", "control_wins"):
                false_winners += 1
                break
    assert false_winners <= 4  # <= 10% with alpha 0.05, however often one looks


@pytest.mark.parametrize("injection", ["fallback_to_control", "lost_logging"])
def test_an_srm_from_skewed_assignment_is_flagged_and_blocks_the_verdict(injection: str) -> None:
    exp = OnlineExperiment("exp-srm", {"control": 0.5, "treatment": 0.5}, BINARY)
    rng = np.random.default_rng(11)
    for i in range(10_000):
        key = f"user-{i}"
        arm = exp.assign(key)
        outcome = {"success": float(rng.random() < (0.65 if arm == "treatment" else 0.5))}
        if arm == "treatment" and rng.random() < 0.12:
            if injection == "fallback_to_control":
                exp.record(key, outcome, arm="control")  # the serving path fell back
            continue  # lost_logging: the treatment's record never arrives
        exp.record(key, outcome)
    verdict = exp.verdict()
    assert verdict.srm.checked and verdict.srm.flagged and verdict.srm.p_value < 0.001
    assert verdict.status == "invalid" and verdict.winner is None
    assert "Sample ratio mismatch" in verdict.message
    assert (exp.mismatched > 0) == (injection == "fallback_to_control")


def test_a_healthy_split_is_not_flagged() -> None:
    exp = OnlineExperiment("exp-ok", {"control": 0.5, "treatment": 0.5}, BINARY)
    feed(exp, np.random.default_rng(5), range(4000), {"control": 0.5, "treatment": 0.5})
    srm = exp.verdict().srm
    assert srm.checked and not srm.flagged
    assert sum(exp.units().values()) == 4000


def test_guardrails_stop_a_treatment_that_is_better_but_slow() -> None:
    plan = OnlinePlan(
        primary_metric="success",
        primary_kind="binary",
        min_units_per_arm=100,
        tuning_n=4000,
        guardrails=(Guardrail("latency_ms", max_increase=20.0),),
    )
    exp = OnlineExperiment("exp-guard", {"control": 1, "treatment": 1}, plan)
    feed(
        exp,
        np.random.default_rng(2),
        range(1000),
        {"control": 0.5, "treatment": 0.55},
        latency_ms={"control": 400.0, "treatment": 480.0},
    )
    verdict = exp.verdict()
    assert verdict.status == "guardrail_breached"
    (guard,) = verdict.guardrails
    assert (
        guard.metric == "latency_ms"
        and guard.status == "breached"
        and guard.degradation == pytest.approx(80, abs=3)
    )


def test_fixed_horizon_mode_uses_welch_or_the_z_test() -> None:
    for kind, test in (("mean", "welch-t"), ("binary", "two-proportion-z")):
        plan = OnlinePlan(
            primary_metric="success", primary_kind=kind, mode="fixed", planned_units_per_arm=300
        )  # type: ignore[arg-type]
        exp = OnlineExperiment(f"fixed-{kind}", {"control": 1, "treatment": 1}, plan)
        feed(exp, np.random.default_rng(9), range(400), {"control": 0.5, "treatment": 0.5})
        assert exp.verdict().status == "collecting"  # below the planned size no test is read
        feed(exp, np.random.default_rng(10), range(400, 1400), {"control": 0.5, "treatment": 0.5})
        verdict = exp.verdict()
        comp = verdict.comparisons[0]
        assert comp.fixed is not None and comp.fixed.test == test
        assert verdict.status in ("no_difference", "winner", "control_wins")


def test_replicas_merge_to_the_same_summaries_and_snapshots_restore() -> None:
    whole = OnlineExperiment("exp-m", {"control": 1, "treatment": 1}, BINARY)
    r1 = OnlineExperiment("exp-m", {"control": 1, "treatment": 1}, BINARY)
    r2 = OnlineExperiment("exp-m", {"control": 1, "treatment": 1}, BINARY)
    feed(whole, np.random.default_rng(4), range(600), {"control": 0.4, "treatment": 0.6})
    feed(r1, np.random.default_rng(4), range(300), {"control": 0.4, "treatment": 0.6})
    rng = np.random.default_rng(4)
    for _ in range(300):  # the same draws r1 consumed, so r2 continues the same stream
        rng.random()
    feed(r2, rng, range(300, 600), {"control": 0.4, "treatment": 0.6})
    r1.merge(r2.snapshot())
    assert r1.units() == whole.units()
    for arm in ("control", "treatment"):
        a, b = r1.summaries()[arm]["success"], whole.summaries()[arm]["success"]
        assert a.n == b.n and a.mean == pytest.approx(b.mean) and a.m2 == pytest.approx(b.m2)
    restored = OnlineExperiment.from_snapshot(r1.snapshot())
    assert restored.units() == whole.units()
    assert restored.verdict().status == whole.verdict().status
    with pytest.raises(ExperimentError, match="Cannot merge"):
        r1.merge(OnlineExperiment("other", {"control": 1, "treatment": 1}, BINARY).snapshot())


def test_bad_input_is_refused_with_clear_errors() -> None:
    with pytest.raises(ExperimentError, match="at least one treatment"):
        OnlineExperiment("x", {"only": 1.0}, BINARY)
    with pytest.raises(ExperimentError, match="not among the arms"):
        OnlineExperiment("x", {"a": 1, "b": 1}, BINARY, control="c")
    with pytest.raises(ExperimentError, match="weights must be finite"):
        OnlineExperiment("x", {"a": -1, "b": 1}, BINARY)
    with pytest.raises(ExperimentError, match="OnlinePlan"):
        OnlineExperiment("x", {"a": 1, "b": 1}, {"primary_metric": "s"})  # type: ignore[arg-type]
    exp = OnlineExperiment("x", {"a": 1, "b": 1}, BINARY)
    with pytest.raises(ExperimentError, match="not an arm"):
        exp.record("u", {"success": 1.0}, arm="c")
    with pytest.raises(ExperimentError, match="must be a number"):
        exp.record("u", {"success": "yes"})  # type: ignore[dict-item]
    with pytest.raises(ExperimentError, match="at least one metric"):
        exp.record("u", {})
    with pytest.raises(ExperimentError, match="not a finite number"):
        exp.record("u", {"success": float("nan")})
    # a refused record changes nothing
    assert exp.units() == {"a": 0, "b": 0} and exp.summaries() == {"a": {}, "b": {}}
    exp.record("u", {"success": True})
    arm = exp.assign("u")
    assert exp.units()[arm] == 1 and exp.summaries()[arm]["success"] == ArmSummary(1, 1.0, 0.0)
