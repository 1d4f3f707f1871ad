"""Scores and counts: confidence, probability, similarity, token count.

Each is ``Annotated[float | int, Field(<bounds>), BeforeValidator(<coercion>), ...]``, so pydantic
puts the bounds in the JSON schema (``minimum`` / ``maximum``) and enforces them. The coercions
accept what an LM writes: ``"0.87"``, ``" 0.87. "``, ``"87%"`` for a confidence or probability,
``"1,024"`` for a token count. Booleans are refused: ``True`` is not a confidence.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

from dspex.types._errors import fail

__all__ = ["ConfidenceScore", "Probability", "SimilarityScore", "TokenCount"]

#: token counts above this are an error (the seed's bound: no single call uses a million tokens)
MAX_TOKEN_COUNT = 1_000_000
#: confidences are kept to three decimals (the seed's precision); more is false precision
CONFIDENCE_DECIMALS = 3


def _scalar(value: Any, kind: str) -> Any:
    """Refuse booleans, unwrap numpy scalars (without importing numpy)."""
    if isinstance(value, bool):
        fail(f"type={kind}", f"must be a {kind}, got {value!r} (a boolean)")
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return value.item()
    return value


def _number_text(text: str, *, percent: bool) -> Any:
    s = text.strip()
    if s.endswith(".") and len(s) > 1 and s[-2].isdigit():
        s = s[:-1]  # an LM ends its answer with a full stop: "0.87."
    if percent and s.endswith("%"):
        try:
            return float(s[:-1].strip()) / 100.0
        except ValueError:
            return s  # pydantic reports it as "must be a number"
    return s


def _fraction_before(value: Any) -> Any:
    value = _scalar(value, "number")
    if isinstance(value, str):
        return _number_text(value, percent=True)
    return value


def _signed_before(value: Any) -> Any:
    value = _scalar(value, "number")
    if isinstance(value, str):
        return _number_text(value, percent=False)
    return value


def _count_before(value: Any) -> Any:
    value = _scalar(value, "whole number")
    if isinstance(value, str):
        s = _number_text(value, percent=False)
        if isinstance(s, str):
            # thousands separators an LM or a log line may carry: "1,024", "1 024"
            compact = s.replace(",", "").replace(" ", "")
            if compact.isdigit():
                return compact
        return s
    return value


def _round_confidence(value: float) -> float:
    return round(value, CONFIDENCE_DECIMALS)


ConfidenceScore = Annotated[
    float,
    Field(ge=0, le=1, allow_inf_nan=False, description="A confidence between 0 and 1."),
    BeforeValidator(_fraction_before),
    AfterValidator(_round_confidence),
]
"""How sure a model is, in [0, 1], kept to 3 decimals. Accepts ``0.87``, ``"0.87"``, ``"87%"``."""

Probability = Annotated[
    float,
    Field(ge=0, le=1, allow_inf_nan=False, description="A probability between 0 and 1."),
    BeforeValidator(_fraction_before),
]
"""A probability in [0, 1], not rounded (small probabilities matter). Accepts ``"25%"``."""

SimilarityScore = Annotated[
    float,
    Field(
        ge=-1, le=1, allow_inf_nan=False, description="A similarity between -1 and 1 (e.g. cosine)."
    ),
    BeforeValidator(_signed_before),
]
"""A similarity in [-1, 1], such as the cosine of two embeddings."""

TokenCount = Annotated[
    int,
    Field(ge=0, le=MAX_TOKEN_COUNT, description="A number of tokens."),
    BeforeValidator(_count_before),
]
"""A number of tokens in [0, 1_000_000]. Accepts ``"1,024"``."""
