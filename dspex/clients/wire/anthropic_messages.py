"""Anthropic messages on the wire: request body, reply, stream events.

OpenAI-shaped messages (what adapters produce) are translated here: system messages become the
top-level ``system``; tool results become ``tool_result`` blocks; image parts become image
blocks. Anthropic has no ``n`` (the LM fans out), no ``response_format`` (structured output is a
forced tool whose input is the reply), and requires ``max_tokens``.
"""

from __future__ import annotations

import json
from typing import Any

from dspex.clients.base_lm import Choice, LMResponse, ToolCall, Usage
from dspex.clients.providers import ProviderSpec
from dspex.clients.wire._types import StreamChunk, ToolCallDelta, WireRequest
from dspex.clients.wire.assemble import StreamAssembler, parse_arguments
from dspex.clients.wire.strategy import Plan
from dspex.errors import BadResponse, ConfigurationError

__all__ = ["DEFAULT_MAX_TOKENS", "build_request", "parse_reply", "parse_stream_event"]

DEFAULT_MAX_TOKENS = 4096

# OpenAI-only sampling settings that Anthropic rejects; dropped rather than failing the call.
_OPENAI_ONLY = frozenset(
    {"seed", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs",
     "parallel_tool_calls", "user", "service_tier_openai", "max_completion_tokens"}
)

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def _blocks(content: Any) -> Any:
    """OpenAI content (text or parts) -> Anthropic content (text or blocks)."""
    if not isinstance(content, list):
        return "" if content is None else content
    blocks: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            url = (part.get("image_url") or {}).get("url", "")
            if url.startswith("data:") and ";base64," in url:
                media, _, data = url[5:].partition(";base64,")
                blocks.append({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}})
            else:
                blocks.append({"type": "image", "source": {"type": "url", "url": url}})
        elif isinstance(part, dict):
            blocks.append(part)  # already Anthropic-shaped
    return blocks


def _convert_messages(messages: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for msg in messages:
        role = msg.get("role")
        if role in ("system", "developer"):
            system.append(_text_of(msg.get("content")))
        elif role == "tool":
            out.append({
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": str(msg.get("tool_call_id", "")),
                             "content": _text_of(msg.get("content"))}],
            })
        elif role == "assistant" and msg.get("tool_calls"):
            blocks: list[dict[str, Any]] = []
            if msg.get("content"):
                blocks.append({"type": "text", "text": _text_of(msg["content"])})
            for tc in msg["tool_calls"]:
                fn = tc.get("function") or {}
                args = fn.get("arguments")
                blocks.append({"type": "tool_use", "id": tc.get("id", ""), "name": fn.get("name", ""),
                               "input": json.loads(args) if isinstance(args, str) and args else (args or {})})
            out.append({"role": "assistant", "content": blocks})
        elif role in ("user", "assistant"):
            out.append({"role": role, "content": _blocks(msg.get("content"))})
        else:
            raise ConfigurationError(
                f"Message role {role!r} is not one of system, developer, user, assistant, tool."
            )
    return ("\n\n".join(system) if system else None), out


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "tool", "name": (choice.get("function") or {}).get("name", "")}
    if isinstance(choice, dict):
        return choice
    raise ConfigurationError(f"tool_choice {choice!r} is not auto, required, none or a function.")


def build_request(
    spec: ProviderSpec, messages: list[dict[str, Any]], params: dict[str, Any], plan: Plan, *, stream: bool
) -> WireRequest:
    system, converted = _convert_messages(messages)
    body: dict[str, Any] = {"model": spec.model, "messages": converted}
    if system is not None:
        body["system"] = system
    fan_out = 1
    max_tokens = DEFAULT_MAX_TOKENS
    for key, value in params.items():
        if value is None or key in _OPENAI_ONLY:
            continue
        if key in ("max_tokens", "max_completion_tokens"):
            max_tokens = int(value)
        elif key == "n":
            fan_out = max(1, int(value))
        elif key == "stop":
            body["stop_sequences"] = [value] if isinstance(value, str) else list(value)
        else:
            body[key] = value
    body["max_tokens"] = max_tokens
    if plan.tools is not None:
        body["tools"] = [
            {"name": t["function"]["name"], "description": t["function"].get("description", ""),
             "input_schema": t["function"].get("parameters") or {"type": "object", "properties": {}}}
            for t in plan.tools
        ]
        choice = _tool_choice(plan.tool_choice)
        if choice is not None:
            body["tool_choice"] = choice
    if stream:
        body["stream"] = True
    return WireRequest(body=body, strategy=plan.strategy, structured_tool=plan.structured_tool, fan_out=fan_out)


