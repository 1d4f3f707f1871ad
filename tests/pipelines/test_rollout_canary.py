"""The canary strategy tick by tick, as Flagger's scheduler tests drive theirs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from dspex.pipelines.rollouts import (
    Action,
    DeployVersion,
    EmitTelemetry,
    MetricsSnapshot,
    MissingData,
    MoveAlias,
    NewVersion,
    NotifyWebhook,
    Phase,
    RolloutSpec,
    RolloutState,
    ScaleDown,
    SetWeights,
    Tick,
    VersionMetrics,
    Webhook,
    error_rate,
    p95_latency,
    start_rollout,
    step,
)
from dspex.pipelines.rollouts.simulate import (
    Driver,
    ManualClock,
    SyntheticTraffic,
    VersionBehaviour,
)

from dspex import telemetry

T0 = 1_000.0
CHAMP, CANARY = 1, 2


def live(actions: list[Action]) -> list[Action]:
    """The actions that change something (telemetry left out)."""
    return [a for a in actions if not isinstance(a, EmitTelemetry)]


def snap(
    now: float, executions: int = 100, errors: int = 0, p95_ms: float = 200.0
) -> MetricsSnapshot:
    return MetricsSnapshot(
        taken_at=now,
        versions={
            CANARY: VersionMetrics(executions=executions, errors=errors, latency_p95_ms=p95_ms),
            CHAMP: VersionMetrics(executions=1000, errors=0, latency_p95_ms=200.0),
        },
    )


def new_state(**spec: Any) -> RolloutState:
    spec.setdefault("gates", (error_rate(0.05), p95_latency(1000)))
    return start_rollout(RolloutSpec(**spec), program="qa", canary=CANARY, champion=CHAMP, now=T0)


def test_healthy_canary_is_promoted_through_every_step_tick_by_tick() -> None:
    state = new_state()
    state, actions = step(state, Tick(), None, T0)
    assert state.phase is Phase.PROGRESSING and (state.step_index, state.weight) == (0, 5.0)
    assert live(actions) == [
        DeployVersion(version=CANARY),
        SetWeights({CHAMP: 100.0, CANARY: 0.0}),
        MoveAlias(alias="canary", version=CANARY),
        SetWeights({CHAMP: 95.0, CANARY: 5.0}),
    ]
    now = T0
    for index, weight in enumerate((10.0, 25.0, 50.0, 100.0), start=1):
        # ticks inside the interval analyse nothing and move nothing
        for dt in (10.0, 30.0, 59.0):
            same, acts = step(state, Tick(), snap(now + dt), now + dt)
            assert same == state and live(acts) == []
        now += 60.0
        state, actions = step(state, Tick(), snap(now), now)
        assert (state.phase, state.step_index, state.weight) == (Phase.PROGRESSING, index, weight)
        assert live(actions) == [SetWeights({CHAMP: 100.0 - weight, CANARY: weight})]
        assert state.window_start_s == now and state.last_analysis_at == now
        assert [r.count for r in state.gate_runs] == [index, index]
    now += 60.0
    state, actions = step(state, Tick(), snap(now), now)
    assert state.phase is Phase.PROMOTING
    assert live(actions) == [
        SetWeights({CHAMP: 0.0, CANARY: 100.0}),
        MoveAlias(alias="champion", version=CANARY),
        MoveAlias(alias="canary", version=None),
    ]
    state, actions = step(state, Tick(), None, now + 10)
    assert state.phase is Phase.SUCCEEDED and state.finished_at == now + 10
    assert live(actions) == [ScaleDown(version=CHAMP)]
    assert state.failed_checks == 0
    # a finished rollout ignores ticks
    assert step(state, Tick(), None, now + 20) == (state, [])
    assert [t.to_phase for t in state.history] == [
        Phase.PROGRESSING,
        Phase.PROMOTING,
        Phase.SUCCEEDED,
    ]


def fault_at(t_fault: float, rate: float = 0.3) -> Callable[[float], float]:
    return lambda t: rate if t >= t_fault else 0.0


@pytest.mark.parametrize("threshold", [1, 2, 3])
@pytest.mark.parametrize("interval_s", [60.0, 30.0])
@pytest.mark.parametrize("fault_after_intervals", [0.0, 1.25, 2.2, 3.4])
def test_a_failing_canary_is_rolled_back_within_interval_x_threshold_plus_interval(
    threshold: int, interval_s: float, fault_after_intervals: float
) -> None:
    clock = ManualClock(T0)
    state = new_state(interval_s=interval_s, threshold=threshold, progress_deadline_s=600)
    t_fault = T0 + fault_after_intervals * interval_s  # from step 1 at 5 % up to step 4 at 50 %
    traffic = SyntheticTraffic(
        rps=20,
        behaviours={
            CHAMP: VersionBehaviour(),
            CANARY: VersionBehaviour(error_rate=fault_at(t_fault)),
        },
    )
    driver = Driver(state, clock, traffic, tick_s=5.0)
    checks: list[int] = []
    while not driver.state.phase.terminal:
        clock.advance(driver.tick_s)
        driver.tick()
        checks.append(driver.state.failed_checks)
    end = driver.state
    assert end.phase is Phase.ROLLED_BACK
    assert end.finished_at is not None
    assert end.finished_at - t_fault <= interval_s * threshold + interval_s
    assert end.failed_checks == threshold
    assert sorted(set(checks)) == list(range(threshold + 1))  # one failed check at a time
    assert driver.weights == {CHAMP: 100.0, CANARY: 0.0}
    assert isinstance(driver.actions[-1][1], EmitTelemetry)
    assert driver.of_kind(ScaleDown) == [ScaleDown(version=CANARY)]
    assert MoveAlias(alias="canary", version=None) in driver.of_kind(MoveAlias)
    assert "error_rate" in end.message


def test_a_transient_fault_costs_one_check_not_the_rollout() -> None:
    clock = ManualClock(T0)
    blip = lambda t: 0.5 if T0 + 70 <= t < T0 + 125 else 0.0  # noqa: E731
    traffic = SyntheticTraffic(
        rps=20, behaviours={CHAMP: VersionBehaviour(), CANARY: VersionBehaviour(error_rate=blip)}
    )
    driver = Driver(new_state(threshold=2), clock, traffic, tick_s=10.0)
    end = driver.run()
    assert end.phase is Phase.SUCCEEDED
    assert end.failed_checks == 1
    assert [s for s in (t.step_index for t in end.history)] == [0, 4, 4]


def test_low_traffic_canary_waits_instead_of_failing() -> None:
    clock = ManualClock(T0)
    traffic = SyntheticTraffic(
        rps=1.0, behaviours={CHAMP: VersionBehaviour(), CANARY: VersionBehaviour(error_rate=0.0)}
    )
    driver = Driver(new_state(), clock, traffic, tick_s=10.0)
    driver.run(until_s=T0 + 300)
    # 5 % of 1 call/s is 3 calls a minute, under min_executions=20: hold step 0, no failed check
    assert driver.state.phase is Phase.PROGRESSING and driver.state.step_index == 0
    assert driver.state.failed_checks == 0
    assert "waiting for data" in driver.state.message
    assert driver.state.window_start_s == T0 + 10  # the window keeps growing while it waits
    # traffic picks up: the accumulated window reaches 20 calls and the canary moves on
    traffic.rps = 10.0
    driver.run(until_s=T0 + 400)
    assert driver.state.step_index >= 1 and driver.state.failed_checks == 0


def test_flaggers_no_data_means_fail_is_available_as_a_policy() -> None:
    clock = ManualClock(T0)
    traffic = SyntheticTraffic(
        rps=1.0, behaviours={CHAMP: VersionBehaviour(), CANARY: VersionBehaviour()}
    )
    state = new_state(gates=(error_rate(0.05, missing_data=MissingData.FAIL),))
    end = Driver(state, clock, traffic, tick_s=10.0).run()
    assert end.phase is Phase.ROLLED_BACK and end.failed_checks == 2
    assert "no data" in end.message


def test_progress_deadline_fails_a_rollout_that_never_gets_data() -> None:
    clock = ManualClock(T0)
    traffic = SyntheticTraffic(
        rps=0.0, behaviours={CHAMP: VersionBehaviour(), CANARY: VersionBehaviour()}
    )
    driver = Driver(new_state(progress_deadline_s=300), clock, traffic, tick_s=10.0)
    end = driver.run()
    assert end.phase is Phase.FAILED
    assert end.finished_at is not None
    # entered step 0 at T0 + 10; the first tick past 300 s without progress ends it
    assert end.finished_at == T0 + 10 + 310
    assert "progress deadline 300 s" in end.message and "waiting for data" in end.message
    assert driver.weights == {CHAMP: 100.0, CANARY: 0.0}


def test_progress_resets_the_deadline_at_every_step() -> None:
    clock = ManualClock(T0)
    traffic = SyntheticTraffic(
        rps=20, behaviours={CHAMP: VersionBehaviour(), CANARY: VersionBehaviour()}
    )
    # five steps of 100 s each take 500 s in all, longer than the 150 s deadline: still fine
    end = Driver(
        new_state(interval_s=100, progress_deadline_s=150), clock, traffic, tick_s=10
    ).run()
    assert end.phase is Phase.SUCCEEDED


def test_a_new_version_mid_rollout_restarts_from_step_0() -> None:
    clock = ManualClock(T0)
    traffic = SyntheticTraffic(
        rps=20,
        behaviours={
            CHAMP: VersionBehaviour(),
            CANARY: VersionBehaviour(error_rate=0.2),
            3: VersionBehaviour(),
        },
    )
    driver = Driver(new_state(threshold=5), clock, traffic, tick_s=10.0)
    driver.run(until_s=T0 + 80)
    assert driver.state.step_index == 0 and driver.state.failed_checks == 1
    clock.advance(5)
    actions = live(driver.send(NewVersion(version=3)))
    s = driver.state
    assert (s.canary, s.phase, s.step_index, s.weight) == (3, Phase.PROGRESSING, 0, 5.0)
    assert (s.failed_checks, s.gate_runs, s.restarts, s.superseded) == (0, (), 1, (CANARY,))
    assert actions == [
        SetWeights({CHAMP: 100.0, CANARY: 0.0}),
        MoveAlias(alias="canary", version=None),
        ScaleDown(version=CANARY),
        DeployVersion(version=3),
        SetWeights({CHAMP: 100.0, 3: 0.0}),
        MoveAlias(alias="canary", version=3),
        SetWeights({CHAMP: 95.0, 3: 5.0}),
    ]
    # the same submission delivered again changes nothing
    assert driver.send(NewVersion(version=3)) == [] and driver.state == s
    end = driver.run()
    assert end.phase is Phase.SUCCEEDED and end.canary == 3
    assert MoveAlias(alias="champion", version=3) in driver.of_kind(MoveAlias)


def test_missing_snapshot_counts_as_metric_errors() -> None:
    state = new_state(threshold=1)
    state, _ = step(state, Tick(), None, T0)
    now = T0
    for i in range(4):  # Argo's default consecutive error limit is 4: hold
        now += 60
        state, _ = step(state, Tick(), None, now)
        assert state.phase is Phase.PROGRESSING and state.failed_checks == 0, i
        assert "no metrics snapshot" in state.message
    now += 60
    state, _ = step(state, Tick(), None, now)
    assert state.phase is Phase.ROLLED_BACK
    assert "consecutive errors 5/limit 4" in state.message


def test_telemetry_gauges_follow_the_rollout() -> None:
    seen: list[tuple[tuple[str, ...], dict[str, Any], dict[str, Any]]] = []
    events = [("dspex", "rollout", "tick"), ("dspex", "rollout", "transition")]
    telemetry.attach_many(
        "test-rollout-gauges", events, lambda e, m, md, c: seen.append((e, m, md))
    )
    try:
        clock = ManualClock(T0)
        traffic = SyntheticTraffic(
            rps=20,
            behaviours={
                CHAMP: VersionBehaviour(),
                CANARY: VersionBehaviour(error_rate=fault_at(T0 + 100)),
            },
        )
        driver = Driver(new_state(), clock, traffic, tick_s=10.0)
        driver.run()
        for _, action in driver.actions:
            if isinstance(action, EmitTelemetry):
                action.emit()
    finally:
        telemetry.detach("test-rollout-gauges")
    ticks = [(m["weight"], m["phase"], m["failed_checks"]) for e, m, _ in seen if e[-1] == "tick"]
    assert ticks[0] == (5.0, float(Phase.PROGRESSING.code), 0.0)
    assert (10.0, float(Phase.PROGRESSING.code), 1.0) in ticks
    assert ticks[-1] == (0.0, float(Phase.ROLLED_BACK.code), 2.0)
    transitions = [(md["from"], md["to"]) for e, _, md in seen if e[-1] == "transition"]
    assert transitions == [("initializing", "progressing"), ("progressing", "rolled_back")]
    assert all(md["program"] == "qa" and md["version"] == CANARY for _, _, md in seen)


def test_webhooks_are_notified_on_their_events_only() -> None:
    hook = Webhook(
        name="chat", url="https://hooks.example/r", events=("step", "promoted", "succeeded")
    )
    clock = ManualClock(T0)
    traffic = SyntheticTraffic(
        rps=20, behaviours={CHAMP: VersionBehaviour(), CANARY: VersionBehaviour()}
    )
    slack = Webhook(
        name="slack", url_env="SLACK_HOOK_URL", events=("succeeded",), secret_env="SIGN"
    )
    state = new_state(webhooks=(hook, slack), step_weights=(20, 100))
    driver = Driver(state, clock, traffic, tick_s=10)
    driver.run()
    notes = [n for n in driver.of_kind(NotifyWebhook) if isinstance(n, NotifyWebhook)]
    assert [(n.webhook, n.event) for n in notes] == [
        ("chat", "step"),
        ("chat", "step"),
        ("chat", "promoted"),
        ("chat", "succeeded"),
        ("slack", "succeeded"),
    ]
    # a secret URL travels as the name of its environment variable, never as the URL
    assert (notes[-1].url, notes[-1].url_env, notes[-1].secret_env) == (
        None,
        "SLACK_HOOK_URL",
        "SIGN",
    )
    last = notes[-2]
    assert isinstance(last, NotifyWebhook) and last.url == hook.url and last.webhook == "chat"
    assert last.payload["program"] == "qa" and last.payload["version"] == CANARY
    assert last.payload["phase"] == "succeeded" and last.payload["weight"] == 100.0
