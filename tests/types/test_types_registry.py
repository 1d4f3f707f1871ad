"""The type registry, ``validate``, error translation and pickling, schemas, signature use."""

import json
import pickle
import subprocess
import sys
import threading
from typing import Annotated

import pydantic
import pytest
from pydantic import Field

import dspex
from dspex import telemetry
from dspex.errors import (
    AlreadyExists,
    ConfigurationError,
    NotFound,
    SignatureError,
    ValidationError,
)
from dspex.types import (
    ConfidenceScore,
    ReasoningChain,
    TokenUsage,
    from_pydantic_error,
    get_type,
    get_type_spec,
    list_types,
    register_type,
    unregister_type,
    validate,
)

BUILTINS = {
    "confidence_score",
    "probability",
    "token_count",
    "embedding",
    "similarity_score",
    "reasoning_step",
    "reasoning_chain",
    "function_call",
    "tool_result",
    "token_usage",
    "model_output",
    "prompt_template",
}


@pytest.fixture
def user_types():
    """Names registered by a test; removed afterwards so tests do not see each other's types."""
    names: list[str] = []
    yield names
    for name in names:
        try:
            unregister_type(name)
        except NotFound:
            pass


def test_builtins_are_registered_with_categories():
    assert BUILTINS <= set(list_types())
    assert list_types("numeric") == ["confidence_score", "probability", "similarity_score"]
    assert list_types("reasoning") == ["reasoning_chain", "reasoning_step"]
    spec = get_type_spec("token_usage")
    assert spec.builtin and spec.annotation is TokenUsage and spec.category == "metrics"
    assert get_type("confidence_score") is ConfidenceScore


def test_camel_case_names_find_the_same_type():
    assert get_type("ConfidenceScore") is get_type("confidence_score")
    assert get_type("ReasoningChain") is ReasoningChain
    assert get_type(" token_usage ") is TokenUsage


def test_unknown_type_names_the_close_matches():
    with pytest.raises(NotFound) as info:
        get_type("confidence_scor")
    msg = str(info.value)
    assert "No ML type named 'confidence_scor' is registered" in msg
    assert "Did you mean confidence_score" in msg
    assert "register_type" in msg
    with pytest.raises(NotFound):
        validate("no_such_type", 1)


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_every_builtin_has_a_sensible_json_schema(name):
    spec = get_type_spec(name)
    schema = spec.json_schema()
    json.dumps(schema)  # serializable
    assert schema.get("type") in {"number", "integer", "string", "array", "object"}
    assert schema.get("description")
    if schema["type"] == "object":
        assert schema["properties"] and schema["required"]
    if schema["type"] in {"number", "integer"}:
        assert "minimum" in schema and "maximum" in schema
    if schema["type"] == "array":
        assert "minItems" in schema and "maxItems" in schema
    assert spec.description


def test_register_use_and_unregister_a_user_type(user_types):
    Sentiment = register_type(
        "sentiment_score",
        Annotated[float, Field(ge=-1, le=1)],
        description="Negative to positive sentiment.",
    )
    user_types.append("sentiment_score")
    assert "sentiment_score" in list_types("custom")
    assert get_type("SentimentScore") is Sentiment
    assert validate("sentiment_score", "-0.5") == -0.5
    with pytest.raises(ValidationError) as info:
        validate("sentiment_score", 3)
    assert str(info.value) == "sentiment_score must be <= 1 (ge=-1, le=1), got 3"
    assert get_type_spec("sentiment_score").json_schema()["minimum"] == -1
    unregister_type("sentiment_score")
    assert "sentiment_score" not in list_types()
    with pytest.raises(NotFound):
        unregister_type("sentiment_score")


def test_duplicate_names_are_an_error_that_says_so(user_types):
    register_type("label_set", list[str])
    user_types.append("label_set")
    with pytest.raises(AlreadyExists) as info:
        register_type("label_set", list[int])
    assert "already registered" in str(info.value)
    assert "unregister_type('label_set')" in str(info.value)
    with pytest.raises(AlreadyExists) as info:
        register_type("LabelSet", list[int])  # the same name in CamelCase
    with pytest.raises(AlreadyExists) as info:
        register_type("ConfidenceScore", float)
    assert "built-in type named 'confidence_score' is already registered" in str(info.value)
    assert validate("label_set", ["a"]) == ["a"]  # the first registration is untouched


