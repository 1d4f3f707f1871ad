"""Small helpers for turning persisted JSON dicts back into rollout objects.

Every rollout object has ``to_dict()`` (JSON-able: str/int/float/bool/None, lists, dicts with
string keys) and ``from_dict()``. A dict that does not fit raises ``dspex.errors.ValidationError``
naming the object and the field, so a corrupt stored row is reported, not half-loaded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import Enum
from typing import Any, TypeVar

from dspex.errors import ValidationError

E = TypeVar("E", bound=Enum)


def bad(owner: str, field: str, problem: str) -> ValidationError:
    return ValidationError(
        f"Cannot load {owner}: field {field!r} {problem}. "
        "The stored record is corrupt or from an incompatible version; recreate it.",
        field=field,
        constraint=problem,
    )


def as_mapping(owner: str, data: Any) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise bad(owner, "<root>", f"must be a dict, got {type(data).__name__}")
    return data


def get(owner: str, data: Mapping[str, Any], field: str) -> Any:
    if field not in data:
        raise bad(owner, field, "is missing")
    return data[field]


def get_str(owner: str, data: Mapping[str, Any], field: str) -> str:
    value = get(owner, data, field)
    if not isinstance(value, str):
        raise bad(owner, field, f"must be a string, got {type(value).__name__}")
    return value


def get_int(owner: str, data: Mapping[str, Any], field: str) -> int:
    value = get(owner, data, field)
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(owner, field, f"must be an integer, got {value!r}")
    return value


def get_float(owner: str, data: Mapping[str, Any], field: str) -> float:
    value = get(owner, data, field)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad(owner, field, f"must be a number, got {value!r}")
    return float(value)


def opt_float(owner: str, data: Mapping[str, Any], field: str) -> float | None:
    value = data.get(field)
    if value is None:
        return None
    return get_float(owner, data, field)


def opt_int(owner: str, data: Mapping[str, Any], field: str) -> int | None:
    value = data.get(field)
    if value is None:
        return None
    return get_int(owner, data, field)


def get_bool(owner: str, data: Mapping[str, Any], field: str) -> bool:
    value = get(owner, data, field)
    if not isinstance(value, bool):
        raise bad(owner, field, f"must be true or false, got {value!r}")
    return value


def get_enum(owner: str, data: Mapping[str, Any], field: str, enum: type[E]) -> E:
    value = get(owner, data, field)
    try:
        return enum(value)
    except ValueError:
        options = ", ".join(str(m.value) for m in enum)
        raise bad(owner, field, f"must be one of {options}, got {value!r}") from None


def get_list(owner: str, data: Mapping[str, Any], field: str) -> list[Any]:
    value = get(owner, data, field)
    if not isinstance(value, list | tuple):
        raise bad(owner, field, f"must be a list, got {type(value).__name__}")
    return list(value)


def int_keyed(owner: str, field: str, value: Any) -> dict[int, Any]:
    """JSON turns int keys into strings; turn them back (version numbers are ints)."""
    if not isinstance(value, Mapping):
        raise bad(owner, field, f"must be a dict, got {type(value).__name__}")
    out: dict[int, Any] = {}
    for key, item in value.items():
        try:
            out[int(key)] = item
        except (TypeError, ValueError):
            raise bad(owner, field, f"has a key {key!r} that is not a version number") from None
    return out


def finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))
