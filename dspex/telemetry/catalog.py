"""Every metric dspex exports, and the events that feed it: the one place they are defined.

A ``MetricDef`` is a Prometheus family (counter, gauge or histogram, its labels and buckets).
A ``Binding`` says how one event updates one metric: which measurement is the value, which
metadata keys are the labels. The in-process store (``metrics.py``), Prometheus
(``prometheus.py``) and Ray (``dspex.cluster.ray_metrics``) all read these two tables, so a
metric is named once. Labels are only bounded things (provider, model, class names, states,
outcomes); never prompt text, inputs or hashes. ``events.md`` lists the events themselves.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from dspex.telemetry import names as n
from dspex.telemetry._events import Event

__all__ = [
    "BINDINGS",
    "METRICS",
    "METRICS_BY_NAME",
    "Binding",
    "Const",
    "MetricDef",
    "error_kind",
]

Kind = Literal["counter", "gauge", "histogram"]

LATENCY_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
FAST_S = (1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1.0)
SLOW_S = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
SCORE = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
CHARS = (100.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0)

_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


@dataclass(frozen=True)
class MetricDef:
    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name) or not self.name.startswith("dspex_"):
            raise ValueError(f"Metric name {self.name!r} must match {_NAME_RE.pattern} and start with dspex_.")
        if self.kind == "counter" and not self.name.endswith("_total"):
            raise ValueError(f"Counter {self.name!r} must end in _total (Prometheus naming).")
        if self.kind == "histogram" and (not self.buckets or list(self.buckets) != sorted(set(self.buckets))):
            raise ValueError(f"Histogram {self.name!r} needs strictly increasing buckets.")


@dataclass(frozen=True)
class Const:
    """A fixed label value (e.g. ``type="input"``)."""

    value: str


#: a label comes from a metadata key (str), a constant, or a function of (measurements, metadata)
LabelSource = str | Const | Callable[[Mapping[str, Any], Mapping[str, Any]], Any]
#: a value comes from a measurement key (str; missing -> no update), a constant, or a function
ValueSource = str | float | Callable[[Mapping[str, Any], Mapping[str, Any]], Any]


@dataclass(frozen=True)
class Binding:
    """``event`` updates ``metric`` with ``value`` under ``labels``, when ``when`` allows.

    ``enum_label`` makes a gauge a state set: the series with this label value goes to 1 and
    its siblings (same other labels) to 0, like Prometheus' StateSetMetricFamily.
    """

    event: Event
    metric: str
    labels: Mapping[str, LabelSource]
    value: ValueSource = 1.0
    when: Callable[[Mapping[str, Any], Mapping[str, Any]], bool] | None = None
    enum_label: str | None = None


# -- label and value helpers -------------------------------------------------------------------
@lru_cache(maxsize=256)
def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def error_kind(_m: Mapping[str, Any], md: Mapping[str, Any]) -> str:
    """The outcome label of a span's exception event: its class in snake case (rate_limited)."""
    return _snake(str(md.get("kind") or "error"))


def _status_class(_m: Mapping[str, Any], md: Mapping[str, Any]) -> str:
    status = md.get("status")
    return f"{int(status) // 100}xx" if isinstance(status, int) else "none"


def _cache_label(_m: Mapping[str, Any], md: Mapping[str, Any]) -> str:
    return "hit" if md.get("cache_hit") else "miss"


def _not_cached(_m: Mapping[str, Any], md: Mapping[str, Any]) -> bool:
    # A cache hit consumed no tokens and cost nothing (as DSPy's usage tracker counts).
    return not md.get("cache_hit")


def _is_signature_cache(_m: Mapping[str, Any], md: Mapping[str, Any]) -> bool:
    return md.get("cache") == "signature"


_BREAKER_LEVEL = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


def _breaker_level(_m: Mapping[str, Any], md: Mapping[str, Any]) -> float | None:
    return _BREAKER_LEVEL.get(str(md.get("state", "")).lower().replace("-", "_"))


def _positive(key: str) -> Callable[[Mapping[str, Any], Mapping[str, Any]], bool]:
    def when(m: Mapping[str, Any], _md: Mapping[str, Any]) -> bool:
        v = m.get(key)
        return isinstance(v, int | float) and v > 0

    return when


def _count(m: Mapping[str, Any], _md: Mapping[str, Any]) -> Any:
    return m.get("count", 1.0)


OK = Const("ok")


