"""Function calls, tool results, token usage and model outputs, in the shapes providers send."""

import json

import pytest

from dspex.clients.base_lm import Choice, LMResponse, ToolCall, Usage
from dspex.errors import ValidationError
from dspex.types import FunctionCall, ModelOutput, TokenUsage, ToolResult, validate

# ---- FunctionCall -------------------------------------------------------------------------


def test_function_call_our_shape():
    call = validate(
        FunctionCall, {"function_name": "search", "arguments": {"q": "ray"}, "call_id": "c1"}
    )
    assert (call.function_name, call.arguments, call.call_id) == ("search", {"q": "ray"}, "c1")
    assert validate("function_call", {"function_name": "now"}).arguments == {}


def test_function_call_openai_tool_call_shape():
    raw = {
        "id": "call_9",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    call = validate("function_call", raw)
    assert (call.function_name, call.arguments, call.call_id) == (
        "get_weather",
        {"city": "Paris"},
        "call_9",
    )
    empty = validate("function_call", {"id": "c", "function": {"name": "ping", "arguments": ""}})
    assert empty.arguments == {}


def test_function_call_anthropic_tool_use_shape():
    raw = {"type": "tool_use", "id": "toolu_1", "name": "calc", "input": {"expr": "2+3"}}
    call = validate("function_call", raw)
    assert (call.function_name, call.arguments, call.call_id) == (
        "calc",
        {"expr": "2+3"},
        "toolu_1",
    )


def test_function_call_from_dspex_toolcall_and_json_text():
    call = validate(FunctionCall, ToolCall(name="lookup", arguments={"k": 1}, id="x"))
    assert (call.function_name, call.arguments, call.call_id) == ("lookup", {"k": 1}, "x")
    call = validate(FunctionCall, json.dumps({"name": "f", "arguments": {"a": [1, 2]}}))
    assert call.function_name == "f" and call.arguments == {"a": [1, 2]}


@pytest.mark.parametrize(
    ("raw", "where", "constraint", "phrase"),
    [
        (
            {"function_name": ""},
            "call.function_name",
            "min_length=1",
            "must have at least 1 character",
        ),
        (
            {"function_name": "f" * 101},
            "call.function_name",
            "max_length=100",
            "at most 100 characters",
        ),
        (
            {"function_name": "get weather"},
            "call.function_name",
            "pattern",
            "must match the pattern",
        ),
        ({"function_name": "9lives"}, "call.function_name", "pattern", "got '9lives'"),
        (
            {"arguments": {}},
            "call.function_name",
            "required",
            "call.function_name is required but missing",
        ),
        (
            {"name": "f", "arguments": '{"a": '},
            "call.arguments",
            "json",
            "call.arguments must be valid JSON",
        ),
        (
            {"name": "f", "arguments": "[1, 2]"},
            "call.arguments",
            "type=object",
            "must be a JSON object",
        ),
        (
            {"name": "f", "arguments": [1, 2]},
            "call.arguments",
            "type=object",
            "call.arguments must be an object",
        ),
        ({"name": "f", "extra": 1}, "call.extra", "no_extra_fields", "is not an allowed field"),
    ],
)
def test_function_call_rejects(raw, where, constraint, phrase):
    with pytest.raises(ValidationError) as info:
        validate(FunctionCall, raw, field="call")
    assert (info.value.field, info.value.constraint) == (where, constraint)
    assert phrase in str(info.value)


def test_function_call_schema_is_closed_and_uses_field_names():
    schema = FunctionCall.model_json_schema()
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["function_name"]
    assert schema["properties"]["arguments"]["type"] == "object"
    assert schema["properties"]["function_name"]["maxLength"] == 100


# ---- ToolResult ---------------------------------------------------------------------------


def test_tool_result_success_and_failure():
    ok = ToolResult.ok("calc", 5, call_id="c1")
    assert ok.success and ok.error is None and ok.result == 5
    bad = ToolResult.failed("calc", "division by zero")
    assert not bad.success and bad.result is None
    assert validate("tool_result", '{"tool_name": "s", "success": true, "result": [1]}').result == [
        1
    ]


@pytest.mark.parametrize(
    ("raw", "where", "constraint"),
    [
        ({"tool_name": "s", "success": False}, "r.error", "error_explains_failure"),
        ({"tool_name": "s", "success": False, "error": "   "}, "r.error", "error_explains_failure"),
        ({"tool_name": "s", "success": True, "error": "boom"}, "r.error", "error_only_on_failure"),
        ({"tool_name": "", "success": True}, "r.tool_name", "min_length=1"),
        ({"tool_name": "s"}, "r.success", "required"),
        ({"tool_name": "s", "success": "maybe"}, "r.success", "type=boolean"),
    ],
)
def test_tool_result_rejects(raw, where, constraint):
    with pytest.raises(ValidationError) as info:
        validate(ToolResult, raw, field="r")
    assert (info.value.field, info.value.constraint) == (where, constraint)


# ---- TokenUsage ---------------------------------------------------------------------------


def test_token_usage_total_is_computed_or_checked():
    u = validate("token_usage", {"prompt_tokens": 10, "completion_tokens": 5})
    assert u.total_tokens == 15
    assert (
        validate(
            TokenUsage, {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        ).total_tokens
        == 15
    )
    assert TokenUsage(prompt_tokens=2, completion_tokens=3).total_tokens == 5
    with pytest.raises(ValidationError) as info:
        validate(
            TokenUsage,
            {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 16},
            field="usage",
        )
    assert str(info.value) == (
        "usage.total_tokens must equal prompt_tokens + completion_tokens (10 + 5 = 15), got 16"
    )
    assert info.value.constraint == "total_is_sum"


def test_token_usage_provider_shapes():
    openai = {
        "prompt_tokens": 19,
        "completion_tokens": 10,
        "total_tokens": 29,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    assert validate(TokenUsage, openai).total_tokens == 29
    anthropic = {"input_tokens": 7, "output_tokens": 3, "cache_read_input_tokens": 0}
    u = validate(TokenUsage, anthropic)
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (7, 3, 10)
    u = validate(TokenUsage, Usage(prompt_tokens=4, completion_tokens=6))
    assert u.total_tokens == 10
    assert (
        validate(TokenUsage, '{"prompt_tokens": "12", "completion_tokens": 1}').total_tokens == 13
    )


def test_token_usage_rejects_negative_and_missing():
    with pytest.raises(ValidationError) as info:
        validate(TokenUsage, {"prompt_tokens": -1, "completion_tokens": 2}, field="usage")
    assert info.value.field == "usage.prompt_tokens"
    assert "usage.prompt_tokens must be >= 0" in str(info.value)
    with pytest.raises(ValidationError) as info:
        validate(TokenUsage, {"prompt_tokens": 3}, field="usage")
    assert info.value.field == "usage.completion_tokens"
    assert info.value.constraint == "required"
    with pytest.raises(ValidationError) as info:
        validate(TokenUsage, {"input_tokens": -4, "output_tokens": 1}, field="usage")
    assert info.value.field == "usage.prompt_tokens"  # reported under our name, not the alias


def test_token_usage_adds_up():
    total = TokenUsage(prompt_tokens=1, completion_tokens=2) + TokenUsage(
        prompt_tokens=10, completion_tokens=20
    )
    assert (total.prompt_tokens, total.completion_tokens, total.total_tokens) == (11, 22, 33)
    with pytest.raises(TypeError):
        TokenUsage(prompt_tokens=1, completion_tokens=2) + 5  # type: ignore[operator]


def test_token_usage_schema_shows_no_default_total():
    props = TokenUsage.model_json_schema()["properties"]
    assert "default" not in props["total_tokens"]
    assert props["prompt_tokens"]["minimum"] == 0


# ---- ModelOutput --------------------------------------------------------------------------


def test_model_output_valid():
    out = validate(
        "model_output",
        {
            "content": "Paris",
            "model": "gpt-x",
            "usage": {"input_tokens": 3, "output_tokens": 1},
            "finish_reason": "stop",
        },
    )
    assert out.usage.total_tokens == 4 and not out.truncated
    cut = validate(ModelOutput, {"content": "Par", "model": "m", "finish_reason": "length"})
    assert cut.truncated


def test_model_output_tool_calls_must_match_finish_reason():
    with pytest.raises(ValidationError) as info:
        validate(
            ModelOutput, {"content": "", "model": "m", "finish_reason": "tool_calls"}, field="out"
        )
    assert (info.value.field, info.value.constraint) == ("out.tool_calls", "tool_calls_present")
    out = validate(
        ModelOutput,
        {
            "content": "",
            "model": "m",
            "finish_reason": "tool_use",
            "tool_calls": [{"type": "tool_use", "id": "t", "name": "calc", "input": {}}],
        },
    )
    assert out.tool_calls[0].function_name == "calc"


@pytest.mark.parametrize(
    ("raw", "where", "constraint"),
    [
        ({"content": "x", "model": ""}, "out.model", "min_length=1"),
        ({"model": "m"}, "out.content", "required"),
        (
            {
                "content": "x",
                "model": "m",
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 5},
            },
            "out.usage.total_tokens",
            "total_is_sum",
        ),
        (
            {"content": "x", "model": "m", "tool_calls": [{"name": "bad name"}]},
            "out.tool_calls[0].function_name",
            "pattern",
        ),
    ],
)
def test_model_output_rejects(raw, where, constraint):
    with pytest.raises(ValidationError) as info:
        validate(ModelOutput, raw, field="out")
    assert (info.value.field, info.value.constraint) == (where, constraint)


def test_model_output_from_lm_response():
    resp = LMResponse(
        model="sim-1",
        choices=[
            Choice(text="hello", finish_reason="stop"),
            Choice(
                text=None,
                finish_reason="tool_calls",
                tool_calls=[ToolCall("search", {"q": "x"}, "c1")],
            ),
        ],
        usage=Usage(prompt_tokens=5, completion_tokens=2),
    )
    first = ModelOutput.from_lm_response(resp)
    assert (first.content, first.model, first.finish_reason) == ("hello", "sim-1", "stop")
    assert first.usage == TokenUsage(prompt_tokens=5, completion_tokens=2)
    second = ModelOutput.from_lm_response(resp, choice=1)
    assert second.content == "" and second.tool_calls[0].call_id == "c1"
