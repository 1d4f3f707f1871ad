"""Reading prompts: DSPy's chat- and JSON-adapter formats, and anything else as plain text.

``parse_messages(messages)`` turns a canonical message list into a ``ParsedPrompt``: the
declared input and output fields with their types (and JSON schemas from the type notes),
the instructions, the demo pairs, the final inputs, and the prompt's hash. Parses are cached
by that hash (``PromptCache``), so the hot path of a repeated prompt is one hash and one
dict lookup.
"""

from __future__ import annotations

import ast
import json
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

from dspex.sim._draw import digest

__all__ = [
    "FieldInfo",
    "ParsedPrompt",
    "PromptCache",
    "Tool",
    "Turn",
    "canonical_messages",
    "estimate_tokens",
    "parse_markers",
    "parse_messages",
    "parse_react_tools",
]

PromptKind = Literal["chat", "json", "plain"]

_INPUTS_HEAD = "Your input fields are:"
_OUTPUTS_HEAD = "Your output fields are:"
_STRUCTURE_HEAD = "All interactions will be structured in the following way"
_OBJECTIVE_HEAD = "In adhering to this structure, your objective is: "
_JSON_OUTPUTS = "Outputs will be a JSON object with the following fields."
_MARKER_RE = re.compile(r"\[\[ ## ([A-Za-z_][A-Za-z0-9_]*) ## \]\]")
_FIELD_LINE_RE = re.compile(r"^(\d+)\. `([^`]+)` \(")
_NOTE_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}\s+# note: the value you produce (.*)")
_RESPOND_RE = re.compile(r"\n\nRespond with (the corresponding output fields|a JSON object)")


@dataclass
class FieldInfo:
    name: str
    type_str: str = "str"
    description: str = ""
    #: the JSON schema from a "must adhere to the JSON schema" note, when there is one
    schema: dict[str, Any] | None = None
    note: str = ""


@dataclass
class Turn:
    """A demo (or history) pair: the user message's fields and the assistant message's."""

    inputs: dict[str, str]
    outputs: dict[str, Any]


@dataclass
class Tool:
    name: str
    description: str
    args: dict[str, Any]


@dataclass
class ParsedPrompt:
    kind: PromptKind
    key: bytes
    input_fields: list[FieldInfo] = field(default_factory=list)
    output_fields: list[FieldInfo] = field(default_factory=list)
    instructions: str = ""
    demos: list[Turn] = field(default_factory=list)
    inputs: dict[str, str] = field(default_factory=dict)
    system: str = ""
    last_user: str = ""
    #: the text of the last message, whatever its role (a tool result, for instance)
    last_message: str = ""
    #: the last message is a tool result (the model should now answer in text)
    after_tool_result: bool = False
    prompt_tokens: int = 0

    @property
    def is_dspy(self) -> bool:
        return self.kind != "plain"

    @property
    def output_names(self) -> list[str]:
        return [f.name for f in self.output_fields]

    def output(self, name: str) -> FieldInfo | None:
        for f in self.output_fields:
            if f.name == name:
                return f
        return None


