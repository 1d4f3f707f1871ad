"""What the simulated model says, tested without HTTP: determinism, accuracy that matches the
expected score, type-correct replies for any signature, proposals, ReAct steps, tools."""

from __future__ import annotations

import json
import math
import re

import pytest
from fixtures.sim import dspy_messages, task_messages

from dspex.sim import SimConfig, expected_score, get_task, load_task, optimum
from dspex.sim.prompts import PromptCache
from dspex.sim.responder import Responder, Sampling, ToolSpec

CFG = SimConfig.for_tests()
MEDIUM = CFG.model("sim-medium-fast")


def _reply(messages: list[dict], model: str = "sim-medium-fast", **sampling: object) -> list:
    parsed = PromptCache(0).parse(messages)
    return Responder(0).respond(parsed, CFG.model(model), Sampling(**sampling))


def _answer(text: str, field: str = "answer") -> str:
    m = re.search(r"\[\[ ## " + field + r" ## \]\]\n(.*?)\n\n\[\[ ##", text, re.S)
    assert m, text
    return m.group(1)


def test_same_request_same_reply_and_temperature_redraws() -> None:
    ex = load_task("classification", 1, split="dev")[0]
    msgs = task_messages(ex, get_task("classification"))
    assert _reply(msgs)[0].text == _reply(msgs)[0].text
    greedy = _reply(msgs, n=5, temperature=0.0)
    assert len({c.text for c in greedy}) == 1  # temperature 0: every sample is the same draw
    # temperature > 0: sample index and seed enter the draw, so answers vary across many draws
    draws = {c.text for seed in range(30) for c in _reply(msgs, n=3, temperature=1.0, seed=seed)}
    assert len(draws) > 1
    assert [c.text for c in _reply(msgs, n=3, seed=7)] == [
        c.text for c in _reply(msgs, n=3, seed=7)
    ]


@pytest.mark.parametrize(
    ("name", "model", "config"),
    [
        ("arithmetic", "sim-small-fast", {}),
        ("classification", "sim-medium-fast", {"reasoning": True}),
        ("multihop", "sim-large-fast", {"hints": True}),
        ("arithmetic", "sim-medium-fast", {"demos": 3, "reasoning": True}),
        ("classification", "sim-small-fast", {"misleading": True, "wrong_demos": 2}),
    ],
)
def test_empirical_accuracy_matches_the_expected_score(name: str, model: str, config: dict) -> None:
    task = get_task(name)
    exs = load_task(name, 150, seed=0, split="dev")
    train = load_task(name, 20, seed=0, split="train")
    instructions = ""
    if config.get("hints"):
        instructions = task.best_instruction()
    if config.get("misleading"):
        instructions = task.misleading[0].sentence()
    demos = train[: config.get("demos", 0)]
    demos += [
        d.copy(**{task.answer_field: d.distractors[0]})
        for d in train[10 : 10 + config.get("wrong_demos", 0)]
    ]
    reasoning = bool(config.get("reasoning"))
    expected = expected_score(
        name, exs, model=model, instructions=instructions, demos=demos, reasoning=reasoning
    )
    hits = 0
    draws = 0
    for seed in range(4):  # 600 draws: the standard error is about 0.02
        for ex in exs:
            msgs = task_messages(
                ex, task, instructions=instructions, demos=demos, reasoning=reasoning
            )
            for c in _reply(msgs, model, seed=seed):
                hits += task.metric(ex, {task.answer_field: _answer(c.text, task.answer_field)})
                draws += 1
    observed = hits / draws
    se = math.sqrt(expected * (1 - expected) / draws)
    assert abs(observed - expected) < 4 * se, (observed, expected)


def test_wrong_answers_are_plausible_distractors() -> None:
    task = get_task("multihop")
    for ex in load_task("multihop", 40, split="dev"):
        c = _reply(task_messages(ex, task), "sim-small-fast")[0]
        got = _answer(c.text)
        assert got == ex.answer or got in ex.distractors
        assert c.correct is (got == ex.answer)


def test_optimum_configuration_scores_highest_empirically() -> None:
    task = get_task("arithmetic")
    exs = load_task("arithmetic", 120, split="dev")
    opt = optimum(task, exs, model="sim-small-fast")
    scores = {}
    for label, kwargs in {
        "baseline": {},
        "optimum": {"instructions": opt.instructions, "demos": opt.demos, "reasoning": True},
    }.items():
        hits = sum(
            task.metric(
                ex,
                {
                    "answer": _answer(
                        _reply(task_messages(ex, task, **kwargs), "sim-small-fast")[0].text
                    )
                },
            )
            for ex in exs
        )
        scores[label] = hits / len(exs)
    assert scores["optimum"] > scores["baseline"] + 0.25