def test_builtins_cannot_be_unregistered():
    with pytest.raises(ConfigurationError, match="built-in ML type and cannot be unregistered"):
        unregister_type("embedding")
    assert "embedding" in list_types()


@pytest.mark.parametrize("bad", ["", "1abc", "has space", "dash-name", 42])
def test_register_rejects_bad_names(bad):
    with pytest.raises(ValidationError) as info:
        register_type(bad, int)
    assert info.value.field == "name" and info.value.constraint == "identifier"


def test_register_rejects_types_pydantic_cannot_describe():
    class Opaque:
        pass

    with pytest.raises(SignatureError, match=r"Cannot register type 'opaque'.*pydantic-compatible"):
        register_type("opaque", Opaque)
    assert "opaque" not in list_types()
    with pytest.raises(ValidationError) as info:
        register_type("ok_name", int, validator="not callable")  # type: ignore[arg-type]
    assert info.value.field == "validator"


def test_custom_validator_contract(user_types):
    def even(v: int) -> bool:
        return v % 2 == 0

    def clamp_text(v: str) -> str:
        return v.strip().lower()

    def positive(v: int) -> None:
        if v <= 0:
            raise ValueError("must be positive")

    def strict(v: int) -> None:
        raise ValidationError("no values accepted", field="x", constraint="never")

    register_type("even_int", int, validator=even)
    register_type("tag", str, validator=clamp_text)
    register_type("pos_int", int, validator=positive)
    register_type("never", int, validator=strict)
    register_type("lam", int, validator=lambda v: v < 10)
    user_types.extend(["even_int", "tag", "pos_int", "never", "lam"])

    assert validate("even_int", "4") == 4
    with pytest.raises(ValidationError) as info:
        validate("even_int", 3, field="n")
    assert str(info.value) == "n failed validator 'even'"
    assert info.value.constraint == "validator:even"
    assert validate("tag", "  Hello ") == "hello"
    with pytest.raises(
        ValidationError, match="n failed validator 'positive': must be positive"
    ) as info:
        validate("pos_int", -2, field="n")
    with pytest.raises(ValidationError, match="failed validator 'strict': no values accepted"):
        validate("never", 1)
    with pytest.raises(ValidationError) as info:
        validate("lam", 11)
    assert info.value.constraint == "validator:lam"
    # the annotation's own checks run before the validator
    with pytest.raises(ValidationError) as info:
        validate("even_int", "four")
    assert info.value.constraint == "type=integer"


def test_concurrent_registration_of_one_name_admits_exactly_one(user_types):
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def attempt() -> None:
        barrier.wait()
        try:
            register_type("race_type", int)
            outcomes.append("ok")
        except AlreadyExists:
            outcomes.append("dup")

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    user_types.append("race_type")
    assert sorted(outcomes) == ["dup"] * 7 + ["ok"]


def test_validate_any_annotation():
    assert validate(list[ConfidenceScore], ["0.5", "50%"]) == [0.5, 0.5]
    assert validate(dict[str, int], {"a": "1"}) == {"a": 1}
    with pytest.raises(ValidationError) as info:
        validate(list[ConfidenceScore], [0.5, 2])
    assert str(info.value) == "value[1] must be <= 1 (ge=0, le=1), got 2"
    with pytest.raises(ValidationError) as info:
        validate(ConfidenceScore | None, 5, field="c")
    assert "c must be <= 1 (ge=0, le=1), got 5" in str(info.value)

    class Opaque:
        pass

    with pytest.raises(SignatureError, match="pydantic cannot build a validator"):
        validate(Opaque, 1)


def test_many_errors_are_listed_then_counted():
    with pytest.raises(ValidationError) as info:
        validate(list[ConfidenceScore], [2.0] * 8, field="xs")
    err = info.value
    assert len(err.errors) == 8
    assert str(err).count("must be <= 1") == 5
    assert str(err).endswith("and 3 more problem(s)")
    assert err.field == "xs[0]"