def _span(
    span: Event,
    labels: Mapping[str, LabelSource],
    *,
    duration: str | None = None,
    calls: str | None = None,
    ok_labels: Mapping[str, LabelSource] | None = None,
    error_labels: Mapping[str, LabelSource] | None = None,
) -> list[Binding]:
    """Bindings of a span: duration on stop and exception, calls counted with an outcome."""
    out: list[Binding] = []
    for ev in (n.stop(span), n.exception(span)):
        if duration:
            out.append(Binding(ev, duration, labels, "duration_s"))
    if calls:
        out.append(Binding(n.stop(span), calls, {**labels, "outcome": OK, **(ok_labels or {})}))
        out.append(Binding(n.exception(span), calls, {**labels, "outcome": error_kind, **(error_labels or {})}))
    return out


def _m(name: str, kind: Kind, help: str, *labels: str, buckets: tuple[float, ...] = ()) -> MetricDef:
    return MetricDef(name, kind, help, tuple(labels), buckets)


# -- the metrics -------------------------------------------------------------------------------
METRICS: tuple[MetricDef, ...] = (
    # programs, modules, predictions
    _m("dspex_program_duration_seconds", "histogram", "Duration of a whole program call.", "program", buckets=LATENCY_S),
    _m("dspex_program_calls_total", "counter", "Program calls by outcome.", "program", "outcome"),
    _m("dspex_module_duration_seconds", "histogram", "Duration of a module call.", "module", buckets=LATENCY_S),
    _m("dspex_module_calls_total", "counter", "Module calls by outcome.", "module", "outcome"),
    _m("dspex_prediction_duration_seconds", "histogram", "Duration of one prediction (Predict forward).", "signature", buckets=LATENCY_S),
    _m("dspex_predictions_total", "counter", "Predictions by outcome.", "signature", "outcome"),
    _m("dspex_reasoning_length_chars", "histogram", "Length of chain-of-thought reasoning.", "signature", buckets=CHARS),
    # signatures and adapters
    _m("dspex_signature_compile_duration_seconds", "histogram", "Signature compilation time (cache misses only).", buckets=FAST_S),
    _m("dspex_signature_compilations_total", "counter", "Signature compilations by outcome.", "outcome"),
    _m("dspex_signature_cache_hits_total", "counter", "Compiled-signature cache hits."),
    _m("dspex_signature_cache_misses_total", "counter", "Compiled-signature cache misses."),
    _m("dspex_validation_failures_total", "counter", "Values that broke a field's type or constraint.", "constraint"),
    _m("dspex_adapter_parse_failures_total", "counter", "LM replies an adapter could not parse.", "adapter"),
    # LM calls
    _m("dspex_lm_call_duration_seconds", "histogram", "LM call latency as the program sees it.", "provider", "model", "cache", buckets=LATENCY_S),
    _m("dspex_lm_calls_total", "counter", "LM calls by outcome and cache use.", "provider", "model", "outcome", "cache"),
    _m("dspex_tokens_total", "counter", "Tokens used (cache hits excluded).", "type", "provider", "model"),
    _m("dspex_cost_usd_total", "counter", "Cost in US dollars (cache hits excluded).", "provider", "model"),
    # providers
    _m("dspex_provider_request_duration_seconds", "histogram", "Latency of one HTTP attempt to a provider.", "provider", "model", buckets=LATENCY_S),
    _m("dspex_provider_requests_total", "counter", "Provider HTTP attempts by outcome.", "provider", "model", "outcome"),
    _m("dspex_provider_responses_total", "counter", "Provider responses by status class.", "provider", "model", "status"),
    _m("dspex_provider_retries_total", "counter", "Retries of provider calls.", "provider", "model", "reason"),
    _m("dspex_rate_limit_wait_seconds_total", "counter", "Time spent waiting on client-side rate limits.", "provider", "model"),
    _m("dspex_circuit_breaker_state", "gauge", "Circuit breaker state: 0 closed, 1 half-open, 2 open.", "breaker"),
    _m("dspex_circuit_breaker_transitions_total", "counter", "Circuit breaker transitions by new state.", "breaker", "state"),
    # caches and memory
    _m("dspex_cache_hits_total", "counter", "Cache hits.", "cache"),
    _m("dspex_cache_misses_total", "counter", "Cache misses.", "cache"),
    _m("dspex_cache_evictions_total", "counter", "Cache evictions.", "cache", "reason"),
    _m("dspex_process_resident_memory_bytes", "gauge", "Resident set size of the process.", "component"),
    _m("dspex_memory_pressure_ratio", "gauge", "RSS over the configured threshold at the last pressure event.", "component"),
    _m("dspex_memory_pressure_events_total", "counter", "Memory pressure events.", "component"),
    # optimizers and evaluation
    _m("dspex_optimizer_iterations_total", "counter", "Optimizer iterations.", "optimizer"),
    _m("dspex_optimizer_iteration_duration_seconds", "histogram", "Duration of one optimizer iteration.", "optimizer", buckets=SLOW_S),
    _m("dspex_optimizer_score", "gauge", "Score of the latest optimizer iteration.", "optimizer"),
    _m("dspex_optimizer_best_score", "gauge", "Best score an optimizer has seen.", "optimizer"),
    _m("dspex_optimizer_runs_total", "counter", "Optimizer compile runs by outcome.", "optimizer", "outcome"),
    _m("dspex_evaluation_examples_total", "counter", "Examples scored by Evaluate.", "program"),
    _m("dspex_evaluation_score", "histogram", "Per-example evaluation scores.", "program", buckets=SCORE),
    _m("dspex_evaluation_last_score", "gauge", "Aggregate score of the latest evaluation.", "program"),
    _m("dspex_evaluation_duration_seconds", "histogram", "Duration of a whole evaluation.", "program", buckets=SLOW_S),
    # distribution, recovery, load
    _m("dspex_distributed_operations_total", "counter", "Cluster coordination operations.", "operation"),
    _m("dspex_distributed_operation_duration_seconds", "histogram", "Duration of cluster coordination operations.", "operation", buckets=LATENCY_S),
    _m("dspex_error_recoveries_total", "counter", "Recoveries from errors (retry, fallback, restart, rollback).", "component", "strategy"),
    _m("dspex_overload_rejections_total", "counter", "Work rejected by backpressure.", "component"),
    _m("dspex_queue_depth", "gauge", "Work waiting or in flight.", "component"),
    # routing, rollouts, deployments
    _m("dspex_router_decisions_total", "counter", "Routing decisions.", "strategy", "model", "fallback"),
    _m("dspex_model_cooldown_seconds", "gauge", "Remaining cooldown of a failing model (0 = serving).", "model"),
    _m("dspex_model_cooldowns_total", "counter", "Times a model was put in cooldown.", "model"),
    _m("dspex_rollout_weight", "gauge", "Traffic percent (0-100) on a rollout's new version.", "program", "version"),
    _m("dspex_rollout_phase", "gauge", "Current rollout phase of a program (1 for the current phase).", "program", "phase"),
    _m("dspex_rollout_failed_checks", "gauge", "Failed analysis checks in the current rollout step.", "program"),
    _m("dspex_rollout_transitions_total", "counter", "Rollout phase transitions by new phase.", "program", "phase"),
    _m("dspex_deployment_transitions_total", "counter", "Deployment state transitions by new state.", "state"),
    _m("dspex_hotswaps_total", "counter", "Hot swaps of a program's active version.", "program"),
    # jobs and serving
    _m("dspex_jobs_total", "counter", "Durable jobs by outcome.", "kind", "outcome"),
    _m("dspex_job_duration_seconds", "histogram", "Durable job run time.", "kind", buckets=SLOW_S),
    _m("dspex_serve_requests_total", "counter", "Requests served by outcome.", "program", "version", "outcome"),
    _m("dspex_serve_request_duration_seconds", "histogram", "Serve request latency.", "program", "version", buckets=LATENCY_S),
    # the execution log
    _m("dspex_execlog_dropped_rows_total", "counter", "Execution-log rows dropped because the queue was full."),
    _m("dspex_execlog_flushed_rows_total", "counter", "Execution-log rows written."),
    _m("dspex_execlog_flush_duration_seconds", "histogram", "Duration of one execution-log flush.", buckets=FAST_S),
    _m("dspex_execlog_flush_errors_total", "counter", "Execution-log flushes that failed.", "error"),
    # alerts and telemetry itself
    _m("dspex_alert_state", "gauge", "Alert rule state (1 for the current state).", "rule", "state"),
    _m("dspex_alert_transitions_total", "counter", "Alert rule transitions by new state.", "rule", "state"),
    _m("dspex_telemetry_handler_failures_total", "counter", "Telemetry handlers detached because they raised.", "handler"),
)