@pytest.mark.parametrize("adapter", ["chat", "json"])
def test_any_signature_gets_type_correct_values(adapter: str) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "tags": {"type": "array", "items": {"type": "string"}},
            "kind": {"$ref": "#/$defs/Kind"},
        },
        "required": ["name", "age", "tags", "kind"],
        "$defs": {"Kind": {"enum": ["x", "y"]}},
    }
    outputs = [
        ("title", "str"),
        ("count", "int"),
        ("ratio", "float"),
        ("ok", "bool"),
        ("items", "list[str]"),
        ("mapping", "dict[str, int]"),
        ("choice", "Literal['red', 'green']"),
        ("maybe", "int | None"),
        ("person", "Person"),
        ("confidence", "float"),
    ]
    msgs = dspy_messages(
        [("text", "str")],
        outputs,
        {"text": "Tell me about the weather in Paris."},
        adapter=adapter,
        schemas={"person": schema},
    )
    text = _reply(msgs)[0].text
    if adapter == "json":
        values = json.loads(text)
    else:
        assert text.endswith("[[ ## completed ## ]]")
        raw = dict(re.findall(r"\[\[ ## (\w+) ## \]\]\n(.*?)(?=\n\n\[\[ ## )", text, re.S))
        values = {
            "title": raw["title"],
            "count": int(raw["count"]),
            "ratio": float(raw["ratio"]),
            "ok": {"True": True, "False": False}[raw["ok"]],
            "items": json.loads(raw["items"]),
            "mapping": json.loads(raw["mapping"]),
            "choice": raw["choice"],
            "maybe": int(raw["maybe"]),
            "person": json.loads(raw["person"]),
            "confidence": float(raw["confidence"]),
        }
    assert list(values) == [n for n, _ in outputs]
    assert isinstance(values["title"], str) and values["title"]
    assert isinstance(values["count"], int) and not isinstance(values["count"], bool)
    assert isinstance(values["ratio"], float)
    assert isinstance(values["ok"], bool)
    assert isinstance(values["items"], list) and all(isinstance(v, str) for v in values["items"])
    assert isinstance(values["mapping"], dict) and all(
        isinstance(v, int) for v in values["mapping"].values()
    )
    assert values["choice"] in ("red", "green")
    assert isinstance(values["maybe"], int)
    person = values["person"]
    assert (
        set(person) == {"name", "age", "tags", "kind"}
        and 0 <= person["age"] <= 120
        and person["kind"] in ("x", "y")
    )
    assert 0.0 <= values["confidence"] <= 1.0


def test_json_schema_response_format_fills_every_property() -> None:
    msgs = dspy_messages(
        [("question", "str")],
        [("answer", "int"), ("why", "str")],
        {"question": "q?"},
        adapter="json",
    )
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "integer"}, "why": {"type": "string"}},
        "required": ["answer", "why"],
        "additionalProperties": False,
    }
    out = json.loads(
        _reply(msgs, response_format={"type": "json_schema", "schema": schema})[0].text
    )
    assert set(out) == {"answer", "why"} and isinstance(out["answer"], int)
    plain = json.loads(
        _reply(
            [{"role": "user", "content": "hi"}],
            response_format={"type": "json_schema", "schema": schema},
        )[0].text
    )
    assert set(plain) == {"answer", "why"}
    obj = json.loads(
        _reply([{"role": "user", "content": "hi"}], response_format={"type": "json_object"})[0].text
    )
    assert isinstance(obj, dict) and obj


def test_plain_prompts_get_text_and_tasks_are_recognised_in_plain_text() -> None:
    text = _reply([{"role": "user", "content": "Write a haiku about autumn"}])[0].text
    assert isinstance(text, str) and text
    ex = load_task("arithmetic", 1, split="dev")[0]
    c = _reply([{"role": "user", "content": ex.question}])[0]
    assert c.correct is not None and c.text.startswith("The answer is ")


def _proposal_messages(data: str, extra_inputs: list[tuple[str, str]] | None = None) -> list[dict]:
    inputs = [("basic_instruction", "str")] + (extra_inputs or [])
    values = {"basic_instruction": "Given the fields `question`, produce the fields `answer`."}
    if extra_inputs:
        values.update({n: data for n, _ in extra_inputs})
    return dspy_messages(
        inputs,
        [("proposed_instruction", "str"), ("proposed_prefix_for_output_field", "str")],
        values,
    )


