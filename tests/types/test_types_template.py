"""Prompt templates: placeholder syntax, required / allowed variables, rendering."""

import pytest
from pydantic import BaseModel

from dspex.errors import SignatureError, ValidationError
from dspex.types import (
    PromptTemplate,
    prompt_template,
    render_template,
    template_variables,
    validate,
)


def test_valid_templates_and_their_variables():
    text = "Answer {{question}} using {{ context }}. Again: {{question}}."
    assert validate(PromptTemplate, text) == text
    assert template_variables(text) == ("question", "context")
    assert template_variables("no placeholders at all") == ()
    # a lone "}}" is text: JSON examples end that way
    json_like = 'Return {"a": {"b": 1}} for {{x}}'
    assert validate("prompt_template", json_like) == json_like
    assert template_variables(json_like) == ("x",)


@pytest.mark.parametrize(
    ("text", "constraint", "phrase"),
    [
        (
            "",
            "min_length=1",
            "tpl must have at least 1 character (min_length=1, max_length=100000), got ''",
        ),
        (
            "x" * 100_001,
            "max_length=100000",
            "tpl must have at most 100000 characters (min_length=1, max_length=100000), got 100001 characters",
        ),
        (
            "Hello {{name",
            "template_syntax",
            "tpl opens '{{' at character 6 and never closes it with '}}'",
        ),
        ("{{a {{b}}", "template_syntax", "opens '{{' at character 0 and never closes it"),
        ("Hi {{ }}", "template_syntax", "tpl has an empty placeholder '{{ }}' at character 3"),
        (
            "Hi {{1st}}",
            "template_syntax",
            "placeholder '{{1st}}' at character 3 whose name is not a valid variable name",
        ),
        ("Hi {{first-name}}", "template_syntax", "'{{first-name}}'"),
        (42, "type=string", "tpl must be a string, got 42"),
    ],
)
def test_bad_templates(text, constraint, phrase):
    with pytest.raises(ValidationError) as info:
        validate(PromptTemplate, text, field="tpl")
    assert info.value.constraint == constraint
    assert phrase in str(info.value)
    assert info.value.field == "tpl"


def test_required_and_allowed_variables():
    QA = prompt_template(required=["question"], allowed=["question", "context"])
    assert validate(QA, "Q: {{question}} C: {{context}}") == "Q: {{question}} C: {{context}}"
    with pytest.raises(ValidationError) as info:
        validate(QA, "C: {{context}}", field="tpl")
    assert str(info.value) == "tpl must use the variable(s) {{question}}"
    assert info.value.constraint == "required_variables"
    with pytest.raises(ValidationError) as info:
        validate(QA, "{{question}} {{answer}}", field="tpl")
    assert (
        "tpl uses {{answer}}, which is not among the allowed variables (context, question)"
        in str(info.value)
    )
    assert info.value.constraint == "allowed_variables"
    # syntax is still checked first
    with pytest.raises(ValidationError, match="never closes"):
        validate(QA, "{{question")
    assert prompt_template(required=["q"]) is prompt_template(required=("q",))


def test_prompt_template_factory_rejects_bad_declarations():
    with pytest.raises(SignatureError, match="'a b' is not a valid variable name"):
        prompt_template(required=["a b"])
    with pytest.raises(SignatureError, match="required variables \\['x'\\] are not in allowed"):
        prompt_template(required=["x"], allowed=["y"])


def test_render_template():
    assert (
        render_template("Hi {{ name }}, you are {{age}}.", name="Ada", age=36)
        == "Hi Ada, you are 36."
    )
    assert render_template("{{a}}{{a}}", {"a": "x"}, unused=1) == "xx"
    with pytest.raises(ValidationError) as info:
        render_template("{{a}} {{b}} {{c}}", a=1)
    assert info.value.field == "b" and info.value.constraint == "required_variable"
    assert "needs a value for b, c; pass b=..., c=... to render_template" in str(info.value)
    with pytest.raises(ValidationError, match="never closes"):
        render_template("{{oops", oops=1)
    with pytest.raises(ValidationError) as info:
        template_variables("{{}}")
    assert info.value.constraint == "template_syntax"


class Config(BaseModel):
    template: PromptTemplate


def test_template_schema():
    prop = Config.model_json_schema()["properties"]["template"]
    assert prop["type"] == "string" and prop["minLength"] == 1 and prop["maxLength"] == 100_000
    assert "{{variable}}" in prop["description"]
