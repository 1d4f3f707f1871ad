"""The one evaluation seam every optimizer scores candidate programs through.

    evaluator = LocalEvaluator(num_threads=32)
    [ev0, ev1] = evaluator.evaluate([prog0, prog1], devset, metric)
    ev0.score            # percent, as dspex.Evaluate (and DSPy 3) report it
    ev0.results[3]       # ExampleResult: score, error, latency_s, lm_calls, cost_usd, ...

An optimizer hands a *batch* of candidates to ``evaluate`` at once, so an evaluator can run
them together: ``LocalEvaluator`` runs every (program, example) pair on dspex's asyncio loop
with one concurrency limit (what ``dspex.Evaluate`` does for one program);
``dspex.pipelines.optimization.RayEvaluator`` spreads the pairs over Ray workers. The same
optimizer code runs with either: ``compile(..., evaluator=...)`` or
``dspex.context(optimizer_evaluator=...)``.

Each example's LM usage (calls, paid calls, tokens, cost) is metered from the LM call
telemetry (``("dspex","lm","call","stop")``) through a context variable set per example, so
concurrent examples never mix their counts. Its latency is the wall time of the program call.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dspex import telemetry
from dspex.errors import ExecutionAborted, OptimizerError
from dspex.evaluate.parallel import Outcome, amap, program_caller
from dspex.settings import settings
from dspex.telemetry import names
from dspex.utils.asyncio_bridge import run_sync

__all__ = [
    "Evaluator",
    "ExampleResult",
    "LocalEvaluator",
    "Meter",
    "ProgramEvaluation",
    "current_meter",
    "default_max_errors",
    "metered",
    "resolve_evaluator",
]

Metric = Callable[..., Any]


# -- metering LM usage per example ------------------------------------------------------------
@dataclass
class Meter:
    """LM usage inside one metered scope (one example of one program)."""

    lm_calls: int = 0
    #: calls that reached a provider (not answered from the response cache)
    paid_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    lm_time_s: float = 0.0

    def add(self, other: Meter) -> None:
        self.lm_calls += other.lm_calls
        self.paid_calls += other.paid_calls
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost_usd += other.cost_usd
        self.lm_time_s += other.lm_time_s


_meter: contextvars.ContextVar[Meter | None] = contextvars.ContextVar("dspex_optimizer_meter", default=None)
_HANDLER_ID = "dspex.optimizers.meter"
_attach_lock = threading.Lock()


def _on_lm_call(event: tuple[str, ...], measurements: dict[str, Any], metadata: dict[str, Any], _: Any) -> None:
    meter = _meter.get()
    if meter is None:
        return
    meter.lm_calls += 1
    if not metadata.get("cache_hit"):
        meter.paid_calls += 1
    meter.input_tokens += int(measurements.get("input_tokens") or 0)
    meter.output_tokens += int(measurements.get("output_tokens") or 0)
    meter.cost_usd += float(measurements.get("cost_usd") or 0.0)
    meter.lm_time_s += float(measurements.get("duration_s") or 0.0)


def _ensure_handler() -> None:
    # Attached once per process; re-attached if a test or a user detached every handler.
    event = names.stop(names.LM_CALL)
    if any(hid == _HANDLER_ID for hid, _ in telemetry.list_handlers(event)):
        return
    with _attach_lock:
        if any(hid == _HANDLER_ID for hid, _ in telemetry.list_handlers(event)):
            return
        telemetry.attach(_HANDLER_ID, event, _on_lm_call)


def current_meter() -> Meter | None:
    return _meter.get()


class metered:
    """``with metered() as m: program(...)`` counts that scope's LM usage into ``m``.

    Nested scopes each get their own count; the outer scope also receives the inner one's.
    """

    def __init__(self) -> None:
        self.meter = Meter()
        self._token: contextvars.Token[Meter | None] | None = None
        self._outer: Meter | None = None

    def __enter__(self) -> Meter:
        _ensure_handler()
        self._outer = _meter.get()
        self._token = _meter.set(self.meter)
        return self.meter

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _meter.reset(self._token)
        if self._outer is not None:
            self._outer.add(self.meter)


# -- results ----------------------------------------------------------------------------------
@dataclass
class ExampleResult:
    """One example of one program. ``score`` is the metric's value as a float (the failure
    score when the program or the metric raised; then ``error`` holds the error's text)."""

    index: int
    score: float
    error: str | None = None
    latency_s: float = 0.0
    lm_calls: int = 0
    paid_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    prediction: Any = None


