"""Manual controls: promote (step / full), pause, resume, abort, retry, skip analysis, new
version; and every illegal use refused with an error that names the phase."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import pytest
from dspex.pipelines.rollouts import (
    Abort,
    Action,
    CanaryTest,
    CanaryTestResult,
    Condition,
    EmitTelemetry,
    Event,
    Gate,
    MetricsSnapshot,
    MoveAlias,
    NewVersion,
    Pause,
    Phase,
    Promote,
    Resume,
    Retry,
    RolloutSpec,
    RolloutState,
    ScaleDown,
    SetWeights,
    SkipAnalysis,
    Strategy,
    Tick,
    VersionMetrics,
    allowed_actions,
    error_rate,
    event_from_dict,
    start_rollout,
    step,
)

from dspex.errors import DeploymentError, InvalidTransition, ValidationError

T0 = 0.0
CHAMP, CANARY = 1, 2


def live(actions: list[Action]) -> list[Action]:
    return [a for a in actions if not isinstance(a, EmitTelemetry)]


def snap(now: float, errors: int = 0, executions: int = 100) -> MetricsSnapshot:
    return MetricsSnapshot(
        taken_at=now, versions={CANARY: VersionMetrics(executions=executions, errors=errors)}
    )


def at_step(index: int, **spec: Any) -> RolloutState:
    """A canary rollout that has passed ``index`` analyses: step ``index`` at T0 + 60 * index."""
    spec.setdefault("gates", (error_rate(0.05),))
    state = start_rollout(RolloutSpec(**spec), program="qa", canary=CANARY, champion=CHAMP, now=T0)
    state, _ = step(state, Tick(), None, T0)
    for i in range(index):
        state, _ = step(state, Tick(), snap(T0 + 60 * (i + 1)), T0 + 60 * (i + 1))
    assert state.step_index == index
    return state


def test_promote_one_step_and_full() -> None:
    state = at_step(1)
    stepped, actions = step(state, Promote(), None, 70.0)
    assert (stepped.phase, stepped.step_index, stepped.weight) == (Phase.PROGRESSING, 2, 25.0)
    assert live(actions) == [SetWeights({CHAMP: 75.0, CANARY: 25.0})]
    assert stepped.window_start_s == 70.0 and stepped.last_analysis_at == 70.0
    full, actions = step(state, Promote(full=True), None, 70.0)
    assert full.phase is Phase.PROMOTING and full.weight == 100.0
    assert SetWeights({CHAMP: 0.0, CANARY: 100.0}) in actions
    last, _ = step(
        at_step(4), Promote(), None, 250.0
    )  # promoting the last step finishes the rollout
    assert last.phase is Phase.PROMOTING


def test_pause_holds_everything_and_resume_starts_a_fresh_window() -> None:
    state = at_step(1)
    paused, actions = step(state, Pause(reason="investigating"), None, 70.0)
    assert paused.phase is Phase.PAUSED and paused.paused_from is Phase.PROGRESSING
    assert live(actions) == []  # traffic stays where it is
    # far past the interval and the progress deadline: a paused rollout neither analyses nor fails
    later, actions = step(paused, Tick(), snap(5_000.0, errors=90), 5_000.0)
    assert later == paused and live(actions) == []
    resumed, _ = step(paused, Resume(), None, 5_000.0)
    assert (resumed.phase, resumed.step_index, resumed.paused_from) == (Phase.PROGRESSING, 1, None)
    assert resumed.progress_at == resumed.window_start_s == resumed.last_analysis_at == 5_000.0
    nxt, _ = step(resumed, Tick(), snap(5_060.0), 5_060.0)
    assert nxt.step_index == 2
    # promote while paused: unpause and move on
    moved, _ = step(paused, Promote(), None, 80.0)
    assert (moved.phase, moved.step_index) == (Phase.PROGRESSING, 2)
    assert [t.to_phase for t in moved.history][-2:] == [Phase.PAUSED, Phase.PROGRESSING]


def test_an_inconclusive_gate_pauses_for_a_human_and_resume_resets_its_count() -> None:
    banded = Gate(
        name="band", metric="error_rate", success=Condition("<=", 0.02), failure=Condition(">", 0.2)
    )
    state = at_step(0, gates=(banded,))
    paused, _ = step(state, Tick(), snap(60.0, errors=5), 60.0)
    assert paused.phase is Phase.PAUSED and "band inconclusive" in paused.message
    resumed, _ = step(paused, Resume(), None, 100.0)
    assert resumed.gate_runs[0].inconclusive == 0
    again, _ = step(resumed, Tick(), snap(160.0, errors=1), 160.0)
    assert again.phase is Phase.PROGRESSING and again.step_index == 1


@pytest.mark.parametrize("index", [0, 2])
def test_abort_restores_the_champion(index: int) -> None:
    aborted, actions = step(at_step(index), Abort(reason="bad answers reported"), None, 500.0)
    assert aborted.phase is Phase.ABORTED and aborted.message == "bad answers reported"
    assert aborted.weight == 0.0 and aborted.finished_at == 500.0
    assert live(actions) == [
        SetWeights({CHAMP: 100.0, CANARY: 0.0}),
        MoveAlias(alias="canary", version=None),
        ScaleDown(version=CANARY),
    ]


def test_abort_while_paused_and_before_anything_was_deployed() -> None:
    paused, _ = step(at_step(1), Pause(), None, 70.0)
    aborted, actions = step(paused, Abort(), None, 80.0)
    assert aborted.phase is Phase.ABORTED and aborted.paused_from is None
    assert SetWeights({CHAMP: 100.0, CANARY: 0.0}) in actions
    fresh = start_rollout(RolloutSpec(), program="qa", canary=CANARY, champion=CHAMP, now=T0)
    aborted, actions = step(fresh, Abort(), None, 1.0)
    assert aborted.phase is Phase.ABORTED and live(actions) == []


@pytest.mark.parametrize("how", ["abort", "rollback", "fail"])
def test_retry_starts_again_from_the_beginning(how: str) -> None:
    state = at_step(2, threshold=1)
    if how == "abort":
        ended, _ = step(state, Abort(), None, 130.0)
        assert ended.phase is Phase.ABORTED
    elif how == "rollback":
        ended, _ = step(state, Tick(), snap(180.0, errors=50), 180.0)
        assert ended.phase is Phase.ROLLED_BACK
    else:
        ended, _ = step(state, Tick(), snap(1_000.0, executions=0), 1_000.0)
        assert ended.phase is Phase.FAILED
    retried, _ = step(ended, Retry(), None, 2_000.0)
    assert retried.phase is Phase.INITIALIZING and retried.attempts == 2
    assert (retried.step_index, retried.weight, retried.failed_checks, retried.gate_runs) == (
        -1,
        0.0,
        0,
        (),
    )
    assert retried.finished_at is None and retried.progress_at == 2_000.0
    running, actions = step(retried, Tick(), None, 2_000.0)
    assert (running.phase, running.step_index) == (Phase.PROGRESSING, 0)
    assert SetWeights({CHAMP: 95.0, CANARY: 5.0}) in actions


def test_skip_analysis_promotes_a_failing_canary_on_the_operators_word() -> None:
    state, _ = step(at_step(0), SkipAnalysis(), None, 10.0)
    assert state.skip_analysis
    now = 10.0
    while state.phase is Phase.PROGRESSING:
        now += 60
        state, _ = step(state, Tick(), snap(now, errors=100), now)
    assert state.phase is Phase.PROMOTING and state.failed_checks == 0 and state.gate_runs == ()


def test_new_version_equal_to_the_champion_is_refused() -> None:
    with pytest.raises(DeploymentError, match="is the champion already"):
        step(at_step(1), NewVersion(version=CHAMP), None, 70.0)


# -- illegal controls: the error names the phase and what it allows -----------------------------


def reach(phase: Phase) -> RolloutState:
    if phase is Phase.INITIALIZING:
        return start_rollout(RolloutSpec(), program="qa", canary=CANARY, champion=CHAMP, now=T0)
    if phase is Phase.CANARY_TEST:
        state = start_rollout(
            RolloutSpec(canary_test=CanaryTest(devset="d", min_score=0.5)),
            program="qa",
            canary=CANARY,
            champion=CHAMP,
            now=T0,
        )
        return step(state, Tick(), None, T0)[0]
    if phase is Phase.PROGRESSING:
        return at_step(1)
    if phase is Phase.PAUSED:
        return step(at_step(1), Pause(), None, 70.0)[0]
    if phase is Phase.PREVIEW:
        state = start_rollout(
            RolloutSpec(strategy=Strategy.BLUE_GREEN),
            program="qa",
            canary=CANARY,
            champion=CHAMP,
            now=T0,
        )
        return step(state, Tick(), None, T0)[0]
    if phase is Phase.ROLLING:
        state = start_rollout(
            RolloutSpec(strategy=Strategy.ROLLING),
            program="qa",
            canary=CANARY,
            champion=CHAMP,
            now=T0,
        )
        return step(state, Tick(), None, T0)[0]
    if phase is Phase.PROMOTING:
        return step(at_step(1), Promote(full=True), None, 70.0)[0]
    if phase is Phase.SCALE_DOWN_DELAY:
        state = step(reach(Phase.PREVIEW), Promote(), None, 10.0)[0]
        return step(state, Tick(), None, 11.0)[0]
    if phase is Phase.SUCCEEDED:
        return step(reach(Phase.PROMOTING), Tick(), None, 80.0)[0]
    if phase is Phase.ROLLED_BACK:
        return step(at_step(1, threshold=1), Tick(), snap(120.0, errors=50), 120.0)[0]
    if phase is Phase.ABORTED:
        return step(at_step(1), Abort(), None, 70.0)[0]
    state = step(reach(Phase.CANARY_TEST), CanaryTestResult(version=CANARY, score=0.1), None, 5.0)[
        0
    ]
    assert phase is Phase.FAILED
    return state


EVENTS: dict[str, Callable[[], Event]] = {
    "promote": Promote,
    "pause": Pause,
    "resume": Resume,
    "abort": Abort,
    "retry": Retry,
    "skip_analysis": SkipAnalysis,
    "new_version": lambda: NewVersion(version=3),
    "canary_test_result": lambda: CanaryTestResult(version=CANARY, score=0.9),
}

ALLOWED = {
    Phase.INITIALIZING: {"abort", "new_version", "skip_analysis"},
    Phase.CANARY_TEST: {"abort", "new_version", "skip_analysis", "canary_test_result"},
    Phase.PROGRESSING: {"abort", "new_version", "skip_analysis", "pause", "promote"},
    Phase.PREVIEW: {"abort", "new_version", "skip_analysis", "pause", "promote"},
    Phase.ROLLING: {"abort", "new_version", "skip_analysis", "pause"},
    Phase.PAUSED: {"abort", "new_version", "skip_analysis", "resume", "promote"},
    Phase.PROMOTING: {"abort"},
    Phase.SCALE_DOWN_DELAY: {"abort", "promote"},
    Phase.SUCCEEDED: set(),
    Phase.FAILED: {"retry"},
    Phase.ROLLED_BACK: {"retry"},
    Phase.ABORTED: {"retry"},
}


@pytest.mark.parametrize("phase", list(Phase), ids=[p.value for p in Phase])
def test_every_control_in_every_phase(phase: Phase) -> None:
    state = reach(phase)
    assert state.phase is phase
    assert set(allowed_actions(state)) == ALLOWED[phase]
    for name, make in EVENTS.items():
        if name in ALLOWED[phase]:
            new, _ = step(state, make(), None, 1_000.0)
            assert new != state or name == "skip_analysis"
            continue
        with pytest.raises(InvalidTransition) as info:
            step(state, make(), None, 1_000.0)
        err = info.value
        assert err.state == phase.value and err.event == name and err.machine == "rollout"
        assert set(err.allowed) == ALLOWED[phase]
        assert f"Cannot {name} a rollout that is {phase.value}" in err.message
        assert pickle.loads(pickle.dumps(err)).message == err.message


def test_paused_from_rolling_cannot_be_promoted() -> None:
    paused, _ = step(reach(Phase.ROLLING), Pause(), None, 10.0)
    assert "promote" not in allowed_actions(paused)
    with pytest.raises(InvalidTransition, match="that is paused"):
        step(paused, Promote(), None, 11.0)


def test_scale_down_delay_promote_finishes_at_once() -> None:
    done, actions = step(reach(Phase.SCALE_DOWN_DELAY), Promote(), None, 12.0)
    assert done.phase is Phase.SUCCEEDED and ScaleDown(version=CHAMP) in actions


def test_events_parse_from_json_dicts() -> None:
    assert event_from_dict({"event": "promote", "full": True}) == Promote(full=True)
    assert event_from_dict({"event": "new_version", "version": 4}) == NewVersion(version=4)
    assert event_from_dict(Abort(reason="x").to_dict()) == Abort(reason="x")
    with pytest.raises(ValidationError, match="must be one of"):
        event_from_dict({"event": "explode"})
    with pytest.raises(ValidationError, match="do not fit a promote event"):
        event_from_dict({"event": "promote", "fully": True})
    with pytest.raises(ValidationError):
        event_from_dict(["promote"])
    with pytest.raises(ValidationError, match="'version'"):
        event_from_dict({"event": "new_version", "version": "4"})
    with pytest.raises(ValidationError, match="'full'"):
        event_from_dict({"event": "promote", "full": "yes"})
    with pytest.raises(ValidationError, match="'score'"):
        event_from_dict({"event": "canary_test_result", "version": 2, "score": "high"})
