"""Exact OpenAI chat-completions request shapes per strategy, and reply parsing (MockTransport)."""

from __future__ import annotations

import json

import httpx
import pydantic
import pytest
from fixtures.clients import Recorder, openai_reply

from dspex.clients import LM, Strategy
from dspex.errors import BadResponse, ConfigurationError, SecretError

MESSAGES = [{"role": "system", "content": "sys"}, {"role": "user", "content": "What is 2+3?"}]


def make_lm(rec: Recorder, model: str = "openai/gpt-4o-mini", **kwargs: object) -> LM:
    kwargs.setdefault("api_key", "sk-test-123")
    return LM(model, cache=False, http_transport=rec.transport(), **kwargs)


async def test_plain_chat_sends_only_what_was_set() -> None:
    rec = Recorder(default=lambda r: httpx.Response(200, json=openai_reply("5")))
    lm = make_lm(rec, temperature=0.0, max_tokens=100)
    out = await lm.acall(messages=MESSAGES)
    assert out == ["5"]
    req = rec.requests[0]
    assert req.method == "POST"
    assert str(req.url) == "https://api.openai.com/v1/chat/completions"
    assert req.headers["authorization"] == "Bearer sk-test-123"
    assert req.headers["content-type"] == "application/json"
    assert rec.bodies[0] == {
        "model": "gpt-4o-mini",
        "messages": MESSAGES,
        "temperature": 0.0,
        "max_completion_tokens": 100,
    }


async def test_call_kwargs_override_and_local_settings_stay_local() -> None:
    rec = Recorder(default=lambda r: httpx.Response(200, json=openai_reply("x")))
    lm = make_lm(rec, temperature=0.0)
    await lm.acall(prompt="hi", temperature=0.7, top_p=0.9, stop=["\n"], seed=3, rollout_id=4, cache=False, num_retries=1)
    body = rec.bodies[0]
    assert body == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.7,
        "top_p": 0.9,
        "stop": ["\n"],
        "seed": 3,
    }


async def test_n_is_sent_natively_and_every_choice_parsed() -> None:
    rec = Recorder(default=lambda r: httpx.Response(200, json=openai_reply(["a", "b", "c"])))
    lm = make_lm(rec)
    out = await lm.acall(messages=MESSAGES, n=3)
    assert out == ["a", "b", "c"]
    assert len(rec.requests) == 1 and rec.bodies[0]["n"] == 3


async def test_n_fans_out_when_endpoint_has_no_native_n() -> None:
    rec = Recorder(default=lambda r: httpx.Response(200, json=openai_reply("one")))
    lm = make_lm(rec, api_base="http://127.0.0.1:9/v1", capabilities={"n": False})
    out = await lm.acall(messages=MESSAGES, n=3)
    assert out == ["one", "one", "one"]
    assert len(rec.requests) == 3
    assert all("n" not in b for b in rec.bodies)
    entry = lm.history[-1]
    assert entry["usage"]["prompt_tokens"] == 30 and entry["usage"]["completion_tokens"] == 15


async def test_json_mode_strategy() -> None:
    rec = Recorder(default=lambda r: httpx.Response(200, json=openai_reply('{"answer": 5}')))
    lm = make_lm(rec)
    out = await lm.acall(messages=MESSAGES, response_format={"type": "json_object"})
    assert out == ['{"answer": 5}']
    assert rec.bodies[0]["response_format"] == {"type": "json_object"}


class Answer(pydantic.BaseModel):
    reasoning: str
    answer: float


