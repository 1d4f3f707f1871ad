"""The metrics store and its Prometheus exposition: bindings, label caps, /metrics, ASGI."""

from __future__ import annotations

import json
import math

import httpx
import pytest
from fixtures.telemetry import FakeClock
from prometheus_client.parser import text_string_to_metric_families

from dspex import telemetry
from dspex.telemetry import names as n
from dspex.telemetry.metrics import MetricsStore, default_store, disable_metrics, enable_metrics
from dspex.telemetry.prometheus import (
    DspexCollector,
    metrics_app,
    metrics_text,
    registry_for,
    serve_metrics,
)

pytestmark = pytest.mark.usefixtures("clean_telemetry")


def lm_stop(model: str = "gpt-4o-mini", cache_hit: bool = False, tokens: tuple[int, int] = (100, 20)) -> None:
    telemetry.emit(
        n.stop(n.LM_CALL),
        {"duration_s": 0.4, "input_tokens": tokens[0], "output_tokens": tokens[1], "cost_usd": 0.002},
        {"provider": "openai", "model": model, "cache_hit": cache_hit},
    )


def families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_lm_call_events_feed_counters_histograms_and_cost(metrics_store: MetricsStore) -> None:
    lm_stop()
    lm_stop()
    lm_stop(cache_hit=True)  # a cache hit: counted as a call, no tokens, no cost
    telemetry.emit(n.exception(n.LM_CALL), {"duration_s": 1.0}, {"provider": "openai", "model": "gpt-4o-mini", "kind": "RateLimited"})
    s = metrics_store
    assert s.current("dspex_lm_calls_total", {"outcome": "ok"}) == 3
    assert s.current("dspex_lm_calls_total", {"outcome": "rate_limited", "cache": "miss"}) == 1
    assert s.current("dspex_lm_calls_total", {"cache": "hit"}) == 1
    assert s.current("dspex_tokens_total", {"type": "input"}) == 200
    assert s.current("dspex_tokens_total", {"type": "output"}) == 40
    assert s.current("dspex_cost_usd_total") == pytest.approx(0.004)
    w = s.window("dspex_lm_call_duration_seconds", "1m")
    assert (w.count, w.min, w.max) == (4, 0.4, 1.0)
    (hist,) = [v for v in s.series("dspex_lm_call_duration_seconds") if v.labels["cache"] == "miss"]
    assert dict(hist.buckets)[0.5] == 2 and dict(hist.buckets)[math.inf] == 3 and hist.sum == pytest.approx(1.8)


def test_gauges_state_sets_and_conditional_bindings(metrics_store: MetricsStore) -> None:
    s = metrics_store
    telemetry.emit(n.BREAKER_STATE, {"count": 1}, {"breaker": "openai:x", "state": "open"})
    assert s.current("dspex_circuit_breaker_state") == 2.0
    telemetry.emit(n.BREAKER_STATE, {"count": 1}, {"breaker": "openai:x", "state": "half_open"})
    assert s.current("dspex_circuit_breaker_state") == 1.0
    assert s.current("dspex_circuit_breaker_transitions_total") == 2
    for phase in ("canary", "canary", "promoting"):
        telemetry.emit(n.ROLLOUT_TICK, {"weight": 25.0, "phase": 3.0, "failed_checks": 1.0}, {"program": "qa", "version": "v2", "phase": phase})
    phases = {v.labels["phase"]: v.value for v in s.series("dspex_rollout_phase")}
    assert phases == {"canary": 0.0, "promoting": 1.0}
    assert s.current("dspex_rollout_weight", {"version": "v2"}) == 25.0
    telemetry.emit(n.ROUTER_COOLDOWN, {"cooldown_s": 30.0}, {"model": "m"})
    telemetry.emit(n.ROUTER_COOLDOWN, {"cooldown_s": 0.0}, {"model": "m"})
    assert s.current("dspex_model_cooldowns_total") == 1 and s.current("dspex_model_cooldown_seconds") == 0.0
    telemetry.emit(n.CACHE_HIT, {"count": 1}, {"cache": "signature"})
    telemetry.emit(n.CACHE_HIT, {"count": 3}, {"cache": "lm"})
    assert s.current("dspex_signature_cache_hits_total") == 1 and s.current("dspex_cache_hits_total") == 4
    # values that are not finite numbers are ignored, never recorded as garbage
    telemetry.emit(n.QUEUE_DEPTH, {"depth": "lots"}, {"component": "predictor"})
    telemetry.emit(n.QUEUE_DEPTH, {"depth": math.nan}, {"component": "predictor"})
    assert s.current("dspex_queue_depth") is None


