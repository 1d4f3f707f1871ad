"""Deployment pipelines, live: stored, watched by a durable job, starting deployments by themselves.

``PipelineService`` keeps ``DeploymentPipeline`` objects in the persistence and moves them
through their states (draft -> active <-> paused -> failed -> draft). An active pipeline is
watched by a periodic durable job (the jobs engine's ``rollout_tick`` kind pointed at
``watch_job``, schedule ``pipeline:<name>``), so it needs no process of its own. Each ``check``:

1. gathers the facts (``TriggerFacts``): the champion and its scores from the registry, every
   version's measured scores, firing telemetry alerts (``alerts()``), whether a rollout is under
   way, the versions this pipeline already failed or rolled back;
2. asks the pure ``check_trigger`` whether to start a deployment, of which version, why;
3. judges the pipeline's validation rules on the version's measured facts; a version that fails
   them gets a ``failed`` Deployment record (with the results) and is not tried again;
4. otherwise starts the rollout (``control.submit_rollout``) with the pipeline's spec, monitoring
   gates and rollback config, records the trigger on the pipeline, and schedules the rollout's
   controller ticks (``rollout:<program>``, the ``rollout_tick`` job) when a jobs engine is given.

A program without a champion yet has nothing to compare a canary with: its first deployment is
``immediate``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from dspex.errors import NotFound

from .control import emit_deployment_transition, new_deployment_id, submit_rollout
from .deployment import Deployment
from .gates import NonInferiorityTest
from .persistence import Persistence, active_record
from .pipeline import (
    DeploymentPipeline,
    PipelineStatus,
    TriggerDecision,
    TriggerFacts,
    ValidationFacts,
    check_trigger,
    validate,
)
from .registry import ProgramRegistry
from .spec import Strategy

__all__ = ["WATCH_TICKER", "PipelineService", "watch_job"]

log = logging.getLogger("dspex.pipelines.rollouts")

#: the import path the ``rollout_tick`` job kind calls for a pipeline's watch
WATCH_TICKER = "dspex.pipelines.rollouts.triggers:watch_job"


class PipelineService:
    """Stored pipelines and their watch (see the module docstring).

    ``engine``: a ``dspex.pipelines.jobs.JobEngine`` to schedule the watch and the rollout
    ticks on (None: call ``check`` yourself). ``alerts()``: names of firing alerts (e.g. from an
    ``AlertManager``). ``tick_args``: extra args for the rollout tick jobs (``lm``, ...).
    """

    def __init__(
        self,
        persistence: Persistence,
        registry: ProgramRegistry,
        *,
        engine: Any = None,
        alerts: Callable[[], Sequence[str]] | None = None,
        clock: Callable[[], float] = time.time,
        watch_every_s: float = 30.0,
        tick_every_s: float | None = None,
        tick_args: Mapping[str, Any] | None = None,
        non_inferiority_test: NonInferiorityTest | None = None,
    ) -> None:
        self.persistence = persistence
        self.registry = registry
        self.engine = engine
        self.alerts = alerts
        self.clock = clock
        self.watch_every_s = watch_every_s
        self.tick_every_s = tick_every_s
        self.tick_args = dict(tick_args or {})
        self.non_inferiority_test = non_inferiority_test

    # -- the pipeline's own state machine ---------------------------------------------------------
    def create(self, pipeline: DeploymentPipeline) -> DeploymentPipeline:
        now = self.clock()
        pipeline = replace(pipeline, status=PipelineStatus.DRAFT, created_at=now, updated_at=now)
        self.persistence.save_pipeline(pipeline.to_dict(), expected_revision=0)
        return pipeline

    def get(self, name: str) -> DeploymentPipeline:
        return DeploymentPipeline.from_dict(
            self.persistence.load_pipeline(name).doc, non_inferiority_test=self.non_inferiority_test
        )

    def list(self, status: str | None = None) -> list[DeploymentPipeline]:
        return [
            DeploymentPipeline.from_dict(s.doc, non_inferiority_test=self.non_inferiority_test)
            for s in self.persistence.list_pipelines(status)
        ]

    def _apply(self, name: str, event: str, reason: str = "") -> DeploymentPipeline:
        stored = self.persistence.load_pipeline(name)
        pipeline = DeploymentPipeline.from_dict(
            stored.doc, non_inferiority_test=self.non_inferiority_test
        )
        pipeline = pipeline.apply(event, self.clock(), reason)
        self.persistence.save_pipeline(pipeline.to_dict(), expected_revision=stored.revision)
        self._sync_schedule(pipeline)
        return pipeline

    def activate(self, name: str) -> DeploymentPipeline:
        return self._apply(name, "activate")

    def pause(self, name: str) -> DeploymentPipeline:
        return self._apply(name, "pause")

    def resume(self, name: str) -> DeploymentPipeline:
        return self._apply(name, "resume")

    def fail(self, name: str, reason: str) -> DeploymentPipeline:
        return self._apply(name, "fail", reason)

    def reset(self, name: str) -> DeploymentPipeline:
        return self._apply(name, "reset")

    def _sync_schedule(self, pipeline: DeploymentPipeline) -> None:
        if self.engine is None:
            return
        schedule = f"pipeline:{pipeline.name}"
        if pipeline.status is PipelineStatus.ACTIVE:
            self.engine.schedule(
                schedule,
                "rollout_tick",
                every_s=self.watch_every_s,
                args={"pipeline": pipeline.name, "ticker": WATCH_TICKER},
            )
        else:
            try:
                self.engine.jobs.remove_schedule(schedule)
            except NotFound:
                pass

    # -- watching ---------------------------------------------------------------------------------
    def facts(self, pipeline: DeploymentPipeline) -> TriggerFacts:
        program = pipeline.program
        champion = self.registry.alias(program, "champion")
        champion_scores = (
            self.registry.version(program, champion).scores if champion is not None else {}
        )
        try:
            candidates = self.registry.candidates(program)
        except NotFound:
            candidates = ()
        rejected = tuple(
            int(d["version"])
            for d in self.persistence.list_deployments(program, limit=500)
            if d.get("pipeline") == pipeline.name and d.get("status") in ("failed", "rolled_back")
        )
        return TriggerFacts(
            now=self.clock(),
            champion=champion,
            champion_scores=champion_scores,
            candidates=candidates,
            firing_alerts=tuple(self.alerts()) if self.alerts is not None else (),
            deployment_in_progress=active_record(self.persistence, program) is not None,
            rejected_versions=rejected,
        )

    def check(self, name: str) -> TriggerDecision:
        """One watch of pipeline ``name``: start a deployment when a trigger holds."""
        stored = self.persistence.load_pipeline(name)
        pipeline = DeploymentPipeline.from_dict(
            stored.doc, non_inferiority_test=self.non_inferiority_test
        )
        facts = self.facts(pipeline)
        decision = check_trigger(pipeline, facts)
        if not decision.fire or decision.version is None:
            return decision
        now = facts.now
        self.persistence.save_pipeline(
            pipeline.triggered(now).to_dict(), expected_revision=stored.revision
        )
        version = self.registry.version(pipeline.program, decision.version)
        notes = version.record.notes
        report = validate(
            pipeline.validation_rules,
            ValidationFacts(
                version.version,
                metrics=version.scores,
                executions=int(notes.get("executions") or 0),
            ),
        )
        if not report.passed:
            self._rejected(pipeline, version.version, decision, report, now, version.to_dict())
            return TriggerDecision(
                False,
                f"{decision.reason}; validation failed: {'; '.join(report.errors)}",
                version.version,
                decision.trigger,
            )
        spec = pipeline.rollout_spec(non_inferiority_test=self.non_inferiority_test)
        if facts.champion is None and spec.strategy is not Strategy.IMMEDIATE:
            spec = replace(
                spec, strategy=Strategy.IMMEDIATE
            )  # nothing to compare a canary with yet
        submit_rollout(
            self.persistence,
            pipeline.program,
            version.version,
            spec,
            champion=facts.champion,
            now=now,
            recent_versions=self.registry.recent(pipeline.program),
            pipeline=pipeline.name,
            trigger_reason=f"{decision.trigger}: {decision.reason}",
            validation=report,
            program_snapshot=version.to_dict(),
            non_inferiority_test=self.non_inferiority_test,
        )
        if self.engine is not None:
            self.engine.schedule(
                f"rollout:{pipeline.program}",
                "rollout_tick",
                every_s=self.tick_every_s or max(1.0, spec.interval_s / 5.0),
                args={**self.tick_args, "program": pipeline.program},
            )
        log.info(
            "pipeline %s started a deployment of %s@%s: %s",
            name,
            pipeline.program,
            version.version,
            decision.reason,
        )
        return decision

    def _rejected(
        self,
        pipeline: DeploymentPipeline,
        version: int,
        decision: TriggerDecision,
        report: Any,
        now: float,
        snapshot: Mapping[str, Any],
    ) -> None:
        dep = Deployment(
            id=new_deployment_id(pipeline.program, version),
            program=pipeline.program,
            version=version,
            pipeline=pipeline.name,
            trigger_reason=f"{decision.trigger}: {decision.reason}",
            config=pipeline.deployment_config.to_dict(),
            created_at=now,
            program_snapshot=dict(snapshot),
        ).apply("start_validation", now)
        dep = dep.record_validation(report, now).apply("fail", now, "validation failed")
        self.persistence.save_deployment(dep.to_dict())
        emit_deployment_transition(dep.id, "pending", dep.status.value)


def watch_job(args: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """The durable watch of one pipeline (``rollout_tick`` job with ``ticker`` = this)."""
    from dspex.errors import JobError
    from dspex.pipelines.jobs import JobEngine

    from .persistence import StorePersistence

    name = str(args.get("pipeline") or "")
    if not name:
        raise JobError("A pipeline watch job needs args['pipeline'].", discard=True)
    service = PipelineService(
        StorePersistence(ctx.store),
        ProgramRegistry(ctx.store),
        engine=JobEngine(ctx.store, clock=ctx.clock),
        clock=ctx.clock,
        tick_args={k: v for k, v in args.items() if k in ("lm", "shadow_devset")},
    )
    try:
        decision = service.check(name)
    except NotFound as exc:
        raise JobError(f"Pipeline {name!r} is gone: {exc.message}", discard=True) from exc
    return {
        "pipeline": name,
        "fire": decision.fire,
        "version": decision.version,
        "reason": decision.reason,
    }
