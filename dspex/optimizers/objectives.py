"""Trial objectives: picklable callables that build a candidate program from a trial's
parameters and score it through the evaluator they are handed.

They are plain classes (no closures), so a Ray trial runner can ship one to its workers once
and call it there with a worker-local evaluator. Settings they need (the task model) travel
inside them and are applied around each call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dspex.optimizers._edit import set_instructions, set_reasoning
from dspex.optimizers.base import rng_for
from dspex.optimizers.evaluation import Evaluator
from dspex.primitives.module import Module
from dspex.settings import settings

__all__ = ["HyperObjective", "PromptObjective", "minibatch"]


def minibatch(valset: Sequence[Any], size: int | None, seed: int | None, number: int) -> list[Any]:
    """The examples trial ``number`` is scored on: a seeded sample of ``size`` (all when None)."""
    if size is None or size >= len(valset):
        return list(valset)
    return rng_for(seed, "minibatch", number).sample(list(valset), size)


class PromptObjective:
    """MIPROv2's objective: ``{i}_predictor_instruction`` and ``{i}_predictor_demos`` pick
    predictor i's instruction and demo set."""

    def __init__(
        self,
        program: Module,
        instruction_candidates: Mapping[int, Sequence[str]],
        demo_candidates: Mapping[int, Sequence[Sequence[Any]]] | None,
        valset: Sequence[Any],
        metric: Callable[..., Any],
        *,
        batch_size: int | None,
        seed: int | None,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.program = program
        self.instruction_candidates = {i: list(v) for i, v in instruction_candidates.items()}
        self.demo_candidates = None if demo_candidates is None else {i: [list(s) for s in v] for i, v in demo_candidates.items()}
        self.valset = list(valset)
        self.metric = metric
        self.batch_size = batch_size
        self.seed = seed
        self.overrides = dict(overrides or {})

    def build(self, params: Mapping[str, Any]) -> Module:
        prog: Module = self.program.deepcopy()
        for i, predictor in enumerate(prog.predictors()):
            set_instructions(predictor, self.instruction_candidates[i][int(params[f"{i}_predictor_instruction"])])
            if self.demo_candidates is not None:
                predictor.demos = list(self.demo_candidates[i][int(params[f"{i}_predictor_demos"])])
        return prog

    def __call__(self, params: dict[str, Any], number: int, evaluator: Evaluator) -> dict[str, float]:
        program = self.build(params)
        with settings.context(**self.overrides):
            ev = evaluator.evaluate_one(program, minibatch(self.valset, self.batch_size, self.seed, number), self.metric)
        return {"score": ev.score, "lm_calls": float(ev.lm_calls), "paid_calls": float(ev.paid_calls)}


class HyperObjective:
    """BayesianOptimizer's objective over program hyper-parameters: ``model`` (index into
    ``models``), ``temperature``, ``num_demos`` (the first k of a bootstrapped pool),
    ``instruction`` (index into ``instructions``) and ``reasoning`` (on / off). A dimension
    left out of the space keeps the program as it is."""

    def __init__(
        self,
        program: Module,
        *,
        models: Sequence[Any] | None,
        demo_pool: Mapping[int, Sequence[Any]] | None,
        instructions: Mapping[int, Sequence[str]] | None,
        valset: Sequence[Any],
        metric: Callable[..., Any],
        batch_size: int | None,
        seed: int | None,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.program = program
        self.models = list(models or [])
        self.demo_pool = None if demo_pool is None else {i: list(v) for i, v in demo_pool.items()}
        self.instructions = None if instructions is None else {i: list(v) for i, v in instructions.items()}
        self.valset = list(valset)
        self.metric = metric
        self.batch_size = batch_size
        self.seed = seed
        self.overrides = dict(overrides or {})

    def build(self, params: Mapping[str, Any]) -> Module:
        prog: Module = self.program.deepcopy()
        lm = None
        if "model" in params and self.models:
            lm = self.models[int(params["model"])]
        if "temperature" in params:
            base = lm or self.overrides.get("lm") or settings.get("lm")
            if base is not None:
                lm = base.copy(temperature=float(params["temperature"]))
        for i, predictor in enumerate(prog.predictors()):
            if lm is not None:
                predictor.lm = lm
            if "instruction" in params and self.instructions is not None:
                options = self.instructions[i]
                set_instructions(predictor, options[int(params["instruction"]) % len(options)])
            if "num_demos" in params and self.demo_pool is not None:
                predictor.demos = list(self.demo_pool.get(i, []))[: int(params["num_demos"])]
            if "reasoning" in params:
                set_reasoning(predictor, bool(params["reasoning"]))
        return prog

    def __call__(self, params: dict[str, Any], number: int, evaluator: Evaluator) -> dict[str, float]:
        program = self.build(params)
        with settings.context(**self.overrides):
            ev = evaluator.evaluate_one(program, minibatch(self.valset, self.batch_size, self.seed, number), self.metric)
        return {
            "score": ev.score,
            "latency_ms": ev.mean_latency_ms,
            "cost_usd": ev.mean_cost_usd,
            "lm_calls": float(ev.lm_calls),
            "paid_calls": float(ev.paid_calls),
        }
