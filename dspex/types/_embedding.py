"""Embeddings: lists of finite floats with a bounded (or fixed) dimension and a direction.

``Embedding`` takes any dimension from 1 to 10,000 (the seed's bounds). ``embedding(dim=768,
normalize=True)`` makes a variant that requires exactly 768 numbers and rescales the vector to
unit length, which is what cosine similarity by dot product expects. A zero vector is refused
in every variant: it has no direction, so every similarity with it is undefined.

Coercion: a numpy array (anything with ``tolist()``), a tuple, a JSON string ``"[0.1, 0.2]"`` or
a bare ``"0.1, 0.2"`` as an LM may write it. Validation stays pure Python (``math.hypot``), so
importing this module never imports numpy.
"""

from __future__ import annotations

import functools
import json
import math
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

from dspex.types._errors import fail

__all__ = ["MAX_EMBEDDING_DIM", "Embedding", "embedding"]

MAX_EMBEDDING_DIM = 10_000
_Finite = Annotated[float, Field(allow_inf_nan=False)]


def _embedding_before(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if not text.startswith("["):
            text = f"[{text}]"
        try:
            value = json.loads(text.replace("\n", " "))
        except ValueError:
            # "0.1 0.2 0.3": numbers separated by spaces only
            parts = value.replace(",", " ").split()
            try:
                value = [float(p) for p in parts]
            except ValueError:
                fail(
                    "type=array",
                    f"must be a list of numbers, got text that is not one: {value[:60]!r}",
                )
    elif hasattr(value, "tolist") and not isinstance(value, list):
        value = value.tolist()
    elif isinstance(value, tuple):
        value = list(value)
    if isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, bool):
                fail("type=number", f"must be a number, got {item!r} (a boolean)", at=(i,))
    return value


def _require_direction(vector: list[float]) -> float:
    norm = math.hypot(*vector)
    if norm == 0.0:
        fail("nonzero_norm", "must not be the zero vector: its norm is 0, so it has no direction")
    if not math.isfinite(norm):  # finite items whose squares overflow
        fail("finite_norm", "must have a finite norm; its numbers are too large to measure")
    return norm


def _check(vector: list[float]) -> list[float]:
    _require_direction(vector)
    return vector


def _check_and_normalize(vector: list[float]) -> list[float]:
    norm = _require_direction(vector)
    return [x / norm for x in vector]


@functools.lru_cache(maxsize=128)
def embedding(dim: int | None = None, *, normalize: bool = False) -> Any:
    """An embedding type: ``dim`` numbers exactly (any 1..10,000 when None), unit length when
    ``normalize``. The same arguments return the same object, so signatures compare equal."""
    if dim is not None and (
        isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= MAX_EMBEDDING_DIM
    ):
        # a programming error in a type declaration, not bad data: fail loudly and early
        from dspex.errors import SignatureError

        raise SignatureError(
            f"embedding(dim=...) must be a whole number from 1 to {MAX_EMBEDDING_DIM}, got {dim!r}."
        )
    low, high = (dim, dim) if dim is not None else (1, MAX_EMBEDDING_DIM)
    desc = f"A {dim}-dimensional embedding vector" if dim is not None else "An embedding vector"
    desc += ", rescaled to unit length." if normalize else "."
    return Annotated[
        list[_Finite],
        Field(min_length=low, max_length=high, description=desc),
        BeforeValidator(_embedding_before),
        AfterValidator(_check_and_normalize if normalize else _check),
    ]


Embedding = Annotated[
    list[_Finite],
    Field(min_length=1, max_length=MAX_EMBEDDING_DIM, description="An embedding vector."),
    BeforeValidator(_embedding_before),
    AfterValidator(_check),
]
"""A vector of 1 to 10,000 finite numbers with a non-zero norm."""