@dataclass
class ProgramEvaluation:
    """One program on one devset. ``score`` is in percent (0-100), like ``dspex.Evaluate``."""

    score: float
    results: list[ExampleResult] = field(default_factory=list)

    @property
    def scores(self) -> list[float]:
        return [r.score for r in self.results]

    @property
    def mean(self) -> float:
        """The mean metric value (0-1 for a 0/1 metric)."""
        return sum(self.scores) / len(self.results) if self.results else 0.0

    @property
    def errors(self) -> int:
        return sum(1 for r in self.results if r.error is not None)

    @property
    def lm_calls(self) -> int:
        return sum(r.lm_calls for r in self.results)

    @property
    def paid_calls(self) -> int:
        return sum(r.paid_calls for r in self.results)

    @property
    def cost_usd(self) -> float:
        return sum(r.cost_usd for r in self.results)

    @property
    def mean_latency_ms(self) -> float:
        ok = [r.latency_s for r in self.results if r.error is None]
        return 1000.0 * sum(ok) / len(ok) if ok else 0.0

    @property
    def median_latency_ms(self) -> float:
        """The typical call: less moved than the mean by a few calls delayed on a busy machine."""
        ok = sorted(r.latency_s for r in self.results if r.error is None)
        if not ok:
            return 0.0
        mid = len(ok) // 2
        return 1000.0 * (ok[mid] if len(ok) % 2 else (ok[mid - 1] + ok[mid]) / 2)

    @property
    def mean_cost_usd(self) -> float:
        return self.cost_usd / len(self.results) if self.results else 0.0


# -- the seam ---------------------------------------------------------------------------------
class Evaluator(ABC):
    """Scores candidate programs. Implementations must keep the order of ``programs`` and of
    the devset in what they return, and must not change the programs they are given."""

    #: how many candidates the evaluator can usefully run at once (optimizers size batches by it)
    parallelism: int = 1

    @abstractmethod
    def evaluate(
        self,
        programs: Sequence[Any],
        devset: Sequence[Any],
        metric: Metric,
        *,
        keep_predictions: bool = False,
    ) -> list[ProgramEvaluation]:
        """One ``ProgramEvaluation`` per program, in order."""

    def evaluate_one(self, program: Any, devset: Sequence[Any], metric: Metric, **kw: Any) -> ProgramEvaluation:
        return self.evaluate([program], devset, metric, **kw)[0]


