"""The seed's DeploymentPipeline and Deployment record: state machines, triggers, validation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from dspex.pipelines.rollouts import (
    Abort,
    CanaryTest,
    CandidateVersion,
    Deployment,
    DeploymentPipeline,
    DeploymentStatus,
    MonitoringThresholds,
    NewVersion,
    Pause,
    Phase,
    PipelineStatus,
    Resume,
    Retry,
    RollbackConfig,
    RolloutSpec,
    Strategy,
    TriggerConditions,
    TriggerFacts,
    ValidationFacts,
    ValidationRule,
    check_trigger,
    error_rate,
    non_inferiority,
    start_rollout,
    status_for_phase,
    validate,
)
from dspex.pipelines.rollouts.simulate import (
    Driver,
    ManualClock,
    SyntheticTraffic,
    VersionBehaviour,
)

from dspex.errors import InvalidTransition, ValidationError

T0 = 50_000.0


def pipeline(**kw: Any) -> DeploymentPipeline:
    return DeploymentPipeline(name="qa-pipeline", program="qa", created_at=T0, **kw)


# -- pipeline state machine --------------------------------------------------------------------


def test_pipeline_lifecycle() -> None:
    p = pipeline()
    assert p.status is PipelineStatus.DRAFT and p.allowed_events() == ("activate",)
    p = p.apply("activate", T0 + 1)
    p = p.apply("pause", T0 + 2).apply("resume", T0 + 3)
    assert p.status is PipelineStatus.ACTIVE and p.updated_at == T0 + 3
    failed = p.apply("fail", T0 + 4, reason="3 deployments rolled back in a row")
    assert (
        failed.status is PipelineStatus.FAILED
        and failed.failure_reason == "3 deployments rolled back in a row"
    )
    draft = failed.apply("reset", T0 + 5)
    assert draft.status is PipelineStatus.DRAFT and draft.failure_reason == ""
    assert p.apply("pause", T0).apply("fail", T0, reason="x").status is PipelineStatus.FAILED


@pytest.mark.parametrize(
    ("events", "illegal", "allowed"),
    [
        ([], "pause", ("activate",)),
        ([], "reset", ("activate",)),
        (["activate"], "activate", ("fail", "pause")),
        (["activate"], "resume", ("fail", "pause")),
        (["activate", "pause"], "pause", ("fail", "resume")),
        (["activate", "fail"], "activate", ("reset",)),
        ([], "explode", ("activate",)),
    ],
)
def test_pipeline_refuses_illegal_events(
    events: list[str], illegal: str, allowed: tuple[str, ...]
) -> None:
    p = pipeline()
    for e in events:
        p = p.apply(e, T0)
    with pytest.raises(InvalidTransition) as info:
        p.apply(illegal, T0)
    assert info.value.state == p.status.value and info.value.allowed == allowed
    assert f"that is {p.status.value}" in info.value.message


def test_pipeline_builds_its_rollout_spec() -> None:
    p = pipeline(
        deployment_config=RolloutSpec(
            strategy=Strategy.BLUE_GREEN, gates=(error_rate(0.01), non_inferiority(0.02))
        ),
        validation_rules=(
            ValidationRule.minimum_executions(100),
            ValidationRule.canary("qa-dev", 0.7),
        ),
        rollback=RollbackConfig(window=5, scale_down_delay_s=90),
        monitoring=MonitoringThresholds(latency_ms=2500),
    )
    test = lambda *a: True  # noqa: E731
    spec = p.rollout_spec(non_inferiority_test=test)
    assert [g.name for g in spec.gates] == [
        "error_rate",
        "non_inferiority",
        "success_rate",
        "latency_p95",
    ]
    assert (
        spec.gates[0].success is not None and spec.gates[0].success.threshold == 0.01
    )  # the configured gate wins
    assert spec.gates[3].success is not None and spec.gates[3].success.threshold == 2500
    assert spec.shadow_gates[0].test is test
    assert spec.canary_test == CanaryTest(devset="qa-dev", min_score=0.7)
    assert (spec.rollback_window, spec.scale_down_delay_s, spec.strategy) == (
        5,
        90,
        Strategy.BLUE_GREEN,
    )


def test_monitoring_defaults_are_the_seeds() -> None:
    m = MonitoringThresholds()
    assert (m.success_rate, m.latency_ms, m.error_rate) == (0.95, 5000.0, 0.05)


def test_pipeline_round_trips() -> None:
    p = (
        pipeline(
            triggers=TriggerConditions(
                min_improvement=0.02,
                schedule_interval_s=86_400,
                on_degradation=True,
                alert_names=("qa_errors",),
            ),
            validation_rules=(
                ValidationRule.performance_threshold("accuracy", ">=", 0.8),
                ValidationRule.canary("dev", 0.6, 25),
            ),
            deployment_config=RolloutSpec(gates=(non_inferiority(0.03),)),
        )
        .apply("activate", T0)
        .triggered(T0 + 10)
    )
    back = DeploymentPipeline.from_dict(json.loads(json.dumps(p.to_dict())))
    assert back == p
    with pytest.raises(ValidationError, match="status"):
        DeploymentPipeline.from_dict({**p.to_dict(), "status": "on"})


# -- triggers ----------------------------------------------------------------------------------


def active(**triggers: Any) -> DeploymentPipeline:
    return pipeline(triggers=TriggerConditions(**triggers)).apply("activate", T0)


def facts(**kw: Any) -> TriggerFacts:
    base: dict[str, Any] = {
        "now": T0 + 1_000,
        "champion": 3,
        "champion_scores": {"score": 0.80},
        "candidates": (
            CandidateVersion(3, {"score": 0.80}),
            CandidateVersion(4, {"score": 0.81}),
            CandidateVersion(5, {"score": 0.85}),
        ),
    }
    base.update(kw)
    return TriggerFacts(**base)


@pytest.mark.parametrize(
    ("p", "f", "fire", "version", "trigger", "why"),
    [
        (active(), facts(), True, 5, "new_version", "beats the champion on score: 0.85 > 0.8"),
        (active(min_improvement=0.05), facts(), False, None, None, "no trigger condition holds"),
        (active(min_improvement=0.04), facts(), True, 5, "new_version", "margin 0.04"),
        (active(), facts(rejected_versions=(5,)), True, 4, "new_version", "0.81 > 0.8"),
        (active(), facts(champion_scores={}), True, 5, "new_version", "the champion has no score"),
        (active(on_new_version=False), facts(), False, None, None, "no trigger"),
        (pipeline(), facts(), False, None, None, "pipeline is draft"),
        (active().apply("pause", T0), facts(), False, None, None, "pipeline is paused"),
        (active(), facts(deployment_in_progress=True), False, None, None, "already in progress"),
        (active(cooldown_s=3_600).triggered(T0 + 500), facts(), False, None, None, "cooling down"),
        (active(metric="accuracy"), facts(), False, None, None, "no trigger"),
        (
            active(on_degradation=True, on_new_version=False),
            facts(firing_alerts=("qa_latency",)),
            True,
            5,
            "degradation",
            "qa_latency",
        ),
        (
            active(on_degradation=True, alert_names=("qa_errors",), on_new_version=False),
            facts(firing_alerts=("qa_latency",)),
            False,
            None,
            None,
            "no trigger",
        ),
        (
            active(on_degradation=True),
            facts(firing_alerts=("qa_errors",), candidates=()),
            False,
            None,
            None,
            "no scored candidate",
        ),
        (
            active(on_new_version=False, schedule_interval_s=600),
            facts(),
            True,
            5,
            "schedule",
            "newest version 5",
        ),
        (
            active(on_new_version=False, schedule_interval_s=600).triggered(T0 + 800),
            facts(),
            False,
            None,
            None,
            "no trigger",
        ),
        (
            active(on_new_version=False, schedule_interval_s=600),
            facts(candidates=(CandidateVersion(3),)),
            False,
            None,
            None,
            "no trigger",
        ),
        (
            active(on_new_version=False, schedule_interval_s=600),
            facts(candidates=(CandidateVersion(3), CandidateVersion(6))),
            True,
            6,
            "schedule",
            "newest",
        ),
    ],
)
def test_trigger_decisions(
    p: DeploymentPipeline,
    f: TriggerFacts,
    fire: bool,
    version: int | None,
    trigger: str | None,
    why: str,
) -> None:
    decision = check_trigger(p, f)
    assert (decision.fire, decision.version, decision.trigger) == (fire, version, trigger)
    assert why in decision.reason


def test_degradation_outranks_a_new_version() -> None:
    decision = check_trigger(active(on_degradation=True), facts(firing_alerts=("qa_errors",)))
    assert decision.trigger == "degradation"


@pytest.mark.parametrize(
    "build",
    [
        lambda: TriggerConditions(schedule_interval_s=0),
        lambda: TriggerConditions(cooldown_s=-1),
        lambda: TriggerConditions(min_improvement=-0.1),
        lambda: DeploymentPipeline(name="", program="qa"),
    ],
)
def test_bad_pipeline_config_is_refused(build: Any) -> None:
    with pytest.raises(ValidationError):
        build()


# -- validation rules --------------------------------------------------------------------------


def test_validation_rules_judge_measured_facts() -> None:
    rules = (
        ValidationRule.performance_threshold("accuracy", ">=", 0.8),
        ValidationRule.performance_threshold("latency_ms", "<", 900),
        ValidationRule.minimum_executions(100),
        ValidationRule.canary("qa-dev", 0.75),
    )
    ok = validate(
        rules,
        ValidationFacts(version=4, metrics={"accuracy": 0.82, "latency_ms": 850}, executions=150),
    )
    assert ok.passed and ok.errors == ()
    assert ok.details[3]["deferred"] is True  # the rollout runs the canary test before live traffic
    bad = validate(
        rules,
        ValidationFacts(version=4, metrics={"accuracy": 0.7}, executions=20, canary_test_score=0.5),
    )
    assert not bad.passed
    assert bad.errors == (
        "accuracy (0.7) does not meet >= 0.8",
        "latency_ms was not measured for version 4",
        "only 20 executions, need 100",
        "canary test score 0.5 < 0.75 on 'qa-dev'",
    )
    assert json.loads(json.dumps(bad.to_dict()))["passed"] is False


@pytest.mark.parametrize(
    "build",
    [
        lambda: ValidationRule(kind="vibes"),
        lambda: ValidationRule(kind="performance_threshold", metric="accuracy"),
        lambda: ValidationRule(kind="minimum_executions", count=-1),
        lambda: ValidationRule.performance_threshold("accuracy", "~", 0.8),
        lambda: ValidationRule.canary("", 0.5),
    ],
)
def test_bad_validation_rules_are_refused(build: Any) -> None:
    with pytest.raises(ValidationError):
        build()


def test_validation_rules_round_trip() -> None:
    for rule in (
        ValidationRule.performance_threshold("acc", ">", 0.5),
        ValidationRule.minimum_executions(3),
        ValidationRule.canary("d", 0.1, 5),
    ):
        assert ValidationRule.from_dict(json.loads(json.dumps(rule.to_dict()))) == rule


# -- the deployment record ---------------------------------------------------------------------


def test_deployment_transitions() -> None:
    d = Deployment(id="dep-1", program="qa", version=4, created_at=T0)
    d = d.apply("start_validation", T0 + 1)
    assert d.started_at == T0 + 1
    d = (
        d.apply("start_deployment", T0 + 2)
        .apply("pause", T0 + 3)
        .apply("resume", T0 + 4)
        .apply("complete", T0 + 5)
    )
    assert d.status is DeploymentStatus.DEPLOYED and d.completed_at == T0 + 5 and d.duration_s == 4
    d = d.apply("rollback", T0 + 6, note="operator")
    assert d.status is DeploymentStatus.ROLLED_BACK and d.rollback_at == T0 + 6
    assert d.logs[-1] == f"[{T0 + 6:.3f}] deployed -> rolled_back: operator"
    with pytest.raises(
        InvalidTransition, match="Cannot complete a deployment that is rolled_back"
    ) as info:
        d.apply("complete", T0 + 7)
    assert info.value.allowed == ("retry",)
    with pytest.raises(InvalidTransition, match="that is pending"):
        Deployment(id="x", program="qa", version=1).apply("complete", T0)


def test_every_rollout_phase_maps_to_a_deployment_status() -> None:
    assert {p: status_for_phase(p) for p in Phase}[
        Phase.SCALE_DOWN_DELAY
    ] is DeploymentStatus.DEPLOYING
    assert status_for_phase(Phase.ABORTED) is DeploymentStatus.FAILED


def synced_run(
    error: float, extra: list[tuple[float, Any]] | None = None
) -> tuple[Deployment, list[DeploymentStatus], Driver]:
    clock = ManualClock(T0)
    spec = RolloutSpec(gates=(error_rate(0.05),), step_weights=(10, 50, 100))
    traffic = SyntheticTraffic(
        rps=10,
        behaviours={
            1: VersionBehaviour(),
            2: VersionBehaviour(error_rate=error),
            3: VersionBehaviour(),
        },
    )
    driver = Driver(
        start_rollout(spec, program="qa", canary=2, champion=1, now=T0), clock, traffic, tick_s=10
    )
    dep = Deployment(
        id="dep-7",
        program="qa",
        version=2,
        pipeline="qa-pipeline",
        config=spec.to_dict(),
        created_at=T0,
        program_snapshot={"version": 2, "state_hash": "abc123"},
    )
    statuses = [dep.status]
    events = dict(extra or [])
    while not driver.state.phase.terminal:
        clock.advance(10)
        if clock() in events:
            driver.send(events.pop(clock()))
        else:
            driver.tick()
        dep = dep.sync(driver.state, clock(), driver.snapshot())
        dep = Deployment.from_dict(json.loads(json.dumps(dep.to_dict())))  # persisted every tick
        if dep.status is not statuses[-1]:
            statuses.append(dep.status)
    return dep, statuses, driver


def test_deployment_record_follows_a_successful_rollout() -> None:
    dep, statuses, driver = synced_run(0.0)
    assert statuses == [
        DeploymentStatus.PENDING,
        DeploymentStatus.DEPLOYING,
        DeploymentStatus.DEPLOYED,
    ]
    assert dep.started_at == T0 + 10 and dep.completed_at == driver.state.finished_at
    assert dep.weight == 100.0 and dep.step_index == 2
    assert any("rollout initializing -> progressing" in line for line in dep.logs)
    assert any("validating -> deploying" in line for line in dep.logs)
    assert [h["gate"] for h in dep.health_checks] == ["error_rate"] * 3
    assert all(h["phase"] == "successful" for h in dep.health_checks)
    assert dep.metrics["canary"]["version"] == 2 and dep.metrics["canary"]["executions"] > 0
    assert dep.program_snapshot == {"version": 2, "state_hash": "abc123"}


def test_deployment_record_follows_a_rollback() -> None:
    dep, statuses, driver = synced_run(0.5)
    assert statuses[-1] is DeploymentStatus.ROLLED_BACK
    assert dep.rollback_at == driver.state.finished_at == dep.completed_at
    assert [h["phase"] for h in dep.health_checks] == ["failed", "failed"]


def test_deployment_record_follows_pause_restart_abort_and_retry() -> None:
    script = [
        (T0 + 30, Pause()),
        (T0 + 50, Resume()),
        (T0 + 60, NewVersion(version=3)),
        (T0 + 90, Abort()),
    ]
    dep, statuses, driver = synced_run(0.0, script)
    assert statuses == [
        DeploymentStatus.PENDING,
        DeploymentStatus.DEPLOYING,
        DeploymentStatus.PAUSED,
        DeploymentStatus.DEPLOYING,
        DeploymentStatus.FAILED,
    ]
    assert dep.version == 3
    assert any("version 3 replaces 2; restart from step 0" in line for line in dep.logs)
    assert any("deploying -> validating" in line for line in dep.logs)  # the restart
    driver.send(Retry())
    dep = dep.sync(driver.state, T0 + 200)
    assert dep.status is DeploymentStatus.VALIDATING and dep.completed_at is None
