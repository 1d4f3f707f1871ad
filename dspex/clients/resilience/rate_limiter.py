"""Requests- and tokens-per-minute limiter: token buckets that queue callers instead of failing.

A caller reserves its cost at once (the bucket level may go below zero: that debt is the
queue) and then sleeps until its slot. Reserving before sleeping keeps arrivals in order and
makes the pacing exact under any concurrency. A caller whose wait would pass ``max_wait_s``
gets ``RateLimited`` right away instead of waiting. Token costs are estimates up front;
``settle`` corrects the bucket with the real usage once the reply is in.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable

from dspex import telemetry
from dspex.errors import ConfigurationError, RateLimited
from dspex.telemetry import names

__all__ = ["RateLimiter", "TokenBucket"]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]



class TokenBucket:
    """``rate_per_s`` refill, ``capacity`` burst. Pure: the caller passes the time."""

    def __init__(self, rate_per_s: float, capacity: float, now_s: float) -> None:
        if rate_per_s <= 0 or capacity <= 0:
            raise ConfigurationError(
                f"A rate limit must be positive; got rate {rate_per_s}/s and burst {capacity}."
            )
        self.rate_per_s = rate_per_s
        self.capacity = capacity
        self.level = capacity
        self._t = now_s

    def _refill(self, now_s: float) -> None:
        if now_s > self._t:
            self.level = min(self.capacity, self.level + (now_s - self._t) * self.rate_per_s)
            self._t = now_s

    def wait_s(self, cost: float, now_s: float) -> float:
        """How long a reservation of ``cost`` made now would wait (reserves nothing)."""
        self._refill(now_s)
        return max(0.0, (cost - self.level) / self.rate_per_s)

    def reserve(self, cost: float, now_s: float) -> float:
        """Take ``cost`` now (possibly into debt); returns the wait until it is covered."""
        wait = self.wait_s(cost, now_s)
        self.level -= cost
        return wait

    def give_back(self, cost: float, now_s: float) -> None:
        """Return ``cost`` (negative: take more, e.g. when a call used more tokens than estimated)."""
        self._refill(now_s)
        self.level = min(self.capacity, self.level + cost)


class RateLimiter:
    """Holds ``rpm`` requests and ``tpm`` tokens per minute for one endpoint (either may be None)."""

    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        burst_requests: float | None = None,
        max_wait_s: float = 60.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        name: str = "",
    ) -> None:
        self.clock = clock
        self.sleep = sleep
        self.max_wait_s = max_wait_s
        self.name = name
        # Calls may come from several event loops in several threads (run_sync's loop and the
        # user's); reservations are short and synchronous, so a plain lock keeps them exact.
        self._lock = threading.Lock()
        self.requests: TokenBucket | None = None
        self.tokens: TokenBucket | None = None
        self.configure(rpm, tpm, burst_requests=burst_requests)

    def configure(self, rpm: float | None, tpm: float | None, *, burst_requests: float | None = None) -> None:
        """Set the limits. The burst defaults to one second's worth (at least one request)."""
        now = self.clock()
        self.rpm, self.tpm = rpm, tpm
        self.requests = None if not rpm else TokenBucket(rpm / 60.0, burst_requests or max(1.0, rpm / 60.0), now)
        self.tokens = None if not tpm else TokenBucket(tpm / 60.0, max(1.0, tpm / 60.0), now)

    @property
    def active(self) -> bool:
        return self.requests is not None or self.tokens is not None

    async def acquire(self, tokens: int = 0, *, provider: str | None = None, model: str | None = None) -> float:
        """Wait for one request slot and ``tokens`` tokens; returns the time waited (s)."""
        if not self.active:
            return 0.0
        with self._lock:
            now = self.clock()
            wait_r = self.requests.wait_s(1, now) if self.requests else 0.0
            wait_t = self.tokens.wait_s(tokens, now) if self.tokens and tokens else 0.0
            wait = max(wait_r, wait_t)
            if wait > self.max_wait_s:
                which = "requests" if wait_r >= wait_t else "tokens"
                raise RateLimited(
                    f"The local rate limiter for {self.name or 'this endpoint'} would wait {wait:.1f} s "
                    f"for {which} (limits: rpm={self.rpm}, tpm={self.tpm}), past its "
                    f"max_wait_s={self.max_wait_s}.",
                    retry_after_s=wait,
                    provider_message="local rate limiter",
                    provider=provider,
                    model=model,
                )
            if self.requests:
                self.requests.reserve(1, now)
            if self.tokens and tokens:
                self.tokens.reserve(tokens, now)
        if wait <= 0:
            return 0.0
        telemetry.emit(
            names.RATE_LIMIT_WAIT,
            {"wait_s": wait},
            {"endpoint": self.name, "provider": provider, "model": model,
             "limit": "requests" if wait_r >= wait_t else "tokens"},
        )
        try:
            await self.sleep(wait)
        except asyncio.CancelledError:
            # A cancelled caller gives its slot back so it does not slow the others.
            with self._lock:
                now = self.clock()
                if self.requests:
                    self.requests.give_back(1, now)
                if self.tokens and tokens:
                    self.tokens.give_back(tokens, now)
            raise
        return wait

    def settle(self, reserved_tokens: int, actual_tokens: int) -> None:
        """Correct the token bucket once the real usage of a call is known."""
        if self.tokens is None:
            return
        with self._lock:
            self.tokens.give_back(reserved_tokens - actual_tokens, self.clock())
