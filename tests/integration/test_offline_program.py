"""A DSPy-style program, unchanged, end to end against the simulated LM over real HTTP."""

import asyncio

import pytest

import dspex as dspy
from dspex.sim import expected_score, load_task


@pytest.fixture
def lm(sim):
    return dspy.LM("openai/sim-medium-fast", api_base=sim.base_url + "/v1", api_key="sim-key", cache=False)


def exact(example, pred, trace=None):
    return str(example.answer).strip().lower() == str(pred.answer).strip().lower()


def test_predict_cot_and_evaluate_match_the_simulators_expected_score(lm):
    dspy.configure(lm=lm)
    dev = load_task("arithmetic", n=120, seed=7)
    plain = dspy.Evaluate(devset=dev, metric=exact, num_threads=16)(dspy.Predict("question -> answer"))
    cot = dspy.Evaluate(devset=dev, metric=exact, num_threads=16)(dspy.ChainOfThought("question -> answer"))
    want_plain = 100 * expected_score("arithmetic", dev, model="sim-medium-fast")
    want_cot = 100 * expected_score("arithmetic", dev, model="sim-medium-fast", reasoning=True)
    # 120 Bernoulli draws: a standard error of about 4.5 points.
    assert abs(plain.score - want_plain) < 14
    assert abs(cot.score - want_cot) < 14
    assert plain.errors == 0 and cot.errors == 0


def test_typed_outputs_and_json_adapter(lm):
    dspy.configure(lm=lm, adapter=dspy.JSONAdapter())

    class Facts(dspy.Signature):
        """Extract facts."""

        text: str = dspy.InputField()
        count: int = dspy.OutputField()
        tags: list[str] = dspy.OutputField()
        ok: bool = dspy.OutputField()

    pred = dspy.Predict(Facts)(text="anything at all")
    assert isinstance(pred.count, int) and isinstance(pred.tags, list) and isinstance(pred.ok, bool)


def test_react_runs_tools_offline(lm):
    dspy.configure(lm=lm)
    calls = []

    def lookup(topic: str) -> str:
        """Look a topic up in the encyclopedia."""
        calls.append(topic)
        return f"{topic} is well documented."

    agent = dspy.ReAct("question -> answer", tools=[lookup], max_iters=4)
    pred = agent(question="Tell me about owls.")
    assert isinstance(pred.answer, str) and pred.answer
    assert any(k.startswith("tool_name_") for k in pred.trajectory)


def test_streamify_yields_answer_chunks_then_the_prediction(lm):
    dspy.configure(lm=lm)
    program = dspy.Predict("question -> answer")
    stream = dspy.streamify(program, stream_listeners=[dspy.streaming.StreamListener("answer")])

    async def collect():
        return [item async for item in stream(question="What is a sim?")]

    items = asyncio.run(collect())
    final = items[-1]
    assert isinstance(final, dspy.Prediction)
    chunks = [i for i in items if isinstance(i, dspy.streaming.StreamResponse)]
    assert chunks and "".join(c.chunk for c in chunks).strip() == str(final.answer).strip()


def test_saved_program_reloads_and_answers_the_same(lm, tmp_path):
    dspy.configure(lm=lm)
    train = load_task("arithmetic", n=4, seed=3)
    program = dspy.ChainOfThought("question -> answer")
    program.predict.demos = [dspy.Example(question=e.question, reasoning="Compute it.", answer=e.answer) for e in train]
    program.save(tmp_path / "p.json")
    again = dspy.ChainOfThought("question -> answer")
    again.load(tmp_path / "p.json")
    q = load_task("arithmetic", n=1, seed=9)[0].question
    assert program(question=q).answer == again(question=q).answer
