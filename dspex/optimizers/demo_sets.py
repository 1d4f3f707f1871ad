"""Candidate demo sets, as DSPy builds them for random search and MIPROv2.

Seed -3 is the zero-shot program, -2 labeled demos only, -1 a bootstrap over the training set
in order, and every seed >= 0 a bootstrap over a shuffled copy with a random number of
bootstrapped demos (1 .. max_bootstrapped_demos). The bootstraps of all seeds run at once on
dspex's I/O loop; the LM cache (and its in-flight coalescing) answers the calls they share.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dspex.optimizers.base import Run
from dspex.optimizers.bootstrap import BootstrapFewShot
from dspex.optimizers.labeled import with_labeled_demos
from dspex.primitives.module import Module

__all__ = ["DemoCandidate", "build_candidates"]


@dataclass
class DemoCandidate:
    seed: int
    program: Module
    #: bootstrapped demos requested for this candidate (None for zero-shot / labeled-only)
    size: int | None = None

    @property
    def kind(self) -> str:
        return {-3: "zero_shot", -2: "labeled", -1: "bootstrap"}.get(self.seed, "bootstrap_shuffled")


async def build_candidates(
    student: Module,
    *,
    trainset: Sequence[Any],
    seeds: Sequence[int],
    metric: Callable[..., Any] | None,
    metric_threshold: float | None,
    teacher: Module | None,
    teacher_settings: dict[str, Any] | None,
    max_bootstrapped_demos: int,
    max_labeled_demos: int,
    max_rounds: int = 1,
    max_errors: int | None = None,
    labeled_sample: bool = True,
    min_num_samples: int = 1,
    shuffle_rng: Callable[[int], random.Random] = random.Random,
    run: Run | None = None,
) -> list[DemoCandidate]:
    """One program per seed in ``seeds`` (from -3 up), in the order of ``seeds``.

    ``shuffle_rng(seed)`` gives the Random that shuffles the training set and draws the size
    of candidate ``seed`` >= 0 (DSPy's random search uses ``random.Random(seed)``).
    """

    def bootstrapper(size: int) -> BootstrapFewShot:
        return BootstrapFewShot(
            metric=metric,
            metric_threshold=metric_threshold,
            teacher_settings=teacher_settings,
            max_bootstrapped_demos=size,
            max_labeled_demos=max_labeled_demos,
            max_rounds=max_rounds,
            max_errors=max_errors,
            progress=False,
        )

    async def one(seed: int) -> DemoCandidate:
        data = list(trainset)
        if seed == -3:
            return DemoCandidate(seed, student.reset_copy())
        if seed == -2:
            return DemoCandidate(seed, with_labeled_demos(student, data, max_labeled_demos, sample=labeled_sample))
        if seed == -1:
            program, _ = await bootstrapper(max_bootstrapped_demos).abootstrap(student, trainset=data, teacher=teacher)
            return DemoCandidate(seed, program, max_bootstrapped_demos)
        rng = shuffle_rng(seed)
        rng.shuffle(data)
        # DSPy draws the size from a fresh Random(seed) after the shuffle's own.
        size = shuffle_rng(seed).randint(min_num_samples, max(min_num_samples, max_bootstrapped_demos))
        program, _ = await bootstrapper(size).abootstrap(student, trainset=data, teacher=teacher)
        return DemoCandidate(seed, program, size)

    bar = run.progress_bar(len(seeds), "building candidates") if run is not None else None
    try:
        results = list(await asyncio.gather(*(one(s) for s in seeds)))
        if bar is not None:
            bar.update(len(seeds))
        return results
    finally:
        if bar is not None:
            bar.close()
