"""Per-endpoint resilience: rate limiter, circuit breaker, retry policy (pure, clock-injected)."""

from dspex.clients.resilience.breaker import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    Outcome,
    outcome_of,
)
from dspex.clients.resilience.endpoint import CallStats, Endpoint, endpoint_for, reset_endpoints
from dspex.clients.resilience.rate_limiter import RateLimiter, TokenBucket
from dspex.clients.resilience.retry import RetryPolicy

__all__ = [
    "BreakerConfig",
    "BreakerState",
    "CallStats",
    "CircuitBreaker",
    "Endpoint",
    "Outcome",
    "RateLimiter",
    "RetryPolicy",
    "TokenBucket",
    "endpoint_for",
    "outcome_of",
    "reset_endpoints",
]
