"""Every state round-trips through JSON mid-rollout, and a restarted controller resumes at the
same step."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from dspex.pipelines.rollouts import (
    Action,
    CanaryTest,
    CanaryTestResult,
    DeployVersion,
    EmitTelemetry,
    MetricsSnapshot,
    MoveAlias,
    NotifyWebhook,
    Pause,
    Phase,
    RollingUpdate,
    RolloutSpec,
    RolloutState,
    RunCanaryTest,
    ScaleDown,
    SetWeights,
    ShadowPairs,
    StartShadow,
    StopShadow,
    Strategy,
    VersionMetrics,
    Webhook,
    action_from_dict,
    error_rate,
    non_inferiority,
    p95_latency,
    reconcile,
    start_rollout,
)
from dspex.pipelines.rollouts.simulate import (
    Driver,
    ManualClock,
    SyntheticTraffic,
    VersionBehaviour,
)

from dspex.errors import ValidationError

T0 = 10_000.0
CHAMP, CANARY = 1, 2


def always(champion: Sequence[float], canary: Sequence[float], margin: float, kind: str) -> bool:
    return len(canary) >= 200


def driver(strategy: Strategy, persist: bool, error: float = 0.0) -> Driver:
    spec = RolloutSpec(
        strategy=strategy,
        gates=(error_rate(0.05, failure_limit=1), p95_latency(1000))
        + ((non_inferiority(0.05, test=always),) if strategy is Strategy.CANARY else ()),
        webhooks=(Webhook(name="ops", url="https://hooks.example/ops"),),
        threshold=2,
        scale_down_delay_s=60,
    )
    state = start_rollout(spec, program="qa", canary=CANARY, champion=CHAMP, now=T0)
    bad_later = lambda t: error if t >= T0 + 200 else 0.0  # noqa: E731
    traffic = SyntheticTraffic(
        rps=10,
        behaviours={CHAMP: VersionBehaviour(), CANARY: VersionBehaviour(error_rate=bad_later)},
        shadow=True,
        preview_share=0.5,
    )
    return Driver(
        state, ManualClock(T0), traffic, tick_s=10.0, persist=persist, non_inferiority_test=always
    )


@pytest.mark.parametrize("strategy", [Strategy.CANARY, Strategy.BLUE_GREEN, Strategy.IMMEDIATE])
@pytest.mark.parametrize("error", [0.0, 0.5])
def test_every_state_round_trips_and_persisting_changes_nothing(
    strategy: Strategy, error: float
) -> None:
    plain, stored = (
        driver(strategy, persist=False, error=error),
        driver(strategy, persist=True, error=error),
    )
    phases: set[Phase] = set()
    while not plain.state.phase.terminal:
        for d in (plain, stored):
            d.clock.advance(d.tick_s)
            d.tick()
        text = json.dumps(plain.state.to_dict())  # JSON-able, nothing left out
        assert RolloutState.from_dict(json.loads(text), non_inferiority_test=always) == plain.state
        assert stored.state == plain.state
        phases.add(plain.state.phase)
    assert plain.actions == stored.actions
    assert len(phases) >= 2


def test_a_restarted_controller_resumes_at_the_same_step() -> None:
    first = driver(Strategy.CANARY, persist=True)
    first.run(until_s=T0 + 160)  # step 3 (25 %) was entered at T0 + 130
    assert (first.state.step_index, first.state.weight) == (2, 25.0)
    stored = json.dumps(first.state.to_dict())
    del first  # the controller dies

    loaded = RolloutState.from_dict(json.loads(stored), non_inferiority_test=always)
    clock = ManualClock(T0 + 175)  # it comes back 15 s later
    second = Driver(
        loaded,
        clock,
        driver(Strategy.CANARY, persist=True).traffic,
        tick_s=10.0,
        non_inferiority_test=always,
    )
    assert reconcile(loaded) == [
        DeployVersion(version=CANARY),
        SetWeights({CHAMP: 75.0, CANARY: 25.0}),
        StartShadow(champion=CHAMP, canary=CANARY),
        MoveAlias(alias="canary", version=CANARY),
    ]
    second.weights = dict(SetWeights({CHAMP: 75.0, CANARY: 25.0}).weights)
    second.tick()
    assert second.state.step_index == 2  # the interval counts from the stored analysis time
    clock.advance(15)  # T0 + 190 = last analysis (T0 + 130) + 60
    second.tick()
    assert (second.state.step_index, second.state.weight) == (3, 50.0)
    end = second.run()
    assert end.phase is Phase.SUCCEEDED


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (
            lambda: start_rollout(
                RolloutSpec(), program="qa", canary=CANARY, champion=CHAMP, now=T0
            ),
            [],
        ),
        (
            "paused",
            [
                DeployVersion(version=CANARY),
                SetWeights({CHAMP: 95.0, CANARY: 5.0}),
                MoveAlias(alias="canary", version=CANARY),
            ],
        ),
        (
            "rolled_back",
            [
                SetWeights({CHAMP: 100.0, CANARY: 0.0}),
                MoveAlias(alias="champion", version=CHAMP),
                MoveAlias(alias="canary", version=None),
            ],
        ),
        (
            "succeeded",
            [
                SetWeights({CHAMP: 0.0, CANARY: 100.0}),
                MoveAlias(alias="champion", version=CANARY),
                MoveAlias(alias="canary", version=None),
            ],
        ),
        ("rolling", [RollingUpdate(version=CANARY), MoveAlias(alias="canary", version=CANARY)]),
        (
            "preview",
            [
                DeployVersion(version=CANARY, preview=True),
                SetWeights({CHAMP: 100.0, CANARY: 0.0}),
                MoveAlias(alias="canary", version=CANARY),
            ],
        ),
    ],
)
def test_reconcile_reasserts_what_the_state_says(setup: Any, expected: list[Action]) -> None:
    from dspex.pipelines.rollouts import Abort, Promote, Tick, step

    def fresh(strategy: Strategy = Strategy.CANARY) -> RolloutState:
        s = start_rollout(
            RolloutSpec(strategy=strategy), program="qa", canary=CANARY, champion=CHAMP, now=T0
        )
        return step(s, Tick(), None, T0)[0]

    if callable(setup):
        state = setup()
    elif setup == "paused":
        state = step(fresh(), Pause(), None, T0 + 1)[0]
    elif setup == "rolled_back":
        state = step(fresh(), Abort(), None, T0 + 1)[0]
    elif setup == "succeeded":
        state = step(step(fresh(), Promote(full=True), None, T0 + 1)[0], Tick(), None, T0 + 2)[0]
    elif setup == "rolling":
        state = fresh(Strategy.ROLLING)
    else:
        state = fresh(Strategy.BLUE_GREEN)
    assert reconcile(state) == expected


def test_canary_test_phase_round_trips() -> None:
    spec = RolloutSpec(canary_test=CanaryTest(devset="dev", min_score=0.5))
    d = Driver(
        start_rollout(spec, program="qa", canary=CANARY, champion=CHAMP, now=T0), ManualClock(T0)
    )
    d.tick()
    assert d.state.phase is Phase.CANARY_TEST
    d.send(CanaryTestResult(version=CANARY, score=0.7, examples=30))
    assert d.state.canary_test_score == 0.7 and d.state.phase is Phase.PROGRESSING


CORRUPT: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "no phase": (lambda d: d.pop("phase"), "phase"),
    "unknown phase": (lambda d: d.update(phase="exploding"), "phase"),
    "step as text": (lambda d: d.update(step_index="2"), "step_index"),
    "weight missing": (lambda d: d.pop("weight"), "weight"),
    "not a dict": (lambda d: d.update(spec=[1, 2]), "<root>"),
    "bad gate run": (lambda d: d.update(gate_runs=[{"gate": "x"}]), "count"),
    "bad flag": (lambda d: d.update(skip_analysis="yes"), "skip_analysis"),
}


@pytest.mark.parametrize("case", CORRUPT.values(), ids=CORRUPT.keys())
def test_a_corrupt_stored_state_is_refused_naming_the_field(
    case: tuple[Callable[[dict[str, Any]], Any], str],
) -> None:
    d = driver(Strategy.CANARY, persist=False)
    d.run(until_s=T0 + 100)
    data = json.loads(json.dumps(d.state.to_dict()))
    mutate, field = case
    mutate(data)
    with pytest.raises(ValidationError) as info:
        RolloutState.from_dict(data)
    assert info.value.field == field


def test_every_action_round_trips() -> None:
    actions: list[Action] = [
        DeployVersion(version=3, preview=True),
        SetWeights({1: 90.0, 3: 10.0}),
        RunCanaryTest(version=3, devset="dev", min_score=0.7, max_examples=20),
        StartShadow(champion=1, canary=3),
        StopShadow(champion=1, canary=3),
        MoveAlias(alias="champion", version=None),
        RollingUpdate(version=3),
        ScaleDown(version=1),
        NotifyWebhook(
            webhook="ops", url="https://h.example", event="promoted", payload={"weight": 100.0}
        ),
        EmitTelemetry(
            event=("dspex", "rollout", "tick"),
            measurements={"weight": 5.0},
            metadata={"program": "qa"},
        ),
    ]
    for action in actions:
        assert action_from_dict(json.loads(json.dumps(action.to_dict()))) == action
    with pytest.raises(ValidationError, match="must be one of"):
        action_from_dict({"action": "reboot"})
    with pytest.raises(ValidationError, match="not a version number"):
        action_from_dict({"action": "set_weights", "weights": {"one": 100.0}})


def test_snapshots_round_trip() -> None:
    snap = MetricsSnapshot(
        taken_at=5.0,
        window_start_s=1.0,
        versions={
            1: VersionMetrics(
                executions=10, errors=1, latency_p95_ms=12.5, scores={"acc": 0.5}, scored=10
            )
        },
        shadow=ShadowPairs(
            champion=1, canary=2, champion_scores=(1.0, 0.0), canary_scores=(1.0, 1.0)
        ),
        rolling_progress=0.5,
        collection_error="partial",
    )
    assert MetricsSnapshot.from_dict(json.loads(json.dumps(snap.to_dict()))) == snap
