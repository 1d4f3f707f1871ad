"""The official openai and anthropic SDKs as clients of the simulator."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import openai
import pytest
from fixtures.sim import task_messages
from pydantic import BaseModel

from dspex.sim import ModelSpec, SimConfig, SimServer, get_task, load_task

FAST = "sim-medium-fast"
ARITH = get_task("arithmetic")
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}


@pytest.fixture
def oai(sim: SimServer) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=sim.openai_base_url, api_key="sim", max_retries=0, timeout=10)
    yield client
    client.close()


@pytest.fixture
def claude(sim: SimServer) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(base_url=sim.base_url, api_key="sim", max_retries=0, timeout=10)
    yield client
    client.close()


def _messages(i: int = 0, adapter: str = "chat") -> list[dict]:
    return task_messages(
        load_task("arithmetic", i + 1, split="dev")[i], ARITH, adapter=adapter, reasoning=True
    )


# -- OpenAI -------------------------------------------------------------------------------------
def test_openai_chat_and_n(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(model=FAST, messages=_messages())
    text = r.choices[0].message.content or ""
    assert "[[ ## answer ## ]]" in text and r.usage is not None and r.usage.completion_tokens > 0
    many = oai.chat.completions.create(
        model=FAST, messages=_messages(), n=4, temperature=1.0, seed=3
    )
    assert len(many.choices) == 4
    assert [m.id for m in oai.models.list()][:3] == ["sim-small", "sim-medium", "sim-large"]


class Forecast(BaseModel):
    city: str
    days: int
    rain: bool
    temps: list[float]


def test_openai_json_schema_and_json_object(oai: openai.OpenAI) -> None:
    schema = Forecast.model_json_schema()
    r = oai.chat.completions.create(
        model=FAST,
        messages=[{"role": "user", "content": "Forecast for Oslo"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "Forecast", "strict": True, "schema": schema},
        },
    )
    Forecast.model_validate_json(r.choices[0].message.content or "")
    parsed = oai.chat.completions.parse(
        model=FAST,
        messages=[{"role": "user", "content": "Forecast for Oslo"}],
        response_format=Forecast,
    )
    assert isinstance(parsed.choices[0].message.parsed, Forecast)
    # DSPy's JSON adapter with response_format json_object
    r = oai.chat.completions.create(
        model=FAST, messages=_messages(adapter="json"), response_format={"type": "json_object"}
    )
    assert set(json.loads(r.choices[0].message.content or "")) == {"reasoning", "answer"}


def test_openai_tools_and_tool_choice(oai: openai.OpenAI) -> None:
    msgs = [{"role": "user", "content": "Weather in Oslo for 3 days?"}]
    forced = oai.chat.completions.create(
        model=FAST,
        messages=msgs,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    choice = forced.choices[0]
    assert choice.finish_reason == "stop"  # as OpenAI does when a function is forced
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert isinstance(args["city"], str) and isinstance(args["days"], int)
    auto = oai.chat.completions.create(
        model=FAST, messages=msgs, tools=[WEATHER_TOOL], tool_choice="auto"
    )
    assert auto.choices[0].finish_reason == "tool_calls"
    follow = [
        *msgs,
        auto.choices[0].message.model_dump(exclude_none=True),
        {
            "role": "tool",
            "tool_call_id": auto.choices[0].message.tool_calls[0].id,
            "content": "Sunny",
        },
    ]
    final = oai.chat.completions.create(model=FAST, messages=follow, tools=[WEATHER_TOOL])
    assert final.choices[0].message.tool_calls is None and "Sunny" in (
        final.choices[0].message.content or ""
    )
    none = oai.chat.completions.create(
        model=FAST, messages=msgs, tools=[WEATHER_TOOL], tool_choice="none"
    )
    assert none.choices[0].message.tool_calls is None


def test_openai_streaming_joins_to_the_non_streamed_reply(oai: openai.OpenAI) -> None:
    whole = oai.chat.completions.create(model=FAST, messages=_messages(1), n=2, seed=5)
    stream = oai.chat.completions.create(
        model=FAST,
        messages=_messages(1),
        n=2,
        seed=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    parts: dict[int, str] = {0: "", 1: ""}
    finish: dict[int, str | None] = {}
    usage = None
    chunks = 0
    for chunk in stream:
        chunks += 1
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            parts[c.index] += c.delta.content or ""
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    assert chunks > 4
    assert (
        parts[0] == whole.choices[0].message.content
        and parts[1] == whole.choices[1].message.content
    )
    assert finish == {0: "stop", 1: "stop"}
    assert (
        usage is not None
        and whole.usage is not None
        and usage.total_tokens == whole.usage.total_tokens
    )
    # tool-call arguments stream too
    msgs = [{"role": "user", "content": "Weather?"}]
    one = oai.chat.completions.create(
        model=FAST, messages=msgs, tools=[WEATHER_TOOL], tool_choice="required"
    )
    args = ""
    for chunk in oai.chat.completions.create(
        model=FAST, messages=msgs, tools=[WEATHER_TOOL], tool_choice="required", stream=True
    ):
        for c in chunk.choices:
            for t in c.delta.tool_calls or []:
                args += t.function.arguments or ""
    assert args == one.choices[0].message.tool_calls[0].function.arguments


def test_openai_errors_raise_the_sdk_exception_types(sim: SimServer, oai: openai.OpenAI) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="gpt-nope", messages=msgs)
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model=FAST, messages=msgs, n=500)
    sim.set_faults(FAST, rpm_limit=1)
    oai.chat.completions.create(model=FAST, messages=msgs)
    with pytest.raises(openai.RateLimitError) as limited:
        oai.chat.completions.create(model=FAST, messages=msgs)
    assert float(limited.value.response.headers["retry-after"]) > 0
    sim.reset()
    sim.set_faults(FAST, error_rate=1.0)
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model=FAST, messages=msgs)
    sim.reset()
    sim.outage(FAST)
    with pytest.raises(openai.InternalServerError) as down:
        oai.chat.completions.create(model=FAST, messages=msgs)
    assert down.value.status_code == 503
    sim.reset()
    sim.set_faults(FAST, hang_rate=1.0, hang_s=5)
    with pytest.raises(openai.APITimeoutError):
        oai.with_options(timeout=0.3).chat.completions.create(model=FAST, messages=msgs)


def test_openai_retries_honour_retry_after(sim: SimServer) -> None:
    import time

    sim.set_faults(FAST, error_rate=0.5, error_retry_after_s=0.01)
    client = openai.OpenAI(base_url=sim.openai_base_url, api_key="sim", max_retries=8, timeout=10)
    t0 = time.monotonic()
    for i in range(6):
        client.chat.completions.create(model=FAST, messages=[{"role": "user", "content": f"q{i}"}])
    stats = sim.model_stats(FAST)
    assert stats["ok"] == 6 and stats["requests"] > 6  # some calls failed and were retried
    # the SDK waited the 10 ms the server asked for, not its own 0.5 s+ backoff
    assert time.monotonic() - t0 < 0.5 * (stats["requests"] - 6)
    client.close()


# -- Anthropic ----------------------------------------------------------------------------------
def test_anthropic_messages(claude: anthropic.Anthropic) -> None:
    msgs = _messages()
    r = claude.messages.create(
        model=FAST, max_tokens=400, system=msgs[0]["content"], messages=msgs[1:]
    )
    assert r.stop_reason == "end_turn" and r.content[0].type == "text"
    assert "[[ ## answer ## ]]" in r.content[0].text
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0


def test_anthropic_tools_and_tool_choice(claude: anthropic.Anthropic) -> None:
    tool = {
        "name": "get_weather",
        "description": "Weather",
        "input_schema": WEATHER_TOOL["function"]["parameters"],
    }
    r = claude.messages.create(
        model=FAST,
        max_tokens=200,
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=[tool],
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    assert r.stop_reason == "tool_use"
    block = next(b for b in r.content if b.type == "tool_use")
    assert block.name == "get_weather" and isinstance(block.input["days"], int)
    follow = claude.messages.create(
        model=FAST,
        max_tokens=200,
        tools=[tool],
        messages=[
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": [b.model_dump() for b in r.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "Rainy"}],
            },
        ],
    )
    assert follow.stop_reason == "end_turn" and "Rainy" in follow.content[0].text


def test_anthropic_streaming_joins_to_the_non_streamed_reply(claude: anthropic.Anthropic) -> None:
    msgs = _messages(2)
    kwargs = {"model": FAST, "max_tokens": 400, "system": msgs[0]["content"], "messages": msgs[1:]}
    whole = claude.messages.create(**kwargs)
    with claude.messages.stream(**kwargs) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == whole.content[0].text
    assert (
        final.usage.output_tokens == whole.usage.output_tokens and final.stop_reason == "end_turn"
    )
    tool = {
        "name": "lookup",
        "description": "Find",
        "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
    }
    tkw = {
        "model": FAST,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "find x"}],
        "tools": [tool],
        "tool_choice": {"type": "any"},
    }
    whole_tool = claude.messages.create(**tkw)
    with claude.messages.stream(**tkw) as stream:
        streamed_tool = stream.get_final_message()
    assert streamed_tool.content[0].input == whole_tool.content[0].input


def test_anthropic_errors_raise_the_sdk_exception_types(
    sim: SimServer, claude: anthropic.Anthropic
) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.create(model="claude-nope", max_tokens=5, messages=msgs)
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(
            model=FAST, max_tokens=5, messages=msgs, extra_body={"temperature": 1.5}
        )
    sim.set_faults(FAST, rpm_limit=1)
    claude.messages.create(model=FAST, max_tokens=5, messages=msgs)
    with pytest.raises(anthropic.RateLimitError):
        claude.messages.create(model=FAST, max_tokens=5, messages=msgs)
    sim.reset()
    sim.outage(FAST)
    with pytest.raises(anthropic.InternalServerError):
        claude.messages.create(model=FAST, max_tokens=5, messages=msgs)
    sim.reset()
    sim.set_faults(FAST, hang_rate=1.0, hang_s=5)
    with pytest.raises(anthropic.APITimeoutError):
        claude.with_options(timeout=0.3).messages.create(model=FAST, max_tokens=5, messages=msgs)


def test_sdks_authenticate_with_a_key() -> None:
    config = SimConfig(models=[ModelSpec(name="m", skill=0.5)], api_keys=["sk-right"])
    with SimServer(config) as sim:
        bad = openai.OpenAI(base_url=sim.openai_base_url, api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        good = openai.OpenAI(base_url=sim.openai_base_url, api_key="sk-right", max_retries=0)
        assert good.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        ).choices
        with pytest.raises(anthropic.AuthenticationError):
            anthropic.Anthropic(
                base_url=sim.base_url, api_key="sk-wrong", max_retries=0
            ).messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}])
        ok = anthropic.Anthropic(base_url=sim.base_url, api_key="sk-right", max_retries=0)
        assert ok.messages.create(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        ).content
        for c in (bad, good):
            c.close()
        ok.close()
