"""OpenAI chat completions on the wire: request body, reply, stream events, error body.

Mirrors what DSPy sends (notes/dspy-wire.md): ``model`` and ``messages`` plus only the settings
the caller set; ``max_tokens`` goes out as ``max_completion_tokens``; ``n`` natively when the
endpoint supports it; streaming asks for usage with ``stream_options.include_usage``.
"""

from __future__ import annotations

import json
from typing import Any

from dspex.clients.base_lm import Choice, LMResponse, ToolCall, Usage
from dspex.clients.providers import ProviderSpec
from dspex.clients.wire._types import StreamChunk, ToolCallDelta, WireRequest
from dspex.clients.wire.assemble import StreamAssembler, parse_arguments
from dspex.clients.wire.strategy import Plan
from dspex.errors import BadResponse

__all__ = ["build_request", "parse_reply", "parse_stream_event"]


def build_request(
    spec: ProviderSpec, messages: list[dict[str, Any]], params: dict[str, Any], plan: Plan, *, stream: bool
) -> WireRequest:
    body: dict[str, Any] = {"model": spec.model, "messages": messages}
    fan_out = 1
    for key, value in params.items():
        if value is None:
            continue
        if key == "max_tokens":
            body["max_completion_tokens"] = value
        elif key == "n":
            n = int(value)
            if n > 1 and not spec.capabilities.n:
                fan_out = n
            else:
                body["n"] = n
        else:
            body[key] = value
    if plan.response_format is not None:
        body["response_format"] = plan.response_format
    if plan.tools is not None:
        body["tools"] = plan.tools
        if plan.tool_choice is not None:
            body["tool_choice"] = plan.tool_choice
    if stream:
        body["stream"] = True
        if spec.capabilities.stream_usage:
            body["stream_options"] = {"include_usage": True}
    return WireRequest(body=body, strategy=plan.strategy, structured_tool=plan.structured_tool, fan_out=fan_out)


def _bad(spec: ProviderSpec, what: str) -> BadResponse:
    return BadResponse(
        f"{spec.name} model {spec.model!r} sent a reply dspex cannot read: {what}.",
        provider=spec.name,
        model=spec.model,
        provider_message=what,
        hint="Check that api_base points at an OpenAI-compatible /v1 endpoint.",
    )


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage(estimated=True)
    return Usage(
        prompt_tokens=int(raw.get("prompt_tokens") or 0),
        completion_tokens=int(raw.get("completion_tokens") or 0),
    )


def parse_reply(spec: ProviderSpec, data: Any, request: WireRequest) -> LMResponse:
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
        raise _bad(spec, "no 'choices' in the body")
    choices: list[Choice] = []
    for raw in sorted(data["choices"], key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0):
        message = raw.get("message") if isinstance(raw, dict) else None
        if not isinstance(message, dict):
            raise _bad(spec, "a choice without a 'message'")
        calls = [
            ToolCall(
                name=str((tc.get("function") or {}).get("name", "")),
                arguments=parse_arguments(
                    (tc.get("function") or {}).get("arguments"), provider=spec.name, model=spec.model
                ),
                id=str(tc.get("id", "")),
            )
            for tc in (message.get("tool_calls") or [])
            if isinstance(tc, dict)
        ]
        text = message.get("content")
        if text is not None and not isinstance(text, str):
            raise _bad(spec, "a message whose content is not text")
        finish = raw.get("finish_reason")
        if request.structured_tool and calls and calls[0].name == request.structured_tool:
            text, calls, finish = json.dumps(calls[0].arguments), [], "stop"
        choices.append(
            Choice(
                text=text,
                tool_calls=calls or None,
                finish_reason=finish,
                reasoning_content=message.get("reasoning_content"),
                logprobs=raw.get("logprobs"),
            )
        )
    return LMResponse(
        model=str(data.get("model") or spec.model),
        choices=choices,
        usage=_usage(data.get("usage")),
        provider=spec.name,
        request_id=str(data.get("id") or ""),
    )


def parse_stream_event(
    spec: ProviderSpec, event: str, data: str, assembler: StreamAssembler
) -> tuple[list[StreamChunk], bool]:
    """Chunks carried by one SSE event, and whether the stream is over."""
    if data.strip() == "[DONE]":
        return [], True
    try:
        payload = json.loads(data)
    except ValueError as exc:
        raise _bad(spec, f"a stream event that is not JSON: {data[:200]!r}") from exc
    if not isinstance(payload, dict):
        raise _bad(spec, "a stream event that is not a JSON object")
    if "error" in payload:
        err = payload["error"] if isinstance(payload["error"], dict) else {"message": str(payload["error"])}
        raise BadResponse(
            f"{spec.name} model {spec.model!r} failed mid-stream: {err.get('message', '')}",
            provider=spec.name,
            model=spec.model,
            provider_message=str(err.get("message", "")),
        )
    if payload.get("model"):
        assembler.response_model = str(payload["model"])
    if payload.get("id"):
        assembler.request_id = str(payload["id"])
    chunks: list[StreamChunk] = []
    for raw in payload.get("choices") or []:
        delta = raw.get("delta") or {}
        calls = [
            ToolCallDelta(
                index=int(tc.get("index", 0)),
                id=tc.get("id"),
                name=(tc.get("function") or {}).get("name"),
                arguments=(tc.get("function") or {}).get("arguments") or "",
            )
            for tc in (delta.get("tool_calls") or [])
        ]
        chunks.append(
            StreamChunk(
                text=delta.get("content") or "",
                index=int(raw.get("index", 0)),
                reasoning=delta.get("reasoning_content") or "",
                tool_calls=calls,
                finish_reason=raw.get("finish_reason"),
            )
        )
    if isinstance(payload.get("usage"), dict):
        chunks.append(StreamChunk(usage=_usage(payload["usage"])))
    return chunks, False
