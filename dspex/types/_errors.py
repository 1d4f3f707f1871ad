"""Turning pydantic's validation errors into ``dspex.errors.ValidationError``.

A pydantic error dump ("1 validation error for function-after[...] ... [type=less_than_equal,
input_value=1.3]") tells a user little. The message here names the field, the constraint that was
broken and the value: ``confidence must be <= 1 (ge=0, le=1), got 1.3``. To list every bound of the
field (not only the broken one) we walk the annotation along the error's location and read the
constraints pydantic itself enforces there.

Our own validators raise through :func:`fail`, which carries a ready sentence and the constraint's
name in the error context, so the same translation covers them.
"""

from __future__ import annotations

import reprlib
import types
import typing
from collections.abc import Sequence
from typing import Any, NoReturn

import pydantic
from pydantic_core import PydanticCustomError

from dspex.errors import ValidationError

__all__ = ["fail", "format_location", "from_pydantic_error"]

#: the pydantic error type our validators use; its context holds ``reason`` and ``constraint``
DSPEX_ERROR_TYPE = "dspex"

_BOUND_ATTRS = ("gt", "ge", "lt", "le", "min_length", "max_length", "multiple_of", "pattern")
_MAX_LISTED_ERRORS = 5

_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxlist = 6
_repr.maxdict = 4


def fail(constraint: str, reason: str, *, at: Sequence[str | int] = ()) -> NoReturn:
    """Reject a value from inside a validator.

    ``reason`` is a phrase that follows the field name ("must not be the zero vector"); ``at`` is
    a location below the validated value (a model validator pointing at one of its fields).
    """
    raise PydanticCustomError(
        DSPEX_ERROR_TYPE, "{reason}", {"reason": reason, "constraint": constraint, "at": tuple(at)}
    )


def format_location(root: str, loc: Sequence[str | int]) -> str:
    """``("steps", 2, "confidence")`` under ``chain`` -> ``chain.steps[2].confidence``."""
    out = root
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else str(part)
    return out or "value"


def show(value: Any) -> str:
    """A short repr for messages: whole floats print as ``1``, long values are cut."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return _repr.repr(value)


def _unwrap(tp: Any) -> tuple[Any, list[Any]]:
    """Strip ``Annotated`` and ``Optional``; return the bare type and the metadata seen."""
    metadata: list[Any] = []
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            args = typing.get_args(tp)
            tp = args[0]
            for item in args[1:]:
                metadata.append(item)
                metadata.extend(getattr(item, "metadata", None) or ())
            continue
        if origin in (typing.Union, types.UnionType):
            arms = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(arms) == 1:
                tp = arms[0]
                continue
        return tp, metadata


def _model_field(model: type[pydantic.BaseModel], key: str) -> tuple[str, Any] | None:
    fields = model.model_fields
    name: str | None = key if key in fields else None
    if name is None:
        for candidate, info in fields.items():
            alias = info.validation_alias
            choices = getattr(alias, "choices", None) or ([alias] if alias else [])
            if key in choices or info.alias == key:
                name = candidate
                break
    if name is None:
        return None
    info = fields[name]
    ann: Any = info.annotation
    if info.metadata:
        ann = typing.Annotated[(ann, *info.metadata)]
    return name, ann


def _walk(annotation: Any, loc: Sequence[str | int]) -> tuple[list[str | int], dict[str, Any]]:
    """Follow ``loc`` through ``annotation``; return the cleaned location and the constraints
    (ge, le, min_length, ...) declared at its end. Pydantic's union-arm tags are dropped."""
    path: list[str | int] = []
    tp: Any = annotation
    meta: list[Any] = []
    for part in loc:
        if tp is None:
            path.append(part)
            continue
        tp, meta = _unwrap(tp)
        origin = typing.get_origin(tp) or tp
        if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel) and isinstance(part, str):
            found = _model_field(tp, part)
            if found is not None:
                path.append(found[0])
                tp = found[1]
                continue
        if isinstance(part, int) and origin in (list, tuple, set, frozenset, Sequence):
            args = typing.get_args(tp)
            path.append(part)
            if origin is tuple and len(args) > 1 and args[-1] is not Ellipsis:
                tp = args[part] if part < len(args) else None
            else:
                tp = args[0] if args else None
            continue
        if origin is dict:
            args = typing.get_args(tp)
            path.append(part)
            tp = args[1] if len(args) == 2 else None
            continue
        if origin in (typing.Union, types.UnionType) and isinstance(part, str):
            # pydantic names the union arm it tried; keep the arm whose name matches, drop the tag
            arms = typing.get_args(tp)
            tp = next((a for a in arms if getattr(a, "__name__", None) == part), None)
            continue
        if isinstance(part, str) and ("[" in part or part in ("function-after", "function-before")):
            continue  # a validator tag, not a field
        path.append(part)
        tp = None
    if tp is None:
        return path, {}
    _, meta = _unwrap(tp)
    constraints: dict[str, Any] = {}
    for item in meta:
        for attr in _BOUND_ATTRS:
            value = getattr(item, attr, None)
            if value is not None and attr not in constraints:
                constraints[attr] = value
    return path, constraints


def _bounds_text(constraints: dict[str, Any], keys: tuple[str, ...]) -> str:
    shown = [f"{k}={show(constraints[k])}" for k in keys if k in constraints]
    return f" ({', '.join(shown)})" if shown else ""


