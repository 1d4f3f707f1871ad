"""Event names: emitters import these instead of spelling tuples.

A *span* name ``X`` emits ``X + ("start",)``, ``X + ("stop",)`` or ``X + ("exception",)``
(through ``telemetry.span``); an *event* name is emitted as is (``telemetry.emit``). The
measurements and metadata of each are in ``events.md`` beside this file; the metrics they
feed are in ``catalog.py``.
"""

from __future__ import annotations

from dspex.telemetry._events import Event

__all__ = [
    "ADAPTER_FORMAT",
    "ADAPTER_PARSE_ERROR",
    "ALERT_TRANSITION",
    "BREAKER_STATE",
    "CACHE_EVICT",
    "CACHE_HIT",
    "CACHE_MISS",
    "CHAIN_OF_THOUGHT",
    "DEPLOYMENT_TRANSITION",
    "DISTRIBUTED_COORDINATION",
    "ERROR_RECOVERY",
    "EVALUATE",
    "EVALUATE_EXAMPLE",
    "EXECLOG_DROPPED",
    "EXECLOG_FLUSH",
    "EXECLOG_FLUSH_ERROR",
    "GRAPH_STEP",
    "HOTSWAP",
    "JOB",
    "LM_CALL",
    "MEMORY_PRESSURE",
    "MEMORY_SAMPLE",
    "MODULE",
    "OPTIMIZER_COMPILE",
    "OPTIMIZER_ITERATION",
    "OVERLOAD",
    "PREDICT",
    "PROGRAM",
    "PROVIDER_REQUEST",
    "PROVIDER_RESPONSE",
    "PROVIDER_RETRY",
    "QUEUE_DEPTH",
    "RATE_LIMIT_WAIT",
    "ROLLOUT_TICK",
    "ROLLOUT_TRANSITION",
    "ROUTER_COOLDOWN",
    "ROUTER_ROUTE",
    "SERVE_REQUEST",
    "SIGNATURE_COMPILE",
    "SPANS",
    "TELEMETRY_HANDLER_DETACHED",
    "TYPE_INVALID",
    "TYPE_REGISTERED",
    "exception",
    "start",
    "stop",
]

# -- spans (start / stop / exception) -------------------------------------------------------
PROGRAM: Event = ("dspex", "program")  # the outermost Module call
MODULE: Event = ("dspex", "module")  # any Module.__call__ below the program
PREDICT: Event = ("dspex", "predict")  # one Predict (or subclass) forward
CHAIN_OF_THOUGHT: Event = ("dspex", "chain_of_thought")  # ChainOfThought around its Predict
GRAPH_STEP: Event = ("dspex", "graph", "step")  # one step of a ProgramGraph
SIGNATURE_COMPILE: Event = ("dspex", "signature", "compile")
ADAPTER_FORMAT: Event = ("dspex", "adapter", "format")
LM_CALL: Event = ("dspex", "lm", "call")  # BaseLM.__call__ / acall, cache hits included
PROVIDER_REQUEST: Event = ("dspex", "provider", "request")  # one HTTP attempt
OPTIMIZER_COMPILE: Event = ("dspex", "optimizer", "compile")
EVALUATE: Event = ("dspex", "evaluate")
JOB: Event = ("dspex", "job")
SERVE_REQUEST: Event = ("dspex", "serve", "request")

#: every span name above; exporters (OpenTelemetry) attach to their start/stop/exception
SPANS: tuple[Event, ...] = (
    PROGRAM,
    MODULE,
    PREDICT,
    CHAIN_OF_THOUGHT,
    GRAPH_STEP,
    SIGNATURE_COMPILE,
    ADAPTER_FORMAT,
    LM_CALL,
    PROVIDER_REQUEST,
    OPTIMIZER_COMPILE,
    EVALUATE,
    JOB,
    SERVE_REQUEST,
)

# -- single events ----------------------------------------------------------------------------
ADAPTER_PARSE_ERROR: Event = ("dspex", "adapter", "parse_error")
TYPE_REGISTERED: Event = ("dspex", "types", "registered")
TYPE_INVALID: Event = ("dspex", "types", "invalid")  # a value broke a field's type or constraint
PROVIDER_RESPONSE: Event = ("dspex", "provider", "response")
PROVIDER_RETRY: Event = ("dspex", "provider", "retry")
RATE_LIMIT_WAIT: Event = ("dspex", "ratelimit", "wait")
BREAKER_STATE: Event = ("dspex", "breaker", "state")
CACHE_HIT: Event = ("dspex", "cache", "hit")
CACHE_MISS: Event = ("dspex", "cache", "miss")
CACHE_EVICT: Event = ("dspex", "cache", "evict")
MEMORY_SAMPLE: Event = ("dspex", "memory", "sample")
MEMORY_PRESSURE: Event = ("dspex", "memory", "pressure")
OPTIMIZER_ITERATION: Event = ("dspex", "optimizer", "iteration")
EVALUATE_EXAMPLE: Event = ("dspex", "evaluate", "example")
DISTRIBUTED_COORDINATION: Event = ("dspex", "distributed", "coordination")
ERROR_RECOVERY: Event = ("dspex", "error", "recovery")
OVERLOAD: Event = ("dspex", "overload")
QUEUE_DEPTH: Event = ("dspex", "queue", "depth")
ROUTER_ROUTE: Event = ("dspex", "router", "route")
ROUTER_COOLDOWN: Event = ("dspex", "router", "cooldown")
ROLLOUT_TICK: Event = ("dspex", "rollout", "tick")
ROLLOUT_TRANSITION: Event = ("dspex", "rollout", "transition")
DEPLOYMENT_TRANSITION: Event = ("dspex", "deployment", "transition")
HOTSWAP: Event = ("dspex", "hotswap", "swap")
EXECLOG_DROPPED: Event = ("dspex", "store", "execlog", "dropped")
EXECLOG_FLUSH: Event = ("dspex", "store", "execlog", "flush")
EXECLOG_FLUSH_ERROR: Event = ("dspex", "store", "execlog", "flush_error")
ALERT_TRANSITION: Event = ("dspex", "alert", "transition")
TELEMETRY_HANDLER_DETACHED: Event = ("dspex", "telemetry", "handler_detached")
SIM_REQUEST: Event = ("dspex", "sim", "request")
PREDICTOR_EXECUTE: Event = ("dspex", "predictor", "execute")  # span: one call on a Predictor actor
SIGNATURE_SHARED: Event = ("dspex", "signature", "shared")  # a compiled form from the cluster-wide cache
PREDICTOR_SINK_DROPPED: Event = ("dspex", "predictor", "sink_dropped")
ROUTES_PUBLISHED: Event = ("dspex", "routing", "published")  # the supervisor published a routing table
HOTSWAP_STEP: Event = ("dspex", "hotswap", "step")  # a staged traffic shift
EXPERIMENT_RUN: Event = ("dspex", "experiment", "run")  # span: one experiment
EXPERIMENT_ARM: Event = ("dspex", "experiment", "arm")  # span: one arm (optimize + evaluate)
EXPERIMENT_STATUS: Event = ("dspex", "experiment", "status")
EXPERIMENT_ONLINE_RECORD: Event = ("dspex", "experiment", "online", "record")  # one request served by the simulated LM server


def start(name: Event) -> Event:
    return (*name, "start")


def stop(name: Event) -> Event:
    return (*name, "stop")


def exception(name: Event) -> Event:
    return (*name, "exception")
