"""``Prediction`` and ``Completions``: what a module returns, in DSPy's shape."""

from __future__ import annotations

from typing import Any

from dspex.primitives.example import Example

__all__ = ["Completions", "Prediction"]


class Prediction(Example):
    """The outputs of a module call. With n > 1 samples, ``completions`` holds all of them and
    the fields hold the first. A prediction with a ``score`` field behaves as a number."""

    __slots__ = ("_completions", "_lm_usage")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        object.__setattr__(self, "_completions", None)
        object.__setattr__(self, "_lm_usage", None)

    @classmethod
    def from_completions(cls, list_or_dict: list[dict[str, Any]] | dict[str, list[Any]], signature: Any = None) -> Prediction:
        obj = cls()
        comps = Completions(list_or_dict, signature=signature)
        object.__setattr__(obj, "_completions", comps)
        obj._store.update({k: v[0] for k, v in comps._completions.items() if v})
        return obj

    @property
    def completions(self) -> Completions:
        if self._completions is None:
            return Completions([dict(self._store)])
        return self._completions

    def get_lm_usage(self) -> dict[str, Any] | None:
        return self._lm_usage

    def set_lm_usage(self, value: dict[str, Any] | None) -> None:
        object.__setattr__(self, "_lm_usage", value)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_completions"] = self._completions
        state["_lm_usage"] = self._lm_usage
        return state

    def __repr__(self) -> str:
        store = {k: v for k, v in self._store.items() if not k.startswith("dspy_")}
        body = ",\n    ".join(f"{k}={v!r}" for k, v in store.items())
        n = len(self._completions) if self._completions is not None else 1
        extra = f"\n    ({n - 1} completions omitted)" if n > 1 else ""
        return f"Prediction(\n    {body}{extra}\n)"

    __str__ = __repr__

    # -- numeric behaviour (a metric may return a Prediction with a score) ------------------
    def __float__(self) -> float:
        if "score" not in self._store:
            raise ValueError("This Prediction has no 'score' field, so it is not a number.")
        return float(self._store["score"])

    def __add__(self, other: Any) -> float:
        return float(self) + float(other)

    def __radd__(self, other: Any) -> float:
        return float(other) + float(self)

    def __truediv__(self, other: Any) -> float:
        return float(self) / float(other)

    def __rtruediv__(self, other: Any) -> float:
        return float(other) / float(self)

    def __lt__(self, other: Any) -> bool:
        return float(self) < float(other)

    def __le__(self, other: Any) -> bool:
        return float(self) <= float(other)

    def __gt__(self, other: Any) -> bool:
        return float(self) > float(other)

    def __ge__(self, other: Any) -> bool:
        return float(self) >= float(other)

    __hash__ = Example.__hash__


class Completions:
    """Several samples of the same outputs: ``c.answer`` is a list, ``c[i]`` a Prediction."""

    def __init__(self, list_or_dict: list[dict[str, Any]] | dict[str, list[Any]], signature: Any = None) -> None:
        self.signature = signature
        if isinstance(list_or_dict, list):
            keys: list[str] = []
            for d in list_or_dict:
                for k in d:
                    if k not in keys:
                        keys.append(k)
            kv = {k: [d.get(k) for d in list_or_dict] for k in keys}
        else:
            kv = {k: list(v) for k, v in list_or_dict.items()}
        lengths = {len(v) for v in kv.values()}
        if len(lengths) > 1:
            raise ValueError(f"All fields of Completions must have the same number of values, got {lengths}.")
        self._completions = kv

    def __getstate__(self) -> dict[str, Any]:
        # The signature class is rebuilt where it is needed; it would cost a pickle of a
        # dynamically made pydantic class on every Ray reply.
        return {"_completions": self._completions, "signature": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def items(self) -> list[tuple[str, list[Any]]]:
        return list(self._completions.items())

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, str):
            return self._completions[key]
        n = len(self)
        if not -n <= key < n:
            raise IndexError(f"completion index {key} out of range for {n} completions")
        return Prediction(**{k: v[key] for k, v in self._completions.items()})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._completions[name]
        except KeyError:
            raise AttributeError(f"Completions have no field {name!r}.") from None

    def __len__(self) -> int:
        return len(next(iter(self._completions.values()), []))

    def __contains__(self, key: str) -> bool:
        return key in self._completions

    def __repr__(self) -> str:
        return f"Completions({self._completions!r})"
