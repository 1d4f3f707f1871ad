"""``BootstrapFewShotWithRandomSearch``: several demo sets, each scored on the valset; keep the best.

Candidates as DSPy makes them: zero-shot, labeled only, an unshuffled bootstrap, and
``num_candidate_programs`` bootstraps over shuffled training sets with random demo counts. All
candidates are built at once, then scored as one batch through the evaluator (in batches of
the evaluator's parallelism when ``stop_at_score`` may end the search early). Ties keep the
earlier candidate, as DSPy does.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from dspex.errors import OptimizerError
from dspex.optimizers.base import Teleprompter, check_dataset, check_positive, check_program
from dspex.optimizers.demo_sets import DemoCandidate, build_candidates
from dspex.optimizers.evaluation import Evaluator, ProgramEvaluation, resolve_evaluator
from dspex.primitives.module import Module
from dspex.utils.asyncio_bridge import run_sync

__all__ = ["BootstrapFewShotWithRandomSearch"]


class BootstrapFewShotWithRandomSearch(Teleprompter):
    description = "Random search over bootstrapped demo sets (plus zero-shot and labeled-only), scored on the valset."
    param_docs = {
        "metric": "metric(example, prediction, trace=None) -> bool or float; scores candidates and filters traces.",
        "teacher_settings": "Settings (e.g. lm=) in effect while the teacher runs.",
        "max_bootstrapped_demos": "Upper bound of bootstrapped demos per predictor (each shuffled candidate draws 1..this).",
        "max_labeled_demos": "Demos per predictor in all (bootstrapped + labeled).",
        "max_rounds": "Tries per training example while bootstrapping.",
        "num_candidate_programs": "Shuffled bootstrap candidates, on top of zero-shot, labeled-only and the unshuffled bootstrap.",
        "num_threads": "Examples evaluated at once by the default (local) evaluator.",
        "max_errors": "Failures tolerated while bootstrapping and evaluating.",
        "stop_at_score": "Stop once a candidate scores at least this (percent).",
        "metric_threshold": "When set, a trace passes when the metric's value is at least this.",
        "seed": "Offset of the candidates' shuffle seeds (0 reproduces DSPy's candidates).",
        "progress": "Show progress bars.",
    }

    def __init__(
        self,
        metric: Callable[..., Any],
        teacher_settings: dict[str, Any] | None = None,
        max_bootstrapped_demos: int = 4,
        max_labeled_demos: int = 16,
        max_rounds: int = 1,
        num_candidate_programs: int = 16,
        num_threads: int | None = None,
        max_errors: int | None = None,
        stop_at_score: float | None = None,
        metric_threshold: float | None = None,
        *,
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        if not callable(metric):
            raise OptimizerError("BootstrapFewShotWithRandomSearch needs metric=: a callable metric(example, prediction, trace=None).")
        for name, value in (
            ("max_bootstrapped_demos", max_bootstrapped_demos),
            ("max_labeled_demos", max_labeled_demos),
            ("num_candidate_programs", num_candidate_programs),
        ):
            check_positive(name, value)
        check_positive("max_rounds", max_rounds, allow_zero=False)
        self.metric = metric
        self.teacher_settings = teacher_settings or {}
        self.max_bootstrapped_demos = max_bootstrapped_demos
        self.max_labeled_demos = max_labeled_demos
        self.max_rounds = max_rounds
        self.num_candidate_programs = num_candidate_programs
        self.num_threads = num_threads
        self.max_errors = max_errors
        self.stop_at_score = stop_at_score
        self.metric_threshold = metric_threshold
        self.seed = seed
        self.progress = progress

    def compile(  # type: ignore[override]
        self,
        student: Module,
        *,
        trainset: list[Any],
        teacher: Module | None = None,
        valset: list[Any] | None = None,
        restrict: list[int] | None = None,
        labeled_sample: bool = True,
        evaluator: Evaluator | None = None,
    ) -> Module:
        """The best candidate on ``valset`` (default: the trainset), with DSPy's
        ``candidate_programs`` (score, subscores, seed, program; best first) attached."""
        check_program(student)
        trainset = check_dataset(trainset, "trainset")
        valset = check_dataset(valset, "valset") if valset is not None else trainset
        seeds = [s for s in range(-3, self.num_candidate_programs) if restrict is None or s in restrict]
        if not seeds:
            raise OptimizerError(f"restrict={restrict} leaves no candidate; the seeds run from -3 to {self.num_candidate_programs - 1}.")
        evaluator = resolve_evaluator(evaluator, num_threads=self.num_threads, max_errors=self.max_errors)
        offset = self.seed
        with self._run(seed=self.seed, progress=self.progress) as run:
            candidates: list[DemoCandidate] = run_sync(
                build_candidates(
                    student,
                    trainset=trainset,
                    seeds=seeds,
                    metric=self.metric,
                    metric_threshold=self.metric_threshold,
                    teacher=teacher,
                    teacher_settings=self.teacher_settings,
                    max_bootstrapped_demos=self.max_bootstrapped_demos,
                    max_labeled_demos=self.max_labeled_demos,
                    max_rounds=self.max_rounds,
                    max_errors=self.max_errors,
                    labeled_sample=labeled_sample,
                    shuffle_rng=lambda s: random.Random(s + offset),
                    run=run,
                )
            )
            # Without an early stop every candidate is scored in one batch.
            batch = len(candidates) if self.stop_at_score is None else max(1, evaluator.parallelism // max(1, len(valset)))
            bar = run.progress_bar(len(candidates), "scoring candidates")
            best: tuple[float, int] | None = None
            score_data: list[dict[str, Any]] = []
            try:
                for start in range(0, len(candidates), batch):
                    group = candidates[start : start + batch]
                    evals: list[ProgramEvaluation] = evaluator.evaluate([c.program for c in group], valset, self.metric)
                    stop = False
                    for cand, ev in zip(group, evals, strict=True):
                        run.candidate(ev.score, program=cand.program, config={"seed": cand.seed, "kind": cand.kind, "size": cand.size})
                        if best is None or ev.score > best[0]:
                            best = (ev.score, len(score_data))
                        score_data.append({"score": ev.score, "subscores": ev.scores, "seed": cand.seed, "program": cand.program})
                        run.iteration(ev.score, seed=cand.seed)
                        bar.update(1)
                        if self.stop_at_score is not None and ev.score >= self.stop_at_score:
                            stop = True
                            break
                    if stop:
                        break
            finally:
                bar.close()
            assert best is not None
            best_program: Module = score_data[best[1]]["program"].deepcopy()
        best_program.candidate_programs = sorted(score_data, key=lambda d: -d["score"])  # type: ignore[attr-defined]
        best_program.score = best[0]  # type: ignore[attr-defined]
        return run.finish(best_program, chosen_index=best[1], best_score=best[0])
