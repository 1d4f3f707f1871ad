"""Type-correct values for any declared output: from a DSPy type string (``list[str]``,
``Literal['a', 'b']``, ``dict[str, Any]``, ``int | None``, ...) or from a JSON schema.

Values are deterministic in their ``seed`` string, so the same prompt gets the same reply.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from typing import Any

from dspex.sim._draw import uniform

__all__ = ["format_chat_value", "literal_options", "value_for_schema", "value_for_type"]

_WORDS = re.compile(r"[A-Za-z][A-Za-z'-]{2,}")
_STOP = {
    "the",
    "and",
    "for",
    "with",
    "that",
    "this",
    "what",
    "which",
    "who",
    "how",
    "are",
    "was",
    "were",
    "does",
    "did",
    "ref",
    "from",
    "into",
    "your",
    "you",
    "have",
    "has",
}
_SCORE_NAMES = ("confidence", "probability", "score", "similarity")


def _topic(context: str, seed: str) -> str:
    words = [w.lower() for w in _WORDS.findall(context) if w.lower() not in _STOP]
    if not words:
        return "the request"
    i = int(uniform(seed, "topic") * max(1, len(words) - 1))
    return " ".join(words[i : i + 3])


def text_value(name: str, seed: str, context: str = "") -> str:
    """A short, plausible sentence for a free-text field."""
    topic = _topic(context, seed)
    if name in ("reasoning", "rationale", "thought", "next_thought") or name.startswith("thought"):
        return f"Let me think about {topic} step by step, then give the result."
    pretty = name.replace("_", " ")
    return f"A simulated {pretty} about {topic}."


@lru_cache(maxsize=4096)
def _node(type_str: str) -> ast.expr | None:
    """The parsed type string (cached: a server sees the same few types again and again)."""
    try:
        return ast.parse(type_str.strip(), mode="eval").body
    except SyntaxError:
        return None


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Constant) and node.value is None:
        return "None"
    return ""


def literal_options(type_str: str) -> list[Any] | None:
    """The options of a ``Literal[...]`` type string, or None."""
    node = _node(type_str)
    if isinstance(node, ast.Subscript) and _name(node.value) == "Literal":
        sl = node.slice
        elts = sl.elts if isinstance(sl, ast.Tuple) else [sl]
        return [e.value for e in elts if isinstance(e, ast.Constant)]
    return None


def value_for_type(
    type_str: str, name: str, seed: str, context: str = "", schema: dict[str, Any] | None = None
) -> Any:
    """A value of the type ``type_str`` names (the JSON schema wins for custom types)."""
    node = _node(type_str)
    if node is None:
        return (
            value_for_schema(schema, name, seed, context)
            if schema
            else text_value(name, seed, context)
        )
    return _from_node(node, name, seed, context, schema, 0)


def _from_node(
    node: ast.expr, name: str, seed: str, context: str, schema: dict[str, Any] | None, depth: int
) -> Any:
    if depth > 6:
        return None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):  # X | None
        left, right = node.left, node.right
        pick = right if _name(left) == "None" else left
        return _from_node(pick, name, seed, context, schema, depth + 1)
    if isinstance(node, ast.Subscript):
        head = _name(node.value)
        sl = node.slice
        args = list(sl.elts) if isinstance(sl, ast.Tuple) else [sl]
        if head == "Literal":
            options = [a.value for a in args if isinstance(a, ast.Constant)]
            return options[int(uniform(seed, name, "lit") * len(options))] if options else ""
        if head in ("Optional",):
            return _from_node(args[0], name, seed, context, schema, depth + 1)
        if head == "Union":
            pick = next((a for a in args if _name(a) != "None"), args[0])
            return _from_node(pick, name, seed, context, schema, depth + 1)
        if head in ("list", "List", "set", "Set", "Sequence", "frozenset"):
            return [
                _from_node(args[0], f"{name}_{i}", seed, context, None, depth + 1) for i in range(2)
            ]
        if head in ("tuple", "Tuple"):
            items = [a for a in args if not (isinstance(a, ast.Constant) and a.value is Ellipsis)]
            return [
                _from_node(a, f"{name}_{i}", seed, context, None, depth + 1)
                for i, a in enumerate(items)
            ]
        if head in ("dict", "Dict", "Mapping"):
            value_node = args[1] if len(args) > 1 else ast.Name(id="str")
            return {"key": _from_node(value_node, f"{name}_value", seed, context, None, depth + 1)}
        if head == "Annotated":
            return _from_node(args[0], name, seed, context, schema, depth + 1)
        return (
            value_for_schema(schema, name, seed, context)
            if schema
            else text_value(name, seed, context)
        )
    head = _name(node)
    u = uniform(seed, name, "scalar")
    if head == "str":
        return text_value(name, seed, context)
    if head == "bool":
        return u < 0.5
    if head == "int":
        return int(u * 100)
    if head == "float":
        return round(u, 3) if any(s in name for s in _SCORE_NAMES) else round(u * 100, 2)
    if head in ("Any", "object"):
        return text_value(name, seed, context)
    if head in ("list", "List"):
        return [text_value(f"{name}_{i}", seed, context) for i in range(2)]
    if head in ("dict", "Dict"):
        return {"key": text_value(name, seed, context)}
    if head == "None":
        return None
    # a custom type (pydantic model, enum, ...): its JSON schema from the type note
    if schema:
        return value_for_schema(schema, name, seed, context)
    return text_value(name, seed, context)


def value_for_schema(
    schema: dict[str, Any] | None,
    name: str,
    seed: str,
    context: str = "",
    *,
    root: dict[str, Any] | None = None,
    depth: int = 0,
) -> Any:
    """A value that validates against ``schema`` (objects get every property)."""
    if not isinstance(schema, dict) or depth > 12:
        return text_value(name, seed, context)
    root = root if root is not None else schema
    if "$ref" in schema:
        target = _resolve(root, str(schema["$ref"]))
        return value_for_schema(target, name, seed, context, root=root, depth=depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        options = list(schema["enum"])
        return options[int(uniform(seed, name, "enum") * len(options))]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            options = [
                s for s in schema[key] if not (isinstance(s, dict) and s.get("type") == "null")
            ]
            return value_for_schema(
                (options or schema[key])[0], name, seed, context, root=root, depth=depth + 1
            )
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            part = (
                _resolve(root, part["$ref"]) if isinstance(part, dict) and "$ref" in part else part
            )
            if isinstance(part, dict):
                merged.setdefault("properties", {}).update(part.get("properties", {}))
                merged.setdefault("type", part.get("type", "object"))
        return value_for_schema(merged, name, seed, context, root=root, depth=depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    u = uniform(seed, name, "schema")
    if kind == "object":
        props = schema.get("properties") or {}
        if not props:
            extra = schema.get("additionalProperties")
            if extra is False:
                return {}
            sub = extra if isinstance(extra, dict) else {"type": "string"}
            return {
                "key": value_for_schema(
                    sub, f"{name}_value", seed, context, root=root, depth=depth + 1
                )
            }
        return {
            k: value_for_schema(v, k, seed, context, root=root, depth=depth + 1)
            for k, v in props.items()
        }
    if kind == "array":
        items = schema.get("items", {"type": "string"})
        n = max(int(schema.get("minItems", 0)), min(2, int(schema.get("maxItems", 2))))
        if isinstance(schema.get("prefixItems"), list):
            return [
                value_for_schema(s, f"{name}_{i}", seed, context, root=root, depth=depth + 1)
                for i, s in enumerate(schema["prefixItems"])
            ]
        return [
            value_for_schema(items, f"{name}_{i}", seed, context, root=root, depth=depth + 1)
            for i in range(n)
        ]
    if kind == "integer":
        lo = int(schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1))
        hi = int(schema.get("maximum", schema.get("exclusiveMaximum", lo + 101) - 1))
        return lo + int(u * (max(hi, lo) - lo + 1))
    if kind == "number":
        lo_f = float(schema.get("minimum", schema.get("exclusiveMinimum", 0.0)))
        hi_f = float(
            schema.get(
                "maximum",
                schema.get(
                    "exclusiveMaximum",
                    lo_f + (1.0 if any(s in name for s in _SCORE_NAMES) else 100.0),
                ),
            )
        )
        return round(lo_f + u * (hi_f - lo_f), 3)
    if kind == "boolean":
        return u < 0.5
    if kind == "null":
        return None
    fmt = schema.get("format")
    if fmt == "date-time":
        return "2024-01-01T00:00:00Z"
    if fmt == "date":
        return "2024-01-01"
    if fmt == "email":
        return "user@example.com"
    if fmt in ("uri", "url"):
        return "https://example.com/"
    text = text_value(name, seed, context)
    if "maxLength" in schema:
        text = text[: int(schema["maxLength"])]
    if "minLength" in schema and len(text) < int(schema["minLength"]):
        text = text.ljust(int(schema["minLength"]), "x")
    return text


def _resolve(root: dict[str, Any], ref: str) -> dict[str, Any]:
    if not ref.startswith("#/"):
        return {}
    node: Any = root
    for part in ref[2:].split("/"):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return node if isinstance(node, dict) else {}


def format_chat_value(value: Any) -> str:
    """How a value is written under a ``[[ ## name ## ]]`` marker (DSPy's parse rules)."""
    import json

    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int | float):
        return str(value)
    if value is None:
        return "None"
    return json.dumps(value, ensure_ascii=False)