async def test_structured_output_from_pydantic_model_is_strict_json_schema() -> None:
    rec = Recorder(default=lambda r: httpx.Response(200, json=openai_reply('{"reasoning": "r", "answer": 5.0}')))
    lm = make_lm(rec)
    await lm.acall(messages=MESSAGES, response_format=Answer)
    fmt = rec.bodies[0]["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "Answer" and fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["reasoning", "answer"]


async def test_structured_output_dict_passes_through_unchanged() -> None:
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "DSPyProgramOutputs", "strict": True, "schema": {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"], "additionalProperties": False}},
    }
    rec = Recorder(default=lambda r: httpx.Response(200, json=openai_reply('{"answer": "5"}')))
    lm = make_lm(rec)
    await lm.acall(messages=MESSAGES, response_format=fmt)
    assert rec.bodies[0]["response_format"] == fmt


async def test_structured_degrades_to_forced_tool_then_json_mode_then_plain() -> None:
    args = {"answer": "5"}
    tool_reply = openai_reply(None, tool_calls=[{"id": "c1", "type": "function", "function": {"name": "json_tool_call", "arguments": json.dumps(args)}}])
    rec = Recorder(default=lambda r: httpx.Response(200, json=tool_reply))
    lm = make_lm(rec, api_base="http://127.0.0.1:9/v1", capabilities={"json_schema": False})
    out = await lm.acall(messages=MESSAGES, response_format=Answer)
    body = rec.bodies[0]
    assert "response_format" not in body
    assert body["tools"][0]["function"]["name"] == "json_tool_call"
    assert body["tools"][0]["function"]["parameters"]["required"] == ["reasoning", "answer"]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "json_tool_call"}}
    assert out == [json.dumps(args)]  # the forced tool's arguments come back as the reply text

    rec2 = Recorder(default=lambda r: httpx.Response(200, json=openai_reply("{}")))
    lm2 = make_lm(rec2, api_base="http://127.0.0.1:9/v1", capabilities={"json_schema": False, "tools": False})
    await lm2.acall(messages=MESSAGES, response_format=Answer)
    assert rec2.bodies[0]["response_format"] == {"type": "json_object"}

    rec3 = Recorder(default=lambda r: httpx.Response(200, json=openai_reply("{}")))
    caps = {"json_schema": False, "tools": False, "json_object": False}
    lm3 = make_lm(rec3, api_base="http://127.0.0.1:9/v1", capabilities=caps)
    await lm3.acall(messages=MESSAGES, response_format=Answer)
    assert "response_format" not in rec3.bodies[0] and "tools" not in rec3.bodies[0]


async def test_tool_calling_request_and_reply() -> None:
    tools = [{"type": "function", "function": {"name": "search", "description": "Search.", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}]
    calls = [{"id": "call_1", "type": "function", "function": {"name": "search", "arguments": '{"q": "dspy"}'}}]
    rec = Recorder(default=lambda r: httpx.Response(200, json=openai_reply(None, tool_calls=calls, finish_reason="tool_calls")))
    lm = make_lm(rec)
    out = await lm.acall(messages=MESSAGES, tools=tools, tool_choice="auto")
    assert rec.bodies[0]["tools"] == tools and rec.bodies[0]["tool_choice"] == "auto"
    assert out == [{"text": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "search", "arguments": {"q": "dspy"}}}]}]
    response = lm.history[-1]["response"]
    assert response.choices[0].finish_reason == "tool_calls"


async def test_usage_cost_and_finish_reason() -> None:
    rec = Recorder(default=lambda r: httpx.Response(200, json=openai_reply("x", usage={"prompt_tokens": 1000, "completion_tokens": 2000}, finish_reason="length")))
    lm = make_lm(rec)
    await lm.acall(messages=MESSAGES)
    entry = lm.history[-1]
    assert entry["usage"] == {"prompt_tokens": 1000, "completion_tokens": 2000, "total_tokens": 3000, "estimated": False}
    # gpt-4o-mini: $0.15 / $0.60 per 1M tokens
    assert entry["cost"] == pytest.approx((1000 * 0.15 + 2000 * 0.60) / 1e6)
    assert entry["response"].choices[0].finish_reason == "length"
    assert entry["response"].model == "gpt-4o-mini-2024-07-18"


async def test_missing_usage_is_estimated() -> None:
    body = openai_reply("abcdefgh")
    del body["usage"]
    rec = Recorder(default=lambda r: httpx.Response(200, json=body))
    lm = make_lm(rec)
    await lm.acall(messages=[{"role": "user", "content": "x" * 40}])
    usage = lm.history[-1]["response"].usage
    assert usage.estimated is True
    assert usage.completion_tokens == 2  # 8 chars / 4
    assert usage.prompt_tokens >= 10


async def test_reasoning_content_is_kept() -> None:
    body = openai_reply("42")
    body["choices"][0]["message"]["reasoning_content"] = "thinking..."
    rec = Recorder(default=lambda r: httpx.Response(200, json=body))
    out = await make_lm(rec).acall(messages=MESSAGES)
    assert out == [{"text": "42", "reasoning_content": "thinking..."}]


@pytest.mark.parametrize(
    "body",
    [b"not json", b"{}", b'{"choices": []}', b'{"choices": [{"index": 0}]}', b'{"choices": [{"message": {"content": 5}}]}'],
)
async def test_unreadable_replies_are_bad_response(body: bytes) -> None:
    rec = Recorder(default=lambda r: httpx.Response(200, content=body))
    lm = make_lm(rec, num_retries=0)
    with pytest.raises(BadResponse) as info:
        await lm.acall(messages=MESSAGES)
    assert info.value.provider == "openai"


