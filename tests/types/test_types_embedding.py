"""Embeddings: dimensions, finite values, zero vectors, normalization, coercion."""

import json
import math

import numpy as np
import pytest
from pydantic import BaseModel

from dspex.errors import SignatureError, ValidationError
from dspex.types import MAX_EMBEDDING_DIM, Embedding, embedding, validate


def test_plain_embedding_accepts_lists_tuples_arrays_and_text():
    assert validate(Embedding, [0.1, 0.2, 0.3]) == [0.1, 0.2, 0.3]
    assert validate(Embedding, (1, 2)) == [1.0, 2.0]
    assert validate(Embedding, np.array([0.5, -0.5], dtype=np.float32)) == [0.5, -0.5]
    assert validate(Embedding, "[0.1, 0.2]") == [0.1, 0.2]
    assert validate(Embedding, "0.1, 0.2, 0.3") == [0.1, 0.2, 0.3]
    assert validate(Embedding, "0.1 0.2\n0.3") == [0.1, 0.2, 0.3]
    assert validate("embedding", ["1", 2]) == [1.0, 2.0]
    got = validate(Embedding, [1, 2])
    assert all(isinstance(x, float) for x in got)


def test_embedding_at_the_dimension_bounds():
    assert len(validate(Embedding, [1.0] * MAX_EMBEDDING_DIM)) == MAX_EMBEDDING_DIM
    with pytest.raises(ValidationError) as info:
        validate(Embedding, [1.0] * (MAX_EMBEDDING_DIM + 1), field="vec")
    assert "vec must have at most 10000 items (min_length=1, max_length=10000), got 10001" in str(
        info.value
    )
    assert info.value.constraint == "max_length=10000"
    with pytest.raises(ValidationError) as info:
        validate(Embedding, [], field="vec")
    assert "vec must have at least 1 item (min_length=1, max_length=10000), got 0" in str(
        info.value
    )
    assert info.value.constraint == "min_length=1"


@pytest.mark.parametrize(
    ("raw", "where", "constraint", "phrase"),
    [
        ([0.0, 0.0, 0.0], "vec", "nonzero_norm", "must not be the zero vector"),
        (
            [1.0, math.nan],
            "vec[1]",
            "finite",
            "vec[1] must be a finite number (not NaN or infinity), got nan",
        ),
        ([1.0, 2.0, -math.inf], "vec[2]", "finite", "vec[2] must be a finite number"),
        ([1.0, "x"], "vec[1]", "type=number", "vec[1] must be a number, got 'x'"),
        ([1.0, True], "vec[1]", "type=number", "vec[1] must be a number, got True (a boolean)"),
        ([[1.0, 2.0]], "vec[0]", "type=number", "vec[0] must be a number"),
        ("not numbers", "vec", "type=array", "vec must be a list of numbers"),
        ([1.5e308, 1.5e308], "vec", "finite_norm", "must have a finite norm"),
        (5, "vec", "type=array", "vec must be a list, got 5"),
    ],
)
def test_embedding_rejects(raw, where, constraint, phrase):
    with pytest.raises(ValidationError) as info:
        validate(Embedding, raw, field="vec")
    assert phrase in str(info.value)
    assert info.value.field == where
    assert info.value.constraint == constraint


def test_fixed_dimension_and_normalization():
    Unit3 = embedding(3, normalize=True)
    got = validate(Unit3, [3, 4, 0])
    assert got == pytest.approx([0.6, 0.8, 0.0])
    assert math.hypot(*got) == pytest.approx(1.0)
    with pytest.raises(ValidationError) as info:
        validate(Unit3, [1.0, 2.0], field="e")
    assert "e must have at least 3 items (min_length=3, max_length=3), got 2" in str(info.value)
    with pytest.raises(ValidationError, match="zero vector"):
        validate(Unit3, [0, 0, 0])
    # without normalize the vector is kept as given
    assert validate(embedding(2), [3, 4]) == [3.0, 4.0]


def test_factory_returns_the_same_type_for_the_same_arguments():
    assert embedding(768, normalize=True) is embedding(768, normalize=True)
    assert embedding(768) is not embedding(768, normalize=True)


@pytest.mark.parametrize("bad", [0, -3, MAX_EMBEDDING_DIM + 1, 2.5, True, "768"])
def test_factory_rejects_bad_dimensions(bad):
    with pytest.raises(
        SignatureError, match=r"embedding\(dim=\.\.\.\) must be a whole number from 1 to 10000"
    ):
        embedding(bad)


class Doc(BaseModel):
    text: str
    vector: embedding(4, normalize=True)  # type: ignore[valid-type]


def test_embedding_in_a_model_and_its_schema():
    d = Doc.model_validate({"text": "t", "vector": json.dumps([1, 1, 1, 1])})
    assert d.vector == pytest.approx([0.5] * 4)
    prop = Doc.model_json_schema()["properties"]["vector"]
    assert prop["type"] == "array"
    assert prop["items"] == {"type": "number"}
    assert prop["minItems"] == 4 and prop["maxItems"] == 4
    assert "unit length" in prop["description"]
    assert json.loads(d.model_dump_json())["vector"] == pytest.approx([0.5] * 4)
