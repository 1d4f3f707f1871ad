"""One arm of an offline experiment: optimize on train, evaluate on the shared test examples.

``run_arm(job)`` is a plain function of picklable data, so the runner calls it in a thread
or ships it to a Ray worker unchanged. Every LM call goes through ``dspex.clients.LM`` and
so through the response cache; each (example, repeat) records its score, wall time, LM calls,
calls actually paid for (not answered by the cache) and cost from ``LMResponse.cost_usd``.

Sampling: at temperature > 0 each arm and repeat sends its own ``seed`` with every request,
derived from the experiment seed and the arm's name. Two identical arms are then two
independent samples (what an A/A test needs), while a rerun of the experiment sends the
same requests and is answered from the cache.
"""

from __future__ import annotations

import hashlib
import inspect
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from dspex.pipelines.experiments.spec import LMSpec, _safe_state, resolve_optimizer

from dspex.errors import ExperimentError
from dspex.primitives.module import Module
from dspex.settings import settings
from dspex.telemetry import span

__all__ = ["ArmJob", "ArmResult", "ExampleOutcome", "arm_seed", "run_arm"]

ARM_EVENT = ("dspex", "experiment", "arm")


def arm_seed(experiment_seed: int, arm: str, repeat: int) -> int:
    """The sampling seed of one arm and repeat: stable across processes and Python runs."""
    digest = hashlib.blake2b(f"{experiment_seed}\x1f{arm}\x1f{repeat}".encode(), digest_size=4)
    return int.from_bytes(digest.digest(), "big") & 0x7FFFFFFF


@dataclass
class ArmJob:
    """Everything a worker needs to run one arm (all picklable)."""

    name: str
    program: Module
    lm: LMSpec
    trainset: list[Any]
    testset: list[Any]
    metric: Callable[..., Any]
    optimizer: str | None = None
    optimizer_params: dict[str, Any] = field(default_factory=dict)
    #: one LM sampling seed per repeat (None: send no seed, e.g. at temperature 0)
    seeds: list[int | None] = field(default_factory=lambda: [None])
    experiment_seed: int = 0
    num_threads: int = 16
    failure_score: float = 0.0


@dataclass
class ExampleOutcome:
    """One test example of one arm, over all repeats."""

    index: int
    score: float
    scores: list[float]
    latencies_ms: list[float]
    #: per repeat: every LM call of that run was paid for (none came from the cache)
    paid: list[bool]
    lm_calls: int
    paid_calls: int
    cost_usd: float
    error: str | None = None
    output: dict[str, Any] | None = None