def test_proposals_vary_and_carry_hints_more_often_when_data_is_shown() -> None:
    task = get_task("arithmetic")
    examples = "\n".join(e.question for e in load_task("arithmetic", 5, split="train"))

    def mean_hints(msgs: list[dict]) -> tuple[float, int]:
        found = []
        texts = set()
        for seed in range(60):
            text = _reply(msgs, seed=seed)[0].text
            ins = _answer(text, "proposed_instruction")
            texts.add(ins)
            found.append(sum(h.phrase.lower() in ins.lower() for h in task.hints))
        return sum(found) / len(found), len(texts)

    blind, blind_variety = mean_hints(_proposal_messages(""))
    grounded, _ = mean_hints(_proposal_messages(examples, [("task_demos", "str")]))
    assert blind_variety > 10  # proposals vary
    assert 0.3 < blind < grounded  # some hints without data, more with data
    assert grounded > 1.4


def test_proposals_build_on_the_best_scored_attempt() -> None:
    task = get_task("arithmetic")
    best = task.hints[0].sentence() + " " + task.hints[1].sentence()
    attempts = f"[1] «Instruction #1: Just answer.»\n[2] «Resulting Score #1: 40.0»\n[3] «Instruction #2: {best}»\n[4] «Resulting Score #2: 71.5»"
    msgs = dspy_messages(
        [("attempted_instructions", "list[str]")],
        [("proposed_instruction", "str"), ("proposed_prefix_for_output_field", "str")],
        {"attempted_instructions": attempts + "\nfields `question` and `answer`"},
    )
    kept = 0
    for seed in range(40):
        ins = _answer(_reply(msgs, seed=seed)[0].text, "proposed_instruction").lower()
        kept += task.hints[0].phrase in ins
    assert kept >= 28  # ~85 % keep a phrase of the best attempt


def test_react_calls_a_tool_then_finishes_within_a_few_steps() -> None:
    ex = load_task("multihop", 1, split="dev")[0]
    instructions = (
        "Given the fields `question`, produce the fields `answer`.\n"
        "(1) lookup, whose description is <desc>Find facts.</desc>. It takes arguments {'query': {'type': 'string'}}.\n"
        "(2) finish, whose description is <desc>Marks the task as complete.</desc>. It takes arguments {}."
    )
    outputs = [
        ("next_thought", "str"),
        ("next_tool_name", "Literal['lookup', 'finish']"),
        ("next_tool_args", "dict[str, Any]"),
    ]
    trajectory = ""
    for step in range(4):
        msgs = dspy_messages(
            [("question", "str"), ("trajectory", "str")],
            outputs,
            {"question": ex.question, "trajectory": trajectory},
            instructions=instructions,
        )
        text = _reply(msgs)[0].text
        name = _answer(text, "next_tool_name")
        args = json.loads(_answer(text, "next_tool_args"))
        if name == "finish":
            assert args == {}
            break
        assert name == "lookup" and "(ref" not in args["query"] and args["query"]
        trajectory += (
            f"\n\n[[ ## thought_{step} ## ]]\n{_answer(text, 'next_thought')}\n\n[[ ## tool_name_{step} ## ]]\n{name}"
            f"\n\n[[ ## tool_args_{step} ## ]]\n{json.dumps(args)}\n\n[[ ## observation_{step} ## ]]\nsome facts"
        )
    else:
        pytest.fail("ReAct never finished")
    assert 1 <= step <= 2


def test_native_tools_and_tool_choice() -> None:
    tools = [
        ToolSpec(
            "get_weather",
            "Weather",
            {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        ),
        ToolSpec(
            "add",
            "Add",
            {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}},
        ),
    ]
    user = [{"role": "user", "content": "What is the weather in Paris?"}]
    forced = _reply(user, tools=tools, tool_choice="add")[0]
    assert forced.tool_calls[0].name == "add" and forced.finish_reason == "stop"
    assert set(json.loads(forced.tool_calls[0].arguments)) == {"a", "b"}
    auto = _reply(user, tools=tools, tool_choice="auto")[0]
    assert auto.tool_calls and auto.finish_reason == "tool_calls"
    assert _reply(user, tools=tools, tool_choice="none")[0].tool_calls == []
    after = [
        *user,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "Sunny, 21C"},
    ]
    final = _reply(after, tools=tools)[0]
    assert final.tool_calls == [] and "Sunny, 21C" in final.text
