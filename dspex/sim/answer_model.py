"""The answer model: the probability that a simulated model answers a task example correctly.

    p(correct) = sigmoid(b0 + b_skill * skill - b_diff * difficulty + I + D(x) + R(x))

- ``I``: helpful hint phrases found in the instructions add their weights with diminishing
  returns, ``I+ = hint_cap * (1 - exp(-sum(w) / hint_cap))``; each misleading phrase found
  subtracts its weight in full.
- ``D(x)``: demos. A correct demo of x's cluster adds ``demo_same`` (the k-th extra one of the
  same cluster only ``demo_same * demo_same_decay**k``), a correct demo of another cluster of
  the same task ``demo_other``; the sum S saturates as ``demo_cap * (1 - exp(-S / demo_cap))``.
  Each wrong demo subtracts ``demo_wrong``. Demos without an answer or from other tasks count 0.
- ``R(x)``: asking for reasoning adds ``reason_base + reason_diff * difficulty``.

The server draws u in [0, 1) from a hash of (model, canonical prompt, sample index, seed) and
answers correctly when u < p, so the expected metric of a configuration is the mean of p over
the dataset: ``expected_score`` computes it without calls. README.md has the numbers.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dspex.errors import ConfigurationError
from dspex.primitives.example import Example
from dspex.sim.config import ModelSpec, SimConfig
from dspex.sim.tasks import SimExample, Task, get_task, normalize_answer, sim_example

__all__ = [
    "PARAMS",
    "AnswerModelParams",
    "DemoJudgement",
    "Optimum",
    "demo_score",
    "expected_score",
    "instruction_score",
    "judge_demo",
    "optimum",
    "p_correct",
    "reasoning_score",
]


@dataclass(frozen=True)
class AnswerModelParams:
    b0: float = -0.2
    b_skill: float = 3.0
    b_diff: float = 3.0
    hint_cap: float = 1.2
    demo_same: float = 0.55
    demo_same_decay: float = 0.5
    demo_other: float = 0.10
    demo_wrong: float = 0.35
    demo_cap: float = 1.2
    reason_base: float = 0.20
    reason_diff: float = 0.90


PARAMS = AnswerModelParams()


@dataclass(frozen=True)
class DemoJudgement:
    """What the answer model needs of one demo: its task, cluster and whether it is correct
    (None when the demo shows no answer)."""

    task: str | None
    cluster: str | None
    correct: bool | None


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def instruction_score(task: Task, instructions: str, params: AnswerModelParams = PARAMS) -> float:
    """I: the hint phrases (case and spacing ignored) found in ``instructions``."""
    text = _norm(instructions)
    pos = sum(h.weight for h in task.hints if _norm(h.phrase) in text)
    neg = sum(-h.weight for h in task.misleading if _norm(h.phrase) in text)
    return params.hint_cap * (1.0 - math.exp(-pos / params.hint_cap)) - neg


def demo_score(
    task: Task, cluster: str, demos: Sequence[DemoJudgement], params: AnswerModelParams = PARAMS
) -> float:
    """D(x) for an example of ``cluster``."""
    s = 0.0
    same = 0
    wrong = 0
    for d in demos:
        if d.task != task.name or d.correct is None:
            continue
        if not d.correct:
            wrong += 1
        elif d.cluster == cluster:
            s += params.demo_same * params.demo_same_decay**same
            same += 1
        else:
            s += params.demo_other
    return params.demo_cap * (1.0 - math.exp(-s / params.demo_cap)) - params.demo_wrong * wrong


def reasoning_score(
    difficulty: float, reasoning: bool, params: AnswerModelParams = PARAMS
) -> float:
    return params.reason_base + params.reason_diff * difficulty if reasoning else 0.0


def p_correct(
    task: Task,
    example: SimExample,
    skill: float,
    instructions: str = "",
    demos: Sequence[DemoJudgement] = (),
    reasoning: bool = False,
    params: AnswerModelParams = PARAMS,
) -> float:
    z = (
        params.b0
        + params.b_skill * skill
        - params.b_diff * example.difficulty
        + instruction_score(task, instructions, params)
        + demo_score(task, example.cluster, demos, params)
        + reasoning_score(example.difficulty, reasoning, params)
    )
    return 1.0 / (1.0 + math.exp(-z))


def judge_demo(task: Task, demo: Any) -> DemoJudgement:
    """Judge a demo (an Example or dict with the task's inputs and, ideally, its answer)."""
    found = sim_example(demo)
    if found is None:
        return DemoJudgement(None, None, None)
    demo_task, ex = found
    answer = demo.get(demo_task.answer_field) if hasattr(demo, "get") else None
    if answer is None:
        return DemoJudgement(demo_task.name, ex.cluster, None)
    return DemoJudgement(
        demo_task.name, ex.cluster, normalize_answer(answer) == normalize_answer(ex.answer)
    )


def _skill(task: Task, model: str | float | ModelSpec, config: SimConfig | None) -> float:
    if isinstance(model, ModelSpec):
        return model.skill_for(task.name)
    if isinstance(model, int | float) and not isinstance(model, bool):
        if not 0.0 <= float(model) <= 1.0:
            raise ConfigurationError(f"A skill must be in [0, 1], got {model}.")
        return float(model)
    if isinstance(model, str):
        cfg = config or SimConfig.for_tests()
        return cfg.model(model).skill_for(task.name)
    raise ConfigurationError(
        f"model= takes a model name, a ModelSpec or a skill in [0, 1], got {model!r}."
    )


def _examples(task: Task, examples: Iterable[Any]) -> list[SimExample]:
    out: list[SimExample] = []
    for e in examples:
        found = sim_example(e)
        if found is None or found[0].name != task.name:
            raise ConfigurationError(
                f"{e!r} is not an example of the simulated task {task.name!r}; pass examples "
                f"from load_task({task.name!r}, ...)."
            )
        out.append(found[1])
    if not out:
        raise ConfigurationError("expected_score needs at least one example.")
    return out


def expected_score(
    task: str | Task,
    examples: Iterable[Any],
    *,
    model: str | float | ModelSpec = "sim-medium",
    instructions: str = "",
    demos: Iterable[Any] = (),
    reasoning: bool = False,
    config: SimConfig | None = None,
    params: AnswerModelParams = PARAMS,
) -> float:
    """The exact expected metric (mean p) of a configuration on ``examples``, without calls.

    ``model`` is a model name (looked up in ``config``, default ``SimConfig.for_tests()``), a
    ModelSpec or a skill in [0, 1]. ``demos`` are Examples/dicts with inputs and answers.
    """
    t = get_task(task) if isinstance(task, str) else task
    exs = _examples(t, examples)
    skill = _skill(t, model, config)
    judged = [judge_demo(t, d) for d in demos]
    return sum(p_correct(t, x, skill, instructions, judged, reasoning, params) for x in exs) / len(
        exs
    )


@dataclass(frozen=True)
class Optimum:
    """The best known configuration of a task for one model and demo budget."""

    task: str
    model: str | float
    instructions: str
    demos: list[Example]
    demo_clusters: tuple[str, ...]
    reasoning: bool
    score: float
    #: the baseline (no hints, no demos, no reasoning) on the same examples and model
    baseline: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)


