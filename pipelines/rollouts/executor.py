"""Carrying out a rollout's actions on the live system: the supervisor, the registry, shadowing.

Every action converges instead of repeating blindly (the state machine's actions are
idempotent, and the controller re-runs them after a restart): a version already deployed is not
started again, weights already in force are not published again (a publish is a new routing
epoch for every ingress), an alias already in place is not moved again. So re-running the
actions of a persisted state costs a status call, not a traffic change.

Traffic moves only through the ``HotSwapSupervisor`` (``prepare``, ``set_weights``,
``scale_down``, ``deploy``/``rollback`` for rolling updates); ``pipelines/`` never touches
``cluster/``. A blue-green preview (``DeployVersion(preview=True)``) is the version started at
0 %: callers reach it pinned (the Serve ingress's version header, or ``VersionCaller``) while
live traffic stays on the champion.

Failures of *routing* actions (deploy, weights, scale down, rolling update) raise: the
controller keeps them pending and retries on its next tick before it moves on. An alias move
the registry refuses for good (a version it does not know) is logged and skipped, since no
retry would fix it. Webhooks, telemetry, canary tests and shadow switches are the controller's
(``controller.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from dspex.errors import DeploymentError, NotFound, ValidationError

from .actions import (
    Action,
    DeployVersion,
    MoveAlias,
    RollingUpdate,
    ScaleDown,
    SetWeights,
    StartShadow,
    StopShadow,
)
from .registry import ProgramRegistry
from .shadow import ShadowRecorder
from .state import RolloutState

__all__ = ["ActionExecutor", "RollingPlan", "default_rolling_plan"]

log = logging.getLogger("dspex.pipelines.rollouts")

#: ``plan(state) -> actors.RolloutPlan`` for a rolling update through the supervisor
RollingPlan = Callable[[RolloutState], Any]


def default_rolling_plan(state: RolloutState) -> Any:
    """Replace a quarter of the traffic per analysis interval. The supervisor's own health
    rollback is off: the rollout's gates decide (they roll back with a ``RollingUpdate`` to
    the champion)."""
    from dspex.actors import RolloutPlan

    return RolloutPlan.staged(
        steps=(25.0, 50.0, 75.0, 100.0), step_s=state.spec.interval_s, auto_rollback=False
    )


def _cause(exc: BaseException) -> BaseException:
    from dspex.actors import _ray

    return _ray.unwrap(exc)


class ActionExecutor:
    """Executes routing, alias and shadow actions for one program (module docstring)."""

    def __init__(
        self,
        program: str,
        supervisor: Any,
        *,
        specs: Callable[[int], Any] | None = None,
        registry: ProgramRegistry | None = None,
        shadow: ShadowRecorder | None = None,
        rolling_plan: RollingPlan = default_rolling_plan,
    ) -> None:
        self.program = program
        self.supervisor = supervisor
        self.specs = specs
        self.registry = registry
        self.shadow = shadow
        self.rolling_plan = rolling_plan
        self.skipped: list[str] = []  # alias moves the registry refused for good

    async def execute(self, action: Action, state: RolloutState) -> None:
        if isinstance(action, DeployVersion):
            await self._deploy(action.version)
        elif isinstance(action, SetWeights):
            await self._weights({int(v): float(w) for v, w in action.weights.items()})
        elif isinstance(action, ScaleDown):
            await self._scale_down(action.version)
        elif isinstance(action, RollingUpdate):
            await self._rolling(action.version, state)
        elif isinstance(action, MoveAlias):
            self._alias(action, state)
        elif isinstance(action, StartShadow):
            if self.shadow is not None:
                self.shadow.start(action.champion, action.canary)
            else:
                log.warning(
                    "rollout %s has non-inferiority gates but the controller has no ShadowRecorder: "
                    "they will wait for pairs until the progress deadline",
                    state.rollout_id,
                )
        elif isinstance(action, StopShadow):
            if self.shadow is not None:
                self.shadow.stop(action.champion, action.canary)
        else:
            raise DeploymentError(f"The action executor does not handle {action.kind!r} actions.")

    async def status(self) -> dict[str, Any]:
        status: dict[str, Any] = await self.supervisor.status.remote()
        return status

    def _spec(self, version: int) -> Any:
        if self.specs is None:
            raise DeploymentError(
                f"Version {version} of {self.program!r} is not deployed and the controller has no way to build it; "
                "give it specs= (a function version -> VersionSpec, e.g. RegistrySpecs)."
            )
        return self.specs(version)

    async def _deploy(self, version: int) -> None:
        status = await self.status()
        if version in status.get("versions", {}):
            return
        await self.supervisor.prepare.remote(self._spec(version))

    async def _weights(self, split: dict[int, float]) -> None:
        status = await self.status()
        deployed = set(status.get("versions", {}))
        for version, weight in split.items():
            if weight > 0 and version not in deployed:
                await self._deploy(version)  # e.g. the champion after a restart of the supervisor
                deployed.add(version)
        # a version already scaled down needs no 0 % entry (the supervisor refuses unknown ones)
        split = {v: w for v, w in split.items() if w > 0 or v in deployed}
        current = {int(v): float(w) for v, w in (status.get("weights") or {}).items()}
        wanted = {v: split.get(v, 0.0) for v in deployed}
        if all(abs(current.get(v, 0.0) - w) < 1e-6 for v, w in wanted.items()):
            return
        await self.supervisor.set_weights.remote(split)

    async def _scale_down(self, version: int) -> None:
        try:
            await self.supervisor.scale_down.remote(version)
        except Exception as exc:
            if isinstance(_cause(exc), NotFound):
                return  # already gone
            raise

    async def _rolling(self, version: int, state: RolloutState) -> None:
        status = await self.status()
        rollout = status.get("rollout") or None
        running = rollout is not None and rollout.get("phase") in ("rolling", "manual")
        if running and rollout is not None and rollout.get("staged") == version:
            return  # already replacing replicas with it
        if running and rollout is not None and rollout.get("active") == version:
            await self.supervisor.rollback.remote(f"rolled back by rollout {state.rollout_id}")
            return
        if status.get("active") == version:
            return
        await self.supervisor.deploy.remote(
            self._spec(version), self.rolling_plan(state), replace=True
        )

    def _alias(self, action: MoveAlias, state: RolloutState) -> None:
        if self.registry is None:
            return
        try:
            self.registry.move_alias(
                self.program,
                action.alias,
                action.version,
                actor=f"rollout:{state.rollout_id}",
                reason=state.message[:500] or None,
            )
        except (NotFound, ValidationError) as exc:
            note = f"alias {action.alias} -> {action.version} skipped: {exc}"
            self.skipped.append(note)
            log.warning("rollout %s: %s", state.rollout_id, note)
