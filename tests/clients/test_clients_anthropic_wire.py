"""Exact Anthropic messages request shapes per strategy, and reply parsing (MockTransport)."""

from __future__ import annotations

import json

import httpx
import pydantic
import pytest
from fixtures.clients import Recorder, anthropic_reply

from dspex.clients import LM
from dspex.errors import ConfigurationError

MESSAGES = [
    {"role": "system", "content": "You answer."},
    {"role": "user", "content": "What is 2+3?"},
]


def make_lm(rec: Recorder, **kwargs: object) -> LM:
    kwargs.setdefault("api_key", "sk-ant-test")
    return LM("anthropic/claude-3-5-haiku-latest", cache=False, http_transport=rec.transport(), **kwargs)  # type: ignore[arg-type]


async def test_plain_request_shape_and_headers() -> None:
    rec = Recorder(default=lambda r: httpx.Response(200, json=anthropic_reply("5")))
    lm = make_lm(rec, temperature=0.2, max_tokens=300)
    out = await lm.acall(messages=MESSAGES, stop="\n\n", seed=1, presence_penalty=0.5)
    assert out == ["5"]
    req = rec.requests[0]
    assert str(req.url) == "https://api.anthropic.com/v1/messages"
    assert req.headers["x-api-key"] == "sk-ant-test"
    assert req.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in req.headers
    # system moves to the top level; OpenAI-only settings are dropped; max_tokens is required
    assert rec.bodies[0] == {
        "model": "claude-3-5-haiku-latest",
        "system": "You answer.",
        "messages": [{"role": "user", "content": "What is 2+3?"}],
        "temperature": 0.2,
        "stop_sequences": ["\n\n"],
        "max_tokens": 300,
    }


async def test_default_max_tokens_and_demo_pairs() -> None:
    rec = Recorder(default=lambda r: httpx.Response(200, json=anthropic_reply("ok")))
    msgs = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": [{"type": "text", "text": "q2"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
    ]
    await make_lm(rec).acall(messages=msgs)
    body = rec.bodies[0]
    assert body["max_tokens"] == 4096
    assert body["messages"] == [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": [
            {"type": "text", "text": "q2"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        ]},
    ]


async def test_n_fans_out_into_separate_requests() -> None:
    rec = Recorder(default=lambda r: httpx.Response(200, json=anthropic_reply("x", usage={"input_tokens": 10, "output_tokens": 2})))
    lm = make_lm(rec)
    out = await lm.acall(messages=MESSAGES, n=3)
    assert out == ["x", "x", "x"]
    assert len(rec.requests) == 3 and all("n" not in b for b in rec.bodies)
    usage = lm.history[-1]["usage"]
    assert usage["prompt_tokens"] == 30 and usage["completion_tokens"] == 6


class Out(pydantic.BaseModel):
    answer: int


async def test_structured_output_is_a_forced_tool() -> None:
    rec = Recorder(default=lambda r: httpx.Response(200, json=anthropic_reply(
        None, tool_uses=[{"id": "tu_1", "name": "json_tool_call", "input": {"answer": 5}}], stop_reason="tool_use")))
    lm = make_lm(rec)
    out = await lm.acall(messages=MESSAGES, response_format=Out)
    body = rec.bodies[0]
    assert body["tools"] == [{
        "name": "json_tool_call",
        "description": "Respond with the Out object.",
        "input_schema": {"type": "object", "title": "Out", "properties": {"answer": {"title": "Answer", "type": "integer"}},
                         "required": ["answer"], "additionalProperties": False},
    }]
    assert body["tool_choice"] == {"type": "tool", "name": "json_tool_call"}
    assert "response_format" not in body
    assert out == [json.dumps({"answer": 5})]
    assert lm.history[-1]["response"].choices[0].finish_reason == "stop"


async def test_json_mode_degrades_to_plain_prompt() -> None:
    rec = Recorder(default=lambda r: httpx.Response(200, json=anthropic_reply('{"a": 1}')))
    out = await make_lm(rec).acall(messages=MESSAGES, response_format={"type": "json_object"})
    assert out == ['{"a": 1}']
    assert "response_format" not in rec.bodies[0] and "tools" not in rec.bodies[0]


async def test_tool_calling_round_trip() -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "description": "Look up.", "parameters": {"type": "object", "properties": {"k": {"type": "string"}}}}}]
    rec = Recorder(default=lambda r: httpx.Response(200, json=anthropic_reply(
        "Let me look.", tool_uses=[{"id": "tu_9", "name": "lookup", "input": {"k": "v"}}], stop_reason="tool_use")))
    lm = make_lm(rec)
    history = [
        *MESSAGES,
        {"role": "assistant", "content": None, "tool_calls": [{"id": "tu_0", "type": "function", "function": {"name": "lookup", "arguments": '{"k": "a"}'}}]},
        {"role": "tool", "tool_call_id": "tu_0", "content": "found a"},
    ]
    out = await lm.acall(messages=history, tools=tools, tool_choice="required")
    body = rec.bodies[0]
    assert body["tools"][0] == {"name": "lookup", "description": "Look up.", "input_schema": tools[0]["function"]["parameters"]}
    assert body["tool_choice"] == {"type": "any"}
    assert body["messages"][1] == {"role": "assistant", "content": [{"type": "tool_use", "id": "tu_0", "name": "lookup", "input": {"k": "a"}}]}
    assert body["messages"][2] == {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu_0", "content": "found a"}]}
    assert out == [{"text": "Let me look.", "tool_calls": [{"id": "tu_9", "type": "function", "function": {"name": "lookup", "arguments": {"k": "v"}}}]}]
    assert lm.history[-1]["response"].choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(("stop_reason", "finish"), [("end_turn", "stop"), ("max_tokens", "length"), ("stop_sequence", "stop"), ("tool_use", "tool_calls")])
async def test_finish_reasons(stop_reason: str, finish: str) -> None:
    rec = Recorder(default=lambda r: httpx.Response(200, json=anthropic_reply("x", stop_reason=stop_reason)))
    lm = make_lm(rec)
    await lm.acall(messages=MESSAGES)
    assert lm.history[-1]["response"].choices[0].finish_reason == finish


async def test_usage_includes_cache_tokens_and_prices() -> None:
    usage = {"input_tokens": 100, "cache_read_input_tokens": 50, "output_tokens": 10}
    rec = Recorder(default=lambda r: httpx.Response(200, json=anthropic_reply("x", usage=usage)))
    lm = make_lm(rec)
    await lm.acall(messages=MESSAGES)
    response = lm.history[-1]["response"]
    assert response.usage.prompt_tokens == 150 and response.usage.completion_tokens == 10
    assert response.cost_usd == pytest.approx((150 * 0.80 + 10 * 4.00) / 1e6)  # claude-3-5-haiku


async def test_thinking_blocks_become_reasoning_content() -> None:
    body = anthropic_reply("42")
    body["content"].insert(0, {"type": "thinking", "thinking": "hmm"})
    rec = Recorder(default=lambda r: httpx.Response(200, json=body))
    out = await make_lm(rec).acall(messages=MESSAGES)
    assert out == [{"text": "42", "reasoning_content": "hmm"}]


async def test_unknown_role_is_rejected() -> None:
    rec = Recorder(default=lambda r: httpx.Response(200, json=anthropic_reply("x")))
    with pytest.raises(ConfigurationError, match="role"):
        await make_lm(rec).acall(messages=[{"role": "robot", "content": "x"}])
