"""``OptimizationWorker``: the plain class a Ray actor runs to evaluate candidates and trials.

It is an ordinary class (STYLE.md 6): ``_remote.py`` makes it a Ray actor, and unit tests call
it in-process. Work arrives with the driver's settings that matter in another process (the
configured ``lm`` and ``adapter``), applied around each call. Programs, devsets, metrics and
objectives arrive pickled (cloudpickle, via Ray); LM clients never carry their API key - a
worker reads it from its own environment.

The LM response cache: every worker of one machine shares the clients' disk cache
(``$DSPEX_HOME/cache``; the driver passes its ``DSPEX_HOME``), and a worker flushes its cache
writes before it answers, so a call one worker paid for is a hit for the next one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from dspex.optimizers.evaluation import LocalEvaluator, Meter, ProgramEvaluation, current_meter
from dspex.optimizers.result import TrialRecord
from dspex.optimizers.search import Objective, run_with_retries
from dspex.settings import settings
from dspex.utils.asyncio_bridge import run_sync

__all__ = ["OptimizationWorker", "Shipment", "count_remote_usage", "ship"]

#: settings a worker needs from the driver (the rest are process-local or defaults)
_SHIPPED = ("lm", "adapter", "max_errors", "num_threads")


@dataclass
class Shipment:
    """What a worker needs from the driver besides the work itself: the settings in effect,
    and the prices of the LMs involved (registered prices live in the driver's process)."""

    settings: dict[str, Any] = field(default_factory=dict)
    prices: dict[str, tuple[float, float]] = field(default_factory=dict)

    @contextmanager
    def applied(self) -> Iterator[None]:
        from dspex.clients.pricing import price_for, register_price

        for model, (inp, out) in self.prices.items():
            if price_for(model) is None:
                register_price(model, inp, out)
        with settings.context(**self.settings):
            yield


def ship(*work: Any) -> Shipment:
    """The driver's shipment for ``work`` (programs, objectives, ...)."""
    shipped = {k: settings.get(k) for k in _SHIPPED if settings.get(k) is not None}
    return Shipment(settings=shipped, prices=_prices([shipped.get("lm"), *work]))


def _prices(objects: Sequence[Any]) -> dict[str, tuple[float, float]]:
    from dspex.clients.base_lm import BaseLM
    from dspex.clients.pricing import price_for
    from dspex.primitives.module import Module

    found: dict[str, tuple[float, float]] = {}
    seen: set[int] = set()

    def visit(obj: Any, depth: int) -> None:
        if obj is None or depth > 4 or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, BaseLM):
            spec = getattr(obj, "spec", None)
            model = spec.model if spec is not None else obj.model
            price = price_for(model, spec.name if spec is not None else None)
            if price is not None:
                found[model] = (price.input_per_1m_usd, price.output_per_1m_usd)
        elif isinstance(obj, Module):
            for _, predictor in obj.named_predictors():
                visit(predictor.lm, depth + 1)
        elif isinstance(obj, list | tuple):
            for item in obj:
                visit(item, depth + 1)
        elif isinstance(obj, dict):
            for item in obj.values():
                visit(item, depth + 1)
        elif hasattr(obj, "__dict__") and type(obj).__module__.startswith("dspex."):
            for item in vars(obj).values():  # objectives carry their program and models
                visit(item, depth + 1)

    for obj in objects:
        visit(obj, 0)
    return found


def count_remote_usage(record: TrialRecord) -> None:
    """Add the LM usage a trial reported from another process to the driver's current meter
    (in-process trials are metered directly)."""
    meter = current_meter()
    if meter is None or not record.values:
        return
    meter.add(Meter(lm_calls=int(record.values.get("lm_calls", 0)), paid_calls=int(record.values.get("paid_calls", 0))))


class OptimizationWorker:
    def __init__(self, *, dspex_home: str | None = None, num_threads: int = 32) -> None:
        if dspex_home:
            # Before anything opens the LM cache: all workers share the driver's cache files.
            os.environ["DSPEX_HOME"] = dspex_home
        self.num_threads = num_threads
        self.pid = os.getpid()

    def ping(self) -> int:
        return self.pid

    def evaluate(
        self,
        programs: Sequence[Any],
        devset: Sequence[Any],
        metric: Callable[..., Any],
        pairs: Sequence[tuple[int, int]],
        shipment: Shipment,
        keep_predictions: bool = False,
    ) -> list[ProgramEvaluation]:
        """Evaluate the given (program, example) pairs; one (partial) evaluation per program."""
        evaluator = LocalEvaluator(num_threads=self.num_threads, max_errors=len(pairs) + 1)
        try:
            with shipment.applied():
                return run_sync(
                    evaluator.aevaluate(programs, devset, metric, keep_predictions=keep_predictions, pairs=pairs)
                )
        finally:
            _flush_cache()

    def run_trial(
        self, objective: Objective, params: dict[str, Any], number: int, shipment: Shipment, max_retries: int
    ) -> tuple[dict[str, float] | None, str | None, int, float]:
        """One trial with its retries: (values, error, attempts, duration_s)."""
        evaluator = LocalEvaluator(num_threads=self.num_threads)
        try:
            with shipment.applied():
                values, error, attempts, duration_s = run_with_retries(objective, params, number, evaluator, max_retries)
            return (dict(values) if values is not None else None), error, attempts, duration_s
        finally:
            _flush_cache()


def _flush_cache() -> None:
    # The disk writes of this worker's cache misses, visible to the other workers from now on.
    from dspex.clients.cache import get_cache

    get_cache().flush()
