"""Execution with routing: the fallback chain, which errors fall through, retries that honour
Retry-After, metrics and the execution log, RoutedLM as the configured LM of a program."""

from __future__ import annotations

import asyncio
import pickle
import time
from typing import Any

import pytest
from sqlalchemy import select

import dspex
from dspex import errors
from dspex.registry import Model, ModelRegistry, ModelRouter, RoutedLM
from dspex.store.schema import ExecutionRow, ModelRow, ProgramModelRow


def up(reg: ModelRegistry, name: str, **fields: Any) -> Model:
    m = reg.register(name, "openai", name, **fields)
    reg.approve(name)
    return m


def unavailable(name: str = "m") -> errors.ProviderError:
    return errors.ProviderUnavailable("down", provider="p", model=name, status=503)


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay_s: float) -> None:
        self.delays.append(delay_s)


def make_router(reg: ModelRegistry, clock: Any, **kw: Any) -> tuple[ModelRouter, Sleeps]:
    sleeps = Sleeps()
    kw.setdefault("execution_log", False)
    return ModelRouter(reg, clock=clock, sleep=sleeps, random=lambda: 0.5, **kw), sleeps


def ask(r: ModelRouter, program: str = "qa", **kw: Any) -> Any:
    return RoutedLM(program, r, **kw)(messages=[{"role": "user", "content": "hello"}])


def test_a_failing_primary_falls_over_at_once(registry: ModelRegistry, clock: Any, fleet: Any) -> None:
    up(registry, "p")
    up(registry, "f")
    registry.assign("qa", "p", strategy="primary")
    registry.assign("qa", "f", strategy="fallback")
    r, sleeps = make_router(registry, clock)
    fleet.fail("p", unavailable("p"))
    assert ask(r) == ["answer from f"]
    assert sleeps.delays == []  # a healthy sibling was there: no back-off
    assert registry.get("p").success_rate == pytest.approx(0.9)  # presumed working, then one failure
    assert registry.get("f").success_rate == 1.0
    pf = registry.assignments("qa")
    assert [(pm.model.name, pm.total_requests, pm.successful_requests) for pm in pf] == [("p", 1, 0), ("f", 1, 1)]


def test_chain_order_and_at_most_five_hops(registry: ModelRegistry, clock: Any, fleet: Any) -> None:
    for name in ("p", "f1", "f2", "o1", "spare1", "spare2", "spare3"):
        up(registry, name)
        fleet.fail(name, unavailable(name))
    registry.assign("qa", "p", strategy="primary", priority=10)
    registry.assign("qa", "o1", strategy="load_balanced", priority=9)
    registry.assign("qa", "f2", strategy="fallback", priority=1)
    registry.assign("qa", "f1", strategy="fallback", priority=2)
    r, _ = make_router(registry, clock, cooldown=None)
    with pytest.raises(errors.RoutingError) as info:
        ask(r)
    err = info.value
    assert [name for name, _ in err.attempts] == ["p", "f1", "f2", "o1", "spare1", "spare2"]
    assert "ProviderUnavailable" in str(err)
    assert pickle.loads(pickle.dumps(err)).attempts == err.attempts


FALLTHROUGH = [
    # error, router option, falls through?
    (errors.BadRequest("bad", status=400), {}, False),
    (errors.ContentPolicyViolation("refused", status=400), {}, False),
    (errors.ContentPolicyViolation("refused", status=400), {"fallback_on_content_policy": True}, True),
    (errors.AdapterParseError("no fields"), {}, False),
    (errors.AdapterParseError("no fields"), {"fallback_on_parse_error": True}, True),
    (errors.AuthenticationError("no", status=401), {}, True),
    (errors.QuotaExceeded("no", status=402), {}, True),
    (errors.ModelNotFound("no", status=404), {}, True),
    (errors.RateLimited("slow down", status=429), {}, True),
    (errors.ProviderTimeout("late"), {}, True),
    (errors.CircuitOpen("open"), {}, True),
    (errors.SecretError("OPENAI_API_KEY is not set here"), {}, True),
    (errors.Overloaded("full"), {}, True),
    (ValueError("a bug"), {}, False),
]


