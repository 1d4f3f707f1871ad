"""``MultiObjective``: NSGA-II (pymoo) over program configurations on accuracy, latency and cost.

A configuration picks the model (``models``), the number of demos (from a pool bootstrapped
once), the instruction and reasoning on / off. Each generation's new configurations are scored
as one batch through the evaluator (Ray tasks with the Ray evaluator): accuracy is the
metric's mean, latency the median wall time of a program call, cost the mean USD per example
from the LM replies (``LMResponse.cost_usd``: usage times the price table). Those calls bypass
the response cache (a cached reply has no latency or cost to measure); each configuration is
scored once and remembered, so no identical call is paid twice within a run.

The result exposes the whole Pareto front (each point's objective vector and program), the
hypervolume after each generation, and returns the front's point chosen by ``weights``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from dspex.errors import OptimizerError
from dspex.optimizers.base import (
    Teleprompter,
    check_dataset,
    check_positive,
    check_program,
    rng_for,
)
from dspex.optimizers.bootstrap import BootstrapFewShot
from dspex.optimizers.evaluation import Evaluator, ProgramEvaluation, resolve_evaluator
from dspex.optimizers.objectives import HyperObjective
from dspex.optimizers.pareto import NSGA2Search, choose_by_weights, hypervolume, nondominated
from dspex.optimizers.proposer import GroundedProposer
from dspex.optimizers.result import CandidateRecord
from dspex.primitives.module import Module
from dspex.settings import settings
from dspex.utils.asyncio_bridge import run_sync

__all__ = ["OBJECTIVES", "MultiObjective", "front_hypervolume"]

#: objective name -> the key of its value in a candidate's ``objectives``; accuracy is maximized
OBJECTIVES = {"accuracy": "accuracy", "latency": "latency_ms", "cost": "cost_usd"}


class MultiObjective(Teleprompter):
    description = "NSGA-II over model, demos, instruction and reasoning, on accuracy, latency and cost; returns the Pareto front."
    param_docs = {
        "metric": "metric(example, prediction, trace=None) -> bool or float; its mean is the accuracy.",
        "objectives": "Objectives and their weights for choosing one point of the front, e.g. {'accuracy': 0.6, 'latency': 0.2, 'cost': 0.2}.",
        "models": "Candidate LMs; None keeps the program's LM.",
        "max_demos": "Upper bound of the demo count searched.",
        "instructions": "Candidate instructions; None leaves them out unless num_instruction_candidates > 1.",
        "num_instruction_candidates": "Instructions to have the LM propose (the current one included) when instructions is None.",
        "search_reasoning": "Search reasoning on/off.",
        "population_size": "NSGA-II population size.",
        "pareto_iterations": "NSGA-II generations.",
        "reference_point": "Worst acceptable value per objective for the hypervolume, e.g. {'accuracy': 0, 'latency_ms': 2000, 'cost_usd': 0.01}; default from the first generation.",
        "measure_uncached": "Bypass the response cache while scoring, so latency and cost are measured (default True).",
        "seed": "Seed of NSGA-II.",
        "num_threads": "Examples scored at once by the default (local) evaluator.",
        "progress": "Show progress bars.",
    }

    def __init__(
        self,
        metric: Callable[..., Any],
        objectives: Mapping[str, float] | None = None,
        *,
        models: Sequence[Any] | None = None,
        max_demos: int = 4,
        instructions: Sequence[str] | None = None,
        num_instruction_candidates: int = 0,
        search_reasoning: bool = True,
        population_size: int = 20,
        pareto_iterations: int = 10,
        reference_point: Mapping[str, float] | None = None,
        measure_uncached: bool = True,
        seed: int = 0,
        num_threads: int | None = None,
        progress: bool = True,
    ) -> None:
        if not callable(metric):
            raise OptimizerError("MultiObjective needs metric=: a callable metric(example, prediction, trace=None).")
        weights = dict(objectives or {"accuracy": 0.6, "latency": 0.2, "cost": 0.2})
        unknown = set(weights) - set(OBJECTIVES)
        if unknown or not weights:
            raise OptimizerError(f"objectives must name some of {sorted(OBJECTIVES)}, got {sorted(weights)}.")
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise OptimizerError(f"Objective weights must be >= 0 and not all 0, got {weights}.")
        check_positive("max_demos", max_demos)
        check_positive("population_size", population_size, allow_zero=False)
        check_positive("pareto_iterations", pareto_iterations, allow_zero=False)
        self.metric = metric
        self.objectives = weights
        self.models = list(models) if models is not None else None
        self.max_demos = max_demos
        self.instructions = list(instructions) if instructions is not None else None
        self.num_instruction_candidates = num_instruction_candidates
        self.search_reasoning = search_reasoning
        self.population_size = population_size
        self.pareto_iterations = pareto_iterations
        self.reference_point = dict(reference_point) if reference_point is not None else None
        self.measure_uncached = measure_uncached
        self.seed = seed
        self.num_threads = num_threads
        self.progress = progress

    # -- the decision variables ----------------------------------------------------------------
    def variables(self, pool_size: int, n_instructions: int) -> list[tuple[str, int]]:
        """(name, upper bound) of each integer variable of a configuration."""
        out = []
        if self.models and len(self.models) > 1:
            out.append(("model", len(self.models) - 1))
        if self.max_demos and pool_size:
            out.append(("num_demos", min(self.max_demos, pool_size)))
        if n_instructions > 1:
            out.append(("instruction", n_instructions - 1))
        if self.search_reasoning:
            out.append(("reasoning", 1))
        if not out:
            raise OptimizerError("Nothing to search: give two or more models, max_demos > 0, instructions, or search_reasoning=True.")
        return out

    def compile(  # type: ignore[override]
        self,
        student: Module,
        *,
        trainset: list[Any],
        teacher: Module | None = None,
        valset: list[Any] | None = None,
        evaluator: Evaluator | None = None,
        configurations: Sequence[Mapping[str, int]] | None = None,
    ) -> Module:
        """The front's point chosen by the weights. ``configurations`` skips the search and
        scores exactly those (e.g. every one, to know the true front)."""
        check_program(student)
        trainset = check_dataset(trainset, "trainset")
        valset = check_dataset(valset, "valset") if valset is not None else trainset
        evaluator = resolve_evaluator(evaluator, num_threads=self.num_threads)
        with self._run(seed=self.seed, progress=self.progress) as run:
            objective, variables = self._prepare(student, trainset, teacher, valset)
            names = [n for n, _ in variables]
            memo: dict[tuple[int, ...], dict[str, float]] = {}
            ref: np.ndarray | None = None if self.reference_point is None else self._ref_vector(self.reference_point)
            history: list[float] = []

            def score(batch: list[tuple[int, ...]]) -> list[dict[str, float]]:
                todo = list(dict.fromkeys(x for x in batch if x not in memo))
                programs = [self._measuring(objective.build(dict(zip(names, x, strict=True)))) for x in todo]
                evals = evaluator.evaluate(programs, valset, self.metric) if programs else []
                for x, ev in zip(todo, evals, strict=True):
                    memo[x] = _objectives(ev)
                    run.candidate(ev.score, program=objective.build(dict(zip(names, x, strict=True))),
                                  config=dict(zip(names, x, strict=True)), objectives=memo[x])
                return [memo[x] for x in batch]

            if configurations is not None:
                score([tuple(int(c[n]) for n in names) for c in configurations])
                ref = ref if ref is not None else self._default_ref(list(memo.values()))
                history.append(self._hv(list(memo.values()), ref))
                run.iteration(None, converged=True, hypervolume=history[-1])
            else:
                search = NSGA2Search([u for _, u in variables], n_obj=len(self.objectives), pop_size=self.population_size,
                                     n_gen=self.pareto_iterations, seed=self.seed)
                bar = run.progress_bar(self.pareto_iterations, "generations")
                while search.has_next():
                    batch = search.ask()
                    values = score(batch)
                    search.tell([self._f(v) for v in values])
                    ref = ref if ref is not None else self._default_ref(list(memo.values()))
                    history.append(self._hv(list(memo.values()), ref))
                    converged = len(history) > 1 and abs(history[-1] - history[-2]) <= 1e-12
                    best_acc = max(v["accuracy"] for v in memo.values())
                    run.iteration(100.0 * best_acc, converged=converged, generation=len(history), hypervolume=history[-1])
                    bar.update(1)
                bar.close()
            front = self._front(run.candidates)
            chosen = front[choose_by_weights([c.objectives or {} for c in front], self._weights(), {"accuracy"})]
            program = objective.build(dict(chosen.config))
        assert ref is not None
        return run.finish(
            program,
            pareto_front=front,
            hypervolume_history=history,
            chosen_index=chosen.index,
            best_score=chosen.score,
            extras={"reference_point": dict(zip(self._keys(), ref.tolist(), strict=True)), "variables": dict(variables)},
        )

    # -- helpers -------------------------------------------------------------------------------
    def _prepare(self, student: Module, trainset: list[Any], teacher: Module | None, valset: list[Any]) -> tuple[HyperObjective, list[tuple[str, int]]]:
        pool: dict[int, list[Any]] = {}
        if self.max_demos:
            boot = BootstrapFewShot(metric=self.metric, max_bootstrapped_demos=self.max_demos, max_labeled_demos=self.max_demos, seed=self.seed, progress=False)
            program, _ = boot.bootstrap(student, trainset=trainset, teacher=teacher)
            pool = {i: list(p.demos) for i, p in enumerate(program.predictors())}
        instructions: dict[int, list[str]] | None = None
        if self.instructions is not None:
            instructions = {i: list(self.instructions) for i in range(len(student.predictors()))}
        elif self.num_instruction_candidates > 1:
            proposer = GroundedProposer(rng=rng_for(self.seed, "tips"))
            instructions = run_sync(proposer.propose(student, trainset, self.num_instruction_candidates))
        n_instr = max((len(v) for v in instructions.values()), default=0) if instructions else 0
        variables = self.variables(min((len(v) for v in pool.values()), default=0), n_instr)
        objective = HyperObjective(student.deepcopy(), models=self.models, demo_pool=pool, instructions=instructions,
                                   valset=valset, metric=self.metric, batch_size=None, seed=self.seed)
        return objective, variables

    def _measuring(self, program: Module) -> Module:
        if not self.measure_uncached:
            return program
        default = settings.get("lm")
        for p in program.predictors():
            lm = p.lm or default
            if lm is None:
                raise OptimizerError("No LM is configured; call dspex.configure(lm=...) or pass models=.")
            p.lm = lm.copy(cache=False)
        return program

    def _keys(self) -> list[str]:
        return [OBJECTIVES[name] for name in self.objectives]

    def _weights(self) -> dict[str, float]:
        return {OBJECTIVES[name]: w for name, w in self.objectives.items()}

    def _f(self, values: Mapping[str, float]) -> list[float]:
        return [-values[k] if k == "accuracy" else values[k] for k in self._keys()]

    def _ref_vector(self, point: Mapping[str, float]) -> np.ndarray:
        missing = [k for k in self._keys() if k not in point]
        if missing:
            raise OptimizerError(f"reference_point needs a value for {missing} (keys: {self._keys()}).")
        return np.array(self._f(point), dtype=float)

    def _default_ref(self, values: list[dict[str, float]]) -> np.ndarray:
        # Accuracy 0 and 10 % beyond the worst latency and cost seen so far.
        worst = {k: max(v[k] for v in values) for k in self._keys() if k != "accuracy"}
        point = {"accuracy": 0.0, **{k: 1.1 * w if w > 0 else 1e-9 for k, w in worst.items()}}
        return np.array(self._f(point), dtype=float)

    def _hv(self, values: list[dict[str, float]], ref: np.ndarray) -> float:
        return hypervolume(np.array([self._f(v) for v in values]), ref.tolist())

    def _front(self, candidates: list[CandidateRecord]) -> list[CandidateRecord]:
        scored = [c for c in candidates if c.objectives is not None]
        F = np.array([self._f(c.objectives or {}) for c in scored])
        return [scored[i] for i in nondominated(F)]


def _objectives(ev: ProgramEvaluation) -> dict[str, float]:
    return {"accuracy": ev.mean, "latency_ms": ev.median_latency_ms, "cost_usd": ev.mean_cost_usd}


def front_hypervolume(points: Sequence[Mapping[str, float]], reference_point: Mapping[str, float], keys: Sequence[str] = ("accuracy", "latency_ms", "cost_usd")) -> float:
    """Hypervolume of objective vectors (as in ``CandidateRecord.objectives``) against a
    reference point, accuracy maximized, the rest minimized. For comparing fronts."""
    F = np.array([[-p[k] if k == "accuracy" else p[k] for k in keys] for p in points], dtype=float)
    ref = [-reference_point[k] if k == "accuracy" else reference_point[k] for k in keys]
    return hypervolume(F, ref)
