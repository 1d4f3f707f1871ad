"""``HotSwapSupervisor``: per program, the versions, their predictors, the traffic split and
the rollback snapshots (the seed's hot-swap GenServer, Stage 2 §6.2). A plain class;
``factory.get_supervisor(program)`` makes it a named Ray async actor.

What it does:

- **Deploy** a version: start its predictors (``replicas`` of them; a drained predictor kept
  as a *standby* is re-loaded instead of starting a new Ray worker, which takes 1-2 s), then
  shift traffic by a ``RolloutPlan``: at once (``RolloutPlan.immediate()``) or in steps
  (5, 10, 25, 50, 100 %) while a health check compares the new version's measured error
  rate, p95 latency and throughput with the active one's (``health.py``; the stepping itself
  is the pure machine in ``rollout.py``, driven here every ``tick_s``).
- **Roll back** on demand or when the check fails ``failure_threshold`` times in a row;
  after a completed swap, ``rollback()`` redeploys the previous version from its snapshot.
- **Publish** the routing table (``routing.py``) with a new epoch on every change; callers
  long-poll ``watch`` and route themselves, so requests do not go through the supervisor.
- **Drop no request**: traffic moves first (publish), then the old predictors drain
  (refusing new calls as ``draining``, which callers retry on the new table) and only then
  are they unloaded or stopped.
- **Restarts**: predictors run with Ray ``max_restarts``; a restarted one asks
  ``assignment(predictor_id)`` for the version to re-load. A monitor replaces predictors that
  died for good (restarts exhausted).
- **External drivers** (the rollout controller in ``pipelines/``) use ``prepare`` (start a
  version with no traffic), ``set_weights``, ``promote``, ``rollback`` and ``scale_down``.

The supervisor's own state is in memory (``max_restarts=0``); the store keeps the durable
record of versions and deployments.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dspex import telemetry
from dspex.errors import DeploymentError, NotFound

from . import _ray
from . import rollout as machine
from ._events import ERROR_RECOVERY, HOTSWAP, ROLLOUT_STEP, ROUTES_PUBLISHED
from .executions import ExecutionSink
from .health import HealthReport, assess
from .metrics import MetricsView
from .pool import PredictorPool
from .routing import Replica, Route, RoutingTable, check_weights
from .spec import VersionId, VersionSpec

__all__ = ["HotSwapSupervisor", "Snapshot"]

log = logging.getLogger("dspex.actors.supervisor")


@dataclass
class _Slot:
    spec: VersionSpec
    replicas: list[Replica]
    deployed_s: float


@dataclass(frozen=True)
class Snapshot:
    """What serving looked like before a deploy: enough to redeploy it."""

    spec: VersionSpec | None
    weights: dict[VersionId, float]
    at_s: float


@dataclass
class _Swap:
    version: VersionId
    previous: VersionId | None
    started_s: float
    published_s: float | None = None
    finished_s: float | None = None
    outcome: str = "running"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "previous": self.previous,
            "outcome": self.outcome,
            "swap_ms": None if self.published_s is None else (self.published_s - self.started_s) * 1000.0,
            "total_ms": None if self.finished_s is None else (self.finished_s - self.started_s) * 1000.0,
            **self.extra,
        }


class HotSwapSupervisor:
    """See the module docstring. ``spawn(predictor_id)`` / ``kill(handle)`` create and stop a
    predictor (default: Ray actors through ``factory.start_predictor``; tests pass local ones)."""

    def __init__(
        self,
        program: str,
        *,
        replicas: int = 1,
        tick_s: float = 0.5,
        monitor_s: float = 5.0,
        drain_timeout_s: float = 30.0,
        max_standby: int | None = None,
        max_snapshots: int = 10,
        sinks: Sequence[ExecutionSink] = (),
        signature_cache: Any = "auto",
        predictor_options: dict[str, Any] | None = None,
        spawn: Callable[[str], Any] | None = None,
        kill: Callable[[Any], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not program:
            raise DeploymentError("A HotSwapSupervisor needs a program name.")
        if replicas < 1 or tick_s <= 0 or drain_timeout_s <= 0:
            raise DeploymentError(
                f"HotSwapSupervisor needs replicas >= 1, tick_s > 0 and drain_timeout_s > 0; "
                f"got {replicas}, {tick_s}, {drain_timeout_s}."
            )
        self.program = program
        self.replicas = replicas
        self.tick_s = tick_s
        self.monitor_s = monitor_s
        self.drain_timeout_s = drain_timeout_s
        self.max_standby = replicas if max_standby is None else max_standby
        self.sinks = list(sinks)
        self.signature_cache = signature_cache
        self.predictor_options = dict(predictor_options or {})
        self.clock = clock
        self.pool = PredictorPool(
            program,
            spawn=spawn or self._spawn_ray,
            kill=kill or _kill_ray,
            max_standby=self.max_standby,
            drain_timeout_s=drain_timeout_s,
        )
        self.slots: dict[VersionId, _Slot] = {}
        self.weights: dict[VersionId, float] = {}
        self.active: VersionId | None = None
        self.rollout: machine.RolloutState | None = None
        self.snapshots: deque[Snapshot] = deque(maxlen=max_snapshots)
        self.swaps: deque[_Swap] = deque(maxlen=200)
        self.epoch = 0
        self._table = RoutingTable(program, 0)
        self._lock: asyncio.Lock | None = None
        self._changed: asyncio.Condition | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._closed = False

    # -- plumbing ---------------------------------------------------------------------------
    def _sync(self) -> tuple[asyncio.Lock, asyncio.Condition]:
        if self._lock is None or self._changed is None:
            self._lock = asyncio.Lock()
            self._changed = asyncio.Condition()
        if self._monitor is None and self.monitor_s > 0 and not self._closed:
            self._monitor = asyncio.get_running_loop().create_task(self._monitor_loop())
        return self._lock, self._changed

    def _spawn_ray(self, predictor_id: str) -> Any:
        from .factory import start_predictor

        return start_predictor(
            predictor_id,
            None,
            supervisor=_ray.supervisor_name(self.program),
            sinks=self.sinks,
            signature_cache=self.signature_cache,
            name=predictor_id,
            options=self.predictor_options,
        )

    async def _publish(self) -> RoutingTable:
        _, changed = self._sync()
        self.epoch += 1
        routes = tuple(Route(v, self.weights.get(v, 0.0), tuple(slot.replicas)) for v, slot in self.slots.items())
        self._table = RoutingTable(self.program, self.epoch, routes)
        telemetry.emit(ROUTES_PUBLISHED, {"epoch": self.epoch, "versions": len(routes)}, {"program": self.program})
        async with changed:
            changed.notify_all()
        return self._table

    async def prestart(self, n: int | None = None) -> list[str]:
        """Start standby predictors now (default: ``replicas``), so the next deploy re-loads
        them instead of waiting for new Ray workers. Returns the standby ids."""
        self._sync()
        return await self.pool.prestart(self.replicas if n is None else n)

    # -- deploying ----------------------------------------------------------------------------
    async def deploy(self, spec: VersionSpec, plan: machine.RolloutPlan | None = None, *, replace: bool = False) -> dict[str, Any]:
        """Deploy ``spec`` and shift traffic to it by ``plan`` (default: immediately).

        Returns the status; for a rollout that finished at once (immediate, or a first
        version) it includes ``swap_ms``, from this call to the routing table at 100 %."""
        lock, _ = self._sync()
        started = self.clock()
        self._check_spec(spec)
        async with lock:
            if self.rollout is not None and not self.rollout.done:
                if not replace:
                    raise DeploymentError(
                        f"{self.program}: the rollout of version {self.rollout.staged!r} is still {self.rollout.phase.value}; "
                        "promote or roll it back first, or deploy with replace=True.",
                        hint="",
                    )
                await self._end_rollout(machine.rollback(self.rollout, self.clock(), f"replaced by {spec.version!r}"))
            if spec.version == self.active:
                raise DeploymentError(f"Version {spec.version!r} of {self.program} is already active.", hint="")
            plan = plan or machine.RolloutPlan.immediate()
            swap = _Swap(spec.version, self.active, started)
            self.swaps.append(swap)
            if spec.version in self.slots:  # prepared earlier (no traffic): reuse its predictors
                self.slots[spec.version].spec = spec
            else:
                try:
                    replicas = await self.pool.start(spec, self.replicas)
                except DeploymentError as exc:
                    swap.outcome, swap.finished_s = "failed", self.clock()
                    swap.extra["reason"] = exc.message
                    raise
                self.slots[spec.version] = _Slot(spec, replicas, self.clock())
            active_slot = self.slots.get(self.active) if self.active is not None else None
            self.snapshots.append(Snapshot(active_slot.spec if active_slot else None, dict(self.weights), self.clock()))
            self.rollout = machine.start(self.active, spec.version, plan, self.clock())
            await self._apply(self.rollout)
            if self.rollout.phase is machine.Phase.COMPLETE:
                swap.published_s = self.clock()
            if self.rollout.done:
                await self._end_rollout(self.rollout)
            else:
                self._ensure_ticker()
            return self._status()

    def _check_spec(self, spec: VersionSpec) -> None:
        if not isinstance(spec, VersionSpec):
            raise DeploymentError(f"deploy() needs a VersionSpec, got {type(spec).__name__}.", hint="")
        if spec.program != self.program:
            raise DeploymentError(
                f"This supervisor runs program {self.program!r}; the spec is for {spec.program!r}.", hint=""
            )

    async def prepare(self, spec: VersionSpec) -> dict[str, Any]:
        """Start ``spec``'s predictors with no traffic (for an external rollout controller)."""
        lock, _ = self._sync()
        self._check_spec(spec)
        async with lock:
            if spec.version not in self.slots:
                replicas = await self.pool.start(spec, self.replicas)
                self.slots[spec.version] = _Slot(spec, replicas, self.clock())
                self.weights.setdefault(spec.version, 0.0)
                await self._publish()
            return self._status()

    async def _apply(self, state: machine.RolloutState) -> None:
        """Route by the rollout's split; every other deployed version gets 0 %."""
        split = state.weights
        old = dict(self.weights)
        self.weights = {v: float(split.get(v, 0.0)) for v in self.slots}
        if self.weights != old:
            await self._publish()
            telemetry.emit(
                HOTSWAP,
                {"weight": state.weight / 100.0},
                {"program": self.program, "from_version": str(state.active), "to_version": str(state.staged)},
            )
        telemetry.emit(
            ROLLOUT_STEP,
            {"weight": state.weight, "failed_checks": state.failed_checks},
            {"program": self.program, "phase": state.phase.value, "version": str(state.staged)},
        )

    async def _end_rollout(self, state: machine.RolloutState) -> None:
        """Apply a finished rollout: the losing version leaves the table, drains and retires."""
        self.rollout = state
        winner: VersionId | None
        loser: VersionId | None
        if state.phase is machine.Phase.COMPLETE:
            winner, loser = state.staged, state.active
        else:
            winner, loser = state.active, state.staged
            cause = "RolloutUnhealthy" if state.reason.startswith(("unhealthy", "not enough")) else "OperatorRollback"
            telemetry.emit(ERROR_RECOVERY, {"attempt": 1}, {"component": "hotswap", "strategy": "rollback", "error": cause})
        slot = self.slots.pop(loser) if loser is not None and loser != winner and loser in self.slots else None
        self.active = winner
        self.weights = {v: (100.0 if v == winner else 0.0) for v in self.slots}
        await self._publish()
        telemetry.emit(
            HOTSWAP,
            {"weight": 1.0 if state.phase is machine.Phase.COMPLETE else 0.0},
            {"program": self.program, "from_version": str(state.active), "to_version": str(state.staged)},
        )
        now = self.clock()
        for swap in reversed(self.swaps):
            if swap.version == state.staged and swap.outcome == "running":
                if state.phase is machine.Phase.COMPLETE and swap.published_s is None:
                    swap.published_s = now
                swap.outcome = state.phase.value
                swap.extra["reason"] = state.reason
                break
        if slot is not None:
            await self.pool.retire(slot.replicas)
        for swap in reversed(self.swaps):
            if swap.version == state.staged and swap.finished_s is None:
                swap.finished_s = self.clock()
                break

    # -- the rollout loop -----------------------------------------------------------------------
    def _ensure_ticker(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick_loop())

    async def _tick_loop(self) -> None:
        lock, _ = self._sync()
        while not self._closed and self.rollout is not None and not self.rollout.done:
            await asyncio.sleep(self.tick_s)
            async with lock:
                if self.rollout is None or self.rollout.done:
                    break
                try:
                    await self._tick_once()
                except Exception:
                    log.exception("rollout tick of %s failed", self.program)

    async def _tick_once(self) -> HealthReport | None:
        state = self.rollout
        assert state is not None
        now = self.clock()
        if state.phase is not machine.Phase.ROLLING:
            return None
        window_s = max(0.001, min(state.plan.health.window_s, now - state.started_s))
        candidate = await self._version_metrics(state.staged, window_s)
        baseline = await self._version_metrics(state.active, window_s) if state.active is not None else None
        report = assess(candidate, baseline, state.weight, state.plan.health)
        new = machine.tick(state, self.clock(), report)
        if new.done:
            await self._end_rollout(new)
        else:
            self.rollout = new
            await self._apply(new)
        return report

    async def tick(self) -> dict[str, Any]:
        """Run one health check now (tests, and controllers that drive time themselves)."""
        lock, _ = self._sync()
        async with lock:
            report = await self._tick_once() if self.rollout is not None and not self.rollout.done else None
            return {"report": report.to_dict() if report else None, **self._status()}

    async def _version_metrics(self, version: VersionId | None, window_s: float | None) -> MetricsView:
        slot = self.slots.get(version) if version is not None else None
        if slot is None:
            return MetricsView(0.0)
        results = await asyncio.gather(
            *(r.handle.metrics.remote(window_s) for r in slot.replicas), return_exceptions=True
        )
        return MetricsView.merged(MetricsView.from_dict(d) for d in results if isinstance(d, dict))

    # -- manual control (rollout controllers, operators) ---------------------------------------
    async def set_weights(self, weights: Mapping[VersionId, float]) -> RoutingTable:
        """Route traffic by hand: percent per deployed version, summing to 100. Pauses an
        automatic rollout (its stepping and auto-rollback); ``promote`` / ``resume_rollout``
        hand control back."""
        lock, _ = self._sync()
        async with lock:
            split = check_weights(weights, set(self.slots))
            if self.rollout is not None and not self.rollout.done and self.rollout.phase is machine.Phase.ROLLING:
                self.rollout = machine.pause(self.rollout, self.clock(), split.get(self.rollout.staged, 0.0))
            elif self.rollout is not None and not self.rollout.done:
                from dataclasses import replace

                self.rollout = replace(self.rollout, weight=split.get(self.rollout.staged, 0.0))
            self.weights = {v: float(split.get(v, 0.0)) for v in self.slots}
            top = max(self.weights.items(), key=lambda kv: kv[1])
            if top[1] >= 100.0 and (self.rollout is None or self.rollout.done):
                self.active = top[0]
            elif self.active is None:
                self.active = top[0]
            return await self._publish()

    async def promote(self, full: bool = False) -> dict[str, Any]:
        """Move the running rollout one step on (or to 100 % with ``full``)."""
        lock, _ = self._sync()
        async with lock:
            state = self._running("promote")
            new = machine.promote(state, self.clock(), full=full)
            if new.done:
                await self._end_rollout(new)
            else:
                self.rollout = new
                await self._apply(new)
                self._ensure_ticker()
            return self._status()

    async def resume_rollout(self) -> dict[str, Any]:
        lock, _ = self._sync()
        async with lock:
            self.rollout = machine.resume(self._running("resume"), self.clock())
            await self._apply(self.rollout)
            self._ensure_ticker()
            return self._status()

    async def rollback(self, reason: str = "rolled back by operator") -> dict[str, Any]:
        """Abort the running rollout (all traffic back to the active version); with none
        running, redeploy the version that served before the last deploy."""
        lock, _ = self._sync()
        async with lock:
            if self.rollout is not None and not self.rollout.done:
                await self._end_rollout(machine.rollback(self.rollout, self.clock(), reason))
                return self._status()
            snapshot = next((s for s in reversed(self.snapshots) if s.spec is not None and s.spec.version != self.active), None)
        if snapshot is None or snapshot.spec is None:
            raise DeploymentError(
                f"{self.program} has nothing to roll back to: no rollout is running and no earlier version was "
                "recorded.",
                hint="",
            )
        telemetry.emit(
            ERROR_RECOVERY, {"attempt": 1}, {"component": "hotswap", "strategy": "rollback", "error": "OperatorRollback"}
        )
        return await self.deploy(snapshot.spec)

    async def scale_down(self, version: VersionId) -> dict[str, Any]:
        """Stop a version that takes no traffic (drain, then standby or stop)."""
        lock, _ = self._sync()
        async with lock:
            slot = self.slots.get(version)
            if slot is None:
                raise NotFound(f"{self.program} has no deployed version {version!r}.")
            if self.weights.get(version, 0.0) > 0:
                raise DeploymentError(
                    f"Version {version!r} of {self.program} still takes {self.weights[version]:g} % of traffic; "
                    "set its weight to 0 first.",
                    hint="",
                )
            if self.rollout is not None and not self.rollout.done and version in (self.rollout.staged, self.rollout.active):
                raise DeploymentError(f"Version {version!r} is part of the running rollout; roll it back first.", hint="")
            del self.slots[version]
            self.weights.pop(version, None)
            if self.active == version:
                self.active = None
            await self._publish()
            await self.pool.retire(slot.replicas)
            return self._status()

    def _running(self, event: str) -> machine.RolloutState:
        if self.rollout is None or self.rollout.done:
            raise DeploymentError(f"{self.program} has no rollout running to {event}.", hint="")
        return self.rollout

    # -- reading -----------------------------------------------------------------------------
    async def routing_table(self) -> RoutingTable:
        return self._table

    async def watch(self, epoch: int, timeout_s: float = 10.0) -> RoutingTable | None:
        """The routing table once its epoch is past ``epoch`` (long poll); None on timeout."""
        _, changed = self._sync()
        if self.epoch > epoch:
            return self._table
        try:
            async with changed:
                await asyncio.wait_for(changed.wait_for(lambda: self.epoch > epoch), timeout=timeout_s)
        except TimeoutError:
            return None
        return self._table

    async def assignment(self, predictor_id: str) -> VersionSpec | None:
        """The version a (restarted) predictor should host; None: it is a standby."""
        return self.pool.assignments.get(predictor_id)

    async def metrics(self, version: VersionId, window_s: float | None = None) -> dict[str, Any]:
        """The version's metrics merged over its replicas (``MetricsView`` as plain data)."""
        if version not in self.slots:
            raise NotFound(f"{self.program} has no deployed version {version!r}.")
        return (await self._version_metrics(version, window_s)).to_dict()

    async def status(self) -> dict[str, Any]:
        self._sync()
        return self._status()

    def _status(self) -> dict[str, Any]:
        last = self.swaps[-1].to_dict() if self.swaps else None
        return {
            "program": self.program,
            "active": self.active,
            "weights": dict(self.weights),
            "epoch": self.epoch,
            "versions": {v: [r.predictor_id for r in s.replicas] for v, s in self.slots.items()},
            "standby": [r.predictor_id for r in self.pool.standby],
            "rollout": self.rollout.describe() if self.rollout else None,
            "snapshots": len(self.snapshots),
            "last_swap": last,
        }

    async def swap_history(self, limit: int = 50) -> list[dict[str, Any]]:
        return [s.to_dict() for s in list(self.swaps)[-limit:]]

    async def predictors(self) -> list[dict[str, Any]]:
        """Each predictor's ``status()`` (or its error), standbys included."""
        replicas = [r for s in self.slots.values() for r in s.replicas] + list(self.pool.standby)
        results = await asyncio.gather(*(r.handle.status.remote() for r in replicas), return_exceptions=True)
        return [
            res if isinstance(res, dict) else {"predictor": r.predictor_id, "error": _ray.describe(_ray.unwrap(res))}
            for r, res in zip(replicas, results, strict=True)
        ]

    # -- replacing predictors that died for good --------------------------------------------------
    async def _monitor_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.monitor_s)
            try:
                await self.check_predictors()
            except Exception:
                log.exception("predictor check of %s failed", self.program)

    async def check_predictors(self) -> int:
        """Replace predictors that are dead for good (Ray gave up restarting them). Returns
        how many were replaced."""
        lock, _ = self._sync()
        replaced = 0
        async with lock:
            for version, slot in list(self.slots.items()):
                results = await asyncio.gather(*(r.handle.ready.remote() for r in slot.replicas), return_exceptions=True)
                for i, (r, res) in enumerate(zip(list(slot.replicas), results, strict=True)):
                    if not (isinstance(res, BaseException) and _dead_for_good(res)):
                        continue
                    fresh = await self.pool.replace(r, slot.spec)
                    slot.replicas[i] = fresh
                    log.warning("replaced dead predictor %s of %s@%s with %s", r.predictor_id, self.program, version, fresh.predictor_id)
                    replaced += 1
                    telemetry.emit(
                        ERROR_RECOVERY, {"attempt": 1}, {"component": "predictor", "strategy": "restart", "error": type(res).__name__}
                    )
            if replaced:
                await self._publish()
            standby = self.pool.standby
            alive = await asyncio.gather(*(r.handle.ready.remote() for r in standby), return_exceptions=True)
            self.pool.standby = [r for r, ok in zip(standby, alive, strict=True) if not (isinstance(ok, BaseException) and _dead_for_good(ok))]
        return replaced

    async def shutdown(self) -> None:
        """Stop every predictor (standbys included) and the loops."""
        self._closed = True
        for task in (self._ticker, self._monitor):
            if task is not None:
                task.cancel()
        self.pool.stop([r for slot in self.slots.values() for r in slot.replicas])
        self.slots.clear()
        self.weights = {}
        await self._publish()

    async def ready(self) -> bool:
        self._sync()
        return True


def _dead_for_good(exc: BaseException) -> bool:
    if "ray" not in sys.modules:
        return False
    from ray.exceptions import ActorDiedError

    return isinstance(exc, ActorDiedError)


def _kill_ray(handle: Any) -> None:
    from .local import LocalActor

    if isinstance(handle, LocalActor):
        handle.kill()
        return
    import ray

    try:
        ray.kill(handle, no_restart=True)
    except Exception:
        log.debug("ray.kill of a predictor failed", exc_info=True)
