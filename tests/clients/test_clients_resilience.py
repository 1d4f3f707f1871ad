"""Retry decisions, the circuit breaker and the rate limiter, driven by a virtual clock."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest
from fixtures.clients import Captured, Recorder, VirtualClock, openai_reply

from dspex.clients import (
    LM,
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    Endpoint,
    RateLimiter,
    RetryPolicy,
)
from dspex.clients.resilience import Outcome, TokenBucket, endpoint_for, outcome_of
from dspex.errors import (
    AuthenticationError,
    BadRequest,
    BadResponse,
    CircuitOpen,
    ConfigurationError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from dspex.telemetry import names

# -- retry policy --------------------------------------------------------------------------------


def test_backoff_grows_exponentially_with_bounded_jitter() -> None:
    policy = RetryPolicy(num_retries=5, base_delay_s=1.0, multiplier=2.0, max_delay_s=10.0, jitter=0.5, rng=random.Random(1))
    err = ProviderUnavailable("down", status=503)
    delays = [policy.delay_s(k, err) for k in range(5)]
    for k, d in enumerate(delays):
        full = min(10.0, 2.0**k)
        assert d is not None and full * 0.5 <= d <= full
    assert policy.delay_s(5, err) is None  # retries exhausted


def test_no_jitter_is_exact() -> None:
    policy = RetryPolicy(num_retries=3, base_delay_s=0.5, jitter=0.0)
    assert [policy.delay_s(k, ProviderTimeout("t")) for k in range(3)] == [0.5, 1.0, 2.0]


@pytest.mark.parametrize(
    ("err", "retry"),
    [
        (RateLimited("429", status=429), True),
        (ProviderUnavailable("503", status=503), True),
        (ProviderTimeout("t"), True),
        (BadResponse("garbled"), True),
        (BadRequest("400", status=400), False),
        (AuthenticationError("401", status=401), False),
        (CircuitOpen("open"), False),
        (ValueError("not a provider error"), False),
    ],
)
def test_only_retryable_failures_are_retried(err: Exception, retry: bool) -> None:
    assert (RetryPolicy(jitter=0).delay_s(0, err) is not None) is retry


def test_retry_after_is_honoured_and_capped() -> None:
    policy = RetryPolicy(num_retries=3, base_delay_s=0.1, max_retry_after_s=30)
    assert policy.delay_s(0, RateLimited("429", retry_after_s=12.5)) == 12.5
    assert policy.delay_s(0, RateLimited("429", retry_after_s=0.0)) == 0.0
    assert policy.delay_s(0, RateLimited("429", retry_after_s=31)) is None


def test_bad_retry_policy() -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(num_retries=-1)
    with pytest.raises(ConfigurationError):
        RetryPolicy(jitter=2)


def _lm(rec: Recorder, clock: VirtualClock, **kwargs: object) -> LM:
    ep = Endpoint("test", clock=clock, sleep=clock.sleep, breaker=kwargs.pop("breaker", None))  # type: ignore[arg-type]
    return LM("openai/gpt-4o-mini", api_key="k", cache=False, http_transport=rec.transport(), endpoint=ep, **kwargs)  # type: ignore[arg-type]


async def test_lm_retries_5xx_then_succeeds(client_events: Captured) -> None:
    clock = VirtualClock(auto=True)
    rec = Recorder(replies=[httpx.Response(503, json={"error": {"message": "busy"}}), httpx.Response(500, text="oops")],
                   default=lambda r: httpx.Response(200, json=openai_reply("fine")))
    lm = _lm(rec, clock, retry=RetryPolicy(num_retries=3, base_delay_s=1.0, jitter=0.0))
    assert await lm.acall(prompt="hi") == ["fine"]
    assert len(rec.requests) == 3
    assert clock.sleeps == [1.0, 2.0]
    retries = client_events.of(names.PROVIDER_RETRY)
    assert [m["attempt"] for m, _ in retries] == [1, 2]
    assert [md["reason"] for _, md in retries] == ["provider_unavailable", "provider_unavailable"]
    assert len(client_events.of(names.exception(names.PROVIDER_REQUEST))) == 2
    stops = client_events.of(names.stop(names.PROVIDER_REQUEST))
    assert len(stops) == 1 and stops[0][0]["retries"] == 2 and stops[0][1]["outcome"] == "ok"
    assert [md["status"] for _, md in client_events.of(names.PROVIDER_RESPONSE)] == [503, 500, 200]


async def test_lm_honours_retry_after_on_429() -> None:
    clock = VirtualClock(auto=True)
    rec = Recorder(replies=[httpx.Response(429, json={"error": {"message": "rate"}}, headers={"retry-after": "4"})],
                   default=lambda r: httpx.Response(200, json=openai_reply("ok")))
    lm = _lm(rec, clock)
    assert await lm.acall(prompt="hi") == ["ok"]
    assert clock.sleeps == [4.0]


async def test_lm_gives_up_after_num_retries_with_the_last_error() -> None:
    clock = VirtualClock(auto=True)
    rec = Recorder(default=lambda r: httpx.Response(502, json={"error": {"message": "bad gateway"}}))
    lm = _lm(rec, clock, num_retries=2)
    with pytest.raises(ProviderUnavailable, match="bad gateway"):
        await lm.acall(prompt="hi")
    assert len(rec.requests) == 3 and len(clock.sleeps) == 2


async def test_lm_does_not_retry_client_errors() -> None:
    clock = VirtualClock(auto=True)
    rec = Recorder(default=lambda r: httpx.Response(400, json={"error": {"message": "bad param"}}))
    with pytest.raises(BadRequest):
        await _lm(rec, clock).acall(prompt="hi")
    assert len(rec.requests) == 1 and clock.sleeps == []


async def test_connection_errors_are_retried() -> None:
    clock = VirtualClock(auto=True)
    rec = Recorder(replies=[httpx.ConnectError("refused"), httpx.ReadTimeout("slow")],
                   default=lambda r: httpx.Response(200, json=openai_reply("back")))
    assert await _lm(rec, clock, retry=RetryPolicy(jitter=0)).acall(prompt="x") == ["back"]
    assert clock.sleeps == [0.5, 1.0]


# -- circuit breaker ------------------------------------------------------------------------------


def test_breaker_opens_after_threshold_and_half_opens_after_duration(client_events: Captured) -> None:
    clock = VirtualClock()
    br = CircuitBreaker(BreakerConfig(failure_threshold=3, open_duration_s=10, half_open_probes=2), clock=clock, name="ep")
    for _ in range(2):
        assert br.allow() is False
        br.record(Outcome.FAILURE)
    br.allow()
    br.record(Outcome.SUCCESS)  # a success resets the consecutive count
    for _ in range(3):
        br.allow()
        br.record(Outcome.FAILURE)
    assert br.state is BreakerState.OPEN
    with pytest.raises(CircuitOpen) as info:
        br.allow(provider="openai", model="m")
    assert info.value.retry_after_s == pytest.approx(10.0) and info.value.provider == "openai"
    clock.advance(4)
    with pytest.raises(CircuitOpen) as info2:
        br.allow()
    assert info2.value.retry_after_s == pytest.approx(6.0)
    clock.advance(6)
    assert br.state is BreakerState.HALF_OPEN
    assert br.allow() is True and br.allow() is True  # two probes
    with pytest.raises(CircuitOpen, match="probes are in flight"):
        br.allow()
    br.record(Outcome.SUCCESS, probe=True)
    assert br.state is BreakerState.HALF_OPEN
    br.record(Outcome.SUCCESS, probe=True)
    assert br.state is BreakerState.CLOSED
    states = [md["state"] for _, md in client_events.of(names.BREAKER_STATE)]
    assert states == ["open", "half_open", "closed"]
    assert all(md["breaker"] == "ep" for _, md in client_events.of(names.BREAKER_STATE))


def test_breaker_probe_failure_reopens() -> None:
    clock = VirtualClock()
    br = CircuitBreaker(BreakerConfig(failure_threshold=1, open_duration_s=5), clock=clock)
    br.allow()
    br.record(Outcome.FAILURE)
    clock.advance(5)
    assert br.allow() is True
    br.record(Outcome.FAILURE, probe=True)
    assert br.state is BreakerState.OPEN
    clock.advance(4.9)
    assert br.state is BreakerState.OPEN
    clock.advance(0.1)
    assert br.state is BreakerState.HALF_OPEN


def test_breaker_neutral_probe_frees_the_slot() -> None:
    clock = VirtualClock()
    br = CircuitBreaker(BreakerConfig(failure_threshold=1, open_duration_s=1), clock=clock)
    br.allow()
    br.record(Outcome.FAILURE)
    clock.advance(1)
    assert br.allow() is True
    br.record(Outcome.NEUTRAL, probe=True)
    assert br.state is BreakerState.HALF_OPEN and br.allow() is True


def test_what_counts_as_failure() -> None:
    assert outcome_of(None) is Outcome.SUCCESS
    assert outcome_of(ProviderUnavailable("x")) is Outcome.FAILURE
    assert outcome_of(ProviderTimeout("x")) is Outcome.FAILURE
    assert outcome_of(RateLimited("x")) is Outcome.NEUTRAL
    assert outcome_of(BadRequest("x")) is Outcome.SUCCESS
    with pytest.raises(ConfigurationError):
        BreakerConfig(failure_threshold=0)


async def test_lm_breaker_short_circuits_then_recovers() -> None:
    clock = VirtualClock(auto=True)
    rec = Recorder(default=lambda r: httpx.Response(503, json={"error": {"message": "down"}}))
    lm = _lm(rec, clock, num_retries=0, breaker=BreakerConfig(failure_threshold=2, open_duration_s=30))
    for _ in range(2):
        with pytest.raises(ProviderUnavailable):
            await lm.acall(prompt="x")
    with pytest.raises(CircuitOpen) as info:
        await lm.acall(prompt="x")
    assert info.value.model == "gpt-4o-mini" and len(rec.requests) == 2  # no request sent
    clock.now += 30
    rec.default = lambda r: httpx.Response(200, json=openai_reply("up"))
    assert await lm.acall(prompt="x") == ["up"]
    assert lm.endpoint.breaker.state is BreakerState.CLOSED


async def test_breaker_opening_mid_retries_chains_the_last_failure() -> None:
    clock = VirtualClock(auto=True)
    rec = Recorder(default=lambda r: httpx.Response(500, json={"error": {"message": "boom"}}))
    lm = _lm(rec, clock, num_retries=5, breaker=BreakerConfig(failure_threshold=2, open_duration_s=60))
    with pytest.raises(CircuitOpen) as info:
        await lm.acall(prompt="x")
    assert isinstance(info.value.__cause__, ProviderUnavailable)
    assert len(rec.requests) == 2


def test_endpoints_are_shared_by_id() -> None:
    a = LM("openai/m", api_base="http://127.0.0.1:9/v1", rpm=60)
    b = LM("openai/m", api_base="http://127.0.0.1:9/v1")
    c = LM("openai/other", api_base="http://127.0.0.1:9/v1")
    assert a.endpoint is b.endpoint and a.endpoint is not c.endpoint
    assert b.endpoint.limiter.rpm == 60
    assert endpoint_for(a.spec.endpoint_id, rpm=120).limiter.rpm == 120


# -- rate limiter ----------------------------------------------------------------------------------


def test_token_bucket_pacing() -> None:
    b = TokenBucket(rate_per_s=2.0, capacity=2.0, now_s=0.0)
    assert [b.reserve(1, 0.0) for _ in range(4)] == [0.0, 0.0, 0.5, 1.0]
    assert b.wait_s(1, 1.0) == 0.5  # the queue drains at 2 per second
    with pytest.raises(ConfigurationError):
        TokenBucket(0, 1, 0)


async def test_limiter_holds_rpm_under_concurrency(client_events: Captured) -> None:
    clock = VirtualClock()
    limiter = RateLimiter(rpm=120, clock=clock, sleep=clock.sleep, name="ep")  # 2/s, burst 2
    started: list[float] = []

    async def call() -> None:
        await limiter.acquire()
        started.append(clock())

    await clock.drive(*[call() for _ in range(50)])
    assert len(started) == 50
    t0 = started[0]
    # in every 60 s window at most rpm + burst requests start, and the last starts at 24 s
    assert started[-1] - t0 == pytest.approx(24.0)
    for t in started:
        assert sum(1 for u in started if t <= u < t + 1.0) <= 2 + 1
    waits = client_events.of(names.RATE_LIMIT_WAIT)
    assert len(waits) == 48 and all(md["limit"] == "requests" for _, md in waits)


async def test_limiter_tokens_per_minute_and_settle() -> None:
    clock = VirtualClock()
    limiter = RateLimiter(tpm=6000, clock=clock, sleep=clock.sleep)  # 100 tokens/s, burst 100
    assert await limiter.acquire(100) == 0.0
    waited = (await clock.drive(limiter.acquire(300)))[0]
    assert waited == pytest.approx(3.0)
    # the call used only 50 of its 300: the rest comes back
    limiter.settle(300, 50)
    assert limiter.tokens is not None and limiter.tokens.level == pytest.approx(100.0)


async def test_limiter_refuses_past_max_wait() -> None:
    clock = VirtualClock()
    limiter = RateLimiter(rpm=60, max_wait_s=2.5, clock=clock, sleep=clock.sleep, name="ep")
    await limiter.acquire()
    tasks = [asyncio.ensure_future(limiter.acquire(provider="openai", model="m")) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(RateLimited) as info:
        await limiter.acquire(provider="openai", model="m")
    assert info.value.retry_after_s == pytest.approx(3.0) and info.value.model == "m"
    clock.advance(3)
    await asyncio.gather(*tasks)


async def test_cancelled_waiter_gives_its_slot_back() -> None:
    clock = VirtualClock()
    limiter = RateLimiter(rpm=60, clock=clock, sleep=clock.sleep)
    await limiter.acquire()
    waiter = asyncio.ensure_future(limiter.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limiter.requests is not None
    assert limiter.requests.wait_s(1, clock()) == pytest.approx(1.0)  # not 2.0


async def test_lm_rate_limited_through_endpoint() -> None:
    clock = VirtualClock()
    rec = Recorder(default=lambda r: httpx.Response(200, json=openai_reply("ok")))
    ep = Endpoint("rl", rpm=60, clock=clock, sleep=clock.sleep)
    lm = LM("openai/gpt-4o-mini", api_key="k", cache=False, http_transport=rec.transport(), endpoint=ep)
    t0 = clock()
    await clock.drive(*[lm.acall(prompt=str(i)) for i in range(5)])
    assert len(rec.requests) == 5
    assert clock() - t0 == pytest.approx(4.0)  # 1 per second, burst 1


async def test_local_limiter_refusal_is_not_retried() -> None:
    clock = VirtualClock(auto=True)
    rec = Recorder(default=lambda r: httpx.Response(200, json=openai_reply("ok")))
    ep = Endpoint("rl2", rpm=6, max_wait_s=5.0, clock=clock, sleep=clock.sleep)  # one per 10 s
    lm = LM("openai/gpt-4o-mini", api_key="k", cache=False, http_transport=rec.transport(), endpoint=ep)
    await lm.acall(prompt="a")
    with pytest.raises(RateLimited, match=r"max_wait_s=5\.0") as info:
        await lm.acall(prompt="b")
    assert info.value.retry_after_s == pytest.approx(10.0)
    assert clock.sleeps == [] and len(rec.requests) == 1
