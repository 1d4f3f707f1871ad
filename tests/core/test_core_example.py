import pickle

import pytest

import dspex


def test_example_access_inputs_labels():
    ex = dspex.Example(question="q", answer="a", dspy_uuid="u").with_inputs("question")
    assert ex.question == "q" and ex["answer"] == "a"
    assert ex.inputs().toDict() == {"question": "q"}
    assert ex.labels().toDict() == {"answer": "a", "dspy_uuid": "u"}
    assert len(ex) == 2  # dspy_ keys are hidden
    assert ex.keys() == ["question", "answer"]
    assert "answer" in ex
    assert ex.copy(answer="b").answer == "b" and ex.answer == "a"
    assert "answer" not in ex.without("answer")
    with pytest.raises(AttributeError, match="no field 'nope'"):
        _ = ex.nope
    with pytest.raises(ValueError, match="with_inputs"):
        dspex.Example(a=1).inputs()


def test_example_equality_hash_pickle():
    a = dspex.Example(x=[1, 2], y={"k": 1})
    b = dspex.Example(x=[1, 2], y={"k": 1})
    assert a == b and hash(a) == hash(b)
    again = pickle.loads(pickle.dumps(a.with_inputs("x")))
    assert again == a and again._input_keys == {"x"}


def test_prediction_numeric_behaviour():
    p = dspex.Prediction(score=0.5)
    assert float(p) == 0.5 and p + 1 == 1.5 and p < 1
    with pytest.raises(ValueError):
        float(dspex.Prediction(answer="x"))
