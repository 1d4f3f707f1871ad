"""``LabeledFewShot``: put k training examples as demos on every predictor (DSPy's ``vanilla``)."""

from __future__ import annotations

from typing import Any

from dspex.optimizers.base import (
    Teleprompter,
    check_dataset,
    check_positive,
    check_program,
    rng_for,
)
from dspex.primitives.module import Module

__all__ = ["LabeledFewShot", "with_labeled_demos"]


def with_labeled_demos(student: Module, trainset: list[Any], k: int, *, sample: bool = True, seed: int = 0) -> Module:
    """A reset copy of ``student`` whose predictors hold ``k`` training examples as demos:
    a seeded sample (``sample=True``; one stream, so every predictor gets the same) or the first k."""
    program: Module = student.reset_copy()
    if k and trainset:
        for _, predictor in program.named_predictors():
            if sample:
                predictor.demos = rng_for(seed).sample(list(trainset), min(k, len(trainset)))
            else:
                predictor.demos = list(trainset[:k])
    return program


class LabeledFewShot(Teleprompter):
    description = "Use k labeled training examples as every predictor's demos (no LM calls)."
    param_docs = {
        "k": "Number of labeled demos per predictor.",
        "seed": "Seed of the sample of training examples (DSPy samples with seed 0).",
        "progress": "Show a progress bar (nothing to show: this optimizer makes no calls).",
    }

    def __init__(self, k: int = 16, *, seed: int = 0, progress: bool = True) -> None:
        check_positive("k", k)
        self.k = k
        self.seed = seed
        self.progress = progress

    def compile(  # type: ignore[override]
        self,
        student: Module,
        *,
        trainset: list[Any],
        sample: bool = True,
        teacher: Module | None = None,
        valset: list[Any] | None = None,
    ) -> Module:
        """A copy of ``student`` whose predictors hold ``k`` training examples as demos:
        a seeded sample (``sample=True``, as DSPy) or the first ``k``."""
        check_program(student)
        trainset = check_dataset(trainset, "trainset", min_size=0)
        with self._run(seed=self.seed, progress=self.progress) as run:
            program = with_labeled_demos(student, trainset, self.k, sample=sample, seed=self.seed)
            run.candidate(None, program=program, config={"k": self.k, "sample": sample})
            run.iteration(None, converged=True)
        return run.finish(program)
