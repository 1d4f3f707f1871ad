"""The live rollout controller, tick by tick, against a fake supervisor (no Ray).

``FakeSupervisor`` is a plain class with the HotSwapSupervisor's methods the controller uses.
Its traffic is a script (the precise situations a test needs): a version with weight w serves
``rps * w / 100`` calls per second, ``error_rate(t)`` of them failing, integrated exactly over
the window asked for on the shared manual clock. The registry is real (SQLite file).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.actors import LocalActor, VersionSpec
from dspex.actors.routing import Replica, Route, RoutingTable
from dspex.errors import (
    DeploymentError,
    InvalidTransition,
    NotFound,
    ProviderUnavailable,
    StoreError,
)
from dspex.pipelines.rollouts import (
    CanaryTest,
    Pause,
    Phase,
    Promote,
    RolloutSpec,
    Strategy,
    error_rate,
    minimum_executions,
    non_inferiority,
)
from dspex.pipelines.rollouts.canary_test import CanaryTester
from dspex.pipelines.rollouts.control import apply_control, rollout_status
from dspex.pipelines.rollouts.controller import RolloutController, analysis_due
from dspex.pipelines.rollouts.persistence import MemoryPersistence, StorePersistence
from dspex.pipelines.rollouts.registry import ProgramRegistry
from dspex.pipelines.rollouts.shadow import ReplaySource, ShadowRecorder
from dspex.pipelines.rollouts.simulate import ManualClock

PROGRAM = "qa"


def qa_factory() -> Any:
    return dspex.Predict("question -> answer")


class FakeReplica:
    def __init__(self, sup: FakeSupervisor, version: int) -> None:
        self.sup = sup
        self.version = version

    async def execute(
        self, inputs: dict[str, Any], version: Any = None, request_id: str | None = None
    ) -> Any:
        self.sup.pinned_calls.append(self.version)
        return self.sup.answers[self.version](inputs)


class FakeSupervisor:
    """The supervisor's surface with scripted traffic (see the module docstring)."""

    def __init__(self, clock: ManualClock, *, rps: float = 20.0, champion: int | None = 1) -> None:
        self.clock = clock
        self.rps = rps
        self.deployed: set[int] = set() if champion is None else {champion}
        self.weights: dict[int, float] = {} if champion is None else {champion: 100.0}
        self.active = champion
        self.history: list[tuple[float, dict[int, float]]] = [(clock(), dict(self.weights))]
        self.errors: dict[int, Callable[[float], float]] = {}
        self.answers: dict[int, Callable[[dict[str, Any]], Any]] = {}
        self.calls: list[tuple[str, Any]] = []
        self.pinned_calls: list[int] = []
        self.fail: dict[str, int] = {}  # method -> failures to inject
        self.epoch = 0
        self.rollout: dict[str, Any] | None = None

    def _maybe_fail(self, method: str) -> None:
        if self.fail.get(method, 0) > 0:
            self.fail[method] -= 1
            raise ProviderUnavailable(f"supervisor {method} is unreachable", provider="ray")

    async def status(self) -> dict[str, Any]:
        return {
            "program": PROGRAM,
            "active": self.active,
            "weights": dict(self.weights),
            "versions": {v: [f"p{v}"] for v in sorted(self.deployed)},
            "rollout": None if self.rollout is None else dict(self.rollout),
        }

    # -- the supervisor's own staged replacement (rolling updates) ----------------------------
    async def deploy(
        self, spec: VersionSpec, plan: Any = None, *, replace: bool = False
    ) -> dict[str, Any]:
        self.calls.append(("deploy", spec.version))
        self.deployed.add(int(spec.version))
        self.rollout = {
            "active": self.active,
            "staged": int(spec.version),
            "phase": "rolling",
            "weight": 0.0,
        }
        return await self.status()

    def replace_replicas(self, weight: float) -> None:
        """The test moves the supervisor's rolling replacement on."""
        assert self.rollout is not None
        staged, old = self.rollout["staged"], self.rollout["active"]
        self.rollout["weight"] = weight
        self.weights = {old: 100.0 - weight, staged: weight}
        if weight >= 100.0:
            self.rollout["phase"] = "complete"
            self.active = staged
            self.deployed.discard(old)
            self.weights = {staged: 100.0}
        self.history.append((self.clock(), dict(self.weights)))

    async def rollback(self, reason: str = "") -> dict[str, Any]:
        self.calls.append(("rollback", reason))
        assert self.rollout is not None
        staged, old = self.rollout["staged"], self.rollout["active"]
        self.rollout["phase"] = "rolled_back"
        self.deployed.discard(staged)
        self.weights = {old: 100.0}
        self.history.append((self.clock(), dict(self.weights)))
        return await self.status()

    async def prepare(self, spec: VersionSpec) -> dict[str, Any]:
        self._maybe_fail("prepare")
        self.calls.append(("prepare", spec.version))
        self.deployed.add(int(spec.version))
        self.weights.setdefault(int(spec.version), 0.0)
        return await self.status()

    async def set_weights(self, weights: dict[int, float]) -> RoutingTable:
        self._maybe_fail("set_weights")
        unknown = set(weights) - self.deployed
        assert not unknown, f"weights for undeployed versions {unknown}"
        assert abs(sum(weights.values()) - 100.0) < 1e-6
        self.calls.append(("set_weights", dict(weights)))
        self.weights = {v: float(weights.get(v, 0.0)) for v in self.deployed}
        top = max(self.weights, key=lambda v: self.weights[v])
        if self.weights[top] >= 100.0:
            self.active = top
        self.history.append((self.clock(), dict(self.weights)))
        return await self.routing_table()

    async def scale_down(self, version: int) -> dict[str, Any]:
        if version not in self.deployed:
            raise NotFound(f"no deployed version {version}")
        if self.weights.get(version, 0.0) > 0:
            raise DeploymentError(f"version {version} still takes traffic")
        self.calls.append(("scale_down", version))
        self.deployed.discard(version)
        self.weights.pop(version, None)
        return await self.status()

    async def metrics(self, version: int, window_s: float | None = None) -> dict[str, Any]:
        self._maybe_fail("metrics")
        if version not in self.deployed:
            raise NotFound(f"no deployed version {version}")
        now = self.clock()
        start = now - (window_s or 0.0)
        count = errors = 0.0
        t = start
        while t < now - 1e-9:
            dt = min(0.5, now - t)
            weights = [w for at, w in self.history if at <= t + 1e-9][-1]
            n = self.rps * weights.get(version, 0.0) / 100.0 * dt
            count += n
            errors += n * self.errors.get(version, lambda _t: 0.0)(t)
            t += dt
        c = int(count + 1e-6)
        return {
            "count": c,
            "errors": min(c, int(errors + 1e-6)),
            "p50_ms": 80.0,
            "p95_ms": 120.0,
            "p99_ms": 150.0,
        }

    async def routing_table(self) -> RoutingTable:
        self.epoch += 1
        routes = tuple(
            Route(
                v, self.weights.get(v, 0.0), (Replica(f"p{v}", LocalActor(FakeReplica(self, v))),)
            )
            for v in sorted(self.deployed)
        )
        return RoutingTable(PROGRAM, self.epoch, routes)

    def weight_calls(self) -> list[dict[int, float]]:
        return [c[1] for c in self.calls if c[0] == "set_weights"]


