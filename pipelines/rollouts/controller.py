"""The live rollout controller: a thin tick loop around the pure state machine (``machine.step``).

One controller drives the rollouts of one program through its ``HotSwapSupervisor``. A tick:

1. loads the program's active rollout from the persistence (so a control sent from another
   process, or a second controller, is seen; writes are compare-and-set);
2. the first time this controller sees the rollout, re-asserts it (``reconcile``): routing,
   shadowing and aliases become what the stored state says, whoever crashed where; then it
   executes the actions still pending (a control stored by the CLI, or a tick that died midway);
3. collects the canary test's result when one is due, and, when an analysis is due, fills a
   ``MetricsSnapshot`` from the supervisor's measured metrics over ``[window_start_s, now]``
   and the shadow pairs;
4. runs ``step`` (a ``Tick``, or the ``CanaryTestResult``), stores the new state with its
   actions as pending, brings the ``Deployment`` record along (``Deployment.sync``);
5. executes the actions: traffic, versions and aliases (``executor.py``), canary tests
   (``canary_test.py``), shadowing (``shadow.py``), webhooks (``webhooks.py``) and telemetry;
   then stores the state again without them. A routing action that fails stays pending and is
   retried first on the next tick, before the rollout moves on.

Time comes from the injected ``clock`` (epoch seconds by default, as every process that reads
the store must agree). ``tick()`` is public: tests drive it tick by tick; ``start()`` runs the
loop in the background (every ``tick_s``, default a fifth of the analysis interval).

Manual controls (``promote``, ``pause``, ``resume``, ``abort``, ``retry``, ``skip_analysis``,
``undo``) go through the same path and take effect at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from dspex.errors import DeploymentError, DSPexError, JobError, NotFound, StoreError

from .actions import (
    Abort,
    Action,
    CanaryTestResult,
    EmitTelemetry,
    Event,
    NotifyWebhook,
    Pause,
    Promote,
    Resume,
    Retry,
    RunCanaryTest,
    SkipAnalysis,
    Tick,
)
from .canary_test import CanaryTester
from .control import (
    apply_control,
    describe,
    emit_deployment_transition,
    save_record,
    submit_rollout,
    undo_target,
)
from .deployment import Deployment
from .executor import ActionExecutor, RollingPlan, default_rolling_plan
from .gates import NonInferiorityTest
from .machine import reconcile, step
from .metrics_source import SupervisorMetrics
from .persistence import MemoryPersistence, Persistence, RolloutRecord, active_record, pending_of
from .pinned import VersionCaller
from .pipeline import ValidationReport
from .registry import ProgramRegistry, as_specs
from .shadow import ShadowRecorder
from .snapshot import MetricsSnapshot
from .spec import RolloutSpec
from .state import Phase, RolloutState
from .webhooks import WebhookSender

__all__ = ["RolloutController", "TickReport", "tick_job"]

log = logging.getLogger("dspex.pipelines.rollouts")

_ANALYSED = (Phase.PROGRESSING, Phase.PREVIEW, Phase.ROLLING, Phase.SCALE_DOWN_DELAY)


@dataclass(frozen=True)
class TickReport:
    """What one tick did (``rollout_id`` None: the program has no active rollout)."""

    rollout_id: str | None
    phase: str | None = None
    step_index: int = -1
    weight: float = 0.0
    event: str = "tick"
    actions: tuple[str, ...] = ()
    error: str | None = None
    revision: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "actions": list(self.actions)}


def analysis_due(state: RolloutState, now: float) -> bool:
    """The machine analyses at most once per interval; no snapshot is needed otherwise."""
    if state.phase not in _ANALYSED:
        return False
    if state.phase is Phase.ROLLING:
        return True  # rolling progress is read every tick
    last = state.window_start_s if state.last_analysis_at is None else state.last_analysis_at
    return now - last >= state.spec.interval_s - 1e-9


class RolloutController:
    """Drives ``program``'s rollouts through ``supervisor`` (see the module docstring).

    Args:
        program: the program's name.
        supervisor: its ``HotSwapSupervisor`` (a Ray actor handle, or ``LocalActor``).
        persistence: where rollouts live (``StorePersistence`` for the store; default memory).
        registry: the program registry (aliases, lineage, the rollback window).
        specs: ``version -> VersionSpec`` (a function, dict or list); default
            ``RegistrySpecs`` when a registry is given.
        canary_tester: runs ``RunCanaryTest`` (default: the sim tasks' devsets and metric).
        shadow: the ``ShadowRecorder`` feeding non-inferiority gates.
        webhooks: the ``WebhookSender`` (default: one with retries).
        background: run canary tests, shadow traffic and webhooks as background tasks (a
            long-lived controller); False runs them inside ``tick()`` (a job's tick).
        clock: seconds; ``tick_s``: the loop's period (default interval / 5).
    """

    def __init__(
        self,
        program: str,
        supervisor: Any,
        *,
        persistence: Persistence | None = None,
        registry: ProgramRegistry | None = None,
        specs: Callable[[int], Any] | Mapping[int, Any] | Sequence[Any] | None = None,
        canary_tester: CanaryTester | None = None,
        shadow: ShadowRecorder | None = None,
        webhooks: WebhookSender | None = None,
        metrics: SupervisorMetrics | None = None,
        non_inferiority_test: NonInferiorityTest | None = None,
        rolling_plan: RollingPlan = default_rolling_plan,
        background: bool = True,
        clock: Callable[[], float] = time.time,
        tick_s: float | None = None,
    ) -> None:
        if not program:
            raise DeploymentError("A RolloutController needs the program's name.")
        if tick_s is not None and tick_s <= 0:
            raise DeploymentError(f"tick_s must be > 0, got {tick_s}.")
        self.program = program
        self.supervisor = supervisor
        self.persistence: Persistence = (
            persistence if persistence is not None else MemoryPersistence()
        )
        self.registry = registry
        if specs is None and registry is not None:
            from .registry import RegistrySpecs

            specs = RegistrySpecs(registry, program)
        self.specs = None if specs is None else as_specs(specs)
        self.caller = VersionCaller(supervisor)
        self.canary_tester = canary_tester or CanaryTester()
        self.shadow = shadow
        self.webhooks = webhooks or WebhookSender()
        self.metrics = metrics or SupervisorMetrics(supervisor, shadow=shadow)
        self.non_inferiority_test = non_inferiority_test
        self.executor = ActionExecutor(
            program,
            supervisor,
            specs=self.specs,
            registry=registry,
            shadow=shadow,
            rolling_plan=rolling_plan,
        )
        self.background = background
        self.clock = clock
        self.tick_s = tick_s
        self._reconciled: set[str] = set()
        self._canary_tasks: dict[tuple[str, int], asyncio.Task[CanaryTestResult]] = {}
        self._canary_results: dict[tuple[str, int], CanaryTestResult] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._shadow_task: asyncio.Task[None] | None = None
        self._shadow_stop: asyncio.Event | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        self.last_report: TickReport | None = None

    # -- reading ------------------------------------------------------------------------------
    def _active(self) -> RolloutRecord | None:
        return active_record(
            self.persistence, self.program, non_inferiority_test=self.non_inferiority_test
        )

    def state(self) -> RolloutState | None:
        """The active rollout's state as stored (None when there is none)."""
        record = self._active()
        return None if record is None else record.state

    def latest(self) -> RolloutRecord | None:
        stored = self.persistence.latest(self.program)
        if stored is None:
            return None
        return RolloutRecord.from_stored(stored, non_inferiority_test=self.non_inferiority_test)

    def status(self) -> dict[str, Any]:
        record = self._active() or self.latest()
        if record is None:
            return {"program": self.program, "rollout": None}
        deployment = self._deployment(record)
        return {
            "program": self.program,
            "rollout": describe(record, None if deployment is None else deployment.to_dict()),
        }

    def _deployment(self, record: RolloutRecord) -> Deployment | None:
        if record.deployment_id is None:
            return None
        try:
            return Deployment.from_dict(self.persistence.load_deployment(record.deployment_id))
        except NotFound:
            return None

    # -- starting rollouts --------------------------------------------------------------------
    async def _champion(self) -> int | None:
        """The registry's champion alias; else what the last rollout left live; else the
        version the supervisor serves."""
        if self.registry is not None:
            champion = self.registry.alias(self.program, "champion")
            if champion is not None:
                return champion
        latest = self.latest()
        if latest is not None:
            s = latest.state
            return s.canary if s.phase is Phase.SUCCEEDED else s.champion
        active = (await self.executor.status()).get("active")
        return active if isinstance(active, int) and not isinstance(active, bool) else None

    def _recent(self) -> list[int]:
        if self.registry is not None:
            return self.registry.recent(self.program)
        latest = self.latest()
        if (
            latest is not None
            and latest.state.phase is Phase.SUCCEEDED
            and latest.state.champion is not None
        ):
            return [latest.state.champion]
        return []

    async def submit(
        self,
        version: int,
        spec: RolloutSpec | None = None,
        *,
        champion: int | None = None,
        pipeline: str | None = None,
        trigger_reason: str = "manual",
        validation: ValidationReport | None = None,
    ) -> RolloutState:
        """Roll ``version`` out with ``spec`` (default ``RolloutSpec()``); a rollout already
        running restarts from step 0 with it. Returns the state after the first tick."""
        spec = spec or RolloutSpec()
        async with self._guard():
            snapshot = self._program_snapshot(version)
            submit_rollout(
                self.persistence,
                self.program,
                version,
                spec,
                champion=await self._champion() if champion is None else champion,
                now=self.clock(),
                recent_versions=self._recent(),
                pipeline=pipeline,
                trigger_reason=trigger_reason,
                validation=validation,
                program_snapshot=snapshot,
                non_inferiority_test=self.non_inferiority_test,
            )
        await self.tick()
        state = self.state() or (self.latest() or _missing(self.program)).state
        return state

    def _program_snapshot(self, version: int) -> dict[str, Any]:
        if self.registry is None:
            return {"version": version}
        try:
            return self.registry.version(self.program, version).to_dict()
        except NotFound:
            return {"version": version, "registered": False}

    # -- manual controls ------------------------------------------------------------------------
    async def control(self, event: Event) -> RolloutState:
        """Apply ``event`` (Promote, Pause, Resume, Abort, Retry, SkipAnalysis, NewVersion) now."""
        async with self._guard():
            for _ in range(3):
                try:
                    record, _ = apply_control(
                        self.persistence,
                        self.program,
                        event,
                        self.clock(),
                        non_inferiority_test=self.non_inferiority_test,
                    )
                    break
                except StoreError as exc:
                    if not exc.fields.get("conflict"):
                        raise
            else:
                raise DeploymentError(
                    f"The rollout of {self.program!r} kept changing; try {event.name} again."
                )
            record = await self._run_pending(record)
            await self._sync_deployment(record, None)
            return record.state

    async def promote(self, full: bool = False) -> RolloutState:
        return await self.control(Promote(full=full))

    async def pause(self, reason: str = "paused by operator") -> RolloutState:
        return await self.control(Pause(reason=reason))

    async def resume(self) -> RolloutState:
        return await self.control(Resume())

    async def abort(self, reason: str = "aborted by operator") -> RolloutState:
        return await self.control(Abort(reason=reason))

    async def retry(self) -> RolloutState:
        """Start an ended (aborted, failed, rolled back) rollout again; it initializes at once."""
        await self.control(Retry())
        await self.tick()
        return self.state() or (self.latest() or _missing(self.program)).state

    async def skip_analysis(self) -> RolloutState:
        return await self.control(SkipAnalysis())

    async def undo(self) -> RolloutState:
        """Abort the running rollout; with none running, redeploy the previous champion at once
        (no gates) when it is within the last rollout's rollback window."""
        if self._active() is not None:
            return await self.abort("undone by operator")
        previous = self.registry.previous(self.program) if self.registry is not None else None
        target, spec = undo_target(
            self.persistence,
            self.program,
            previous=previous,
            recent=self._recent(),
            non_inferiority_test=self.non_inferiority_test,
        )
        return await self.submit(target, spec, trigger_reason="undo")

    # -- the tick -------------------------------------------------------------------------------
    def _guard(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def tick(self) -> TickReport:
        """One pass of the loop (module docstring). Safe to call from tests and jobs."""
        async with self._guard():
            for _ in range(3):
                try:
                    report = await self._tick_once()
                    self.last_report = report
                    return report
                except StoreError as exc:
                    if not exc.fields.get("conflict"):
                        raise
                    log.info("rollout of %s changed under this tick; reloading", self.program)
            raise DeploymentError(
                f"The rollout of {self.program!r} kept changing under the controller; it will try again."
            )

    def _current(self) -> RolloutRecord | None:
        """The active rollout, or the latest one while it still has actions to execute (a
        rollback's traffic switch must happen even though the rollout has ended)."""
        record = self._active()
        if record is None:
            latest = self.latest()
            if latest is not None and latest.pending:
                return latest
        return record

    async def _tick_once(self) -> TickReport:
        record = self._current()
        if record is None:
            self._stop_shadow_task()
            return TickReport(None)
        first = record.rollout_id not in self._reconciled
        if first or record.pending:
            todo = [*record.pending, *(reconcile(record.state) if first else [])]
            record = await self._execute_and_store(record, todo, clear=len(record.pending))
            self._reconciled.add(record.rollout_id)
            if record.pending or record.state.phase.terminal:
                self._manage_shadow_task(record.state)
                return self._report(
                    record,
                    "pending" if record.pending else "reconcile",
                    tuple(a.kind for a in todo),
                )
        state, now = record.state, self.clock()
        event: Event = Tick()
        if state.phase is Phase.CANARY_TEST:
            result = await self._canary_result(state)
            if result is not None:
                event = result
        if self.shadow is not None and not self.background and state.shadow_active:
            await self.shadow.pump(self.caller)
        snapshot = (
            await self.metrics.snapshot(state, now)
            if isinstance(event, Tick) and analysis_due(state, now)
            else None
        )
        new_state, actions = step(state, event, snapshot, now)
        record = replace(record, state=new_state, pending=pending_of(actions), error=None)
        record = save_record(self.persistence, record, expected_revision=record.revision)
        await self._sync_deployment(record, snapshot)
        record = await self._execute_and_store(record, actions, clear=len(record.pending))
        self._manage_shadow_task(record.state)
        return self._report(record, event.name, tuple(a.kind for a in actions))

    def _report(self, record: RolloutRecord, event: str, actions: tuple[str, ...]) -> TickReport:
        s = record.state
        return TickReport(
            record.rollout_id,
            s.phase.value,
            s.step_index,
            s.weight,
            event,
            actions,
            record.error,
            record.revision,
        )

    async def _run_pending(self, record: RolloutRecord) -> RolloutRecord:
        return await self._execute_and_store(
            record, list(record.pending), clear=len(record.pending)
        )

    async def _execute_and_store(
        self, record: RolloutRecord, actions: Sequence[Action], *, clear: int
    ) -> RolloutRecord:
        """Execute ``actions``; store the record without its first ``clear`` pending actions
        (those among ``actions``) when they ran, or with the failed rest and the error."""
        failed_at, error = await self._execute(actions, record.state)
        if failed_at is None:
            if clear == 0:
                return record
            rest = record.pending[clear:]
            return save_record(
                self.persistence,
                replace(record, pending=rest, error=None),
                expected_revision=record.revision,
            )
        remaining = pending_of(actions[failed_at:])
        log.warning("rollout %s: %s (will retry)", record.rollout_id, error)
        new = replace(record, pending=(*remaining, *record.pending[clear:]), error=error)
        return save_record(self.persistence, new, expected_revision=record.revision)

    async def _execute(
        self, actions: Sequence[Action], state: RolloutState
    ) -> tuple[int | None, str | None]:
        for i, action in enumerate(actions):
            if isinstance(action, EmitTelemetry):
                action.emit()
            elif isinstance(action, NotifyWebhook):
                await self._webhook(action)
            elif isinstance(action, RunCanaryTest):
                await self._start_canary_test(state.rollout_id, action)
            else:
                try:
                    await self.executor.execute(action, state)
                except Exception as exc:
                    from dspex.actors import _ray

                    return i, f"{action.kind} failed: {_ray.describe(_ray.unwrap(exc))}"
        return None, None

    async def _sync_deployment(
        self, record: RolloutRecord, snapshot: MetricsSnapshot | None
    ) -> None:
        dep = self._deployment(record)
        if dep is None:
            return
        try:
            synced = dep.sync(record.state, self.clock(), snapshot)
        except DSPexError as exc:  # the record must never hold the rollout itself up
            log.warning(
                "deployment %s could not follow rollout %s: %s", dep.id, record.rollout_id, exc
            )
            return
        if synced.to_dict() != dep.to_dict():
            self.persistence.save_deployment(synced.to_dict())
            emit_deployment_transition(dep.id, dep.status.value, synced.status.value)

    # -- side work: canary tests, webhooks, shadow traffic ----------------------------------------
    async def _start_canary_test(self, rollout_id: str, action: RunCanaryTest) -> None:
        key = (rollout_id, action.version)
        if key in self._canary_results or (
            key in self._canary_tasks and not self._canary_tasks[key].done()
        ):
            return
        if self.background:
            self._canary_tasks[key] = asyncio.get_running_loop().create_task(
                self.canary_tester.run(self.caller, action)
            )
        else:
            self._canary_results[key] = await self.canary_tester.run(self.caller, action)

    async def _canary_result(self, state: RolloutState) -> CanaryTestResult | None:
        key = (state.rollout_id, state.canary)
        if key in self._canary_results:
            return self._canary_results.pop(key)
        task = self._canary_tasks.get(key)
        if task is None:  # the test's action ran in a controller that is gone: run it again
            test = state.spec.canary_test
            if test is None:
                return None
            action = RunCanaryTest(state.canary, test.devset, test.min_score, test.max_examples)
            await self._start_canary_test(state.rollout_id, action)
            return self._canary_results.pop(key, None)
        if not task.done():
            return None
        del self._canary_tasks[key]
        try:
            return task.result()
        except Exception as exc:
            return CanaryTestResult(version=state.canary, error=f"{type(exc).__name__}: {exc}")

    async def _webhook(self, action: NotifyWebhook) -> None:
        if self.background:
            task = asyncio.get_running_loop().create_task(self.webhooks.send(action))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            await self.webhooks.send(action)

    def _manage_shadow_task(self, state: RolloutState) -> None:
        if self.shadow is None or not self.background:
            return
        if self.shadow.versions is None:
            self._stop_shadow_task()
        elif self._shadow_task is None or self._shadow_task.done():
            self._shadow_stop = asyncio.Event()
            self._shadow_task = asyncio.get_running_loop().create_task(
                self.shadow.run(self.caller, self._shadow_stop)
            )

    def _stop_shadow_task(self) -> None:
        if self._shadow_stop is not None:
            self._shadow_stop.set()
        self._shadow_task = None

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Wait for background webhooks and canary tests (tests, shutdown)."""
        pending = [*self._tasks, *(t for t in self._canary_tasks.values() if not t.done())]
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)

    # -- the loop -----------------------------------------------------------------------------
    def period_s(self) -> float:
        if self.tick_s is not None:
            return self.tick_s
        state = self.state()
        interval = state.spec.interval_s if state is not None else 10.0
        return min(5.0, max(0.02, interval / 5.0))

    async def run(self, stop: asyncio.Event | None = None, *, until_done: bool = False) -> None:
        """Tick every ``period_s()`` until ``stop`` is set (or, with ``until_done``, until the
        program has no active rollout)."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                report = await self.tick()
                if until_done and report.rollout_id is None:
                    return
            except Exception:
                log.exception("rollout tick of %s failed; retrying next tick", self.program)
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.period_s())
            except TimeoutError:
                pass

    def start(self) -> asyncio.Task[None]:
        """Run the loop in the background on the running event loop."""
        if self._loop_task is None or self._loop_task.done():
            self._stop = asyncio.Event()
            self._loop_task = asyncio.get_running_loop().create_task(self.run(self._stop))
        return self._loop_task

    async def stop(self) -> None:
        """Stop the loop and every background task (the persisted state stays as it is). The
        shadow pump finishes its batch; webhooks and canary tests still running are cancelled."""
        if self._stop is not None:
            self._stop.set()
        shadow = self._shadow_task
        self._stop_shadow_task()
        others = [t for t in (*self._tasks, *self._canary_tasks.values()) if not t.done()]
        for task in others:
            task.cancel()
        waiting = [t for t in (self._loop_task, shadow, *others) if t is not None]
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=10.0)
            for task in late:
                task.cancel()
        self._loop_task = None
        await self.webhooks.aclose()


def _missing(program: str) -> RolloutRecord:
    raise NotFound(f"The rollout of {program!r} disappeared from the store.")


# -- the durable tick (jobs engine: kind ``rollout_tick``) -------------------------------------------
_job_controllers: dict[tuple[str, str], RolloutController] = {}


def tick_job(args: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """One controller tick as a durable job (``dspex.pipelines.jobs`` kind ``rollout_tick``).

    ``args``: ``{"program": "qa", "lm": {...}, "shadow_devset": "sim:arithmetic:dev:200"}``.
    The controller is kept per process between ticks (so its shadow pairs survive), works on
    the job's store and reaches the program's supervisor by name on the Ray cluster. When the
    program has no active rollout left, the job removes its own schedule ``rollout:<program>``.
    """
    from dspex.actors import _ray
    from dspex.utils.asyncio_bridge import run_sync

    program = str(args.get("program") or "")
    if not program:
        raise JobError("A rollout_tick job needs args['program'].", discard=True)
    key = (program, str(getattr(ctx.store, "url", id(ctx.store))))
    controller = _job_controllers.get(key)
    if controller is None:
        supervisor = _ray.lookup(_ray.supervisor_name(program))
        if supervisor is None:
            raise JobError(
                f"No supervisor runs program {program!r} on the Ray cluster this job sees; deploy it first."
            )
        controller = _job_controllers[key] = _job_controller(program, supervisor, args, ctx)
    controller.clock = ctx.clock
    try:
        report = run_sync(controller.tick())
    except Exception:
        _job_controllers.pop(key, None)  # e.g. the supervisor was restarted: look it up again
        raise
    if report.rollout_id is None:
        from dspex.store.jobs import JobStore

        try:
            JobStore(ctx.store).remove_schedule(f"rollout:{program}")
        except NotFound:
            pass
        _job_controllers.pop(key, None)
    return report.to_dict()


def _job_controller(
    program: str, supervisor: Any, args: Mapping[str, Any], ctx: Any
) -> RolloutController:
    from .persistence import StorePersistence
    from .registry import RegistrySpecs
    from .shadow import ReplaySource

    registry = ProgramRegistry(ctx.store)
    lm = None
    if args.get("lm"):
        from dspex.pipelines.jobs.inputs import resolve_lm

        lm = resolve_lm(args["lm"], ctx.store).build()
    shadow = None
    if args.get("shadow_devset"):
        from .canary_test import sim_devset

        shadow = ShadowRecorder(
            source=ReplaySource(sim_devset(str(args["shadow_devset"]))), clock=ctx.clock
        )
    return RolloutController(
        program,
        supervisor,
        persistence=StorePersistence(ctx.store),
        registry=registry,
        specs=RegistrySpecs(registry, program, lm=lm),
        shadow=shadow,
        background=False,
        clock=ctx.clock,
    )
