"""Confidence, probability, similarity and token count: bounds, coercion from LM text, errors."""

import math

import numpy as np
import pytest
from pydantic import BaseModel

from dspex.errors import ValidationError
from dspex.types import ConfidenceScore, Probability, SimilarityScore, TokenCount, validate


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (0.87, 0.87),
        (0, 0.0),
        (1, 1.0),
        ("0.87", 0.87),
        ("  0.87 \n", 0.87),
        ("0.87.", 0.87),  # an answer ending with a full stop
        ("87%", 0.87),
        ("87 %", 0.87),
        ("100%", 1.0),
        (0.87654, 0.877),  # kept to three decimals
        (np.float32(0.5), 0.5),
        (np.float64(0.25), 0.25),
    ],
)
def test_confidence_accepts_and_coerces(raw, expected):
    got = validate(ConfidenceScore, raw)
    assert isinstance(got, float)
    assert got == pytest.approx(expected)


def test_confidence_rounding_is_exact_to_three_decimals():
    assert validate("confidence_score", 0.12345) == 0.123
    assert validate("confidence_score", "0.9996") == 1.0


@pytest.mark.parametrize(
    ("raw", "constraint", "phrase"),
    [
        (1.3, "le=1", "confidence must be <= 1 (ge=0, le=1), got 1.3"),
        (-0.1, "ge=0", "confidence must be >= 0 (ge=0, le=1), got -0.1"),
        ("130%", "le=1", "confidence must be <= 1 (ge=0, le=1), got 1.3"),
        ("high", "type=number", "confidence must be a number, got 'high'"),
        ("", "type=number", "confidence must be a number"),
        (None, "type=number", "confidence must be a number, got None"),
        (True, "type=number", "confidence must be a number, got True (a boolean)"),
        (math.nan, "finite", "confidence must be a finite number (not NaN or infinity), got nan"),
        (math.inf, "finite", "confidence must be a finite number"),
        ([0.5], "type=number", "confidence must be a number, got [0.5]"),
    ],
)
def test_confidence_rejects(raw, constraint, phrase):
    with pytest.raises(ValidationError) as info:
        validate(ConfidenceScore, raw, field="confidence")
    err = info.value
    assert phrase in str(err)
    assert err.field == "confidence"
    assert err.constraint == constraint
    assert "pydantic" not in str(err) and "input_value" not in str(err)


def test_probability_keeps_small_values_and_takes_percentages():
    assert validate(Probability, 1e-9) == 1e-9  # not rounded away
    assert validate(Probability, "25%") == 0.25
    assert validate(Probability, "0.5") == 0.5
    with pytest.raises(ValidationError, match=r"probability must be <= 1 \(ge=0, le=1\), got 2"):
        validate("probability", 2)
    with pytest.raises(ValidationError, match="must be a number"):
        validate("probability", "likely")


def test_similarity_range_is_minus_one_to_one():
    assert validate(SimilarityScore, -1) == -1.0
    assert validate(SimilarityScore, " -0.25 ") == -0.25
    assert validate(SimilarityScore, 1.0) == 1.0
    with pytest.raises(ValidationError) as info:
        validate("similarity_score", -1.5)
    assert str(info.value) == "similarity_score must be >= -1 (ge=-1, le=1), got -1.5"
    assert info.value.constraint == "ge=-1"
    with pytest.raises(ValidationError, match="must be a number"):
        validate(SimilarityScore, "50%")  # a percentage is not a similarity


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (0, 0),
        (1024, 1024),
        ("1024", 1024),
        ("1,024", 1024),
        ("1 024", 1024),
        (512.0, 512),
        ("1000000", 1_000_000),
    ],
)
def test_token_count_accepts(raw, expected):
    got = validate(TokenCount, raw)
    assert got == expected and isinstance(got, int)


@pytest.mark.parametrize(
    ("raw", "constraint", "phrase"),
    [
        (-1, "ge=0", "tokens must be >= 0 (ge=0, le=1000000), got -1"),
        (1_000_001, "le=1000000", "tokens must be <= 1000000 (ge=0, le=1000000), got 1000001"),
        (10.5, "type=integer", "tokens must be a whole number, got 10.5"),
        ("ten", "type=integer", "tokens must be a whole number, got 'ten'"),
        (False, "type=whole number", "tokens must be a whole number, got False (a boolean)"),
    ],
)
def test_token_count_rejects(raw, constraint, phrase):
    with pytest.raises(ValidationError) as info:
        validate(TokenCount, raw, field="tokens")
    assert phrase in str(info.value)
    assert info.value.constraint == constraint


class Scores(BaseModel):
    confidence: ConfidenceScore
    p: Probability | None = None
    similarity: SimilarityScore = 0.0
    tokens: TokenCount = 0


def test_types_work_as_model_fields_with_lm_strings():
    s = Scores.model_validate(
        {"confidence": "0.87", "p": "10%", "similarity": "-0.3", "tokens": "2,048"}
    )
    assert (s.confidence, s.p, s.similarity, s.tokens) == (0.87, 0.1, -0.3, 2048)


def test_json_schema_of_scalars():
    schema = Scores.model_json_schema()
    props = schema["properties"]
    assert props["confidence"]["type"] == "number"
    assert (props["confidence"]["minimum"], props["confidence"]["maximum"]) == (0, 1)
    assert props["similarity"]["minimum"] == -1 and props["similarity"]["maximum"] == 1
    assert props["tokens"]["type"] == "integer" and props["tokens"]["maximum"] == 1_000_000
    p_number = props["p"]["anyOf"][0]
    assert (p_number["type"], p_number["minimum"], p_number["maximum"]) == ("number", 0, 1)
    assert props["p"]["anyOf"][1] == {"type": "null"}
    assert "description" in props["confidence"]
    assert schema["required"] == ["confidence"]
