"""Prompt templates with ``{{variable}}`` placeholders (the seed's syntax).

Syntax: ``{{name}}`` or ``{{ name }}`` where name is a Python identifier. An opened ``{{`` that
is never closed, an empty ``{{ }}`` or a name that is not an identifier is an error with its
position. A lone ``}}`` is text (JSON examples in prompts end with ``}}``).

``prompt_template(required=..., allowed=...)`` makes a variant whose variables must match what
the caller will fill in: every required variable used, no variable outside ``allowed``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from dspex.errors import SignatureError, ValidationError
from dspex.types._errors import fail

__all__ = [
    "MAX_TEMPLATE_CHARS",
    "PromptTemplate",
    "prompt_template",
    "render_template",
    "template_variables",
]

MAX_TEMPLATE_CHARS = 100_000


def _scan(template: str) -> list[tuple[str, int, int]]:
    """Placeholders as (name, start, end); raises ``ValueError`` with the position on bad syntax."""
    found: list[tuple[str, int, int]] = []
    i = 0
    while True:
        start = template.find("{{", i)
        if start == -1:
            return found
        end = template.find("}}", start + 2)
        nested = template.find("{{", start + 2)
        if end == -1 or (nested != -1 and nested < end):
            raise ValueError(f"opens '{{{{' at character {start} and never closes it with '}}}}'")
        inner = template[start + 2 : end]
        name = inner.strip()
        if not name:
            raise ValueError(f"has an empty placeholder '{{{{{inner}}}}}' at character {start}")
        if not name.isidentifier():
            raise ValueError(
                f"has a placeholder '{{{{{inner}}}}}' at character {start} whose name is not a "
                "valid variable name (letters, digits and _, not starting with a digit)"
            )
        found.append((name, start, end + 2))
        i = end + 2


def template_variables(template: str) -> tuple[str, ...]:
    """The distinct variable names in ``template``, in order of first use."""
    try:
        names = [name for name, _, _ in _scan(template)]
    except ValueError as exc:
        raise ValidationError(
            f"template {exc}", field="template", constraint="template_syntax"
        ) from None
    return tuple(dict.fromkeys(names))


def render_template(template: str, values: Mapping[str, Any] | None = None, /, **more: Any) -> str:
    """Fill every placeholder with ``str(value)``. Unused values are ignored; a missing one is an
    error naming it, so a typo in a variable name is caught before the prompt is sent."""
    given = {**(values or {}), **more}
    try:
        spots = _scan(template)
    except ValueError as exc:
        raise ValidationError(
            f"template {exc}", field="template", constraint="template_syntax"
        ) from None
    missing = [name for name in dict.fromkeys(n for n, _, _ in spots) if name not in given]
    if missing:
        raise ValidationError(
            f"template needs a value for {', '.join(missing)}; pass "
            + ", ".join(f"{m}=..." for m in missing)
            + " to render_template.",
            field=missing[0],
            constraint="required_variable",
        )
    parts: list[str] = []
    pos = 0
    for name, start, end in spots:
        parts.append(template[pos:start])
        parts.append(str(given[name]))
        pos = end
    parts.append(template[pos:])
    return "".join(parts)


def _check_syntax(template: str) -> str:
    try:
        _scan(template)
    except ValueError as exc:
        fail("template_syntax", str(exc))
    return template


def _variables_checker(required: tuple[str, ...], allowed: frozenset[str] | None) -> Any:
    def check(template: str) -> str:
        used = [name for name, _, _ in _scan(template)]  # syntax already checked
        missing = [name for name in required if name not in used]
        if missing:
            fail(
                "required_variables",
                "must use the variable(s) " + ", ".join("{{" + m + "}}" for m in missing),
            )
        if allowed is not None:
            unknown = list(dict.fromkeys(name for name in used if name not in allowed))
            if unknown:
                fail(
                    "allowed_variables",
                    "uses "
                    + ", ".join("{{" + u + "}}" for u in unknown)
                    + f", which is not among the allowed variables ({', '.join(sorted(allowed)) or 'none'})",
                )
        return template

    return check


@functools.lru_cache(maxsize=128)
def _prompt_template(required: tuple[str, ...], allowed: frozenset[str] | None) -> Any:
    return Annotated[
        str,
        Field(
            min_length=1, max_length=MAX_TEMPLATE_CHARS, description=_describe(required, allowed)
        ),
        AfterValidator(_check_syntax),
        AfterValidator(_variables_checker(required, allowed)),
    ]


def _describe(required: tuple[str, ...], allowed: frozenset[str] | None) -> str:
    text = "A prompt template with {{variable}} placeholders"
    if required:
        text += "; it must use " + ", ".join("{{" + r + "}}" for r in required)
    if allowed is not None:
        text += "; it may use only " + (", ".join(sorted(allowed)) or "no variables")
    return text + "."


def prompt_template(*, required: Iterable[str] = (), allowed: Iterable[str] | None = None) -> Any:
    """A template type whose variables must include ``required`` and stay within ``allowed``."""
    req = tuple(dict.fromkeys(required))
    allow = frozenset(allowed) if allowed is not None else None
    for name in (*req, *(allow or ())):
        if not isinstance(name, str) or not name.isidentifier():
            raise SignatureError(
                f"prompt_template: {name!r} is not a valid variable name; use an identifier."
            )
    if allow is not None and not set(req) <= allow:
        raise SignatureError(
            f"prompt_template: required variables {sorted(set(req) - allow)} are not in allowed; "
            "add them to allowed or drop them from required."
        )
    return _prompt_template(req, allow)


PromptTemplate = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_TEMPLATE_CHARS,
        description="A prompt template with {{variable}} placeholders.",
    ),
    AfterValidator(_check_syntax),
]
"""Text of 1 to 100,000 characters whose ``{{variable}}`` placeholders are well formed."""
