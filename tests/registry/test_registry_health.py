"""Health checks with scripted LMs and a manual clock: probes, metrics, scheduling; lm_for."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select

from dspex import errors, telemetry
from dspex.registry import HealthChecker, HealthStatus, ModelRegistry, ModelRouter, lm_for
from dspex.registry.lm_factory import lm_kwargs
from dspex.registry.model import Model
from dspex.store.schema import ModelRow


def test_probe_updates_metrics_and_the_store(registry: ModelRegistry, clock: Any, fleet: Any) -> None:
    seen: list[tuple[dict[str, Any], dict[str, Any]]] = []
    telemetry.attach("test-health", ("dspex", "registry", "health_check"), lambda e, m, md, c: seen.append((m, md)))
    try:
        registry.register("m", "openai", "x", health_check=True)
        assert registry.health("m") is HealthStatus.HEALTHY
        fleet.fail("m", errors.ProviderUnavailable("down", status=503))
        res = registry.health_check("m")
        assert not res.success and res.error is not None and res.error.startswith("ProviderUnavailable")
        assert res.health is HealthStatus.DEGRADED  # 0.9 after one failed probe
        row = registry.store.read(lambda s: s.scalars(select(ModelRow)).one())
        assert row.success_rate == pytest.approx(0.9) and row.last_health_check is not None
        assert row.last_health_check.timestamp() == pytest.approx(clock())
        assert [md["health"] for _, md in seen] == ["healthy", "degraded"]
        assert seen[1][0]["success"] == 0 and seen[1][1]["error_type"] == "ProviderUnavailable"
    finally:
        telemetry.detach("test-health")


def test_probe_times_out(registry: ModelRegistry, fleet: Any) -> None:
    fleet.latency_s = 1.0
    registry.register("slow", "openai", "x")
    res = registry.health_check("slow", timeout_s=0.05)
    assert not res.success and "no reply within 0.05 s" in (res.error or "") and res.latency_ms < 500


async def test_checker_schedule_with_a_manual_clock(registry: ModelRegistry, clock: Any, fleet: Any) -> None:
    for name in ("a", "b", "gone"):
        registry.register(name, "openai", name)
    registry.approve("a")
    registry.deprecate("gone")  # not probed
    checker = HealthChecker(registry, interval_s=300, recheck_interval_s=20, timeout_s=1)
    assert registry.stale_after_s == 600
    first = await checker.check_due()
    assert sorted(r.model for r in first) == ["a", "b"]  # never observed: due now
    assert await checker.check_due() == []
    clock.advance(299)
    assert await checker.check_due() == []
    clock.advance(1)
    assert sorted(r.model for r in await checker.check_due()) == ["a", "b"]
    # a model in poor health is re-probed every recheck interval
    fleet.fail("b", errors.ProviderTimeout("late"))
    clock.advance(300)
    await checker.check_due()
    assert registry.health("b") is HealthStatus.DEGRADED
    clock.advance(19)
    assert await checker.check_due() == []
    clock.advance(1)
    assert [r.model for r in await checker.check_due()] == ["b"]
    # real calls count as observations: a model in traffic needs no probe
    registry.get("a").last_call_s = clock() + 250
    clock.advance(280)
    assert [r.model for r in await checker.check_due()] == ["b"]
    # a requested check runs whatever the schedule
    checker.request_check(registry.get("a"))
    assert [r.model for r in await checker.check_due()] == ["a"]
    assert checker.checks_run == 9


async def test_checker_task_starts_and_stops_on_the_running_loop(registry: ModelRegistry, clock: Any) -> None:
    registry.register("a", "openai", "a")
    checker = HealthChecker(registry, interval_s=300, timeout_s=1)
    await checker.astart()
    await checker.astart()  # idempotent
    for _ in range(50):
        if checker.checks_run:
            break
        await asyncio.sleep(0.01)
    assert checker.running and checker.checks_run == 1
    await checker.astop()
    assert not checker.running


def test_flush_metrics_without_an_execution_log(registry: ModelRegistry) -> None:
    m = registry.register("m", "openai", "x")
    registry.approve("m")
    registry.observe(m, success=True, latency_ms=42.0)
    registry.flush_metrics()
    row = registry.store.read(lambda s: s.scalars(select(ModelRow)).one())
    assert (row.average_latency_ms, row.success_rate) == (42.0, 1.0)


async def test_a_cached_reply_is_not_evidence(registry: ModelRegistry, clock: Any) -> None:
    from dspex.registry import CallUsage

    for name in ("p", "f"):
        registry.register(name, "openai", name)
        registry.approve(name)
    registry.assign("qa", "p", strategy="primary")
    registry.assign("qa", "f", strategy="fallback")
    router = ModelRouter(registry, clock=clock, execution_log=False)
    for _ in range(3):
        router.cooldowns.record("p", success=False)
    clock.advance(5)

    async def call(lm: Any, pm: Any) -> str:
        return pm.model.name

    out = await router.aexecute("qa", {}, call, measure=lambda r: CallUsage(1, 1, None, True))
    assert out == "p"  # the half-open probe went to p, was answered from a cache ...
    assert router.cooldown_states()[0].phase.value == "half_open"  # ... so the cooldown stays
    assert registry.get("p").success_rate is None
    assert router.cooldowns.acquire("p")  # and the probe slot is free again


LM_KWARGS = [
    # provider, base_url -> the model string and api_base given to dspex.LM
    ("openai", None, "openai/x", None),
    ("openai", "http://127.0.0.1:9/v1", "openai/x", "http://127.0.0.1:9/v1"),
    ("anthropic", None, "anthropic/x", None),
    ("cohere", None, "openai/x", "https://api.cohere.ai/compatibility/v1"),
    ("local", "http://127.0.0.1:9/v1", "openai/x", "http://127.0.0.1:9/v1"),
    ("huggingface", "http://tgi:80/v1", "openai/x", "http://tgi:80/v1"),
    ("ollama", None, "ollama/x", None),
    ("vllm", "http://vllm:8000/v1", "vllm/x", "http://vllm:8000/v1"),
]


@pytest.mark.parametrize(("provider", "base", "model", "api_base"), LM_KWARGS)
def test_lm_kwargs_per_provider(provider: str, base: str | None, model: str, api_base: str | None) -> None:
    m = Model("n", provider, "x", base_url=base, secret_ref="SOME_KEY", max_tokens=99,
              config={"temperature": 0.1, "expected_output_tokens": 5})
    kw = lm_kwargs(m)
    assert kw["model"] == model and kw.get("api_base") == api_base
    assert kw["api_key_env"] == "SOME_KEY" and "api_key" not in kw
    assert (kw["num_retries"], kw["max_tokens"], kw["temperature"]) == (0, 99, 0.1)
    assert "expected_output_tokens" not in kw


@pytest.mark.parametrize("provider", ["local", "huggingface", "openai_compatible", "vllm"])
def test_servers_without_a_default_address_need_base_url(provider: str) -> None:
    with pytest.raises(errors.ConfigurationError, match="needs a base_url"):
        lm_kwargs(Model("n", provider, "x"))


def test_lm_for_builds_the_real_client_reading_the_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from dspex.clients import LM

    monkeypatch.setenv("ROUTER_TEST_KEY", "sk-from-env-123")
    lm = lm_for(Model("n", "openai", "gpt-x", base_url="http://127.0.0.1:9/v1", secret_ref="ROUTER_TEST_KEY"))
    assert isinstance(lm, LM) and lm.num_retries == 0
    assert "sk-from-env-123" not in repr(lm) and "sk-from-env-123" not in repr(lm.dump_state())


async def test_checker_reloads_the_registry_for_other_processes_changes(registry: ModelRegistry, clock: Any) -> None:
    checker = HealthChecker(registry, interval_s=300, refresh_interval_s=30)
    other = ModelRegistry(registry.store)
    other.register("from-elsewhere", "openai", "x")
    await checker._maybe_refresh()
    assert registry.get("from-elsewhere").name == "from-elsewhere"
    other.remove("from-elsewhere")
    clock.advance(10)
    await checker._maybe_refresh()  # not due yet
    assert [m.name for m in registry.models()] == ["from-elsewhere"]
    clock.advance(20)
    await checker._maybe_refresh()
    assert registry.models() == []


def test_remove_drops_the_model_and_its_assignments(registry: ModelRegistry) -> None:
    registry.register("a", "openai", "a")
    registry.register("b", "openai", "b")
    registry.assign("qa", "a")
    registry.assign("qa", "b")
    registry.remove("a")
    assert [pm.model.name for pm in registry.assignments("qa")] == ["b"]
    fresh = ModelRegistry(registry.store)
    assert [m.name for m in fresh.models()] == ["b"]
    assert [pm.model.name for pm in fresh.assignments("qa")] == ["b"]