class Rig:
    def __init__(
        self, tmp_path: Path, *, rps: float = 20.0, store: bool = False, champion: int | None = 1
    ) -> None:
        from dspex.store import open_store

        self.clock = ManualClock(1_000.0)
        self.sup = FakeSupervisor(self.clock, rps=rps, champion=champion)
        self.handle = LocalActor(self.sup)
        db = open_store(f"sqlite:///{tmp_path / 'rollouts.db'}", shared=False)
        self.registry = ProgramRegistry(db)
        for v in (1, 2, 3):
            self.registry.register(
                PROGRAM,
                {"v": v},
                scores={"accuracy": 0.7 + v / 100},
                recipe={"signature": "question -> answer"},
            )
        if champion is not None:
            self.registry.set_alias(PROGRAM, "champion", champion, reason="initial")
        self.persistence: Any = StorePersistence(db) if store else MemoryPersistence()
        self.specs = {v: VersionSpec(PROGRAM, v, factory=qa_factory) for v in (1, 2, 3)}

    def controller(self, **kw: Any) -> RolloutController:
        kw.setdefault("registry", self.registry)
        kw.setdefault("specs", self.specs)
        return RolloutController(
            PROGRAM, self.handle, persistence=self.persistence, clock=self.clock, **kw
        )

    async def run(self, ctl: RolloutController, seconds: float, tick_s: float = 1.0) -> None:
        end = self.clock() + seconds
        while self.clock() < end - 1e-9:
            self.clock.advance(tick_s)
            await ctl.tick()