def _bad(spec: ProviderSpec, what: str) -> BadResponse:
    return BadResponse(
        f"{spec.name} model {spec.model!r} sent a reply dspex cannot read: {what}.",
        provider=spec.name,
        model=spec.model,
        provider_message=what,
        hint="Check that api_base points at an Anthropic messages endpoint.",
    )


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage(estimated=True)
    prompt = sum(int(raw.get(k) or 0) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
    return Usage(prompt_tokens=prompt, completion_tokens=int(raw.get("output_tokens") or 0))


def parse_reply(spec: ProviderSpec, data: Any, request: WireRequest) -> LMResponse:
    if not isinstance(data, dict) or not isinstance(data.get("content"), list):
        raise _bad(spec, "no 'content' list in the body")
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[ToolCall] = []
    for block in data["content"]:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "thinking":
            thinking.append(str(block.get("thinking", "")))
        elif kind == "tool_use":
            calls.append(ToolCall(
                name=str(block.get("name", "")),
                arguments=parse_arguments(block.get("input"), provider=spec.name, model=spec.model),
                id=str(block.get("id", "")),
            ))
    text: str | None = "".join(texts)
    finish = _FINISH.get(str(data.get("stop_reason")), data.get("stop_reason"))
    if request.structured_tool and calls and calls[0].name == request.structured_tool:
        text, calls, finish = json.dumps(calls[0].arguments), [], "stop"
    elif calls and not text:
        text = None
    choice = Choice(text=text, tool_calls=calls or None, finish_reason=finish,
                    reasoning_content="".join(thinking) or None)
    return LMResponse(
        model=str(data.get("model") or spec.model),
        choices=[choice],
        usage=_usage(data.get("usage")),
        provider=spec.name,
        request_id=str(data.get("id") or ""),
    )


def parse_stream_event(
    spec: ProviderSpec, event: str, data: str, assembler: StreamAssembler
) -> tuple[list[StreamChunk], bool]:
    """Chunks carried by one SSE event, and whether the stream is over."""
    try:
        payload = json.loads(data)
    except ValueError as exc:
        raise _bad(spec, f"a stream event that is not JSON: {data[:200]!r}") from exc
    kind = event if event != "message" else str(payload.get("type", ""))
    if kind == "message_start":
        msg = payload.get("message") or {}
        assembler.response_model = str(msg.get("model") or spec.model)
        assembler.request_id = str(msg.get("id") or "")
        assembler.state["usage"] = dict(msg.get("usage") or {})
        return [], False
    if kind == "content_block_start":
        block = payload.get("content_block") or {}
        index = int(payload.get("index", 0))
        if block.get("type") == "tool_use":
            return [StreamChunk(tool_calls=[ToolCallDelta(index=index, id=block.get("id"), name=block.get("name"))])], False
        if block.get("type") == "text" and block.get("text"):
            return [StreamChunk(text=str(block["text"]))], False
        return [], False
    if kind == "content_block_delta":
        delta = payload.get("delta") or {}
        index = int(payload.get("index", 0))
        dtype = delta.get("type")
        if dtype == "text_delta":
            return [StreamChunk(text=str(delta.get("text", "")))], False
        if dtype == "thinking_delta":
            return [StreamChunk(reasoning=str(delta.get("thinking", "")))], False
        if dtype == "input_json_delta":
            return [StreamChunk(tool_calls=[ToolCallDelta(index=index, arguments=str(delta.get("partial_json", "")))])], False
        return [], False
    if kind == "message_delta":
        usage = assembler.state.setdefault("usage", {})
        usage.update(payload.get("usage") or {})
        reason = (payload.get("delta") or {}).get("stop_reason")
        return [StreamChunk(finish_reason=_FINISH.get(str(reason), reason), usage=_usage(usage))], False
    if kind == "message_stop":
        return [], True
    if kind == "error":
        err = payload.get("error") or {}
        raise BadResponse(
            f"{spec.name} model {spec.model!r} failed mid-stream: {err.get('message', '')}",
            provider=spec.name,
            model=spec.model,
            provider_message=str(err.get("message", "")),
            error_code=err.get("type"),
        )
    return [], False  # ping, content_block_stop
