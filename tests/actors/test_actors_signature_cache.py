"""The signature cache without Ray: eviction, expiry, compile locks, artifacts, both tiers."""

from __future__ import annotations

import asyncio
import io
import pickle
from typing import Any

import pytest
from dspex.actors import SignatureCache, SignatureCacheCore, compile_shared
from dspex.actors.signature_artifacts import build_artifacts, hydrate
from dspex.actors.signature_cache import LockKind

import dspex
from dspex import telemetry
from dspex.adapters import ChatAdapter, JSONAdapter
from dspex.errors import ConfigurationError, SignatureError
from dspex.signatures import clear_cache, compile_signature, content_hash


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def art(i: int) -> Any:
    sig = dspex.Signature(f"q{i} -> a{i}")
    return build_artifacts(sig)


@pytest.fixture(scope="module")
def artifacts() -> list[Any]:
    return [art(i) for i in range(40)]


def fill(core: SignatureCacheCore, arts: list[Any], clock: Clock) -> None:
    for a in arts:
        core.put(a.hash, a)
        clock.t += 1


def test_lru_evicts_the_least_recently_used_tenth(artifacts: list[Any]) -> None:
    clock = Clock()
    core = SignatureCacheCore(max_size=20, strategy="lru", clock=clock)
    fill(core, artifacts[:20], clock)
    # touch the two oldest: they become the most recent
    assert core.get(artifacts[0].hash) is artifacts[0]
    clock.t += 1
    assert core.get(artifacts[1].hash) is artifacts[1]
    clock.t += 1
    evicted = core.put(artifacts[20].hash, artifacts[20])
    assert evicted == 2  # a tenth of max_size
    assert len(core) == 19
    assert artifacts[0].hash in core and artifacts[1].hash in core
    assert artifacts[2].hash not in core and artifacts[3].hash not in core
    assert core.stats()["evicted_lru"] == 2


def test_lfu_evicts_the_least_frequently_used(artifacts: list[Any]) -> None:
    clock = Clock()
    core = SignatureCacheCore(max_size=10, strategy="lfu", clock=clock)
    fill(core, artifacts[:10], clock)
    for a in artifacts[:10]:
        if a is not artifacts[5]:
            core.get(a.hash)
            core.get(a.hash)
    core.put(artifacts[10].hash, artifacts[10])
    assert artifacts[5].hash not in core  # used once (its insert), all others three times
    assert artifacts[0].hash in core
    assert core.stats()["evicted_lfu"] == 1


def test_ttl_strategy_evicts_oldest_inserted_and_expires(artifacts: list[Any]) -> None:
    clock = Clock()
    core = SignatureCacheCore(max_size=10, strategy="ttl", ttl_s=100.0, clock=clock)
    fill(core, artifacts[:10], clock)
    for a in artifacts[:10]:
        core.get(a.hash)  # recency and frequency do not matter for ttl
    core.put(artifacts[10].hash, artifacts[10])
    assert artifacts[0].hash not in core and artifacts[1].hash in core
    # an entry past its ttl is gone on access, counted as expired
    clock.t += 100.0
    assert core.get(artifacts[1].hash) is None
    stats = core.stats()
    assert stats["expired"] >= 1 and stats["evicted_ttl"] >= 2
    # the sweep drops every expired entry
    left = len(core)
    assert left == 9
    clock.t += 1000
    assert core.sweep() == left
    assert len(core) == 0


def test_expired_entries_make_room_before_the_strategy_runs(artifacts: list[Any]) -> None:
    clock = Clock()
    core = SignatureCacheCore(max_size=10, strategy="lru", ttl_s=5.0, clock=clock)
    fill(core, artifacts[:10], clock)  # inserted at 1000..1009
    clock.t = 1006.0  # entries inserted at 1000 and 1001 have expired
    evicted = core.put(artifacts[10].hash, artifacts[10])
    assert evicted == 2
    assert core.stats()["evicted_lru"] == 0


def test_hits_misses_and_telemetry(artifacts: list[Any]) -> None:
    seen: list[tuple[tuple[str, ...], dict[str, Any], dict[str, Any]]] = []
    events = [("dspex", "cache", "hit"), ("dspex", "cache", "miss"), ("dspex", "cache", "evict")]
    telemetry.attach_many("test-sig-cache", events, lambda e, m, md, _: seen.append((e, m, md)))
    try:
        core = SignatureCacheCore(max_size=1, clock=Clock())
        core.get("nope")
        core.put(artifacts[0].hash, artifacts[0])
        core.get(artifacts[0].hash)
        core.put(artifacts[1].hash, artifacts[1])
    finally:
        telemetry.detach("test-sig-cache")
    mine = [(e[-1], md.get("reason")) for e, _, md in seen if md.get("cache") == "signature_cluster"]
    assert mine == [("miss", None), ("hit", None), ("evict", "lru")]
    stats = core.stats()
    assert (stats["hits"], stats["misses"], stats["evictions"]) == (1, 1, 1)
    assert stats["hit_rate"] == 0.5


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="max_size"):
        SignatureCacheCore(max_size=0)
    with pytest.raises(ConfigurationError, match="Unknown eviction strategy 'fifo'"):
        SignatureCacheCore(strategy="fifo")
    with pytest.raises(ConfigurationError, match="ttl_s"):
        SignatureCacheCore(ttl_s=0)
    with pytest.raises(ConfigurationError, match="cannot be stored"):
        SignatureCacheCore().put("x" * 64, art(0))


