"""The live controller's parts on their own: pinned calls, shadow recording, the metrics source,
the persistence (memory and SQLite) and their refusals of bad input."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.actors import LocalActor
from dspex.actors.routing import Replica, Route, RoutingTable
from dspex.errors import (
    ConfigurationError,
    NotFound,
    Overloaded,
    ProviderUnavailable,
    StoreError,
    ValidationError,
)
from dspex.pipelines.rollouts import RolloutSpec, SetWeights, error_rate, start_rollout
from dspex.pipelines.rollouts.canary_test import CanaryTester, inputs_of, sim_devset, sim_metric
from dspex.pipelines.rollouts.metrics_source import SupervisorMetrics
from dspex.pipelines.rollouts.persistence import MemoryPersistence, RolloutRecord, StorePersistence
from dspex.pipelines.rollouts.pinned import VersionCaller
from dspex.pipelines.rollouts.shadow import ReplaySource, ShadowRecorder
from dspex.pipelines.rollouts.simulate import ManualClock


class Replica_:
    def __init__(self, version: int, refusals: int = 0) -> None:
        self.version = version
        self.refusals = refusals
        self.calls = 0

    async def execute(
        self, inputs: dict[str, Any], version: Any = None, request_id: str | None = None
    ) -> Any:
        self.calls += 1
        if self.refusals:
            self.refusals -= 1
            raise Overloaded("draining", draining=True)
        if inputs.get("boom"):
            raise ProviderUnavailable("the LM is down", provider="sim")
        return {"answer": f"v{self.version}:{inputs['question']}"}


class Sup:
    def __init__(self, replicas: dict[int, Replica_]) -> None:
        self.replicas = replicas
        self.tables = 0
        self.metrics_calls: list[tuple[int, float | None]] = []
        self.broken = False

    async def routing_table(self) -> RoutingTable:
        self.tables += 1
        routes = tuple(
            Route(v, 0.0, (Replica(f"p{v}", LocalActor(r)),)) for v, r in self.replicas.items()
        )
        return RoutingTable("qa", self.tables, routes)

    async def metrics(self, version: int, window_s: float | None = None) -> dict[str, Any]:
        self.metrics_calls.append((version, window_s))
        if self.broken:
            raise ProviderUnavailable("supervisor down", provider="ray")
        if version not in self.replicas:
            raise NotFound(f"no deployed version {version}")
        return {"count": 40, "errors": 2, "p50_ms": 10.0, "p95_ms": 50.0, "p99_ms": 90.0}

    async def status(self) -> dict[str, Any]:
        return {"active": 1, "rollout": None}


async def test_pinned_calls_reach_the_version_asked_for_and_follow_redirects() -> None:
    sup = Sup({1: Replica_(1), 2: Replica_(2, refusals=2)})
    caller = VersionCaller(LocalActor(sup))
    assert await caller.call(1, {"question": "q"}) == {"answer": "v1:q"}
    assert await caller.call(2, {"question": "q"}) == {"answer": "v2:q"}  # after two refusals
    assert sup.replicas[2].calls == 3 and sup.tables >= 2
    with pytest.raises(ProviderUnavailable):
        await caller.call(
            1, {"question": "q", "boom": True}
        )  # the program's own error goes through
    with pytest.raises(NotFound, match="Version 7"):
        await caller.call(7, {"question": "q"})
    stubborn = VersionCaller(LocalActor(Sup({3: Replica_(3, refusals=99)})), max_redirects=2)
    with pytest.raises(Overloaded):
        await stubborn.call(3, {"question": "q"})


async def test_shadow_pairs_are_the_same_inputs_scored_on_both_versions() -> None:
    clock = ManualClock(100.0)
    sup = Sup({1: Replica_(1), 2: Replica_(2)})
    examples = [
        dspex.Example(question=str(i), answer=f"v1:{i}").with_inputs("question") for i in range(5)
    ]
    recorder = ShadowRecorder(
        lambda ex, pred: pred["answer"] == ex.answer,
        source=ReplaySource(examples[:3]),
        batch_size=4,
        clock=clock,
    )
    assert recorder.pairs() is None and not recorder.offer(examples[3])  # off: nothing taken
    recorder.start(1, 2)
    assert recorder.offer(examples[4])
    caller = VersionCaller(LocalActor(sup))
    assert await recorder.pump(caller) == 4  # the offered one, topped up from the replay source
    clock.advance(10.0)
    assert await recorder.pump(caller) == 4  # the source cycles
    pairs = recorder.pairs()
    assert pairs is not None and (pairs.champion, pairs.canary, len(pairs)) == (1, 2, 8)
    assert set(pairs.champion_scores) == {1.0} and set(pairs.canary_scores) == {0.0}
    assert len(recorder.pairs(since_s=105.0) or ()) == 4  # the window asked for
    recorder.start(1, 3)  # other versions: start again from nothing
    assert len(recorder.pairs() or ()) == 0
    recorder.stop(1, 3)
    assert recorder.versions is None and await recorder.pump(caller) == 0


async def test_shadow_sampling_and_a_full_queue() -> None:
    recorder = ShadowRecorder(sim_metric, sample_rate=0.25, max_queue=2, batch_size=8)
    recorder.start(1, 2)
    kept = [recorder.offer({"question": str(i)}) for i in range(12)]
    assert sum(kept) == 3 and recorder.dropped == 1  # every 4th kept; the queue holds 2
    with pytest.raises(ConfigurationError):
        ShadowRecorder(sim_metric, sample_rate=0.0)
    with pytest.raises(ConfigurationError):
        ReplaySource([])


async def test_a_paced_shadow_run_stops_when_told() -> None:
    sup = Sup({1: Replica_(1), 2: Replica_(2)})
    recorder = ShadowRecorder(
        lambda ex, pred: True,
        source=ReplaySource([{"question": "x"}]),
        batch_size=10,
        pairs_per_s=100.0,
    )
    recorder.start(1, 2)
    stop = asyncio.Event()
    task = asyncio.create_task(recorder.run(VersionCaller(LocalActor(sup)), stop))
    await asyncio.sleep(0.25)
    stop.set()
    await asyncio.wait_for(task, 2.0)
    assert 10 <= len(recorder) <= 40  # about 100 pairs/s for 0.25 s


async def test_the_metrics_source_reads_the_rollout_window() -> None:
    clock = ManualClock(1000.0)
    sup = Sup({1: Replica_(1), 2: Replica_(2)})
    shadow = ShadowRecorder(lambda ex, pred: True, clock=clock)
    source = SupervisorMetrics(LocalActor(sup), shadow=shadow, score_name="accuracy")
    state = start_rollout(
        RolloutSpec(gates=(error_rate(0.1),)), program="qa", canary=2, champion=1, now=990.0
    )
    snap = await source.snapshot(state, clock())
    assert sup.metrics_calls == [(1, 10.0), (2, 10.0)]
    vm = snap.of(2)
    assert (
        vm is not None
        and (vm.executions, vm.errors, vm.latency_p95_ms) == (40, 2, 50.0)
        and not vm.scores
    )
    sup.replicas.pop(1)
    assert (await source.snapshot(state, clock())).of(
        1
    ) is None  # not deployed: no data, not an error
    sup.broken = True
    broken = await source.snapshot(state, clock())
    assert broken.collection_error is not None and "supervisor down" in broken.collection_error


def test_canary_tester_config_and_devset_names() -> None:
    with pytest.raises(ConfigurationError):
        CanaryTester(concurrency=0)
    dev = sim_devset("sim:arithmetic:dev:5:3")
    assert len(dev) == 5 and "(ref arithmetic:3:dev:" in dev[0].question
    with pytest.raises(KeyError):
        sim_devset("arithmetic-dev")
    assert inputs_of(dev[0]) == {"question": dev[0].question}
    assert inputs_of({"a": 1}) == {"a": 1}
    assert sim_metric(dev[0], {"answer": dev[0].answer}) and not sim_metric(
        dev[0], {"answer": "nope"}
    )


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_persistence_round_trip_and_compare_and_set(tmp_path: Path, kind: str) -> None:
    from dspex.store import open_store

    persistence: Any = (
        MemoryPersistence()
        if kind == "memory"
        else StorePersistence(open_store(f"sqlite:///{tmp_path / 'p.db'}", shared=False))
    )
    state = start_rollout(
        RolloutSpec(gates=(error_rate(0.1),)),
        program="qa",
        canary=2,
        champion=1,
        now=5.0,
        rollout_id="qa:2:x",
    )
    record = RolloutRecord(
        state, pending=(SetWeights({1: 90.0, 2: 10.0}),), deployment_id="dep-1", error="boom"
    )
    rev = persistence.save_state(record.to_doc(), expected_revision=0)
    loaded = RolloutRecord.from_stored(persistence.load_state("qa:2:x"))
    assert (
        loaded.state == state and loaded.pending == record.pending and loaded.revision == rev == 1
    )
    assert (loaded.deployment_id, loaded.error) == ("dep-1", "boom")
    assert [r.doc["rollout_id"] for r in persistence.list_active("qa")] == ["qa:2:x"]
    with pytest.raises(StoreError) as err:
        persistence.save_state(record.to_doc(), expected_revision=0)
    assert err.value.fields["conflict"] and "already exists" in str(err.value)
    with pytest.raises(NotFound):
        persistence.load_state("nope")
    bad = record.to_doc()
    bad["controller"] = "not a dict"
    persistence.save_state(bad, expected_revision=1)
    with pytest.raises(ValidationError, match="corrupt"):
        RolloutRecord.from_stored(persistence.load_state("qa:2:x"))
    with pytest.raises(ValidationError):
        persistence.save_state({**record.to_doc(), "weight": float("nan")}, expected_revision=None)
