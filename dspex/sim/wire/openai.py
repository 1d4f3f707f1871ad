"""OpenAI chat completions: reading requests, writing replies, streams and error bodies."""

from __future__ import annotations

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

__all__ = ["openai_completion", "openai_error", "openai_stream", "parse_openai"]

_OPENAI_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}


def parse_openai(body: Any) -> WireRequest:
    if not isinstance(body, dict):
        raise WireError(400, "The request body must be a JSON object.")
    model = check_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise WireError(
            400, "'messages' must be a non-empty array of message objects.", param="messages"
        )
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _OPENAI_ROLES:
            raise WireError(
                400,
                f"Invalid message at messages[{i}]: each message needs a 'role' in {sorted(_OPENAI_ROLES)}.",
                param=f"messages[{i}]",
            )
    n = check_int(body, "n", 1, 128) or 1
    temperature = check_float(body, "temperature", 0.0, 2.0)
    max_tokens = check_int(body, "max_completion_tokens", 1) or check_int(body, "max_tokens", 1)
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise WireError(
            400, f"Invalid value for 'seed': expected an integer, got {seed!r}.", param="seed"
        )
    rf = body.get("response_format")
    response_format: dict[str, Any] | None = None
    if rf is not None:
        kind = rf.get("type") if isinstance(rf, dict) else None
        if kind == "json_schema":
            js = rf.get("json_schema")
            if not isinstance(js, dict) or not isinstance(js.get("name"), str):
                raise WireError(
                    400,
                    "response_format.json_schema needs a 'name' and a 'schema'.",
                    param="response_format",
                )
            response_format = {"type": "json_schema", "schema": js.get("schema") or {}}
        elif kind == "json_object":
            response_format = {"type": "json_object"}
        elif kind != "text":
            raise WireError(
                400,
                "Invalid 'response_format.type': expected 'text', 'json_object' or 'json_schema'.",
                param="response_format",
            )
    tools = _openai_tools(body)
    choice = _openai_tool_choice(body.get("tool_choice"), tools)
    stream = body.get("stream") is True
    opts = body.get("stream_options") or {}
    return WireRequest(
        api="openai",
        model=model,
        messages=messages,
        system=None,
        sampling=Sampling(
            n=n,
            temperature=1.0 if temperature is None else temperature,
            seed=seed,
            response_format=response_format,
            tools=tools,
            tool_choice=choice,
        ),
        stream=stream,
        include_usage=bool(isinstance(opts, dict) and opts.get("include_usage")),
        max_tokens=max_tokens,
    )


def _openai_tools(body: dict[str, Any]) -> list[ToolSpec]:
    raw = body.get("tools")
    if raw is None and isinstance(body.get("functions"), list):  # the legacy form
        raw = [{"type": "function", "function": f} for f in body["functions"]]
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise WireError(400, "'tools' must be an array.", param="tools")
    tools: list[ToolSpec] = []
    for i, t in enumerate(raw):
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise WireError(
                400,
                f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ...}}}}.",
                param=f"tools[{i}]",
            )
        tools.append(
            ToolSpec(fn["name"], str(fn.get("description", "")), fn.get("parameters") or {})
        )
    return tools


def _openai_tool_choice(raw: Any, tools: list[ToolSpec]) -> str:
    if raw is None:
        return "auto"
    if raw in ("auto", "none", "required"):
        if raw == "required" and not tools:
            raise WireError(400, "tool_choice 'required' needs 'tools'.", param="tool_choice")
        return str(raw)
    name = raw.get("function", {}).get("name") if isinstance(raw, dict) else None
    if not isinstance(name, str) or name not in {t.name for t in tools}:
        raise WireError(
            400,
            f"tool_choice names a function that is not in 'tools': {name!r}.",
            param="tool_choice",
        )
    return name


def openai_error(
    status: int, message: str, *, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    kind = {
        400: "invalid_request_error",
        401: "invalid_request_error",
        404: "invalid_request_error",
        429: "requests",
        504: "timeout",
    }.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _openai_message(c: ChoiceOut) -> dict[str, Any]:
    if c.tool_calls:
        return {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "tool_calls": [
                {
                    "id": t.id,
                    "type": "function",
                    "function": {"name": t.name, "arguments": t.arguments},
                }
                for t in c.tool_calls
            ],
        }
    return {"role": "assistant", "content": c.text, "refusal": None}


def _openai_usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def openai_completion(
    rid: str,
    created: int,
    model: str,
    choices: list[ChoiceOut],
    prompt_tokens: int,
    completion_tokens: int,
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_dspex_sim",
        "choices": [
            {
                "index": i,
                "message": _openai_message(c),
                "logprobs": None,
                "finish_reason": c.finish_reason,
            }
            for i, c in enumerate(choices)
        ],
        "usage": _openai_usage(prompt_tokens, completion_tokens),
    }


def openai_stream(
    rid: str,
    created: int,
    model: str,
    choices: list[ChoiceOut],
    prompt_tokens: int,
    completion_tokens: int,
    include_usage: bool,
) -> list[tuple[int, bytes]]:
    """Server-sent events as (output tokens in this event, bytes); the server spaces them
    by the model's per-token latency."""
    base = {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_dspex_sim",
    }
    usage_null = {"usage": None} if include_usage else {}

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse(
            {
                **base,
                "choices": [
                    {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
                **usage_null,
            }
        )

    events: list[tuple[int, bytes]] = []
    for i, c in enumerate(choices):
        if c.tool_calls:
            events.append((0, chunk(i, {"role": "assistant", "content": None, "refusal": None})))
            for k, t in enumerate(c.tool_calls):
                head = {
                    "index": k,
                    "id": t.id,
                    "type": "function",
                    "function": {"name": t.name, "arguments": ""},
                }
                events.append((0, chunk(i, {"tool_calls": [head]})))
                for piece in split_chunks(t.arguments, 6):
                    events.append(
                        (
                            tokens(piece),
                            chunk(
                                i, {"tool_calls": [{"index": k, "function": {"arguments": piece}}]}
                            ),
                        )
                    )
        else:
            events.append((0, chunk(i, {"role": "assistant", "content": "", "refusal": None})))
            for piece in split_chunks(c.text or ""):
                if piece:
                    events.append((tokens(piece), chunk(i, {"content": piece})))
        events.append((0, chunk(i, {}, c.finish_reason)))
    if include_usage:
        events.append(
            (
                0,
                sse(
                    {
                        **base,
                        "choices": [],
                        "usage": _openai_usage(prompt_tokens, completion_tokens),
                    }
                ),
            )
        )
    events.append((0, b"data: [DONE]\n\n"))
    return events