def optimum(
    task: str | Task,
    examples: Iterable[Any],
    *,
    model: str | float | ModelSpec = "sim-medium",
    max_demos: int = 4,
    demo_pool: Iterable[Any] | None = None,
    config: SimConfig | None = None,
    params: AnswerModelParams = PARAMS,
) -> Optimum:
    """The best known configuration: every hint, the best covering set of at most
    ``max_demos`` correct demos (from ``demo_pool``, default a generated train split),
    reasoning on, for ``model``; and its expected score on ``examples``.

    Demo sets are searched exhaustively over cluster multisets when that is small, else
    greedily by marginal gain (D is concave in each cluster's count, so greedy is close).
    """
    t = get_task(task) if isinstance(task, str) else task
    exs = _examples(t, examples)
    skill = _skill(t, model, config)
    if max_demos < 0:
        raise ConfigurationError(f"max_demos must be >= 0, got {max_demos}.")
    pool_examples = (
        list(demo_pool)
        if demo_pool is not None
        else [
            e.to_example(t.answer_field)
            for e in t.load(20 * len(t.clusters), seed=0, split="train")
        ]
    )
    by_cluster: dict[str, list[Any]] = {}
    for d in pool_examples:
        j = judge_demo(t, d)
        if j.task == t.name and j.correct and j.cluster is not None:
            by_cluster.setdefault(j.cluster, []).append(d)
    instructions = t.best_instruction()

    def score(counts: Counter[str]) -> float:
        demos = [DemoJudgement(t.name, c, True) for c, k in counts.items() for _ in range(k)]
        return sum(p_correct(t, x, skill, instructions, demos, True, params) for x in exs) / len(
            exs
        )

    clusters = sorted(by_cluster)
    limit = min(max_demos, sum(len(v) for v in by_cluster.values()))
    best = Counter[str]()
    if clusters and limit > 0:
        n_multisets = math.comb(len(clusters) + limit - 1, limit)
        if n_multisets <= 3000:
            best_s = -1.0
            for combo in itertools.combinations_with_replacement(clusters, limit):
                counts = Counter(combo)
                if any(k > len(by_cluster[c]) for c, k in counts.items()):
                    continue
                s = score(counts)
                if s > best_s:
                    best, best_s = counts, s
        else:
            for _ in range(limit):
                options = [c for c in clusters if best[c] < len(by_cluster[c])]
                best = max((best + Counter([c]) for c in options), key=score)
    demos_out = [d for c in sorted(best) for d in by_cluster[c][: best[c]]]
    baseline = sum(p_correct(t, x, skill, "", (), False, params) for x in exs) / len(exs)
    model_id: str | float = model.name if isinstance(model, ModelSpec) else model
    return Optimum(
        task=t.name,
        model=model_id,
        instructions=instructions,
        demos=demos_out,
        demo_clusters=tuple(sorted(best.elements())),
        reasoning=True,
        score=score(best),
        baseline=baseline,
    )
