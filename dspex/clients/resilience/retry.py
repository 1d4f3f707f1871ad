"""Retry decisions: exponential backoff with jitter, only for retryable failures, honouring
Retry-After. Pure: the caller sleeps; the random source is injected for tests."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from dspex.errors import ConfigurationError, ProviderError

__all__ = ["RetryPolicy"]


@dataclass(slots=True)
class RetryPolicy:
    """``num_retries`` retries after the first attempt (DSPy's default is 3).

    Backoff for attempt k (0-based) is ``min(max_delay_s, base_delay_s * multiplier**k)``, of
    which the fraction ``jitter`` is drawn uniformly at random so that clients that failed
    together do not retry together. A provider's Retry-After is used as given; one longer than
    ``max_retry_after_s`` is not waited for (the error goes to the caller, e.g. a router that
    can fall back to another model).
    """

    num_retries: int = 3
    base_delay_s: float = 0.5
    multiplier: float = 2.0
    max_delay_s: float = 20.0
    jitter: float = 0.5
    max_retry_after_s: float = 60.0
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if self.num_retries < 0 or self.base_delay_s < 0 or self.multiplier < 1 or not 0 <= self.jitter <= 1:
            raise ConfigurationError(
                "RetryPolicy needs num_retries >= 0, base_delay_s >= 0, multiplier >= 1 and "
                f"0 <= jitter <= 1; got {self}."
            )

    @staticmethod
    def retryable(error: BaseException) -> bool:
        return isinstance(error, ProviderError) and bool(error.retryable)

    def delay_s(self, attempt: int, error: BaseException) -> float | None:
        """Seconds to wait before retry number ``attempt + 1``, or None to give up."""
        if attempt >= self.num_retries or not self.retryable(error):
            return None
        retry_after = getattr(error, "retry_after_s", None)
        if retry_after is not None:
            return float(retry_after) if retry_after <= self.max_retry_after_s else None
        backoff = min(self.max_delay_s, self.base_delay_s * self.multiplier**attempt)
        return backoff * (1.0 - self.jitter) + self.rng.random() * backoff * self.jitter
