"""Pipelines, deployments and rollout states persisted on both databases: real objects from
``dspex.pipelines.rollouts`` round-trip through the store, a rollout saved at every tick resumes
from what was stored, and a stale controller's write is refused."""

from __future__ import annotations

import pytest

from dspex.errors import NotFound, StoreError, ValidationError
from dspex.pipelines.experiments.record import ExperimentRecord
from dspex.pipelines.experiments.store_archive import StoreArchive
from dspex.pipelines.rollouts import (
    Abort,
    Deployment,
    DeploymentPipeline,
    MetricsSnapshot,
    RolloutSpec,
    RolloutState,
    Strategy,
    Tick,
    VersionMetrics,
    error_rate,
    start_rollout,
    step,
)
from dspex.store import Store, open_store
from dspex.store.deployments import DeploymentStore
from dspex.store.experiments import ExperimentStore

T0 = 50_000.0


def _snapshot(now: float) -> MetricsSnapshot:
    ok = VersionMetrics(executions=500, errors=0, latency_p95_ms=100.0)
    return MetricsSnapshot(taken_at=now, window_start_s=now - 60, versions={1: ok, 2: ok})


def test_pipelines_round_trip_and_filter(store: Store) -> None:
    repo = DeploymentStore(store)
    pipe = DeploymentPipeline(name="qa-main", program="qa", created_at=T0, updated_at=T0)
    saved = repo.save_pipeline(pipe.to_dict(), expected_revision=0)
    assert saved.revision == 1
    active = pipe.apply("activate", T0 + 1)
    repo.save_pipeline(active.to_dict(), expected_revision=1)
    repo.save_pipeline(DeploymentPipeline(name="other", program="summ").to_dict())
    got = repo.get_pipeline("qa-main")
    assert got.revision == 2 and DeploymentPipeline.from_dict(got.doc) == active
    assert [p.key for p in repo.pipelines(program="qa", status="active")] == ["qa-main"]
    assert [p.key for p in repo.pipelines()] == ["other", "qa-main"]
    with pytest.raises(StoreError, match="already exists") as info:
        repo.save_pipeline(pipe.to_dict(), expected_revision=0)
    assert info.value.conflict is True
    repo.delete_pipeline("other")
    with pytest.raises(NotFound):
        repo.get_pipeline("other")


def test_a_rollout_saved_every_tick_resumes_and_stale_writes_are_refused(store: Store) -> None:
    repo = DeploymentStore(store)
    spec = RolloutSpec(strategy=Strategy.CANARY, interval_s=10, gates=(error_rate(0.05),), allow_short_interval=True)
    state = start_rollout(spec, program="qa", canary=2, champion=1, now=T0)
    dep = Deployment(id="dep-1", program="qa", version=2, created_at=T0)
    rev = repo.save_deployment(dep.to_dict(), expected_revision=0).revision
    stored = repo.save_rollout(state.to_dict(), deployment_id="dep-1", expected_revision=0)
    now = T0
    for _ in range(4):  # the controller: load, tick, persist with the revision it read
        now += 10
        current = repo.active_rollout("qa")
        assert current is not None
        loaded = RolloutState.from_dict(current.doc)
        state, _ = step(loaded, Tick(), _snapshot(now), now)
        stored = repo.save_rollout(state.to_dict(), expected_revision=current.revision)
        dep = dep.sync(state, now)
        rev = repo.save_deployment(dep.to_dict(), expected_revision=rev).revision
    assert stored.revision == 5
    back = RolloutState.from_dict(repo.get_rollout(state.rollout_id).doc)
    assert back == state and back.weight > 0
    assert repo.rollout_deployment_id(state.rollout_id) == "dep-1"
    got_dep = Deployment.from_dict(repo.get_deployment("dep-1").doc)
    assert got_dep == dep and got_dep.status.value == "deploying"
    assert [d.key for d in repo.deployments(program="qa", status="deploying")] == ["dep-1"]
    # a second controller that read revision 4 loses: nothing changes
    with pytest.raises(StoreError, match="another writer"):
        repo.save_rollout(state.to_dict(), expected_revision=4)
    assert repo.get_rollout(state.rollout_id).revision == 5
    # aborted: no longer active
    state, _ = step(state, Abort(reason="operator"), None, now + 1)
    repo.save_rollout(state.to_dict(), expected_revision=5)
    assert repo.active_rollout("qa") is None
    assert [r.key for r in repo.rollouts(program="qa", active=False)] == [state.rollout_id]


def test_bad_documents_are_refused(store: Store) -> None:
    repo = DeploymentStore(store)
    good = start_rollout(RolloutSpec(strategy=Strategy.IMMEDIATE), program="qa", canary=1, champion=None, now=T0).to_dict()
    with pytest.raises(ValidationError, match="rollout_id"):
        repo.save_rollout({**good, "rollout_id": ""})
    with pytest.raises(ValidationError, match="canary"):
        repo.save_rollout({**good, "canary": "two"})
    with pytest.raises(ValidationError, match="NaN"):
        repo.save_rollout({**good, "weight": float("nan")})
    with pytest.raises(ValidationError, match="version"):
        repo.save_deployment({"id": "d", "program": "qa", "status": "pending"})
    with pytest.raises(ValidationError, match="to_dict"):
        repo.save_pipeline(["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="does not exist"):
        repo.save_rollout(good, expected_revision=3)
    assert repo.rollouts() == [] and repo.deployments() == []


def test_experiment_records_in_the_store(store: Store) -> None:
    clock = iter(range(1000, 2000, 10))
    archive = StoreArchive(store)
    record = ExperimentRecord(name="hints", spec={"name": "hints", "variants": []}, created_s=next(clock))
    archive.save(record)
    record.transition("start", next(clock))
    record.arms = {"baseline": {"score": 0.5, "n": float("nan")}}
    archive.save(record)
    back = archive.load(record.id)
    assert back.status == "running" and back.arms == {"baseline": {"score": 0.5, "n": None}}
    assert back.created_s == 1000 and back.started_s == 1010
    record.transition("fail", next(clock), error="ExperimentError: arm 'x' failed")
    archive.save(record)
    assert archive.latest("hints").status == "failed"
    assert [r.id for r in archive.list(status="failed")] == [record.id]
    rows = ExperimentStore(store)
    assert rows.get(record.id)["duration_s"] == pytest.approx(10.0)
    with pytest.raises(ValidationError, match="status"):
        rows.save({**rows.get(record.id), "status": "exploded"})
    with pytest.raises(ValidationError, match="strict JSON"):
        rows.save({**rows.get(record.id), "result": {"p": float("nan")}})
    with pytest.raises(NotFound):
        archive.load("0" * 32)
    rows.delete(record.id)
    assert archive.list() == []


def test_a_store_at_0002_upgrades_to_the_new_tables_keeping_its_data(store_url: str) -> None:
    from dspex.store import Programs
    from dspex.store._migrate import head_revision

    old = open_store(store_url, migrate=False, shared=False)
    try:
        old.migrate("0002")
        Programs(old).save_version("qa", {"predict": {"demos": []}}, score=0.5)
    finally:
        old.close()
    new = open_store(store_url, shared=False)
    try:
        assert new.revision() == head_revision()
        assert Programs(new).version("qa", 1).score == 0.5
        DeploymentStore(new).save_pipeline(DeploymentPipeline(name="p", program="qa").to_dict())
        assert DeploymentStore(new).get_pipeline("p").revision == 1
    finally:
        new.close()
