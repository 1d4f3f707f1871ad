"""How a rollout enters each phase: the state change and the actions that go with it.

Private to ``machine``: every function here takes a state and returns ``(state, actions)`` (or
the actions alone) and never decides *whether* to move — ``machine`` does.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from dspex.telemetry.names import ROLLOUT_TICK, ROLLOUT_TRANSITION

from .actions import (
    Action,
    DeployVersion,
    EmitTelemetry,
    MoveAlias,
    NotifyWebhook,
    RollingUpdate,
    RunCanaryTest,
    ScaleDown,
    SetWeights,
    StartShadow,
    StopShadow,
)
from .spec import Strategy
from .state import HISTORY_LIMIT, Phase, RolloutState, Transition

Result = tuple[RolloutState, list[Action]]


def reconcile(state: RolloutState) -> list[Action]:
    """The idempotent actions that make the live system match ``state``.

    A controller that restarts loads the persisted state and runs these before its first tick,
    so routing, shadowing and aliases are what the state says even if the crash came between
    persisting a state and executing its actions.
    """
    live, c, ch = state.live_phase, state.canary, state.champion
    if live is Phase.INITIALIZING:
        return []
    rolling = state.strategy is Strategy.ROLLING
    if live in (Phase.PROMOTING, Phase.SCALE_DOWN_DELAY, Phase.SUCCEEDED):
        actions: list[Action] = [] if rolling else [set_weights(state, 100.0)]
        return [
            *actions,
            MoveAlias(alias="champion", version=c),
            MoveAlias(alias="canary", version=None),
        ]
    if live.terminal:
        back: list[Action] = [RollingUpdate(version=ch)] if rolling and ch is not None else []
        if not rolling and ch is not None:
            back.append(SetWeights({ch: 100.0, c: 0.0}))
        return [
            *back,
            MoveAlias(alias="champion", version=ch),
            MoveAlias(alias="canary", version=None),
        ]
    if rolling:
        actions = [RollingUpdate(version=c)]
    else:
        weight = state.weight if live is Phase.PROGRESSING else 0.0
        actions = [
            DeployVersion(version=c, preview=state.strategy is Strategy.BLUE_GREEN),
            set_weights(state, weight),
        ]
    if state.shadow_active and ch is not None:
        actions.append(StartShadow(champion=ch, canary=c))
    return [*actions, MoveAlias(alias="canary", version=c)]


# -- entering phases -------------------------------------------------------------------------


def initialize(state: RolloutState, now: float) -> Result:
    s, c, ch = state.spec, state.canary, state.champion
    actions: list[Action] = []
    if state.strategy is not Strategy.ROLLING:
        actions.append(DeployVersion(version=c, preview=state.strategy is Strategy.BLUE_GREEN))
        if ch is not None:
            actions.append(SetWeights({ch: 100.0, c: 0.0}))
    actions.append(MoveAlias(alias="canary", version=c))
    shadow = (
        bool(s.shadow_gates)
        and ch is not None
        and not state.skip_analysis
        and state.strategy is not Strategy.IMMEDIATE
    )
    if shadow:
        assert ch is not None
        actions.append(StartShadow(champion=ch, canary=c))
    state = replace(state, shadow_active=shadow, progress_at=now)
    actions += notify(state, "started", now, f"rolling out version {c}")
    if s.canary_test is not None and not state.skip_analysis:
        state, more = goto(
            state, Phase.CANARY_TEST, now, f"canary test on devset {s.canary_test.devset!r}"
        )
        run = RunCanaryTest(
            version=c,
            devset=s.canary_test.devset,
            min_score=s.canary_test.min_score,
            max_examples=s.canary_test.max_examples,
        )
        return state, [*actions, *more, run]
    state, more = enter_strategy(state, now, "initialized")
    return state, actions + more


def enter_strategy(state: RolloutState, now: float, reason: str) -> Result:
    fresh = {"progress_at": now, "window_start_s": now, "last_analysis_at": now}
    if state.strategy is Strategy.IMMEDIATE:
        return promote(state, now, f"{reason}; immediate strategy")
    if state.strategy is Strategy.CANARY:
        weight = state.spec.step_weights[0]
        state, actions = goto(
            state,
            Phase.PROGRESSING,
            now,
            f"{reason}; step 1 at {weight:g} %",
            step_index=0,
            weight=weight,
            **fresh,
        )
        return state, [
            set_weights(state, weight),
            *actions,
            *notify(state, "step", now, f"step 1 at {weight:g} %"),
        ]
    if state.strategy is Strategy.BLUE_GREEN:
        return goto(
            state,
            Phase.PREVIEW,
            now,
            f"{reason}; version {state.canary} on the preview route",
            weight=0.0,
            **fresh,
        )
    state, actions = goto(
        state,
        Phase.ROLLING,
        now,
        f"{reason}; rolling update to version {state.canary}",
        weight=0.0,
        **fresh,
    )
    return state, [RollingUpdate(version=state.canary), *actions]


def advance(state: RolloutState, now: float, reason: str) -> Result:
    nxt = state.step_index + 1
    weights = state.spec.step_weights
    if nxt >= len(weights):
        return promote(state, now, f"last step passed: {reason}")
    weight = weights[nxt]
    msg = f"step {nxt + 1}/{len(weights)} at {weight:g} % ({reason})"
    state = replace(
        state,
        step_index=nxt,
        weight=weight,
        progress_at=now,
        window_start_s=now,
        last_analysis_at=now,
        message=msg,
    )
    return state, [set_weights(state, weight), *notify(state, "step", now, msg)]


def promote(state: RolloutState, now: float, reason: str) -> Result:
    actions: list[Action] = []
    if state.strategy is not Strategy.ROLLING:
        actions.append(set_weights(state, 100.0))
    actions += stop_shadow(state)
    actions += [
        MoveAlias(alias="champion", version=state.canary),
        MoveAlias(alias="canary", version=None),
    ]
    state, more = goto(
        state,
        Phase.PROMOTING,
        now,
        reason,
        weight=100.0,
        promoted_at=now,
        shadow_active=False,
        paused_from=None,
    )
    return state, actions + more + notify(state, "promoted", now, reason)


def succeed(state: RolloutState, now: float) -> Result:
    actions: list[Action] = []
    if state.champion is not None and state.strategy is not Strategy.ROLLING:
        actions.append(ScaleDown(version=state.champion))
    state, more = goto(
        state, Phase.SUCCEEDED, now, f"version {state.canary} is the champion", finished_at=now
    )
    return state, actions + more + notify(state, "succeeded", now, state.message)


def pause(state: RolloutState, now: float, reason: str) -> Result:
    state, actions = goto(state, Phase.PAUSED, now, reason, paused_from=state.phase)
    return state, actions + notify(state, "paused", now, reason)


def end(state: RolloutState, phase: Phase, now: float, reason: str) -> Result:
    """Finish unsuccessfully: everything back to the champion, the canary scaled down."""
    actions = restore(state)
    state, more = goto(
        state,
        phase,
        now,
        reason,
        finished_at=now,
        shadow_active=False,
        paused_from=None,
        weight=0.0,
    )
    return state, actions + more + notify(state, phase.value, now, reason)


def restore(state: RolloutState) -> list[Action]:
    live, c, ch = state.live_phase, state.canary, state.champion
    if live is Phase.INITIALIZING:
        return []  # nothing was deployed yet
    actions: list[Action] = []
    if state.strategy is Strategy.ROLLING:
        if ch is not None:
            actions.append(RollingUpdate(version=ch))
    elif ch is not None:
        actions.append(SetWeights({ch: 100.0, c: 0.0}))
    actions += stop_shadow(state)
    if live in (Phase.PROMOTING, Phase.SCALE_DOWN_DELAY):
        actions.append(MoveAlias(alias="champion", version=ch))
    else:
        actions.append(MoveAlias(alias="canary", version=None))
    if state.strategy is not Strategy.ROLLING and ch is not None:
        actions.append(ScaleDown(version=c))
    return actions


# -- helpers ---------------------------------------------------------------------------------


def reset(state: RolloutState, now: float, **changes: Any) -> RolloutState:
    return replace(
        state,
        step_index=-1,
        weight=0.0,
        failed_checks=0,
        passed_iterations=0,
        gate_runs=(),
        progress_at=now,
        window_start_s=now,
        last_analysis_at=None,
        promoted_at=None,
        finished_at=None,
        paused_from=None,
        skip_analysis=state.fast_track,
        shadow_active=False,
        canary_test_score=None,
        **changes,
    )


def goto(state: RolloutState, phase: Phase, now: float, reason: str, **changes: Any) -> Result:
    before = state.phase
    state = replace(state, phase=phase, phase_since=now, message=reason, **changes)
    record = Transition(
        at=now,
        from_phase=before,
        to_phase=phase,
        reason=reason,
        step_index=state.step_index,
        weight=state.weight,
    )
    state = replace(state, history=(*state.history, record)[-HISTORY_LIMIT:])
    telemetry = EmitTelemetry(
        event=ROLLOUT_TRANSITION,
        measurements={
            "weight": state.weight,
            "phase": float(phase.code),
            "failed_checks": float(state.failed_checks),
        },
        metadata={**labels(state), "from": before.value, "to": phase.value, "reason": reason},
    )
    return state, [telemetry]


def set_weights(state: RolloutState, weight: float) -> SetWeights:
    if state.champion is None:
        return SetWeights({state.canary: 100.0})
    return SetWeights({state.champion: round(100.0 - weight, 6), state.canary: weight})


def stop_shadow(state: RolloutState) -> list[Action]:
    if state.shadow_active and state.champion is not None:
        return [StopShadow(champion=state.champion, canary=state.canary)]
    return []


def labels(state: RolloutState) -> dict[str, Any]:
    return {
        "program": state.program,
        "version": state.canary,
        "champion": state.champion,
        "rollout_id": state.rollout_id,
    }


def gauges(state: RolloutState) -> EmitTelemetry:
    return EmitTelemetry(
        event=ROLLOUT_TICK,
        measurements={
            "weight": state.weight,
            "phase": float(state.phase.code),
            "failed_checks": float(state.failed_checks),
        },
        metadata={**labels(state), "phase": state.phase.value, "step_index": state.step_index},
    )


def notify(state: RolloutState, event: str, now: float, reason: str) -> list[Action]:
    payload = {
        **labels(state),
        "event": event,
        "phase": state.phase.value,
        "step_index": state.step_index,
        "weight": state.weight,
        "failed_checks": state.failed_checks,
        "reason": reason,
        "at": now,
    }
    return [
        NotifyWebhook(
            webhook=h.name,
            url=h.url,
            event=event,
            payload=payload,
            url_env=h.url_env,
            secret_env=h.secret_env,
        )
        for h in state.spec.webhooks
        if event in h.events
    ]
