"""The response cache: memory LRU, disk (SQLite), skipping, rollout_id, coalescing, telemetry."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from fixtures.clients import Captured, Recorder, openai_reply

from dspex.clients import LM, LMCache
from dspex.clients.cache import cache_dir, configure_cache, get_cache, request_key
from dspex.errors import ConfigurationError, ProviderUnavailable
from dspex.telemetry import names


def make_lm(rec: Recorder, store: LMCache, **kwargs: object) -> LM:
    return LM("openai/gpt-4o-mini", api_key="sk-1", http_transport=rec.transport(), response_cache=store, **kwargs)  # type: ignore[arg-type]


def counter_recorder() -> Recorder:
    n = {"i": 0}

    def reply(request: httpx.Request) -> httpx.Response:
        n["i"] += 1
        return httpx.Response(200, json=openai_reply(f"reply {n['i']}", usage={"prompt_tokens": 100, "completion_tokens": 10}))

    return Recorder(default=reply)


async def test_second_identical_call_is_a_memory_hit_with_no_cost(lm_cache: LMCache, client_events: Captured) -> None:
    rec = counter_recorder()
    lm = make_lm(rec, lm_cache)
    first = await lm.acall(prompt="q", temperature=0.0)
    second = await lm.acall(prompt="q", temperature=0.0)
    assert first == second == ["reply 1"] and len(rec.requests) == 1
    hit = lm.history[-1]
    # A hit keeps the usage it had when paid for, costs nothing, and its tokens are not counted again.
    assert hit["cache_hit"] is True and hit["cost"] == 0.0
    assert hit["usage"]["total_tokens"] == lm.history[0]["usage"]["total_tokens"] > 0
    assert lm.history[0]["cost"] > 0
    hits = client_events.of(names.CACHE_HIT)
    misses = client_events.of(names.CACHE_MISS)
    assert [md["layer"] for _, md in hits] == ["memory"] and len(misses) == 1
    assert all(md["cache"] == "lm" for _, md in hits + misses)
    lm_stops = client_events.of(names.stop(names.LM_CALL))
    assert [md["cache_hit"] for _, md in lm_stops] == [False, True]
    assert [m["input_tokens"] for m, _ in lm_stops][1] == 0


async def test_different_requests_miss(lm_cache: LMCache) -> None:
    rec = counter_recorder()
    lm = make_lm(rec, lm_cache)
    await lm.acall(prompt="q")
    await lm.acall(prompt="q", temperature=0.5)
    await lm.acall(prompt="other")
    await lm.acall(messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "q"}])
    await lm.acall(prompt="q", response_format={"type": "json_object"})
    assert len(rec.requests) == 5


async def test_temperature_above_zero_still_caches_but_rollout_id_separates(lm_cache: LMCache) -> None:
    rec = counter_recorder()
    lm = make_lm(rec, lm_cache, temperature=1.0)
    a = await lm.acall(prompt="poem")
    b = await lm.acall(prompt="poem")
    c = await lm.acall(prompt="poem", rollout_id=1)
    d = await lm.acall(prompt="poem", rollout_id=1)
    e = await lm.acall(prompt="poem", rollout_id=2)
    assert a == b == ["reply 1"] and c == d == ["reply 2"] and e == ["reply 3"]
    assert all("rollout_id" not in body for body in rec.bodies)


async def test_cache_false_skips_in_constructor_and_per_call(lm_cache: LMCache) -> None:
    rec = counter_recorder()
    lm = make_lm(rec, lm_cache, cache=False)
    await lm.acall(prompt="q")
    await lm.acall(prompt="q")
    assert len(rec.requests) == 2 and len(lm_cache) == 0
    lm2 = make_lm(rec, lm_cache)
    await lm2.acall(prompt="q", cache=False)
    await lm2.acall(prompt="q", cache=False)
    assert len(rec.requests) == 4 and len(lm_cache) == 0
    await lm2.acall(prompt="q")
    await lm2.acall(prompt="q")
    assert len(rec.requests) == 5


async def test_api_key_and_base_are_not_in_the_key(lm_cache: LMCache) -> None:
    rec = counter_recorder()
    a = LM("openai/m", api_key="k1", api_base="http://127.0.0.1:1/v1", http_transport=rec.transport(), response_cache=lm_cache)
    b = LM("openai/m", api_key="k2", api_base="http://127.0.0.1:2/v1", http_transport=rec.transport(), response_cache=lm_cache)
    await a.acall(prompt="q")
    assert await b.acall(prompt="q") == ["reply 1"] and len(rec.requests) == 1
    # ...but the provider is: the same model name on Anthropic is another request
    c = LM("anthropic/m", api_key="k", api_base="http://127.0.0.1:3", http_transport=rec.transport(), response_cache=lm_cache)
    rec.default = lambda r: httpx.Response(200, json={"content": [{"type": "text", "text": "ant"}], "model": "m"})
    assert await c.acall(prompt="q") == ["ant"]


async def test_disk_layer_survives_a_new_cache_object(tmp_path: Path, client_events: Captured) -> None:
    rec = counter_recorder()
    first = LMCache(disk_dir=tmp_path)
    await make_lm(rec, first).acall(prompt="persist me")
    first.flush()
    first.close()
    second = LMCache(disk_dir=tmp_path)
    lm = make_lm(rec, second)
    assert await lm.acall(prompt="persist me") == ["reply 1"]
    assert len(rec.requests) == 1
    assert client_events.of(names.CACHE_HIT)[-1][1]["layer"] == "disk"
    assert await lm.acall(prompt="persist me") == ["reply 1"]
    assert client_events.of(names.CACHE_HIT)[-1][1]["layer"] == "memory"  # promoted
    second.close()
    assert (tmp_path / "lm_responses.sqlite").exists()


async def test_disk_only_and_memory_only(tmp_path: Path) -> None:
    rec = counter_recorder()
    disk_only = LMCache(enable_memory=False, disk_dir=tmp_path)
    lm = make_lm(rec, disk_only)
    await lm.acall(prompt="q")
    disk_only.flush()
    assert await lm.acall(prompt="q") == ["reply 1"] and len(disk_only) == 0
    disk_only.close()
    mem_only = LMCache(enable_disk=False)
    lm2 = make_lm(rec, mem_only)
    await lm2.acall(prompt="z")
    assert await lm2.acall(prompt="z") == ["reply 2"] and mem_only.disk is None


def test_memory_lru_evicts_least_recent() -> None:
    cache = LMCache(enable_disk=False, memory_max_entries=2)
    cache.put("a", {"v": 1})
    cache.put("b", {"v": 2})
    assert cache.get("a") is not None  # a is now most recent
    cache.put("c", {"v": 3})
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    with pytest.raises(ConfigurationError):
        LMCache(enable_disk=False, memory_max_entries=0)


def test_request_key_is_canonical() -> None:
    assert request_key({"a": 1, "b": [1, 2]}) == request_key({"b": [1, 2], "a": 1})
    assert request_key({"a": 1}) != request_key({"a": 2})


async def test_concurrent_identical_calls_coalesce_into_one_request(lm_cache: LMCache, client_events: Captured) -> None:
    gate = asyncio.Event()
    calls = {"n": 0}

    async def slow_handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        await gate.wait()
        return httpx.Response(200, json=openai_reply("shared"))

    lm = LM("openai/gpt-4o-mini", api_key="k", http_transport=httpx.MockTransport(slow_handler), response_cache=lm_cache)
    tasks = [asyncio.ensure_future(lm.acall(prompt="same")) for _ in range(10)]
    for _ in range(10):
        await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert results == [["shared"]] * 10 and calls["n"] == 1
    assert sum(1 for e in lm.history if not e["cache_hit"]) == 1
    layers = [md["layer"] for _, md in client_events.of(names.CACHE_HIT)]
    assert layers == ["coalesced"] * 9


async def test_coalesced_failure_reaches_every_caller_and_is_not_cached(lm_cache: LMCache) -> None:
    gate = asyncio.Event()
    calls = {"n": 0}

    async def failing(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        await gate.wait()
        return httpx.Response(503, json={"error": {"message": "down"}})

    lm = LM("openai/gpt-4o-mini", api_key="k", http_transport=httpx.MockTransport(failing), response_cache=lm_cache, num_retries=0)
    tasks = [asyncio.ensure_future(lm.acall(prompt="same")) for _ in range(4)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, ProviderUnavailable) for r in results) and calls["n"] == 1
    with pytest.raises(ProviderUnavailable):
        await lm.acall(prompt="same")
    assert calls["n"] == 2  # failures are not cached


async def test_cancelling_one_caller_does_not_cancel_the_shared_call(lm_cache: LMCache) -> None:
    gate = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        await gate.wait()
        return httpx.Response(200, json=openai_reply("done"))

    lm = LM("openai/gpt-4o-mini", api_key="k", http_transport=httpx.MockTransport(handler), response_cache=lm_cache)
    first = asyncio.ensure_future(lm.acall(prompt="p"))
    second = asyncio.ensure_future(lm.acall(prompt="p"))
    await asyncio.sleep(0)
    first.cancel()
    gate.set()
    assert await second == ["done"]


def test_default_cache_lives_under_dspex_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DSPEX_HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / "cache"
    monkeypatch.delenv("DSPEX_HOME")
    assert cache_dir() == Path.home() / ".dspex" / "cache"
    monkeypatch.setenv("DSPEX_HOME", str(tmp_path / "home"))
    new = configure_cache(enable_memory=True, enable_disk=True)
    try:
        assert get_cache() is new and new.disk is not None
        assert new.disk.path == tmp_path / "home" / "cache" / "lm_responses.sqlite"
    finally:
        monkeypatch.undo()  # back to the session's DSPEX_HOME before the default cache is rebuilt
        configure_cache()


def test_unwritable_cache_dir_is_a_configuration_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigurationError, match="DSPEX_HOME"):
        LMCache(disk_dir=blocker / "sub")