def spec(**kw: Any) -> RolloutSpec:
    kw.setdefault("interval_s", 10.0)
    kw.setdefault("gates", (error_rate(0.1, min_executions=5),))
    return RolloutSpec(**kw)


async def test_a_healthy_canary_is_promoted_through_every_step(tmp_path: Path) -> None:
    rig = Rig(tmp_path, store=True)
    ctl = rig.controller()
    state = await ctl.submit(2, spec())
    assert (state.phase, state.step_index, state.weight) == (Phase.PROGRESSING, 0, 5.0)
    assert rig.sup.weights == {1: 95.0, 2: 5.0} and ("prepare", 2) in rig.sup.calls
    assert rig.registry.alias(PROGRAM, "canary") == 2
    steps = []
    for _ in range(80):
        rig.clock.advance(1.0)
        report = await ctl.tick()
        steps.append(report.weight)
        if report.phase == "succeeded":
            break
    assert report.phase == "succeeded"
    # one step per passing analysis (every 10 s): 5, 10, 25, 50, 100
    # (the initial 0 % split was already in force after prepare, so it was not published again)
    assert [w[2] for w in rig.sup.weight_calls()] == [5.0, 10.0, 25.0, 50.0, 100.0]
    assert rig.sup.deployed == {2} and rig.sup.weights == {2: 100.0}  # the old champion scaled down
    assert rig.registry.aliases(PROGRAM) == {"champion": 2}
    trail = rig.registry.history(PROGRAM, "champion")
    assert (trail[-1].from_version, trail[-1].to_version) == (1, 2) and trail[-1].actor.startswith(
        "rollout:"
    )
    # persisted at every tick, and the deployment record followed it
    stored = rig.persistence.latest(PROGRAM)
    assert stored is not None and stored.revision >= len(steps)
    dep = rig.persistence.list_deployments(PROGRAM)[0]
    assert dep["status"] == "deployed" and dep["version"] == 2 and dep["completed_at"] is not None
    assert any("progressing -> promoting" in line for line in dep["logs"])
    assert dep["health_checks"] and dep["metrics"]["canary"]["executions"] > 0


