"""HotSwapSupervisor and ProgramClient in local mode (LocalActor predictors, no Ray).

The supervisor and its predictors share a fake clock, so staged rollouts are driven tick by
tick (``supervisor.tick()``) while real calls run through real Predictor objects.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from dspex.actors import (
    HealthPolicy,
    HotSwapSupervisor,
    LocalActor,
    Predictor,
    ProgramClient,
    RolloutPlan,
    VersionSpec,
)

import dspex
from dspex import telemetry
from dspex.errors import DeploymentError, NotFound, ProviderTimeout, ToolError, ValidationError


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Echo(dspex.Module):
    """Answers with its version label after a short await; fails when told to."""

    def __init__(self, label: str = "", fail: bool = False) -> None:
        super().__init__()
        self.label = label
        self.fail = fail

    async def aforward(self, x: int) -> Any:
        await asyncio.sleep(0.001)
        if self.fail:
            raise ToolError(f"{self.label} is broken")
        return dspex.Prediction(label=self.label, x=x)


def spec(version: int, *, fail: bool = False, **kw: Any) -> VersionSpec:
    return VersionSpec("echo", version, factory=lambda: Echo(f"v{version}", fail), **kw)


class Harness:
    def __init__(self, replicas: int = 2) -> None:
        self.clock = Clock()
        self.spawned: list[Predictor] = []
        self.killed: list[Any] = []

        def spawn(pid: str) -> LocalActor:
            p = Predictor(pid, None, signature_cache=None, clock=self.clock)
            self.spawned.append(p)
            return LocalActor(p)

        def kill(handle: Any) -> None:
            self.killed.append(handle)
            handle.kill()

        self.sup = HotSwapSupervisor(
            "echo", replicas=replicas, tick_s=3600, monitor_s=0, spawn=spawn, kill=kill, clock=self.clock
        )
        self.handle = LocalActor(self.sup)
        self.client = ProgramClient("echo", supervisor=self.handle, max_staleness_s=0.05)


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    await harness.sup.shutdown()


async def load(client: ProgramClient, n: int, concurrency: int = 16) -> list[Any]:
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> Any:
        async with sem:
            return await client.acall_routed({"x": i})

    return list(await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True))


async def test_first_deploy_routes_all_traffic(h: Harness) -> None:
    status = await h.handle.deploy.remote(spec(1))
    assert status["active"] == 1 and status["weights"] == {1: 100.0}
    assert status["last_swap"]["outcome"] == "complete" and status["last_swap"]["swap_ms"] >= 0
    table = await h.handle.routing_table.remote()
    assert table.epoch >= 1 and len(table.routes[0].replicas) == 2
    out, version, pid = await h.client.acall_routed({"x": 5})
    assert (out.label, out.x, version) == ("v1", 5, 1) and pid.startswith("dspex.predictor.echo.")
    for r in table.routes[0].replicas:
        assert (await h.handle.assignment.remote(r.predictor_id)).version == 1


async def test_immediate_swaps_under_load_drop_nothing_and_reuse_predictors(h: Harness) -> None:
    await h.handle.deploy.remote(spec(1))
    stop = asyncio.Event()
    results: list[Any] = []

    async def traffic() -> None:
        while not stop.is_set():
            results.extend(await load(h.client, 16, 16))

    runner = asyncio.ensure_future(traffic())
    for v in range(2, 22):
        await asyncio.sleep(0.005)
        status = await h.handle.deploy.remote(spec(v))
        assert status["active"] == v and status["last_swap"]["outcome"] == "complete"
    await asyncio.sleep(0.02)
    stop.set()
    await runner
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == [] and len(results) > 100
    assert {v for _, v, _ in results} >= {1, 21}
    # the old predictors were drained and re-loaded: 2 replicas + 2 standbys, never more
    assert len(h.spawned) == 4 and h.killed == []
    assert all(p._in_flight == 0 for p in h.spawned)
    out, version, _ = await h.client.acall_routed({"x": 1})
    assert version == 21 and out.label == "v21"


async def test_a_client_with_a_stale_table_is_redirected(h: Harness) -> None:
    await h.handle.deploy.remote(spec(1))
    stale = ProgramClient("echo", supervisor=h.handle, max_staleness_s=3600)
    await stale.acall(x=0)  # caches the v1 table
    await h.handle.deploy.remote(spec(2))
    await h.handle.deploy.remote(spec(3))  # v1's predictors now host v3
    seen: list[dict[str, Any]] = []
    telemetry.attach("test-redirect", ("dspex", "error", "recovery"), lambda e, m, md, _: seen.append(md))
    try:
        out, version, _ = await stale.acall_routed({"x": 1})
    finally:
        telemetry.detach("test-redirect")
    assert version == 3 and out.label == "v3"
    assert stale.stats["redirects"] >= 1
    assert {"component": "program_client", "strategy": "retry", "error": "Moved"} in seen


async def drive(h: Harness, seconds: float, step_s: float = 1.0) -> list[dict[str, Any]]:
    """Traffic and ticks: per simulated second, 20 calls then a health check."""
    statuses = []
    t = 0.0
    while t < seconds:
        results = await load(h.client, 20, 10)
        assert not any(isinstance(r, DeploymentError) for r in results)
        h.clock.t += step_s
        t += step_s
        statuses.append(await h.handle.tick.remote())
    return statuses


POLICY = HealthPolicy(window_s=30.0, min_samples=5, max_error_rate=0.05, min_throughput_ratio=0.0, min_latency_delta_ms=1000)


async def test_staged_rollout_steps_to_completion(h: Harness) -> None:
    await h.handle.deploy.remote(spec(1))
    plan = RolloutPlan(steps=(20, 50, 100), step_s=3.0, health=POLICY)
    status = await h.handle.deploy.remote(spec(2), plan)
    assert status["rollout"]["phase"] == "rolling" and status["weights"] == {1: 80.0, 2: 20.0}
    weights_seen = []
    for s in await drive(h, 12.0):
        weights_seen.append(s["weights"].get(2))
        if s["rollout"]["phase"] == "complete":
            break
    assert weights_seen[0] == 20.0 and 50.0 in weights_seen and weights_seen[-1] == 100.0
    status = await h.handle.status.remote()
    assert status["active"] == 2 and status["weights"] == {2: 100.0} and status["rollout"]["phase"] == "complete"
    assert len(status["standby"]) == 2  # v1's predictors drained into standby
    results = await load(h.client, 30)
    assert {v for _, v, _ in results} == {2}


async def test_staged_rollout_rolls_back_a_failing_version(h: Harness) -> None:
    await h.handle.deploy.remote(spec(1))
    plan = RolloutPlan(steps=(50, 100), step_s=5.0, failure_threshold=2, health=POLICY)
    await h.handle.deploy.remote(spec(2, fail=True), plan)
    failures = 0
    for _ in range(6):
        results = await load(h.client, 20, 10)
        failures += sum(isinstance(r, ToolError) for r in results)
        h.clock.t += 1.0
        status = await h.handle.tick.remote()
        if status["rollout"]["phase"] != "rolling":
            break
    assert failures > 0  # the broken version did take (and fail) its share of traffic
    assert status["rollout"]["phase"] == "rolled_back"
    assert "error rate 100.0%" in status["rollout"]["reason"]
    assert status["active"] == 1 and status["weights"] == {1: 100.0} and 2 not in status["versions"]
    results = await load(h.client, 40)
    assert all(not isinstance(r, BaseException) and r[1] == 1 for r in results)


async def test_rollback_after_a_completed_swap_redeploys_the_previous_version(h: Harness) -> None:
    await h.handle.deploy.remote(spec(1))
    await h.handle.deploy.remote(spec(2))
    status = await h.handle.rollback.remote()
    assert status["active"] == 1
    out, version, _ = await h.client.acall_routed({"x": 1})
    assert version == 1 and out.label == "v1"


async def test_rollback_with_nothing_to_go_back_to(h: Harness) -> None:
    with pytest.raises(DeploymentError, match="nothing to roll back"):
        await h.handle.rollback.remote()


async def test_manual_weights_prepare_and_scale_down(h: Harness) -> None:
    await h.handle.deploy.remote(spec(1))
    await h.handle.prepare.remote(spec(2))
    assert (await h.handle.status.remote())["weights"] == {1: 100.0, 2: 0.0}
    table = await h.handle.set_weights.remote({1: 70, 2: 30})
    assert table.weights == {1: 70.0, 2: 30.0}
    results = await load(h.client, 200)
    served = [v for _, v, _ in results]
    assert 30 < served.count(2) < 90  # about 60 of 200
    with pytest.raises(ValidationError, match="sum to 100"):
        await h.handle.set_weights.remote({1: 70, 2: 20})
    with pytest.raises(ValidationError, match="not deployed"):
        await h.handle.set_weights.remote({1: 50, 3: 50})
    with pytest.raises(DeploymentError, match="still takes 30 %"):
        await h.handle.scale_down.remote(2)
    await h.handle.set_weights.remote({1: 0, 2: 100})
    assert (await h.handle.status.remote())["active"] == 2
    status = await h.handle.scale_down.remote(1)
    assert 1 not in status["versions"] and len(status["standby"]) == 2
    with pytest.raises(NotFound):
        await h.handle.scale_down.remote(1)


async def test_deploy_guards(h: Harness) -> None:
    with pytest.raises(DeploymentError, match="runs program 'echo'"):
        await h.handle.deploy.remote(VersionSpec("other", 1, factory=Echo))
    await h.handle.deploy.remote(spec(1))
    with pytest.raises(DeploymentError, match="already active"):
        await h.handle.deploy.remote(spec(1))
    await h.handle.deploy.remote(spec(2), RolloutPlan(step_s=100, health=POLICY))
    with pytest.raises(DeploymentError, match="still rolling"):
        await h.handle.deploy.remote(spec(3))
    status = await h.handle.deploy.remote(spec(3), RolloutPlan(step_s=100, health=POLICY), replace=True)
    assert status["rollout"]["staged"] == 3 and status["active"] == 1
    assert 2 not in status["versions"]
    status = await h.handle.promote.remote(full=True)
    assert status["active"] == 3 and status["weights"] == {3: 100.0}
    with pytest.raises(DeploymentError, match="no rollout running"):
        await h.handle.promote.remote()


async def test_a_version_that_fails_to_load_is_not_routed(h: Harness) -> None:
    await h.handle.deploy.remote(spec(1))
    broken = VersionSpec("echo", 2, factory=lambda: 1 / 0)
    with pytest.raises(DeploymentError, match="Could not start echo@2") as err:
        await h.handle.deploy.remote(broken)
    assert "factory of echo@2 raised" in str(err.value.__cause__)
    status = await h.handle.status.remote()
    assert status["active"] == 1 and status["weights"] == {1: 100.0}
    results = await load(h.client, 20)
    assert all(r[1] == 1 for r in results)


async def test_watch_long_polls_for_a_new_table(h: Harness) -> None:
    assert await h.handle.watch.remote(0, 0.01) is None
    waiter = asyncio.ensure_future(h.handle.watch.remote(0, 5.0))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    await h.handle.deploy.remote(spec(1))
    table = await asyncio.wait_for(waiter, 1.0)
    assert table is not None and table.weights == {1: 100.0}
    assert await h.handle.watch.remote(0, 5.0) is table  # already newer: returns at once


async def test_no_version_deployed_is_a_clear_error(h: Harness) -> None:
    with pytest.raises(DeploymentError, match="no version taking traffic"):
        await h.client.acall(x=1)


async def test_program_errors_reach_the_caller_unchanged(h: Harness) -> None:
    await h.handle.deploy.remote(spec(1, fail=True))
    with pytest.raises(ToolError, match="v1 is broken"):
        await h.client.acall(x=1)
    assert h.client.stats["failed"] == 1 and h.client.stats["redirects"] == 0


async def test_a_deployed_program_is_a_module_evaluate_can_run(h: Harness) -> None:
    await h.handle.deploy.remote(spec(1))
    devset = [dspex.Example(x=i).with_inputs("x") for i in range(30)]
    evaluate = dspex.Evaluate(devset=devset, metric=lambda ex, pred, trace=None: pred.x == ex.x and pred.label == "v1", num_threads=8)
    result = await evaluate.acall(h.client)
    assert result.score == 100.0
    assert isinstance(h.client, dspex.Module) and repr(h.client).startswith("ProgramClient(program='echo'")


async def test_a_client_pickles_without_its_thread_and_cache(h: Harness) -> None:
    import pickle

    client = ProgramClient("echo", supervisor=None, seed=3)
    client._table = await h.handle.routing_table.remote()
    back = pickle.loads(pickle.dumps(client))
    assert back.program == "echo" and back.table is None and not back._closed.is_set()


class Sleepy(dspex.Module):
    async def aforward(self, x: int) -> Any:
        await asyncio.sleep(0.2)
        return dspex.Prediction(x=x)


async def test_the_client_guard_times_out_a_call_that_never_answers(h: Harness) -> None:
    await h.handle.deploy.remote(VersionSpec("echo", 1, factory=Sleepy))
    impatient = ProgramClient("echo", supervisor=h.handle, call_timeout_s=0.02)
    with pytest.raises(ProviderTimeout, match=r"did not answer within call_timeout_s=0\.02"):
        await impatient.acall(x=1)
    assert impatient.stats["failed"] == 1
    await asyncio.sleep(0.25)  # let the abandoned call finish before the supervisor shuts down
