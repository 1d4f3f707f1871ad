"""LM clients: ``BaseLM`` (the seam) and ``LM`` (OpenAI-compatible and Anthropic over httpx)."""

from dspex.clients.base_lm import BaseLM, Choice, LMResponse, ToolCall, Usage, inspect_history
from dspex.clients.cache import LMCache, configure_cache, get_cache
from dspex.clients.lm import LM
from dspex.clients.pricing import Price, cost_usd, estimate_tokens, price_for, register_price
from dspex.clients.providers import Capabilities, ProviderSpec, resolve_model
from dspex.clients.resilience import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    Endpoint,
    RateLimiter,
    RetryPolicy,
)
from dspex.clients.transport import PoolLimits, Timeouts
from dspex.clients.wire import Strategy, StreamChunk, ToolCallDelta

__all__ = [
    "LM",
    "BaseLM",
    "BreakerConfig",
    "BreakerState",
    "Capabilities",
    "Choice",
    "CircuitBreaker",
    "Endpoint",
    "LMCache",
    "LMResponse",
    "PoolLimits",
    "Price",
    "ProviderSpec",
    "RateLimiter",
    "RetryPolicy",
    "Strategy",
    "StreamChunk",
    "Timeouts",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
    "configure_cache",
    "cost_usd",
    "estimate_tokens",
    "get_cache",
    "inspect_history",
    "price_for",
    "register_price",
    "resolve_model",
]
