"""Circuit breaker: closed -> open -> half-open -> closed, a pure object with an injected clock.

Closed: calls pass; ``failure_threshold`` consecutive failures open it. Open: calls fail fast
with ``CircuitOpen`` (carrying the time left) for ``open_duration_s``. Half-open: up to
``half_open_probes`` calls go through at once; when that many have succeeded the breaker
closes, and any failure opens it again. Only failures that say the endpoint is unhealthy
(unavailable, timeout) count; a 4xx answer proves the endpoint is up; a 429 counts neither way.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

from dspex import telemetry
from dspex.errors import (
    CircuitOpen,
    ConfigurationError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from dspex.telemetry import names

__all__ = ["BreakerConfig", "BreakerState", "CircuitBreaker", "Outcome", "outcome_of"]



class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Outcome(enum.StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    NEUTRAL = "neutral"


def outcome_of(error: BaseException | None) -> Outcome:
    """What a call's result says about the endpoint's health."""
    if error is None:
        return Outcome.SUCCESS
    if isinstance(error, ProviderUnavailable | ProviderTimeout):
        return Outcome.FAILURE
    if isinstance(error, RateLimited | CircuitOpen):
        return Outcome.NEUTRAL
    if isinstance(error, ProviderError):
        return Outcome.SUCCESS  # the endpoint answered; the request was the problem
    return Outcome.NEUTRAL


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """Defaults: 10 consecutive failures open the breaker for 30 s, then one probe.

    Ten, not the common five: failures are counted per attempt across concurrent callers, and
    at a 20% transient error rate five in a row happen about once per 3,000 attempts, which
    would stall a whole evaluation for a blip; ten in a row at 20% is about one in 10 million.
    """

    failure_threshold: int = 10
    open_duration_s: float = 30.0
    half_open_probes: int = 1

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.half_open_probes < 1 or self.open_duration_s < 0:
            raise ConfigurationError(
                "BreakerConfig needs failure_threshold >= 1, half_open_probes >= 1 and "
                f"open_duration_s >= 0; got {self}."
            )


class CircuitBreaker:
    def __init__(
        self, config: BreakerConfig | None = None, *, clock: Callable[[], float] = time.monotonic, name: str = ""
    ) -> None:
        self.config = config or BreakerConfig()
        self.clock = clock
        self.name = name
        self._state = BreakerState.CLOSED
        self.failures = 0  # consecutive, while closed
        self.opened_at = 0.0
        self.probes_in_flight = 0
        self.probe_successes = 0

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker whose time is up reads as half-open."""
        if self._state is BreakerState.OPEN and self.clock() - self.opened_at >= self.config.open_duration_s:
            self._move(BreakerState.HALF_OPEN, "open duration elapsed")
        return self._state

    def _move(self, to: BreakerState, reason: str) -> None:
        before = self._state
        if before is to:
            return
        self._state = to
        if to is BreakerState.OPEN:
            self.opened_at = self.clock()
        if to is BreakerState.HALF_OPEN:
            self.probes_in_flight = 0
            self.probe_successes = 0
        if to is BreakerState.CLOSED:
            self.failures = 0
        telemetry.emit(
            names.BREAKER_STATE,
            {"count": 1},
            {"breaker": self.name, "state": to.value, "from_state": before.value, "reason": reason},
        )

    def allow(self, *, provider: str | None = None, model: str | None = None) -> bool:
        """Admit a call or raise ``CircuitOpen``. Returns True when the call is a half-open probe
        (the caller must then report it with ``record(..., probe=True)``)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return False
        if state is BreakerState.HALF_OPEN and self.probes_in_flight < self.config.half_open_probes:
            self.probes_in_flight += 1
            return True
        left = max(0.0, self.config.open_duration_s - (self.clock() - self.opened_at))
        raise CircuitOpen(
            f"The circuit breaker for {self.name or 'this endpoint'} is {state.value} after "
            f"{self.config.failure_threshold} consecutive failures; calls fail fast "
            + (f"for {left:.1f} s more." if state is BreakerState.OPEN else "while its probes are in flight."),
            retry_after_s=left,
            provider_message=f"circuit {state.value}",
            breaker_state=state.value,
            provider=provider,
            model=model,
        )

    def record(self, outcome: Outcome, *, probe: bool = False) -> None:
        """Report how an admitted call ended."""
        if probe:
            self.probes_in_flight = max(0, self.probes_in_flight - 1)
            if self._state is not BreakerState.HALF_OPEN:
                return  # another probe already decided
            if outcome is Outcome.FAILURE:
                self._move(BreakerState.OPEN, "half-open probe failed")
            elif outcome is Outcome.SUCCESS:
                self.probe_successes += 1
                if self.probe_successes >= self.config.half_open_probes:
                    self._move(BreakerState.CLOSED, "half-open probes succeeded")
            return
        if self._state is not BreakerState.CLOSED:
            return  # a call admitted before the breaker opened finished late: ignore it
        if outcome is Outcome.FAILURE:
            self.failures += 1
            if self.failures >= self.config.failure_threshold:
                self._move(BreakerState.OPEN, f"{self.failures} consecutive failures")
        elif outcome is Outcome.SUCCESS:
            self.failures = 0
