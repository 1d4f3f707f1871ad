"""Anthropic messages: reading requests, writing replies, streams (with ``event:`` lines) and
error bodies."""

from __future__ import annotations

import json
from typing import Any

from dspex.sim.responder import ChoiceOut, Sampling, ToolSpec
from dspex.sim.wire.common import (
    WireError,
    WireRequest,
    check_float,
    check_int,
    check_model,
    split_chunks,
    sse,
    tokens,
)

__all__ = ["anthropic_error", "anthropic_message", "anthropic_stream", "parse_anthropic"]


def parse_anthropic(body: Any) -> WireRequest:
    if not isinstance(body, dict):
        raise WireError(400, "The request body must be a JSON object.")
    model = check_model(body)
    max_tokens = check_int(body, "max_tokens", 1)
    if max_tokens is None:
        raise WireError(400, "max_tokens: Field required", param="max_tokens")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise WireError(400, "messages: must be a non-empty list", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise WireError(
                400,
                f"messages.{i}.role: Input should be 'user' or 'assistant'",
                param=f"messages.{i}",
            )
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise WireError(
            400, "system: Input should be a string or a list of text blocks", param="system"
        )
    temperature = check_float(body, "temperature", 0.0, 1.0)
    tools: list[ToolSpec] = []
    raw_tools = body.get("tools") or []
    if not isinstance(raw_tools, list):
        raise WireError(400, "tools: Input should be a valid list", param="tools")
    for i, t in enumerate(raw_tools):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise WireError(400, f"tools.{i}.name: Field required", param=f"tools.{i}")
        tools.append(
            ToolSpec(t["name"], str(t.get("description", "")), t.get("input_schema") or {})
        )
    choice = "auto"
    tc = body.get("tool_choice")
    if tc is not None:
        kind = tc.get("type") if isinstance(tc, dict) else None
        if kind == "tool":
            if tc.get("name") not in {t.name for t in tools}:
                raise WireError(
                    400,
                    f"tool_choice.name: no tool named {tc.get('name')!r} in tools",
                    param="tool_choice",
                )
            choice = str(tc["name"])
        elif kind in ("auto", "none"):
            choice = str(kind)
        elif kind == "any":
            choice = "required"
        else:
            raise WireError(
                400,
                "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'",
                param="tool_choice",
            )
    of = body.get("output_format")
    response_format = None
    if isinstance(of, dict) and of.get("type") == "json_schema":
        response_format = {"type": "json_schema", "schema": of.get("schema") or {}}
    return WireRequest(
        api="anthropic",
        model=model,
        messages=messages,
        system=system,
        sampling=Sampling(
            n=1,
            temperature=1.0 if temperature is None else temperature,
            response_format=response_format,
            tools=tools if choice != "none" else [],
            tool_choice=choice if choice != "none" else "auto",
        ),
        stream=body.get("stream") is True,
        max_tokens=max_tokens,
    )


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_error(status: int, message: str, request_id: str) -> dict[str, Any]:
    kind = _ANTHROPIC_TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}


def _stop_reason(c: ChoiceOut) -> str:
    if c.tool_calls:
        return "tool_use"
    return "max_tokens" if c.finish_reason == "length" else "end_turn"


def _blocks(c: ChoiceOut) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if c.text:
        blocks.append({"type": "text", "text": c.text})
    for t in c.tool_calls:
        blocks.append(
            {
                "type": "tool_use",
                "id": t.id.replace("call_", "toolu_", 1),
                "name": t.name,
                "input": json.loads(t.arguments),
            }
        )
    return blocks


def _anthropic_usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt_tokens,
        "output_tokens": completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def anthropic_message(
    rid: str, model: str, c: ChoiceOut, prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    return {
        "id": rid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _blocks(c),
        "stop_reason": _stop_reason(c),
        "stop_sequence": None,
        "usage": _anthropic_usage(prompt_tokens, completion_tokens),
    }


def anthropic_stream(
    rid: str, model: str, c: ChoiceOut, prompt_tokens: int, completion_tokens: int
) -> list[tuple[int, bytes]]:
    start: dict[str, Any] = {
        "id": rid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _anthropic_usage(prompt_tokens, 1),
    }
    events: list[tuple[int, bytes]] = [
        (0, sse({"type": "message_start", "message": start}, "message_start")),
        (0, sse({"type": "ping"}, "ping")),
    ]
    for i, block in enumerate(_blocks(c)):
        if block["type"] == "text":
            events.append(
                (
                    0,
                    sse(
                        {
                            "type": "content_block_start",
                            "index": i,
                            "content_block": {"type": "text", "text": ""},
                        },
                        "content_block_start",
                    ),
                )
            )
            for piece in split_chunks(block["text"]):
                delta = {
                    "type": "content_block_delta",
                    "index": i,
                    "delta": {"type": "text_delta", "text": piece},
                }
                events.append((tokens(piece), sse(delta, "content_block_delta")))
        else:
            head = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            events.append(
                (
                    0,
                    sse(
                        {"type": "content_block_start", "index": i, "content_block": head},
                        "content_block_start",
                    ),
                )
            )
            for piece in split_chunks(json.dumps(block["input"], ensure_ascii=False), 6):
                delta = {
                    "type": "content_block_delta",
                    "index": i,
                    "delta": {"type": "input_json_delta", "partial_json": piece},
                }
                events.append((tokens(piece), sse(delta, "content_block_delta")))
        events.append((0, sse({"type": "content_block_stop", "index": i}, "content_block_stop")))
    end = {
        "type": "message_delta",
        "delta": {"stop_reason": _stop_reason(c), "stop_sequence": None},
        "usage": {"output_tokens": completion_tokens},
    }
    events.append((0, sse(end, "message_delta")))
    events.append((0, sse({"type": "message_stop"}, "message_stop")))
    return events
