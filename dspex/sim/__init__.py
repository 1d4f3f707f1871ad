"""The simulated LM server: a synthetic benchmark that speaks OpenAI and Anthropic.

It is *not* a language model. It answers its own synthetic tasks correctly with a documented
probability that depends on the model's skill, the example's difficulty, the instructions,
the demos and whether reasoning is asked for (README.md in this folder), and answers any
other prompt with a well-formed, type-correct reply. Use it for offline runs, tests and
benchmarks:

    from dspex.sim import SimConfig, SimServer, load_task, expected_score, optimum

    with SimServer(SimConfig.for_tests()) as sim:
        lm = dspex.LM("openai/sim-medium-fast", api_base=sim.openai_base_url, api_key="sim")
        ...

or ``python -m dspex.sim serve --port 8000 --config sim.yaml``.
"""

from dspex.sim.answer_model import (
    PARAMS,
    AnswerModelParams,
    Optimum,
    expected_score,
    optimum,
    p_correct,
)
from dspex.sim.config import FaultSpec, LatencySpec, ModelSpec, PriceSpec, SimConfig
from dspex.sim.runner import SimClient, SimProcess, SimServer
from dspex.sim.tasks import (
    AnswerMatch,
    Hint,
    SimExample,
    Task,
    get_task,
    list_tasks,
    load_task,
    normalize_answer,
)

__all__ = [
    "PARAMS",
    "AnswerMatch",
    "AnswerModelParams",
    "FaultSpec",
    "Hint",
    "LatencySpec",
    "ModelSpec",
    "Optimum",
    "PriceSpec",
    "SimClient",
    "SimConfig",
    "SimExample",
    "SimProcess",
    "SimServer",
    "Task",
    "expected_score",
    "get_task",
    "list_tasks",
    "load_task",
    "normalize_answer",
    "optimum",
    "p_correct",
]
