"""dspex's own LM client, adapters and Evaluate against the simulator: the accuracy they
measure matches the answer model's expected score."""

from __future__ import annotations

import math
from typing import Literal

import dspex
from dspex.sim import SimServer, expected_score, get_task, load_task

DEFAULT_INSTRUCTION = "Given the fields `question`, produce the fields `answer`."


def test_evaluate_matches_the_expected_score(sim: SimServer) -> None:
    lm = dspex.LM("openai/sim-small-fast", api_base=sim.openai_base_url, api_key="sim", cache=False)
    exs = load_task("arithmetic", 200, seed=0, split="test")
    with dspex.context(lm=lm):
        evaluate = dspex.Evaluate(
            devset=exs, metric=get_task("arithmetic").metric, num_threads=8, display_progress=False
        )
        result = evaluate(dspex.ChainOfThought("question -> answer"))
    expected = expected_score(
        "arithmetic", exs, model="sim-small-fast", instructions=DEFAULT_INSTRUCTION, reasoning=True
    )
    observed = result.score / 100
    se = math.sqrt(expected * (1 - expected) / len(exs))
    assert abs(observed - expected) < 4 * se, (observed, expected)
    stats = sim.model_stats("sim-small-fast")
    assert stats["requests"] == 200 and stats["task_answers"]["correct"] == round(observed * 200)


class Extract(dspex.Signature):
    """Extract facts from the text."""

    text: str = dspex.InputField()
    count: int = dspex.OutputField()
    urgent: bool = dspex.OutputField()
    tags: list[str] = dspex.OutputField()
    kind: Literal["bug", "question"] = dspex.OutputField()


def test_any_signature_parses_through_both_adapters(sim: SimServer) -> None:
    lm = dspex.LM(
        "openai/sim-medium-fast", api_base=sim.openai_base_url, api_key="sim", cache=False
    )
    for adapter in (dspex.ChatAdapter(), dspex.JSONAdapter()):
        with dspex.context(lm=lm, adapter=adapter):
            pred = dspex.Predict(Extract)(text="The login page crashes twice a day.")
        assert isinstance(pred.count, int) and isinstance(pred.urgent, bool)
        assert isinstance(pred.tags, list) and pred.kind in ("bug", "question")