def test_compile_lock_grant_busy_publish_and_takeover(artifacts: list[Any]) -> None:
    clock = Clock()
    core = SignatureCacheCore(lock_timeout_s=10.0, clock=clock)
    h = artifacts[0].hash
    assert core.try_lock(h, "a").kind is LockKind.GRANTED
    busy = core.try_lock(h, "b")
    assert busy.kind is LockKind.BUSY and busy.owner == "a" and busy.expires_in_s == 10.0
    assert not core.release(h, "b")  # only the holder releases
    core.publish(h, "a", artifacts[0])
    cached = core.try_lock(h, "b")
    assert cached.kind is LockKind.CACHED and cached.artifacts is artifacts[0]
    # a holder that never publishes loses the lock after lock_timeout_s
    h2 = artifacts[1].hash
    assert core.try_lock(h2, "dead").kind is LockKind.GRANTED
    clock.t += 11.0
    assert core.try_lock(h2, "c").kind is LockKind.GRANTED
    assert core.stats()["lock_takeovers"] == 1
    assert core.stats()["compiles"] == 1


async def test_waiters_get_the_holders_result() -> None:
    cache = SignatureCache()
    h = "f" * 64
    assert await cache.acquire(h, "first") == ("compile", None)
    waiter = asyncio.ensure_future(cache.acquire(h, "second"))
    await asyncio.sleep(0.01)
    assert not waiter.done()  # it waits for the holder instead of compiling too
    a = art(7)
    object.__setattr__(a, "hash", h)
    await cache.publish(h, "first", a)
    assert await asyncio.wait_for(waiter, 1.0) == ("cached", a)
    stats = await cache.stats()
    assert stats["compiles"] == 1 and stats["waits"] == 1


async def test_a_failed_compile_hands_the_lock_to_a_waiter() -> None:
    cache = SignatureCache()
    h = "e" * 64
    await cache.acquire(h, "first")
    waiter = asyncio.ensure_future(cache.acquire(h, "second"))
    await asyncio.sleep(0.01)
    assert await cache.release(h, "first")
    assert await asyncio.wait_for(waiter, 1.0) == ("compile", None)


def test_artifacts_are_plain_data_and_hydrate_to_the_same_prompts() -> None:
    class QA(dspex.Signature):
        """Answer with a number and a confidence."""

        question: str = dspex.InputField(desc="the question")
        answer: float = dspex.OutputField()
        sources: list[str] = dspex.OutputField(desc="where from")

    artifacts = build_artifacts(QA)
    blob = pickle.dumps(artifacts)
    restored = _DataOnly(io.BytesIO(blob)).load()  # no type objects travel, only our records
    assert restored.output_schema and restored.structured_output_schema
    fresh = compile_signature(QA)
    hydrated = hydrate(QA, restored)
    assert hydrated.hash == fresh.hash == content_hash(QA)
    assert [f.note for f in hydrated.outputs] == [f.note for f in fresh.outputs]
    assert hydrated.output_schema == fresh.output_schema
    # the adapters render identical prompts from the hydrated form, from its stored templates
    assert ChatAdapter().system_message(QA, hydrated) == ChatAdapter().system_message(QA, fresh)
    assert JSONAdapter().system_message(QA, hydrated) == JSONAdapter().system_message(QA, fresh)
    assert hydrated.input_model.model_fields.keys() == {"question"}
    assert hydrated.fields["answer"].validator.validate_python("2.5") == 2.5


class _DataOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "dspex.actors.signature_artifacts" and name in ("SignatureArtifacts", "FieldArtifact"):
            return super().find_class(module, name)
        raise AssertionError(f"the artifacts pickle refers to {module}.{name}")


def test_hydrate_refuses_artifacts_of_another_signature() -> None:
    a = build_artifacts(dspex.Signature("question -> answer"))
    with pytest.raises(SignatureError, match="different code"):
        hydrate(dspex.Signature("question -> answer, why"), a)


async def test_compile_shared_two_tiers() -> None:
    cache = SignatureCache()
    clear_cache()
    first = dspex.Signature("topic -> summary: str, words: int")
    compiled, outcome = await compile_shared(first, cache)
    assert outcome == "compiled"
    # the same process again: the local tier answers, the actor is not asked
    calls_before = (await cache.stats())["hits"] + (await cache.stats())["misses"]
    again, outcome = await compile_shared(first, cache)
    assert outcome == "local" and again is compiled
    assert (await cache.stats())["hits"] + (await cache.stats())["misses"] == calls_before
    # "another process": an equal signature class and an empty local cache
    clear_cache()
    second = dspex.Signature("topic -> summary: str, words: int")
    fetched, outcome = await compile_shared(second, cache)
    assert outcome == "fetched"
    assert fetched.hash == compiled.hash and fetched is not compiled
    assert compile_signature(second) is fetched  # installed in the local tier
    stats = await cache.stats()
    assert stats["compiles"] == 1 and stats["hits"] == 1


async def test_compile_shared_releases_the_lock_when_compiling_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    import dspex.actors.shared_signatures as shared

    cache = SignatureCache()
    clear_cache()
    sig = dspex.Signature("x -> y")

    def boom(_sig: Any, _compiled: Any = None) -> Any:
        raise SignatureError("cannot compile")

    monkeypatch.setattr(shared, "build_artifacts", boom)
    with pytest.raises(SignatureError):
        await compile_shared(sig, cache)
    assert (await cache.stats())["locks"] == 0