METRICS_BY_NAME: dict[str, MetricDef] = {m.name: m for m in METRICS}

_PROVIDER = {"provider": "provider", "model": "model"}

# -- the bindings --------------------------------------------------------------------------------
BINDINGS: tuple[Binding, ...] = (
    *_span(n.PROGRAM, {"program": "program"}, duration="dspex_program_duration_seconds", calls="dspex_program_calls_total"),
    *_span(n.MODULE, {"module": "module"}, duration="dspex_module_duration_seconds", calls="dspex_module_calls_total"),
    # Predict's "predictor" metadata is a per-instance id: fine on a trace, never a label.
    *_span(
        n.PREDICT,
        {"signature": "signature"},
        duration="dspex_prediction_duration_seconds",
        calls="dspex_predictions_total",
    ),
    Binding(n.stop(n.CHAIN_OF_THOUGHT), "dspex_reasoning_length_chars", {"signature": "signature"}, "reasoning_chars"),
    Binding(n.stop(n.SIGNATURE_COMPILE), "dspex_signature_compile_duration_seconds", {}, "duration_s"),
    *_span(n.SIGNATURE_COMPILE, {}, calls="dspex_signature_compilations_total"),
    Binding(n.CACHE_HIT, "dspex_signature_cache_hits_total", {}, _count, when=_is_signature_cache),
    Binding(n.CACHE_MISS, "dspex_signature_cache_misses_total", {}, _count, when=_is_signature_cache),
    Binding(n.TYPE_INVALID, "dspex_validation_failures_total", {"constraint": "constraint"}, _count),
    Binding(n.ADAPTER_PARSE_ERROR, "dspex_adapter_parse_failures_total", {"adapter": "adapter"}, _count),
    Binding(n.stop(n.LM_CALL), "dspex_lm_call_duration_seconds", {**_PROVIDER, "cache": _cache_label}, "duration_s"),
    Binding(n.exception(n.LM_CALL), "dspex_lm_call_duration_seconds", {**_PROVIDER, "cache": Const("miss")}, "duration_s"),
    *_span(
        n.LM_CALL,
        _PROVIDER,
        calls="dspex_lm_calls_total",
        ok_labels={"cache": _cache_label},
        error_labels={"cache": Const("miss")},
    ),
    Binding(n.stop(n.LM_CALL), "dspex_tokens_total", {"type": Const("input"), **_PROVIDER}, "input_tokens", _not_cached),
    Binding(n.stop(n.LM_CALL), "dspex_tokens_total", {"type": Const("output"), **_PROVIDER}, "output_tokens", _not_cached),
    Binding(n.stop(n.LM_CALL), "dspex_cost_usd_total", _PROVIDER, "cost_usd", _not_cached),
    *_span(
        n.PROVIDER_REQUEST,
        _PROVIDER,
        duration="dspex_provider_request_duration_seconds",
        calls="dspex_provider_requests_total",
    ),
    Binding(n.PROVIDER_RESPONSE, "dspex_provider_responses_total", {**_PROVIDER, "status": _status_class}),
    Binding(n.PROVIDER_RETRY, "dspex_provider_retries_total", {**_PROVIDER, "reason": "reason"}),
    Binding(n.RATE_LIMIT_WAIT, "dspex_rate_limit_wait_seconds_total", _PROVIDER, "wait_s"),
    Binding(n.BREAKER_STATE, "dspex_circuit_breaker_state", {"breaker": "breaker"}, _breaker_level),
    Binding(n.BREAKER_STATE, "dspex_circuit_breaker_transitions_total", {"breaker": "breaker", "state": "state"}),
    Binding(n.CACHE_HIT, "dspex_cache_hits_total", {"cache": "cache"}, _count),
    Binding(n.CACHE_MISS, "dspex_cache_misses_total", {"cache": "cache"}, _count),
    Binding(n.CACHE_EVICT, "dspex_cache_evictions_total", {"cache": "cache", "reason": "reason"}, _count),
    Binding(n.MEMORY_SAMPLE, "dspex_process_resident_memory_bytes", {"component": "component"}, "rss_bytes"),
    Binding(n.MEMORY_PRESSURE, "dspex_memory_pressure_ratio", {"component": "component"}, "pressure_ratio"),
    Binding(n.MEMORY_PRESSURE, "dspex_memory_pressure_events_total", {"component": "component"}),
    Binding(n.OPTIMIZER_ITERATION, "dspex_optimizer_iterations_total", {"optimizer": "optimizer"}),
    Binding(n.OPTIMIZER_ITERATION, "dspex_optimizer_iteration_duration_seconds", {"optimizer": "optimizer"}, "duration_s"),
    Binding(n.OPTIMIZER_ITERATION, "dspex_optimizer_score", {"optimizer": "optimizer"}, "score"),
    Binding(n.OPTIMIZER_ITERATION, "dspex_optimizer_best_score", {"optimizer": "optimizer"}, "best_score"),
    *_span(n.OPTIMIZER_COMPILE, {"optimizer": "optimizer"}, calls="dspex_optimizer_runs_total"),
    Binding(n.EVALUATE_EXAMPLE, "dspex_evaluation_examples_total", {"program": "program"}),
    Binding(n.EVALUATE_EXAMPLE, "dspex_evaluation_score", {"program": "program"}, "score"),
    Binding(n.stop(n.EVALUATE), "dspex_evaluation_last_score", {"program": "program"}, "score"),
    Binding(n.stop(n.EVALUATE), "dspex_evaluation_duration_seconds", {"program": "program"}, "duration_s"),
    Binding(n.DISTRIBUTED_COORDINATION, "dspex_distributed_operations_total", {"operation": "operation"}),
    Binding(n.DISTRIBUTED_COORDINATION, "dspex_distributed_operation_duration_seconds", {"operation": "operation"}, "duration_s"),
    Binding(n.ERROR_RECOVERY, "dspex_error_recoveries_total", {"component": "component", "strategy": "strategy"}),
    Binding(n.OVERLOAD, "dspex_overload_rejections_total", {"component": "component"}),
    Binding(n.QUEUE_DEPTH, "dspex_queue_depth", {"component": "component"}, "depth"),
    Binding(n.ROUTER_ROUTE, "dspex_router_decisions_total", {"strategy": "strategy", "model": "model", "fallback": "fallback"}),
    Binding(n.ROUTER_COOLDOWN, "dspex_model_cooldown_seconds", {"model": "model"}, "cooldown_s"),
    Binding(n.ROUTER_COOLDOWN, "dspex_model_cooldowns_total", {"model": "model"}, when=_positive("cooldown_s")),
    Binding(n.ROLLOUT_TICK, "dspex_rollout_weight", {"program": "program", "version": "version"}, "weight"),
    Binding(n.ROLLOUT_TICK, "dspex_rollout_phase", {"program": "program", "phase": "phase"}, enum_label="phase"),
    Binding(n.ROLLOUT_TICK, "dspex_rollout_failed_checks", {"program": "program"}, "failed_checks"),
    Binding(n.ROLLOUT_TRANSITION, "dspex_rollout_phase", {"program": "program", "phase": "to"}, enum_label="phase"),
    Binding(n.ROLLOUT_TRANSITION, "dspex_rollout_transitions_total", {"program": "program", "phase": "to"}),
    Binding(n.DEPLOYMENT_TRANSITION, "dspex_deployment_transitions_total", {"state": "to"}),
    Binding(n.HOTSWAP, "dspex_hotswaps_total", {"program": "program"}),
    Binding(n.EXECLOG_DROPPED, "dspex_execlog_dropped_rows_total", {}, _count),
    Binding(n.EXECLOG_FLUSH, "dspex_execlog_flushed_rows_total", {}, "rows"),
    Binding(n.EXECLOG_FLUSH, "dspex_execlog_flush_duration_seconds", {}, "duration_s"),
    Binding(n.EXECLOG_FLUSH_ERROR, "dspex_execlog_flush_errors_total", {"error": "error"}),
    *_span(n.JOB, {"kind": "kind"}, duration="dspex_job_duration_seconds", calls="dspex_jobs_total"),
    *_span(
        n.SERVE_REQUEST,
        {"program": "program", "version": "version"},
        duration="dspex_serve_request_duration_seconds",
        calls="dspex_serve_requests_total",
    ),
    Binding(n.ALERT_TRANSITION, "dspex_alert_state", {"rule": "rule", "state": "to"}, enum_label="state"),
    Binding(n.ALERT_TRANSITION, "dspex_alert_transitions_total", {"rule": "rule", "state": "to"}),
    Binding(n.TELEMETRY_HANDLER_DETACHED, "dspex_telemetry_handler_failures_total", {"handler": "handler"}),
)


def _check() -> None:
    # Fail at import, not at the first event, when a binding names an unknown metric or labels.
    for b in BINDINGS:
        m = METRICS_BY_NAME.get(b.metric)
        if m is None:
            raise ValueError(f"Binding for {b.event} names unknown metric {b.metric!r}.")
        if set(b.labels) != set(m.labels):
            raise ValueError(f"Binding for {b.metric} gives labels {sorted(b.labels)}; the metric has {m.labels}.")


_check()
