"""The router against the simulated LM server over real HTTP, through the real LM client."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from dspex import errors
from dspex.registry import HealthChecker, HealthStatus, ModelRegistry, ModelRouter, RoutedLM
from dspex.sim import SimServer

SMALL, MEDIUM, LARGE = "sim-small-fast", "sim-medium-fast", "sim-large-fast"
PRICES = {SMALL: (0.15, 0.60), MEDIUM: (1.00, 4.00), LARGE: (5.00, 15.00)}


def sim_registry(store: Any, clock: Any, sim: SimServer, *names: str, windows: bool = True) -> ModelRegistry:
    reg = ModelRegistry(store, clock=clock)
    for name in names:
        pin, pout = PRICES[name]
        window = {SMALL: 16_384, MEDIUM: 65_536, LARGE: 200_000}[name] if windows else None
        reg.register(name, "openai", name, base_url=sim.openai_base_url, input_price_per_1m_usd=pin,
                     output_price_per_1m_usd=pout, context_window=window, config={"timeout_s": 10})
        reg.approve(name)
    return reg


def requests(sim: SimServer, model: str) -> int:
    return int(sim.stats()["models"][model]["requests"])


async def test_primary_switched_off_mid_run_500_calls_zero_failures(
    sqlite_store: Any, clock: Any, sim: SimServer
) -> None:
    reg = sim_registry(sqlite_store, clock, sim, SMALL, MEDIUM)
    reg.assign("qa", SMALL, strategy="primary")
    reg.assign("qa", MEDIUM, strategy="fallback")
    router = ModelRouter(reg, clock=clock)
    lm = RoutedLM("qa", router)
    served: list[str] = []
    failed: list[BaseException] = []
    n = 0

    async def run(calls: int, concurrency: int = 4, tick_s: float = 0.02) -> None:
        nonlocal n
        for _ in range(calls // concurrency):
            batch = []
            for _ in range(concurrency):
                n += 1
                batch.append(lm.acall(messages=[{"role": "user", "content": f"question {n}: say hi"}], cache=False))
            results = await asyncio.gather(*batch, return_exceptions=True)
            failed.extend(r for r in results if isinstance(r, BaseException))
            ok = sum(1 for r in results if not isinstance(r, BaseException))
            served.extend(e["response_model"] for e in list(lm.history)[len(lm.history) - ok:])
            clock.advance(tick_s)

    await run(100)
    assert set(served) == {SMALL}
    sim.outage(SMALL, on=True)
    before = requests(sim, SMALL)
    await run(200)
    during = requests(sim, SMALL) - before
    states = router.cooldown_states()
    assert [s.model for s in states] == [SMALL]
    assert during <= 3 + 4  # three failures trip the cooldown (plus calls already in flight)
    sim.outage(SMALL, on=False)
    clock.advance(5.0)
    # After the half-open probe, a primary whose success rate fell below 0.8 gets one trial
    # call a second until the rate is back above 0.8: ~5 s of this clock, then all traffic.
    await run(200, tick_s=0.15)
    router.close()
    assert failed == []
    assert len(served) == 500
    assert router.cooldown_states() == []
    assert served[-40:] == [SMALL] * 40  # the primary took the traffic back
    rows = reg.store.read(lambda s: s.execute(
        __import__("sqlalchemy").text("SELECT status, count(*) FROM executions GROUP BY status")).all())
    counts = dict(rows)
    assert counts["success"] == 500 and 3 <= counts["error"] <= 7


async def test_cost_optimized_picks_the_cheaper_model_while_both_qualify(
    sqlite_store: Any, clock: Any, sim: SimServer
) -> None:
    reg = sim_registry(sqlite_store, clock, sim, SMALL, MEDIUM)
    reg.assign("qa", SMALL, strategy="cost_optimized", conditions={"cost_limit": 0.01, "input_size_max": 2000})
    reg.assign("qa", MEDIUM, strategy="cost_optimized", conditions={"cost_limit": 0.01})
    router = ModelRouter(reg, clock=clock, execution_log=False)
    lm = RoutedLM("qa", router)
    s0, m0 = requests(sim, SMALL), requests(sim, MEDIUM)
    for i in range(20):
        await lm.acall(messages=[{"role": "user", "content": f"short question {i}"}], cache=False)
    assert (requests(sim, SMALL) - s0, requests(sim, MEDIUM) - m0) == (20, 0)
    # an input too large for the cheaper model's condition goes to the other
    await lm.acall(messages=[{"role": "user", "content": "long " * 1000}], cache=False)
    assert requests(sim, MEDIUM) - m0 == 1
    assert "cheapest" in router.explain("qa", [{"role": "user", "content": "hi"}])
    # measured cost from the reply's usage, at the registry's prices
    small = reg.assignments("qa")[0]
    assert small.model.name == SMALL and small.total_requests == 20 and small.total_cost_usd > 0


async def test_context_window_overflow_reported_by_the_server_goes_to_a_larger_model(
    sqlite_store: Any, clock: Any, sim: SimServer
) -> None:
    # windows unknown to the registry: the server's 400 context_length_exceeded decides
    reg = sim_registry(sqlite_store, clock, sim, SMALL, MEDIUM, windows=False)
    reg.update(MEDIUM, context_window=65_536)
    reg.assign("qa", SMALL, strategy="primary")
    reg.assign("qa", MEDIUM, strategy="fallback")
    router = ModelRouter(reg, clock=clock, execution_log=False)
    out = await RoutedLM("qa", router).acall(messages=[{"role": "user", "content": "x" * 80_000}], cache=False)
    assert out and router.cooldown_states() == []
    assert reg.get(SMALL).success_rate is None  # too long an input is not the model's failure


async def test_retry_after_from_the_server_is_honoured(sqlite_store: Any, clock: Any, sim: SimServer) -> None:
    reg = sim_registry(sqlite_store, clock, sim, SMALL)
    reg.assign("qa", SMALL)
    waited: list[float] = []

    async def sleep(delay_s: float) -> None:
        waited.append(delay_s)
        sim.set_faults(SMALL, error_rate=0.0)

    router = ModelRouter(reg, clock=clock, sleep=sleep, fallback_to_any_model=False, execution_log=False)
    sim.set_faults(SMALL, error_rate=1.0, error_status=503, error_retry_after_s=1.5)
    out = await RoutedLM("qa", router).acall(messages=[{"role": "user", "content": "hello"}], cache=False)
    assert out and waited == [1.5]


def test_health_checks_probe_the_server(sqlite_store: Any, clock: Any, sim: SimServer) -> None:
    reg = sim_registry(sqlite_store, clock, sim, SMALL)
    ok = reg.health_check(SMALL, timeout_s=5)
    assert ok.success and ok.health is HealthStatus.HEALTHY and ok.latency_ms > 0
    sim.outage(SMALL, on=True)
    bad = reg.health_check(SMALL, timeout_s=5)
    assert not bad.success and "ProviderUnavailable" in (bad.error or "")
    assert reg.get(SMALL).success_rate == pytest.approx(0.9)
    sim.set_faults(SMALL, outage=False, hang_rate=1.0, hang_s=5.0)
    slow = reg.health_check(SMALL, timeout_s=0.2)
    assert not slow.success and slow.latency_ms < 2000


def test_periodic_health_checker_starts_and_stops_cleanly(sqlite_store: Any, sim: SimServer) -> None:
    reg = sim_registry(sqlite_store, time.time, sim, SMALL, MEDIUM)
    checker = HealthChecker(reg, interval_s=0.1, timeout_s=2)
    assert reg.stale_after_s == pytest.approx(0.2)
    checker.start()
    try:
        deadline = time.monotonic() + 5
        while checker.checks_run < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert checker.running and checker.checks_run >= 4
        assert {r.model for r in checker.results.values()} == {SMALL, MEDIUM}
    finally:
        checker.stop()
    assert not checker.running
    runs = checker.checks_run
    time.sleep(0.3)
    assert checker.checks_run == runs  # nothing runs after stop
    assert reg.health(SMALL) is HealthStatus.STALE  # two intervals without an observation
    checker.start()  # and it starts again
    deadline = time.monotonic() + 5
    while checker.checks_run == runs and time.monotonic() < deadline:
        time.sleep(0.02)
    checker.stop()
    assert checker.checks_run > runs
    assert reg.health(SMALL) is not HealthStatus.UNKNOWN


def test_degraded_primary_asks_the_checker_for_a_probe(sqlite_store: Any, sim: SimServer) -> None:
    reg = sim_registry(sqlite_store, time.time, sim, SMALL)
    reg.assign("qa", SMALL, strategy="primary")
    router = ModelRouter(reg, execution_log=False)
    checker = HealthChecker(reg, interval_s=60, recheck_interval_s=60, timeout_s=2, router=router)
    m = reg.get(SMALL)
    m.success_rate, m.last_call_s, m.last_health_check_s = 0.9, time.time(), time.time()
    checker.start()
    try:
        time.sleep(0.1)
        assert checker.checks_run == 0  # nothing due
        router.select_model("qa", {})  # degraded primary: a probe is requested
        deadline = time.monotonic() + 5
        while checker.checks_run == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert checker.checks_run == 1
    finally:
        checker.stop()


def test_health_checker_refuses_bad_settings(sqlite_store: Any, sim: SimServer) -> None:
    reg = sim_registry(sqlite_store, time.time, sim, SMALL)
    with pytest.raises(errors.ConfigurationError):
        HealthChecker(reg, interval_s=0)