@pytest.mark.parametrize(("exc", "opts", "falls"), FALLTHROUGH)
async def test_which_errors_fall_through(registry: ModelRegistry, clock: Any, exc: Exception,
                                         opts: dict[str, Any], falls: bool) -> None:
    up(registry, "p")
    up(registry, "f")
    registry.assign("qa", "p", strategy="primary")
    registry.assign("qa", "f", strategy="fallback")
    r, _ = make_router(registry, clock, **opts)

    async def call(lm: Any, pm: Any) -> str:
        if pm.model.name == "p":
            raise exc
        return "served by f"

    if falls:
        assert await r.aexecute("qa", {"q": 1}, call) == "served by f"
    else:
        with pytest.raises(type(exc)):
            await r.aexecute("qa", {"q": 1}, call)


def test_context_window_overflow_goes_to_a_larger_window(registry: ModelRegistry, clock: Any, fleet: Any) -> None:
    up(registry, "small", context_window=8000)
    up(registry, "same", context_window=8000)
    up(registry, "large", context_window=200_000)
    registry.assign("qa", "small", strategy="primary", priority=3)
    registry.assign("qa", "same", strategy="fallback", priority=2)
    registry.assign("qa", "large", strategy="fallback", priority=1)
    fleet.fail("small", errors.ContextWindowExceeded("too long", status=400))
    r, _ = make_router(registry, clock)
    assert ask(r) == ["answer from large"]
    assert fleet.calls.get("same") is None
    assert registry.get("small").success_rate is None  # the caller's input, not the model's health


def test_single_model_backs_off_honouring_retry_after(registry: ModelRegistry, clock: Any, fleet: Any) -> None:
    up(registry, "only")
    registry.assign("qa", "only")
    r, sleeps = make_router(registry, clock, fallback_to_any_model=False)
    fleet.fail_next("only", errors.RateLimited("429", status=429, retry_after_s=2.5),
                    errors.ProviderUnavailable("503", status=503))
    assert ask(r) == ["answer from only"]
    assert sleeps.delays[0] == 2.5  # Retry-After, to the letter
    assert 0.5 * 0.25 * 2 <= sleeps.delays[1] <= 1.5 * 0.25 * 2  # exponential back-off with jitter


def test_retries_are_bounded_and_long_retry_after_is_not_waited(registry: ModelRegistry, clock: Any,
                                                                  fleet: Any) -> None:
    up(registry, "only")
    registry.assign("qa", "only")
    r, sleeps = make_router(registry, clock, fallback_to_any_model=False, num_retries=2)
    fleet.fail("only", errors.ProviderUnavailable("503", status=503))
    with pytest.raises(errors.RoutingError):
        ask(r)
    assert len(sleeps.delays) == 2 and fleet.calls["only"] == 3
    fleet.heal("only")
    fleet.fail_next("only", errors.RateLimited("429", status=429, retry_after_s=3600))
    with pytest.raises(errors.RoutingError):
        ask(r)
    assert len(sleeps.delays) == 2  # an hour's Retry-After is not slept through


def test_the_only_model_is_never_cooled(registry: ModelRegistry, clock: Any, fleet: Any) -> None:
    up(registry, "only")
    registry.assign("qa", "only")
    r, _ = make_router(registry, clock, fallback_to_any_model=False, num_retries=0)
    fleet.fail("only", unavailable("only"))
    for _ in range(6):
        with pytest.raises(errors.RoutingError):
            ask(r)
    assert r.cooldown_states() == []
    fleet.heal("only")
    assert ask(r) == ["answer from only"]


async def test_primary_outage_zero_failures_cooldown_and_recovery(registry: ModelRegistry, clock: Any,
                                                                   fleet: Any) -> None:
    """500 calls; the primary is switched off mid-run; nothing fails; it is cooled, then used again."""
    up(registry, "p")
    up(registry, "f")
    registry.assign("qa", "p", strategy="primary")
    registry.assign("qa", "f", strategy="fallback")
    r, _ = make_router(registry, clock)
    lm = RoutedLM("qa", r)
    served: list[str] = []

    async def batch(n: int) -> None:
        for _ in range(n):
            out = await lm.acall(messages=[{"role": "user", "content": "hi"}])
            served.append(out[0].rsplit(" ", 1)[1])
            clock.advance(0.01)

    await batch(100)
    assert set(served) == {"p"}
    fleet.fail("p", unavailable("p"))
    await batch(150)
    assert fleet.calls["p"] - 100 == 3  # three failures, then the cooldown: never again during it
    assert served[100:250] == ["f"] * 150
    [st] = r.cooldown_states()
    assert st.model == "p" and st.failures == 3
    fleet.heal("p")
    clock.advance(5.0)
    await batch(250)
    assert len(served) == 500  # every call was answered
    assert served[250] == "p" and r.cooldown_states() == []  # the half-open probe closed the cooldown
    # The primary's success rate (0.73 after the outage) climbs back through spaced trial calls,
    # then it takes all the traffic again.
    back = served.index("p", 251)
    assert served[back:].count("f") == 0 or served[-50:] == ["p"] * 50
    assert served[-50:] == ["p"] * 50
    assert registry.get("p").success_rate > 0.8


