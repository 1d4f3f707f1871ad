"""One endpoint's resilience: its rate limiter and circuit breaker, and the retry loop that
drives a call through them. Endpoints are shared in the process by endpoint id, so every LM
object talking to the same provider URL and model shares one limiter and one breaker."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from dspex import telemetry
from dspex.clients.resilience.breaker import BreakerConfig, CircuitBreaker, Outcome, outcome_of
from dspex.clients.resilience.rate_limiter import RateLimiter
from dspex.clients.resilience.retry import RetryPolicy
from dspex.errors import CircuitOpen, ProviderError
from dspex.telemetry import names

__all__ = ["CallStats", "Endpoint", "endpoint_for", "reset_endpoints"]

T = TypeVar("T")


@dataclass(slots=True)
class CallStats:
    retries: int = 0
    waited_s: float = 0.0  # rate limiter + backoff


class Endpoint:
    def __init__(
        self,
        endpoint_id: str,
        *,
        rpm: float | None = None,
        tpm: float | None = None,
        breaker: BreakerConfig | None = None,
        max_wait_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.id = endpoint_id
        self.clock = clock
        self.sleep = sleep
        self.limiter = RateLimiter(rpm, tpm, max_wait_s=max_wait_s, clock=clock, sleep=sleep, name=endpoint_id)
        self.breaker = CircuitBreaker(breaker, clock=clock, name=endpoint_id)

    async def run(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        retry: RetryPolicy,
        provider: str,
        model: str,
        tokens_estimate: int = 0,
        tokens_used: Callable[[T], int] | None = None,
        stats: CallStats | None = None,
    ) -> T:
        """Run ``attempt`` through breaker, limiter and retries; raise the last error."""
        stats = stats if stats is not None else CallStats()
        last: ProviderError | None = None
        n = 0
        while True:
            try:
                probe = self.breaker.allow(provider=provider, model=model)
            except CircuitOpen as exc:
                if last is not None:
                    raise exc from last
                raise
            try:
                stats.waited_s += await self.limiter.acquire(tokens_estimate, provider=provider, model=model)
            except BaseException:
                # The local limiter refusing (it would wait past max_wait_s) is final: retrying
                # would only wait longer than the caller allowed.
                self.breaker.record(Outcome.NEUTRAL, probe=probe)
                raise
            try:
                result = await attempt()
            except ProviderError as exc:
                self.breaker.record(outcome_of(exc), probe=probe)
                last = exc
                delay = retry.delay_s(n, exc)
                if delay is None:
                    raise
                telemetry.emit(
                    names.PROVIDER_RETRY,
                    {"delay_s": delay, "attempt": n + 1},
                    {"endpoint": self.id, "provider": provider, "model": model, "reason": _snake(type(exc).__name__),
                     "status": exc.fields.get("status")},
                )
                n += 1
                stats.retries = n
                stats.waited_s += delay
                await self.sleep(delay)
                continue
            except BaseException:
                self.breaker.record(Outcome.NEUTRAL, probe=probe)
                raise
            self.breaker.record(Outcome.SUCCESS, probe=probe)
            if tokens_used is not None and self.limiter.tokens is not None:
                self.limiter.settle(tokens_estimate, tokens_used(result))
            return result


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


_lock = threading.Lock()
_endpoints: dict[str, Endpoint] = {}


def endpoint_for(
    endpoint_id: str,
    *,
    rpm: float | None = None,
    tpm: float | None = None,
    breaker: BreakerConfig | None = None,
    max_wait_s: float | None = None,
) -> Endpoint:
    """The process's shared ``Endpoint`` for this id. Limits given here replace earlier ones
    (the last LM configured with explicit limits for an endpoint sets them)."""
    with _lock:
        ep = _endpoints.get(endpoint_id)
        if ep is None:
            ep = Endpoint(endpoint_id, rpm=rpm, tpm=tpm, breaker=breaker, max_wait_s=max_wait_s or 60.0)
            _endpoints[endpoint_id] = ep
            return ep
        if (rpm, tpm) != (None, None) and (rpm, tpm) != (ep.limiter.rpm, ep.limiter.tpm):
            ep.limiter.configure(rpm, tpm)
        if breaker is not None and breaker != ep.breaker.config:
            ep.breaker.config = breaker
        if max_wait_s is not None:
            ep.limiter.max_wait_s = max_wait_s
        return ep


def reset_endpoints() -> None:
    """Forget every endpoint's limiter and breaker state (tests; a process restart does the same)."""
    with _lock:
        _endpoints.clear()
