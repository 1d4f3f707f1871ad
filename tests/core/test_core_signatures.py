import pickle
from typing import Literal, Optional

import pydantic
import pytest

import dspex
from dspex.errors import SignatureError
from dspex.signatures import compile_signature, cache_stats


class QA(dspex.Signature):
    """Answer questions with short factoid answers."""

    question: str = dspex.InputField(desc="the question")
    answer: str = dspex.OutputField(desc="often between 1 and 5 words")


class Item(pydantic.BaseModel):
    name: str
    qty: int


def test_class_signature_fields_and_instructions():
    assert QA.instructions == "Answer questions with short factoid answers."
    assert list(QA.input_fields) == ["question"]
    assert list(QA.output_fields) == ["answer"]
    assert list(QA.fields) == ["question", "answer"]
    assert QA.signature == "question -> answer"
    extra = QA.input_fields["question"].json_schema_extra
    assert extra["desc"] == "the question" and extra["prefix"] == "Question:"


def test_string_signature_with_types_and_instructions():
    sig = dspex.Signature("question, context: list[str] -> answer: float", "Be precise.")
    assert sig.instructions == "Be precise."
    assert sig.input_fields["context"].annotation == list[str]
    assert sig.output_fields["answer"].annotation is float
    assert sig.input_fields["question"].annotation is str


@pytest.mark.parametrize(
    "text, annotation",
    [
        ("a -> b: int", int),
        ("a -> b: bool", bool),
        ("a -> b: dict[str, int]", dict[str, int]),
        ("a -> b: Literal['x', 'y']", Literal["x", "y"]),
        ("a -> b: Optional[int]", Optional[int]),
        ("a -> b: int | None", int | None),
        ("a -> b: Item", Item),
        ("a -> b: list[Item]", list[Item]),
    ],
)
def test_string_signature_types(text, annotation):
    sig = dspex.Signature(text)
    assert sig.output_fields["b"].annotation == annotation


def test_default_instructions():
    sig = dspex.Signature("question, context -> answer")
    assert sig.instructions == "Given the fields `question`, `context`, produce the fields `answer`."


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ("question answer", "exactly one '->'"),
        ("a -> b -> c", "exactly one '->'"),
        ("q ->", "no output fields"),
        ("2x -> y", "'2x'"),
        ("q -> a: NoSuchType", "'NoSuchType'"),
        ("q -> a: list[", "not valid syntax"),
        ("q, q -> a", "more than once"),
        ("q -> _private", "'_private'"),
    ],
)
def test_bad_signature_strings_name_the_offending_part(bad, fragment):
    with pytest.raises(SignatureError) as info:
        dspex.Signature(bad)
    assert fragment in str(info.value)


def test_field_without_input_or_output_marker_is_rejected():
    with pytest.raises(SignatureError, match="InputField"):

        class Bad(dspex.Signature):
            question: str = pydantic.Field()
            answer: str = dspex.OutputField()


def test_untyped_type_is_rejected():
    class NotAType:
        pass

    with pytest.raises(SignatureError):
        dspex.Signature("a -> b: NotAType", custom_types={"NotAType": NotAType})


def test_with_instructions_and_equality():
    other = QA.with_instructions("Something else.")
    assert other.instructions == "Something else."
    assert QA.instructions == "Answer questions with short factoid answers."
    assert not QA.equals(other)
    assert QA.equals(other.with_instructions(QA.instructions))
    assert QA.content_hash() == other.with_instructions(QA.instructions).content_hash()


def test_append_prepend_insert_delete():
    s = QA.append("confidence", dspex.OutputField(), float)
    assert list(s.output_fields) == ["answer", "confidence"]
    s = QA.prepend("reasoning", dspex.OutputField())
    assert list(s.output_fields) == ["reasoning", "answer"]
    s = QA.insert(0, "context", dspex.InputField(), list[str])
    assert list(s.input_fields) == ["context", "question"]
    assert list(s.delete("context").input_fields) == ["question"]
    assert list(QA.fields) == ["question", "answer"]  # originals untouched
    with pytest.raises(SignatureError, match="out of range"):
        QA.insert(5, "x", dspex.InputField())
    with pytest.raises(SignatureError, match="already has"):
        QA.append("answer", dspex.OutputField())


def test_with_updated_fields_does_not_leak_into_original():
    s = QA.with_updated_fields("answer", desc="one word", type_=int)
    assert s.output_fields["answer"].json_schema_extra["desc"] == "one word"
    assert s.output_fields["answer"].annotation is int
    assert QA.output_fields["answer"].json_schema_extra["desc"] == "often between 1 and 5 words"
    with pytest.raises(SignatureError, match="no field 'nope'"):
        QA.with_updated_fields("nope", desc="x")


def test_dump_and_load_state_roundtrip():
    state = QA.with_instructions("New.").with_updated_fields("answer", prefix="Ans:").dump_state()
    loaded = QA.load_state(state)
    assert loaded.instructions == "New."
    assert loaded.output_fields["answer"].json_schema_extra["prefix"] == "Ans:"


def test_compiled_form_is_cached_and_hash_is_stable_across_classes():
    sig1 = dspex.Signature("a, b -> c: int")
    sig2 = dspex.Signature("a, b -> c: int")
    c1 = compile_signature(sig1)
    before = cache_stats()
    c2 = compile_signature(sig2)
    assert c1 is c2  # same content, one compiled form
    assert cache_stats()["hits"] == before["hits"] + 1
    assert compile_signature(sig1) is c1
    assert c1.output_names == ("c",)
    schema = c1.structured_output_schema
    assert schema["required"] == ["c"] and schema["additionalProperties"] is False


def test_compile_is_fast():
    import time

    sigs = [dspex.Signature(f"a{i}, b, c: int -> d, e: float") for i in range(50)]
    t0 = time.perf_counter()
    for s in sigs:
        compile_signature(s)
    per_compile = (time.perf_counter() - t0) / len(sigs)
    assert per_compile < 1e-3  # the seed's target: well under 1 ms for a 5-field signature


def test_signature_error_pickles():
    with pytest.raises(SignatureError) as info:
        dspex.Signature("nope")
    err = pickle.loads(pickle.dumps(info.value))
    assert isinstance(err, SignatureError) and str(err) == str(info.value)
