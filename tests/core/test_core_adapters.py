import json
from typing import Literal

import pydantic
import pytest

import dspex
from dspex.errors import AdapterParseError
from dspex.utils.dummies import DummyLM


class Sig(dspex.Signature):
    """Answer the question."""

    question: str = dspex.InputField()
    context: list[str] = dspex.InputField(desc="facts")
    answer: float = dspex.OutputField()
    label: Literal["yes", "no"] = dspex.OutputField()


EXPECTED_SYSTEM = """Your input fields are:
1. `question` (str): 
2. `context` (list[str]): facts
Your output fields are:
1. `answer` (float): 
2. `label` (Literal['yes', 'no']):
All interactions will be structured in the following way, with the appropriate values filled in.

[[ ## question ## ]]
{question}

[[ ## context ## ]]
{context}

[[ ## answer ## ]]
{answer}        # note: the value you produce must be a single float value

[[ ## label ## ]]
{label}        # note: the value you produce must exactly match (no extra characters) one of: yes; no

[[ ## completed ## ]]
In adhering to this structure, your objective is: 
        Answer the question."""


def test_chat_format_matches_dspy():
    msgs = dspex.ChatAdapter().format(Sig, demos=[], inputs={"question": "Q?", "context": ["a", "b"]})
    assert msgs[0] == {"role": "system", "content": EXPECTED_SYSTEM}
    assert msgs[1]["role"] == "user"
    assert msgs[1]["content"] == (
        "[[ ## question ## ]]\nQ?\n\n[[ ## context ## ]]\n[\"a\", \"b\"]\n\n"
        "Respond with the corresponding output fields, starting with the field `[[ ## answer ## ]]` "
        "(must be formatted as a valid Python float), then `[[ ## label ## ]]` (must be formatted as a "
        "valid Python Literal['yes', 'no']), and then ending with the marker for `[[ ## completed ## ]]`."
    )


def test_demos_become_user_assistant_pairs():
    demos = [
        dspex.Example(question="q1", context=["c"], answer=1.0, label="yes"),
        dspex.Example(question="q2", answer=2.0),  # incomplete
        dspex.Example(unrelated=1),  # dropped: no input and output
    ]
    msgs = dspex.ChatAdapter().format(Sig, demos=demos, inputs={"question": "Q", "context": []})
    roles = [m["role"] for m in msgs]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert msgs[1]["content"].startswith("This is an example of the task")
    assert "Not supplied for this particular example." in msgs[2]["content"]
    assert msgs[3]["content"] == '[[ ## question ## ]]\nq1\n\n[[ ## context ## ]]\n["c"]'
    assert msgs[4]["content"].endswith("[[ ## completed ## ]]\n")


def test_chat_parse_types_and_literal_cleanup():
    out = dspex.ChatAdapter().parse(Sig, "[[ ## answer ## ]]\n3.5\n\n[[ ## label ## ]]\n'yes'\n\n[[ ## completed ## ]]")
    assert out == {"answer": 3.5, "label": "yes"}


def test_chat_parse_missing_field_raises_with_raw_reply():
    with pytest.raises(AdapterParseError) as info:
        dspex.ChatAdapter().parse(Sig, "[[ ## answer ## ]]\n3.5")
    assert "label" in str(info.value)
    assert info.value.lm_response == "[[ ## answer ## ]]\n3.5"


def test_constraints_are_enforced_when_parsing():
    class S(dspex.Signature):
        q: str = dspex.InputField()
        p: float = dspex.OutputField(ge=0, le=1)

    with pytest.raises(AdapterParseError, match="p"):
        dspex.ChatAdapter().parse(S, "[[ ## p ## ]]\n1.7")
    assert dspex.ChatAdapter().parse(S, "[[ ## p ## ]]\n0.7") == {"p": 0.7}


def test_json_format_and_parse():
    adapter = dspex.JSONAdapter()
    msgs = adapter.format(Sig, demos=[], inputs={"question": "Q", "context": []})
    assert "Outputs will be a JSON object with the following fields." in msgs[0]["content"]
    assert msgs[-1]["content"].endswith(
        "Respond with a JSON object in the following order of fields: `answer` (must be formatted as a "
        "valid Python float), then `label` (must be formatted as a valid Python Literal['yes', 'no'])."
    )
    assert adapter.parse(Sig, 'Sure! ```json\n{"answer": "2", "label": "no"}\n```') == {"answer": 2.0, "label": "no"}
    with pytest.raises(AdapterParseError):
        adapter.parse(Sig, "not json at all")


class JsonCapableLM(DummyLM):
    capabilities = frozenset({"json_schema", "json_object"})


def test_json_adapter_requests_structured_output_when_supported():
    lm = JsonCapableLM([{"x": 1}])
    compiled = dspex.signatures.compile_signature(Sig)
    kwargs = dspex.JSONAdapter().request_kwargs(lm, compiled, {})
    assert kwargs["response_format"]["type"] == "json_schema"
    assert kwargs["response_format"]["json_schema"]["name"] == "DSPyProgramOutputs"
    plain = dspex.JSONAdapter().request_kwargs(DummyLM([]), compiled, {})
    assert "response_format" not in plain  # unknown provider: the prompt alone, as DSPy


def test_chat_falls_back_to_json_then_raises_with_both():
    lm = DummyLM({"": {"nothing": "here"}})
    lm.answers = {"Respond with the corresponding": {"garbage": 1}}
    # chat reply unparseable; JSON reply comes from the same script, also unparseable
    dspex.configure(lm=lm)
    with pytest.raises(AdapterParseError) as info:
        dspex.Predict(Sig)(question="q", context=[])
    assert "Neither the chat format nor the JSON format" in str(info.value)


def test_chat_fallback_to_json_succeeds():
    class Scripted(dspex.BaseLM):
        def __init__(self):
            super().__init__("scripted")
            self.replies = ["no markers here", json.dumps({"answer": 1, "label": "no"})]

        def forward(self, prompt=None, messages=None, **kw):
            from dspex.clients.base_lm import Choice, LMResponse

            return LMResponse(model="scripted", choices=[Choice(text=self.replies.pop(0))])

    dspex.configure(lm=Scripted())
    pred = dspex.Predict(Sig)(question="q", context=[])
    assert pred.answer == 1.0 and pred.label == "no"


def test_pydantic_output_via_json_schema_note():
    class Item(pydantic.BaseModel):
        name: str
        qty: int

    sig = dspex.Signature("q -> items: list[Item]", custom_types={"Item": Item})
    system = dspex.ChatAdapter().format(sig, [], {"q": "x"})[0]["content"]
    assert "must adhere to the JSON schema:" in system
    parsed = dspex.ChatAdapter().parse(sig, '[[ ## items ## ]]\n[{"name": "a", "qty": 2}]')
    assert parsed["items"][0].qty == 2
