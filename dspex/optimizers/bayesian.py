"""``BayesianOptimizer``: TPE (optuna) over a program's hyper-parameters.

The dimensions, each optional: which model (``models``), the sampling ``temperature``, how
many demos (the first k of a pool bootstrapped once from the trainset), which instruction
(``instructions`` given, or ``num_instruction_candidates`` proposed by the LM), and whether
the program reasons step by step before answering. Each trial builds the configured program
and scores it on the valset (or a minibatch of it) through the evaluator; trials run through
a ``TrialRunner``. The best trial's program is returned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dspex.errors import OptimizerError
from dspex.optimizers.base import (
    Run,
    Teleprompter,
    check_dataset,
    check_positive,
    check_program,
    rng_for,
)
from dspex.optimizers.bootstrap import BootstrapFewShot
from dspex.optimizers.evaluation import Evaluator, resolve_evaluator
from dspex.optimizers.objectives import HyperObjective
from dspex.optimizers.proposer import GroundedProposer
from dspex.optimizers.result import TrialRecord
from dspex.optimizers.search import (
    Categorical,
    Distribution,
    FloatRange,
    IntRange,
    LocalTrialRunner,
    Searcher,
    TPESearcher,
    TrialRunner,
)
from dspex.primitives.module import Module
from dspex.settings import settings
from dspex.utils.asyncio_bridge import run_sync

__all__ = ["BayesianOptimizer"]


class BayesianOptimizer(Teleprompter):
    description = "TPE search over program hyper-parameters: model, temperature, demo count, instruction, reasoning on/off."
    param_docs = {
        "metric": "metric(example, prediction, trace=None) -> bool or float.",
        "models": "Candidate LMs (the search picks one); None keeps the program's LM.",
        "temperature": "(low, high) range searched for the sampling temperature; None leaves it alone.",
        "max_demos": "Upper bound of the demo count searched (0 leaves demos out of the search).",
        "instructions": "Candidate instructions (for every predictor); None leaves them out unless num_instruction_candidates > 1.",
        "num_instruction_candidates": "Instructions to have the LM propose (the current one included) when instructions is None.",
        "search_reasoning": "Search reasoning on/off (step-by-step reasoning before the outputs).",
        "num_trials": "Trials of the search.",
        "minibatch_size": "Score each trial on a sample of this many valset examples (None: the whole valset).",
        "seed": "Seed of the search and the minibatches.",
        "num_threads": "Examples scored at once by the default (local) evaluator.",
        "progress": "Show progress bars.",
    }

    def __init__(
        self,
        metric: Callable[..., Any],
        *,
        models: Sequence[Any] | None = None,
        temperature: tuple[float, float] | None = None,
        max_demos: int = 4,
        instructions: Sequence[str] | None = None,
        num_instruction_candidates: int = 0,
        search_reasoning: bool = True,
        num_trials: int = 20,
        minibatch_size: int | None = None,
        seed: int = 0,
        num_threads: int | None = None,
        progress: bool = True,
    ) -> None:
        if not callable(metric):
            raise OptimizerError("BayesianOptimizer needs metric=: a callable metric(example, prediction, trace=None).")
        check_positive("max_demos", max_demos)
        check_positive("num_trials", num_trials, allow_zero=False)
        check_positive("num_instruction_candidates", num_instruction_candidates)
        if temperature is not None and (len(temperature) != 2 or not 0 <= temperature[0] <= temperature[1]):
            raise OptimizerError(f"temperature must be a (low, high) range with 0 <= low <= high, got {temperature!r}.")
        if models is not None and not list(models):
            raise OptimizerError("models= must list at least one LM (or be None to keep the program's).")
        if instructions is not None and not list(instructions):
            raise OptimizerError("instructions= must list at least one instruction (or be None).")
        if minibatch_size is not None:
            check_positive("minibatch_size", minibatch_size, allow_zero=False)
        self.metric = metric
        self.models = list(models) if models is not None else None
        self.temperature = temperature
        self.max_demos = max_demos
        self.instructions = list(instructions) if instructions is not None else None
        self.num_instruction_candidates = num_instruction_candidates
        self.search_reasoning = search_reasoning
        self.num_trials = num_trials
        self.minibatch_size = minibatch_size
        self.seed = seed
        self.num_threads = num_threads
        self.progress = progress

    def space(self, instructions: dict[int, list[str]] | None, pool_size: int) -> dict[str, Distribution]:
        space: dict[str, Distribution] = {}
        if self.models:
            space["model"] = Categorical(range(len(self.models)))
        if self.temperature is not None:
            space["temperature"] = FloatRange(*self.temperature)
        if self.max_demos and pool_size:
            space["num_demos"] = IntRange(0, min(self.max_demos, pool_size))
        if instructions and max(len(v) for v in instructions.values()) > 1:
            space["instruction"] = Categorical(range(max(len(v) for v in instructions.values())))
        if self.search_reasoning:
            space["reasoning"] = Categorical([False, True])
        if not space:
            raise OptimizerError(
                "Nothing to search: give models=, temperature=, max_demos > 0 (with a trainset the teacher can "
                "bootstrap from), instructions= or num_instruction_candidates > 1, or search_reasoning=True."
            )
        return space

    def compile(  # type: ignore[override]
        self,
        student: Module,
        *,
        trainset: list[Any],
        teacher: Module | None = None,
        valset: list[Any] | None = None,
        evaluator: Evaluator | None = None,
        trial_runner: TrialRunner | None = None,
        checkpoint_dir: str | Path | None = None,
    ) -> Module:
        """The best trial's program (scored on ``valset``, default the trainset). With
        ``checkpoint_dir`` a stopped search resumes where it was."""
        check_program(student)
        trainset = check_dataset(trainset, "trainset")
        valset = check_dataset(valset, "valset") if valset is not None else trainset
        evaluator = resolve_evaluator(evaluator, num_threads=self.num_threads)
        runner = trial_runner or settings.get("optimizer_trial_runner") or LocalTrialRunner()
        ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
        with self._run(seed=self.seed, progress=self.progress) as run:
            pool, instructions = self._prepare(student, trainset, teacher)
            objective = HyperObjective(
                student.deepcopy(), models=self.models, demo_pool=pool, instructions=instructions, valset=valset,
                metric=self.metric, batch_size=self.minibatch_size, seed=self.seed,
            )
            space = self.space(instructions, min((len(v) for v in pool.values()), default=0))
            path = ckpt / "searcher.pkl" if ckpt is not None else None
            searcher: Searcher = Searcher.load(path) if path is not None and path.exists() else TPESearcher(space, seed=self.seed)
            for rec in searcher.records():
                self._record(run, objective, rec)
            bar = run.progress_bar(self.num_trials, "trials")

            def on_trial(rec: TrialRecord) -> None:
                self._record(run, objective, rec)
                bar.update(1)

            remaining = self.num_trials - len(searcher.records())
            if remaining > 0:
                runner.run(objective, searcher, num_trials=remaining, evaluator=evaluator, checkpoint_path=path, on_trial=on_trial)
            bar.close()
            best = searcher.best()
            if best is None:
                raise OptimizerError(f"Every one of the {len(searcher.records())} trials failed; see the log for their errors.")
            program = objective.build(best.params)
            chosen = next((c.index for c in run.candidates if c.config.get("trial") == best.number), None)
        return run.finish(program, best_score=(best.values or {}).get("score"), chosen_index=chosen, trials=searcher.records(),
                          extras={"best_params": dict(best.params)})

    def _prepare(self, student: Module, trainset: list[Any], teacher: Module | None) -> tuple[dict[int, list[Any]], dict[int, list[str]] | None]:
        pool: dict[int, list[Any]] = {}
        if self.max_demos:
            boot = BootstrapFewShot(metric=self.metric, max_bootstrapped_demos=self.max_demos, max_labeled_demos=self.max_demos, seed=self.seed, progress=False)
            program, _ = boot.bootstrap(student, trainset=trainset, teacher=teacher)
            pool = {i: list(p.demos) for i, p in enumerate(program.predictors())}
        instructions: dict[int, list[str]] | None = None
        if self.instructions is not None:
            instructions = {i: list(self.instructions) for i in range(len(student.predictors()))}
        elif self.num_instruction_candidates > 1:
            proposer = GroundedProposer(program_aware=True, rng=rng_for(self.seed, "tips"))
            instructions = run_sync(proposer.propose(student, trainset, self.num_instruction_candidates))
        return pool, instructions

    def _record(self, run: Run, objective: HyperObjective, rec: TrialRecord) -> None:
        run.trials.append(rec)
        score = (rec.values or {}).get("score")
        if rec.state == "complete":
            run.candidate(score, program=objective.build(rec.params), config={"params": dict(rec.params), "trial": rec.number},
                          kind="full" if objective.batch_size is None else "minibatch")
        run.iteration(score, trial=rec.number, state=rec.state)
