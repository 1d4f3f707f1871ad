"""Streaming over SSE from both providers: chunks, joined text, usage, tool calls, cache, errors."""

from __future__ import annotations

import json

import httpx
import pytest
from fixtures.clients import Recorder, anthropic_reply, openai_reply, sse

from dspex.clients import LM, LMCache, StreamChunk
from dspex.clients.wire.sse import iter_sse
from dspex.errors import BadResponse, ConfigurationError, RateLimited


def openai_stream(pieces: list[str], *, usage: bool = True, finish: str = "stop") -> bytes:
    events: list[tuple[str | None, object]] = [
        (None, {"id": "c1", "model": "gpt-4o-mini-2024-07-18", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    ]
    for p in pieces:
        events.append((None, {"id": "c1", "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}))
    events.append((None, {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}))
    if usage:
        events.append((None, {"id": "c1", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": len(pieces)}}))
    events.append((None, "[DONE]"))
    return sse(events)


def anthropic_stream(pieces: list[str]) -> bytes:
    events: list[tuple[str | None, object]] = [
        ("message_start", {"type": "message_start", "message": {"id": "msg_1", "model": "claude-3-5-haiku-20241022", "usage": {"input_tokens": 11, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ("ping", {"type": "ping"}),
    ]
    for p in pieces:
        events.append(("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}))
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": len(pieces)}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return sse(events)


def sse_response(body: bytes) -> httpx.Response:
    return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})


async def collect(lm: LM, **kwargs: object) -> tuple[list[StreamChunk], StreamChunk]:
    chunks = [c async for c in lm.astream(**kwargs)]  # type: ignore[arg-type]
    assert chunks[-1].done and all(not c.done for c in chunks[:-1])
    return chunks[:-1], chunks[-1]


async def test_openai_stream_request_and_chunks(lm_cache: LMCache) -> None:
    pieces = ["[[ ## answer ## ]]\n", "5", "\n\n[[ ## completed ## ]]"]
    rec = Recorder(default=lambda r: sse_response(openai_stream(pieces)))
    lm = LM("openai/gpt-4o-mini", api_key="k", http_transport=rec.transport(), response_cache=lm_cache, max_tokens=20)
    chunks, last = await collect(lm, prompt="2+3?")
    assert rec.bodies[0] == {
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "2+3?"}], "max_completion_tokens": 20,
        "stream": True, "stream_options": {"include_usage": True},
    }
    assert "".join(c.text for c in chunks) == "".join(pieces)
    assert chunks[-1].finish_reason == "stop"
    assert last.response is not None and last.response.choices[0].text == "".join(pieces)
    assert last.response.usage.prompt_tokens == 9 and last.response.usage.completion_tokens == 3
    assert last.response.cost_usd is not None and last.response.cost_usd > 0
    assert lm.history[-1]["outputs"] == ["".join(pieces)]


async def test_stream_then_call_hits_the_same_cache_entry(lm_cache: LMCache) -> None:
    pieces = ["Hel", "lo"]
    rec = Recorder(replies=[sse_response(openai_stream(pieces))])
    lm = LM("openai/gpt-4o-mini", api_key="k", http_transport=rec.transport(), response_cache=lm_cache)
    await collect(lm, prompt="hi")
    assert await lm.acall(prompt="hi") == ["Hello"]
    chunks, last = await collect(lm, prompt="hi")  # a cached stream comes as one chunk
    assert [c.text for c in chunks] == ["Hello"] and last.response is not None and last.response.cache_hit
    assert len(rec.requests) == 1


async def test_streamed_text_equals_the_unstreamed_reply() -> None:
    text = "[[ ## reasoning ## ]]\nAdd them.\n\n[[ ## answer ## ]]\n5.0\n\n[[ ## completed ## ]]"
    pieces = [text[i:i + 7] for i in range(0, len(text), 7)]
    rec = Recorder(replies=[sse_response(openai_stream(pieces)), httpx.Response(200, json=openai_reply(text))])
    lm = LM("openai/gpt-4o-mini", api_key="k", http_transport=rec.transport(), cache=False)
    chunks, _ = await collect(lm, prompt="x")
    assert "".join(c.text for c in chunks) == (await lm.acall(prompt="x"))[0]

    rec2 = Recorder(replies=[sse_response(anthropic_stream(pieces)), httpx.Response(200, json=anthropic_reply(text))])
    lm2 = LM("anthropic/claude-3-5-haiku-latest", api_key="k", http_transport=rec2.transport(), cache=False)
    chunks2, last2 = await collect(lm2, prompt="x")
    assert "".join(c.text for c in chunks2) == (await lm2.acall(prompt="x"))[0]
    assert rec2.bodies[0]["stream"] is True
    assert last2.response is not None and last2.response.usage.prompt_tokens == 11
    assert last2.response.usage.completion_tokens == len(pieces)
    assert last2.response.choices[0].finish_reason == "stop"


async def test_openai_stream_with_tool_call_deltas() -> None:
    events: list[tuple[str | None, object]] = [
        (None, {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "search", "arguments": ""}}]}}]}),
        (None, {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"q": '}}]}}]}),
        (None, {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"x"}'}}]}, "finish_reason": "tool_calls"}]}),
        (None, "[DONE]"),
    ]
    rec = Recorder(default=lambda r: sse_response(sse(events)))
    lm = LM("openai/gpt-4o-mini", api_key="k", http_transport=rec.transport(), cache=False)
    chunks, last = await collect(lm, prompt="x", tools=[{"type": "function", "function": {"name": "search"}}])
    assert any(c.tool_calls for c in chunks)
    assert last.response is not None
    call = last.response.choices[0].tool_calls
    assert call is not None and call[0].name == "search" and call[0].arguments == {"q": "x"} and call[0].id == "call_1"
    assert last.response.usage.estimated  # no usage in this stream


async def test_anthropic_structured_stream_yields_the_json_whole() -> None:
    events: list[tuple[str | None, object]] = [
        ("message_start", {"type": "message_start", "message": {"id": "m", "model": "claude", "usage": {"input_tokens": 5}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "tu", "name": "json_tool_call", "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": '{"answer"'}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": ': 5}'}}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 4}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    rec = Recorder(replies=[sse_response(sse(events)), httpx.Response(200, json=anthropic_reply(
        None, tool_uses=[{"id": "tu", "name": "json_tool_call", "input": {"answer": 5}}], stop_reason="tool_use"))])
    lm = LM("anthropic/claude-3-5-haiku-latest", api_key="k", http_transport=rec.transport(), cache=False)
    fmt = {"type": "json_schema", "json_schema": {"name": "O", "schema": {"type": "object", "properties": {"answer": {"type": "integer"}}}}}
    chunks, _ = await collect(lm, prompt="x", response_format=fmt)
    assert "".join(c.text for c in chunks) == json.dumps({"answer": 5})
    assert "".join(c.text for c in chunks) == (await lm.acall(prompt="x", response_format=fmt))[0]


async def test_stream_errors_before_the_first_chunk_are_mapped_and_retried() -> None:
    rec = Recorder(replies=[httpx.Response(429, json={"error": {"message": "slow"}}, headers={"retry-after": "0"})],
                   default=lambda r: sse_response(openai_stream(["ok"])))
    lm = LM("openai/gpt-4o-mini", api_key="k", http_transport=rec.transport(), cache=False)
    chunks, _ = await collect(lm, prompt="x")
    assert "".join(c.text for c in chunks) == "ok" and len(rec.requests) == 2
    rec2 = Recorder(default=lambda r: httpx.Response(429, json={"error": {"message": "slow"}}))
    lm2 = LM("openai/gpt-4o-mini", api_key="k", http_transport=rec2.transport(), cache=False, num_retries=0)
    with pytest.raises(RateLimited, match="slow"):
        await collect(lm2, prompt="x")


async def test_cut_stream_and_mid_stream_error_are_bad_responses() -> None:
    cut = sse([(None, {"choices": [{"index": 0, "delta": {"content": "par"}}]})])
    rec = Recorder(default=lambda r: sse_response(cut))
    lm = LM("openai/gpt-4o-mini", api_key="k", http_transport=rec.transport(), cache=False, num_retries=0)
    with pytest.raises(BadResponse, match="before the final event"):
        await collect(lm, prompt="x")
    err = sse([("message_start", {"type": "message_start", "message": {"model": "c"}}),
               ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})])
    rec2 = Recorder(default=lambda r: sse_response(err))
    lm2 = LM("anthropic/claude-3-5-haiku-latest", api_key="k", http_transport=rec2.transport(), cache=False)
    with pytest.raises(BadResponse, match="Overloaded"):
        await collect(lm2, prompt="x")


async def test_stream_with_fanned_out_n_is_refused() -> None:
    lm = LM("anthropic/claude-3-5-haiku-latest", api_key="k", cache=False)
    with pytest.raises(ConfigurationError, match="n=1"):
        await collect(lm, prompt="x", n=2)


async def test_sse_parser_rules() -> None:
    async def lines():  # type: ignore[no-untyped-def]
        for line in [": comment", "event: a", "data: 1", "data: 2", "", "data: x", "id: 5", "", "data:nospace"]:
            yield line

    assert [e async for e in iter_sse(lines())] == [("a", "1\n2"), ("message", "x"), ("message", "nospace")]
