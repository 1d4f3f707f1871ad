"""``RayEvaluator``: the evaluation seam spread over a pool of reused Ray workers.

    from dspex.pipelines.optimization import RayEvaluator
    compiled = optimizer.compile(student, trainset=train, valset=dev, evaluator=RayEvaluator(num_workers=4))

A batch of candidates is cut into (program, example) pairs; the pairs are split into one
contiguous share per worker (balanced to within one pair), the programs, devset and metric go
to the object store once, and each worker evaluates its share concurrently on its own asyncio
loop. A share whose worker died is sent again to a fresh worker. The usage the workers
metered is added to the driver's current meter, so an optimizer's run totals stay right.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from dspex import telemetry
from dspex.clients.cache import get_cache
from dspex.errors import ExecutionAborted, OptimizerError
from dspex.optimizers.evaluation import (
    Evaluator,
    Meter,
    ProgramEvaluation,
    current_meter,
    default_max_errors,
    merge_evaluations,
)
from dspex.telemetry import names

from .pool import WorkerPool, actor_died, unwrap_error
from .worker import ship

__all__ = ["RayEvaluator", "split_pairs"]


def split_pairs(pairs: Sequence[tuple[int, int]], parts: int) -> list[list[tuple[int, int]]]:
    """``parts`` contiguous shares whose sizes differ by at most one (empty shares dropped)."""
    n = len(pairs)
    size, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        if end > start:
            out.append(list(pairs[start:end]))
        start = end
    return out


class RayEvaluator(Evaluator):
    """Evaluates candidates on ``num_workers`` Ray actors (or on a given ``pool``).

    Args:
        num_workers: workers to start (ignored when ``pool`` is given).
        num_threads: examples in flight per worker.
        num_cpus_per_worker: Ray CPUs per worker (fractional: the work waits on LM calls).
        max_retries: times a share is re-sent after its worker died.
        max_errors: failed examples tolerated in one call before ``ExecutionAborted`` (default:
            the ``max_errors`` setting per program, as ``LocalEvaluator``).
        pool: share a pool with a trial runner.
    """

    def __init__(
        self,
        num_workers: int = 2,
        *,
        num_threads: int = 32,
        num_cpus_per_worker: float = 0.5,
        max_retries: int = 1,
        max_errors: int | None = None,
        pool: WorkerPool | None = None,
    ) -> None:
        self.pool = pool or WorkerPool(num_workers, num_cpus_per_worker=num_cpus_per_worker, num_threads=num_threads)
        self.max_retries = max_retries
        self.max_errors = max_errors

    @property
    def parallelism(self) -> int:  # type: ignore[override]
        return self.pool.num_workers * self.pool.num_threads

    def evaluate(
        self,
        programs: Sequence[Any],
        devset: Sequence[Any],
        metric: Callable[..., Any],
        *,
        keep_predictions: bool = False,
    ) -> list[ProgramEvaluation]:
        if metric is None:
            raise OptimizerError("An evaluation needs a metric: a callable metric(example, prediction, trace=None).")
        if not programs:
            return []
        import ray

        actors = self.pool.actors()
        get_cache().flush()  # the driver's own cache writes, visible to the workers
        t0 = time.perf_counter()
        pairs = [(p, e) for p in range(len(programs)) for e in range(len(devset))]
        shares = split_pairs(pairs, len(actors))
        refs = (ray.put(list(programs)), ray.put(list(devset)), ray.put(metric))
        shipped = ship(list(programs))
        pending = {actors[i].evaluate.remote(*refs, share, shipped, keep_predictions): (i, share, actors[i], 0) for i, share in enumerate(shares)}
        parts: list[list[ProgramEvaluation]] = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            ref = ready[0]
            i, share, actor, attempt = pending.pop(ref)
            try:
                parts.append(ray.get(ref))
            except Exception as exc:
                if actor_died(exc) and attempt < self.max_retries:
                    fresh = self.pool.replace(actor)
                    pending[fresh.evaluate.remote(*refs, share, shipped, keep_predictions)] = (i, share, fresh, attempt + 1)
                    continue
                raise unwrap_error(exc) from None
        telemetry.emit(
            names.DISTRIBUTED_COORDINATION,
            {"duration_s": time.perf_counter() - t0, "workers": len(shares)},
            {"operation": "evaluate"},
        )
        merged = [merge_evaluations([part[p] for part in parts]) for p in range(len(programs))]
        errors = sum(ev.errors for ev in merged)
        limit = self.max_errors if self.max_errors is not None else default_max_errors(len(programs))
        if limit is not None and errors > limit:
            first = next(r.error for ev in merged for r in ev.results if r.error is not None)
            raise ExecutionAborted(
                f"{errors} examples failed on the workers (max_errors={limit}); the first failed with {first}.",
                errors=errors,
            )
        meter = current_meter()
        if meter is not None:  # the workers' usage counts in the driver's run
            for ev in merged:
                meter.add(Meter(lm_calls=ev.lm_calls, paid_calls=ev.paid_calls, cost_usd=ev.cost_usd,
                                input_tokens=sum(r.input_tokens for r in ev.results),
                                output_tokens=sum(r.output_tokens for r in ev.results)))
        return merged
