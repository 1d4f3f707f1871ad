"""Formatting values into prompts and parsing replies back into typed values (DSPy's rules)."""

from __future__ import annotations

import ast
import enum
import inspect
import json
import types
import typing
from typing import Any, Literal, get_args, get_origin

import json_repair
import pydantic
from pydantic import TypeAdapter

from dspex.errors import AdapterParseError
from dspex.signatures.compiled import FieldSpec

__all__ = ["format_field_value", "parse_value", "serialize_for_json"]

_PLAIN = (str, int, float, bool, type(None))


def serialize_for_json(value: Any) -> Any:
    """A JSON-compatible form of ``value`` (pydantic's dump), or its str when there is none."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, list | tuple):
        return [serialize_for_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): serialize_for_json(v) for k, v in value.items()}
    if hasattr(value, "toDict"):
        return serialize_for_json(value.toDict())
    try:
        return TypeAdapter(type(value)).dump_python(value, mode="json")
    except Exception:
        return str(value)


def _format_blob(blob: str) -> str:
    if "\n" not in blob and "«" not in blob and "»" not in blob:
        return f"«{blob}»"
    return "«««\n    " + blob.replace("\n", "\n    ") + "\n»»»"


def _format_list(items: list[Any]) -> str:
    if not items:
        return "N/A"
    if len(items) == 1:
        return _format_blob(str(items[0]))
    return "\n".join(f"[{i + 1}] {_format_blob(str(t))}" for i, t in enumerate(items))


def format_field_value(spec: FieldSpec | None, value: Any) -> str:
    """How a value appears under its ``[[ ## name ## ]]`` marker.

    A str as is; a list given to a str field as a numbered list of «blobs»; anything that
    serializes to a JSON object or array as compact JSON; everything else as its str.
    """
    if type(value) is str:
        return value
    if isinstance(value, list) and spec is not None and spec.is_str:
        return _format_list(value)
    jsonable = serialize_for_json(value)
    if isinstance(jsonable, dict | list):
        return json.dumps(jsonable, ensure_ascii=False)
    return str(jsonable)


def _find_enum_member(enum_cls: type[enum.Enum], identifier: Any) -> enum.Enum:
    for member in enum_cls:
        if member.value == identifier or str(member.value) == str(identifier):
            return member
    if isinstance(identifier, str) and identifier in enum_cls.__members__:
        return enum_cls[identifier]
    raise ValueError(f"{identifier!r} is not one of {[m.value for m in enum_cls]}")


def _strip_literal(value: Any, allowed: tuple[Any, ...]) -> Any:
    if value in allowed:
        return value
    if isinstance(value, str):
        v = value.strip()
        if v.startswith(("Literal[", "str[")) and v.endswith("]"):
            v = v[v.find("[") + 1 : -1]
        if len(v) > 1 and v[0] == v[-1] and v[0] in "\"'":
            v = v[1:-1]
        if v in allowed:
            return v
        for a in allowed:  # a Literal of ints/bools written as text
            if not isinstance(a, str) and str(a) == v:
                return a
    raise ValueError(f"{value!r} is not one of {list(allowed)!r}")


def parse_value(value: Any, spec: FieldSpec) -> Any:
    """Parse a reply's text (or JSON value) for one output field, validating its type.

    Raises ``ValueError`` naming the field and what was expected; adapters turn that into an
    ``AdapterParseError`` with the raw reply.
    """
    ann = spec.annotation
    if ann is str:
        text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, dict | list) else str(value)
        if not spec.metadata:
            return text
        try:
            return spec.validator.validate_python(text)
        except pydantic.ValidationError as exc:
            raise ValueError(_explain(exc, spec)) from None
    if inspect.isclass(ann) and issubclass(ann, enum.Enum):
        return _find_enum_member(ann, value)
    origin = get_origin(ann)
    if origin is Literal:
        return _strip_literal(value, get_args(ann))
    validator = spec.validator
    try:
        if not isinstance(value, str):
            return validator.validate_python(value)
        if origin in (typing.Union, types.UnionType) and str in get_args(ann):
            return validator.validate_python(value)
        if ann is bool:
            low = value.strip().lower()
            if low in ("true", "false"):
                return low == "true"
        if ann in (int, float):
            try:
                return validator.validate_python(value.strip())
            except pydantic.ValidationError:
                pass
        candidate: Any = json_repair.loads(value)
        if candidate == "" and value.strip() != "":
            try:
                candidate = ast.literal_eval(value.strip())
            except (ValueError, SyntaxError):
                candidate = value
        return validator.validate_python(candidate)
    except pydantic.ValidationError as exc:
        raise ValueError(_explain(exc, spec)) from None


def _explain(exc: pydantic.ValidationError, spec: FieldSpec) -> str:
    """One sentence naming the field and the constraint broken (dspex.types' wording)."""
    from dspex.types import from_pydantic_error

    return str(from_pydantic_error(exc, annotation=spec.annotation, field=spec.name))


def parse_error(adapter: str, message: str, completion: str, parsed: dict[str, Any] | None = None) -> AdapterParseError:
    return AdapterParseError(message, adapter_name=adapter, lm_response=completion, parsed_result=parsed)