def estimate_tokens(text: str) -> int:
    """About four characters per token (the usual rule for English), at least one."""
    return max(1, (len(text) + 3) // 4)


def _content_text(content: Any) -> str:
    """Text of an OpenAI or Anthropic message content (str or list of parts/blocks)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, dict):
                kind = block.get("type")
                if kind in ("text", "input_text"):
                    parts.append(str(block.get("text", "")))
                elif kind == "tool_result":
                    parts.append(_content_text(block.get("content")))
                elif kind == "tool_use":
                    parts.append(
                        json.dumps(
                            {"tool": block.get("name"), "input": block.get("input")}, sort_keys=True
                        )
                    )
                else:  # images, audio, files: stand-in text so the hash still sees them
                    parts.append(f"<{kind}>")
        return "\n".join(parts)
    return str(content)


def canonical_messages(messages: list[dict[str, Any]], system: Any = None) -> list[tuple[str, str]]:
    """(role, text) pairs, with an Anthropic ``system`` as a leading system message, so the
    same prompt over either API parses and hashes the same."""
    out: list[tuple[str, str]] = []
    if system:
        out.append(("system", _content_text(system)))
    for m in messages:
        role = str(m.get("role", "user"))
        if role == "developer":
            role = "system"
        text = _content_text(m.get("content"))
        if m.get("tool_calls"):
            text += "\n" + json.dumps(m["tool_calls"], sort_keys=True)
        out.append((role, text))
    return out


def _is_tool_result(m: dict[str, Any]) -> bool:
    if m.get("role") in ("tool", "function"):
        return True
    content = m.get("content")
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )


def parse_markers(text: str) -> dict[str, str]:
    """``[[ ## name ## ]]`` sections of ``text``, without the closing request sentence (whose
    backticked markers are not fields) and without the ``completed`` marker."""
    last = None
    for m in _RESPOND_RE.finditer(text):
        last = m
    if last is not None:
        text = text[: last.start()]
    found = list(_MARKER_RE.finditer(text))
    out: dict[str, str] = {}
    for i, m in enumerate(found):
        if m.group(1) == "completed":
            continue
        end = found[i + 1].start() if i + 1 < len(found) else len(text)
        out[m.group(1)] = text[m.end() : end].strip("\n").strip()
    return out


def _balanced(text: str, start: int, open_ch: str = "(", close_ch: str = ")") -> int:
    """Index just past the bracket that closes the one before ``start``, or -1."""
    depth = 1
    i = start
    quote: str | None = None
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == open_ch:
            depth += 1
        elif ch == close_ch:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return -1


def _parse_field_lines(block: str) -> list[FieldInfo]:
    fields: list[FieldInfo] = []
    for line in block.split("\n"):
        m = _FIELD_LINE_RE.match(line)
        if m:
            end = _balanced(line, m.end())
            if end == -1:
                type_str, desc = line[m.end() :], ""
            else:
                type_str = line[m.end() : end - 1]
                desc = line[end:].removeprefix(":").strip()
            fields.append(
                FieldInfo(name=m.group(2), type_str=type_str.strip() or "str", description=desc)
            )
        elif fields and line.strip():
            fields[-1].description = (fields[-1].description + "\n" + line).strip()
    return fields


def _attach_notes(fields: list[FieldInfo], structure: str) -> None:
    """Read each output's type note; a JSON-adapter structure is a JSON object of strings."""
    texts = [structure]
    at = structure.find(_JSON_OUTPUTS)
    if at != -1:
        brace = structure.find("{", at)
        if brace != -1:
            try:
                obj, _ = json.JSONDecoder().raw_decode(structure, brace)
                if isinstance(obj, dict):
                    texts = [f"{v}" for v in obj.values() if isinstance(v, str)]
            except ValueError:
                pass
    by_name = {f.name: f for f in fields}
    for text in texts:
        for line in text.split("\n"):
            m = _NOTE_RE.search(line)
            if not m or m.group(1) not in by_name:
                continue
            f = by_name[m.group(1)]
            f.note = m.group(2).strip()
            marker = "must adhere to the JSON schema: "
            pos = f.note.find(marker)
            if pos != -1:
                try:
                    schema, _ = json.JSONDecoder().raw_decode(f.note, pos + len(marker))
                    if isinstance(schema, dict):
                        f.schema = schema
                except ValueError:
                    pass


def _parse_json_object(text: str) -> dict[str, Any] | None:
    s = text.strip()
    if s.startswith("```"):
        s = s.strip("`")
        s = s[s.find("{") :] if "{" in s else s
    start = s.find("{")
    if start == -1:
        return None
    try:
        obj, _ = json.JSONDecoder().raw_decode(s, start)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def _parse_system(system: str, parsed: ParsedPrompt) -> None:
    i_in = system.find(_INPUTS_HEAD)
    i_out = system.find(_OUTPUTS_HEAD)
    i_struct = system.find(_STRUCTURE_HEAD)
    i_obj = system.find(_OBJECTIVE_HEAD)
    end_fields = i_struct if i_struct != -1 else (i_obj if i_obj != -1 else len(system))
    if i_in != -1:
        parsed.input_fields = _parse_field_lines(
            system[i_in + len(_INPUTS_HEAD) : i_out if i_out != -1 else end_fields]
        )
    if i_out != -1:
        parsed.output_fields = _parse_field_lines(system[i_out + len(_OUTPUTS_HEAD) : end_fields])
    if i_struct != -1:
        _attach_notes(
            parsed.output_fields, system[i_struct : i_obj if i_obj != -1 else len(system)]
        )
    if i_obj != -1:
        lines = system[i_obj + len(_OBJECTIVE_HEAD) :].split("\n")
        parsed.instructions = "\n".join(
            ln[8:] if ln.startswith(" " * 8) else ln for ln in lines
        ).strip()
    if _JSON_OUTPUTS in system:
        parsed.kind = "json"


def parse_messages(
    msgs: list[tuple[str, str]], key: bytes, after_tool_result: bool = False
) -> ParsedPrompt:
    """Parse canonical (role, text) messages; ``key`` is their hash."""
    system = "\n".join(t for r, t in msgs if r == "system")
    rest = [(r, t) for r, t in msgs if r != "system"]
    parsed = ParsedPrompt(kind="plain", key=key, system=system, after_tool_result=after_tool_result)
    parsed.prompt_tokens = sum(estimate_tokens(t) + 4 for _, t in msgs)
    users = [t for r, t in rest if r == "user"]
    parsed.last_user = users[-1] if users else ""
    parsed.last_message = rest[-1][1] if rest else ""
    if _INPUTS_HEAD in system or _OUTPUTS_HEAD in system:
        parsed.kind = "chat"
        _parse_system(system, parsed)
    elif _MARKER_RE.search(parsed.last_user) and "Respond with" in parsed.last_user:
        parsed.kind = "chat"  # a DSPy prompt without its system message: fields from markers
    if parsed.kind == "plain":
        return parsed
    if "Respond with a JSON object" in parsed.last_user:
        parsed.kind = "json"
    # demos: the user/assistant pairs before the final user message
    final_idx = max((i for i, (r, _) in enumerate(rest) if r == "user"), default=-1)
    i = 0
    while i < final_idx:
        role, text = rest[i]
        if role == "user" and i + 1 < final_idx and rest[i + 1][0] == "assistant":
            reply = rest[i + 1][1]
            outputs: dict[str, Any] = dict(parse_markers(reply))
            if not outputs:
                outputs = _parse_json_object(reply) or {}
            parsed.demos.append(Turn(inputs=parse_markers(text), outputs=outputs))
            i += 2
        else:
            i += 1
    parsed.inputs = parse_markers(parsed.last_user)
    if not parsed.output_fields:
        parsed.output_fields = _outputs_from_request(parsed.last_user)
    return parsed


_REQUEST_FIELD_RE = re.compile(r"`\[\[ ## ([A-Za-z_][A-Za-z0-9_]*) ## \]\]`")


def _outputs_from_request(text: str) -> list[FieldInfo]:
    at = text.find("Respond with")
    names = [m.group(1) for m in _REQUEST_FIELD_RE.finditer(text[at:] if at != -1 else "")]
    if not names and at != -1:  # JSON adapter: "... following order of fields: `a`, then `b`."
        names = re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", text[at:])
    return [FieldInfo(name=n) for n in names if n != "completed"]


_TOOL_RE = re.compile(
    r"\(\d+\) ([A-Za-z_][A-Za-z0-9_\-]*), whose description is <desc>(.*?)</desc>", re.S
)


def parse_react_tools(instructions: str) -> list[Tool]:
    """Tools as DSPy's ReAct lists them: ``(N) name, whose description is <desc>...</desc>.
    It takes arguments {...}.`` (a Python dict literal)."""
    tools: list[Tool] = []
    for m in _TOOL_RE.finditer(instructions):
        args: dict[str, Any] = {}
        tail = instructions[m.end() : m.end() + 4000]
        at = tail.find("It takes arguments ")
        if at != -1 and at < 40:
            start = at + len("It takes arguments ")
            if tail[start : start + 1] == "{":
                end = _balanced(tail, start + 1, "{", "}")
                if end != -1:
                    literal = tail[start:end]
                    try:
                        value = ast.literal_eval(literal)
                    except (ValueError, SyntaxError):
                        try:
                            value = json.loads(literal)
                        except ValueError:
                            value = {}
                    if isinstance(value, dict):
                        args = value
        tools.append(Tool(name=m.group(1), description=m.group(2).strip(), args=args))
    return tools


class PromptCache:
    """Parsed prompts by hash (LRU). One per server; used from its event loop only."""

    def __init__(self, maxsize: int = 4096) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[bytes, ParsedPrompt] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def parse(self, messages: list[dict[str, Any]], system: Any = None) -> ParsedPrompt:
        msgs = canonical_messages(messages, system)
        key = digest(*(f"{r}\x1e{t}" for r, t in msgs))
        found = self._data.get(key)
        if found is not None:
            self.hits += 1
            self._data.move_to_end(key)
            return found
        self.misses += 1
        after_tool = bool(messages) and _is_tool_result(messages[-1])
        parsed = parse_messages(msgs, key, after_tool)
        if self.maxsize:
            self._data[key] = parsed
            if len(self._data) > self.maxsize:
                self._data.popitem(last=False)
        return parsed
