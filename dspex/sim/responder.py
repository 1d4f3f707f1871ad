"""Deciding what the simulated model says.

For a DSPy-format prompt the outputs are filled field by field:
- a task example in the inputs (reference tag) gets its gold answer with probability p from
  the answer model, else a plausible distractor; reasoning fields get a matching rationale;
- an instruction-proposal prompt (``proposed_instruction``) gets an instruction that carries
  the task's hints with some probability, more often when the prompt shows task data;
- a ReAct step (``next_thought`` / ``next_tool_name`` / ``next_tool_args``) calls a listed
  tool once or twice, then ``finish``;
- every other field gets a type-correct value (values.py).
The result is written in the prompt's format (chat markers or JSON) or the requested
``response_format``; native ``tools`` get a tool call. Every draw comes from a hash of
(config seed, model, prompt hash, sample index, seed), so replies are reproducible.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from dspex.sim._draw import digest, uniform
from dspex.sim.answer_model import PARAMS, AnswerModelParams, DemoJudgement, p_correct
from dspex.sim.config import ModelSpec
from dspex.sim.prompts import FieldInfo, ParsedPrompt, Turn, parse_react_tools
from dspex.sim.tasks import REF_RE, TASKS, Task, lookup_ref, normalize_answer
from dspex.sim.values import (
    format_chat_value,
    literal_options,
    text_value,
    value_for_schema,
    value_for_type,
)

__all__ = ["ChoiceOut", "Responder", "Sampling", "ToolCallOut", "ToolSpec"]

REASONING_FIELDS = ("reasoning", "rationale")
_REACT_FIELDS = {"next_thought", "next_tool_name", "next_tool_args"}
_DESCRIBE_FIELDS = ("observations", "summary", "dataset_description")


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class Sampling:
    """The request's sampling settings, in one shape for both APIs."""

    n: int = 1
    temperature: float = 1.0
    seed: int | None = None
    #: {"type": "json_object"} or {"type": "json_schema", "schema": {...}} or None
    response_format: dict[str, Any] | None = None
    tools: list[ToolSpec] = field(default_factory=list)
    #: "auto", "none", "required", or a tool name (forced)
    tool_choice: str = "auto"


@dataclass
class ToolCallOut:
    id: str
    name: str
    arguments: str  # JSON text


@dataclass
class ChoiceOut:
    text: str | None
    tool_calls: list[ToolCallOut] = field(default_factory=list)
    #: "stop", "tool_calls" (OpenAI names; the Anthropic layer maps them)
    finish_reason: str = "stop"
    forced_tool: bool = False
    #: task bookkeeping for the admin counters: (task name, answered correctly)
    task: str | None = None
    correct: bool | None = None