async def test_bad_tool_arguments_are_bad_response() -> None:
    calls = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]
    rec = Recorder(default=lambda r: httpx.Response(200, json=openai_reply(None, tool_calls=calls)))
    with pytest.raises(BadResponse, match="not valid JSON"):
        await make_lm(rec, num_retries=0).acall(messages=MESSAGES, tools=[{"type": "function", "function": {"name": "f"}}])


def test_sync_call_goes_through_the_background_loop() -> None:
    rec = Recorder(default=lambda r: httpx.Response(200, json=openai_reply("sync!")))
    lm = make_lm(rec)
    assert lm("hello") == ["sync!"]
    assert lm(messages=MESSAGES) == ["sync!"]
    assert len(lm.history) == 2


def test_model_strings_and_bases() -> None:
    assert LM("openai/gpt-4o").spec.url == "https://api.openai.com/v1/chat/completions"
    assert LM("gpt-4o").spec.name == "openai"
    assert LM("claude-3-5-haiku-latest").spec.url == "https://api.anthropic.com/v1/messages"
    lm = LM("openai/sim-small", api_base="http://127.0.0.1:8000")
    assert lm.spec.url == "http://127.0.0.1:8000/v1/chat/completions" and lm.spec.model == "sim-small"
    assert not lm.spec.key_required
    assert LM("ollama_chat/llama3").spec.url == "http://localhost:11434/v1/chat/completions"
    assert LM("openai/meta-llama/Llama-3-8B", api_base="http://h:1/v1").spec.model == "meta-llama/Llama-3-8B"
    assert LM("anthropic/claude-x", api_base="http://127.0.0.1:5").spec.url == "http://127.0.0.1:5/v1/messages"
    with pytest.raises(ConfigurationError, match="Unknown provider prefix"):
        LM("nosuch/model")
    with pytest.raises(ConfigurationError, match="needs api_base"):
        LM("vllm/llama")
    with pytest.raises(ConfigurationError, match="not an http"):
        LM("openai/x", api_base="ftp://x")
    with pytest.raises(ConfigurationError):
        LM("")
    with pytest.raises(ConfigurationError, match="model_type"):
        LM("openai/x", model_type="text")
    with pytest.raises(ConfigurationError, match="capability"):
        LM("openai/x", capabilities={"telepathy": True})


async def test_missing_key_for_the_vendor_is_a_secret_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    rec = Recorder(default=lambda r: httpx.Response(200, json=openai_reply("x")))
    lm = LM("openai/gpt-4o-mini", cache=False, http_transport=rec.transport())
    with pytest.raises(SecretError, match="OPENAI_API_KEY"):
        await lm.acall(prompt="hi")
    assert rec.requests == []
    # A self-hosted server needs no key: no Authorization header at all.
    lm2 = LM("openai/local", api_base="http://127.0.0.1:9/v1", cache=False, http_transport=rec.transport())
    await lm2.acall(prompt="hi")
    assert "authorization" not in rec.requests[0].headers


async def test_key_from_env_and_custom_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    monkeypatch.setenv("MY_GATEWAY_KEY", "gw-key")
    rec = Recorder(default=lambda r: httpx.Response(200, json=openai_reply("x")))
    await LM("openai/gpt-4o", cache=False, http_transport=rec.transport()).acall(prompt="a")
    await LM("openai/gpt-4o", cache=False, http_transport=rec.transport(), api_key_env="MY_GATEWAY_KEY").acall(prompt="b")
    assert rec.requests[0].headers["authorization"] == "Bearer sk-from-env"
    assert rec.requests[1].headers["authorization"] == "Bearer gw-key"


def test_strategy_enum_values() -> None:
    assert {s.value for s in Strategy} == {"plain", "json_mode", "structured", "tools"}


async def test_bad_response_format_and_tools_are_configuration_errors() -> None:
    rec = Recorder(default=lambda r: httpx.Response(200, json=openai_reply("x")))
    lm = make_lm(rec)
    with pytest.raises(ConfigurationError, match="response_format"):
        await lm.acall(prompt="a", response_format="json")
    with pytest.raises(ConfigurationError, match="json_schema"):
        await lm.acall(prompt="a", response_format={"type": "json_schema"})
    with pytest.raises(ConfigurationError, match="Each tool"):
        await lm.acall(prompt="a", tools=[{"name": "f"}])
    assert rec.requests == []
