"""Types shared by the wire formats: the request strategy, a built request, a stream chunk."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from dspex.clients.base_lm import LMResponse, Usage

__all__ = ["Strategy", "StreamChunk", "ToolCallDelta", "WireRequest"]


class Strategy(enum.Enum):
    """How the request asks for the output's shape."""

    PLAIN = "plain"  # text only; the prompt alone says what to produce
    JSON_MODE = "json_mode"  # response_format {"type": "json_object"}
    STRUCTURED = "structured"  # response_format json_schema (or a forced tool on Anthropic)
    TOOLS = "tools"  # function / tool calling


@dataclass(slots=True)
class WireRequest:
    """One HTTP request body, ready to send, plus what the parser needs to read its reply."""

    body: dict[str, Any]
    strategy: Strategy
    #: Anthropic structured output is a forced tool; its input is returned as the reply text
    structured_tool: str | None = None
    #: how many requests of this body to send (a provider without native `n`)
    fan_out: int = 1
    #: a key given for this call only (``lm(..., api_key=...)``); else the LM's own
    secret: Any = None


@dataclass(slots=True)
class ToolCallDelta:
    """A piece of a tool call while streaming; ``arguments`` is a fragment of JSON text."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True)
class StreamChunk:
    """One piece of a streamed reply.

    ``text`` is the new text for choice ``index``; the joined ``text`` of a stream equals the
    non-streamed reply's text. The last chunk has ``done=True`` and carries the assembled
    ``response`` (usage, cost, finish reasons), so a caller never rebuilds it.
    """

    text: str = ""
    index: int = 0
    reasoning: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None
    done: bool = False
    response: LMResponse | None = None
