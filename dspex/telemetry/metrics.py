"""The metrics store: events in, counters / gauges / histograms with windows out.

``MetricsStore`` holds one series per (metric, label values) for every metric of the
catalog. Each series keeps its Prometheus value (counter total, gauge value, histogram
bucket counts and sum) and a ``WindowedSeries`` for the seed's windows (1m, 5m, 15m, 1h, 24h:
count, sum, avg, min, max and, for histograms, p50/p95/p99 from a DDSketch).

Attached as a telemetry handler (``store.attach()`` or ``enable_metrics()``), it turns each
event into updates through the catalog's bindings. Stores from many processes merge:
``store.to_dict()`` is JSON-friendly and ``store.merge(other_or_dict)`` adds it in.

Memory bound: at most ``max_series_per_metric`` series per metric (further label sets fold
into one all-"other" series) and at most ``max_label_values`` values per label. A series keeps
at most 65 window buckets (``windows.py``): a counter or gauge series is bounded by ~15 KiB, a
histogram series by 65 sketches x 64 KiB ~ 4 MiB. Measured (tracemalloc, 24 h of lognormal
latencies at 10 events/s, every bucket full): 0.7 MiB for a histogram series, 14 KiB for a
counter series. So the real cost is the number of distinct (provider, model, signature, ...)
combinations in use; the caps make it finite whatever the emitters send.

Thread-safe (one lock). The clock is injected (seconds since the epoch, so buckets of
different processes line up): tests step it instead of sleeping.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dspex.telemetry import _events
from dspex.telemetry._compile import (
    OTHER,
    Compiled,
    LabelCaps,
    compile_bindings,
    label_value,
    number,
)
from dspex.telemetry._events import Event
from dspex.telemetry.catalog import BINDINGS, METRICS, Binding, MetricDef
from dspex.telemetry.sketch import Aggregate, QuantileSketch, Stats
from dspex.telemetry.windows import WindowedSeries, WindowStats, parse_window

__all__ = [
    "METRICS_HANDLER_ID",
    "MetricsStore",
    "SeriesView",
    "default_store",
    "disable_metrics",
    "enable_metrics",
]

METRICS_HANDLER_ID = "dspex.metrics"
_FORMAT_VERSION = 1


class _Series:
    __slots__ = ("counts", "hsum", "labels", "updated_at", "value", "window")

    def __init__(self, labels: tuple[str, ...], window: WindowedSeries, n_buckets: int) -> None:
        self.labels = labels
        self.value = 0.0  # counter total, gauge value, or histogram observation count
        self.updated_at = -math.inf
        self.counts = [0.0] * n_buckets  # histogram: per bucket (not cumulative), + the +Inf one
        self.hsum = 0.0
        self.window = window


class _Metric:
    __slots__ = ("buckets", "by_labels", "by_raw", "defn", "is_hist", "kind", "make_agg")

    def __init__(self, defn: MetricDef, make_agg: Callable[[], Aggregate]) -> None:
        self.defn = defn
        self.kind = defn.kind
        self.is_hist = defn.kind == "histogram"
        self.buckets = defn.buckets
        self.make_agg = make_agg
        self.by_labels: dict[tuple[str, ...], _Series] = {}  # capped labels -> series
        self.by_raw: dict[tuple[str, ...], _Series] = {}  # labels as emitted -> series (a cache)


@dataclass(frozen=True)
class SeriesView:
    """A read-only copy of one series. ``buckets`` are cumulative (le, count) for histograms."""

    metric: str
    kind: str
    labels: dict[str, str]
    value: float
    sum: float
    buckets: tuple[tuple[float, float], ...]
    updated_at: float


class MetricsStore:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        relative_accuracy: float = 0.01,
        bin_limit: int = 1024,
        max_label_values: int = 100,
        max_series_per_metric: int = 1000,
        metrics: Iterable[MetricDef] = METRICS,
        bindings: Iterable[Binding] = BINDINGS,
    ) -> None:
        if max_series_per_metric < 1:
            raise ValueError(f"max_series_per_metric must be at least 1, got {max_series_per_metric!r}.")
        QuantileSketch(relative_accuracy, bin_limit)  # validates both now, not at the first event
        self.clock = clock
        self.relative_accuracy = relative_accuracy
        self.bin_limit = bin_limit
        self.max_series_per_metric = max_series_per_metric
        self.caps = LabelCaps(max_label_values)
        self._lock = threading.Lock()
        self._metrics: dict[str, _Metric] = {}
        for d in metrics:
            make: Callable[[], Aggregate]
            if d.kind == "histogram":
                make = self._new_sketch
            else:
                make = Stats
            self._metrics[d.name] = _Metric(d, make)
        compiled = compile_bindings(b for b in bindings if b.metric in self._metrics)
        # event -> ((binding, its metric), ...): the handler's whole plan, one dict lookup away
        self._plan: dict[Event, tuple[tuple[Compiled, _Metric], ...]] = {
            ev: tuple((c, self._metrics[c.metric.name]) for c in cs) for ev, cs in compiled.items()
        }
        self._handler_id: str | None = None
        self._exposition: Any = None  # the Prometheus registry, made by prometheus.registry_for

    def _new_sketch(self) -> Aggregate:
        return QuantileSketch(self.relative_accuracy, self.bin_limit)

    # -- the telemetry handler ------------------------------------------------------------------
    @property
    def events(self) -> tuple[Event, ...]:
        return tuple(self._plan)

    def handle(self, event: Event, measurements: dict[str, Any], metadata: dict[str, Any], _config: Any) -> None:
        """The telemetry handler: apply the event's bindings (the hot path, kept inline)."""
        plan = self._plan.get(event)
        if not plan:
            return
        now = self.clock()
        with self._lock:
            for c, metric in plan:
                r = c.resolve(measurements, metadata)
                if r is not None:
                    self._record(metric, r[0], r[1], now, c.enum_index)

    def attach(self, handler_id: str = METRICS_HANDLER_ID) -> None:
        """Attach as a telemetry handler (ValueError when ``handler_id`` is taken)."""
        _events.attach_many(handler_id, self.events, self.handle)
        self._handler_id = handler_id

    def detach(self) -> bool:
        if self._handler_id is None:
            return False
        done = _events.detach(self._handler_id)
        self._handler_id = None
        return done

    # -- recording ------------------------------------------------------------------------------
    def _record(self, metric: _Metric, raw: tuple[str, ...], v: float, now: float, enum_index: int = -1) -> None:
        s = metric.by_raw.get(raw)
        if s is None:
            s = self._series_for(metric, raw)
        kind = metric.kind
        if kind == "counter":
            if v < 0:  # counters only go up; a negative increment is an emitter bug, not data
                return
            s.value += v
        elif kind == "gauge":
            s.value = v
            if enum_index >= 0:
                self._clear_siblings(metric, s, enum_index, now)
        else:
            s.value += 1
            s.hsum += v
            s.counts[bisect.bisect_left(metric.buckets, v)] += 1
        s.updated_at = now
        w = s.window
        if now >= w.open_until:  # WindowedSeries.add, inlined: this runs for every update
            w.advance(now)
        w.head.add(v)

    def _series_for(self, metric: _Metric, raw: tuple[str, ...]) -> _Series:
        if len(raw) != len(metric.defn.labels):
            raise ValueError(f"{metric.defn.name} takes labels {metric.defn.labels}, got {len(raw)} values.")
        labels = self.caps.cap(metric.defn.name, raw)
        s = metric.by_labels.get(labels)
        if s is None:
            overflow = (OTHER,) * len(raw)
            # one slot stays free for the all-"other" series, so the cap is a hard one
            if labels != overflow and len(metric.by_labels) >= self.max_series_per_metric - 1:
                labels = overflow
                s = metric.by_labels.get(labels)
            if s is None:
                s = _Series(labels, WindowedSeries(metric.make_agg), len(metric.buckets) + 1)
                metric.by_labels[labels] = s
        # The raw -> series cache is bounded too: past the bound, folded values are re-capped.
        if len(metric.by_raw) < 4 * self.max_series_per_metric:
            metric.by_raw[raw] = s
        return s

    def _clear_siblings(self, metric: _Metric, s: _Series, idx: int, now: float) -> None:
        key = s.labels[:idx] + s.labels[idx + 1 :]
        for other in metric.by_labels.values():
            if other is not s and other.value != 0.0 and other.labels[:idx] + other.labels[idx + 1 :] == key:
                other.value = 0.0
                other.updated_at = now

    def record(self, name: str, value: float, labels: Mapping[str, Any] | None = None, *, state: str | None = None) -> None:
        """Record one value directly (no event): counter += value, gauge = value, histogram observe.

        ``state`` names the state-set label of a gauge: siblings go to 0.
        """
        metric = self._metric(name)
        labels = dict(labels or {})
        unknown = set(labels) - set(metric.defn.labels)
        if unknown:
            raise ValueError(f"{name} has labels {metric.defn.labels}; unknown: {sorted(unknown)}.")
        v = number(value)
        if v is None:
            raise ValueError(f"A metric value is a finite number, got {value!r}.")
        raw = tuple(label_value(labels.get(k)) for k in metric.defn.labels)
        idx = metric.defn.labels.index(state) if state else -1
        now = self.clock()
        with self._lock:
            self._record(metric, raw, v, now, idx)

    def inc(self, name: str, value: float = 1.0, **labels: Any) -> None:
        self.record(name, value, labels)

    def set(self, name: str, value: float, **labels: Any) -> None:
        self.record(name, value, labels)

    def observe(self, name: str, value: float, **labels: Any) -> None:
        self.record(name, value, labels)

    # -- reading --------------------------------------------------------------------------------
    def _metric(self, name: str) -> _Metric:
        m = self._metrics.get(name)
        if m is None:
            raise KeyError(f"No metric named {name!r}; see dspex.telemetry.catalog.METRICS for the names.")
        return m

    def definition(self, name: str) -> MetricDef:
        return self._metric(name).defn

    def _matching(self, metric: _Metric, where: Mapping[str, str] | None) -> list[_Series]:
        if not where:
            return list(metric.by_labels.values())
        idx: list[tuple[int, str, bool]] = []
        for key, want in where.items():
            if key not in metric.defn.labels:
                raise ValueError(f"{metric.defn.name} has labels {metric.defn.labels}; cannot filter on {key!r}.")
            negate = want.startswith("!")
            idx.append((metric.defn.labels.index(key), want[1:] if negate else want, negate))
        return [
            s
            for s in metric.by_labels.values()
            if all((s.labels[i] == w) != neg for i, w, neg in idx)
        ]

    def window(
        self, name: str, window: str | float = "5m", where: Mapping[str, str] | None = None, now: float | None = None
    ) -> WindowStats:
        """Aggregates of ``name`` over the last ``window`` (e.g. "5m"), merged over every series
        whose labels match ``where`` ({"outcome": "ok"}; "!ok" means not equal)."""
        window_s = parse_window(window)
        metric = self._metric(name)
        t = self.clock() if now is None else now
        with self._lock:
            out = metric.make_agg()
            for s in self._matching(metric, where):
                s.window.aggregate(window_s, t, into=out)
        return WindowStats.of(window_s, out)

    def current(self, name: str, where: Mapping[str, str] | None = None) -> float | None:
        """The value now: counters summed, gauges the largest, histograms the observation count."""
        metric = self._metric(name)
        with self._lock:
            values = [s.value for s in self._matching(metric, where)]
        if not values:
            return None
        return max(values) if metric.kind == "gauge" else math.fsum(values)

    def series(self, name: str) -> list[SeriesView]:
        metric = self._metric(name)
        with self._lock:
            return [self._view(metric, s) for s in metric.by_labels.values()]

    def _view(self, metric: _Metric, s: _Series) -> SeriesView:
        buckets: tuple[tuple[float, float], ...] = ()
        if metric.is_hist:
            acc, cum = 0.0, []
            for le, c in zip((*metric.buckets, math.inf), s.counts, strict=True):
                acc += c
                cum.append((le, acc))
            buckets = tuple(cum)
        return SeriesView(
            metric.defn.name,
            metric.kind,
            dict(zip(metric.defn.labels, s.labels, strict=True)),
            s.value,
            s.hsum,
            buckets,
            s.updated_at,
        )

    def collect(self) -> list[tuple[MetricDef, list[SeriesView]]]:
        """Every metric with its series (for exporters), metrics without series included."""
        with self._lock:
            return [(m.defn, [self._view(m, s) for s in m.by_labels.values()]) for m in self._metrics.values()]

    # -- many processes -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-friendly: ``MetricsStore.merge`` in another process adds it in."""
        with self._lock:
            self._advance_all(self.clock())
            metrics: dict[str, list[dict[str, Any]]] = {}
            for name, m in self._metrics.items():
                if m.by_labels:
                    metrics[name] = [
                        {
                            "labels": list(s.labels),
                            "value": s.value,
                            "sum": s.hsum,
                            "counts": list(s.counts),
                            "updated_at": None if s.updated_at == -math.inf else s.updated_at,
                            "window": s.window.to_dict(),
                        }
                        for s in m.by_labels.values()
                    ]
        return {"version": _FORMAT_VERSION, "relative_accuracy": self.relative_accuracy, "metrics": metrics}

    def _advance_all(self, now: float) -> None:
        for m in self._metrics.values():
            for s in m.by_labels.values():
                s.window.advance(now)

    def merge(self, other: MetricsStore | Mapping[str, Any]) -> None:
        """Add another store (or its ``to_dict()``) into this one: counters and histograms add,
        gauges keep the most recently updated value, windows merge bucket by bucket."""
        d = other.to_dict() if isinstance(other, MetricsStore) else other
        if d.get("version") != _FORMAT_VERSION:
            raise ValueError(f"Cannot merge metrics of format version {d.get('version')!r}; expected {_FORMAT_VERSION}.")
        if float(d["relative_accuracy"]) != self.relative_accuracy:
            raise ValueError("Cannot merge metrics kept at a different relative accuracy; configure both alike.")
        with self._lock:
            for name, rows in d["metrics"].items():
                metric = self._metrics.get(name)
                if metric is None:
                    continue  # a metric this version does not know: skip rather than fail the merge
                for row in rows:
                    self._merge_row(metric, row)

    def _merge_row(self, metric: _Metric, row: Mapping[str, Any]) -> None:
        raw = tuple(str(v) for v in row["labels"])
        s = metric.by_raw.get(raw) or self._series_for(metric, raw)
        updated = -math.inf if row["updated_at"] is None else float(row["updated_at"])
        if metric.kind == "gauge":
            if updated >= s.updated_at:
                s.value = float(row["value"])
        else:
            s.value += float(row["value"])
            s.hsum += float(row["sum"])
            counts = row["counts"]
            if len(counts) != len(s.counts):
                raise ValueError(f"{metric.defn.name}: bucket layouts differ; cannot merge.")
            s.counts = [a + float(b) for a, b in zip(s.counts, counts, strict=True)]
        s.updated_at = max(s.updated_at, updated)
        s.window.merge(WindowedSeries.from_dict(row["window"], metric.make_agg))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], **kwargs: Any) -> MetricsStore:
        store = cls(relative_accuracy=float(d["relative_accuracy"]), **kwargs)
        store.merge(d)
        return store


_default: MetricsStore | None = None
_enabled: MetricsStore | None = None
_default_lock = threading.Lock()


def default_store() -> MetricsStore:
    """The process-wide store that ``enable_metrics`` attaches and ``/metrics`` serves."""
    global _default
    with _default_lock:
        if _default is None:
            _default = MetricsStore()
        return _default


def enable_metrics(store: MetricsStore | None = None) -> MetricsStore:
    """Attach the metrics handler for ``store`` (default: ``default_store()``); idempotent.

    Returns the store it feeds. Enabling another store detaches the previous one.
    """
    global _enabled
    store = store or default_store()
    with _default_lock:
        attached = any(hid == METRICS_HANDLER_ID for hid, _ in _events.list_handlers())
        if attached and _enabled is store:
            return store
        _events.detach(METRICS_HANDLER_ID)
        store.attach(METRICS_HANDLER_ID)
        _enabled = store
    return store


def disable_metrics() -> bool:
    """Detach the metrics handler; the store keeps what it has."""
    global _enabled
    with _default_lock:
        _enabled = None
        return _events.detach(METRICS_HANDLER_ID)