_RANGE_KEYS = ("gt", "ge", "lt", "le")
_LENGTH_KEYS = ("min_length", "max_length")


def _describe(err: Any, constraints: dict[str, Any]) -> tuple[str, str, bool]:
    """(phrase after the field name, constraint name, whether to append ``got <value>``)."""
    kind: str = err["type"]
    ctx: dict[str, Any] = err.get("ctx") or {}
    value = err.get("input")
    if kind == DSPEX_ERROR_TYPE:
        return str(ctx.get("reason", err["msg"])), str(ctx.get("constraint", "validator")), False
    ops = {
        "greater_than_equal": ("ge", ">="),
        "less_than_equal": ("le", "<="),
        "greater_than": ("gt", ">"),
        "less_than": ("lt", "<"),
    }
    if kind in ops:
        key, op = ops[kind]
        bound = ctx.get(key, constraints.get(key))
        merged = {**constraints, key: bound}
        return (
            f"must be {op} {show(bound)}{_bounds_text(merged, _RANGE_KEYS)}",
            f"{key}={show(bound)}",
            True,
        )
    if kind in ("too_short", "too_long", "string_too_short", "string_too_long"):
        key = "min_length" if kind.endswith("short") else "max_length"
        limit = ctx.get(key, constraints.get(key))
        merged = {**constraints, key: limit}
        unit = "character" if kind.startswith("string") else "item"
        unit += "" if limit == 1 else "s"
        word = "at least" if key == "min_length" else "at most"
        if kind.startswith("string"):
            # the text itself says more than its length (and pydantic may have stripped it)
            got = (
                f", got {show(value)}"
                if len(str(value)) <= 60
                else f", got {len(value)} characters"
            )
        else:
            actual = ctx.get("actual_length")
            if actual is None and isinstance(value, list | tuple | dict):
                actual = len(value)
            got = f", got {actual}" if actual is not None else ""
        return (
            f"must have {word} {limit} {unit}{_bounds_text(merged, _LENGTH_KEYS)}{got}",
            f"{key}={limit}",
            False,
        )
    if kind == "string_pattern_mismatch":
        return f"must match the pattern {ctx.get('pattern')!r}", "pattern", True
    if kind == "multiple_of":
        return f"must be a multiple of {show(ctx.get('multiple_of'))}", "multiple_of", True
    if kind == "finite_number":
        return "must be a finite number (not NaN or infinity)", "finite", True
    if kind in ("missing", "missing_argument"):
        return "is required but missing", "required", False
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return "is not an allowed field", "no_extra_fields", False
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}", "literal", True
    simple = {
        "float_parsing": ("must be a number", "type=number"),
        "float_type": ("must be a number", "type=number"),
        "int_parsing": ("must be a whole number", "type=integer"),
        "int_type": ("must be a whole number", "type=integer"),
        "int_from_float": ("must be a whole number", "type=integer"),
        "bool_parsing": ("must be true or false", "type=boolean"),
        "bool_type": ("must be true or false", "type=boolean"),
        "string_type": ("must be a string", "type=string"),
        "list_type": ("must be a list", "type=array"),
        "tuple_type": ("must be a list", "type=array"),
        "dict_type": ("must be an object (a mapping of names to values)", "type=object"),
        "model_type": ("must be an object (a mapping of names to values)", "type=object"),
        "model_attributes_type": (
            "must be an object (a mapping of names to values)",
            "type=object",
        ),
    }
    if kind in simple:
        phrase, constraint = simple[kind]
        return phrase, constraint, True
    msg = str(err.get("msg", kind))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    return f"is invalid: {msg}", kind, True


def from_pydantic_error(
    exc: pydantic.ValidationError,
    *,
    annotation: Any = None,
    field: str | None = None,
) -> ValidationError:
    """Translate a pydantic error raised while validating ``annotation``.

    ``field`` is the name the value is known by (a signature field, a type name); locations
    inside the value are appended to it (``chain[2].confidence``). The result's ``field`` and
    ``constraint`` describe the first problem; ``errors`` lists all of them as
    ``(location, constraint, sentence)`` tuples.
    """
    root = field or "value"
    problems: list[tuple[str, str, str]] = []
    for err in exc.errors():
        ctx = err.get("ctx") or {}
        loc: list[str | int] = [*err["loc"], *(ctx.get("at") or ())]
        path, constraints = _walk(annotation, loc) if annotation is not None else (loc, {})
        where = format_location(root, path)
        phrase, constraint, with_value = _describe(err, constraints)
        sentence = f"{where} {phrase}"
        if with_value:
            sentence += f", got {show(err.get('input'))}"
        problems.append((where, constraint, sentence))
    if not problems:  # pydantic always reports at least one; be safe anyway
        problems.append((root, "invalid", f"{root} is invalid: {exc}"))
    listed = [p[2] for p in problems[:_MAX_LISTED_ERRORS]]
    message = "; ".join(listed)
    if len(problems) > _MAX_LISTED_ERRORS:
        message += f"; and {len(problems) - _MAX_LISTED_ERRORS} more problem(s)"
    return ValidationError(
        message,
        field=problems[0][0],
        constraint=problems[0][1],
        errors=tuple(problems),
    )