@dataclass
class ArmResult:
    name: str
    model: str
    optimizer: str | None
    examples: list[ExampleOutcome]
    optimize_s: float
    evaluate_s: float
    optimization: dict[str, Any]
    program_state: Any = None

    # -- what the statistics and the report read ---------------------------------------------
    @property
    def scores(self) -> list[float]:
        return [e.score for e in self.examples]

    @property
    def mean(self) -> float:
        return float(np.mean(self.scores)) if self.examples else 0.0

    @property
    def errors(self) -> int:
        return sum(1 for e in self.examples if e.error is not None)

    @property
    def lm_calls(self) -> int:
        return sum(e.lm_calls for e in self.examples)

    @property
    def paid_calls(self) -> int:
        return sum(e.paid_calls for e in self.examples)

    @property
    def cost_usd(self) -> float:
        """What evaluating this arm cost in this run (cache hits cost nothing)."""
        return float(sum(e.cost_usd for e in self.examples))

    def _paid_runs(self) -> tuple[list[float], int]:
        lat = [x for e in self.examples for x, p in zip(e.latencies_ms, e.paid, strict=True) if p]
        return lat, len(lat)

    @property
    def cost_per_example_usd(self) -> float | None:
        """Mean cost of one example run whose calls were all paid; None when the cache answered
        every run (then this run says nothing about the arm's price)."""
        costs = [e.cost_usd / max(1, sum(e.paid)) for e in self.examples if all(e.paid) and e.paid]
        return float(np.mean(costs)) if costs else None

    def latency_ms(self, q: float) -> float | None:
        """The q-quantile (0-1) of the wall time of example runs that reached the model."""
        lat, n = self._paid_runs()
        return float(np.quantile(lat, q)) if n else None

    def summary(self) -> dict[str, Any]:
        calls = self.lm_calls
        return {
            "name": self.name,
            "model": self.model,
            "optimizer": self.optimizer,
            "n": len(self.examples),
            "mean": self.mean,
            "errors": self.errors,
            "lm_calls": calls,
            "paid_calls": self.paid_calls,
            "cache_hit_rate": (calls - self.paid_calls) / calls if calls else 0.0,
            "cost_usd": self.cost_usd,
            "cost_per_example_usd": self.cost_per_example_usd,
            "latency_p50_ms": self.latency_ms(0.5),
            "latency_p95_ms": self.latency_ms(0.95),
            "latency_samples": self._paid_runs()[1],
            "optimize_s": self.optimize_s,
            "evaluate_s": self.evaluate_s,
            "optimization": dict(self.optimization),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "program_state": self.program_state,
            "examples": [asdict(e) for e in self.examples],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArmResult:
        return cls(
            name=data["name"],
            model=data["model"],
            optimizer=data.get("optimizer"),
            examples=[ExampleOutcome(**e) for e in data["examples"]],
            optimize_s=float(data.get("optimize_s", 0.0)),
            evaluate_s=float(data.get("evaluate_s", 0.0)),
            optimization=dict(data.get("optimization") or {}),
            program_state=data.get("program_state"),
        )


def _optimizer(job: ArmJob) -> Any:
    assert job.optimizer is not None
    cls = resolve_optimizer(job.optimizer)
    params = dict(job.optimizer_params)
    accepted = inspect.signature(cls.__init__).parameters
    # The experiment's metric and seed unless the arm set its own; no progress bars in workers.
    defaults = {"metric": job.metric, "seed": job.experiment_seed, "progress": False}
    for key, value in defaults.items():
        if key in accepted and key not in params:
            params[key] = value
    try:
        return cls(**params)
    except TypeError as exc:
        raise ExperimentError(
            f"Arm {job.name!r}: {cls.__name__} does not take these parameters "
            f"{sorted(job.optimizer_params)}: {exc}."
        ) from exc


def _outputs(prediction: Any) -> dict[str, Any] | None:
    if prediction is None:
        return None
    try:
        data = dict(prediction.items()) if hasattr(prediction, "items") else dict(prediction)
    except Exception:  # a prediction we cannot read is kept as text
        return {"repr": repr(prediction)[:500]}
    return {
        k: v if isinstance(v, str | int | float | bool) or v is None else repr(v)[:500]
        for k, v in data.items()
    }


def run_arm(job: ArmJob) -> ArmResult:
    """Optimize ``job.program`` on the train split (when the arm has an optimizer), then
    evaluate it on every test example ``len(job.seeds)`` times."""
    from dspex.clients.cache import get_cache
    from dspex.optimizers.evaluation import LocalEvaluator, metered

    if not job.testset:
        raise ExperimentError(f"Arm {job.name!r} has no test examples.")
    lms = [job.lm.build(seed=s) for s in job.seeds]
    with span(ARM_EVENT, arm=job.name, model=job.lm.model, optimizer=job.optimizer) as sp:
        t0 = time.perf_counter()
        program = job.program
        optimization: dict[str, Any] = {"lm_calls": 0, "paid_calls": 0, "cost_usd": 0.0}
        if job.optimizer is not None:
            optimizer = _optimizer(job)
            with settings.context(lm=lms[0]), metered() as meter:
                program = optimizer.compile(program, trainset=list(job.trainset))
            result = getattr(program, "optimization_result", None)
            optimization = {
                "lm_calls": meter.lm_calls,
                "paid_calls": meter.paid_calls,
                "cost_usd": meter.cost_usd,
                "best_score": getattr(result, "best_score", None),
            }
        t1 = time.perf_counter()
        copies = []
        for lm in lms:
            copy = program.deepcopy()
            copy.set_lm(lm)
            copies.append(copy)
        n = len(job.testset)
        # A broken arm (provider down, malformed replies) must fail loudly, not score 0.
        evaluator = LocalEvaluator(
            num_threads=job.num_threads,
            max_errors=max(5, n * len(copies) // 10),
            failure_score=job.failure_score,
        )
        evals = evaluator.evaluate(copies, job.testset, job.metric, keep_predictions=True)
        t2 = time.perf_counter()
        examples: list[ExampleOutcome] = []
        for i in range(n):
            runs = [ev.results[i] for ev in evals]
            scores = [float(r.score) for r in runs]
            error = next((r.error for r in runs if r.error is not None), None)
            examples.append(
                ExampleOutcome(
                    index=i,
                    score=float(np.mean(scores)),
                    scores=scores,
                    latencies_ms=[1000.0 * r.latency_s for r in runs],
                    paid=[r.lm_calls > 0 and r.paid_calls == r.lm_calls for r in runs],
                    lm_calls=sum(r.lm_calls for r in runs),
                    paid_calls=sum(r.paid_calls for r in runs),
                    cost_usd=float(sum(r.cost_usd for r in runs)),
                    error=error,
                    output=_outputs(runs[0].prediction),
                )
            )
        arm = ArmResult(
            name=job.name,
            model=job.lm.model,
            optimizer=job.optimizer,
            examples=examples,
            optimize_s=t1 - t0,
            evaluate_s=t2 - t1,
            optimization=optimization,
            program_state=_safe_state(program),
        )
        sp.set(n=n, mean=arm.mean, cost_usd=arm.cost_usd, paid_calls=arm.paid_calls)
    # Other processes (the other arms' Ray workers, the next run) read the cache's disk layer.
    get_cache().flush()
    return arm
