"""The pure parts of a hot swap: rolling metrics, the health check, the rollout state machine."""

from __future__ import annotations

import pytest
from dspex.actors import (
    HealthPolicy,
    MetricsView,
    Phase,
    RollingMetrics,
    RolloutPlan,
    Verdict,
    assess,
)
from dspex.actors import rollout as machine
from dspex.actors.health import HealthReport
from dspex.actors.metrics import Outcome

from dspex.errors import ConfigurationError, InvalidTransition


class Clock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# -- rolling metrics ----------------------------------------------------------------------------
def test_window_counts_and_percentiles() -> None:
    clock = Clock()
    m = RollingMetrics(bucket_s=1.0, horizon_s=60.0, clock=clock)
    for i in range(100):  # latencies 10..1000 ms, one per 0.1 s
        m.record(Outcome.ERROR if i % 10 == 0 else Outcome.SUCCESS, (i + 1) / 100.0)
        clock.t += 0.1
    m.record(Outcome.REJECTED)
    view = m.window(5.0)  # the last 5 s: i = 50..99 (plus the bucket edge)
    assert 50 <= view.count <= 60
    whole = m.window(None)
    assert (whole.count, whole.errors, whole.rejected) == (100, 10, 1)
    assert whole.error_rate == pytest.approx(0.1)
    assert whole.p50_ms == pytest.approx(500, rel=0.03)
    assert whole.p99_ms == pytest.approx(990, rel=0.03)
    assert whole.throughput_per_s == pytest.approx(100 / 10.0, rel=0.02)
    # old buckets leave the window
    clock.t += 30
    assert m.window(5.0).count == 0
    with pytest.raises(ValueError, match="Unknown outcome"):
        m.record("maybe", 0.1)
    with pytest.raises(ValueError, match="positive"):
        m.window(0)


def test_views_merge_and_round_trip() -> None:
    clock = Clock()
    a, b = RollingMetrics(clock=clock), RollingMetrics(clock=clock)
    for _ in range(30):
        a.record(Outcome.SUCCESS, 0.1)
        b.record(Outcome.ERROR, 0.3)
    clock.t += 2
    merged = MetricsView.merged([MetricsView.from_dict(a.window(10).to_dict()), MetricsView.from_dict(b.window(10).to_dict())])
    assert (merged.count, merged.errors) == (60, 30)
    assert merged.p50_ms is not None and 95 < merged.p50_ms < 305
    assert merged.p99_ms == pytest.approx(300, rel=0.02)


# -- the health check ---------------------------------------------------------------------------
def view(count: int, errors: int = 0, latency_s: float = 0.1, span_s: float = 10.0) -> MetricsView:
    v = MetricsView(span_s, count=count, errors=errors)
    for _ in range(count):
        v.latency.add(latency_s)
    return v


POLICY = HealthPolicy(min_samples=10, max_error_rate=0.05, max_latency_ratio=1.5, min_latency_delta_ms=20)


def test_health_verdicts() -> None:
    assert assess(view(5), view(100), 10, POLICY).verdict is Verdict.INSUFFICIENT
    assert assess(view(50), view(450), 10, POLICY).verdict is Verdict.HEALTHY
    bad = assess(view(50, errors=10), view(450), 10, POLICY)
    assert bad.verdict is Verdict.UNHEALTHY and "error rate 20.0%" in bad.reasons[0]
    slow = assess(view(50, latency_s=0.4), view(450, latency_s=0.1), 10, POLICY)
    assert slow.verdict is Verdict.UNHEALTHY and "p95 latency" in slow.reasons[0]
    # a ratio breach smaller than min_latency_delta_ms is noise
    assert assess(view(50, latency_s=0.010), view(450, latency_s=0.002), 10, POLICY).healthy
    # 10 % of traffic but only 1 % of the executions: it does not keep up
    starved = assess(view(11, span_s=10), view(990, span_s=10), 10, POLICY)
    assert starved.verdict is Verdict.UNHEALTHY and "throughput" in starved.reasons[0]
    # no baseline to compare with: only the error rate counts
    assert assess(view(50, latency_s=5.0), None, 100, POLICY).healthy


def test_health_policy_validation() -> None:
    with pytest.raises(ConfigurationError):
        HealthPolicy(max_error_rate=1.5)
    with pytest.raises(ConfigurationError):
        HealthPolicy(max_latency_ratio=0.5)
    with pytest.raises(ConfigurationError):
        HealthPolicy(min_samples=0)


# -- the rollout machine ------------------------------------------------------------------------
HEALTHY = HealthReport(Verdict.HEALTHY)
SICK = HealthReport(Verdict.UNHEALTHY, ("error rate 50.0% above 5.0%",))
UNKNOWN = HealthReport(Verdict.INSUFFICIENT, ("too few",))


