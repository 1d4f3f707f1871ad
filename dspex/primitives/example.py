"""``Example``: one data point, in DSPy's shape (dict-like, attribute access, input keys)."""

from __future__ import annotations

import copy as _copy
from collections.abc import Iterator
from typing import Any

__all__ = ["Example"]


class Example:
    """A record of named values; ``with_inputs(...)`` marks which keys are inputs.

    >>> ex = Example(question="2+2?", answer="4").with_inputs("question")
    >>> ex.inputs().question, ex.labels().answer
    ('2+2?', '4')
    """

    __slots__ = ("_demos", "_input_keys", "_store")

    def __init__(self, base: Example | dict[str, Any] | None = None, **kwargs: Any) -> None:
        object.__setattr__(self, "_store", {})
        object.__setattr__(self, "_demos", [])
        object.__setattr__(self, "_input_keys", None)
        if isinstance(base, Example):
            self._store.update(base._store)
            object.__setattr__(self, "_input_keys", base._input_keys)
        elif isinstance(base, dict):
            self._store.update(base)
        elif base is not None:
            raise TypeError(
                f"Example(base) takes an Example or a dict, got {type(base).__name__}; "
                "pass fields as keyword arguments instead."
            )
        self._store.update(kwargs)

    # -- attribute and item access -------------------------------------------------------
    def __getattr__(self, key: str) -> Any:
        if key.startswith("__") and key.endswith("__"):
            raise AttributeError(key)
        try:
            return self._store[key]
        except KeyError:
            raise AttributeError(
                f"{type(self).__name__} has no field {key!r}; its fields are {sorted(self._store)}."
            ) from None

    def __setattr__(self, key: str, value: Any) -> None:
        if key.startswith("_") or key in type(self).__dict__:
            object.__setattr__(self, key, value)
        else:
            self._store[key] = value

    def __delattr__(self, key: str) -> None:
        try:
            del self._store[key]
        except KeyError:
            raise AttributeError(key) from None

    def __getitem__(self, key: str) -> Any:
        return self._store[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._store[key] = value

    def __delitem__(self, key: str) -> None:
        del self._store[key]

    def __contains__(self, key: object) -> bool:
        return key in self._store

    def __len__(self) -> int:
        return len([k for k in self._store if not k.startswith("dspy_")])

    def __iter__(self) -> Iterator[str]:
        return iter(dict(self._store))

    def __repr__(self) -> str:
        store = {k: v for k, v in self._store.items() if not k.startswith("dspy_")}
        return f"Example({store}) (input_keys={self._input_keys})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Example) and self._store == other._store

    def __hash__(self) -> int:
        return hash(tuple((k, _hashable(v)) for k, v in self._store.items()))

    def __getstate__(self) -> dict[str, Any]:
        return {"_store": self._store, "_demos": self._demos, "_input_keys": self._input_keys}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            object.__setattr__(self, k, v)

    def __deepcopy__(self, memo: dict[int, Any]) -> Example:
        new = type(self).__new__(type(self))
        new.__setstate__(_copy.deepcopy(self.__getstate__(), memo))
        return new

    # -- dict-like ---------------------------------------------------------------------------
    def keys(self, include_dspy: bool = False) -> list[str]:
        return [k for k in self._store if include_dspy or not k.startswith("dspy_")]

    def values(self, include_dspy: bool = False) -> list[Any]:
        return [v for k, v in self._store.items() if include_dspy or not k.startswith("dspy_")]

    def items(self, include_dspy: bool = False) -> list[tuple[str, Any]]:
        return [(k, v) for k, v in self._store.items() if include_dspy or not k.startswith("dspy_")]

    def get(self, key: str, default: Any = None) -> Any:
        return self._store.get(key, default)

    # -- inputs and labels -------------------------------------------------------------------
    def with_inputs(self, *keys: str) -> Example:
        new = self.copy()
        object.__setattr__(new, "_input_keys", set(keys))
        return new

    def inputs(self) -> Example:
        if self._input_keys is None:
            raise ValueError(
                "This Example has no input keys; call .with_inputs('field', ...) to say which "
                "fields are inputs."
            )
        new = Example({k: v for k, v in self._store.items() if k in self._input_keys})
        object.__setattr__(new, "_input_keys", self._input_keys)
        return new

    def labels(self) -> Example:
        keys = self._input_keys or set()
        return Example({k: v for k, v in self._store.items() if k not in keys})

    def copy(self, **kwargs: Any) -> Example:
        new = type(self).__new__(type(self))
        Example.__init__(new, self, **kwargs)
        object.__setattr__(new, "_input_keys", self._input_keys)
        return new

    def without(self, *keys: str) -> Example:
        new = self.copy()
        for k in keys:
            new._store.pop(k, None)
        return new

    def toDict(self) -> dict[str, Any]:  # noqa: N802 - DSPy's name
        return {k: _to_plain(v) for k, v in self._store.items()}

    to_dict = toDict


def _hashable(v: Any) -> Any:
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    if isinstance(v, list | tuple | set):
        return tuple(_hashable(x) for x in v)
    try:
        hash(v)
    except TypeError:
        return repr(v)
    return v


def _to_plain(v: Any) -> Any:
    if hasattr(v, "model_dump"):
        return v.model_dump()
    if isinstance(v, Example):
        return v.toDict()
    if isinstance(v, list):
        return [_to_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _to_plain(x) for k, x in v.items()}
    return v