def test_label_cardinality_is_bounded(fake_clock: FakeClock) -> None:
    s = MetricsStore(clock=fake_clock, max_label_values=10, max_series_per_metric=50)
    s.attach("t.cap")
    for i in range(40):
        lm_stop(model=f"model-{i}")
    lm_stop(model="x" * 500)  # text, not a name
    models = {v.labels["model"] for v in s.series("dspex_cost_usd_total")}
    assert len(models) == 11 and "other" in models
    assert s.current("dspex_cost_usd_total", {"model": "other"}) == pytest.approx(31 * 0.002)
    assert s.caps.folded["dspex_cost_usd_total"] == 31
    for i in range(100):  # many combinations of capped values still stop at the series cap
        s.inc("dspex_router_decisions_total", strategy=f"s{i % 10}", model=f"m{i // 10}", fallback="false")
    assert len(s.series("dspex_router_decisions_total")) <= 50


def test_store_rejects_bad_use(metrics_store: MetricsStore) -> None:
    with pytest.raises(KeyError, match="No metric named"):
        metrics_store.inc("dspex_nope_total")
    with pytest.raises(ValueError, match="unknown"):
        metrics_store.inc("dspex_cost_usd_total", colour="red")
    with pytest.raises(ValueError, match="finite number"):
        metrics_store.set("dspex_queue_depth", math.inf, component="x")
    with pytest.raises(ValueError, match="cannot filter"):
        metrics_store.window("dspex_cost_usd_total", "5m", {"colour": "red"})
    with pytest.raises(ValueError, match="already attached"):
        metrics_store.attach(metrics_store._handler_id or "")
    with pytest.raises(ValueError, match="format version"):
        metrics_store.merge({"version": 99})
    with pytest.raises(ValueError, match="max_series_per_metric"):
        MetricsStore(max_series_per_metric=0)
    metrics_store.inc("dspex_cost_usd_total", -1.0, provider="p", model="m")  # counters never go down
    assert metrics_store.current("dspex_cost_usd_total") == 0.0


def test_stores_merge_counters_histograms_gauges(fake_clock: FakeClock) -> None:
    a, b = MetricsStore(clock=fake_clock), MetricsStore(clock=fake_clock)
    a.inc("dspex_cost_usd_total", 1.5, provider="p", model="m")
    b.inc("dspex_cost_usd_total", 2.0, provider="p", model="m")
    a.set("dspex_queue_depth", 5, component="c")
    fake_clock.advance(1)
    b.set("dspex_queue_depth", 7, component="c")  # newer: wins
    a.observe("dspex_prediction_duration_seconds", 0.3, signature="QA")
    b.observe("dspex_prediction_duration_seconds", 3.0, signature="QA")
    a.merge(json.loads(json.dumps(b.to_dict())))
    assert a.current("dspex_cost_usd_total") == 3.5
    assert a.current("dspex_queue_depth") == 7
    (h,) = a.series("dspex_prediction_duration_seconds")
    assert h.value == 2 and h.sum == pytest.approx(3.3)
    assert a.window("dspex_cost_usd_total", "1m").sum == 3.5
    assert MetricsStore.from_dict(a.to_dict(), clock=fake_clock).current("dspex_cost_usd_total") == 3.5


def test_enable_metrics_is_idempotent_and_feeds_the_default_store() -> None:
    store = enable_metrics()
    assert enable_metrics() is store is default_store()
    before = store.current("dspex_hotswaps_total") or 0.0
    telemetry.emit(n.HOTSWAP, {"weight": 1.0}, {"program": "qa"})
    assert store.current("dspex_hotswaps_total") == before + 1
    other = MetricsStore()
    assert enable_metrics(other) is other  # switches the handler to another store
    telemetry.emit(n.HOTSWAP, {}, {"program": "qa"})
    assert store.current("dspex_hotswaps_total") == before + 1 and other.current("dspex_hotswaps_total") == 1
    assert disable_metrics() is True and disable_metrics() is False


