"""Prices and cost; the pooled transport (one client per event loop, real aiohttp over loopback)."""

from __future__ import annotations

import asyncio
import threading

import aiohttp
import httpx
import pytest
from fixtures.clients import Recorder, ScriptedServer, openai_reply

from dspex.clients import (
    LM,
    PoolLimits,
    Timeouts,
    cost_usd,
    estimate_tokens,
    price_for,
    register_price,
)
from dspex.clients.pricing import unregister_price
from dspex.clients.transport import TransportPool, default_pool
from dspex.errors import ConfigurationError


def test_builtin_prices_and_family_prefixes() -> None:
    assert price_for("gpt-4o-mini") is not None
    p = price_for("gpt-4o-mini-2024-07-18")
    assert p is not None and (p.input_per_1m_usd, p.output_per_1m_usd) == (0.15, 0.60)
    p2 = price_for("gpt-4o-2024-08-06")
    assert p2 is not None and p2.input_per_1m_usd == 2.50
    p3 = price_for("claude-3-5-sonnet-20241022")
    assert p3 is not None and p3.output_per_1m_usd == 15.0
    assert price_for("gpt-4ox") is None  # a family prefix must end at a separator
    p4 = price_for("gpt-4o-minix")
    assert p4 is not None and p4.input_per_1m_usd == 2.50  # "gpt-4o" + "-minix"
    assert price_for("totally-unknown") is None
    assert cost_usd("gpt-4o", 1_000_000, 1_000_000) == pytest.approx(12.5)


def test_register_price_wins_and_can_be_provider_scoped() -> None:
    try:
        register_price("sim-small", 0.1, 0.2)
        register_price("openai/gpt-4o", 1.0, 1.0)
        assert cost_usd("sim-small", 1_000_000, 500_000, provider="openai") == pytest.approx(0.2)
        assert cost_usd("gpt-4o", 1_000_000, 0, provider="openai") == pytest.approx(1.0)
        assert cost_usd("gpt-4o", 1_000_000, 0, provider="vllm") == pytest.approx(2.5)
        with pytest.raises(ConfigurationError):
            register_price("x", -1, 0)
    finally:
        unregister_price("sim-small")
        unregister_price("openai/gpt-4o")


def test_estimate_tokens() -> None:
    assert estimate_tokens("abcd" * 10) == 10
    assert estimate_tokens([{"role": "user", "content": "a" * 36}]) == 10  # "user" + 36 chars
    assert estimate_tokens(None) == 0


def test_timeouts_and_limits_validate() -> None:
    with pytest.raises(ConfigurationError):
        Timeouts(total_s=0)
    t = Timeouts(connect_s=1, read_s=2, pool_s=3).httpx()
    assert (t.connect, t.read, t.pool) == (1, 2, 3)
    assert PoolLimits(max_connections=8).httpx().max_connections == 8


async def test_one_pooled_transport_per_loop(scripted_server: ScriptedServer) -> None:
    from httpx_aiohttp import AiohttpTransport

    pool = TransportPool()
    a = pool.get()
    assert pool.get() is a and isinstance(a, AiohttpTransport)
    response = await a.handle_async_request(httpx.Request("POST", scripted_server.url + "/chat/completions", content=b"{}"))
    await response.aread()
    await response.aclose()
    session = a.client
    assert isinstance(session, aiohttp.ClientSession) and not session.closed
    other: list[httpx.AsyncBaseTransport] = []

    def in_thread() -> None:
        async def main() -> None:
            other.append(pool.get())

        asyncio.run(main())

    t = threading.Thread(target=in_thread)
    t.start()
    t.join()
    assert other and other[0] is not a
    assert isinstance(pool.get(transport="httpx"), httpx.AsyncHTTPTransport)
    with pytest.raises(ConfigurationError):
        pool.get(transport="carrier-pigeon")
    with pytest.raises(ConfigurationError):
        LM("openai/x", transport="carrier-pigeon")
    assert pool.get() is a and pool.get() is a  # the second from the last lookup
    await pool.aclose()
    assert session.closed and pool.get() is not a  # closing forgets it
    await pool.aclose()


async def test_lm_calls_again_after_the_pool_is_closed_on_its_loop(scripted_server: ScriptedServer) -> None:
    lm = LM("openai/m", api_base=scripted_server.url, api_key="k", cache=False)
    assert await lm.acall(prompt="a") == ["ok"]
    await default_pool.aclose()
    assert await lm.acall(prompt="b") == ["ok"]  # a new transport, not the closed one
    await lm.aclose()


async def test_lm_over_real_aiohttp_and_from_sync_code(scripted_server: ScriptedServer) -> None:
    lm = LM("openai/m", api_base=scripted_server.url, api_key="k", cache=False)
    out = await asyncio.gather(*[lm.acall(prompt=str(i)) for i in range(20)])
    assert out == [["ok"]] * 20 and len(scripted_server.requests) == 20
    req = scripted_server.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["headers"]["authorization"] == "Bearer k"
    await lm.aclose()


def test_pooled_transports_close_when_asyncio_run_ends() -> None:
    pool = TransportPool()
    sessions: list[aiohttp.ClientSession] = []

    async def main() -> None:
        transport = pool.get()
        transport.client = transport.get_client()  # type: ignore[attr-defined]  # what its first request does
        sessions.append(transport.client)  # type: ignore[attr-defined]

    asyncio.run(main())
    assert sessions and sessions[0].closed


async def test_an_injected_client_is_used_as_is() -> None:
    seen: list[httpx.Request] = []

    async def hook(request: httpx.Request) -> None:
        seen.append(request)

    rec = Recorder(default=lambda r: httpx.Response(200, json=openai_reply("via client")))
    client = httpx.AsyncClient(transport=rec.transport(), event_hooks={"request": [hook]})
    lm = LM("openai/m", api_base="http://127.0.0.1:9/v1", cache=False, http_client=client)
    assert await lm.acall(prompt="x") == ["via client"]
    assert len(seen) == 1 and len(rec.requests) == 1


def test_pooled_connections_expire_before_common_servers_close_them() -> None:
    """A pooled connection must not outlive the server's keep-alive: reusing one the server has
    just closed fails the call ("Can not write request body"), which benchmarks/router.py hit
    with uvicorn's 5 s (vLLM's and the simulator's server)."""
    from dspex.clients.transport import PoolLimits
    from dspex.sim.runner import uvicorn_config_kwargs

    assert PoolLimits().keepalive_expiry_s < uvicorn_config_kwargs()["timeout_keep_alive"]
    assert PoolLimits().httpx().keepalive_expiry == PoolLimits().keepalive_expiry_s
