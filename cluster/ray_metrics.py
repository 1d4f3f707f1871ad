"""dspex metrics through ``ray.util.metrics``, so they show on the Ray dashboard.

``enable_ray_metrics()`` attaches a telemetry handler that applies the same catalog
(``dspex.telemetry.catalog``: one place for names, labels, buckets and the events feeding
them) to Ray Counter / Gauge / Histogram objects, created on first use with the metric's
labels as tag keys. Ray exports them from every worker through its metrics agent, prefixed
``ray_`` (``dspex_lm_calls_total`` shows as ``ray_dspex_lm_calls_total``).

A handler is per process: ``dspex.cluster.init()`` calls ``enable_ray_metrics()`` in the
driver, and workers get it through ``runtime_env={"worker_process_setup_hook":
"dspex.cluster.ray_metrics.setup_worker"}`` (``WORKER_SETUP_HOOK``).
Windows, quantiles and alerts stay with the in-process ``MetricsStore``; Ray only aggregates
what Prometheus would.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from dspex.telemetry import _events
from dspex.telemetry._compile import Compiled, LabelCaps, compile_bindings
from dspex.telemetry._events import Event
from dspex.telemetry.catalog import BINDINGS, Binding, MetricDef

__all__ = [
    "RAY_METRICS_HANDLER_ID",
    "WORKER_SETUP_HOOK",
    "RayMetricsSink",
    "disable_ray_metrics",
    "enable_ray_metrics",
    "setup_worker",
]

RAY_METRICS_HANDLER_ID = "dspex.ray_metrics"
WORKER_SETUP_HOOK = "dspex.cluster.ray_metrics.setup_worker"


def ray_name(defn: MetricDef) -> str:
    # Ray's Counter appends "_total" itself; our catalog names already end in it.
    return defn.name[: -len("_total")] if defn.kind == "counter" else defn.name


class RayMetricsSink:
    """The telemetry handler writing to ``ray.util.metrics``."""

    def __init__(self, bindings: Iterable[Binding] = BINDINGS, *, max_label_values: int = 100) -> None:
        self._plan: dict[Event, tuple[Compiled, ...]] = compile_bindings(bindings)
        self.caps = LabelCaps(max_label_values)
        self._objects: dict[str, Any] = {}
        self._enum_series: dict[str, set[tuple[str, ...]]] = {}
        self._lock = threading.Lock()

    @property
    def events(self) -> tuple[Event, ...]:
        return tuple(self._plan)

    def _object(self, defn: MetricDef) -> Any:
        obj = self._objects.get(defn.name)
        if obj is None:
            from ray.util import metrics as rm

            name, tags = ray_name(defn), defn.labels
            if defn.kind == "counter":
                obj = rm.Counter(name, description=defn.help, tag_keys=tags)
            elif defn.kind == "gauge":
                obj = rm.Gauge(name, description=defn.help, tag_keys=tags)
            else:
                obj = rm.Histogram(name, description=defn.help, boundaries=list(defn.buckets), tag_keys=tags)
            self._objects[defn.name] = obj
        return obj

    def handle(self, event: Event, measurements: dict[str, Any], metadata: dict[str, Any], _config: Any) -> None:
        plan = self._plan.get(event)
        if not plan:
            return
        with self._lock:
            for c in plan:
                r = c.resolve(measurements, metadata)
                if r is None:
                    continue
                defn, v = c.metric, r[1]
                labels = self.caps.cap(defn.name, r[0])
                obj = self._object(defn)
                tags = dict(zip(defn.labels, labels, strict=True))
                if defn.kind == "counter":
                    if v > 0:  # Ray refuses increments <= 0
                        obj.inc(v, tags=tags)
                elif defn.kind == "gauge":
                    if c.enum_index >= 0:
                        self._set_state(defn, obj, labels, c.enum_index)
                    obj.set(v, tags=tags)
                else:
                    obj.observe(v, tags=tags)

    def _set_state(self, defn: MetricDef, obj: Any, labels: tuple[str, ...], idx: int) -> None:
        # A state-set gauge: the siblings of this series (same labels but the state) go to 0.
        known = self._enum_series.setdefault(defn.name, set())
        rest = labels[:idx] + labels[idx + 1 :]
        for other in known:
            if other != labels and other[:idx] + other[idx + 1 :] == rest:
                obj.set(0.0, tags=dict(zip(defn.labels, other, strict=True)))
        known.add(labels)


_sink: RayMetricsSink | None = None
_lock = threading.Lock()


def enable_ray_metrics() -> RayMetricsSink:
    """Attach the Ray metrics handler in this process (idempotent). Needs a running Ray."""
    global _sink
    with _lock:
        attached = any(hid == RAY_METRICS_HANDLER_ID for hid, _ in _events.list_handlers())
        if attached and _sink is not None:
            return _sink
        sink = RayMetricsSink()
        _events.detach(RAY_METRICS_HANDLER_ID)
        _events.attach_many(RAY_METRICS_HANDLER_ID, sink.events, sink.handle)
        _sink = sink
        return sink


def disable_ray_metrics() -> bool:
    global _sink
    with _lock:
        _sink = None
        return _events.detach(RAY_METRICS_HANDLER_ID)


def setup_worker() -> None:
    """``worker_process_setup_hook`` for Ray workers: export dspex metrics from the worker."""
    enable_ray_metrics()
