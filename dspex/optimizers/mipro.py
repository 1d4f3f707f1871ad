"""``MIPROv2``: instruction proposals and bootstrapped demo sets, searched with TPE (DSPy's semantics).

1. Demo sets per predictor (zero-shot, labeled, bootstraps; as random search builds them).
2. Instruction candidates per predictor from the grounded proposer (index 0: the current one).
3. A TPE search (optuna, multivariate) over (instruction, demo set) per predictor. Each trial
   scores its candidate on a minibatch of the valset; after every ``minibatch_full_eval_steps``
   trials (and at the end) the combination with the best mean minibatch score not yet fully
   scored is scored on the whole valset, and that score is added to the search as a trial, so
   TPE learns from it. The best full score wins; the default program is the first full score.

Trials run through a ``TrialRunner`` (in-process by default; on Ray with
``dspex.pipelines.optimization``) and score through the evaluator. With ``checkpoint_dir``,
the proposals and the searcher are saved after every trial and a stopped run resumes there.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
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
from dspex.optimizers.demo_sets import build_candidates
from dspex.optimizers.evaluation import Evaluator, resolve_evaluator
from dspex.optimizers.objectives import PromptObjective
from dspex.optimizers.proposer import GroundedProposer
from dspex.optimizers.result import TrialRecord
from dspex.optimizers.search import (
    Categorical,
    LocalTrialRunner,
    Searcher,
    TPESearcher,
    TrialRunner,
)
from dspex.primitives.module import Module
from dspex.settings import settings
from dspex.utils.asyncio_bridge import run_sync

__all__ = ["AUTO_RUN_SETTINGS", "MIPROv2"]

AUTO_RUN_SETTINGS = {
    "light": {"n": 6, "val_size": 100},
    "medium": {"n": 12, "val_size": 300},
    "heavy": {"n": 18, "val_size": 1000},
}
MIN_MINIBATCH_SIZE = 50
BOOTSTRAPPED_IN_CONTEXT = 3


class MIPROv2(Teleprompter):
    description = "Joint search over LM-proposed instructions and bootstrapped demo sets with TPE over minibatches."
    param_docs = {
        "metric": "metric(example, prediction, trace=None) -> bool or float.",
        "prompt_model": "LM that writes the instruction proposals (default: the configured lm).",
        "task_model": "LM the program runs with during the search (default: the configured lm).",
        "teacher_settings": "Settings (e.g. lm=) in effect while the teacher bootstraps demos.",
        "max_bootstrapped_demos": "Bootstrapped demos per demo set (0 with max_labeled_demos=0: instructions only).",
        "max_labeled_demos": "Demos per demo set in all.",
        "auto": "'light', 'medium' or 'heavy' sets the candidates, trials and valset size; None to set num_candidates and num_trials.",
        "num_candidates": "Instruction and demo-set candidates per predictor (with auto=None).",
        "num_threads": "Examples scored at once by the default (local) evaluator.",
        "max_errors": "Failures tolerated while bootstrapping and evaluating.",
        "seed": "Seed of the search, the minibatches and the proposal tips.",
        "init_temperature": "Sampling temperature of the instruction proposals.",
        "verbose": "Log every trial.",
        "track_stats": "Attach candidate_programs / mb_candidate_programs to the returned program, as DSPy does.",
        "log_dir": "Accepted for DSPy compatibility; use checkpoint_dir= in compile to persist a run.",
        "metric_threshold": "When set, a bootstrapped trace passes when the metric is at least this.",
        "progress": "Show progress bars.",
    }

    def __init__(
        self,
        metric: Callable[..., Any],
        prompt_model: Any = None,
        task_model: Any = None,
        teacher_settings: dict[str, Any] | None = None,
        max_bootstrapped_demos: int = 4,
        max_labeled_demos: int = 4,
        auto: str | None = "light",
        num_candidates: int | None = None,
        num_threads: int | None = None,
        max_errors: int | None = None,
        seed: int = 9,
        init_temperature: float = 0.5,
        verbose: bool = False,
        track_stats: bool = True,
        log_dir: str | None = None,
        metric_threshold: float | None = None,
        *,
        progress: bool = True,
    ) -> None:
        if auto not in (None, "light", "medium", "heavy"):
            raise OptimizerError(f"auto must be 'light', 'medium', 'heavy' or None, got {auto!r}.")
        if not callable(metric):
            raise OptimizerError("MIPROv2 needs metric=: a callable metric(example, prediction, trace=None).")
        check_positive("max_bootstrapped_demos", max_bootstrapped_demos)
        check_positive("max_labeled_demos", max_labeled_demos)
        if num_candidates is not None:
            check_positive("num_candidates", num_candidates, allow_zero=False)
        self.metric = metric
        self.prompt_model = prompt_model
        self.task_model = task_model
        self.teacher_settings = teacher_settings or {}
        self.max_bootstrapped_demos = max_bootstrapped_demos
        self.max_labeled_demos = max_labeled_demos
        self.auto = auto
        self.num_candidates = num_candidates
        self.num_threads = num_threads
        self.max_errors = max_errors
        self.seed = seed
        self.init_temperature = init_temperature
        self.verbose = verbose
        self.track_stats = track_stats
        self.log_dir = log_dir
        self.metric_threshold = metric_threshold
        self.progress = progress

    # -- the run -------------------------------------------------------------------------------
    def compile(  # type: ignore[override]
        self,
        student: Module,
        *,
        trainset: list[Any],
        teacher: Module | None = None,
        valset: list[Any] | None = None,
        num_trials: int | None = None,
        max_bootstrapped_demos: int | None = None,
        max_labeled_demos: int | None = None,
        seed: int | None = None,
        minibatch: bool = True,
        minibatch_size: int = 35,
        minibatch_full_eval_steps: int = 5,
        program_aware_proposer: bool = True,
        data_aware_proposer: bool = True,
        view_data_batch_size: int = 10,
        tip_aware_proposer: bool = True,
        fewshot_aware_proposer: bool = True,
        requires_permission_to_run: bool = False,
        provide_traceback: bool | None = None,
        evaluator: Evaluator | None = None,
        trial_runner: TrialRunner | None = None,
        checkpoint_dir: str | Path | None = None,
    ) -> Module:
        """Returns the best program by full valset score. ``requires_permission_to_run`` is
        accepted for DSPy compatibility and never prompts."""
        check_program(student)
        seed = self.seed if seed is None else seed
        bootstrapped = self.max_bootstrapped_demos if max_bootstrapped_demos is None else max_bootstrapped_demos
        labeled = self.max_labeled_demos if max_labeled_demos is None else max_labeled_demos
        zeroshot = bootstrapped == 0 and labeled == 0
        if self.auto is None and (self.num_candidates is None or num_trials is None):
            raise OptimizerError("With auto=None, set num_candidates= (in the constructor) and num_trials= (in compile).")
        if self.auto is not None and (self.num_candidates is not None or num_trials is not None):
            raise OptimizerError("With auto set, leave num_candidates and num_trials unset (auto decides them), or pass auto=None.")
        check_positive("minibatch_size", minibatch_size, allow_zero=False)
        check_positive("minibatch_full_eval_steps", minibatch_full_eval_steps, allow_zero=False)
        trainset, valset = _split(check_dataset(trainset, "trainset"), valset)
        rng = rng_for(seed, "mipro")
        n_instr, n_demo, num_trials, valset, minibatch = self._plan(student, num_trials, minibatch, zeroshot, valset, rng)
        if minibatch and minibatch_size > len(valset):
            raise OptimizerError(f"minibatch_size ({minibatch_size}) exceeds the valset ({len(valset)} examples); lower it or pass minibatch=False.")
        evaluator = resolve_evaluator(evaluator, num_threads=self.num_threads, max_errors=self.max_errors)
        runner = trial_runner or settings.get("optimizer_trial_runner") or LocalTrialRunner()
        overrides = {"lm": self.task_model} if self.task_model is not None else {}
        ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None

        with self._run(seed=seed, progress=self.progress) as run, settings.context(**overrides):
            setup = _load(ckpt / "setup.pkl") if ckpt is not None and (ckpt / "setup.pkl").exists() else None
            if setup is None:
                demo_sets = self._demo_sets(student, trainset, teacher, seed, n_demo, bootstrapped, labeled, zeroshot, run)
                proposer = GroundedProposer(
                    prompt_model=self.prompt_model,
                    program_aware=program_aware_proposer,
                    use_dataset_summary=data_aware_proposer,
                    use_task_demos=fewshot_aware_proposer,
                    use_tip=tip_aware_proposer,
                    view_data_batch_size=view_data_batch_size,
                    num_demos_in_context=BOOTSTRAPPED_IN_CONTEXT,
                    temperature=self.init_temperature,
                    rng=rng_for(seed, "tips"),
                )
                instructions = run_sync(proposer.propose(student, trainset, n_instr, demo_sets))
                setup = {"instructions": instructions, "demos": None if zeroshot else demo_sets, "valset": valset}
                if ckpt is not None:
                    _dump(setup, ckpt / "setup.pkl")
            objective = PromptObjective(
                student.deepcopy(), setup["instructions"], setup["demos"], setup["valset"], self.metric,
                batch_size=minibatch_size if minibatch else None, seed=seed, overrides=overrides,
            )
            best_program = self._search(objective, setup, run, evaluator, runner, seed, minibatch, minibatch_full_eval_steps, ckpt, num_trials)
        return best_program

    def _plan(
        self, student: Module, num_trials: int | None, minibatch: bool, zeroshot: bool, valset: list[Any], rng: Any
    ) -> tuple[int, int, int, list[Any], bool]:
        if self.auto is None:
            n = int(self.num_candidates or 1)
            assert num_trials is not None
            return n, n, num_trials, valset, minibatch
        auto = AUTO_RUN_SETTINGS[self.auto]
        if len(valset) > auto["val_size"]:
            valset = rng.sample(valset, auto["val_size"])
        n = int(auto["n"])
        n_instr = n if zeroshot else int(n * 0.5)
        num_vars = len(student.predictors()) * (1 if zeroshot else 2)
        trials = int(max(2 * num_vars * math.log2(n), 1.5 * n))
        return n_instr, n, trials, valset, len(valset) > MIN_MINIBATCH_SIZE

    def _demo_sets(
        self, student: Module, trainset: list[Any], teacher: Module | None, seed: int, n: int,
        bootstrapped: int, labeled: int, zeroshot: bool, run: Run,
    ) -> dict[int, list[list[Any]]]:
        # Zero-shot runs still bootstrap a few demos: the proposer shows them to the prompt model.
        seeds = list(range(-3, max(0, n - 3)))
        cands = run_sync(
            build_candidates(
                student,
                trainset=trainset,
                seeds=seeds,
                metric=self.metric,
                metric_threshold=self.metric_threshold,
                teacher=teacher,
                teacher_settings=self.teacher_settings,
                max_bootstrapped_demos=BOOTSTRAPPED_IN_CONTEXT if zeroshot else bootstrapped,
                max_labeled_demos=0 if zeroshot else labeled,
                max_errors=self.max_errors,
                shuffle_rng=lambda s: rng_for(seed, "fewshot", s),
                run=run,
            )
        )
        return {i: [c.program.predictors()[i].demos for c in cands] for i in range(len(student.predictors()))}

    def _search(
        self, objective: PromptObjective, setup: dict[str, Any], run: Run, evaluator: Evaluator, runner: TrialRunner,
        seed: int, minibatch: bool, steps: int, ckpt: Path | None, total: int,
    ) -> Module:
        instructions, demos = setup["instructions"], setup["demos"]
        space = {f"{i}_predictor_instruction": Categorical(range(len(v))) for i, v in instructions.items()}
        if demos is not None:
            space.update({f"{i}_predictor_demos": Categorical(range(len(v))) for i, v in demos.items()})
        searcher_path = ckpt / "searcher.pkl" if ckpt is not None else None
        searcher: Searcher
        if searcher_path is not None and searcher_path.exists():
            searcher = Searcher.load(searcher_path)
        else:
            searcher = TPESearcher(space, metric="score", mode="max", seed=seed)
            default = {k: 0 for k in space}
            ev = evaluator.evaluate_one(objective.build(default), objective.valset, self.metric)
            searcher.add(default, {"score": ev.score}, user_attrs={"full_eval": True})
            if searcher_path is not None:
                searcher.save(searcher_path)
        for rec in searcher.records():  # a resumed run shows what was done before it stopped
            self._record(run, objective, rec)
        bar = run.progress_bar(total, "trials")

        def on_trial(rec: TrialRecord) -> None:
            self._record(run, objective, rec)
            bar.update(1)

        while (done := _minibatch_trials(searcher)) < total:
            k = min(steps, total - done) if minibatch else total - done
            runner.run(objective, searcher, num_trials=k, evaluator=evaluator, checkpoint_path=searcher_path, on_trial=on_trial)
            if minibatch:
                self._full_eval(objective, searcher, run, evaluator)
                if searcher_path is not None:
                    searcher.save(searcher_path)
        bar.close()
        fulls = [r for r in searcher.records() if r.state == "complete" and (r.user_attrs.get("full_eval") or not minibatch)]
        best = max(fulls, key=lambda r: (r.values or {}).get("score", -1.0))
        program = objective.build(best.params)
        chosen = next((c.index for c in run.candidates if c.kind == "full" and c.config.get("params") == best.params), None)
        if self.track_stats:
            full_c = sorted([c for c in run.candidates if c.kind == "full"], key=lambda c: -(c.score or 0))
            mb_c = sorted([c for c in run.candidates if c.kind == "minibatch"], key=lambda c: -(c.score or 0))
            program.candidate_programs = [{"score": c.score, "program": c.program, "full_eval": True} for c in full_c]  # type: ignore[attr-defined]
            program.mb_candidate_programs = [{"score": c.score, "program": c.program, "full_eval": False} for c in mb_c]  # type: ignore[attr-defined]
        best_score = (best.values or {}).get("score")
        program.score = best_score  # type: ignore[attr-defined]
        return run.finish(program, best_score=best_score, chosen_index=chosen, trials=searcher.records())

    def _full_eval(self, objective: PromptObjective, searcher: Searcher, run: Run, evaluator: Evaluator) -> None:
        records = searcher.records()
        fully = {_key(r.params) for r in records if r.user_attrs.get("full_eval")}
        by_combo: dict[tuple[Any, ...], list[float]] = {}
        params_of: dict[tuple[Any, ...], dict[str, Any]] = {}
        for r in records:
            if r.state != "complete" or r.user_attrs.get("full_eval") or _key(r.params) in fully:
                continue
            by_combo.setdefault(_key(r.params), []).append((r.values or {})["score"])
            params_of[_key(r.params)] = r.params
        if not by_combo:
            return
        combo = max(by_combo, key=lambda k: sum(by_combo[k]) / len(by_combo[k]))
        ev = evaluator.evaluate_one(objective.build(params_of[combo]), objective.valset, self.metric)
        rec = searcher.add(params_of[combo], {"score": ev.score}, user_attrs={"full_eval": True})
        self._record(run, objective, rec)

    def _record(self, run: Run, objective: PromptObjective, rec: TrialRecord) -> None:
        full = bool(rec.user_attrs.get("full_eval"))
        if not full:
            run.trials.append(rec)
        score = (rec.values or {}).get("score")
        if rec.state == "complete":
            run.candidate(score, program=objective.build(rec.params), config={"params": dict(rec.params), "trial": rec.number},
                          kind="full" if full or objective.batch_size is None else "minibatch")
        run.iteration(score, trial=rec.number, full_eval=full, state=rec.state)
        if self.verbose:
            print(f"MIPROv2 trial {rec.number}: {'full' if full else 'minibatch'} score {score} with {rec.params}")


def _key(params: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted(params.items()))


def _minibatch_trials(searcher: Searcher) -> int:
    return sum(1 for r in searcher.records() if not r.user_attrs.get("full_eval"))


def _split(trainset: list[Any], valset: list[Any] | None) -> tuple[list[Any], list[Any]]:
    if valset is not None:
        return trainset, check_dataset(valset, "valset")
    if len(trainset) < 2:
        raise OptimizerError("With no valset, the trainset needs at least 2 examples (80% of it becomes the valset).")
    size = min(1000, max(1, int(len(trainset) * 0.80)))
    cut = len(trainset) - size
    return trainset[:cut] or trainset[:1], trainset[cut:]


def _dump(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    import cloudpickle

    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(cloudpickle.dumps(obj))
    tmp.replace(path)


def _load(path: Path) -> Any:
    return pickle.loads(path.read_bytes())
