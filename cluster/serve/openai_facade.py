"""The OpenAI chat-completions facade over a program (pure mapping, no HTTP).

``POST /v1/chat/completions`` with ``model = "<program>"``: the last user message becomes the
program's inputs, and the program's outputs become the assistant message, so any OpenAI
client calls a DSPy program.

- Inputs: a user message whose text is a JSON object is taken as the inputs (keys = input
  fields); any other text goes to the program's first input field.
- Outputs: a program with one output field (``reasoning`` aside) answers with that field's
  text; with several, with a JSON object of all of them (also when the request asks for
  ``response_format = {"type": "json_object"}``).
- Streaming (``stream: true``): chunks of the first streamed field as ``delta.content``, then
  a final chunk with ``finish_reason = "stop"``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from dspex.errors import ValidationError

__all__ = ["chunk_body", "completion_body", "inputs_from_messages", "message_text"]


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a chat message (a string, or the text parts of a content list)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def inputs_from_messages(messages: Any, input_fields: Sequence[str]) -> dict[str, Any]:
    """The program's inputs from the chat messages (see the module docstring)."""
    if not isinstance(messages, list) or not messages:
        raise ValidationError("messages must be a non-empty list of chat messages.", field="messages", constraint="non-empty")
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise ValidationError("messages has no user message to take the program's inputs from.", field="messages", constraint="user message")
    text = message_text(users[-1])
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and obj and (not input_fields or set(obj) <= set(input_fields)):
            return obj
    if not input_fields:
        raise ValidationError(
            "The program's input fields are unknown, so a plain-text message cannot be mapped; "
            "send a JSON object of the inputs as the user message.",
            field="messages",
            constraint="json inputs",
        )
    return {input_fields[0]: text}


def _content(outputs: Mapping[str, Any], json_mode: bool) -> str:
    shown = {k: v for k, v in outputs.items() if k != "reasoning"} or dict(outputs)
    if len(shown) == 1 and not json_mode:
        value = next(iter(shown.values()))
        return value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(dict(outputs), default=str)


def completion_body(
    model: str, outputs: Mapping[str, Any], *, json_mode: bool = False, request_id: str | None = None
) -> dict[str, Any]:
    """A ``chat.completion`` object carrying the program's outputs."""
    return {
        "id": f"chatcmpl-{request_id or uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": _content(outputs, json_mode)},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def chunk_body(model: str, request_id: str, *, content: str | None = None, finish: bool = False, role: bool = False) -> dict[str, Any]:
    """One ``chat.completion.chunk`` of a streamed reply."""
    delta: dict[str, Any] = {}
    if role:
        delta["role"] = "assistant"
    if content is not None:
        delta["content"] = content
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": "stop" if finish else None, "logprobs": None}],
    }
