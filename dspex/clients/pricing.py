"""Prices per model (USD per 1M input / output tokens), cost per call, and a token estimate.

The built-in table holds list prices of common OpenAI and Anthropic models (standard tier, no
batch or cached-input discounts). Dated snapshots match their family by prefix
(``gpt-4o-mini-2024-07-18`` -> ``gpt-4o-mini``). Users and the simulator add their own with
``register_price``; a registration wins over the table.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from dspex.errors import ConfigurationError

__all__ = ["Price", "cost_usd", "estimate_tokens", "price_for", "register_price"]


@dataclass(frozen=True, slots=True)
class Price:
    input_per_1m_usd: float
    output_per_1m_usd: float

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_1m_usd + completion_tokens * self.output_per_1m_usd) / 1_000_000


_BUILTIN: dict[str, tuple[float, float]] = {
    # OpenAI
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-4": (30.00, 60.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "o1": (15.00, 60.00),
    "o1-mini": (1.10, 4.40),
    "o3": (2.00, 8.00),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    # Anthropic
    "claude-opus-4-5": (5.00, 25.00),
    "claude-opus-4-1": (15.00, 75.00),
    "claude-opus-4": (15.00, 75.00),
    "claude-sonnet-4-5": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-opus": (15.00, 75.00),
    "claude-3-haiku": (0.25, 1.25),
}

_lock = threading.Lock()
_registered: dict[str, Price] = {}
# (model, provider) -> price, for the lookups of every call; cleared when a price is registered
_memo: dict[tuple[str, str | None], Price | None] = {}
_SEPARATORS = ("-", "@", ":", ".")


def register_price(model: str, input_per_1m_usd: float, output_per_1m_usd: float) -> None:
    """Set the price of ``model`` (a bare name or "provider/name") in USD per 1M tokens."""
    if not model or input_per_1m_usd < 0 or output_per_1m_usd < 0:
        raise ConfigurationError(
            f"register_price needs a model name and non-negative prices; got {model!r}, "
            f"{input_per_1m_usd}, {output_per_1m_usd}."
        )
    with _lock:
        _registered[model] = Price(float(input_per_1m_usd), float(output_per_1m_usd))
        _memo.clear()


def unregister_price(model: str) -> None:
    with _lock:
        _registered.pop(model, None)
        _memo.clear()


def _longest_prefix(name: str, table: Iterable[str]) -> str | None:
    best: str | None = None
    for key in table:
        if name == key or (name.startswith(key) and name[len(key)] in _SEPARATORS):
            if best is None or len(key) > len(best):
                best = key
    return best


def price_for(model: str, provider: str | None = None) -> Price | None:
    """The price of ``model``: a registration for "provider/model", then for "model", then
    the built-in table; exact names first, then the longest family prefix. None if unknown."""
    key = (model, provider)
    if key in _memo:
        return _memo[key]
    price = _lookup(model, provider)
    if len(_memo) < 10_000:
        _memo[key] = price
    return price


def _lookup(model: str, provider: str | None) -> Price | None:
    bare = model.split("/", 1)[1] if "/" in model and model.split("/", 1)[0] == provider else model
    names = [f"{provider}/{bare}", bare] if provider else [bare]
    registered = dict(_registered)
    for name in names:
        if name in registered:
            return registered[name]
    for name in names:
        key = _longest_prefix(name, registered)
        if key is not None:
            return registered[key]
    key = _longest_prefix(bare, _BUILTIN)
    return Price(*_BUILTIN[key]) if key is not None else None


def cost_usd(model: str, prompt_tokens: int, completion_tokens: int, provider: str | None = None) -> float | None:
    price = price_for(model, provider)
    return None if price is None else price.cost_usd(prompt_tokens, completion_tokens)


def estimate_tokens(value: Any) -> int:
    """About four characters per token (OpenAI's rule of thumb) over the text in ``value``."""
    chars = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            chars += len(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif item is not None:
            chars += len(str(item))
    return math.ceil(chars / 4)