async def test_half_open_probe_failure_keeps_traffic_on_the_fallback(registry: ModelRegistry, clock: Any,
                                                                      fleet: Any) -> None:
    up(registry, "p")
    up(registry, "f")
    registry.assign("qa", "p", strategy="primary")
    registry.assign("qa", "f", strategy="fallback")
    r, _ = make_router(registry, clock)
    fleet.fail("p", unavailable("p"))
    for _ in range(5):
        ask(r)
    clock.advance(5.0)
    assert ask(r) == ["answer from f"]  # the probe failed over
    [st] = r.cooldown_states()
    assert st.cooldowns == 2 and st.until_s - st.since_s == 10.0


async def test_cancelled_call_frees_the_probe_slot(registry: ModelRegistry, clock: Any, fleet: Any) -> None:
    up(registry, "p")
    up(registry, "f")
    registry.assign("qa", "p", strategy="primary")
    registry.assign("qa", "f", strategy="fallback")
    r, _ = make_router(registry, clock)
    for _ in range(3):
        r.cooldowns.record("p", success=False)
    clock.advance(5)
    started = asyncio.Event()

    async def slow(lm: Any, pm: Any) -> str:
        started.set()
        await asyncio.sleep(10)
        return "x"

    task = asyncio.ensure_future(r.aexecute("qa", {}, slow))
    await started.wait()
    assert not r.cooldowns.available("p")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert r.cooldowns.available("p")


def test_metrics_and_execution_log_reach_the_store(registry: ModelRegistry, clock: Any, fleet: Any) -> None:
    up(registry, "p", input_price_per_1m_usd=1.0, output_price_per_1m_usd=2.0)
    up(registry, "f")
    registry.assign("qa", "p", strategy="primary")
    registry.assign("qa", "f", strategy="fallback")
    r, _ = make_router(registry, clock, execution_log=True)
    assert r.execution_log is not None
    ask(r, version_id="v7")
    fleet.fail("p", unavailable("p"))
    ask(r)
    r.close()
    rows = registry.store.read(lambda s: [(e.model, e.status, e.hop, e.error_type, e.input_tokens, e.cost_usd,
                                           e.version_id, e.program)
                                          for e in s.scalars(select(ExecutionRow).order_by(ExecutionRow.id))])
    cost = (100 * 1.0 + 20 * 2.0) / 1e6  # the registry's prices, from the reply's usage
    assert rows == [
        ("p", "success", 0, None, 100, pytest.approx(cost), "v7", "qa"),
        ("p", "error", 0, "ProviderUnavailable", 0, 0.0, None, "qa"),
        ("f", "success", 1, None, 100, 0.0, None, "qa"),
    ]
    totals = registry.store.read(lambda s: {pm.model_id: (pm.total_requests, pm.successful_requests,
                                                          pm.total_cost_usd)
                                            for pm in s.scalars(select(ProgramModelRow))})
    assert totals[registry.get("p").id] == (2, 1, pytest.approx(cost))
    assert totals[registry.get("f").id] == (1, 1, 0.0)
    row = registry.store.read(lambda s: s.scalars(select(ModelRow).where(ModelRow.name == "p")).one())
    assert row.success_rate == pytest.approx(0.9) and row.average_latency_ms is not None
    assert row.last_call_at is not None


def test_routed_lm_as_the_configured_lm_of_a_program(registry: ModelRegistry, clock: Any, fleet: Any) -> None:
    up(registry, "p", max_tokens=77)
    up(registry, "f")
    registry.assign("qa", "p", strategy="primary")
    registry.assign("qa", "f", strategy="fallback")
    fleet.reply = lambda name, msgs: f"[[ ## answer ## ]]\n{name} says 4\n\n[[ ## completed ## ]]"
    r, _ = make_router(registry, clock)
    dspex.configure(lm=RoutedLM("qa", r, temperature=0.3))
    predict = dspex.Predict("question -> answer")
    assert predict(question="2+2?").answer == "p says 4"
    assert fleet.seen_kwargs[-1]["temperature"] == 0.3 and fleet.seen_kwargs[-1]["max_tokens"] == 77
    fleet.fail("p", unavailable("p"))
    assert predict(question="2+2?").answer == "f says 4"
    lm = dspex.settings.lm
    assert lm.history[-1]["response_model"] == "f"


