"""The rollout state machine: ``step(state, event, snapshot, now) -> (new_state, actions)``.

Pure: no clock, no I/O. The live controller calls ``step`` with a ``Tick`` every few seconds
(analysis itself happens once per ``spec.interval_s``) and with manual controls when an operator
sends them, persists the new state, then executes the actions.

Phases (Flagger's and Argo Rollouts' vocabulary)::

    initializing -> [canary_test] -> progressing (step i, weight) -> promoting -> succeeded    canary
                                  -> preview (pre-promotion analysis) -> promoting
                                     -> scale_down_delay (old kept for instant abort) -> succeeded  blue_green
                                  -> rolling (Serve replaces replicas) -> promoting -> succeeded  rolling
                                  -> promoting -> succeeded                                   immediate
    progressing | preview | rolling <-> paused         (operator, or an inconclusive gate;
                                                        paused: no analysis, no deadline)
    any live phase -> rolled_back    (threshold failed checks: traffic 100 % back on the champion)
    any live phase -> failed         (canary test failed, progress deadline passed)
    any non-final phase -> aborted   (operator);  aborted | failed | rolled_back -> initializing (retry)

Illegal controls raise ``dspex.errors.InvalidTransition`` naming the phase and what it allows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from dspex.errors import DeploymentError, InvalidTransition

from . import _phases as _p
from ._phases import Result, reconcile
from .actions import (
    Abort,
    Action,
    CanaryTestResult,
    Event,
    NewVersion,
    Pause,
    Promote,
    Resume,
    Retry,
    SkipAnalysis,
    Tick,
)
from .analysis import Outcome, analyze
from .snapshot import MetricsSnapshot
from .spec import Strategy
from .state import Phase, RolloutState

__all__ = ["allowed_actions", "reconcile", "step"]

_LIVE = (Phase.PROGRESSING, Phase.PREVIEW, Phase.ROLLING)
# phases the progress deadline applies to: waiting for data or a canary test has a limit
_DEADLINE = (Phase.CANARY_TEST, *_LIVE)
_RETRYABLE = (Phase.FAILED, Phase.ROLLED_BACK, Phase.ABORTED)


def allowed_actions(state: RolloutState) -> tuple[str, ...]:
    """The manual controls (and events) ``state`` accepts; ``tick`` is always accepted."""
    p = state.phase
    if p is Phase.SUCCEEDED:
        return ()
    if p in _RETRYABLE:
        return ("retry",)
    if p is Phase.PROMOTING:
        return ("abort",)
    if p is Phase.SCALE_DOWN_DELAY:
        return ("abort", "promote")
    base = ["abort", "new_version", "skip_analysis"]
    if p is Phase.CANARY_TEST:
        base.append("canary_test_result")
    if p in (Phase.PROGRESSING, Phase.PREVIEW):
        base += ["pause", "promote"]
    if p is Phase.ROLLING:
        base.append("pause")
    if p is Phase.PAUSED:
        base.append("resume")
        if state.paused_from in (Phase.PROGRESSING, Phase.PREVIEW):
            base.append("promote")
    return tuple(sorted(base))


def step(state: RolloutState, event: Event, snapshot: MetricsSnapshot | None, now: float) -> Result:
    """Advance ``state`` by one event at time ``now`` (seconds, the controller's clock)."""
    if isinstance(event, Tick):
        before = state
        state, actions = _tick(state, snapshot, now)
        if state is before and state.phase.terminal:
            return state, []
        return state, [*actions, _p.gauges(state)]
    if isinstance(event, CanaryTestResult) and event.version != state.canary:
        return state, []  # a late result for a superseded version: nothing to do
    if isinstance(event, NewVersion) and event.version == state.canary and not state.phase.terminal:
        return state, []  # the same submission delivered twice
    allowed = allowed_actions(state)
    if event.name not in allowed:
        raise InvalidTransition.of("rollout", state.phase.value, event.name, allowed)
    handler = _CONTROLS[type(event)]
    state, actions = handler(state, event, now)
    return state, [*actions, _p.gauges(state)]


# -- ticks -----------------------------------------------------------------------------------


def _tick(state: RolloutState, snapshot: MetricsSnapshot | None, now: float) -> Result:
    p = state.phase
    if p.terminal or p is Phase.PAUSED:
        return state, []
    if p in _DEADLINE and now - state.progress_at > state.spec.progress_deadline_s:
        return _p.end(
            state,
            Phase.FAILED,
            now,
            f"no progress for {now - state.progress_at:.0f} s in {p.value} "
            f"(progress deadline {state.spec.progress_deadline_s:g} s); last: {state.message}",
        )
    if p is Phase.INITIALIZING:
        return _p.initialize(state, now)
    if p is Phase.CANARY_TEST:
        return state, []  # the controller answers with a CanaryTestResult event
    if p is Phase.PROMOTING:
        if state.strategy is Strategy.BLUE_GREEN and state.spec.scale_down_delay_s > 0:
            return _p.goto(
                state,
                Phase.SCALE_DOWN_DELAY,
                now,
                f"switched; version {state.champion} kept for {state.spec.scale_down_delay_s:g} s",
                last_analysis_at=now,
                window_start_s=now,
            )
        return _p.succeed(state, now)
    if p is Phase.SCALE_DOWN_DELAY:
        return _scale_down_delay_tick(state, snapshot, now)
    if p is Phase.ROLLING and snapshot is not None and snapshot.rolling_progress is not None:
        weight = round(snapshot.rolling_progress * 100.0, 3)
        if weight > state.weight:  # Serve replaced more replicas: that is progress
            state = replace(state, weight=weight, progress_at=now)
    if not _analysis_due(state, now):
        return state, []
    state, outcome, reason = _run_analysis(state, snapshot, now)
    if outcome is Outcome.FAIL:
        if state.failed_checks >= state.spec.threshold:
            return _p.end(
                state, Phase.ROLLED_BACK, now, f"{state.failed_checks} failed checks: {reason}"
            )
        return replace(
            state, message=f"failed check {state.failed_checks}/{state.spec.threshold}: {reason}"
        ), []
    if outcome is Outcome.PAUSE:
        return _p.pause(state, now, reason)
    if outcome is Outcome.HOLD:
        return replace(state, message=f"holding: {reason}"), []
    return _passed(state, now, reason)


def _analysis_due(state: RolloutState, now: float) -> bool:
    last = state.window_start_s if state.last_analysis_at is None else state.last_analysis_at
    return now - last >= state.spec.interval_s - 1e-9


def _run_analysis(
    state: RolloutState, snapshot: MetricsSnapshot | None, now: float
) -> tuple[RolloutState, Outcome, str]:
    if state.skip_analysis:
        return (
            replace(state, last_analysis_at=now, window_start_s=now),
            Outcome.PASS,
            "analysis skipped",
        )
    if snapshot is None:
        snapshot = MetricsSnapshot(
            taken_at=now, collection_error="the controller passed no metrics snapshot"
        )
    result = analyze(
        state.spec.gates,
        state.gate_runs,
        snapshot,
        champion=state.champion,
        canary=state.canary,
        now=now,
    )
    failed = state.failed_checks + (result.outcome is Outcome.FAIL)
    # the next analysis looks at fresh calls only, unless a gate is still collecting enough
    window = state.window_start_s if result.waiting else now
    state = replace(
        state,
        gate_runs=result.runs,
        last_analysis_at=now,
        window_start_s=window,
        failed_checks=failed,
    )
    return state, result.outcome, result.reason


def _passed(state: RolloutState, now: float, reason: str) -> Result:
    p = state.phase
    if p is Phase.PROGRESSING:
        return _p.advance(state, now, reason)
    if p is Phase.PREVIEW:
        done = state.passed_iterations + 1
        state = replace(
            state,
            passed_iterations=done,
            progress_at=now,
            message=f"pre-promotion analysis {done}/{state.spec.iterations} passed",
        )
        if done >= state.spec.iterations:
            return _p.promote(state, now, f"pre-promotion analysis passed {done} times")
        return state, []
    # rolling: the gates pass; done once Serve has replaced every replica
    if state.weight >= 100.0:
        return _p.promote(state, now, "every replica replaced and gates passed")
    return replace(
        state, message=f"gates passed; waiting for Serve ({state.weight:g} % replaced)"
    ), []


def _scale_down_delay_tick(
    state: RolloutState, snapshot: MetricsSnapshot | None, now: float
) -> Result:
    assert state.promoted_at is not None  # set on entering promoting
    if now - state.promoted_at >= state.spec.scale_down_delay_s:
        return _p.succeed(state, now)
    if not _analysis_due(state, now):
        return state, []
    # post-promotion analysis: while the old version is still up, a failing switch goes back
    state, outcome, reason = _run_analysis(state, snapshot, now)
    if outcome is Outcome.FAIL and state.failed_checks >= state.spec.threshold:
        return _p.end(
            state,
            Phase.ROLLED_BACK,
            now,
            f"{state.failed_checks} failed checks after the switch: {reason}",
        )
    return replace(state, message=f"after the switch: {reason}"), []


# -- manual controls -------------------------------------------------------------------------


def _on_promote(state: RolloutState, event: Promote, now: float) -> Result:
    if state.phase is Phase.SCALE_DOWN_DELAY:
        return _p.succeed(state, now)
    unpaused: list[Action] = []
    if state.phase is Phase.PAUSED:
        assert state.paused_from is not None
        state, unpaused = _p.goto(
            state, state.paused_from, now, "promoted by operator while paused", paused_from=None
        )
    if event.full or state.phase is Phase.PREVIEW:
        state, actions = _p.promote(state, now, "promoted by operator (full)")
    else:
        state, actions = _p.advance(state, now, "promoted by operator")
    return state, unpaused + actions


def _on_pause(state: RolloutState, event: Pause, now: float) -> Result:
    return _p.pause(state, now, event.reason)


def _on_resume(state: RolloutState, event: Resume, now: float) -> Result:
    assert state.paused_from is not None
    # a fresh window after the pause, and Argo's rule: a resumed analysis starts its
    # inconclusive count again (else the same gate pauses again at once)
    runs = tuple(replace(r, inconclusive=0) for r in state.gate_runs)
    state, actions = _p.goto(
        state,
        state.paused_from,
        now,
        "resumed by operator",
        paused_from=None,
        gate_runs=runs,
        progress_at=now,
        window_start_s=now,
        last_analysis_at=now,
    )
    return state, actions + _p.notify(state, "resumed", now, "resumed by operator")


def _on_abort(state: RolloutState, event: Abort, now: float) -> Result:
    return _p.end(state, Phase.ABORTED, now, event.reason)


def _on_retry(state: RolloutState, event: Retry, now: float) -> Result:
    state = _p.reset(state, now, attempts=state.attempts + 1)
    return _p.goto(state, Phase.INITIALIZING, now, f"retry (attempt {state.attempts})")


def _on_skip(state: RolloutState, event: SkipAnalysis, now: float) -> Result:
    state = replace(state, skip_analysis=True, message="analysis skipped by operator")
    if state.phase is Phase.CANARY_TEST:
        return _p.enter_strategy(state, now, "canary test skipped by operator")
    return state, []


def _on_new_version(state: RolloutState, event: NewVersion, now: float) -> Result:
    if event.version == state.champion:
        raise DeploymentError(
            f"Version {event.version} of {state.program!r} is the champion already; "
            "abort the rollout instead to stay on it."
        )
    old = state.canary
    cleanup = _p.restore(state)
    state = _p.reset(
        state,
        now,
        canary=event.version,
        restarts=state.restarts + 1,
        superseded=(*state.superseded, old),
    )
    state, actions = _p.goto(
        state,
        Phase.INITIALIZING,
        now,
        f"version {event.version} replaces {old}; restart from step 0",
    )
    state, more = _p.initialize(state, now)
    return state, cleanup + actions + more


def _on_canary_test(state: RolloutState, event: CanaryTestResult, now: float) -> Result:
    test = state.spec.canary_test
    assert test is not None
    if event.error is not None:
        return _p.end(state, Phase.FAILED, now, f"canary test could not run: {event.error}")
    if event.score is None:
        return _p.end(state, Phase.FAILED, now, "canary test returned no score")
    state = replace(state, canary_test_score=event.score)
    if event.score < test.min_score:
        return _p.end(
            state,
            Phase.FAILED,
            now,
            f"canary test score {event.score:.4g} < {test.min_score:g} on {event.examples} examples of {test.devset!r}",
        )
    return _p.enter_strategy(
        state,
        now,
        f"canary test passed: {event.score:.4g} >= {test.min_score:g} on {event.examples} examples",
    )


_CONTROLS: dict[type[Event], Callable[[RolloutState, Any, float], Result]] = {
    Promote: _on_promote,
    Pause: _on_pause,
    Resume: _on_resume,
    Abort: _on_abort,
    Retry: _on_retry,
    SkipAnalysis: _on_skip,
    NewVersion: _on_new_version,
    CanaryTestResult: _on_canary_test,
}
