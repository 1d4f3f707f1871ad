"""Rollouts: the pure state machines behind deployment pipelines (issue 10).

Nothing here touches Ray, the network, a clock or the store. The live controller (built on these
objects) fills a ``MetricsSnapshot``, calls ``step(state, event, snapshot, now)``, persists the
returned state (``state.to_dict()``), and executes the returned actions.

* ``spec``       RolloutSpec: strategy, interval, step weights, threshold, deadline, gates, webhooks
* ``gates``      Argo AnalysisTemplate semantics on program metrics, incl. non-inferiority on shadow pairs
* ``snapshot``   MetricsSnapshot: what gates read
* ``state``      RolloutState, Phase, start_rollout
* ``machine``    step, allowed_actions, reconcile (re-assert a loaded state after a restart)
* ``simulate``   a manual clock, deterministic traffic and a driver for dry runs and tests
* ``actions``    events in (Tick, Promote, ...) and actions out (SetWeights, MoveAlias, ...)
* ``pipeline``   DeploymentPipeline, triggers, validation rules
* ``deployment`` the Deployment record
"""

from .actions import (
    Abort,
    Action,
    CanaryTestResult,
    DeployVersion,
    EmitTelemetry,
    Event,
    MoveAlias,
    NewVersion,
    NotifyWebhook,
    Pause,
    Promote,
    Resume,
    Retry,
    RollingUpdate,
    RunCanaryTest,
    ScaleDown,
    SetWeights,
    SkipAnalysis,
    StartShadow,
    StopShadow,
    Tick,
    action_from_dict,
    event_from_dict,
)
from .analysis import Analysis, Outcome, analyze
from .deployment import Deployment, DeploymentStatus, status_for_phase
from .gates import (
    Condition,
    Gate,
    GateRun,
    GateStatus,
    Measurement,
    MeasurementPhase,
    MissingData,
    NonInferiorityGate,
    NonInferiorityTest,
    assess,
    cost_per_call,
    error_rate,
    gate_from_dict,
    minimum_executions,
    non_inferiority,
    p95_latency,
    performance_threshold,
    success_rate,
)
from .machine import allowed_actions, reconcile, step
from .pipeline import (
    CandidateVersion,
    DeploymentPipeline,
    MonitoringThresholds,
    PipelineStatus,
    RollbackConfig,
    TriggerConditions,
    TriggerDecision,
    TriggerFacts,
    ValidationFacts,
    ValidationReport,
    ValidationRule,
    check_trigger,
    validate,
)
from .snapshot import MetricsSnapshot, ShadowPairs, VersionMetrics
from .spec import CanaryTest, RolloutSpec, Strategy, Webhook
from .state import Phase, RolloutState, Transition, start_rollout

__all__ = [
    "Abort",
    "Action",
    "Analysis",
    "CanaryTest",
    "CanaryTestResult",
    "CandidateVersion",
    "Condition",
    "DeployVersion",
    "Deployment",
    "DeploymentPipeline",
    "DeploymentStatus",
    "EmitTelemetry",
    "Event",
    "Gate",
    "GateRun",
    "GateStatus",
    "Measurement",
    "MeasurementPhase",
    "MetricsSnapshot",
    "MissingData",
    "MonitoringThresholds",
    "MoveAlias",
    "NewVersion",
    "NonInferiorityGate",
    "NonInferiorityTest",
    "NotifyWebhook",
    "Outcome",
    "Pause",
    "Phase",
    "PipelineStatus",
    "Promote",
    "Resume",
    "Retry",
    "RollbackConfig",
    "RollingUpdate",
    "RolloutSpec",
    "RolloutState",
    "RunCanaryTest",
    "ScaleDown",
    "SetWeights",
    "ShadowPairs",
    "SkipAnalysis",
    "StartShadow",
    "StopShadow",
    "Strategy",
    "Tick",
    "Transition",
    "TriggerConditions",
    "TriggerDecision",
    "TriggerFacts",
    "ValidationFacts",
    "ValidationReport",
    "ValidationRule",
    "VersionMetrics",
    "Webhook",
    "action_from_dict",
    "allowed_actions",
    "analyze",
    "assess",
    "check_trigger",
    "cost_per_call",
    "error_rate",
    "event_from_dict",
    "gate_from_dict",
    "minimum_executions",
    "non_inferiority",
    "p95_latency",
    "performance_threshold",
    "reconcile",
    "start_rollout",
    "status_for_phase",
    "step",
    "success_rate",
    "validate",
]


# The live controller and its parts load on first use (they bring httpx, the store and the
# actor layer); the pure state machines above import nothing heavy.
_LIVE = {
    "RolloutController": "controller",
    "TickReport": "controller",
    "tick_job": "controller",
    "ProgramRegistry": "registry",
    "RegisteredVersion": "registry",
    "RegistrySpecs": "registry",
    "RecipeFactory": "registry",
    "Persistence": "persistence",
    "MemoryPersistence": "persistence",
    "StorePersistence": "persistence",
    "RolloutRecord": "persistence",
    "submit_rollout": "control",
    "apply_control": "control",
    "rollout_status": "control",
    "ActionExecutor": "executor",
    "SupervisorMetrics": "metrics_source",
    "VersionCaller": "pinned",
    "CanaryTester": "canary_test",
    "ReplaySource": "shadow",
    "ShadowRecorder": "shadow",
    "WebhookSender": "webhooks",
    "PipelineService": "triggers",
}
__all__ = sorted([*__all__, *_LIVE])


def __getattr__(name: str) -> object:
    module = _LIVE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
