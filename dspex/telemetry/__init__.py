"""Telemetry: events and spans (``:telemetry`` shape), metrics, alerts, exporters.

- ``emit`` / ``span`` / ``attach``: the event bus (``_events.py``); event names in ``names.py``,
  documented in ``events.md`` beside this file.
- ``MetricsStore`` / ``enable_metrics()``: counters, gauges, histograms with 1m..24h windows
  (``metrics.py``, fed through the bindings in ``catalog.py``).
- ``serve_metrics(port)`` / ``metrics_app()``: Prometheus ``/metrics`` (``prometheus.py``).
- ``AlertManager`` / ``AlertRule`` / ``default_rules()`` and notifiers (``alerts.py``,
  ``notifiers.py``); ``MemoryMonitor`` (``memory.py``).
- ``dspex.telemetry.otel.enable_tracing()``: OpenTelemetry spans (``otel.py``).

The exporters load on first use (``prometheus_client``, ``httpx`` and OpenTelemetry are not
imported by ``import dspex``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dspex.telemetry import names
from dspex.telemetry._events import (
    Event,
    Handler,
    Span,
    attach,
    attach_many,
    current_span,
    detach,
    emit,
    has_handlers,
    list_handlers,
    span,
)
from dspex.telemetry.metrics import MetricsStore, default_store, disable_metrics, enable_metrics
from dspex.telemetry.sketch import QuantileSketch
from dspex.telemetry.windows import WINDOWS, WindowStats

if TYPE_CHECKING:
    from dspex.telemetry import otel
    from dspex.telemetry.alerts import (
        Agg,
        AlertManager,
        AlertRule,
        AlertState,
        Ratio,
        Transition,
        default_rules,
    )
    from dspex.telemetry.memory import MemoryMonitor, rss_bytes
    from dspex.telemetry.notifiers import CallbackNotifier, LogNotifier, WebhookNotifier
    from dspex.telemetry.prometheus import MetricsServer, metrics_app, metrics_text, serve_metrics

_LAZY = {
    "Agg": "alerts",
    "AlertManager": "alerts",
    "AlertRule": "alerts",
    "AlertState": "alerts",
    "Ratio": "alerts",
    "Transition": "alerts",
    "default_rules": "alerts",
    "MemoryMonitor": "memory",
    "rss_bytes": "memory",
    "CallbackNotifier": "notifiers",
    "LogNotifier": "notifiers",
    "WebhookNotifier": "notifiers",
    "MetricsServer": "prometheus",
    "metrics_app": "prometheus",
    "metrics_text": "prometheus",
    "serve_metrics": "prometheus",
}


def __getattr__(name: str) -> Any:
    if name == "otel":
        return importlib.import_module("dspex.telemetry.otel")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dspex.telemetry' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"dspex.telemetry.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "WINDOWS",
    "Agg",
    "AlertManager",
    "AlertRule",
    "AlertState",
    "CallbackNotifier",
    "Event",
    "Handler",
    "LogNotifier",
    "MemoryMonitor",
    "MetricsServer",
    "MetricsStore",
    "QuantileSketch",
    "Ratio",
    "Span",
    "Transition",
    "WebhookNotifier",
    "WindowStats",
    "attach",
    "attach_many",
    "current_span",
    "default_rules",
    "default_store",
    "detach",
    "disable_metrics",
    "emit",
    "enable_metrics",
    "has_handlers",
    "list_handlers",
    "metrics_app",
    "metrics_text",
    "names",
    "otel",
    "rss_bytes",
    "serve_metrics",
    "span",
]
