"""Assemble stream chunks into the ``LMResponse`` the same call would have returned unstreamed."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from dspex.clients.base_lm import Choice, LMResponse, ToolCall, Usage
from dspex.clients.wire._types import StreamChunk
from dspex.errors import BadResponse

__all__ = ["StreamAssembler", "parse_arguments"]


def parse_arguments(raw: str | dict[str, Any] | None, *, provider: str, model: str) -> dict[str, Any]:
    """A tool call's arguments: JSON text (OpenAI) or an object (Anthropic) -> dict."""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise BadResponse(
            f"{provider} model {model!r} returned tool call arguments that are not valid JSON: {raw[:200]!r}.",
            provider=provider,
            model=model,
            provider_message="invalid tool call arguments",
        ) from exc
    if not isinstance(value, dict):
        raise BadResponse(
            f"{provider} model {model!r} returned tool call arguments that are not a JSON object.",
            provider=provider,
            model=model,
        )
    return value


@dataclass(slots=True)
class _Partial:
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tools: dict[int, list[str | None]] = field(default_factory=dict)  # index -> [id, name, args...]
    finish_reason: str | None = None


class StreamAssembler:
    """Feed it every chunk; ``response()`` builds the final ``LMResponse``."""

    def __init__(self, *, provider: str, model: str, structured_tool: str | None = None) -> None:
        self.provider = provider
        self.model = model
        self.structured_tool = structured_tool
        self.response_model = model
        self.request_id = ""
        self.usage: Usage | None = None
        #: wire-specific state kept between stream events (e.g. Anthropic's input token count)
        self.state: dict[str, Any] = {}
        self._choices: dict[int, _Partial] = {}

    def add(self, chunk: StreamChunk) -> None:
        part = self._choices.setdefault(chunk.index, _Partial())
        if chunk.text:
            part.text.append(chunk.text)
        if chunk.reasoning:
            part.reasoning.append(chunk.reasoning)
        for delta in chunk.tool_calls:
            slot = part.tools.setdefault(delta.index, [None, None])
            if delta.id:
                slot[0] = delta.id
            if delta.name:
                slot[1] = delta.name
            if delta.arguments:
                slot.append(delta.arguments)
        if chunk.finish_reason:
            part.finish_reason = chunk.finish_reason
        if chunk.usage is not None:
            self.usage = chunk.usage

    def text(self, index: int = 0) -> str:
        part = self._choices.get(index)
        return "".join(part.text) if part else ""

    def response(self) -> LMResponse:
        choices: list[Choice] = []
        for index in sorted(self._choices) or [0]:
            part = self._choices.get(index, _Partial())
            calls = [
                ToolCall(
                    name=str(slot[1] or ""),
                    arguments=parse_arguments(
                        "".join(s for s in slot[2:] if s), provider=self.provider, model=self.model
                    ),
                    id=str(slot[0] or ""),
                )
                for _, slot in sorted(part.tools.items())
            ]
            text: str | None = "".join(part.text)
            finish = part.finish_reason
            if self.structured_tool and calls and calls[0].name == self.structured_tool:
                text, calls, finish = json.dumps(calls[0].arguments), [], "stop"
            elif calls and not text:
                text = None
            choices.append(
                Choice(
                    text=text,
                    tool_calls=calls or None,
                    finish_reason=finish,
                    reasoning_content="".join(part.reasoning) or None,
                )
            )
        return LMResponse(
            model=self.response_model,
            choices=choices,
            usage=self.usage or Usage(estimated=True),  # absent: the LM estimates it
            provider=self.provider,
            request_id=self.request_id,
        )