class Responder:
    def __init__(self, config_seed: int = 0, params: AnswerModelParams = PARAMS) -> None:
        self.config_seed = config_seed
        self.params = params

    def respond(
        self, parsed: ParsedPrompt, model: ModelSpec, sampling: Sampling
    ) -> list[ChoiceOut]:
        out: list[ChoiceOut] = []
        for i in range(sampling.n):
            # temperature 0 is greedy: every sample and seed give the same draw
            sample, seed = (0, 0) if sampling.temperature == 0 else (i, sampling.seed or 0)
            key = f"{self.config_seed}|{model.name}|{parsed.key.hex()}|{sample}|{seed}"
            out.append(self._choice(parsed, model, sampling, key))
        return out

    # -- one choice --------------------------------------------------------------------------
    def _choice(
        self, parsed: ParsedPrompt, model: ModelSpec, sampling: Sampling, key: str
    ) -> ChoiceOut:
        if sampling.tools and self._wants_tool(parsed, sampling):
            return self._tool_call(parsed, sampling, key)
        meta: dict[str, Any] = {}
        rf = (sampling.response_format or {}).get("type")
        if parsed.is_dspy:
            values = self.output_values(parsed, model, key, meta)
            if rf == "json_schema":
                text = _dumps(self._fit_schema(values, sampling.response_format or {}, key, parsed))
            elif rf == "json_object" or parsed.kind == "json":
                text = _dumps(dict(values))
            else:
                text = format_chat(values)
        else:
            answer = self._plain_task_answer(parsed, model, key, meta)
            if rf == "json_schema":
                schema = (sampling.response_format or {}).get("schema") or {}
                obj = value_for_schema(schema, "response", key, parsed.last_user)
                if answer is not None and isinstance(obj, dict):
                    slot = next((k for k in ("answer", "label", "result") if k in obj), None)
                    if slot is not None and isinstance(obj[slot], str):
                        obj[slot] = answer
                text = _dumps(obj)
            elif rf == "json_object":
                text = _dumps(
                    {
                        "answer": answer
                        if answer is not None
                        else text_value("answer", key, parsed.last_user)
                    }
                )
            elif parsed.after_tool_result:
                text = "Based on the tool result: " + parsed.last_message.strip()[:200]
            elif answer is not None:
                text = f"The answer is {answer}."
            else:
                text = text_value("reply", key, parsed.last_user)
        return ChoiceOut(text=text, task=meta.get("task"), correct=meta.get("correct"))

    # -- DSPy outputs ------------------------------------------------------------------------
    def output_values(
        self, parsed: ParsedPrompt, model: ModelSpec, key: str, meta: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A value for every declared output field, in declaration order."""
        meta = meta if meta is not None else {}
        names = set(parsed.output_names)
        context = " ".join(parsed.inputs.values()) or parsed.last_user
        if "proposed_instruction" in names:
            special = self._proposal(parsed, key)
        elif _REACT_FIELDS <= names:
            special = self._react(parsed, key)
        else:
            special = self._task_answer(parsed, model, key, meta)
            if not special and any(n in names for n in _DESCRIBE_FIELDS):
                special = self._describe(parsed, key)
        values: dict[str, Any] = {}
        for f in parsed.output_fields:
            if f.name in special:
                values[f.name] = _coerce(special[f.name], f, key)
            else:
                values[f.name] = value_for_type(f.type_str, f.name, key, context, f.schema)
        return values

    def _task_answer(
        self, parsed: ParsedPrompt, model: ModelSpec, key: str, meta: dict[str, Any]
    ) -> dict[str, Any]:
        found = next(
            (f for f in (lookup_ref(v) for v in parsed.inputs.values()) if f is not None), None
        )
        if found is None:
            return {}
        task, ex = found
        names = parsed.output_names
        # the task's answer goes to its own field, or to the one output that is not reasoning;
        # other multi-output signatures (a different step of a program) get generic values
        others = [n for n in names if n not in REASONING_FIELDS]
        answer_name = (
            task.answer_field
            if task.answer_field in names
            else (others[0] if len(others) == 1 else None)
        )
        if answer_name is None:
            return {}
        judged = [_judge_turn(task, t, answer_name) for t in parsed.demos]
        reasoning = any(n in REASONING_FIELDS for n in names)
        p = p_correct(
            task,
            ex,
            model.skill_for(task.name),
            parsed.instructions,
            judged,
            reasoning,
            self.params,
        )
        correct = uniform(key, "answer") < p
        answer, why = self._answer(ex.answer, ex.distractors, ex.rationale, correct, key)
        meta["task"], meta["correct"] = task.name, correct
        out: dict[str, Any] = {answer_name: answer}
        for n in names:
            if n in REASONING_FIELDS:
                out[n] = why
        return out

    def _answer(
        self, gold: str, distractors: tuple[str, ...], rationale: str, correct: bool, key: str
    ) -> tuple[str, str]:
        if correct or not distractors:
            return gold, rationale
        # the most plausible distractors are the most likely wrong answers
        i = int(len(distractors) * uniform(key, "distractor") ** 1.6)
        wrong = distractors[min(i, len(distractors) - 1)]
        return wrong, f"Reading the question quickly, the result looks like {wrong}."

    def _plain_task_answer(
        self, parsed: ParsedPrompt, model: ModelSpec, key: str, meta: dict[str, Any]
    ) -> str | None:
        found = lookup_ref(parsed.last_user)
        if found is None:
            return None
        task, ex = found
        p = p_correct(task, ex, model.skill_for(task.name), parsed.system, (), False, self.params)
        correct = uniform(key, "answer") < p
        meta["task"], meta["correct"] = task.name, correct
        return self._answer(ex.answer, ex.distractors, ex.rationale, correct, key)[0]

    # -- instruction proposals (COPRO, MIPROv2) -------------------------------------------
    def _proposal(self, parsed: ParsedPrompt, key: str) -> dict[str, Any]:
        data = "\n".join(
            [*parsed.inputs.values(), *(v for t in parsed.demos for v in t.inputs.values())]
        )
        task, shown = identify_task(data)
        basic = parsed.inputs.get("basic_instruction", "")
        attempts = _parse_attempts(data)
        best = max(attempts, key=lambda a: a[1])[0] if attempts else ""
        if task is None:
            opener = basic.strip() or "Read the inputs carefully and produce the requested outputs."
            extra = [s for s in _GENERIC if uniform(key, "generic", s) < 0.5]
            return {
                "proposed_instruction": " ".join([opener, *extra]),
                "proposed_prefix_for_output_field": "Answer:",
            }
        low = " ".join(data.lower().split())
        chosen: list[str] = []
        for h in task.hints:
            q = 0.5 if shown else 0.22
            phrase = h.phrase.lower()
            if phrase in " ".join(best.lower().split()):
                q = max(q, 0.85)
            elif phrase in " ".join(basic.lower().split()):
                q = max(q, 0.7)
            elif phrase in low:
                q = max(q, 0.5)
            if uniform(key, "hint", h.phrase) < q:
                chosen.append(h.sentence())
        for h in task.misleading:
            q = 0.12
            if h.phrase.lower() in " ".join(best.lower().split()):
                q = 0.5
            elif h.phrase.lower() in low:
                q = 0.25
            if uniform(key, "mislead", h.phrase) < q:
                chosen.append(h.sentence())
        order = sorted(chosen, key=lambda s: uniform(key, "order", s))
        openers = (
            task.opener(),
            f"You will be given {task.description}.",
            f"Solve the task: {task.description}.",
        )
        opener = openers[int(uniform(key, "opener") * len(openers))]
        return {
            "proposed_instruction": " ".join([opener, *order]),
            "proposed_prefix_for_output_field": task.answer_field.capitalize() + ":",
        }

    def _describe(self, parsed: ParsedPrompt, key: str) -> dict[str, Any]:
        data = "\n".join(
            [*parsed.inputs.values(), *(v for t in parsed.demos for v in t.inputs.values())]
        )
        task, shown = identify_task(data)
        if task is None or not shown:
            return {}
        notes = [h.phrase for h in task.hints if uniform(key, "describe", h.phrase) < 0.5]
        text = f"The examples are {task.description}."
        if notes:
            text += " A good solver should " + "; ".join(notes) + "."
        return {name: text for name in _DESCRIBE_FIELDS}

    # -- ReAct -------------------------------------------------------------------------------
    def _react(self, parsed: ParsedPrompt, key: str) -> dict[str, Any]:
        tools = [t for t in parse_react_tools(parsed.instructions) if t.name != "finish"]
        steps = sum(1 for k in parsed.inputs if re.fullmatch(r"tool_name_\d+", k))
        target = 1 + int(uniform(key, "react_steps") * 2)  # one or two tool calls, then finish
        question = next(
            (
                v
                for k, v in parsed.inputs.items()
                if k not in ("trajectory",) and not re.search(r"_\d+$", k)
            ),
            "",
        )
        query = REF_RE.sub("", question).strip()[:120]
        if not tools or steps >= target:
            return {
                "next_thought": "I now have enough information to answer.",
                "next_tool_name": "finish",
                "next_tool_args": {},
            }
        tool = tools[steps % len(tools)]
        args: dict[str, Any] = {}
        for name, schema in tool.args.items():
            kind = schema.get("type") if isinstance(schema, dict) else None
            if kind in (None, "string"):
                args[name] = query or text_value(name, key)
            else:
                args[name] = value_for_schema(
                    schema if isinstance(schema, dict) else {}, name, key, query
                )
        return {
            "next_thought": f"I should use {tool.name} to find out: {query}",
            "next_tool_name": tool.name,
            "next_tool_args": args,
        }

    # -- native tools ------------------------------------------------------------------------
    def _wants_tool(self, parsed: ParsedPrompt, sampling: Sampling) -> bool:
        choice = sampling.tool_choice
        if choice == "none":
            return False
        if choice in ("auto",):
            return not parsed.after_tool_result
        return True  # "required" or a named tool

    def _tool_call(self, parsed: ParsedPrompt, sampling: Sampling, key: str) -> ChoiceOut:
        forced = sampling.tool_choice not in ("auto", "required", "none")
        if forced:
            tool = next(t for t in sampling.tools if t.name == sampling.tool_choice)
        else:
            tool = sampling.tools[int(uniform(key, "tool") * len(sampling.tools))]
        context = REF_RE.sub("", parsed.last_user)
        args = value_for_schema(
            tool.parameters or {"type": "object", "properties": {}}, tool.name, key, context
        )
        if not isinstance(args, dict):
            args = {"value": args}
        call_id = "call_" + digest(key, "toolcall").hex()[:24]
        return ChoiceOut(
            text=None,
            tool_calls=[ToolCallOut(id=call_id, name=tool.name, arguments=_dumps(args))],
            finish_reason="stop" if forced else "tool_calls",
            forced_tool=forced,
        )

    # -- response_format json_schema ------------------------------------------------------
    def _fit_schema(
        self, values: dict[str, Any], rf: dict[str, Any], key: str, parsed: ParsedPrompt
    ) -> Any:
        schema = rf.get("schema") or {}
        props = schema.get("properties") if isinstance(schema, dict) else None
        if not isinstance(props, dict) or not props:
            return dict(values)
        out: dict[str, Any] = {}
        for name, sub in props.items():
            if name in values and _matches(values[name], sub, schema):
                out[name] = values[name]
            else:
                out[name] = value_for_schema(sub, name, key, parsed.last_user, root=schema)
        return out


_GENERIC = (
    "Be precise and concise.",
    "Think about what each input means before answering.",
    "Make sure every output field is filled in.",
)


def identify_task(text: str) -> tuple[Task | None, bool]:
    """The task a proposal prompt is about, and whether it shows task data (reference tags).

    Without tags, the task whose fields are all named in the text (backticked names first,
    then bare words) wins, the most specific first."""
    refs = [m.group(1) for m in REF_RE.finditer(text)]
    counts = Counter(r for r in refs if r in TASKS)
    if counts:
        return TASKS[counts.most_common(1)[0][0]], True
    for pattern in (r"`([A-Za-z_][A-Za-z0-9_]*)`", r"\b([A-Za-z_][A-Za-z0-9_]*)\b"):
        found = set(re.findall(pattern, text))
        matches = [t for t in TASKS.values() if t.fields <= found]
        if matches:
            return max(matches, key=lambda t: (len(t.fields), t.name)), False
    return None, False


_ATTEMPT_RE = re.compile(r"Instruction #(\d+): (.*?)(?=»|\n|$)")
_SCORE_RE = re.compile(r"(?:Resulting )?Score #(\d+): ([-+]?\d+(?:\.\d+)?)")


def _parse_attempts(text: str) -> list[tuple[str, float]]:
    """COPRO's attempted instructions (and MIPRO's history) as (instruction, score)."""
    instructions = {m.group(1): m.group(2) for m in _ATTEMPT_RE.finditer(text)}
    scores = {m.group(1): float(m.group(2)) for m in _SCORE_RE.finditer(text)}
    return [(ins, scores[k]) for k, ins in instructions.items() if k in scores]


def _judge_turn(task: Task, turn: Turn, answer_name: str) -> DemoJudgement:
    found = next((f for f in (lookup_ref(v) for v in turn.inputs.values()) if f is not None), None)
    if found is None:
        return DemoJudgement(None, None, None)
    demo_task, ex = found
    answer = turn.outputs.get(answer_name)
    if answer is None:
        return DemoJudgement(demo_task.name, ex.cluster, None)
    return DemoJudgement(
        demo_task.name, ex.cluster, normalize_answer(answer) == normalize_answer(ex.answer)
    )


def _coerce(value: Any, f: FieldInfo, key: str) -> Any:
    """Fit a produced value to the field's declared type."""
    t = f.type_str.replace(" ", "")
    options = literal_options(f.type_str)
    if options is not None:
        if value in options:
            return value
        low = {str(o).lower(): o for o in options}
        return low.get(str(value).lower(), options[int(uniform(key, f.name, "lit") * len(options))])
    if t in ("int", "int|None", "Optional[int]"):
        try:
            return int(float(str(value).replace(",", "").replace("$", "")))
        except ValueError:
            return value_for_type("int", f.name, key)
    if t in ("float", "float|None", "Optional[float]"):
        try:
            return float(str(value).replace(",", "").replace("$", ""))
        except ValueError:
            return value_for_type("float", f.name, key)
    if t == "str":
        return value if isinstance(value, str) else format_chat_value(value)
    return value


def _matches(value: Any, sub: Any, root: dict[str, Any]) -> bool:
    """A light check that ``value`` has the JSON type ``sub`` asks for."""
    if not isinstance(sub, dict):
        return True
    if "$ref" in sub or "anyOf" in sub or "allOf" in sub or "oneOf" in sub:
        return True
    if "enum" in sub:
        return value in sub["enum"]
    kind = sub.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    checks = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "array": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, dict),
        "null": lambda v: v is None,
        None: lambda v: True,
    }
    return any(checks.get(k, lambda v: True)(value) for k in kinds)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def format_chat(values: dict[str, Any]) -> str:
    """Outputs under DSPy's chat markers, ending with the completed marker."""
    parts = [f"[[ ## {k} ## ]]\n{format_chat_value(v)}" for k, v in values.items()]
    parts.append("[[ ## completed ## ]]")
    return "\n\n".join(parts)
