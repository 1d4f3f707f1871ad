"""``AdvancedBootstrap`` (the seed's §3.2): demos from several sampling strategies, kept when
their measured quality passes a threshold, chosen for quality and diversity.

1. Candidate training examples come from three strategies:
   - random: a seeded sample;
   - hard: examples the program (as given) gets wrong, found by scoring it on a probe sample
     through the evaluator, lowest score first;
   - diverse: k-means over the examples' input words; the example nearest each centre.
2. The teacher runs on each candidate with traces on; the candidate's *quality* is the
   metric's value on that run (``metric(example, prediction, trace)``), so it is measured,
   never assumed. Candidates under ``quality_threshold`` are dropped.
3. With ``adaptive_sampling``, candidates are drawn in rounds and each round's budget goes to
   the strategies in proportion to how many of their candidates passed so far (add-one
   smoothed); selection is then greedy on ``(1 - diversity_factor) * quality +
   diversity_factor * diversity``, diversity being 1 minus the highest cosine similarity
   to a demo already chosen. Without it: one round, equal budgets, the top ``max_demos`` by
   quality.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

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
from dspex.primitives.module import Module
from dspex.utils.asyncio_bridge import run_sync

__all__ = ["AdvancedBootstrap", "DemoCandidateInfo", "kmeans", "select_diverse", "text_vectors"]

STRATEGIES = ("random", "hard", "diverse")


@dataclass
class DemoCandidateInfo:
    index: int
    strategy: str
    quality: float | None = None
    passed: bool = False
    selected: bool = False
    error: str | None = None


class AdvancedBootstrap(Teleprompter):
    description = "Bootstrap with random / hard / diverse candidates, measured quality filtering and diversity-aware selection."
    param_docs = {
        "metric": "metric(example, prediction, trace) -> bool or float; its value on the teacher's run is the demo's quality.",
        "max_demos": "Demos per predictor.",
        "quality_threshold": "Minimum quality for a demo to be kept.",
        "diversity_factor": "Weight of diversity against quality in the greedy selection (0..1).",
        "adaptive_sampling": "Draw candidates in rounds, giving the strategies budget by how well they pass, and select greedily for diversity.",
        "num_candidates": "Teacher runs in all (the candidate budget).",
        "probe_size": "Training examples the program is scored on to find hard ones (default: 2 x num_candidates).",
        "rounds": "Sampling rounds with adaptive_sampling.",
        "teacher_settings": "Settings (e.g. lm=) in effect while the teacher runs.",
        "seed": "Seed of the sampling and the clustering.",
        "num_threads": "Examples scored at once by the default (local) evaluator.",
        "progress": "Show progress bars.",
    }

    def __init__(
        self,
        metric: Callable[..., Any],
        max_demos: int = 8,
        quality_threshold: float = 0.8,
        diversity_factor: float = 0.3,
        adaptive_sampling: bool = True,
        *,
        num_candidates: int = 24,
        probe_size: int | None = None,
        rounds: int = 3,
        teacher_settings: dict[str, Any] | None = None,
        seed: int = 0,
        num_threads: int | None = None,
        progress: bool = True,
    ) -> None:
        if not callable(metric):
            raise OptimizerError("AdvancedBootstrap needs metric=: a callable metric(example, prediction, trace) whose value is the demo quality.")
        check_positive("max_demos", max_demos, allow_zero=False)
        check_positive("num_candidates", num_candidates, allow_zero=False)
        check_positive("rounds", rounds, allow_zero=False)
        if not 0.0 <= diversity_factor <= 1.0:
            raise OptimizerError(f"diversity_factor must be in [0, 1], got {diversity_factor}.")
        if probe_size is not None:
            check_positive("probe_size", probe_size)
        self.metric = metric
        self.max_demos = max_demos
        self.quality_threshold = quality_threshold
        self.diversity_factor = diversity_factor
        self.adaptive_sampling = adaptive_sampling
        self.num_candidates = num_candidates
        self.probe_size = probe_size
        self.rounds = rounds
        self.teacher_settings = teacher_settings or {}
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
        check_program(student)
        if teacher is not None:
            check_program(teacher, "teacher")
        trainset = check_dataset(trainset, "trainset")
        evaluator = resolve_evaluator(evaluator, num_threads=self.num_threads)
        with self._run(seed=self.seed, progress=self.progress) as run:
            pools = self._pools(student, trainset, evaluator)
            infos, runs = self._sample(teacher or student, trainset, pools, run)
            passed = [i for i in infos if i.passed]
            vectors = text_vectors([_input_text(trainset[i.index]) for i in passed])
            qualities = [float(i.quality or 0.0) for i in passed]
            if self.adaptive_sampling:
                chosen = select_diverse(qualities, vectors, self.max_demos, self.diversity_factor)
            else:
                chosen = sorted(range(len(passed)), key=lambda k: -qualities[k])[: self.max_demos]
            for k in chosen:
                passed[k].selected = True
            program = student.reset_copy()
            for name, predictor in program.named_predictors():
                demos = [d for k in chosen for d in runs[passed[k].index].demos.get(name, [])]
                predictor.demos = demos[: self.max_demos]
            score = None
            if valset:
                score = evaluator.evaluate_one(program, check_dataset(valset, "valset"), self.metric).score
            for info in infos:
                run.candidate(info.quality, config={"example": info.index, "strategy": info.strategy, "passed": info.passed,
                                                    "selected": info.selected}, kind="demo")
            run.iteration(score, converged=True, selected=len(chosen))
        return run.finish(
            program,
            best_score=score,
            extras={
                "candidates_generated": len(infos),
                "quality_filtered": len(passed),
                "final_selected": len(chosen),
                "by_strategy": {s: {"tried": sum(i.strategy == s for i in infos), "passed": sum(i.strategy == s and i.passed for i in infos)} for s in STRATEGIES},
            },
        )

    # -- candidate pools -------------------------------------------------------------------------
    def _pools(self, student: Module, trainset: list[Any], evaluator: Evaluator) -> dict[str, list[int]]:
        rng = rng_for(self.seed, "random")
        indices = list(range(len(trainset)))
        random_pool = rng.sample(indices, len(indices))
        probe_n = min(len(trainset), self.probe_size if self.probe_size is not None else 2 * self.num_candidates)
        hard: list[int] = []
        if probe_n:
            probe = rng_for(self.seed, "probe").sample(indices, probe_n)
            ev = evaluator.evaluate_one(student, [trainset[i] for i in probe], self.metric)
            failing = [(r.score, probe[r.index]) for r in ev.results if r.score < self.quality_threshold]
            hard = [i for _, i in sorted(failing)]
        k = min(len(trainset), max(2, self.max_demos))
        labels = kmeans(text_vectors([_input_text(ex) for ex in trainset]), k, seed=self.seed)
        diverse = _round_robin_by_cluster(labels, text_vectors([_input_text(ex) for ex in trainset]))
        return {"random": random_pool, "hard": hard, "diverse": diverse}

    def _sample(self, teacher: Module, trainset: list[Any], pools: dict[str, list[int]], run: Run) -> tuple[list[DemoCandidateInfo], dict[int, TeacherRun]]:
        runner = TraceRunner(teacher.deepcopy(), metric=self.metric, metric_threshold=None,
                             teacher_settings=self.teacher_settings, num_threads=max(4, self.num_threads or 8))
        infos: list[DemoCandidateInfo] = []
        runs: dict[int, TeacherRun] = {}
        used: set[int] = set()
        budget = min(self.num_candidates, len(trainset))
        n_rounds = self.rounds if self.adaptive_sampling else 1
        bar = run.progress_bar(budget, "sampling demos")
        try:
            for r in range(n_rounds):
                left = budget - len(infos)
                if left <= 0:
                    break
                size = left if r == n_rounds - 1 else math.ceil(budget / n_rounds)
                picks = self._allocate(size, infos, pools, used)
                if not picks:
                    break
                results = run_sync(gather_runs(runner, [(i, trainset[i]) for _, i in picks]))
                for (strategy, i), res in zip(picks, results, strict=True):
                    info = DemoCandidateInfo(index=i, strategy=strategy)
                    if isinstance(res, BaseException):
                        info.error = f"{type(res).__name__}: {res}"
                    else:
                        runs[i] = res
                        info.quality = res.score
                        info.passed = res.score is not None and res.score >= self.quality_threshold and bool(res.demos)
                    infos.append(info)
                bar.update(len(picks))
                run.iteration(None, round=r, passed=sum(i.passed for i in infos))
        finally:
            runner.close()
            bar.close()
        return infos, runs

    def _allocate(self, size: int, infos: list[DemoCandidateInfo], pools: dict[str, list[int]], used: set[int]) -> list[tuple[str, int]]:
        live = [s for s in STRATEGIES if any(i not in used for i in pools[s])]
        if not live:
            return []
        if self.adaptive_sampling and infos:
            rate = {s: (sum(i.passed for i in infos if i.strategy == s) + 1) / (sum(i.strategy == s for i in infos) + 2) for s in live}
        else:
            rate = dict.fromkeys(live, 1.0)
        total = sum(rate.values())
        quota = {s: rate[s] / total * size for s in live}
        counts = {s: int(quota[s]) for s in live}
        for s in sorted(live, key=lambda s: -(quota[s] - counts[s]))[: size - sum(counts.values())]:
            counts[s] += 1
        picks: list[tuple[str, int]] = []

        def take(strategy: str, want: int) -> int:
            got = 0
            for i in pools[strategy]:
                if got >= want:
                    break
                if i not in used:
                    used.add(i)
                    picks.append((strategy, i))
                    got += 1
            return got

        shortfall = sum(counts[s] - take(s, counts[s]) for s in live)
        for s in live:  # a strategy that ran dry leaves its share to the others
            if shortfall <= 0:
                break
            shortfall -= take(s, shortfall)
        return picks


# -- text features, clustering and selection -----------------------------------------------------
def _input_text(example: Any) -> str:
    try:
        inputs = example.inputs()
    except Exception:
        inputs = example
    return " ".join(str(v) for v in inputs.values())


def text_vectors(texts: Sequence[str], dims: int = 256) -> np.ndarray:
    """L2-normalized bags of words (letters only, hashed into ``dims`` buckets, stably)."""
    import zlib

    out = np.zeros((len(texts), dims), dtype=float)
    for row, text in enumerate(texts):
        for word, count in Counter(re.findall(r"[a-z]+", text.lower())).items():
            out[row, zlib.crc32(word.encode("utf-8")) % dims] += count
        norm = np.linalg.norm(out[row])
        if norm > 0:
            out[row] /= norm
    return out


def kmeans(X: np.ndarray, k: int, *, seed: int | None, iterations: int = 50, restarts: int = 8) -> np.ndarray:
    """Cluster labels of the rows of ``X``: k-means++ starts, Lloyd iterations, the best of
    ``restarts`` runs by inertia (one run can stall in a poor local optimum). Seeded."""
    n = len(X)
    if n == 0:
        return np.zeros(0, dtype=int)
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    best: tuple[float, np.ndarray] | None = None
    for _ in range(restarts):
        labels, inertia = _lloyd(X, k, rng, iterations)
        if best is None or inertia < best[0] - 1e-12:
            best = (inertia, labels)
    assert best is not None
    return best[1]


def _lloyd(X: np.ndarray, k: int, rng: np.random.Generator, iterations: int) -> tuple[np.ndarray, float]:
    n = len(X)
    centers = [X[int(rng.integers(n))]]
    for _ in range(1, k):
        d2 = np.min(((X[:, None, :] - np.array(centers)[None, :, :]) ** 2).sum(-1), axis=1)
        total = d2.sum()
        centers.append(X[int(rng.choice(n, p=d2 / total))] if total > 0 else X[int(rng.integers(n))])
    C = np.array(centers)
    labels = np.full(n, -1, dtype=int)
    for _ in range(iterations):
        new = np.argmin(((X[:, None, :] - C[None, :, :]) ** 2).sum(-1), axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            members = X[labels == j]
            if len(members):
                C[j] = members.mean(axis=0)
    inertia = float(((X - C[labels]) ** 2).sum())
    return labels, inertia


def _round_robin_by_cluster(labels: np.ndarray, X: np.ndarray) -> list[int]:
    """Examples ordered so each pass takes the next-nearest member of every cluster."""
    by_cluster: dict[int, list[int]] = {}
    for j in sorted(set(labels.tolist())):
        members = np.flatnonzero(labels == j)
        center = X[members].mean(axis=0)
        order = members[np.argsort(((X[members] - center) ** 2).sum(-1), kind="stable")]
        by_cluster[j] = [int(i) for i in order]
    out: list[int] = []
    while any(by_cluster.values()):
        for j in sorted(by_cluster):
            if by_cluster[j]:
                out.append(by_cluster[j].pop(0))
    return out


def select_diverse(qualities: Sequence[float], vectors: np.ndarray, k: int, diversity_factor: float) -> list[int]:
    """Greedy: repeatedly take the candidate with the best ``(1 - f) * quality + f *
    diversity``; diversity is 1 minus its highest cosine similarity to those taken (1 first)."""
    chosen: list[int] = []
    remaining = list(range(len(qualities)))
    while remaining and len(chosen) < k:
        def combined(i: int) -> float:
            diversity = 1.0 if not chosen else 1.0 - max(float(vectors[i] @ vectors[j]) for j in chosen)
            return (1.0 - diversity_factor) * qualities[i] + diversity_factor * diversity

        best = max(remaining, key=combined)  # ties keep the earlier candidate
        chosen.append(best)
        remaining.remove(best)
    return chosen
