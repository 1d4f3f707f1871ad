"""Dry runs of a rollout without Ray: a manual clock, a deterministic traffic model, a driver.

``Driver`` plays the live controller's part — tick, persist, apply the actions — against
``SyntheticTraffic``, which turns the current weights into exact per-version counts (no
randomness: each second a version receives ``rps * weight`` calls and ``error_rate`` of them fail).
Use it to see what a spec would do ("how long until 100 %? how fast is a bad version rolled
back?") and in tests, as Flagger's scheduler tests drive their controller tick by tick.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .actions import Action, Event, SetWeights, Tick
from .gates import NonInferiorityTest
from .machine import step
from .snapshot import MetricsSnapshot, ShadowPairs, VersionMetrics
from .state import RolloutState

__all__ = ["Driver", "ManualClock", "SyntheticTraffic", "VersionBehaviour"]


class ManualClock:
    """A clock that moves only when told to (seconds)."""

    def __init__(self, start_s: float = 0.0) -> None:
        self.now = start_s

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError(f"A clock cannot go back ({seconds} s).")
        self.now += seconds
        return self.now


@dataclass
class VersionBehaviour:
    """How a version behaves; ``error_rate`` may depend on time (a fault injected mid-rollout)."""

    error_rate: float | Callable[[float], float] = 0.0
    latency_p95_ms: float = 200.0
    cost_per_call_usd: float = 0.001
    score: float = 0.8

    def error_rate_at(self, t: float) -> float:
        rate = self.error_rate(t) if callable(self.error_rate) else self.error_rate
        return float(rate)


@dataclass
class SyntheticTraffic:
    """Deterministic traffic: ``rps`` calls per second split by the current weights.

    Calls are integrated second by second from the window start (counts rounded down), so a
    snapshot is exact and reproducible. A canary at 0 % live weight (blue-green preview) receives
    ``preview_share`` of ``rps`` from the preview route. Shadow pairs (when ``shadow``): every champion call is mirrored; the
    pair's scores are 1/0 by a fixed pattern matching each version's ``score``.
    """

    rps: float
    behaviours: Mapping[int, VersionBehaviour]
    shadow: bool = False
    preview_share: float = 0.0

    def snapshot(
        self, state: RolloutState, weights: Mapping[int, float], now: float
    ) -> MetricsSnapshot:
        start = state.window_start_s
        versions: dict[int, VersionMetrics] = {}
        for version, behaviour in self.behaviours.items():
            share = weights.get(version, 0.0) / 100.0
            if version == state.canary and share == 0:
                share = self.preview_share  # preview route / mirrored calls to a 0 % version
            calls_f = errors_f = 0.0
            t = start
            while t < now:
                n = self.rps * share * min(1.0, now - t)
                calls_f += n
                errors_f += n * behaviour.error_rate_at(t)
                t += 1.0
            calls, errors = int(calls_f + 1e-9), int(errors_f + 1e-9)
            versions[version] = VersionMetrics(
                executions=calls,
                errors=min(errors, calls),
                latency_p95_ms=behaviour.latency_p95_ms if calls else None,
                cost_per_call_usd=behaviour.cost_per_call_usd if calls else None,
                scores={"accuracy": behaviour.score} if calls else {},
                scored=calls,
            )
        return MetricsSnapshot(
            taken_at=now, window_start_s=start, versions=versions, shadow=self._pairs(state, now)
        )

    def _pairs(self, state: RolloutState, now: float) -> ShadowPairs | None:
        if not self.shadow or not state.shadow_active or state.champion is None:
            return None
        n = int(self.rps * max(0.0, now - state.window_start_s))
        champ = self.behaviours[state.champion].score
        can = self.behaviours[state.canary].score
        # a fixed low-discrepancy pattern: the i-th pair scores 1 when frac(i * phi) < score
        phi = 0.6180339887498949
        return ShadowPairs(
            champion=state.champion,
            canary=state.canary,
            champion_scores=tuple(float((i * phi) % 1.0 < champ) for i in range(n)),
            canary_scores=tuple(float((i * phi + 0.5) % 1.0 < can) for i in range(n)),
        )


@dataclass
class Driver:
    """Plays the controller: ticks every ``tick_s``, keeps the weights the actions set, and (with
    ``persist=True``) round-trips the state through JSON at every step, as the store would."""

    state: RolloutState
    clock: ManualClock
    traffic: SyntheticTraffic | None = None
    tick_s: float = 10.0
    persist: bool = True
    non_inferiority_test: NonInferiorityTest | None = None
    weights: dict[int, float] = field(default_factory=dict)
    actions: list[tuple[float, Action]] = field(default_factory=list)

    def snapshot(self) -> MetricsSnapshot | None:
        if self.traffic is None:
            return None
        return self.traffic.snapshot(self.state, self.weights, self.clock())

    def send(self, event: Event) -> list[Action]:
        state, actions = step(self.state, event, self.snapshot(), self.clock())
        if self.persist:
            state = RolloutState.from_dict(
                json.loads(json.dumps(state.to_dict())),
                non_inferiority_test=self.non_inferiority_test,
            )
        self.state = state
        for action in actions:
            self.actions.append((self.clock(), action))
            if isinstance(action, SetWeights):
                self.weights = dict(action.weights)
        return actions

    def tick(self) -> list[Action]:
        return self.send(Tick())

    def run(self, *, until_s: float | None = None, max_ticks: int = 10_000) -> RolloutState:
        """Advance the clock tick by tick until the rollout ends (or ``until_s`` / ``max_ticks``)."""
        for _ in range(max_ticks):
            if self.state.phase.terminal or (until_s is not None and self.clock() >= until_s):
                break
            self.clock.advance(self.tick_s)
            self.tick()
        return self.state

    def of_kind(self, kind: type[Action]) -> list[Action]:
        return [a for _, a in self.actions if isinstance(a, kind)]
