"""The clients against the real simulated server over HTTP on 127.0.0.1: each provider shape,
each strategy, streaming, every fault kind, the breaker, the rate limiter, cache and secrets."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from fixtures.clients import Captured
from fixtures.sim import dspy_messages

from dspex.clients import LM, BreakerConfig, BreakerState, LMCache, RetryPolicy, register_price
from dspex.clients.pricing import unregister_price
from dspex.clients.transport import default_pool
from dspex.errors import (
    AuthenticationError,
    BadRequest,
    CircuitOpen,
    ContextWindowExceeded,
    ModelNotFound,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from dspex.sim import SimConfig, SimServer
from dspex.telemetry import names

MSGS = dspy_messages([("question", "str")], [("answer", "int")], {"question": "What is 2+3?"})
JSON_MSGS = dspy_messages([("question", "str")], [("answer", "int")], {"question": "What is 2+3?"}, adapter="json")
TOOLS = [{"type": "function", "function": {"name": "search", "description": "Search the web.",
                                           "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}]
SCHEMA = {"type": "json_schema", "json_schema": {"name": "DSPyProgramOutputs", "strict": True, "schema": {
    "type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"], "additionalProperties": False}}}
FAST_RETRY = RetryPolicy(num_retries=3, base_delay_s=0.01, max_delay_s=0.05)


@pytest_asyncio.fixture(loop_scope="function", autouse=True)
async def _close_pool() -> AsyncIterator[None]:
    yield
    await default_pool.aclose()


def openai_lm(sim: SimServer, model: str = "sim-small-fast", **kw: object) -> LM:
    kw.setdefault("cache", False)
    return LM(f"openai/{model}", api_base=sim.openai_base_url, **kw)  # type: ignore[arg-type]


def anthropic_lm(sim: SimServer, model: str = "sim-small-fast", **kw: object) -> LM:
    kw.setdefault("cache", False)
    return LM(f"anthropic/{model}", api_base=sim.base_url, **kw)  # type: ignore[arg-type]


def requests_to(sim: SimServer, model: str) -> int:
    return int(sim.model_stats(model)["requests"])


# -- provider shapes and strategies ---------------------------------------------------------------


async def test_openai_shape_plain_chat_usage_and_cost(sim: SimServer) -> None:
    spec = sim.config.model("sim-small-fast")
    register_price("sim-small-fast", spec.price.input_per_1m_usd, spec.price.output_per_1m_usd)
    try:
        lm = openai_lm(sim)
        out = await lm.acall(messages=MSGS)
        assert out[0].startswith("[[ ## answer ## ]]") and out[0].endswith("[[ ## completed ## ]]")
        entry = lm.history[-1]
        usage = entry["response"].usage
        assert not usage.estimated and usage.prompt_tokens > 0 and usage.completion_tokens > 0
        stats = sim.model_stats("sim-small-fast")
        assert (stats["prompt_tokens"], stats["completion_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)
        assert entry["cost"] == pytest.approx(spec.price.cost_usd(usage.prompt_tokens, usage.completion_tokens))
    finally:
        unregister_price("sim-small-fast")


async def test_anthropic_shape_same_answer(sim: SimServer) -> None:
    a = await anthropic_lm(sim).acall(messages=MSGS)
    o = await openai_lm(sim).acall(messages=MSGS)
    assert a == o
    assert sim.model_stats("sim-small-fast")["by_api"] == {"anthropic": 1, "openai": 1}


def test_sync_call_against_the_server(sim: SimServer) -> None:
    lm = openai_lm(sim)
    assert lm(messages=MSGS) == lm(messages=MSGS)
    assert requests_to(sim, "sim-small-fast") == 2


async def test_n_natively_on_openai_and_fanned_out_on_anthropic(sim: SimServer) -> None:
    out = await openai_lm(sim).acall(messages=MSGS, n=3, temperature=1.0)
    assert len(out) == 3 and requests_to(sim, "sim-small-fast") == 1
    out2 = await anthropic_lm(sim).acall(messages=MSGS, n=3, temperature=1.0)
    assert len(out2) == 3 and requests_to(sim, "sim-small-fast") == 4


@pytest.mark.parametrize("make", [openai_lm, anthropic_lm], ids=["openai", "anthropic"])
async def test_json_mode_and_structured_output(sim: SimServer, make: object) -> None:
    lm = make(sim)  # type: ignore[operator]
    # (Anthropic has no JSON mode: that request goes out plain, and the JSON adapter's prompt
    # is what asks for JSON, as it is for DSPy with a model it does not know)
    for fmt in ({"type": "json_object"}, SCHEMA):
        out = await lm.acall(messages=JSON_MSGS, response_format=fmt)
        assert isinstance(json.loads(out[0])["answer"], int)


@pytest.mark.parametrize("make", [openai_lm, anthropic_lm], ids=["openai", "anthropic"])
async def test_tool_calling(sim: SimServer, make: object) -> None:
    lm = make(sim)  # type: ignore[operator]
    out = await lm.acall(messages=[{"role": "user", "content": "find dspy"}], tools=TOOLS,
                         tool_choice={"type": "function", "function": {"name": "search"}})
    call = out[0]["tool_calls"][0]
    assert call["function"]["name"] == "search" and isinstance(call["function"]["arguments"]["q"], str)


@pytest.mark.parametrize("make", [openai_lm, anthropic_lm], ids=["openai", "anthropic"])
async def test_streaming_joins_to_the_unstreamed_reply(sim: SimServer, make: object) -> None:
    lm = make(sim, "sim-small")  # type: ignore[operator]  # real per-token pacing
    chunks = [c async for c in lm.astream(messages=MSGS)]
    assert len(chunks) >= 3 and chunks[-1].done
    joined = "".join(c.text for c in chunks)
    assert joined == (await lm.acall(messages=MSGS))[0]
    last = chunks[-1].response
    assert last is not None and last.usage.completion_tokens > 0 and not last.usage.estimated


# -- faults ---------------------------------------------------------------------------------------


async def test_5xx_is_retried_until_it_gives_up(sim: SimServer, client_events: Captured) -> None:
    sim.set_faults("sim-small-fast", error_rate=1.0, error_status=502)
    with pytest.raises(ProviderUnavailable) as info:
        await openai_lm(sim, retry=FAST_RETRY).acall(messages=MSGS)
    assert info.value.status == 502 and "simulated 502" in str(info.value)
    assert requests_to(sim, "sim-small-fast") == 4
    assert len(client_events.of(names.PROVIDER_RETRY)) == 3


async def test_intermittent_errors_are_absorbed_by_retries(sim: SimServer) -> None:
    sim.set_faults("sim-small-fast", error_rate=0.5)
    lm = openai_lm(sim, retry=RetryPolicy(num_retries=8, base_delay_s=0.001, max_delay_s=0.01),
                   breaker=BreakerConfig(failure_threshold=1000))
    outs = await asyncio.gather(*[lm.acall(messages=MSGS) for _ in range(20)])
    assert len(outs) == 20
    stats = sim.model_stats("sim-small-fast")
    assert stats["requests"] > 20 and stats["ok"] == 20


async def test_outage_then_recovery(sim: SimServer) -> None:
    sim.outage("sim-small-fast", on=True)
    lm = anthropic_lm(sim, num_retries=0)
    with pytest.raises(ProviderUnavailable) as info:
        await lm.acall(messages=MSGS)
    assert info.value.status == 503 and info.value.provider == "anthropic"
    sim.outage("sim-small-fast", on=False)
    assert (await lm.acall(messages=MSGS))[0].startswith("[[ ## answer")


async def test_429_with_retry_after(sim: SimServer) -> None:
    sim.set_faults("sim-small-fast", rpm_limit=3)
    lm = openai_lm(sim, num_retries=0)
    for _ in range(3):
        await lm.acall(messages=MSGS)
    with pytest.raises(RateLimited) as info:
        await lm.acall(messages=MSGS)
    assert info.value.status == 429 and info.value.retry_after_s is not None and 0 < info.value.retry_after_s <= 60
    # a client that would have to wait longer than it allows gives the 429 to its caller at once
    t0 = time.monotonic()
    with pytest.raises(RateLimited):
        await openai_lm(sim, retry=RetryPolicy(num_retries=3, max_retry_after_s=1.0)).acall(messages=MSGS)
    assert time.monotonic() - t0 < 1.0


async def test_hang_becomes_a_timeout_and_a_retry_succeeds(sim: SimServer) -> None:
    sim.set_faults("sim-small-fast", hang_rate=1.0, hang_s=10)
    with pytest.raises(ProviderTimeout):
        await openai_lm(sim, num_retries=0, timeout_s=0.3).acall(messages=MSGS)
    sim.set_faults("sim-small-fast", hang_rate=0.5, hang_s=10)
    lm = openai_lm(sim, timeout_s=0.3, retry=RetryPolicy(num_retries=10, base_delay_s=0.001, max_delay_s=0.01),
                   breaker=BreakerConfig(failure_threshold=1000))
    out = await asyncio.gather(*[lm.acall(messages=MSGS) for _ in range(4)])
    assert len(out) == 4 and sim.model_stats("sim-small-fast")["faults"].get("hang", 0) >= 1


async def test_malformed_output_is_returned_for_the_adapter_to_judge(sim: SimServer) -> None:
    good = (await openai_lm(sim).acall(messages=MSGS))[0]
    sim.set_faults("sim-small-fast", malformed_rate=1.0)
    bad = (await openai_lm(sim).acall(messages=MSGS))[0]
    assert bad != good and sim.model_stats("sim-small-fast")["faults"]["malformed"] == 1


async def test_client_errors_map_and_are_not_retried(sim: SimServer) -> None:
    with pytest.raises(ModelNotFound):
        await openai_lm(sim, "no-such-model").acall(messages=MSGS)
    with pytest.raises(BadRequest) as info:
        await openai_lm(sim).acall(messages=MSGS, temperature=9.0)
    assert info.value.status == 400 and "temperature" in info.value.provider_message
    with pytest.raises(ContextWindowExceeded):
        await openai_lm(sim).acall(messages=[{"role": "user", "content": "word " * 80_000}])
    # one request each, no retries (the invalid body is refused before the model counts it)
    assert sim.model_stats("sim-small-fast")["requests"] == 1


def test_wrong_key_is_an_authentication_error_without_the_key() -> None:
    config = SimConfig.for_tests().model_copy(update={"api_keys": ["sk-sim-right"]})
    with SimServer(config) as server:
        wrong = LM("openai/sim-small-fast", api_base=server.openai_base_url, api_key="sk-sim-WRONG", cache=False)
        with pytest.raises(AuthenticationError) as info:
            wrong(messages=MSGS)
        assert "sk-sim-WRONG" not in str(info.value) and "sk-sim-WRONG" not in repr(wrong)
        right = LM("anthropic/sim-small-fast", api_base=server.base_url, api_key="sk-sim-right", cache=False)
        assert right(messages=MSGS)[0].startswith("[[ ## answer")


# -- breaker and rate limiter ----------------------------------------------------------------------


async def test_breaker_opens_fails_fast_and_half_opens(sim: SimServer, client_events: Captured) -> None:
    sim.outage("sim-small-fast", on=True)
    lm = openai_lm(sim, num_retries=0, breaker=BreakerConfig(failure_threshold=3, open_duration_s=0.3, half_open_probes=1))
    for _ in range(3):
        with pytest.raises(ProviderUnavailable):
            await lm.acall(messages=MSGS)
    assert lm.endpoint.breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpen):
        await lm.acall(messages=MSGS)
    assert requests_to(sim, "sim-small-fast") == 3  # the open breaker sent nothing
    await asyncio.sleep(0.32)
    assert lm.endpoint.breaker.state is BreakerState.HALF_OPEN
    with pytest.raises(ProviderUnavailable):  # the probe fails: open again
        await lm.acall(messages=MSGS)
    assert lm.endpoint.breaker.state is BreakerState.OPEN
    sim.outage("sim-small-fast", on=False)
    await asyncio.sleep(0.32)
    assert (await lm.acall(messages=MSGS))[0].startswith("[[ ## answer")
    assert lm.endpoint.breaker.state is BreakerState.CLOSED
    states = [md["state"] for _, md in client_events.of(names.BREAKER_STATE)]
    assert states == ["open", "half_open", "open", "half_open", "closed"]


async def test_rate_limiter_holds_rpm_against_the_server(sim: SimServer, client_events: Captured) -> None:
    rpm = 1200  # 20 per second, burst 20
    lm = openai_lm(sim, rpm=rpm)
    t0 = time.monotonic()
    await asyncio.gather(*[lm.acall(messages=MSGS) for _ in range(40)])
    elapsed = time.monotonic() - t0
    assert elapsed >= 0.95  # 20 at once, then 20 more at 20 per second
    starts = sorted(m["system_time"] for m, _ in client_events.of(names.start(names.PROVIDER_REQUEST)))
    assert len(starts) == 40
    for t in starts:  # no 0.5 s window holds more than the burst plus half a second's worth
        assert sum(1 for u in starts if t <= u < t + 0.5) <= 20 + 10 + 1
    assert len(client_events.of(names.RATE_LIMIT_WAIT)) >= 19
    assert requests_to(sim, "sim-small-fast") == 40


async def test_server_rpm_limit_is_what_the_client_limiter_prevents(sim: SimServer) -> None:
    sim.set_faults("sim-small-fast", rpm_limit=25)
    lm = openai_lm(sim, num_retries=0)
    results = await asyncio.gather(*[lm.acall(messages=MSGS) for _ in range(30)], return_exceptions=True)
    assert sum(isinstance(r, RateLimited) for r in results) == 5


# -- cache ------------------------------------------------------------------------------------------


async def test_cache_and_coalescing_against_the_server(sim: SimServer, lm_cache: LMCache) -> None:
    lm = openai_lm(sim, "sim-small", cache=True, response_cache=lm_cache)  # real latency: calls overlap
    outs = await asyncio.gather(*[lm.acall(messages=MSGS) for _ in range(10)])
    assert all(o == outs[0] for o in outs) and requests_to(sim, "sim-small") == 1
    assert await lm.acall(messages=MSGS) == outs[0] and requests_to(sim, "sim-small") == 1
    await lm.acall(messages=MSGS, cache=False)
    assert requests_to(sim, "sim-small") == 2