def test_errors_pickle_with_their_fields():
    with pytest.raises(ValidationError) as info:
        validate("confidence_score", 1.3, field="confidence")
    err = info.value
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is ValidationError
    assert str(back) == str(err) == "confidence must be <= 1 (ge=0, le=1), got 1.3"
    assert (back.field, back.constraint, back.errors) == ("confidence", "le=1", err.errors)
    assert back.to_dict()["constraint"] == "le=1"
    raised: list[Exception] = []
    with pytest.raises(NotFound) as nf:
        get_type("nope")
    raised.append(nf.value)
    with pytest.raises(SignatureError) as se:
        register_type("opaque2", type("Opaque2", (), {}))
    raised.append(se.value)
    with pytest.raises(ValidationError) as ve:
        register_type("bad name", int)
    raised.append(ve.value)
    for e in raised:
        again = pickle.loads(pickle.dumps(e))
        assert type(again) is type(e) and str(again) == str(e) and again.fields == e.fields


def test_translation_of_errors_from_a_whole_model():
    Outputs = pydantic.create_model(
        "Outputs",
        answer=(str, ...),
        confidence=(ConfidenceScore, ...),
        usage=(TokenUsage, ...),
    )
    with pytest.raises(pydantic.ValidationError) as info:
        Outputs.model_validate(
            {"confidence": 1.5, "usage": {"prompt_tokens": 1, "completion_tokens": -2}}
        )
    err = from_pydantic_error(info.value, annotation=Outputs, field="outputs")
    locs = [e[0] for e in err.errors]
    assert locs == ["outputs.answer", "outputs.confidence", "outputs.usage.completion_tokens"]
    assert "outputs.confidence must be <= 1 (ge=0, le=1), got 1.5" in str(err)
    assert "outputs.usage.completion_tokens must be >= 0 (ge=0), got -2" in str(err)
    # without a field name the locations stand alone
    bare = from_pydantic_error(info.value, annotation=Outputs)
    assert bare.errors[1][0] == "value.confidence"


def test_telemetry_events():
    seen: list[tuple] = []
    telemetry.attach_many(
        "test-types",
        [("dspex", "types", "invalid"), ("dspex", "types", "registered")],
        lambda ev, m, md, cfg: seen.append((ev, m, md)),
    )
    try:
        with pytest.raises(ValidationError):
            validate("probability", 3, field="p")
        register_type("telemetry_probe", int)
        unregister_type("telemetry_probe")
    finally:
        telemetry.detach("test-types")
    assert seen[0] == (
        ("dspex", "types", "invalid"),
        {"count": 1},
        {"field": "p", "constraint": "le=1"},
    )
    assert seen[1] == (
        ("dspex", "types", "registered"),
        {"count": 1},
        {"name": "telemetry_probe", "builtin": False},
    )


def test_types_in_signatures_class_and_string_form():
    from dspex.signatures import Signature
    from dspex.signatures.field import InputField, OutputField

    class Judge(Signature):
        """Judge an answer."""

        answer: str = InputField()
        confidence: ConfidenceScore = OutputField()

    S = Signature(
        "question -> confidence: ConfidenceScore, steps: reasoning_chain, usage: TokenUsage"
    )
    fields = S.model_fields
    assert fields["usage"].annotation is TokenUsage
    assert any(getattr(m, "le", None) == 1 for m in fields["confidence"].metadata)
    assert Judge.model_fields["confidence"].description == "A confidence between 0 and 1."


def test_types_through_predict_with_dummy_lm():
    from dspex.predict.predict import Predict
    from dspex.signatures import Signature
    from dspex.utils.dummies import DummyLM

    S = Signature("question -> confidence: ConfidenceScore, usage: TokenUsage")
    lm = DummyLM([{"confidence": "87%", "usage": '{"input_tokens": 3, "output_tokens": 4}'}])
    with dspex.context(lm=lm):
        pred = Predict(S)(question="Is the sky blue?")
    assert pred.confidence == 0.87
    assert pred.usage == TokenUsage(prompt_tokens=3, completion_tokens=4)


def test_import_is_light():
    code = (
        "import sys, time; t = time.perf_counter(); import dspex.types; "
        "print(time.perf_counter() - t); "
        "print('numpy' in sys.modules, 'ray' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[1:] == ["False", "False"]
    assert float(out[0]) < 2.0  # generous: a cold import of dspex + pydantic on a busy 2-core box
