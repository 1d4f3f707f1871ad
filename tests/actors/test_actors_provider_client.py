"""ProviderClient and RemoteLM in local mode, against the simulator over real HTTP."""

from __future__ import annotations

import asyncio
import pickle
import time
from typing import Any

import pytest
from dspex.actors import LocalActor, ProviderClient, ProviderConfig, RemoteLM

import dspex
from dspex.errors import CircuitOpen, ConfigurationError, ProviderUnavailable
from dspex.sim import SimServer


def remote_lm(sim: SimServer, model: str = "sim-small-fast", **kw: Any) -> tuple[RemoteLM, ProviderClient]:
    lm = RemoteLM(f"openai/{model}", api_base=sim.openai_base_url, cache=False, **kw)
    client = ProviderClient(lm.config)
    lm._handle = LocalActor(client)  # in-process actor: the same calls as a Ray handle
    return lm, client


async def test_a_program_runs_unchanged_on_a_remote_lm(sim: SimServer) -> None:
    lm, client = remote_lm(sim)
    qa = dspex.Predict("question -> answer")
    with dspex.context(lm=lm):
        out = await qa.acall(question="What is 2 + 2?")
    assert isinstance(out.answer, str) and out.answer
    assert len(lm.history) == 1 and lm.history[0]["model"] == "openai/sim-small-fast"
    state = await client.state()
    assert state["calls"] == 1 and state["errors"] == 0 and state["breaker"] == "closed"
    assert sim.model_stats("sim-small-fast")["requests"] == 1
    assert lm.provider == "openai" and lm.supports("json_schema") == client.lm.supports("json_schema")


async def test_the_rate_limit_holds_for_every_caller_of_the_actor(sim: SimServer) -> None:
    lm, client = remote_lm(sim, rpm=1200)  # 20 per second, burst 20
    t0 = time.monotonic()
    replies = await asyncio.gather(
        *(lm.acall(messages=[{"role": "user", "content": f"say {i}"}]) for i in range(40))
    )
    elapsed = time.monotonic() - t0
    assert len(replies) == 40
    assert elapsed >= (40 - 20) / 20 * 0.9  # the burst, then 20 per second
    assert (await client.state())["peak_in_flight"] >= 20


async def test_the_breaker_opens_on_an_outage_and_closes_after(sim: SimServer) -> None:
    lm, client = remote_lm(sim, num_retries=0, breaker={"failure_threshold": 2, "open_duration_s": 0.3})
    msgs = [{"role": "user", "content": "hello"}]
    sim.outage("sim-small-fast", on=True)
    for _ in range(2):
        with pytest.raises(ProviderUnavailable):
            await lm.acall(messages=msgs)
    requests_when_open = sim.model_stats("sim-small-fast")["requests"]
    with pytest.raises(CircuitOpen, match="circuit breaker"):
        await lm.acall(messages=msgs)
    assert sim.model_stats("sim-small-fast")["requests"] == requests_when_open  # failed fast
    assert (await client.state())["breaker"] == "open"
    sim.outage("sim-small-fast", on=False)
    await asyncio.sleep(0.35)
    assert await lm.acall(messages=msgs)
    assert (await client.state())["breaker"] == "closed"


def test_remote_lm_takes_no_api_key_and_never_pickles_one() -> None:
    with pytest.raises(ConfigurationError, match="api_key_env"):
        RemoteLM("openai/gpt-4o-mini", api_key="sk-secret-123")
    with pytest.raises(ConfigurationError, match="api_key_env"):
        ProviderConfig("openai/gpt-4o-mini", extra={"api_key": "sk-secret-123"})
    lm = RemoteLM("openai/m", api_base="http://127.0.0.1:9/v1", api_key_env="MY_KEY", rpm=60, temperature=0.2)
    lm._handle = object()
    blob = pickle.dumps(lm)
    back = pickle.loads(blob)
    assert back._handle is None and back.config == lm.config
    assert back.config.actor_name == lm.config.actor_name and back.config.actor_name.startswith("dspex.provider.")
    state = lm.dump_state()
    assert state["api_key_env"] == "MY_KEY" and state["rpm"] == 60 and "api_key" not in state
    assert repr(lm) == "RemoteLM(model='openai/m', api_base='http://127.0.0.1:9/v1')"


def test_one_actor_name_per_endpoint() -> None:
    a = ProviderConfig("openai/m", api_base="http://127.0.0.1:9/v1")
    b = ProviderConfig("openai/m", api_base="http://127.0.0.1:9/v1", rpm=5)
    c = ProviderConfig("openai/other", api_base="http://127.0.0.1:9/v1")
    assert a.actor_name == b.actor_name != c.actor_name
    with pytest.raises(ConfigurationError):
        RemoteLM("nonsense-provider/x/y")
