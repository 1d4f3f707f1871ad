"""``InputField`` and ``OutputField``: pydantic fields that carry DSPy's field metadata.

As in DSPy, a field is a ``pydantic.Field`` whose ``json_schema_extra`` holds
``__dspy_field_type`` ("input" / "output"), ``prefix`` and ``desc``; pydantic constraints
(``ge``, ``max_length``, ...) stay on the field and are also described in words for the prompt.
"""

from __future__ import annotations

import re
from typing import Any

import pydantic
from pydantic.fields import FieldInfo

__all__ = ["InputField", "OldField", "OldInputField", "OldOutputField", "OutputField", "field_role", "infer_prefix"]

# DSPy keeps these out of pydantic's own arguments and in json_schema_extra.
_DSPY_KEYS = ("desc", "prefix", "format", "parser", "__dspy_field_type")

_CONSTRAINTS = {
    "gt": "greater than",
    "ge": "greater than or equal to",
    "lt": "less than",
    "le": "less than or equal to",
    "multiple_of": "a multiple of",
    "min_length": "minimum length",
    "max_length": "maximum length",
}


def _move_kwargs(**kwargs: Any) -> dict[str, Any]:
    pydantic_kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in _DSPY_KEYS:
            extra[key] = value
        else:
            pydantic_kwargs[key] = value
    # Pydantic's own `description` is DSPy's `desc` when the user gave only that.
    if "description" in pydantic_kwargs and "desc" not in extra:
        extra["desc"] = pydantic_kwargs["description"]
    constraints = [f"{_CONSTRAINTS[k]}: {v}" for k, v in pydantic_kwargs.items() if k in _CONSTRAINTS]
    if constraints:
        extra["constraints"] = ", ".join(constraints)
    pydantic_kwargs["json_schema_extra"] = extra
    return pydantic_kwargs


def InputField(**kwargs: Any) -> Any:  # noqa: N802 - DSPy's public name
    """An input field: ``question: str = InputField(desc="...")``."""
    return pydantic.Field(**_move_kwargs(**kwargs, __dspy_field_type="input"))


def OutputField(**kwargs: Any) -> Any:  # noqa: N802 - DSPy's public name
    """An output field: ``answer: float = OutputField(desc="...", ge=0)``."""
    return pydantic.Field(**_move_kwargs(**kwargs, __dspy_field_type="output"))


def field_role(info: FieldInfo) -> str | None:
    extra = info.json_schema_extra
    if isinstance(extra, dict):
        role = extra.get("__dspy_field_type")
        return role if isinstance(role, str) else None
    return None


def infer_prefix(attribute_name: str) -> str:
    """``question`` -> ``Question``, ``someField`` / ``some_field`` -> ``Some Field`` (as DSPy)."""
    s1 = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", attribute_name)
    intermediate = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s1)
    words = intermediate.split("_")
    out = []
    for word in words:
        if word.upper() == word:
            out.append(word)
        else:
            out.append(word.capitalize())
    return " ".join(w for w in out if w)


class OldField:
    """The pre-2.5 DSPy field class, kept so old programs still construct."""

    def __init__(self, *, prefix: str | None = None, desc: str | None = None, input: bool, format: Any = None) -> None:  # noqa: A002
        self.prefix = prefix
        self.desc = desc
        self.format = format
        self.input = input

    def finalize(self, key: str, inferred_prefix: str) -> None:
        if self.prefix is None:
            self.prefix = inferred_prefix + ":"
        if self.desc is None:
            self.desc = f"${{{key}}}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(prefix={self.prefix}, desc={self.desc})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OldField) and self.__dict__ == other.__dict__


class OldInputField(OldField):
    def __init__(self, *, prefix: str | None = None, desc: str | None = None, format: Any = None) -> None:  # noqa: A002
        super().__init__(prefix=prefix, desc=desc, input=True, format=format)


class OldOutputField(OldField):
    def __init__(self, *, prefix: str | None = None, desc: str | None = None, format: Any = None) -> None:  # noqa: A002
        super().__init__(prefix=prefix, desc=desc, input=False, format=format)
