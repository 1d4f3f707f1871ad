import asyncio
import time

import pytest

import dspex
from dspex.errors import ConfigurationError, StepFailed
from dspex.clients.base_lm import BaseLM, Choice, LMResponse


class SlowLM(BaseLM):
    """Answers every field with a fixed value after an async delay; records overlap."""

    def __init__(self, delay_s: float):
        super().__init__("slow")
        self.delay_s = delay_s
        self.in_flight = 0
        self.max_in_flight = 0

    async def aforward(self, prompt=None, messages=None, **kw):
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(self.delay_s)
        self.in_flight -= 1
        system = messages[0]["content"]
        outs = system.split("Your output fields are:\n")[1].split("\nAll interactions")[0]
        names = [line.split("`")[1] for line in outs.splitlines() if line[:1].isdigit()]
        text = "\n\n".join(f"[[ ## {n} ## ]]\n{n}-value" for n in names)
        return LMResponse(model="slow", choices=[Choice(text=text)])


def build():
    g = dspex.ProgramGraph(inputs=["question"])
    g.add("keywords", dspex.Predict("question -> keywords"))
    g.add("summary", dspex.Predict("question -> summary"))
    g.add("answer", dspex.Predict("question, keywords, summary -> answer"))
    return g


def test_levels_and_concurrency():
    g = build()
    assert g.levels() == [["keywords", "summary"], ["answer"]]
    lm = SlowLM(0.1)
    dspex.configure(lm=lm)
    t0 = time.perf_counter()
    out = g(question="q")
    elapsed = time.perf_counter() - t0
    assert out.answer == "answer-value"
    assert lm.max_in_flight == 2  # the two independent steps overlapped
    assert elapsed < 0.29  # two levels of 0.1 s, not three sequential calls


def test_named_predictors_and_bad_wiring():
    g = build()
    assert [n for n, _ in g.named_predictors()] == ["steps['keywords']", "steps['summary']", "steps['answer']"]
    with pytest.raises(ConfigurationError, match="neither a graph input"):
        g.add("x", dspex.Predict("nothing_produces_this -> y"))
    with pytest.raises(ConfigurationError, match="already exists"):
        g.add("answer", dspex.Predict("question -> z"))
    with pytest.raises(ConfigurationError, match="missing input"):
        g()


def test_step_failure_names_the_step():
    class Boom(dspex.Module):
        def forward(self, question):
            raise RuntimeError("nope")

    g = dspex.ProgramGraph(inputs=["question"])
    g.add("boom", Boom(), outputs=["x"])
    with pytest.raises(StepFailed, match="Step 'boom'"):
        g(question="q")
