"""Deployment pipelines, live: stored, watched by a durable job (the jobs engine on a real
SQLite store, inline executor, manual clock), starting deployments by themselves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dspex.errors import InvalidTransition
from dspex.pipelines.jobs import InlineExecutor, JobEngine, JobState
from dspex.pipelines.rollouts import (
    DeploymentPipeline,
    PipelineStatus,
    RolloutSpec,
    Strategy,
    TriggerConditions,
    ValidationRule,
    error_rate,
)
from dspex.pipelines.rollouts.persistence import StorePersistence, active_record
from dspex.pipelines.rollouts.registry import ProgramRegistry
from dspex.pipelines.rollouts.simulate import ManualClock
from dspex.pipelines.rollouts.triggers import WATCH_TICKER, PipelineService


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        from dspex.store import open_store

        self.clock = ManualClock(1_700_000_000.0)
        self.store = open_store(f"sqlite:///{tmp_path / 'pipe.db'}", shared=False)
        self.registry = ProgramRegistry(self.store)
        self.persistence = StorePersistence(self.store)
        self.engine = JobEngine(self.store, executor=InlineExecutor(), clock=self.clock)
        self.alerts: list[str] = []
        self.service = PipelineService(
            self.persistence,
            self.registry,
            engine=self.engine,
            alerts=lambda: self.alerts,
            clock=self.clock,
            watch_every_s=30.0,
        )
        v1 = self.registry.register("qa", {}, scores={"score": 0.70})
        self.registry.deploy("qa", v1.version)

    def pipeline(self, **kw: Any) -> DeploymentPipeline:
        kw.setdefault("triggers", TriggerConditions(metric="score", min_improvement=0.02))
        kw.setdefault(
            "deployment_config", RolloutSpec(strategy=Strategy.CANARY, gates=(error_rate(0.1),))
        )
        return self.service.create(DeploymentPipeline(name="qa-main", program="qa", **kw))

    def schedules(self) -> dict[str, Any]:
        return {s.name: s for s in self.engine.jobs.schedules()}


def test_an_active_pipeline_starts_a_deployment_of_a_better_version_by_itself(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    rig.pipeline(validation_rules=(ValidationRule.performance_threshold("score", ">=", 0.6),))
    assert rig.service.check("qa-main").reason == "pipeline is draft, not active"
    rig.service.activate("qa-main")
    watch = rig.schedules()["pipeline:qa-main"]
    assert watch.kind == "rollout_tick" and watch.args == {
        "pipeline": "qa-main",
        "ticker": WATCH_TICKER,
    }

    rig.registry.register("qa", {}, scores={"score": 0.71})  # not better by the margin
    rig.engine.tick()
    assert active_record(rig.persistence, "qa") is None

    rig.registry.register("qa", {}, scores={"score": 0.80})
    rig.clock.advance(30.0)
    report = rig.engine.tick()  # the watch job fires and runs inline
    assert report.fired == 1 and report.finished and report.finished[0].state is JobState.COMPLETED
    record = active_record(rig.persistence, "qa")
    assert record is not None and (record.state.canary, record.state.champion) == (3, 1)
    gates = {g.name for g in record.state.spec.gates}
    assert {"error_rate", "success_rate", "latency_p95"} <= gates  # the monitoring thresholds
    dep = rig.persistence.load_deployment(record.deployment_id or "")
    assert dep["pipeline"] == "qa-main" and dep["status"] == "validating"
    assert dep["trigger_reason"].startswith("new_version: version 3 beats the champion")
    assert dep["validation_results"]["passed"] is True
    assert "rollout:qa" in rig.schedules()  # the controller ticks are scheduled
    assert rig.service.get("qa-main").last_triggered_at == rig.clock()
    # while the rollout runs, nothing else starts
    rig.clock.advance(30.0)
    assert rig.service.check("qa-main").reason == "a deployment is already in progress"


def test_a_version_failing_validation_is_recorded_and_not_tried_again(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.pipeline(validation_rules=(ValidationRule.minimum_executions(100),))
    rig.service.activate("qa-main")
    rig.registry.register("qa", {}, scores={"score": 0.9})
    decision = rig.service.check("qa-main")
    assert not decision.fire and "only 0 executions, need 100" in decision.reason
    deps = rig.persistence.list_deployments("qa")
    assert [(d["version"], d["status"]) for d in deps] == [(2, "failed")]
    assert deps[0]["validation_results"]["passed"] is False
    assert active_record(rig.persistence, "qa") is None
    assert "no trigger condition holds" in rig.service.check("qa-main").reason  # v2 is rejected now


def test_a_degradation_alert_deploys_the_best_candidate_and_pausing_stops_the_watch(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    rig.pipeline(
        triggers=TriggerConditions(
            on_new_version=False, on_degradation=True, alert_names=("HighErrorRate",)
        )
    )
    rig.service.activate("qa-main")
    rig.registry.register("qa", {}, scores={"score": 0.65})
    rig.registry.register("qa", {}, scores={"score": 0.68})
    assert not rig.service.check("qa-main").fire
    rig.service.pause("qa-main")
    assert "pipeline:qa-main" not in rig.schedules()
    rig.alerts.append("HighErrorRate")
    assert rig.service.check("qa-main").reason == "pipeline is paused, not active"
    with pytest.raises(InvalidTransition, match="paused"):
        rig.service.pause("qa-main")
    rig.service.resume("qa-main")
    decision = rig.service.check("qa-main")
    assert decision.fire and decision.trigger == "degradation" and decision.version == 3
    failed = rig.service.fail("qa-main", "operator stopped it")
    assert failed.status is PipelineStatus.FAILED and failed.failure_reason == "operator stopped it"
    assert rig.service.reset("qa-main").status is PipelineStatus.DRAFT


def test_a_program_without_a_champion_is_deployed_immediately(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.registry.register("fresh", {}, scores={"score": 0.5})
    rig.service.create(
        DeploymentPipeline(
            name="fresh", program="fresh", triggers=TriggerConditions(metric="score")
        )
    )
    rig.service.activate("fresh")
    assert rig.service.check("fresh").fire
    record = active_record(rig.persistence, "fresh")
    assert (
        record is not None
        and record.state.strategy is Strategy.IMMEDIATE
        and record.state.champion is None
    )


def test_a_watch_job_for_a_deleted_pipeline_is_discarded(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    job = rig.engine.enqueue("rollout_tick", {"pipeline": "nope", "ticker": WATCH_TICKER}).job
    rig.engine.tick()
    rec = rig.engine.jobs.get(job.id)
    assert rec.state is JobState.DISCARDED and "is gone" in (rec.last_error or "")
