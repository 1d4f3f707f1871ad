"""DSPy conveniences: callbacks, usage tracking, History, majority, BestOfN, Refine, Parallel."""

import asyncio

import pytest

import dspex
from dspex.utils.dummies import DummyLM


class Recorder(dspex.BaseCallback):
    def __init__(self):
        self.events = []

    def on_module_start(self, call_id, instance, inputs):
        self.events.append(("module_start", type(instance).__name__))

    def on_module_end(self, call_id, outputs, exception=None):
        self.events.append(("module_end", exception is None))

    def on_lm_start(self, call_id, instance, inputs):
        self.events.append(("lm_start", instance.model))

    def on_lm_end(self, call_id, outputs, exception=None):
        self.events.append(("lm_end", outputs))

    def on_adapter_format_start(self, call_id, instance, inputs):
        self.events.append(("format_start", type(instance).__name__))

    def on_adapter_parse_end(self, call_id, outputs, exception=None):
        self.events.append(("parse_end", outputs))


class Broken(dspex.BaseCallback):
    def on_module_start(self, call_id, instance, inputs):
        raise RuntimeError("callback bug")


def test_callbacks_fire_in_order_and_a_broken_one_does_not_break_the_call():
    rec = Recorder()
    dspex.configure(lm=DummyLM([{"answer": "x"}]), callbacks=[rec, Broken()])
    dspex.Predict("question -> answer")(question="q")
    kinds = [e[0] for e in rec.events]
    assert kinds == ["module_start", "format_start", "lm_start", "lm_end", "parse_end", "module_end"]
    assert rec.events[4] == ("parse_end", {"answer": "x"})


def test_track_usage_attaches_totals_per_model():
    dspex.configure(lm=DummyLM([{"answer": "x" * 40}]).cycle(), track_usage=True)

    class Two(dspex.Module):
        def __init__(self):
            super().__init__()
            self.a = dspex.Predict("question -> answer")
            self.b = dspex.Predict("question -> answer")

        def forward(self, question):
            self.a(question=question)
            return self.b(question=question)

    pred = Two()(question="q")
    usage = pred.get_lm_usage()
    assert set(usage) == {"dummy"}
    single = dspex.Predict("question -> answer")(question="q").get_lm_usage()["dummy"]
    assert usage["dummy"]["completion_tokens"] == 2 * single["completion_tokens"] > 0


def test_history_renders_as_turns():
    class Chat(dspex.Signature):
        question: str = dspex.InputField()
        history: dspex.History = dspex.InputField()
        answer: str = dspex.OutputField()

    lm = DummyLM([{"answer": "fine"}])
    dspex.configure(lm=lm)
    history = dspex.History(messages=[{"question": "hi", "answer": "hello"}])
    dspex.Predict(Chat)(question="how are you?", history=history)
    msgs = lm.history[-1]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[1]["content"] == "[[ ## question ## ]]\nhi"
    assert msgs[2]["content"].startswith("[[ ## answer ## ]]\nhello")
    assert "`history`" not in msgs[0]["content"].split("All interactions")[0]


def test_majority_picks_most_common_normalized_answer():
    pred = dspex.Prediction.from_completions([{"answer": "Paris"}, {"answer": "paris."}, {"answer": "Lyon"}])
    assert dspex.majority(pred).answer in ("Paris", "paris.")


def test_best_of_n_stops_at_threshold():
    lm = DummyLM([{"answer": "1"}, {"answer": "5"}, {"answer": "9"}])
    dspex.configure(lm=lm)
    best = dspex.BestOfN(dspex.Predict("question -> answer: int"), N=3, reward_fn=lambda args, p: p.answer, threshold=5)
    assert best(question="q").answer == 5
    assert next(lm.answers) == {"answer": "9"}  # the third answer was never needed


def test_refine_passes_advice_as_hint():
    lm = DummyLM(
        [
            {"answer": "1"},  # first attempt, low reward
            {"advice": "go bigger"},  # advice call
            {"answer": "9"},  # second attempt with the hint
        ]
    )
    dspex.configure(lm=lm)
    refine = dspex.Refine(dspex.Predict("question -> answer: int"), N=3, reward_fn=lambda a, p: p.answer, threshold=5)
    assert refine(question="q").answer == 9
    from dspex.clients.base_lm import GLOBAL_HISTORY

    third = GLOBAL_HISTORY[-1]["messages"][-1]["content"]
    assert "[[ ## hint_ ## ]]\ngo bigger" in third


def test_parallel_and_asyncify():
    lm = DummyLM({"<1>": {"answer": "one"}, "<2>": {"answer": "two"}})
    dspex.configure(lm=lm)
    p = dspex.Predict("question -> answer")
    out = dspex.Parallel(num_threads=2)([(p, {"question": "<1>"}), (p, dspex.Example(question="<2>").with_inputs("question"))])
    assert [o.answer for o in out] == ["one", "two"]

    async def main():
        return await dspex.asyncify(p)(question="<2>")

    assert asyncio.run(main()).answer == "two"


def test_load_whole_program(tmp_path):
    prog = dspex.ChainOfThought("question -> answer")
    prog.predict.demos = [dspex.Example(question="q", reasoning="r", answer="a")]
    prog.save(tmp_path / "p", save_program=True)
    again = dspex.load(tmp_path / "p")
    assert again.predict.demos[0].answer == "a"
    with pytest.raises(dspex.errors.ConfigurationError, match="save_program=True"):
        dspex.load(tmp_path / "nothing")


def test_evaluate_with_an_lm_judge_metric_moves_it_off_the_io_loop():
    lm = DummyLM([{"answer": "x", "verdict": "True"}]).cycle()
    dspex.configure(lm=lm)
    judge = dspex.Predict("answer -> verdict: bool")

    def metric(example, pred, trace=None):
        return judge(answer=pred.answer).verdict  # a sync LM call inside a metric

    devset = [dspex.Example(question=f"q{i}").with_inputs("question") for i in range(10)]
    result = dspex.Evaluate(devset=devset, metric=metric, num_threads=4)(dspex.Predict("question -> answer"))
    assert result.score == 100.0 and result.errors == 0
