"""Running a teacher program on training examples and turning its traces into demos.

``settings.trace`` is a list while a trace is recorded: every Predict appends
``(predictor, inputs, prediction)``. A successful run (the metric passes on the teacher's
prediction, given the trace) yields one augmented demo per predictor step, as DSPy marks them:
``Example(augmented=True, **inputs, **outputs)``.

Runs happen on dspex's asyncio loop, so several examples can be in flight; each run sets its
own trace in its own task context, so concurrent runs never share a trace.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from dspex.errors import OptimizerError
from dspex.evaluate.parallel import has_native_async
from dspex.primitives.example import Example
from dspex.primitives.module import Module
from dspex.settings import settings

__all__ = ["TeacherRun", "TraceRunner", "call_metric", "predictor_names"]


@dataclass
class TeacherRun:
    """The outcome of running the teacher on one example (over up to ``max_rounds`` rounds)."""

    index: int
    success: bool
    score: float | None = None
    #: predictor name -> the augmented demos this run produced (only when it succeeded)
    demos: dict[str, list[Example]] = field(default_factory=dict)
    rounds: int = 0
    error: str | None = None
    prediction: Any = None


def predictor_names(program: Module) -> dict[int, str]:
    return {id(p): name for name, p in program.named_predictors()}


async def call_metric(metric: Callable[..., Any], example: Any, prediction: Any, trace: Any) -> Any:
    """``metric(example, prediction, trace)`` off the I/O loop (a metric may call an LM)."""
    if inspect.iscoroutinefunction(metric):
        return await metric(example, prediction, trace)
    ctx = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, ctx.run, metric, example, prediction, trace)


class TraceRunner:
    """Runs a teacher on examples with traces on; one per compile (it owns a thread pool for
    programs that only have a sync ``forward``)."""

    def __init__(
        self,
        teacher: Module,
        *,
        metric: Callable[..., Any] | None,
        metric_threshold: float | None = None,
        teacher_settings: dict[str, Any] | None = None,
        max_rounds: int = 1,
        num_threads: int = 16,
    ) -> None:
        self.teacher = teacher
        self.metric = metric
        self.metric_threshold = metric_threshold
        self.teacher_settings = dict(teacher_settings or {})
        self.max_rounds = max_rounds
        self._pool = None if has_native_async(teacher) else ThreadPoolExecutor(num_threads, thread_name_prefix="dspex-teacher")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    async def run(self, index: int, example: Example) -> TeacherRun:
        """Round 0 with the teacher as is; later rounds with a fresh sample (temperature 1.0 and
        a rollout id, so the cache does not answer with the same reply), until one passes."""
        last = TeacherRun(index=index, success=False)
        for round_idx in range(self.max_rounds):
            last = await self._one_round(index, example, round_idx)
            if last.success:
                break
        return last

    async def _one_round(self, index: int, example: Example, round_idx: int) -> TeacherRun:
        program = self._teacher_without(example)
        names = predictor_names(program)
        overrides = dict(self.teacher_settings)
        if round_idx > 0:
            lm = overrides.get("lm") or settings.get("lm")
            if lm is not None:
                overrides["lm"] = lm.copy(rollout_id=round_idx, temperature=1.0)
        trace: list[Any] = []
        with settings.context(trace=trace, **overrides):
            prediction = await self._call(program, example.inputs())
            if self.metric is None:
                score: float | None = None
                success = True
            else:
                value = await call_metric(self.metric, example, prediction, trace)
                score = float(value)
                success = score >= self.metric_threshold if self.metric_threshold is not None else bool(value)
        run = TeacherRun(index=index, success=success, score=score, rounds=round_idx + 1, prediction=prediction)
        if success:
            for predictor, inputs, outputs in trace:
                name = names.get(id(predictor))
                if name is None:
                    raise OptimizerError(
                        "The teacher's trace holds a predictor that is not one of its own named predictors; "
                        "build sub-modules as attributes of the teacher so named_predictors() finds them."
                    )
                out = outputs.toDict() if hasattr(outputs, "toDict") else dict(outputs)
                run.demos.setdefault(name, []).append(Example(augmented=True, **dict(inputs), **out))
        return run

    def _teacher_without(self, example: Example) -> Module:
        # The example must not be its own demo (DSPy removes it from the teacher's demos for
        # the run). Copy the teacher only when it actually holds the example.
        if not any(example == d for _, p in self.teacher.named_predictors() for d in p.demos):
            return self.teacher
        program: Module = self.teacher.deepcopy()
        for _, p in program.named_predictors():
            p.demos = [d for d in p.demos if d != example]
        return program

    async def _call(self, program: Module, inputs: Any) -> Any:
        if self._pool is None:
            return await program.acall(**inputs)
        ctx = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        pool = self._pool
        return await loop.run_in_executor(pool, lambda: ctx.run(program, **inputs))


async def gather_runs(runner: TraceRunner, items: Sequence[tuple[int, Example]]) -> list[TeacherRun | BaseException]:
    """Run several examples at once; an example that raises comes back as its exception."""
    return list(await asyncio.gather(*(runner.run(i, ex) for i, ex in items), return_exceptions=True))