def test_metrics_endpoint_scrape_parses_into_the_expected_families(metrics_store: MetricsStore) -> None:
    lm_stop()
    telemetry.emit(n.exception(n.PROVIDER_REQUEST), {"duration_s": 2.0}, {"provider": "openai", "model": "m", "kind": "ProviderTimeout"})
    telemetry.emit(n.stop(n.PROVIDER_REQUEST), {"duration_s": 0.3}, {"provider": "openai", "model": "m"})
    telemetry.emit(n.stop(n.PREDICT), {"duration_s": 0.5}, {"signature": "QA", "predictor": "abc123"})
    telemetry.emit(n.CACHE_HIT, {"count": 1}, {"cache": "signature"})
    with serve_metrics(port=0, store=metrics_store) as server:
        r = httpx.get(server.url, timeout=5.0)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    fams = families(r.text)
    assert fams["dspex_provider_requests"].type == "counter"  # type: ignore[attr-defined]
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in fams["dspex_provider_requests"].samples}  # type: ignore[attr-defined]
    assert samples[("dspex_provider_requests_total", (("model", "m"), ("outcome", "ok"), ("provider", "openai")))] == 1
    assert samples[("dspex_provider_requests_total", (("model", "m"), ("outcome", "provider_timeout"), ("provider", "openai")))] == 1
    tokens = {s.labels["type"]: s.value for s in fams["dspex_tokens"].samples if s.name.endswith("_total")}  # type: ignore[attr-defined]
    assert tokens == {"input": 100, "output": 20}
    pred = fams["dspex_prediction_duration_seconds"]
    assert pred.type == "histogram"  # type: ignore[attr-defined]
    names = {s.name for s in pred.samples}  # type: ignore[attr-defined]
    assert {"dspex_prediction_duration_seconds_bucket", "dspex_prediction_duration_seconds_count", "dspex_prediction_duration_seconds_sum"} <= names
    assert all(set(s.labels) <= {"signature", "le"} for s in pred.samples)  # no per-instance ids as labels  # type: ignore[attr-defined]
    assert fams["dspex_cost_usd"].samples[0].value == pytest.approx(0.002)  # type: ignore[attr-defined]
    assert fams["dspex_signature_cache_hits"].samples[0].value == 1  # type: ignore[attr-defined]
    assert fams["dspex_process_resident_memory_bytes"].samples[0].value > 1e6  # type: ignore[attr-defined]
    for family in ("dspex_circuit_breaker_state", "dspex_rollout_phase", "dspex_model_cooldown_seconds", "dspex_alert_state"):
        assert family in fams


async def test_asgi_app_serves_the_same_exposition(metrics_store: MetricsStore) -> None:
    lm_stop()
    transport = httpx.ASGITransport(app=metrics_app(metrics_store))
    async with httpx.AsyncClient(transport=transport, base_url="http://dspex") as client:
        r = await client.get("/metrics")
    assert r.status_code == 200
    assert "dspex_cost_usd_total" in families(r.text)["dspex_cost_usd"].samples[0].name  # type: ignore[attr-defined]
    assert registry_for(metrics_store) is registry_for(metrics_store)  # one registry per store
    assert b"dspex_lm_calls_total" in metrics_text(metrics_store)


def test_collector_reports_folded_labels(fake_clock: FakeClock) -> None:
    s = MetricsStore(clock=fake_clock, max_label_values=2)
    for model in ("a", "b", "c", "d"):
        s.inc("dspex_cost_usd_total", 1.0, provider="p", model=model)
    fams = {f.name: f for f in DspexCollector(s, read_rss=lambda: 123).collect()}
    assert fams["dspex_telemetry_label_values_folded"].samples[0].value == 2
    assert fams["dspex_process_resident_memory_bytes"].samples[0].value == 123
    with pytest.raises(ValueError, match="port"):
        serve_metrics(port=70000, store=s)
