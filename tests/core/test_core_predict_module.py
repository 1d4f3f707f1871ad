import asyncio
import json
import pickle
import threading

import pytest

import dspex
from dspex.errors import ConfigurationError, ExecutionAborted
from dspex.utils.dummies import DummyLM


def test_predict_returns_prediction_and_records_history():
    lm = DummyLM([{"answer": "Paris"}])
    dspex.configure(lm=lm)
    pred = dspex.Predict("question -> answer")(question="Capital of France?")
    assert pred.answer == "Paris"
    entry = lm.history[-1]
    assert entry["messages"][-1]["content"].startswith("[[ ## question ## ]]\nCapital of France?")
    assert entry["outputs"] == ["[[ ## answer ## ]]\nParis"]


def test_predict_without_lm_says_what_to_do():
    with pytest.raises(ConfigurationError, match="dspex.configure"):
        dspex.Predict("q -> a")(q="x")


def test_positional_arguments_are_rejected():
    dspex.configure(lm=DummyLM([{"a": "1"}]))
    with pytest.raises(ValueError, match="keyword arguments"):
        dspex.Predict("q -> a")("x")


def test_n_completions():
    lm = DummyLM([{"answer": "a"}, {"answer": "b"}, {"answer": "c"}])
    dspex.configure(lm=lm)
    pred = dspex.Predict("question -> answer", n=3)(question="q")
    assert pred.answer == "a"
    assert pred.completions.answer == ["a", "b", "c"]
    assert len(pred.completions) == 3
    assert pred.completions[2].answer == "c"


def test_dict_mode_and_follow_examples():
    lm = DummyLM({"France": {"answer": "Paris"}, "Japan": {"answer": "Tokyo"}})
    dspex.configure(lm=lm)
    qa = dspex.Predict("question -> answer")
    assert qa(question="Capital of Japan?").answer == "Tokyo"
    assert qa(question="Capital of France?").answer == "Paris"

    lm2 = DummyLM([], follow_examples=True)
    qa.demos = [dspex.Example(question="2+2", answer="4"), dspex.Example(question="3+3", answer="6")]
    with dspex.context(lm=lm2):
        assert qa(question="3+3").answer == "6"


def test_chain_of_thought_adds_reasoning():
    lm = DummyLM([{"reasoning": "think", "answer": "42"}])
    dspex.configure(lm=lm)
    cot = dspex.ChainOfThought("question -> answer: int")
    pred = cot(question="q")
    assert pred.reasoning == "think" and pred.answer == 42
    assert list(cot.predict.signature.output_fields) == ["reasoning", "answer"]


def test_trace_recording():
    dspex.configure(lm=DummyLM([{"answer": "x"}]))
    p = dspex.Predict("question -> answer")
    trace = []
    with dspex.context(trace=trace):
        p(question="q")
    assert len(trace) == 1 and trace[0][0] is p and trace[0][1] == {"question": "q"}


class RAG(dspex.Module):
    def __init__(self):
        super().__init__()
        self.retrieve = dspex.Predict("question -> query")
        self.generate = dspex.ChainOfThought("question, query -> answer")
        self.layers = [dspex.Predict("a -> b"), dspex.Predict("b -> c")]

    def forward(self, question):
        query = self.retrieve(question=question).query
        return self.generate(question=question, query=query)


class NoSuperInit(dspex.Module):
    def __init__(self):
        self.p = dspex.Predict("q -> a")

    def forward(self, q):
        return self.p(q=q)


def test_named_predictors_follow_dspy_naming():
    names = [n for n, _ in RAG().named_predictors()]
    assert names == ["retrieve", "generate.predict", "layers[0]", "layers[1]"]


def test_module_without_super_init_still_works():
    dspex.configure(lm=DummyLM([{"a": "1"}]))
    m = NoSuperInit()
    assert m(q="x").a == "1"
    assert [n for n, _ in m.named_predictors()] == ["p"]


def test_save_and_load_json_roundtrip(tmp_path):
    prog = RAG()
    prog.retrieve.demos = [dspex.Example(question="q1", query="x1")]
    prog.generate.predict.signature = prog.generate.predict.signature.with_instructions("Be brief.")
    path = tmp_path / "prog.json"
    prog.save(path)
    data = json.loads(path.read_text())
    assert set(data) == {"retrieve", "generate.predict", "layers[0]", "layers[1]", "metadata"}
    assert data["retrieve"]["demos"] == [{"question": "q1", "query": "x1"}]
    assert set(data["retrieve"]) == {"traces", "train", "demos", "signature", "lm"}
    fresh = RAG()
    fresh.load(path)
    assert fresh.retrieve.demos[0].query == "x1"
    assert fresh.generate.predict.signature.instructions == "Be brief."


def test_load_into_a_different_program_is_a_clear_error(tmp_path):
    path = tmp_path / "p.json"
    NoSuperInit().save(path)
    with pytest.raises(ConfigurationError, match="different structure"):
        RAG().load(path)


def test_save_program_pickles_whole_program(tmp_path):
    prog = RAG()
    prog.retrieve.demos = [dspex.Example(question="q", query="x")]
    prog.save(tmp_path / "saved", save_program=True)
    import cloudpickle

    with open(tmp_path / "saved" / "program.pkl", "rb") as f:
        again = cloudpickle.load(f)
    assert again.retrieve.demos[0].query == "x"


def test_deepcopy_and_reset_copy():
    prog = RAG()
    prog.retrieve.demos = [dspex.Example(question="q", query="x")]
    copy = prog.deepcopy()
    assert copy.retrieve is not prog.retrieve and copy.retrieve.demos == prog.retrieve.demos
    reset = prog.reset_copy()
    assert reset.retrieve.demos == [] and prog.retrieve.demos != []


