"""Alert rules under an injected clock, notifiers (a real webhook on 127.0.0.1), the evaluator loop,
and the memory monitor."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fixtures.telemetry import FakeClock

from dspex import telemetry
from dspex.telemetry import names as n
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
from dspex.telemetry.metrics import MetricsStore
from dspex.telemetry.notifiers import (
    CallbackNotifier,
    LogNotifier,
    WebhookNotifier,
    alertmanager_payload,
)

pytestmark = pytest.mark.usefixtures("clean_telemetry")


def lm_calls(ok: int, failed: int, cost_usd: float = 0.0) -> None:
    md = {"provider": "openai", "model": "m"}
    for _ in range(ok):
        telemetry.emit(
            n.stop(n.LM_CALL),
            {"duration_s": 0.2, "input_tokens": 10, "output_tokens": 2, "cost_usd": cost_usd},
            {**md, "cache_hit": False},
        )
    for _ in range(failed):
        telemetry.emit(n.exception(n.LM_CALL), {"duration_s": 1.0}, {**md, "kind": "ProviderUnavailable"})


def test_error_rate_alert_goes_pending_firing_resolved(metrics_store: MetricsStore, fake_clock: FakeClock) -> None:
    heard: list[Transition] = []
    rules = default_rules(error_rate=0.05, min_calls=10)
    mgr = AlertManager(metrics_store, rules, [CallbackNotifier(heard.append)], clock=fake_clock)

    assert mgr.evaluate() == []  # no data is not an alert
    lm_calls(ok=15, failed=5)  # 25 % errors
    (tr,) = mgr.evaluate()
    assert (tr.rule, tr.previous, tr.state) == ("dspex_high_error_rate", AlertState.INACTIVE, AlertState.PENDING)
    assert tr.value == pytest.approx(0.25)
    assert heard == []  # pending is not announced

    fake_clock.advance(120)
    lm_calls(ok=10, failed=3)
    assert mgr.evaluate() == [] and mgr.state("dspex_high_error_rate") is AlertState.PENDING
    fake_clock.advance(181)  # true for 301 s >= for 300 s
    (tr,) = mgr.evaluate()
    assert tr.state is AlertState.FIRING and [h.state for h in heard] == [AlertState.FIRING]

    fake_clock.advance(400)  # the failures age out of the 5 m window; healthy traffic now
    lm_calls(ok=30, failed=0)
    (tr,) = mgr.evaluate()
    assert (tr.previous, tr.state, tr.value) == (AlertState.FIRING, AlertState.RESOLVED, 0.0)
    assert [h.state for h in heard] == [AlertState.FIRING, AlertState.RESOLVED]
    assert heard[-1].active_since == pytest.approx(fake_clock.t - 701)
    # the transitions were events too: the state-set gauge shows the current state only
    states = {v.labels["state"]: v.value for v in metrics_store.series("dspex_alert_state")}
    assert states == {"pending": 0.0, "firing": 0.0, "resolved": 1.0}


def test_pending_that_clears_goes_back_to_inactive_silently(metrics_store: MetricsStore, fake_clock: FakeClock) -> None:
    heard: list[Transition] = []
    rule = AlertRule("slow", Agg("dspex_lm_call_duration_seconds", "p95", "1m"), ">", 0.5, for_s=60)
    mgr = AlertManager(metrics_store, [rule], [CallbackNotifier(heard.append)], clock=fake_clock)
    lm_calls(ok=0, failed=20)  # 1.0 s each
    assert [t.state for t in mgr.evaluate()] == [AlertState.PENDING]
    fake_clock.advance(200)
    lm_calls(ok=20, failed=0)  # 0.2 s each
    assert [t.state for t in mgr.evaluate()] == [AlertState.INACTIVE]
    assert heard == []


def test_cost_budget_fires_at_once_and_rules_validate(metrics_store: MetricsStore, fake_clock: FakeClock) -> None:
    rules = default_rules(cost_budget_usd_per_hour=1.0)
    mgr = AlertManager(metrics_store, rules, clock=fake_clock)
    lm_calls(ok=30, failed=0, cost_usd=0.05)  # $1.50 in the last hour
    fired = mgr.evaluate()
    assert [(t.rule, t.state) for t in fired] == [("dspex_cost_over_budget", AlertState.FIRING)]
    with pytest.raises(ValueError, match="exists already"):
        mgr.add_rule(rules[0])
    with pytest.raises(KeyError, match="No metric"):
        mgr.add_rule(AlertRule("x", Agg("dspex_nope_total", "sum"), ">", 1))
    with pytest.raises(ValueError, match="needs a histogram"):
        mgr.add_rule(AlertRule("y", Agg("dspex_cost_usd_total", "p95"), ">", 1))
    with pytest.raises(ValueError, match="cannot filter"):
        mgr.add_rule(AlertRule("z", Agg("dspex_cost_usd_total", "sum", where={"colour": "red"}), ">", 1))
    with pytest.raises(ValueError, match="Unknown comparison"):
        AlertRule("w", Agg("dspex_cost_usd_total", "sum"), "=>", 1)
    with pytest.raises(ValueError, match="Unknown aggregation"):
        Agg("dspex_cost_usd_total", "median")
    with pytest.raises(ValueError, match="Cannot read window"):
        Agg("dspex_cost_usd_total", "sum", "soon")
    with pytest.raises(ValueError, match="interval_s"):
        AlertManager(metrics_store, [], interval_s=0)


def test_ratio_needs_enough_traffic(metrics_store: MetricsStore, fake_clock: FakeClock) -> None:
    calls = "dspex_lm_calls_total"
    ratio = Ratio(Agg(calls, "sum", "5m", {"outcome": "!ok"}), Agg(calls, "sum", "5m"), min_denominator=10)
    lm_calls(ok=0, failed=3)
    assert ratio.evaluate(metrics_store, fake_clock()) is None  # 3 calls: not enough to judge
    lm_calls(ok=7, failed=0)
    assert ratio.evaluate(metrics_store, fake_clock()) == pytest.approx(0.3)
    assert "outcome=!ok" in ratio.describe()


class _Receiver(BaseHTTPRequestHandler):
    script: list[int] = []
    seen: list[tuple[dict[str, str], dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        type(self).seen.append((dict(self.headers), body))
        status = type(self).script.pop(0) if type(self).script else 200
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[_Receiver]]]:
    handler = type("Receiver", (_Receiver,), {"script": [], "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/T0KEN-in-path", handler
    server.shutdown()
    server.server_close()


def _firing() -> list[Transition]:
    return [
        Transition("dspex_cost_over_budget", AlertState.PENDING, AlertState.FIRING, 12.5, 10.0, 1_800_000_000.0,
                   "warning", "spend", "sum(dspex_cost_usd_total{}[1h])", 1_799_999_700.0)
    ]


def test_webhook_retries_server_errors_then_delivers(receiver: tuple[str, type[_Receiver]], caplog: pytest.LogCaptureFixture) -> None:
    url, handler = receiver
    handler.script[:] = [500, 503]
    hook = WebhookNotifier(url, headers={"Authorization": "Bearer s3cr3t"}, retries=3, backoff_s=0.01)
    with caplog.at_level(logging.INFO, logger="dspex.telemetry.alerts"):
        assert hook.notify(_firing()) is True
    assert len(handler.seen) == 3
    headers, body = handler.seen[-1]
    assert headers["Authorization"] == "Bearer s3cr3t"
    assert body["status"] == "firing" and body["version"] == "4"
    (alert,) = body["alerts"]
    assert alert["labels"] == {"alertname": "dspex_cost_over_budget", "severity": "warning"}
    assert alert["annotations"]["value"] == "12.5" and alert["startsAt"].startswith("2027-01-15T07:55:00")
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    # neither the token in the header nor the one in the URL path shows in logs or repr
    for text in (caplog.text, repr(hook)):
        assert "s3cr3t" not in text and "T0KEN" not in text
    assert "failed (HTTP 500)" in caplog.text


def test_webhook_gives_up_on_client_errors_and_dead_receivers(receiver: tuple[str, type[_Receiver]]) -> None:
    url, handler = receiver
    handler.script[:] = [400]
    assert WebhookNotifier(url, retries=3, backoff_s=0.01).notify(_firing()) is False
    assert len(handler.seen) == 1  # a 400 is not retried
    dead = WebhookNotifier("http://127.0.0.1:9/hook", retries=1, backoff_s=0.01, timeout_s=1.0)
    assert dead.notify(_firing()) is False
    with pytest.raises(ValueError, match="absolute http"):
        WebhookNotifier("ftp://example/hook")
    resolved = alertmanager_payload([Transition("r", AlertState.FIRING, AlertState.RESOLVED, None, 1.0, 1_800_000_000.0, "warning", "", "e", None)])
    assert resolved["status"] == "resolved" and resolved["alerts"][0]["endsAt"].startswith("2027-01-15T08:00:00")


def test_log_notifier_and_a_broken_notifier(metrics_store: MetricsStore, fake_clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def notify(self, transitions: Any) -> None:
            raise RuntimeError("notifier down")

    heard: list[Transition] = []
    rule = AlertRule("spend", Agg("dspex_cost_usd_total", "sum", "1h"), ">=", 0.01, summary="too much")
    mgr = AlertManager(metrics_store, [rule], [Broken(), LogNotifier(), CallbackNotifier(heard.append)], clock=fake_clock)
    lm_calls(ok=1, failed=0, cost_usd=0.02)
    with caplog.at_level(logging.INFO, logger="dspex.telemetry.alerts"):
        mgr.evaluate()
    assert "alert spend is firing" in caplog.text and "notifier Broken failed" in caplog.text
    assert len(heard) == 1  # the broken one did not stop the others


def test_evaluator_thread_starts_ticks_and_stops(metrics_store: MetricsStore) -> None:
    ticked = threading.Event()
    rule = AlertRule("spend", Agg("dspex_cost_usd_total", "current"), ">", 0)
    monitor = MemoryMonitor(threshold_bytes=10**15, read_rss=lambda: 5_000_000)
    mgr = AlertManager(metrics_store, [rule], [CallbackNotifier(lambda t: ticked.set())], interval_s=0.02, memory_monitor=monitor)
    lm_calls(ok=1, failed=0, cost_usd=1.0)
    with mgr:
        assert mgr.running
        assert mgr.start() is mgr  # idempotent
        assert ticked.wait(5.0)
    assert not mgr.running
    assert metrics_store.current("dspex_process_resident_memory_bytes") == 5_000_000


def test_memory_monitor_emits_pressure_on_crossing_then_every_repeat(metrics_store: MetricsStore) -> None:
    clock = FakeClock(0.0)
    rss = [100]
    mon = MemoryMonitor(threshold_bytes=1000, repeat_s=60, clock=clock, read_rss=lambda: rss[0])
    assert mon.check() == 100 and not mon.under_pressure
    rss[0] = 1500
    mon.check()
    clock.advance(30)
    mon.check()  # still above, but within repeat_s
    clock.advance(31)
    mon.check()  # repeat
    rss[0] = 500
    mon.check()
    rss[0] = 1200
    mon.check()  # crossed again
    assert metrics_store.current("dspex_memory_pressure_events_total") == 3
    assert metrics_store.current("dspex_memory_pressure_ratio") == pytest.approx(1.2)
    assert metrics_store.current("dspex_process_resident_memory_bytes") == 1200
    assert rss_bytes() > 1_000_000  # the real reader reads this process
    with pytest.raises(ValueError, match="threshold_bytes"):
        MemoryMonitor(threshold_bytes=0)
    assert MemoryMonitor().threshold_bytes > 0  # 80 % of physical memory