async def test_run_program_falls_over_on_a_parse_error_when_configured(registry: ModelRegistry, clock: Any,
                                                                       fleet: Any) -> None:
    up(registry, "garbled")
    up(registry, "tidy")
    registry.assign("qa", "garbled", strategy="primary")
    registry.assign("qa", "tidy", strategy="fallback")
    fleet.reply = lambda name, msgs: (
        "no markers at all" if name == "garbled" else "[[ ## answer ## ]]\nfine\n\n[[ ## completed ## ]]")
    predict = dspex.Predict("question -> answer")
    strict, _ = make_router(registry, clock)
    with pytest.raises(errors.AdapterParseError):
        await strict.arun_program("qa", predict, {"question": "q"})
    lenient, _ = make_router(registry, clock, fallback_on_parse_error=True)
    out = await lenient.arun_program("qa", predict, {"question": "q"})
    assert out.answer == "fine"
    assert registry.get("garbled").success_rate is not None and registry.get("garbled").success_rate < 1


def test_routed_lm_pickles_without_its_router(registry: ModelRegistry, clock: Any) -> None:
    up(registry, "p")
    registry.assign("qa", "p")
    r, _ = make_router(registry, clock)
    lm = RoutedLM("qa", r, context={"tier": "gold"}, temperature=0.1)
    again = pickle.loads(pickle.dumps(lm))
    assert isinstance(again, RoutedLM) and again.router is not r
    assert (again.program, again.context, again.kwargs["temperature"]) == ("qa", {"tier": "gold"}, 0.1)
    assert [pm.model.name for pm in again.router.registry.assignments("qa")] == ["p"]
    again.router.close()


def test_routing_overhead_is_small(registry: ModelRegistry, clock: Any) -> None:
    """Selection plus bookkeeping per call stays well under a millisecond (the benchmark
    measures it properly; this guards against a gross regression)."""
    up(registry, "p")
    up(registry, "f")
    registry.assign("qa", "p", strategy="primary")
    registry.assign("qa", "f", strategy="fallback")
    r, _ = make_router(registry, clock, execution_log=True)
    msgs = [{"role": "user", "content": "hello " * 50}]
    route = r.route
    t0 = time.perf_counter()
    for _ in range(2000):
        pm = route("qa", msgs).chosen
        r._record_success("qa", None, pm, __import__("dspex.registry", fromlist=["CallUsage"]).CallUsage(10, 5),
                          1.0, 0)
    per_call_ms = (time.perf_counter() - t0) / 2000 * 1000
    r.close()
    assert per_call_ms < 0.5


def test_decisions_and_cooldowns_are_emitted_for_the_metrics_catalog(registry: ModelRegistry, clock: Any,
                                                                      fleet: Any) -> None:
    from dspex import telemetry
    from dspex.telemetry import names

    seen: list[tuple[tuple[str, ...], dict[str, Any], dict[str, Any]]] = []
    telemetry.attach_many("test-route-events", [names.ROUTER_ROUTE, names.ROUTER_COOLDOWN],
                          lambda e, m, md, c: seen.append((e, m, md)))
    try:
        up(registry, "p")
        up(registry, "f")
        registry.assign("qa", "p", strategy="primary")
        registry.assign("qa", "f", strategy="fallback")
        r, _ = make_router(registry, clock)
        fleet.fail("p", unavailable("p"))
        for _ in range(4):
            ask(r)
        fleet.heal("p")
        clock.advance(5)
        ask(r)
    finally:
        telemetry.detach("test-route-events")
    routes = [(md["model"], md["fallback"]) for e, m, md in seen if e == names.ROUTER_ROUTE]
    assert routes[:6] == [("p", False), ("f", True)] * 3  # three failed tries of p, each falling over
    assert routes[6] == ("f", False)  # p is cooling: f is the first choice
    assert routes[-1] == ("p", False)  # the half-open probe
    cool = [(md["model"], m["cooldown_s"]) for e, m, md in seen if e == names.ROUTER_COOLDOWN]
    assert cool == [("p", 5.0), ("p", 0.0)]
