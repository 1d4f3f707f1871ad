"""``BootstrapFewShot``: demos from the teacher's own successful traces (DSPy's semantics).

For each training example in order, the teacher (the student itself by default, given
``max_labeled_demos`` labeled demos) runs with traces on; when the metric passes (or reaches
``metric_threshold``), every predictor step of the trace becomes an augmented demo. It stops
after ``max_bootstrapped_demos`` successes; a failed example may get ``max_rounds - 1`` more
tries with a fresh sample. Each predictor of the student then gets its bootstrapped demos plus
labeled demos from the examples not bootstrapped, up to ``max_labeled_demos`` in all.

Faster than DSPy for the same result: the examples a sequential loop would certainly run (the
next ``still needed`` ones) run concurrently, so the demos, and the LM calls made, are exactly
those of the one-by-one loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dspex.errors import OptimizerError
from dspex.optimizers._traces import TeacherRun, TraceRunner, gather_runs
from dspex.optimizers.base import (
    Run,
    Teleprompter,
    check_dataset,
    check_positive,
    check_program,
    rng_for,
)
from dspex.optimizers.evaluation import Evaluator, resolve_evaluator
from dspex.optimizers.labeled import with_labeled_demos
from dspex.primitives.example import Example
from dspex.primitives.module import Module
from dspex.settings import settings
from dspex.utils.asyncio_bridge import run_sync

__all__ = ["BootstrapFewShot", "BootstrapOutcome"]

log = logging.getLogger("dspex.optimizers.bootstrap")


@dataclass
class BootstrapOutcome:
    """What bootstrapping produced: demos per predictor name, which examples succeeded, and
    the examples left for labeled demos (shuffled, as DSPy does)."""

    name2traces: dict[str, list[Example]] = field(default_factory=dict)
    bootstrapped: list[int] = field(default_factory=list)
    attempted: list[int] = field(default_factory=list)
    validation: list[Example] = field(default_factory=list)
    errors: int = 0
    runs: list[TeacherRun] = field(default_factory=list)


class BootstrapFewShot(Teleprompter):
    description = "Few-shot demos bootstrapped from the teacher's successful traces, plus labeled demos."
    param_docs = {
        "metric": "metric(example, prediction, trace) -> bool or float; a trace passes when it is truthy (or >= metric_threshold). None accepts every trace.",
        "metric_threshold": "When set, a trace passes when the metric's value is at least this.",
        "teacher_settings": "Settings (e.g. lm=) in effect while the teacher runs.",
        "max_bootstrapped_demos": "Bootstrapped (augmented) demos per predictor.",
        "max_labeled_demos": "Demos per predictor in all; the rest after the bootstrapped ones are labeled training examples.",
        "max_rounds": "Tries per training example; tries after the first sample afresh (temperature 1.0).",
        "max_errors": "Teacher runs that may raise before the run aborts (default: the max_errors setting).",
        "seed": "Seed of the labeled-demo sample (DSPy uses 0).",
        "num_threads": "Examples scored at once when a valset is given.",
        "progress": "Show a progress bar.",
    }

    def __init__(
        self,
        metric: Callable[..., Any] | None = None,
        metric_threshold: float | None = None,
        teacher_settings: dict[str, Any] | None = None,
        max_bootstrapped_demos: int = 4,
        max_labeled_demos: int = 16,
        max_rounds: int = 1,
        max_errors: int | None = None,
        *,
        seed: int = 0,
        num_threads: int | None = None,
        progress: bool = True,
    ) -> None:
        check_positive("max_bootstrapped_demos", max_bootstrapped_demos)
        check_positive("max_labeled_demos", max_labeled_demos)
        check_positive("max_rounds", max_rounds, allow_zero=False)
        if metric is not None and not callable(metric):
            raise OptimizerError(f"metric must be callable as metric(example, prediction, trace), got {type(metric).__name__}.")
        if teacher_settings is not None and not isinstance(teacher_settings, dict):
            raise OptimizerError(f"teacher_settings must be a dict of settings (e.g. {{'lm': lm}}), got {type(teacher_settings).__name__}.")
        self.metric = metric
        self.metric_threshold = metric_threshold
        self.teacher_settings = teacher_settings or {}
        self.max_bootstrapped_demos = max_bootstrapped_demos
        self.max_labeled_demos = max_labeled_demos
        self.max_rounds = max_rounds
        self.max_errors = max_errors
        self.seed = seed
        self.num_threads = num_threads
        self.progress = progress

    def compile(  # type: ignore[override]
        self,
        student: Module,
        *,
        trainset: list[Any],
        teacher: Module | None = None,
        valset: list[Any] | None = None,
        evaluator: Evaluator | None = None,
    ) -> Module:
        """The student with bootstrapped + labeled demos. With ``valset``, the compiled program
        is also scored on it (recorded in ``optimization_result``; costs those calls)."""
        with self._run(seed=self.seed, progress=self.progress) as run:
            program, outcome = self.bootstrap(student, trainset=trainset, teacher=teacher, run=run)
            score = None
            if valset:
                ev = resolve_evaluator(evaluator, num_threads=self.num_threads).evaluate_one(
                    program, check_dataset(valset, "valset"), self._scoring_metric()
                )
                score = ev.score
            run.candidate(score, program=program, config={"bootstrapped": list(outcome.bootstrapped)})
            run.iteration(score, converged=True, bootstrapped=len(outcome.bootstrapped))
        return run.finish(program, extras={"bootstrapped": outcome.bootstrapped, "teacher_errors": outcome.errors})

    # -- the parts other optimizers reuse ---------------------------------------------------
    def bootstrap(
        self, student: Module, *, trainset: list[Any], teacher: Module | None = None, run: Run | None = None
    ) -> tuple[Module, BootstrapOutcome]:
        """Bootstrap without the compile bookkeeping: (program with demos, outcome)."""
        return run_sync(self.abootstrap(student, trainset=trainset, teacher=teacher, run=run))

    async def abootstrap(
        self, student: Module, *, trainset: list[Any], teacher: Module | None = None, run: Run | None = None
    ) -> tuple[Module, BootstrapOutcome]:
        check_program(student)
        if teacher is not None:
            check_program(teacher, "teacher")
        trainset = check_dataset(trainset, "trainset")
        if getattr(student, "_compiled", False):
            raise OptimizerError("The student is already compiled; pass an uncompiled program (or its reset_copy()).")
        program = student.reset_copy()
        teacher_prog = self._prepare_teacher(student, teacher, trainset)
        _check_same_structure(program, teacher_prog)
        outcome = await self._bootstrap_examples(teacher_prog, trainset, run)
        self._assign_demos(program, outcome)
        return program, outcome

    def _prepare_teacher(self, student: Module, teacher: Module | None, trainset: list[Any]) -> Module:
        prog: Module = teacher.deepcopy() if teacher is not None else student.deepcopy()
        if self.max_labeled_demos and not getattr(prog, "_compiled", False):
            prog = with_labeled_demos(prog, trainset, self.max_labeled_demos, seed=self.seed)
        return prog

    async def _bootstrap_examples(self, teacher: Module, trainset: list[Any], run: Run | None) -> BootstrapOutcome:
        runner = TraceRunner(
            teacher,
            metric=self.metric,
            metric_threshold=self.metric_threshold,
            teacher_settings=self.teacher_settings,
            max_rounds=self.max_rounds,
            num_threads=max(4, self.max_bootstrapped_demos),
        )
        out = BootstrapOutcome()
        max_errors = self.max_errors if self.max_errors is not None else int(settings.get("max_errors", 10))
        bar = run.progress_bar(len(trainset), "bootstrapping") if run is not None else None
        i = 0
        try:
            while i < len(trainset) and len(out.bootstrapped) < self.max_bootstrapped_demos:
                # The next `need` examples would all run in a sequential loop too.
                need = self.max_bootstrapped_demos - len(out.bootstrapped)
                chunk = list(range(i, min(len(trainset), i + need)))
                results = await gather_runs(runner, [(j, trainset[j]) for j in chunk])
                for j, res in zip(chunk, results, strict=True):
                    out.attempted.append(j)
                    if isinstance(res, BaseException):
                        if not isinstance(res, Exception):
                            raise res
                        out.errors += 1
                        log.warning("Bootstrapping example %d failed: %s: %s", j, type(res).__name__, res)
                        if out.errors >= max_errors:
                            raise OptimizerError(
                                f"Bootstrapping stopped after {out.errors} failed teacher runs (max_errors={max_errors}); "
                                f"the last one raised {type(res).__name__}: {res}",
                            ) from res
                        continue
                    out.runs.append(res)
                    if res.success and len(out.bootstrapped) < self.max_bootstrapped_demos:
                        out.bootstrapped.append(j)
                        for name, demos in res.demos.items():
                            out.name2traces.setdefault(name, []).extend(demos)
                if bar is not None:
                    bar.update(len(chunk))
                i = chunk[-1] + 1
        finally:
            runner.close()
            if bar is not None:
                bar.close()
        done = set(out.bootstrapped)
        validation = [ex for j, ex in enumerate(trainset) if j not in done]
        rng_for(self.seed).shuffle(validation)
        out.validation = validation
        return out

    def _assign_demos(self, program: Module, outcome: BootstrapOutcome) -> None:
        rng = rng_for(self.seed)
        for name, predictor in program.named_predictors():
            augmented = outcome.name2traces.get(name, [])[: self.max_bootstrapped_demos]
            size = max(0, min(self.max_labeled_demos - len(augmented), len(outcome.validation)))
            predictor.demos = augmented + rng.sample(outcome.validation, size)

    def _scoring_metric(self) -> Callable[..., Any]:
        if self.metric is None:
            raise OptimizerError("Scoring on a valset needs a metric; pass metric= to the optimizer.")
        return self.metric


def _check_same_structure(student: Module, teacher: Module) -> None:
    s = student.named_predictors()
    t = teacher.named_predictors()
    if len(s) != len(t):
        raise OptimizerError(
            f"The student has {len(s)} predictors and the teacher {len(t)}; the teacher must have the student's structure."
        )
    for (s_name, s_pred), (t_name, t_pred) in zip(s, t, strict=True):
        if s_name != t_name:
            raise OptimizerError(
                f"Student predictor {s_name!r} and teacher predictor {t_name!r} differ; name the teacher's "
                "sub-modules as the student's."
            )
        if not s_pred.signature.equals(t_pred.signature):
            raise OptimizerError(
                f"The signatures of predictor {s_name!r} differ between student and teacher "
                f"({s_pred.signature.signature!r} vs {t_pred.signature.signature!r})."
            )
