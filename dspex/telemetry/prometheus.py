"""Prometheus exposition of a ``MetricsStore``: a collector, ``/metrics`` and an ASGI app.

The store is the only bookkeeping: a custom collector turns its series into metric families
at scrape time (in its own ``CollectorRegistry``, never prometheus-client's global one, so
dspex adds nothing to an application's own registry). Every scrape also reads the process
RSS into ``dspex_process_resident_memory_bytes{component="process"}`` and reports how many label
values the cardinality cap folded into "other" (``dspex_telemetry_label_values_folded_total``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, make_asgi_app, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from dspex.telemetry.memory import rss_bytes
from dspex.telemetry.metrics import MetricsStore, default_store, enable_metrics

__all__ = [
    "CONTENT_TYPE",
    "DspexCollector",
    "MetricsServer",
    "metrics_app",
    "metrics_text",
    "registry_for",
    "serve_metrics",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _le(bound: float) -> str:
    return "+Inf" if bound == math.inf else repr(float(bound))


class DspexCollector(Collector):
    """Builds the metric families from a store's series at each scrape."""

    def __init__(self, store: MetricsStore, *, read_rss: Callable[[], int] = rss_bytes) -> None:
        self.store = store
        self._read_rss = read_rss

    def collect(self) -> Iterator[Metric]:
        self.store.set("dspex_process_resident_memory_bytes", float(self._read_rss()), component="process")
        for defn, views in self.store.collect():
            labels = list(defn.labels)
            family: Metric
            if defn.kind == "counter":
                family = CounterMetricFamily(defn.name, defn.help, labels=labels)
                for v in views:
                    family.add_metric(list(v.labels.values()), v.value)
            elif defn.kind == "gauge":
                family = GaugeMetricFamily(defn.name, defn.help, labels=labels)
                for v in views:
                    family.add_metric(list(v.labels.values()), v.value)
            else:
                family = HistogramMetricFamily(defn.name, defn.help, labels=labels)
                for v in views:
                    family.add_metric(
                        list(v.labels.values()), [(_le(le), count) for le, count in v.buckets], v.sum
                    )
            yield family
        folded = CounterMetricFamily(
            "dspex_telemetry_label_values_folded",
            "Label values folded into 'other' by the cardinality cap.",
            labels=["metric"],
        )
        for metric, count in sorted(self.store.caps.folded.items()):
            folded.add_metric([metric], float(count))
        yield folded


_registry_lock = threading.Lock()


def registry_for(store: MetricsStore | None = None) -> CollectorRegistry:
    """The registry that exposes ``store`` (default: the process-wide store), made once."""
    store = store or default_store()
    with _registry_lock:
        reg = store._exposition
        if reg is None:
            reg = CollectorRegistry(auto_describe=False)
            reg.register(DspexCollector(store))
            store._exposition = reg
        return reg


def metrics_text(store: MetricsStore | None = None) -> bytes:
    """The Prometheus text exposition of ``store``."""
    return generate_latest(registry_for(store))


def metrics_app(store: MetricsStore | None = None) -> Callable[..., Any]:
    """An ASGI app answering every GET with the exposition; mount it at ``/metrics``."""
    return make_asgi_app(registry_for(store))


class MetricsServer:
    """A running ``/metrics`` HTTP server (a daemon thread). ``close()`` stops it."""

    def __init__(self, httpd: Any, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        self.host: str = str(httpd.server_address[0])
        self.port: int = int(httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5.0)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MetricsServer(url={self.url!r})"


def serve_metrics(port: int = 9464, addr: str = "127.0.0.1", store: MetricsStore | None = None) -> MetricsServer:
    """Serve ``/metrics`` on ``addr:port`` (port 0 picks a free one; see ``.port``).

    Without ``store``, enables the process-wide metrics handler and serves its store.
    Binds to loopback by default: pass ``addr="0.0.0.0"`` to let a Prometheus elsewhere scrape.
    """
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be 0..65535, got {port!r}.")
    if store is None:
        store = enable_metrics()
    httpd, thread = start_http_server(port, addr=addr, registry=registry_for(store))
    return MetricsServer(httpd, thread)
