"""What both wire formats share: the request shape, refusals, value checks, SSE framing."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from dspex.sim.responder import Sampling

__all__ = [
    "WireError",
    "WireRequest",
    "check_float",
    "check_int",
    "check_model",
    "split_chunks",
    "sse",
    "tokens",
]


class WireError(Exception):
    """A request the server refuses; rendered as the vendor's JSON error body."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(status, message, param, code)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


@dataclass
class WireRequest:
    api: str
    model: str
    messages: list[dict[str, Any]]
    system: Any
    sampling: Sampling
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None


def check_int(body: dict[str, Any], name: str, lo: int, hi: int | None = None) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise WireError(
            400, f"Invalid value for '{name}': expected an integer {bound}, got {v!r}.", param=name
        )
    return v


def check_float(body: dict[str, Any], name: str, lo: float, hi: float) -> float | None:
    v = body.get(name)
    if v is None:
        return None
    if not isinstance(v, int | float) or isinstance(v, bool) or not lo <= v <= hi:
        raise WireError(
            400,
            f"Invalid value for '{name}': expected a number between {lo} and {hi}, got {v!r}.",
            param=name,
        )
    return float(v)


def check_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise WireError(
            400, "You must provide a model parameter (a non-empty string).", param="model"
        )
    return model


_PIECE_RE = re.compile(r"\S*\s*")


def split_chunks(text: str, words: int = 4) -> list[str]:
    """Pieces of ``words`` words (with their whitespace) that join to exactly ``text``."""
    pieces = [p for p in _PIECE_RE.findall(text) if p]
    return ["".join(pieces[i : i + words]) for i in range(0, len(pieces), words)] or [""]


def sse(obj: dict[str, Any], event: str | None = None) -> bytes:
    data = json.dumps(obj, ensure_ascii=False)
    return (f"event: {event}\ndata: {data}\n\n" if event else f"data: {data}\n\n").encode()


def tokens(text: str) -> int:
    return (len(text) + 3) // 4
