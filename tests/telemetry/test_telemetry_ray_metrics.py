"""The ray.util.metrics bridge on a real local Ray: metrics from the driver and from a worker
(set up by the worker_process_setup_hook) reach Ray's metrics agent."""

from __future__ import annotations

import time
import urllib.request
from typing import Any

import pytest

from dspex import telemetry
from dspex.telemetry import names as n

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("clean_telemetry")]


@pytest.fixture(scope="module")
def ray_metrics(ray_session: Any) -> tuple[int, bool]:
    """(metrics export port, whether the session's workers run dspex's setup hook)."""
    return int(ray_session.nodes()[0]["MetricsExportPort"]), True


def scrape_until(port: int, needles: list[str], timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    text = ""
    while time.monotonic() < deadline:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        if all(needle in text for needle in needles):
            return text
        time.sleep(0.25)  # polling Ray's exporter, which reports on its own interval
    missing = [needle for needle in needles if needle not in text]
    raise AssertionError(f"not exported within {timeout_s} s: {missing}")


def test_driver_and_worker_metrics_reach_the_ray_exporter(ray_metrics: tuple[int, bool]) -> None:
    import ray

    ray_metrics_port, hook_installed = ray_metrics

    from dspex.cluster.ray_metrics import (
        disable_ray_metrics,
        enable_ray_metrics,
        ray_name,
        setup_worker,
    )
    from dspex.telemetry.catalog import METRICS_BY_NAME

    sink = enable_ray_metrics()
    assert enable_ray_metrics() is sink
    assert ray_name(METRICS_BY_NAME["dspex_lm_calls_total"]) == "dspex_lm_calls"
    telemetry.emit(
        n.stop(n.LM_CALL),
        {"duration_s": 0.4, "input_tokens": 100, "output_tokens": 20, "cost_usd": 0.002},
        {"provider": "openai", "model": "from-driver", "cache_hit": False},
    )
    telemetry.emit(n.BREAKER_STATE, {"count": 1}, {"breaker": "openai:x", "state": "open"})
    for phase in ("canary", "promoting"):
        telemetry.emit(n.ROLLOUT_TICK, {"weight": 50.0, "failed_checks": 0.0}, {"program": "qa", "version": "v2", "phase": phase})

    def emit_from_worker(call_hook: bool) -> int:  # local: Ray ships it by value, not by module
        attached = len(telemetry.list_handlers(("dspex", "lm")))
        if call_hook:  # Ray was started elsewhere without our hook: do what the hook does
            setup_worker()
        telemetry.emit(
            n.stop(n.LM_CALL),
            {"duration_s": 0.2, "input_tokens": 7, "output_tokens": 3, "cost_usd": 0.001},
            {"provider": "openai", "model": "from-worker", "cache_hit": False},
        )
        return attached

    task: Any = ray.remote(emit_from_worker)
    attached_by_hook = ray.get(task.remote(not hook_installed), timeout=60)
    if hook_installed:
        assert attached_by_hook >= 1  # the job's setup hook attached the handler in the worker

    text = scrape_until(
        ray_metrics_port,
        [
            'ray_dspex_lm_calls_total{',
            'model="from-driver"',
            'model="from-worker"',
            "ray_dspex_tokens_total",
            "ray_dspex_lm_call_duration_seconds_bucket",
            "ray_dspex_circuit_breaker_state",
            "ray_dspex_rollout_phase",
        ],
    )
    tokens = [
        line for line in text.splitlines()
        if line.startswith("ray_dspex_tokens_total{") and 'model="from-driver"' in line and 'type="input"' in line
    ]
    assert tokens and float(tokens[0].rsplit(" ", 1)[1]) == 100.0
    phases = {
        ('phase="canary"' in line, float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("ray_dspex_rollout_phase{")
    }
    assert phases == {(True, 0.0), (False, 1.0)}
    assert disable_ray_metrics() is True
