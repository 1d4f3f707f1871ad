"""The live rollout controller on real Ray Serve, with the sim server's LMs (issue 10, "What must
hold"). One Serve application ("ro") for the module; each test rolls a new registered version
out through the program's HotSwapSupervisor while user traffic goes through the HTTP ingress.

Versions are registry versions (state + recipe), their LM named in the version's notes, so the
controller builds what it deploys with ``RegistrySpecs`` exactly as in production. Intervals are
short (``allow_short_interval``) and the clock is the wall clock: this is the live loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

import dspex
from dspex.pipelines.rollouts import (
    Phase,
    RolloutSpec,
    Strategy,
    error_rate,
    non_inferiority,
)
from dspex.pipelines.rollouts.canary_test import sim_metric
from dspex.pipelines.rollouts.controller import RolloutController
from dspex.pipelines.rollouts.persistence import StorePersistence
from dspex.pipelines.rollouts.registry import ProgramRegistry, RegisteredVersion, RegistrySpecs
from dspex.pipelines.rollouts.shadow import ReplaySource, ShadowRecorder

pytestmark = [pytest.mark.ray, pytest.mark.serve]

PROGRAM = "ro"


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], timeout_s: float, what: str, interval_s: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@dataclass
class Request:
    start: float
    status: int
    version: str | None


@dataclass
class Load:
    """Closed-loop user traffic through the ingress (``pause_s`` between a worker's calls)."""

    url: str
    workers: int = 6
    pause_s: float = 0.0
    results: list[Request] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:

            async def worker(w: int) -> None:
                i = 0
                while not self._stop.is_set():
                    i += 1
                    start = time.time()
                    try:
                        r = await client.post(
                            f"/v1/programs/{PROGRAM}/predict",
                            json={"inputs": {"question": f"u{w}-{i}: 2+2?"}},
                        )
                        self.results.append(
                            Request(start, r.status_code, r.headers.get("X-Dspex-Version"))
                        )
                    except httpx.HTTPError:
                        self.results.append(Request(start, 0, None))
                    if self.pause_s:
                        await asyncio.sleep(self.pause_s)

            await asyncio.gather(*(worker(w) for w in range(self.workers)))

    def stop(self) -> None:
        self._stop.set()


@dataclass
class App:
    supervisor: Any
    url: str
    sim_url: str
    store: Any
    registry: ProgramRegistry

    def lm_for(self, version: RegisteredVersion) -> Any:
        from dspex.clients.lm import LM

        return LM(
            f"openai/{version.record.notes['model']}",
            api_base=self.sim_url,
            api_key="sim",
            cache=False,
            num_retries=0,
        )

    def register(self, instructions: str, model: str) -> int:
        program = dspex.Predict(dspex.Signature("question -> answer", instructions))
        return self.registry.register(
            PROGRAM, program, recipe={"signature": "question -> answer"}, notes={"model": model}
        ).version

    def controller(self, **kw: Any) -> RolloutController:
        kw.setdefault("tick_s", 0.1)
        return RolloutController(
            PROGRAM,
            self.supervisor,
            persistence=StorePersistence(self.store),
            registry=self.registry,
            specs=RegistrySpecs(self.registry, PROGRAM, lm=self.lm_for),
            **kw,
        )

    async def status(self) -> dict[str, Any]:
        status: dict[str, Any] = await self.supervisor.status.remote()
        return status


@pytest.fixture(scope="module")
def app(
    serve_session: Any, sim_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[App]:
    from dspex.cluster.serve import ServeOptions, delete_program, deploy_program, program_supervisor
    from dspex.store import open_store

    path: Path = tmp_path_factory.mktemp("rollout") / "store.db"
    store = open_store(f"sqlite:///{path}", shared=False)
    registry = ProgramRegistry(store, actor="test")
    rig = App(None, f"{serve_session.url}/ro", sim_server.openai_base_url, store, registry)
    first = rig.register("Answer the question.", "sim-medium-fast")
    registry.deploy(PROGRAM, first)
    spec = RegistrySpecs(registry, PROGRAM, lm=rig.lm_for)(first)
    deploy_program(spec, options=ServeOptions(route_prefix="/ro", max_replicas=1), tick_s=0.2)
    rig.supervisor = program_supervisor(PROGRAM)
    try:
        yield rig
    finally:
        sim_server.reset()
        delete_program(PROGRAM)


async def test_a_canary_whose_error_rate_is_raised_mid_rollout_is_rolled_back(
    app: App, sim_server: Any
) -> None:
    sim_server.reset()
    champion = (await app.status())["active"]
    canary = app.register(
        "Answer the question.", "sim-small-fast"
    )  # its own model: faults hit it alone
    interval_s, threshold = 1.0, 2
    spec = RolloutSpec(
        interval_s=interval_s,
        threshold=threshold,
        step_weights=(10, 20, 40, 60, 80, 100),
        gates=(error_rate(0.05, min_executions=5),),
        progress_deadline_s=60.0,
        allow_short_interval=True,
    )
    load = Load(app.url)
    traffic = asyncio.create_task(load.run())
    ctl = app.controller()
    max_weight = 0.0
    try:
        await ctl.submit(canary, spec)
        ctl.start()

        async def at_step_2() -> bool:
            state = ctl.state()
            return state is not None and state.step_index >= 1

        await wait_for(at_step_2, 20.0, "the canary to reach its second step", interval_s=0.01)
        sim_server.set_faults("sim-small-fast", error_rate=1.0)
        raised = time.time()

        async def rolled_back() -> bool:
            nonlocal max_weight
            state = ctl.state()
            if state is not None:
                max_weight = max(max_weight, state.weight)
                return False
            latest = ctl.latest()
            return latest is not None and latest.state.phase is Phase.ROLLED_BACK

        await wait_for(rolled_back, 20.0, "the rollback", interval_s=0.01)
        observed = time.time()
        await asyncio.sleep(1.0)
    finally:
        load.stop()
        await traffic
        await ctl.stop()
        sim_server.reset()
    took_s = observed - raised
    print(
        f"\nrolled back {took_s:.2f} s after the fault (bound {interval_s * threshold + interval_s:g} s)"
    )
    assert took_s <= interval_s * threshold + interval_s + 0.3  # + the tick period and this poll
    status = await app.status()
    assert status["weights"] == {champion: 100.0} and status["active"] == champion
    assert app.registry.aliases(PROGRAM) == {"champion": champion}
    failed = [r for r in load.results if r.status != 200]
    assert failed and {r.version for r in failed} == {str(canary)}  # only the canary's calls failed
    during = [r for r in load.results if raised <= r.start <= observed]
    share = sum(r.status != 200 for r in during) / len(during)
    assert share <= max_weight / 100.0 + 0.05, (
        share,
        max_weight,
    )  # no more than the canary's share
    after = [r for r in load.results if r.start > observed + 0.3]
    assert after and all(r.status == 200 and r.version == str(champion) for r in after)


async def test_a_healthy_canary_is_promoted_through_every_step_across_a_controller_restart(
    app: App,
) -> None:
    from dspex.pipelines.jobs import InlineExecutor, JobEngine

    champion = (await app.status())["active"]
    canary = app.register("Answer the question.", "sim-medium-fast")
    spec = RolloutSpec(
        interval_s=0.5,
        step_weights=(20, 50, 80, 100),
        gates=(error_rate(0.05, min_executions=3),),
        progress_deadline_s=60.0,
        allow_short_interval=True,
    )
    load = Load(app.url, workers=4)
    traffic = asyncio.create_task(load.run())
    seen: list[float] = []

    async def watch_weights() -> None:
        while True:
            weight = (await app.status())["weights"].get(canary)
            if weight is not None and (not seen or seen[-1] != weight):
                seen.append(weight)
            await asyncio.sleep(0.03)

    watcher = asyncio.create_task(watch_weights())
    # The engine's clock runs with the wall clock; ``skew_s`` moves it past rollout_tick's
    # uniqueness period (5 s: one tick job per 5 s) for the last tick, so that tick runs a job
    # whichever job happened to see the rollout succeed.
    skew_s = [0.0]
    engine = JobEngine(app.store, executor=InlineExecutor(), clock=lambda: time.time() + skew_s[0])
    try:
        first = app.controller()
        await first.submit(canary, spec)
        first.start()

        async def at_step_2() -> bool:
            state = first.state()
            return state is not None and state.step_index >= 1

        await wait_for(at_step_2, 20.0, "the second step")
        await first.stop()  # the controller dies mid-rollout; its state is in the store
        stored = first.state()
        assert stored is not None and stored.phase is Phase.PROGRESSING
        # a durable job takes over: a new controller built from the store, ticking as a job
        engine.schedule(
            f"rollout:{PROGRAM}", "rollout_tick", every_s=0.1, args={"program": PROGRAM}
        )
        outcome = (await asyncio.to_thread(engine.tick)).finished[0]
        assert outcome.error is None, outcome.error
        resumed = engine.jobs.get(outcome.job.id).result or {}
        assert resumed["rollout_id"] == stored.rollout_id
        assert resumed["step_index"] in (
            stored.step_index,
            stored.step_index + 1,
        )  # same step, or the next one
        latest = StorePersistence(app.store).latest(PROGRAM)
        assert latest is not None and latest.doc["restarts"] == 0 and latest.doc["attempts"] == 1

        async def done() -> bool:
            await asyncio.to_thread(engine.tick)
            stored_now = StorePersistence(app.store).latest(PROGRAM)
            return stored_now is not None and stored_now.doc["phase"] == "succeeded"

        await wait_for(done, 30.0, "the rollout to succeed under the durable job", interval_s=0.1)
        skew_s[0] = 5.1
        await asyncio.to_thread(engine.tick)  # no active rollout left: the job removes its schedule
    finally:
        load.stop()
        await traffic
        watcher.cancel()
    steps = [w for w in seen if w > 0]  # (0 % while the new version started)
    assert steps[0] == 20.0 and steps[-1] == 100.0 and steps == sorted(steps)
    assert {50.0, 80.0} <= set(steps)  # every step was taken
    statuses = {r.status for r in load.results}
    assert statuses == {200}, statuses  # no user request failed
    status = await app.status()
    assert status["active"] == canary and list(status["versions"]) == [
        canary
    ]  # the old one scaled down
    trail = app.registry.history(PROGRAM, "champion")
    assert (trail[-1].from_version, trail[-1].to_version) == (champion, canary)
    assert f"rollout:{PROGRAM}" not in {s.name for s in engine.jobs.schedules()}


async def test_a_low_traffic_canary_waits_instead_of_failing(app: App, sim_server: Any) -> None:
    canary = app.register("Answer the question.", "sim-small-fast")
    sim_server.set_faults(
        "sim-small-fast", error_rate=1.0
    )  # every canary call fails, but few arrive
    spec = RolloutSpec(
        interval_s=0.5,
        step_weights=(10, 100),
        gates=(error_rate(0.05, min_executions=50),),
        progress_deadline_s=60.0,
        allow_short_interval=True,
    )
    load = Load(app.url, workers=1, pause_s=0.2)
    traffic = asyncio.create_task(load.run())
    ctl = app.controller()
    try:
        await ctl.submit(canary, spec)
        ctl.start()
        await asyncio.sleep(3.0)  # six analysis intervals
        state = ctl.state()
        assert state is not None and state.phase is Phase.PROGRESSING and state.step_index == 0
        assert state.failed_checks == 0 and "waiting for data" in state.message
        runs = {r.gate: r for r in state.gate_runs}
        assert (
            runs["error_rate"].count == 0 and runs["error_rate"].last is not None
        )  # pending, never failed
        await ctl.abort("test over")
    finally:
        load.stop()
        await traffic
        await ctl.stop()
        sim_server.reset()
    assert sum(r.version == str(canary) for r in load.results) < 50


async def test_the_non_inferiority_gate_accepts_an_equal_version_and_rejects_one_10pp_worse(
    app: App,
) -> None:
    from dspex.sim import expected_score, get_task, load_task

    dev = load_task("arithmetic", n=1500, seed=7, split="dev")
    task = get_task("arithmetic")
    same, other, worse = (
        "Answer the question.",
        "Give the answer to the question.",
        "Answer the question. Estimate roughly instead of computing exactly.",
    )
    scores = {
        i: expected_score(task, dev, model="sim-large-fast", instructions=i)
        for i in (same, other, worse)
    }
    assert (
        abs(scores[same] - scores[other]) < 1e-9
    )  # equal: the same p on every example, other draws
    assert 0.09 <= scores[same] - scores[worse] <= 0.12  # about 10 pp worse

    base = app.register(same, "sim-large-fast")
    ctl = app.controller()
    await ctl.submit(base, RolloutSpec(strategy=Strategy.IMMEDIATE))
    await ctl.tick()
    assert ctl.latest().state.phase is Phase.SUCCEEDED  # type: ignore[union-attr]
    await ctl.stop()

    async def roll_out(instructions: str) -> tuple[Any, int]:
        version = app.register(instructions, "sim-large-fast")
        shadow = ShadowRecorder(
            sim_metric, source=ReplaySource(dev, cycle=False), batch_size=64, concurrency=32
        )
        spec = RolloutSpec(
            interval_s=1.0,
            step_weights=(50,),
            threshold=1,
            gates=(non_inferiority(0.05, min_pairs=200),),
            progress_deadline_s=90.0,
            allow_short_interval=True,
        )
        controller = app.controller(shadow=shadow)
        try:
            await controller.submit(version, spec)
            controller.start()

            async def ended() -> bool:
                return controller.state() is None

            await wait_for(ended, 90.0, f"the rollout of {instructions!r} to end", interval_s=0.1)
        finally:
            await controller.stop()
        latest = controller.latest()
        assert latest is not None
        return latest.state, len(shadow)

    accepted, pairs_equal = await roll_out(other)
    print(
        f"\nequal version: {accepted.phase.value} after {pairs_equal} shadow pairs: {accepted.message}"
    )
    assert accepted.phase is Phase.SUCCEEDED
    rejected, pairs_worse = await roll_out(worse)
    print(
        f"10 pp worse version: {rejected.phase.value} after {pairs_worse} shadow pairs: {rejected.message}"
    )
    assert rejected.phase is Phase.ROLLED_BACK and "worse than the margin" in rejected.message
    status = await app.status()
    assert status["weights"] == {accepted.canary: 100.0}
