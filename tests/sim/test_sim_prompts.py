"""Reading DSPy's chat and JSON adapter prompts (built by hand in DSPy's exact format)."""

from __future__ import annotations

import json

from fixtures.sim import dspy_messages, task_messages

from dspex.sim import get_task, load_task
from dspex.sim.prompts import PromptCache, estimate_tokens, parse_markers, parse_react_tools

ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "score": {"type": "number"}},
    "required": ["city", "score"],
}


def _parse(messages: list[dict], system: object = None):
    return PromptCache().parse(messages, system)


def test_chat_adapter_fields_types_notes_and_instructions() -> None:
    msgs = dspy_messages(
        [("question", "str"), ("context", "list[str]")],
        [
            ("reasoning", "str"),
            ("answer", "float"),
            ("tags", "dict[str, list[int]]"),
            ("pick", "Literal['a', 'b (c)']"),
            ("info", "Info"),
        ],
        {"question": "What is 2+3?", "context": ["x", "y"]},
        instructions="Answer questions with short factoid answers.\nBe brief.",
        schemas={"info": ANSWER_SCHEMA},
        descs={"question": "The question to answer"},
    )
    p = _parse(msgs)
    assert p.kind == "chat"
    assert [(f.name, f.type_str) for f in p.input_fields] == [
        ("question", "str"),
        ("context", "list[str]"),
    ]
    assert p.input_fields[0].description == "The question to answer"
    assert [(f.name, f.type_str) for f in p.output_fields] == [
        ("reasoning", "str"),
        ("answer", "float"),
        ("tags", "dict[str, list[int]]"),
        ("pick", "Literal['a', 'b (c)']"),
        ("info", "Info"),
    ]
    assert p.output("answer").note == "must be a single float value"
    assert p.output("info").schema == ANSWER_SCHEMA
    assert p.instructions == "Answer questions with short factoid answers.\nBe brief."
    assert p.inputs == {"question": "What is 2+3?", "context": "[1] «x»\n[2] «y»"}
    assert p.demos == []


def test_json_adapter_is_recognised_without_response_format() -> None:
    msgs = dspy_messages(
        [("question", "str")],
        [("answer", "int"), ("info", "Info")],
        {"question": "q?"},
        adapter="json",
        schemas={"info": ANSWER_SCHEMA},
    )
    assert "Outputs will be a JSON object with the following fields." in msgs[0]["content"]
    p = _parse(msgs)
    assert p.kind == "json"
    assert p.output_names == ["answer", "info"]
    assert p.output("info").schema == ANSWER_SCHEMA
    assert p.inputs == {"question": "q?"}


def test_demos_are_pairs_before_the_final_message() -> None:
    task = get_task("arithmetic")
    train = load_task("arithmetic", 3, split="train")
    for adapter in ("chat", "json"):
        msgs = task_messages(train[2], task, demos=train[:2], reasoning=True, adapter=adapter)
        p = _parse(msgs)
        assert len(p.demos) == 2
        assert p.demos[0].inputs == {"question": train[0].question}
        assert str(p.demos[1].outputs["answer"]) == train[1].answer
        assert p.inputs == {"question": train[2].question}
        assert p.output_names == ["reasoning", "answer"]


def test_markers_ignore_the_closing_request_and_completed() -> None:
    text = "[[ ## a ## ]]\nx\n\n[[ ## b ## ]]\ny\n\nz\n\nRespond with the corresponding output fields, starting with the field `[[ ## c ## ]]`, and then ending with the marker for `[[ ## completed ## ]]`."
    assert parse_markers(text) == {"a": "x", "b": "y\n\nz"}
    assert parse_markers("[[ ## out ## ]]\n5\n\n[[ ## completed ## ]]") == {"out": "5"}
    assert parse_markers("no markers") == {}


def test_react_tools_are_read_from_the_instructions() -> None:
    instructions = (
        "You are an Agent.\n"
        "(1) search, whose description is <desc>Search the web. Returns {'hits': [...]}</desc>. It takes arguments {'query': {'type': 'string'}, 'k': {'type': 'integer'}}.\n"
        "(2) finish, whose description is <desc>Marks the task as complete.</desc>. It takes arguments {}.\n"
    )
    tools = parse_react_tools(instructions)
    assert [t.name for t in tools] == ["search", "finish"]
    assert tools[0].args == {"query": {"type": "string"}, "k": {"type": "integer"}}
    assert tools[1].args == {}
    assert parse_react_tools("no tools") == []


def test_plain_prompts_and_anthropic_system() -> None:
    p = _parse(
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hello"}, {"type": "image", "source": {}}],
            }
        ],
        system="Be nice",
    )
    assert p.kind == "plain"
    assert p.system == "Be nice"
    assert p.last_user == "Hello\n<image>"
    # the same prompt through either API hashes the same
    a = _parse([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    b = _parse([{"role": "user", "content": "U"}], system=[{"type": "text", "text": "S"}])
    assert a.key == b.key
    tool_turn = _parse(
        [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
            {"role": "tool", "content": "42"},
        ]
    )
    assert tool_turn.after_tool_result


def test_cache_returns_the_same_parse_for_the_same_prompt() -> None:
    cache = PromptCache(maxsize=2)
    m1 = [{"role": "user", "content": "one"}]
    first = cache.parse(m1)
    assert cache.parse(json.loads(json.dumps(m1))) is first
    assert (cache.hits, cache.misses) == (1, 1)
    cache.parse([{"role": "user", "content": "two"}])
    cache.parse([{"role": "user", "content": "three"}])
    assert cache.parse(m1) is not first  # evicted (LRU of 2)


def test_token_estimate() -> None:
    assert estimate_tokens("") == 1
    assert estimate_tokens("abcd" * 10) == 10