def test_plan_validation() -> None:
    assert RolloutPlan().steps == (5.0, 10.0, 25.0, 50.0, 100.0)
    for bad in [(), (10, 50), (50, 10, 100), (0, 100), (10, 10, 100), (10, 150)]:
        with pytest.raises(ConfigurationError):
            RolloutPlan(steps=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        RolloutPlan(failure_threshold=0)


def test_first_version_and_immediate_swap_complete_at_once() -> None:
    first = machine.start(None, 1, RolloutPlan(), 0.0)
    assert first.phase is Phase.COMPLETE and first.weights == {1: 100.0}
    swap = machine.start(1, 2, RolloutPlan.immediate(), 0.0)
    assert swap.phase is Phase.COMPLETE and swap.weights == {1: 0.0, 2: 100.0}


def test_steps_advance_only_when_healthy_and_the_step_time_is_up() -> None:
    plan = RolloutPlan(steps=(5, 25, 100), step_s=10.0)
    s = machine.start(1, 2, plan, 0.0)
    assert s.phase is Phase.ROLLING and s.weights == {1: 95.0, 2: 5.0}
    s = machine.tick(s, 5.0, HEALTHY)
    assert s.weight == 5.0  # healthy, but the step lasts 10 s
    s = machine.tick(s, 10.0, UNKNOWN)
    assert s.weight == 5.0  # time is up but too few executions to judge: hold
    s = machine.tick(s, 12.0, HEALTHY)
    assert s.weight == 25.0 and s.step_started_s == 12.0
    s = machine.tick(s, 22.0, HEALTHY)
    assert s.phase is Phase.COMPLETE and s.weights == {1: 0.0, 2: 100.0} and s.finished_s == 22.0
    assert machine.tick(s, 30.0, SICK) is s  # a finished rollout does not move


def test_unhealthy_checks_in_a_row_roll_back() -> None:
    s = machine.start(1, 2, RolloutPlan(failure_threshold=2, step_s=1.0), 0.0)
    s = machine.tick(s, 0.5, SICK)
    assert s.phase is Phase.ROLLING and s.failed_checks == 1
    s = machine.tick(s, 0.7, HEALTHY)
    assert s.failed_checks == 0  # only consecutive failures count
    s = machine.tick(s, 0.8, SICK)
    s = machine.tick(s, 0.9, SICK)
    assert s.phase is Phase.ROLLED_BACK and s.weights == {1: 100.0, 2: 0.0}
    assert "error rate 50.0%" in s.reason


def test_without_auto_rollback_a_sick_step_holds() -> None:
    s = machine.start(1, 2, RolloutPlan(auto_rollback=False, step_s=0.0), 0.0)
    for t in range(5):
        s = machine.tick(s, float(t), SICK)
    assert s.phase is Phase.ROLLING and s.weight == 5.0 and s.failed_checks == 5


def test_max_hold_rolls_back_a_version_that_gets_no_traffic() -> None:
    s = machine.start(1, 2, RolloutPlan(step_s=10.0, max_hold_s=5.0), 0.0)
    s = machine.tick(s, 14.0, UNKNOWN)
    assert s.phase is Phase.ROLLING
    s = machine.tick(s, 15.0, UNKNOWN)
    assert s.phase is Phase.ROLLED_BACK and "not enough executions" in s.reason


def test_manual_control_promote_pause_resume() -> None:
    plan = RolloutPlan(steps=(5, 10, 25, 50, 100), step_s=60.0)
    s = machine.start(1, 2, plan, 0.0)
    s = machine.promote(s, 1.0)
    assert s.weight == 10.0
    s = machine.pause(s, 2.0, 30.0)
    assert s.phase is Phase.MANUAL and s.weights == {1: 70.0, 2: 30.0}
    assert machine.tick(s, 100.0, SICK) is s  # no auto stepping or rollback by hand
    s2 = machine.promote(s, 3.0)
    assert s2.phase is Phase.ROLLING and s2.weight == 50.0  # the first step above 30 %
    s3 = machine.resume(s, 4.0)
    assert s3.phase is Phase.ROLLING and s3.weight == 25.0 and s3.step_started_s == 4.0
    done = machine.promote(s3, 5.0, full=True)
    assert done.phase is Phase.COMPLETE and done.weight == 100.0


def test_invalid_transitions_say_what_is_allowed() -> None:
    done = machine.start(None, 1, RolloutPlan(), 0.0)
    with pytest.raises(InvalidTransition, match="Cannot promote a rollout that is complete") as err:
        machine.promote(done, 1.0)
    assert err.value.allowed == ()
    rolling = machine.start(1, 2, RolloutPlan(), 0.0)
    with pytest.raises(InvalidTransition, match="allowed actions are: pause, promote, rollback, tick"):
        machine.resume(rolling, 1.0)
    back = machine.rollback(rolling, 1.0)
    with pytest.raises(InvalidTransition):
        machine.rollback(back, 2.0)