def test_batch_runs_concurrently_and_keeps_order():
    lm = DummyLM({f"<q{i}>": {"answer": str(i)} for i in range(20)})
    dspex.configure(lm=lm)
    p = dspex.Predict("question -> answer")
    examples = [dspex.Example(question=f"<q{i}>").with_inputs("question") for i in range(20)]
    out = p.batch(examples, num_threads=4, disable_progress_bar=True)
    assert [o.answer for o in out] == [str(i) for i in range(20)]


def test_acall_native_async():
    dspex.configure(lm=DummyLM([{"answer": "a"}, {"answer": "b"}]))
    p = dspex.Predict("question -> answer")

    async def main():
        return await asyncio.gather(p.acall(question="1"), p.acall(question="2"))

    answers = sorted(r.answer for r in asyncio.run(main()))
    assert answers == ["a", "b"]


def test_context_is_isolated_between_threads():
    lm_a = DummyLM([{"answer": "A"}]).cycle()
    lm_b = DummyLM([{"answer": "B"}]).cycle()
    dspex.configure(lm=lm_a)
    p = dspex.Predict("question -> answer")
    seen = {}
    barrier = threading.Barrier(2)

    def in_b():
        with dspex.context(lm=lm_b):
            barrier.wait()
            seen["b"] = p(question="x").answer

    def in_a():
        barrier.wait()
        seen["a"] = p(question="x").answer

    threads = [threading.Thread(target=in_b), threading.Thread(target=in_a)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"a": "A", "b": "B"}


def test_react_uses_tools_and_extracts():
    calls = []

    def search(query: str) -> str:
        """Search the web."""
        calls.append(query)
        return "Paris is the capital of France."

    lm = DummyLM(
        [
            {"next_thought": "search it", "next_tool_name": "search", "next_tool_args": '{"query": "capital"}'},
            {"next_thought": "done", "next_tool_name": "finish", "next_tool_args": "{}"},
            {"reasoning": "found it", "answer": "Paris"},
        ]
    )
    dspex.configure(lm=lm)
    agent = dspex.ReAct("question -> answer", tools=[search], max_iters=5)
    pred = agent(question="Capital of France?")
    assert pred.answer == "Paris"
    assert calls == ["capital"]
    assert pred.trajectory["observation_0"] == "Paris is the capital of France."
    system = lm.history[0]["messages"][0]["content"]
    assert "(1) search, whose description is <desc>Search the web.</desc>. It takes arguments {'query': {'type': 'string'}}." in system
    assert "(2) finish" in system


def test_tool_rejects_bad_arguments():
    def add(a: int, b: int) -> int:
        return a + b

    tool = dspex.Tool(add)
    assert tool(a=1, b="2") == 3
    with pytest.raises(dspex.errors.ToolError, match="no argument 'c'"):
        tool(a=1, c=2)
    with pytest.raises(dspex.errors.ToolError, match="'a' is invalid"):
        tool(a="x", b=1)


def test_evaluate_scores_and_tolerates_errors():
    class Flaky(dspex.Module):
        def __init__(self):
            super().__init__()
            self.p = dspex.Predict("question -> answer")

        def forward(self, question):
            if question == "boom":
                raise RuntimeError("kaboom")
            return self.p(question=question)

    lm = DummyLM({"q1": {"answer": "1"}, "q2": {"answer": "wrong"}, "q3": {"answer": "3"}})
    dspex.configure(lm=lm)
    devset = [dspex.Example(question=q, answer=a).with_inputs("question") for q, a in [("q1", "1"), ("q2", "2"), ("q3", "3"), ("boom", "x")]]
    metric = lambda ex, pred, trace=None: ex.answer == pred.answer  # noqa: E731
    result = dspex.Evaluate(devset=devset, metric=metric, num_threads=2)(Flaky())
    assert result.score == 50.0
    assert [r[2] for r in result.results] == [1.0, 0.0, 1.0, 0.0]
    assert result.errors == 1
    with pytest.raises(ExecutionAborted, match="max_errors=0"):
        dspex.Evaluate(devset=devset, metric=metric, max_errors=0)(Flaky())


def test_evaluate_native_async_program_and_async_metric():
    lm = DummyLM({f"<q{i}>": {"answer": str(i % 2)} for i in range(30)})
    dspex.configure(lm=lm)
    devset = [dspex.Example(question=f"<q{i}>", answer="0").with_inputs("question") for i in range(30)]

    async def metric(ex, pred, trace=None):
        return ex.answer == pred.answer

    result = dspex.Evaluate(devset=devset, metric=metric, num_threads=8)(dspex.Predict("question -> answer"))
    assert result.score == 50.0


def test_errors_pickle_with_fields():
    from dspex import errors

    for err in [
        errors.RateLimited("slow down", provider="openai", model="m", status=429, retry_after_s=2.0),
        errors.InvalidTransition.of("model", "deprecated", "approve", ["retest"]),
        errors.AdapterParseError("bad", adapter_name="chat", lm_response="raw"),
        errors.ExecutionAborted("stopped", errors=3),
    ]:
        again = pickle.loads(pickle.dumps(err))
        assert type(again) is type(err) and str(again) == str(err) and again.fields == err.fields
    assert errors.RateLimited("x").retryable and not errors.AuthenticationError("x").retryable
    e = errors.InvalidTransition.of("model", "deprecated", "approve", ["retest"])
    assert "deprecated" in str(e) and "retest" in str(e)
    assert isinstance(errors.error_for_status(503, "down"), errors.ProviderUnavailable)
    assert isinstance(errors.error_for_status(400, "x", error_code="context_length_exceeded"), errors.ContextWindowExceeded)