async def test_an_error_spike_mid_rollout_rolls_back_within_interval_times_threshold_plus_interval(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    ctl = rig.controller()
    await ctl.submit(2, spec(threshold=2))
    await rig.run(ctl, 25.0)  # two steps passed
    state = ctl.state()
    assert state is not None and state.step_index == 2 and state.failed_checks == 0
    fault_at = rig.clock()
    rig.sup.errors[2] = lambda t: 0.5 if t >= fault_at else 0.0
    rolled_back_at = None
    for _ in range(60):
        rig.clock.advance(1.0)
        report = await ctl.tick()
        if report.phase == "rolled_back":
            rolled_back_at = rig.clock()
            break
    assert rolled_back_at is not None and rolled_back_at - fault_at <= 10.0 * 2 + 10.0
    assert rig.sup.weights == {1: 100.0} and rig.sup.deployed == {1}  # traffic back, canary gone
    assert rig.registry.aliases(PROGRAM) == {"champion": 1}
    latest = ctl.latest()
    assert (
        latest is not None
        and latest.state.failed_checks == 2
        and "error_rate" in latest.state.message
    )
    assert rig.persistence.list_deployments(PROGRAM)[0]["status"] == "rolled_back"
    # the ended rollout is not ticked any more
    assert (await ctl.tick()).rollout_id is None


async def test_a_restarted_controller_resumes_at_the_same_step(tmp_path: Path) -> None:
    rig = Rig(tmp_path, store=True)
    first = rig.controller()
    await first.submit(2, spec())
    await rig.run(first, 21.0)
    before = first.state()
    assert before is not None and before.step_index == 2
    calls_before = len(rig.sup.calls)
    del first  # the controller process dies; the store and the supervisor stay
    second = rig.controller()
    rig.clock.advance(1.0)
    report = await second.tick()
    assert report.step_index == 2 and report.weight == 25.0 and report.phase == "progressing"
    # re-asserting the stored state changed nothing live: weights were already right
    assert not [c for c in rig.sup.calls[calls_before:] if c[0] in ("set_weights", "prepare")]
    await rig.run(second, 40.0)
    assert second.latest() is not None and second.latest().state.phase is Phase.SUCCEEDED  # type: ignore[union-attr]


async def test_a_low_traffic_canary_waits_instead_of_failing(tmp_path: Path) -> None:
    rig = Rig(tmp_path, rps=2.0)  # 5 % of 2 calls/s: 1 call per 10 s interval
    ctl = rig.controller()
    await ctl.submit(
        2, spec(gates=(error_rate(0.1, min_executions=20),), progress_deadline_s=120.0)
    )
    rig.sup.errors[2] = lambda t: 1.0  # every call fails, but there are too few to judge
    await rig.run(ctl, 100.0)
    state = ctl.state()
    assert state is not None and state.phase is Phase.PROGRESSING and state.step_index == 0
    assert state.failed_checks == 0 and "waiting for data" in state.message
    # the window kept growing while waiting, so enough calls eventually arrive to judge
    assert state.window_start_s == state.phase_since


async def test_the_progress_deadline_bounds_the_wait(tmp_path: Path) -> None:
    rig = Rig(tmp_path, rps=0.5)
    ctl = rig.controller()
    await ctl.submit(2, spec(gates=(minimum_executions(50),), progress_deadline_s=60.0))
    await rig.run(ctl, 70.0)
    latest = ctl.latest()
    assert (
        latest is not None
        and latest.state.phase is Phase.FAILED
        and "progress deadline" in latest.state.message
    )
    assert rig.sup.weights == {1: 100.0}


async def test_manual_controls(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    ctl = rig.controller()
    await ctl.submit(2, spec())
    state = await ctl.pause("looking at a dashboard")
    assert state.phase is Phase.PAUSED and state.paused_from is Phase.PROGRESSING
    await rig.run(ctl, 40.0)
    assert ctl.state().step_index == 0  # type: ignore[union-attr]  # paused: no analysis
    state = await ctl.promote()  # one step while paused: back to progressing at step 2
    assert (state.phase, state.step_index, state.weight) == (Phase.PROGRESSING, 1, 10.0)
    assert rig.sup.weights[2] == 10.0
    with pytest.raises(InvalidTransition) as err:
        await ctl.resume()
    assert "progressing" in str(err.value) and "resume" in str(err.value)
    state = await ctl.abort("wrong version")
    assert (
        state.phase is Phase.ABORTED and rig.sup.weights == {1: 100.0} and 2 not in rig.sup.deployed
    )
    state = await ctl.retry()
    assert (
        state.phase is Phase.PROGRESSING
        and state.attempts == 2
        and rig.sup.weights == {1: 95.0, 2: 5.0}
    )
    state = await ctl.skip_analysis()
    assert state.skip_analysis
    state = await ctl.promote(full=True)
    assert state.phase is Phase.PROMOTING and rig.sup.weights[2] == 100.0
    rig.clock.advance(1.0)
    await ctl.tick()
    assert ctl.latest().state.phase is Phase.SUCCEEDED  # type: ignore[union-attr]
    assert rig.registry.alias(PROGRAM, "champion") == 2
    # undo: the previous champion comes back at once, without gates (rollback window)
    state = await ctl.undo()
    assert state.fast_track and state.phase in (Phase.PROMOTING, Phase.SUCCEEDED)
    rig.clock.advance(1.0)
    await ctl.tick()
    assert rig.sup.weights == {1: 100.0} and rig.registry.alias(PROGRAM, "champion") == 1
    with pytest.raises(NotFound):
        await ctl.pause()  # nothing running


async def test_a_new_version_mid_rollout_restarts_from_step_zero(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    ctl = rig.controller()
    await ctl.submit(2, spec())
    await rig.run(ctl, 21.0)
    assert ctl.state().step_index == 2  # type: ignore[union-attr]
    state = await ctl.submit(3, spec())
    assert (state.canary, state.step_index, state.weight, state.restarts) == (3, 0, 5.0, 1)
    assert rig.sup.weights == {1: 95.0, 3: 5.0} and 2 not in rig.sup.deployed
    assert rig.registry.alias(PROGRAM, "canary") == 3
    dep = rig.persistence.list_deployments(PROGRAM)[0]
    assert dep["version"] == 3 and any("version 3 replaces 2" in line for line in dep["logs"])


async def test_a_control_stored_by_another_process_is_executed_by_the_next_tick(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path, store=True)
    ctl = rig.controller()
    await ctl.submit(2, spec())
    # the CLI: store only, no supervisor
    record, _ = apply_control(rig.persistence, PROGRAM, Promote(), rig.clock())
    assert (record.state.step_index, record.state.weight) == (1, 10.0)
    assert rollout_status(rig.persistence, PROGRAM)["pending_actions"] == ["set_weights"]
    assert rig.sup.weights[2] == 5.0  # nothing live changed yet
    rig.clock.advance(1.0)
    report = await ctl.tick()
    assert report.step_index == 1 and rig.sup.weights == {1: 90.0, 2: 10.0}
    assert rollout_status(rig.persistence, PROGRAM)["pending_actions"] == []
    apply_control(rig.persistence, PROGRAM, Pause(reason="from the CLI"), rig.clock())
    with pytest.raises(InvalidTransition, match="paused"):
        apply_control(rig.persistence, PROGRAM, Pause(), rig.clock())
    assert rollout_status(rig.persistence, PROGRAM)["allowed"] == [
        "abort",
        "new_version",
        "promote",
        "resume",
        "skip_analysis",
    ]


async def test_a_failed_routing_action_stays_pending_and_holds_the_rollout(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    ctl = rig.controller()
    await ctl.submit(2, spec())
    rig.sup.fail["set_weights"] = 3
    await rig.run(ctl, 10.0)  # the analysis passes; moving to 10 % fails
    status = ctl.status()["rollout"]
    assert (
        status["pending_actions"][:1] == ["set_weights"] and "set_weights failed" in status["error"]
    )
    assert rig.sup.weights[2] == 5.0
    await rig.run(ctl, 3.0)  # retried each tick until the supervisor answers again
    assert rig.sup.weights[2] == 10.0 and ctl.status()["rollout"]["error"] is None
    assert ctl.state().step_index == 1  # type: ignore[union-attr]


async def test_an_unreachable_metrics_source_counts_as_errors_not_as_passes(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    ctl = rig.controller()
    await ctl.submit(2, spec(gates=(error_rate(0.1, min_executions=5, consecutive_error_limit=1),)))
    rig.sup.fail["metrics"] = 100
    await rig.run(ctl, 40.0)
    latest = ctl.latest()
    assert latest is not None and latest.state.phase is Phase.ROLLED_BACK
    assert "metrics unavailable" in latest.state.message


async def test_the_canary_test_replays_the_devset_pinned_to_the_new_version(tmp_path: Path) -> None:
    dev = [
        dspex.Example(question=f"q{i}", answer=str(i)).with_inputs("question") for i in range(20)
    ]
    rig = Rig(tmp_path)
    rig.sup.answers[2] = lambda inputs: {"answer": inputs["question"][1:]}  # right on all
    rig.sup.answers[3] = lambda inputs: {"answer": "0"}  # right on 1 of 20
    tester = CanaryTester(lambda ex, pred: ex.answer == pred["answer"], devsets={"dev": dev})
    ctl = rig.controller(canary_tester=tester)
    gate_spec = spec(canary_test=CanaryTest(devset="dev", min_score=0.9))
    state = await ctl.submit(2, gate_spec)
    assert state.phase is Phase.CANARY_TEST and rig.sup.weights[2] == 0.0
    await ctl.drain()
    rig.clock.advance(1.0)
    await ctl.tick()
    state = ctl.state()
    assert state is not None and state.phase is Phase.PROGRESSING and state.canary_test_score == 1.0
    assert rig.sup.pinned_calls.count(2) == 20
    await ctl.abort()
    await ctl.submit(3, gate_spec)
    await ctl.drain()
    rig.clock.advance(1.0)
    await ctl.tick()
    latest = ctl.latest()
    assert (
        latest is not None
        and latest.state.phase is Phase.FAILED
        and "0.05 < 0.9" in latest.state.message
    )
    assert all(w.get(3, 0.0) == 0.0 for w in rig.sup.weight_calls())  # never took live traffic
    # a devset nobody registered fails the rollout with a reason, instead of hanging
    await ctl.retry()
    ctl2 = rig.controller(canary_tester=CanaryTester(devsets={}))
    rig.clock.advance(1.0)
    await ctl2.tick()
    await ctl2.drain()
    rig.clock.advance(1.0)
    await ctl2.tick()
    assert "no pinned devset named 'dev'" in ctl2.latest().state.message  # type: ignore[union-attr]


def _binary_answers(accuracy: float, seed: int) -> Callable[[dict[str, Any]], Any]:
    import random

    def answer(inputs: dict[str, Any]) -> Any:
        i = int(inputs["question"][1:])
        right = random.Random(seed * 100_003 + i).random() < accuracy
        return {"answer": str(i) if right else "wrong"}

    return answer


@pytest.mark.parametrize(
    ("canary_accuracy", "outcome"), [(0.70, Phase.SUCCEEDED), (0.60, Phase.ROLLED_BACK)]
)
async def test_non_inferiority_on_shadow_pairs(
    tmp_path: Path, canary_accuracy: float, outcome: Phase
) -> None:
    examples = [
        dspex.Example(question=f"q{i}", answer=str(i)).with_inputs("question") for i in range(3000)
    ]
    rig = Rig(tmp_path)
    rig.sup.answers[1] = _binary_answers(0.70, 1)
    rig.sup.answers[2] = _binary_answers(canary_accuracy, 2)
    shadow = ShadowRecorder(
        lambda ex, pred: ex.answer == pred["answer"],
        source=ReplaySource(examples),
        batch_size=500,
        clock=rig.clock,
    )
    gate = non_inferiority(0.05, min_pairs=400, failure_limit=0)
    ctl = rig.controller(shadow=shadow, background=False)
    await ctl.submit(2, spec(gates=(gate,), step_weights=(50, 100), progress_deadline_s=600.0))
    await rig.run(ctl, 200.0, tick_s=5.0)
    latest = ctl.latest()
    assert latest is not None and latest.state.phase is outcome, latest.state.message
    assert shadow.versions is None  # shadowing stopped with the rollout
    assert len(set(rig.sup.pinned_calls)) == 2  # both versions answered the same inputs


async def test_compare_and_set_refuses_a_stale_write(tmp_path: Path) -> None:
    rig = Rig(tmp_path, store=True)
    ctl = rig.controller()
    await ctl.submit(2, spec())
    stored = rig.persistence.latest(PROGRAM)
    assert stored is not None
    rig.persistence.save_state(stored.doc, expected_revision=stored.revision)
    with pytest.raises(StoreError) as err:
        rig.persistence.save_state(stored.doc, expected_revision=stored.revision)
    assert err.value.fields["conflict"] is True
    rig.clock.advance(1.0)
    assert (await ctl.tick()).phase == "progressing"  # the controller reloads and carries on


async def test_a_first_version_needs_the_immediate_strategy(tmp_path: Path) -> None:
    rig = Rig(tmp_path, champion=None)
    ctl = rig.controller()
    with pytest.raises(DeploymentError, match="immediate"):
        await ctl.submit(1, spec())
    state = await ctl.submit(1, spec(strategy=Strategy.IMMEDIATE))
    assert state.phase is Phase.PROMOTING and rig.sup.weights == {1: 100.0}
    rig.clock.advance(1.0)
    await ctl.tick()
    assert rig.registry.alias(PROGRAM, "champion") == 1


async def test_the_background_loop_ticks_by_itself(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    ctl = rig.controller(tick_s=0.01)
    await ctl.submit(2, spec(gates=()))
    ctl.start()
    try:
        for _ in range(50):
            rig.clock.advance(5.0)
            await asyncio.sleep(0.02)
            if ctl.state() is None:
                break
    finally:
        await ctl.stop()
    assert ctl.latest().state.phase is Phase.SUCCEEDED  # type: ignore[union-attr]


def test_analysis_is_only_due_once_per_interval(tmp_path: Path) -> None:
    from dspex.pipelines.rollouts import start_rollout

    s = start_rollout(spec(), program=PROGRAM, canary=2, champion=1, now=0.0)
    assert not analysis_due(s, 100.0)  # initializing: nothing to analyse
    from dataclasses import replace

    s = replace(s, phase=Phase.PROGRESSING, last_analysis_at=50.0)
    assert not analysis_due(s, 59.0) and analysis_due(s, 60.0)


async def test_telemetry_gauges_and_deployment_transitions_are_emitted(tmp_path: Path) -> None:
    from dspex import telemetry
    from dspex.telemetry.names import DEPLOYMENT_TRANSITION, ROLLOUT_TICK, ROLLOUT_TRANSITION

    seen: list[tuple[tuple[str, ...], dict[str, Any], dict[str, Any]]] = []
    telemetry.attach_many(
        "test-rollout-live",
        [ROLLOUT_TICK, ROLLOUT_TRANSITION, DEPLOYMENT_TRANSITION],
        lambda e, m, md, _c: seen.append((e, dict(m), dict(md))),
    )
    try:
        rig = Rig(tmp_path)
        ctl = rig.controller()
        await ctl.submit(2, spec())
        await rig.run(ctl, 12.0)
    finally:
        telemetry.detach("test-rollout-live")
    ticks = [m for e, m, _ in seen if e == ROLLOUT_TICK]
    assert ticks and ticks[-1]["weight"] == 10.0 and ticks[-1]["failed_checks"] == 0.0
    assert {md["to"] for e, _, md in seen if e == ROLLOUT_TRANSITION} >= {"progressing"}
    deps = [(md["from"], md["to"]) for e, _, md in seen if e == DEPLOYMENT_TRANSITION]
    assert ("pending", "validating") in deps and ("validating", "deploying") in deps


async def test_webhooks_are_delivered_on_rollout_events(tmp_path: Path) -> None:
    import json

    from aiohttp import web

    from dspex.pipelines.rollouts import Webhook

    got: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(json.loads(await request.read()))
        return web.Response(text="ok")

    web_app = web.Application()
    web_app.router.add_post("/hook", hook)
    runner = web.AppRunner(web_app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        rig = Rig(tmp_path)
        ctl = rig.controller()
        hooks = (
            Webhook("ops", url=f"http://127.0.0.1:{port}/hook", events=("started", "rolled_back")),
        )
        await ctl.submit(2, spec(webhooks=hooks, threshold=1))
        rig.sup.errors[2] = lambda t: 1.0
        await rig.run(ctl, 12.0)
        await ctl.drain()
        await ctl.stop()
    finally:
        await runner.cleanup()
    assert [g["event"] for g in got] == ["started", "rolled_back"]
    assert (
        got[1]["program"] == PROGRAM and got[1]["version"] == 2 and "error_rate" in got[1]["reason"]
    )


async def test_blue_green_switches_at_once_and_an_abort_in_the_delay_switches_back(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    ctl = rig.controller()
    bg = spec(strategy=Strategy.BLUE_GREEN, gates=(), iterations=2, scale_down_delay_s=30.0)
    state = await ctl.submit(2, bg)
    assert state.phase is Phase.PREVIEW and rig.sup.weights == {
        1: 100.0,
        2: 0.0,
    }  # behind the preview route
    await rig.run(ctl, 21.0)
    state = ctl.state()
    assert (
        state is not None
        and state.phase is Phase.SCALE_DOWN_DELAY
        and rig.sup.weights == {1: 0.0, 2: 100.0}
    )
    assert 1 in rig.sup.deployed  # the old version is kept for an instant abort
    state = await ctl.abort("bad switch")
    assert rig.sup.weights == {1: 100.0} and rig.registry.alias(PROGRAM, "champion") == 1
    await ctl.retry()
    await rig.run(ctl, 60.0)
    assert ctl.latest().state.phase is Phase.SUCCEEDED and rig.sup.deployed == {2}  # type: ignore[union-attr]


async def test_a_rolling_update_follows_the_supervisor_and_rolls_back_through_it(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    ctl = rig.controller()
    state = await ctl.submit(2, spec(strategy=Strategy.ROLLING))
    assert state.phase is Phase.ROLLING and ("deploy", 2) in rig.sup.calls
    rig.sup.replace_replicas(50.0)
    rig.clock.advance(1.0)
    assert (await ctl.tick()).weight == 50.0  # progress read from the supervisor
    rig.sup.replace_replicas(100.0)
    await rig.run(ctl, 12.0)
    assert (
        ctl.latest().state.phase is Phase.SUCCEEDED and rig.registry.alias(PROGRAM, "champion") == 2
    )  # type: ignore[union-attr]
    # a failing rolling update goes back through the supervisor's rollback
    await ctl.submit(3, spec(strategy=Strategy.ROLLING, threshold=1))
    rig.sup.replace_replicas(50.0)
    rig.sup.errors[3] = lambda t: 1.0
    await rig.run(ctl, 12.0)
    assert ctl.latest().state.phase is Phase.ROLLED_BACK  # type: ignore[union-attr]
    assert rig.sup.calls[-1][0] == "rollback" and rig.sup.weights == {2: 100.0}
