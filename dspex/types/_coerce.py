"""Coercions shared by the structured types: an LM often writes an object as JSON text."""

from __future__ import annotations

import json
from typing import Any

from dspex.types._errors import fail

__all__ = ["parse_json_text"]


def parse_json_text(value: Any, *, expect: type[dict[Any, Any]] | type[list[Any]]) -> Any:
    """If ``value`` is text that should hold a JSON object (or list), parse it; else return it.

    Text in a Markdown code fence (three backticks, optionally "json") is unwrapped first,
    because models wrap JSON that way even when asked not to.
    """
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("```"):
        text = text.strip("`").strip()
        if text.lower().startswith("json"):
            text = text[4:].strip()
    opener = "{" if expect is dict else "["
    kind = "object" if expect is dict else "list"
    if not text.startswith(opener):
        fail(
            f"type={'object' if expect is dict else 'array'}",
            f"must be a JSON {kind}, got text {value[:60]!r}",
        )
    try:
        return json.loads(text)
    except ValueError as exc:
        fail("json", f"must be valid JSON ({exc})")