class LocalEvaluator(Evaluator):
    """Runs every (program, example) pair in this process on dspex's asyncio loop.

    Args:
        num_threads: pairs in flight at once, across all programs (default: the
            ``num_threads`` setting). LM calls are I/O, so this can be far above the core count.
        max_errors: abort (``ExecutionAborted``) once more than this many pairs failed in one
            call (default: the ``max_errors`` setting, scaled by the number of programs).
        failure_score: the score of a pair whose program or metric raised.
        display_progress: show a progress bar over the pairs.
    """

    def __init__(
        self,
        *,
        num_threads: int | None = None,
        max_errors: int | None = None,
        failure_score: float = 0.0,
        display_progress: bool = False,
    ) -> None:
        if num_threads is not None and num_threads < 1:
            raise OptimizerError(f"num_threads must be at least 1, got {num_threads}.")
        self.num_threads = num_threads
        self.max_errors = max_errors
        self.failure_score = failure_score
        self.display_progress = display_progress

    @property
    def parallelism(self) -> int:  # type: ignore[override]
        return max(1, self.num_threads or int(settings.get("num_threads", 8)))

    def evaluate(
        self,
        programs: Sequence[Any],
        devset: Sequence[Any],
        metric: Metric,
        *,
        keep_predictions: bool = False,
    ) -> list[ProgramEvaluation]:
        return run_sync(self.aevaluate(programs, devset, metric, keep_predictions=keep_predictions))

    async def aevaluate(
        self,
        programs: Sequence[Any],
        devset: Sequence[Any],
        metric: Metric,
        *,
        keep_predictions: bool = False,
        pairs: Sequence[tuple[int, int]] | None = None,
    ) -> list[ProgramEvaluation]:
        """The async form. ``pairs`` restricts the work to these (program, example) indices
        (the Ray evaluator sends each worker its share); results then hold only those."""
        if metric is None:
            raise OptimizerError("An evaluation needs a metric: a callable metric(example, prediction, trace=None).")
        _ensure_handler()
        work = list(pairs) if pairs is not None else [(p, e) for p in range(len(programs)) for e in range(len(devset))]
        concurrency = self.parallelism
        callers = [program_caller(p, concurrency) for p in programs]
        metric_is_async = inspect.iscoroutinefunction(metric)
        failure_score = self.failure_score
        bar = _bar(len(work), self.display_progress)

        async def one(pair: tuple[int, int]) -> ExampleResult:
            p_idx, e_idx = pair
            example = devset[e_idx]
            call = callers[p_idx][0]
            with metered() as meter:
                t0 = time.perf_counter()
                try:
                    prediction = await call(example.inputs())
                    latency_s = time.perf_counter() - t0
                    if metric_is_async:
                        value = await metric(example, prediction)
                    else:
                        # A metric may call an LM synchronously (LM as judge): keep it off the loop.
                        ctx = contextvars.copy_context()
                        loop = asyncio.get_running_loop()
                        value = await loop.run_in_executor(None, ctx.run, metric, example, prediction)
                    score = float(value)
                    error = None
                except Exception as exc:
                    latency_s = time.perf_counter() - t0
                    prediction, score, error = None, failure_score, f"{type(exc).__name__}: {exc}"
            if bar is not None:
                bar.update(1)
            return ExampleResult(
                index=e_idx,
                score=score,
                error=error,
                latency_s=latency_s,
                lm_calls=meter.lm_calls,
                paid_calls=meter.paid_calls,
                input_tokens=meter.input_tokens,
                output_tokens=meter.output_tokens,
                cost_usd=meter.cost_usd,
                prediction=prediction if keep_predictions else None,
            )

        errors = 0
        max_errors = self._max_errors(len(programs))

        def on_done(out: Outcome) -> None:
            nonlocal errors
            if out.error is None and out.value.error is not None:
                errors += 1
                if max_errors is not None and errors > max_errors:
                    raise ExecutionAborted(
                        f"Stopped after {errors} failed examples (max_errors={max_errors}); the last one "
                        f"failed with {out.value.error}.",
                        errors=errors,
                    )

        try:
            outcomes = await amap(one, work, concurrency=concurrency, on_done=on_done)
        finally:
            if bar is not None:
                bar.close()
            for _, pool in callers:
                if pool is not None:
                    pool.shutdown(wait=False)
        per_program: list[list[ExampleResult]] = [[] for _ in programs]
        for (p_idx, _), out in zip(work, outcomes, strict=True):
            if out.error is not None:  # only an aborted run leaves these; amap raised already
                raise out.error
            per_program[p_idx].append(out.value)
        return [_summarize(results) for results in per_program]

    def _max_errors(self, n_programs: int) -> int | None:
        return self.max_errors if self.max_errors is not None else default_max_errors(n_programs)


def default_max_errors(n_programs: int) -> int | None:
    """Failed examples one evaluation call tolerates: the ``max_errors`` setting per program."""
    base = settings.get("max_errors")
    return None if base is None else int(base) * max(1, n_programs)


def _summarize(results: list[ExampleResult]) -> ProgramEvaluation:
    results.sort(key=lambda r: r.index)
    n = len(results)
    score = round(100.0 * sum(r.score for r in results) / n, 2) if n else 0.0
    return ProgramEvaluation(score=score, results=results)


def merge_evaluations(parts: Sequence[ProgramEvaluation]) -> ProgramEvaluation:
    """One program's evaluation from several workers' shares."""
    return _summarize([r for p in parts for r in p.results])


def _bar(total: int, enabled: bool) -> Any:
    if not enabled or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="Evaluating candidates", dynamic_ncols=True, leave=False)


def resolve_evaluator(evaluator: Evaluator | None, *, num_threads: int | None = None, max_errors: int | None = None) -> Evaluator:
    """The evaluator to use: the argument, else the ``optimizer_evaluator`` setting, else a
    ``LocalEvaluator``."""
    if evaluator is not None:
        if not isinstance(evaluator, Evaluator):
            raise OptimizerError(
                f"evaluator= takes a dspex.optimizers.Evaluator (LocalEvaluator, RayEvaluator), got {type(evaluator).__name__}."
            )
        return evaluator
    configured = settings.get("optimizer_evaluator")
    if configured is not None:
        if not isinstance(configured, Evaluator):
            raise OptimizerError(
                f"The optimizer_evaluator setting must be a dspex.optimizers.Evaluator, got {type(configured).__name__}."
            )
        return configured
    return LocalEvaluator(num_threads=num_threads, max_errors=max_errors)
