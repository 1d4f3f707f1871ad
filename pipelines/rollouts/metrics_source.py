"""Filling a ``MetricsSnapshot`` from what is measured live.

* executions, errors and latency percentiles of champion and canary: the supervisor's
  ``metrics(version, window_s)`` (its predictors' rolling windows, merged over replicas; on
  Serve, over every replica of the version's deployment), for the window the rollout asks for,
  ``[state.window_start_s, now]``;
* the program's own metric: the mean of the shadow pairs' scores in the window, per version
  (``scores[score_name]``), and the pairs themselves for the non-inferiority gate;
* cost per call: from ``cost(version, window_s)`` when given (the predictors do not measure it);
* rolling progress: the share of traffic the supervisor's own staged replacement has moved.

A supervisor that cannot be reached gives a snapshot with ``collection_error`` (gates record an
Error measurement, as Argo does when a metric provider fails); a version the supervisor does not
host has no entry (gates wait for data, or follow their missing-data policy).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dspex.errors import NotFound

from .shadow import ShadowRecorder
from .snapshot import MetricsSnapshot, ShadowPairs, VersionMetrics
from .spec import Strategy
from .state import RolloutState

__all__ = ["SupervisorMetrics"]

#: the shortest window asked of the predictors (their buckets are 1 s; a 0 s window is an error)
_MIN_WINDOW_S = 0.001


def _cause(exc: BaseException) -> BaseException:
    from dspex.actors import _ray

    return _ray.unwrap(exc)


def _describe(exc: BaseException) -> str:
    from dspex.actors import _ray

    return _ray.describe(_ray.unwrap(exc))


class SupervisorMetrics:
    """``await source.snapshot(state, now)`` (see the module docstring)."""

    def __init__(
        self,
        supervisor: Any,
        *,
        shadow: ShadowRecorder | None = None,
        score_name: str = "score",
        cost: Callable[[int, float], float | None] | None = None,
    ) -> None:
        self.supervisor = supervisor
        self.shadow = shadow
        self.score_name = score_name
        self.cost = cost

    async def snapshot(self, state: RolloutState, now: float) -> MetricsSnapshot:
        window_s = max(_MIN_WINDOW_S, now - state.window_start_s)
        pairs = self._pairs(state)
        means = _means(pairs)
        versions: dict[int, VersionMetrics] = {}
        for version, role in ((state.champion, "champion"), (state.canary, "canary")):
            if version is None:
                continue
            try:
                view = await self.supervisor.metrics.remote(version, window_s)
            except Exception as exc:
                if isinstance(_cause(exc), NotFound):
                    continue  # not deployed (yet, or any more): no data for it
                return MetricsSnapshot(
                    taken_at=now,
                    window_start_s=state.window_start_s,
                    collection_error=f"the supervisor's metrics for version {version} failed: {_describe(exc)}",
                )
            versions[version] = self._version(view, version, window_s, means.get(role), pairs)
        progress = (
            await self._rolling_progress(state) if state.strategy is Strategy.ROLLING else None
        )
        return MetricsSnapshot(
            taken_at=now,
            window_start_s=state.window_start_s,
            versions=versions,
            shadow=pairs,
            rolling_progress=progress,
        )

    def _pairs(self, state: RolloutState) -> ShadowPairs | None:
        if self.shadow is None or not state.shadow_active:
            return None
        pairs = self.shadow.pairs(since_s=state.window_start_s)
        if pairs is None or (pairs.champion, pairs.canary) != (state.champion, state.canary):
            return None
        return pairs

    def _version(
        self,
        view: dict[str, Any],
        version: int,
        window_s: float,
        mean: tuple[float, int] | None,
        pairs: ShadowPairs | None,
    ) -> VersionMetrics:
        count = int(view.get("count") or 0)
        scores: dict[str, float] = {}
        scored = 0
        if mean is not None:
            scores[self.score_name] = mean[0]
            scored = mean[1]
        cost = self.cost(version, window_s) if self.cost is not None and count else None
        return VersionMetrics(
            executions=count,
            errors=min(int(view.get("errors") or 0), count),
            latency_p50_ms=view.get("p50_ms"),
            latency_p95_ms=view.get("p95_ms"),
            latency_p99_ms=view.get("p99_ms"),
            cost_per_call_usd=cost,
            scores=scores,
            scored=scored,
        )

    async def _rolling_progress(self, state: RolloutState) -> float | None:
        try:
            status = await self.supervisor.status.remote()
        except Exception:
            return None
        rollout = status.get("rollout") or None
        if rollout and rollout.get("staged") == state.canary:
            if rollout.get("phase") == "rolled_back":
                return 0.0
            return max(0.0, min(1.0, float(rollout.get("weight") or 0.0) / 100.0))
        return 1.0 if status.get("active") == state.canary else 0.0


def _means(pairs: ShadowPairs | None) -> dict[str, tuple[float, int]]:
    if pairs is None or len(pairs) == 0:
        return {}
    n = len(pairs)
    return {
        "champion": (sum(pairs.champion_scores) / n, n),
        "canary": (sum(pairs.canary_scores) / n, n),
    }
