"""Immediate, blue-green and rolling strategies; the canary test; non-inferiority on shadow pairs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from dspex.pipelines.rollouts import (
    Abort,
    Action,
    CanaryTest,
    CanaryTestResult,
    DeployVersion,
    EmitTelemetry,
    MetricsSnapshot,
    MoveAlias,
    NewVersion,
    NonInferiorityTest,
    Phase,
    RollingUpdate,
    RolloutSpec,
    RolloutState,
    RunCanaryTest,
    ScaleDown,
    SetWeights,
    SkipAnalysis,
    StartShadow,
    StopShadow,
    Strategy,
    Tick,
    VersionMetrics,
    error_rate,
    non_inferiority,
    start_rollout,
    step,
)
from dspex.pipelines.rollouts.simulate import (
    Driver,
    ManualClock,
    SyntheticTraffic,
    VersionBehaviour,
)
from scipy import stats

T0 = 5_000.0
CHAMP, CANARY = 1, 2


def live(actions: list[Action]) -> list[Action]:
    return [a for a in actions if not isinstance(a, EmitTelemetry)]


def rollout(
    strategy: Strategy, champion: int | None = CHAMP, recent: Sequence[int] = (), **spec: Any
) -> RolloutState:
    spec.setdefault("gates", (error_rate(0.05),))
    return start_rollout(
        RolloutSpec(strategy=strategy, **spec),
        program="qa",
        canary=CANARY,
        champion=champion,
        now=T0,
        recent_versions=recent,
    )


def healthy(
    now: float, executions: int = 100, errors: int = 0, progress: float | None = None
) -> MetricsSnapshot:
    return MetricsSnapshot(
        taken_at=now,
        versions={CANARY: VersionMetrics(executions=executions, errors=errors)},
        rolling_progress=progress,
    )


# -- immediate ---------------------------------------------------------------------------------


def test_immediate_is_one_step_to_100() -> None:
    state, actions = step(rollout(Strategy.IMMEDIATE), Tick(), None, T0)
    assert state.phase is Phase.PROMOTING and state.weight == 100.0
    assert live(actions) == [
        DeployVersion(version=CANARY),
        SetWeights({CHAMP: 100.0, CANARY: 0.0}),
        MoveAlias(alias="canary", version=CANARY),
        SetWeights({CHAMP: 0.0, CANARY: 100.0}),
        MoveAlias(alias="champion", version=CANARY),
        MoveAlias(alias="canary", version=None),
    ]
    state, actions = step(state, Tick(), None, T0 + 1)
    assert state.phase is Phase.SUCCEEDED and live(actions) == [ScaleDown(version=CHAMP)]


def test_first_version_deploys_immediately_without_a_champion() -> None:
    state, actions = step(rollout(Strategy.IMMEDIATE, champion=None), Tick(), None, T0)
    assert SetWeights({CANARY: 100.0}) in actions
    state, actions = step(state, Tick(), None, T0 + 1)
    assert state.phase is Phase.SUCCEEDED and live(actions) == []


def test_rollback_window_redeploys_without_gates_or_canary_test() -> None:
    spec: dict[str, Any] = {
        "canary_test": CanaryTest(devset="dev", min_score=0.99),
        "rollback_window": 3,
    }
    state = rollout(Strategy.CANARY, recent=(4, CANARY), **spec)
    assert state.fast_track and state.strategy is Strategy.IMMEDIATE
    state, actions = step(state, Tick(), None, T0)
    assert state.phase is Phase.PROMOTING
    assert not [a for a in actions if isinstance(a, RunCanaryTest)]
    outside = rollout(Strategy.CANARY, recent=(4, 3, 5, CANARY), **spec)
    state, actions = step(outside, Tick(), None, T0)
    assert state.phase is Phase.CANARY_TEST


# -- canary test before live traffic -----------------------------------------------------------


def test_canary_test_gates_live_traffic() -> None:
    state = rollout(
        Strategy.CANARY, canary_test=CanaryTest(devset="qa-dev", min_score=0.75, max_examples=40)
    )
    state, actions = step(state, Tick(), None, T0)
    assert state.phase is Phase.CANARY_TEST and state.weight == 0.0
    assert live(actions)[-1] == RunCanaryTest(
        version=CANARY, devset="qa-dev", min_score=0.75, max_examples=40
    )
    # ticks while the test runs change nothing
    assert step(state, Tick(), None, T0 + 30)[0] == state
    # a late answer for another version is ignored
    assert step(state, CanaryTestResult(version=9, score=0.1, examples=40), None, T0 + 31) == (
        state,
        [],
    )
    passed, actions = step(
        state, CanaryTestResult(version=CANARY, score=0.8, examples=40), None, T0 + 40
    )
    assert (
        passed.phase is Phase.PROGRESSING
        and passed.weight == 5.0
        and passed.canary_test_score == 0.8
    )
    assert SetWeights({CHAMP: 95.0, CANARY: 5.0}) in actions
    assert "canary test passed: 0.8 >= 0.75 on 40 examples" in passed.history[-1].reason

    failed, actions = step(
        state, CanaryTestResult(version=CANARY, score=0.6, examples=40), None, T0 + 40
    )
    assert failed.phase is Phase.FAILED and "0.6 < 0.75" in failed.message
    assert live(actions) == [
        SetWeights({CHAMP: 100.0, CANARY: 0.0}),
        MoveAlias(alias="canary", version=None),
        ScaleDown(version=CANARY),
    ]
    broken, _ = step(
        state, CanaryTestResult(version=CANARY, error="devset qa-dev not found"), None, T0 + 40
    )
    assert broken.phase is Phase.FAILED and "devset qa-dev not found" in broken.message
    silent, _ = step(state, CanaryTestResult(version=CANARY), None, T0 + 40)
    assert silent.phase is Phase.FAILED and "no score" in silent.message
    late, _ = step(state, Tick(), None, T0 + 601)
    assert late.phase is Phase.FAILED and "in canary_test" in late.message
    skipped, _ = step(state, SkipAnalysis(), None, T0 + 50)
    assert (
        skipped.phase is Phase.PROGRESSING and "canary test skipped" in skipped.history[-1].reason
    )


# -- blue-green --------------------------------------------------------------------------------


def blue_green_driver(canary: VersionBehaviour, **spec: Any) -> Driver:
    spec.setdefault("scale_down_delay_s", 120.0)
    traffic = SyntheticTraffic(
        rps=20, behaviours={CHAMP: VersionBehaviour(), CANARY: canary}, preview_share=0.5
    )
    return Driver(rollout(Strategy.BLUE_GREEN, **spec), ManualClock(T0), traffic, tick_s=10.0)


def test_blue_green_preview_analysis_switch_and_delayed_scale_down() -> None:
    d = blue_green_driver(VersionBehaviour())
    d.clock.advance(10)
    actions = live(d.tick())
    assert d.state.phase is Phase.PREVIEW and d.state.weight == 0.0
    assert actions[:3] == [
        DeployVersion(version=CANARY, preview=True),
        SetWeights({CHAMP: 100.0, CANARY: 0.0}),
        MoveAlias(alias="canary", version=CANARY),
    ]
    d.run(until_s=T0 + 10 + 3 * 60 - 10)
    assert d.state.phase is Phase.PREVIEW and d.state.passed_iterations == 2
    assert d.weights == {CHAMP: 100.0, CANARY: 0.0}  # no live traffic during the preview
    d.run(until_s=T0 + 10 + 3 * 60)
    assert d.state.phase is Phase.PROMOTING
    assert d.weights == {CHAMP: 0.0, CANARY: 100.0}  # the switch is instant
    d.run(until_s=T0 + 10 + 3 * 60 + 10)
    assert d.state.phase is Phase.SCALE_DOWN_DELAY and not d.of_kind(ScaleDown)
    end = d.run()
    assert end.phase is Phase.SUCCEEDED
    assert end.finished_at is not None and end.promoted_at is not None
    assert end.finished_at - end.promoted_at == 120.0
    assert d.of_kind(ScaleDown) == [ScaleDown(version=CHAMP)]


def test_blue_green_abort_after_the_switch_switches_straight_back() -> None:
    d = blue_green_driver(VersionBehaviour())
    d.run(until_s=T0 + 10 + 3 * 60 + 10)
    assert d.state.phase is Phase.SCALE_DOWN_DELAY
    actions = live(d.send(Abort(reason="customer complaints")))
    assert d.state.phase is Phase.ABORTED
    assert actions == [
        SetWeights({CHAMP: 100.0, CANARY: 0.0}),
        MoveAlias(alias="champion", version=CHAMP),
        ScaleDown(version=CANARY),
    ]


def test_blue_green_fails_pre_promotion_without_touching_live_traffic() -> None:
    d = blue_green_driver(VersionBehaviour(error_rate=0.4))
    end = d.run()
    assert end.phase is Phase.ROLLED_BACK and end.failed_checks == 2
    assert all(a.weights.get(CANARY, 0.0) == 0.0 for a in d.of_kind(SetWeights))  # type: ignore[attr-defined]


def test_blue_green_post_switch_analysis_rolls_back_while_the_old_version_is_up() -> None:
    d = blue_green_driver(
        VersionBehaviour(error_rate=lambda t: 0.4 if t >= T0 + 200 else 0.0),
        scale_down_delay_s=600.0,
    )
    end = d.run()
    assert end.phase is Phase.ROLLED_BACK and "after the switch" in end.message
    assert d.weights == {CHAMP: 100.0, CANARY: 0.0}
    assert d.of_kind(MoveAlias)[-1] == MoveAlias(alias="champion", version=CHAMP)


# -- rolling -----------------------------------------------------------------------------------


def test_rolling_update_follows_serves_replica_replacement() -> None:
    state, actions = step(rollout(Strategy.ROLLING), Tick(), None, T0)
    assert state.phase is Phase.ROLLING
    assert live(actions) == [
        MoveAlias(alias="canary", version=CANARY),
        RollingUpdate(version=CANARY),
    ]
    now = T0
    for progress in (0.25, 0.5, 1.0):
        now += 60
        state, actions = step(state, Tick(), healthy(now, progress=progress), now)
        assert state.weight == progress * 100 and state.progress_at == now
    assert state.phase is Phase.PROMOTING
    assert live(actions) == [
        MoveAlias(alias="champion", version=CANARY),
        MoveAlias(alias="canary", version=None),
    ]
    state, actions = step(state, Tick(), None, now + 10)
    assert (
        state.phase is Phase.SUCCEEDED and live(actions) == []
    )  # Serve already replaced the old replicas


def test_rolling_update_rolls_back_by_rolling_to_the_champion() -> None:
    state, _ = step(rollout(Strategy.ROLLING), Tick(), None, T0)
    state, _ = step(state, Tick(), healthy(T0 + 60, errors=30, progress=0.5), T0 + 60)
    state, actions = step(state, Tick(), healthy(T0 + 120, errors=30, progress=0.75), T0 + 120)
    assert state.phase is Phase.ROLLED_BACK
    assert live(actions) == [RollingUpdate(version=CHAMP), MoveAlias(alias="canary", version=None)]


def test_stuck_rolling_update_hits_the_progress_deadline() -> None:
    state, _ = step(rollout(Strategy.ROLLING, progress_deadline_s=300), Tick(), None, T0)
    now = T0
    while not state.phase.terminal:
        now += 30
        state, _ = step(state, Tick(), healthy(now, progress=0.5), now)
    # progress last at T0 + 30 (0 -> 50 %); the first tick more than 300 s later fails it
    assert state.phase is Phase.FAILED and now == T0 + 30 + 330
    assert "gates passed; waiting for Serve (50 % replaced)" in state.message


# -- non-inferiority on paired shadow traffic --------------------------------------------------


def paired_t(champion: Sequence[float], canary: Sequence[float], margin: float, kind: str) -> bool:
    d = np.asarray(canary) - np.asarray(champion)
    return bool(stats.ttest_1samp(d, -margin, alternative="greater").pvalue < 0.05)


def shadow_driver(canary_score: float, test: NonInferiorityTest | None = paired_t) -> Driver:
    """``test=None``: the gate's default, the experiments package's Tango score test."""
    gate = non_inferiority(0.05, min_pairs=100, test=test)
    traffic = SyntheticTraffic(
        rps=5,
        behaviours={
            CHAMP: VersionBehaviour(score=0.8),
            CANARY: VersionBehaviour(score=canary_score),
        },
        shadow=True,
    )
    state = rollout(Strategy.CANARY, gates=(error_rate(0.05), gate))
    return Driver(state, ManualClock(T0), traffic, tick_s=10.0, non_inferiority_test=test)


@pytest.mark.parametrize("test", [paired_t, None], ids=["paired-t", "default"])
def test_non_inferiority_gate_accepts_an_equal_version(test: NonInferiorityTest | None) -> None:
    d = shadow_driver(0.8, test)
    end = d.run()
    assert end.phase is Phase.SUCCEEDED, end.message
    assert d.of_kind(StartShadow) == [StartShadow(champion=CHAMP, canary=CANARY)]
    assert d.of_kind(StopShadow) == [StopShadow(champion=CHAMP, canary=CANARY)]
    assert end.failed_checks == 0


@pytest.mark.parametrize("test", [paired_t, None], ids=["paired-t", "default"])
def test_non_inferiority_gate_rejects_a_version_10pp_worse(test: NonInferiorityTest | None) -> None:
    d = shadow_driver(0.7, test)
    end = d.run()
    assert end.phase is Phase.ROLLED_BACK, end.message
    assert "non_inferiority failed: worse than the margin" in end.message
    assert d.of_kind(StopShadow) == [StopShadow(champion=CHAMP, canary=CANARY)]


def test_a_restart_moves_the_shadow_to_the_new_version() -> None:
    d = shadow_driver(0.8)
    d.run(until_s=T0 + 30)
    d.send(NewVersion(version=3))
    assert d.of_kind(StopShadow) == [StopShadow(champion=CHAMP, canary=CANARY)]
    assert d.of_kind(StartShadow)[-1] == StartShadow(champion=CHAMP, canary=3)
    assert d.state.shadow_active
