"""``Evaluate``: run a program over a devset concurrently and score it with a metric (DSPy's shape).

    evaluate = dspex.Evaluate(devset=dev, metric=exact_match, num_threads=16, display_progress=True)
    result = evaluate(program)          # EvaluationResult: result.score (percent), result.results

Examples run as asyncio tasks on dspex's I/O loop (or in a bounded thread pool for programs
with only a sync ``forward``). A failing example scores ``failure_score`` and is reported;
more than ``max_errors`` failures abort with ``ExecutionAborted``.
"""

from __future__ import annotations

import asyncio
import contextvars
import csv
import inspect
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dspex import telemetry
from dspex.telemetry import names
from dspex.evaluate.parallel import Outcome, amap, program_caller
from dspex.primitives.example import Example
from dspex.primitives.prediction import Prediction
from dspex.settings import settings
from dspex.utils.asyncio_bridge import SyncCallOnIOLoop, run_sync
from dspex.utils.callback import active_callbacks, with_callbacks

__all__ = ["EvaluationResult", "Evaluate"]

log = logging.getLogger("dspex.evaluate")

_EVAL_EVENT = names.EVALUATE
_EXAMPLE_EVENT = names.EVALUATE_EXAMPLE


class EvaluationResult(Prediction):
    """``score`` (0-100, as DSPy 3 reports it) and ``results``: (example, prediction, score) per
    example, in devset order. Failed examples carry an empty Prediction and the failure score."""

    def __init__(self, score: float, results: list[tuple[Example, Any, float]], **extra: Any) -> None:
        super().__init__(score=score, results=results, **extra)

    def __repr__(self) -> str:
        return f"EvaluationResult(score={self.score}, results=<list of {len(self.results)} results>)"


class Evaluate:
    def __init__(
        self,
        *,
        devset: list[Example],
        metric: Callable[..., Any] | None = None,
        num_threads: int | None = None,
        display_progress: bool = False,
        display_table: bool | int = False,
        max_errors: int | None = None,
        provide_traceback: bool | None = None,
        failure_score: float = 0.0,
        return_all_scores: bool = False,
        return_outputs: bool = False,
        save_as_csv: str | None = None,
        save_as_json: str | None = None,
        callbacks: list[Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.callbacks = callbacks or []
        self.devset = devset
        self.metric = metric
        self.num_threads = num_threads
        self.display_progress = display_progress
        self.display_table = display_table
        self.max_errors = max_errors
        self.provide_traceback = provide_traceback
        self.failure_score = failure_score
        self.return_all_scores = return_all_scores
        self.return_outputs = return_outputs
        self.save_as_csv = save_as_csv
        self.save_as_json = save_as_json

    def __call__(
        self,
        program: Any,
        metric: Callable[..., Any] | None = None,
        devset: list[Example] | None = None,
        num_threads: int | None = None,
        display_progress: bool | None = None,
        display_table: bool | int | None = None,
        return_all_scores: bool | None = None,
        return_outputs: bool | None = None,
        callback_metadata: dict[str, Any] | None = None,
        save_as_csv: str | None = None,
        save_as_json: str | None = None,
    ) -> Any:
        def run() -> Any:
            return run_sync(
                self.acall(
                    program,
                    metric=metric,
                    devset=devset,
                    num_threads=num_threads,
                    display_progress=display_progress,
                    display_table=display_table,
                    return_all_scores=return_all_scores,
                    return_outputs=return_outputs,
                    save_as_csv=save_as_csv,
                    save_as_json=save_as_json,
                )
            )

        cbs = active_callbacks(self)
        if cbs:
            inputs = {"program": program, "metric": metric, "devset": devset, "metadata": callback_metadata}
            return with_callbacks(cbs, "evaluate", self, inputs, run)
        return run()

    async def acall(
        self,
        program: Any,
        metric: Callable[..., Any] | None = None,
        devset: list[Example] | None = None,
        num_threads: int | None = None,
        display_progress: bool | None = None,
        display_table: bool | int | None = None,
        return_all_scores: bool | None = None,
        return_outputs: bool | None = None,
        save_as_csv: str | None = None,
        save_as_json: str | None = None,
    ) -> Any:
        metric = metric if metric is not None else self.metric
        devset = devset if devset is not None else self.devset
        if metric is None:
            raise ValueError("Evaluate needs a metric: Evaluate(devset=..., metric=fn) or evaluate(program, metric=fn).")
        concurrency = num_threads or self.num_threads or settings.get("num_threads", 8)
        show = self.display_progress if display_progress is None else display_progress
        call, pool = program_caller(program, concurrency)
        failure_score = self.failure_score
        total = 0.0
        done_n = 0
        bar = None
        if show:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(devset), dynamic_ncols=True, leave=False)

        metric_pool: ThreadPoolExecutor | None = None
        metric_is_async = inspect.iscoroutinefunction(metric)
        metric_inline = True

        async def in_thread(example: Example, prediction: Any) -> Any:
            nonlocal metric_pool
            if metric_pool is None:
                metric_pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="dspex-metric")
            ctx = contextvars.copy_context()
            return await asyncio.get_running_loop().run_in_executor(
                metric_pool, lambda: ctx.run(metric, example, prediction)
            )

        async def one(example: Example) -> tuple[Any, float]:
            nonlocal metric_inline
            t0 = time.perf_counter()
            prediction = await call(example.inputs())
            # Metrics run inline on the loop (cheap, no thread hop), except one that itself calls
            # an LM synchronously (LM-as-judge): that raises before sending anything, and from
            # then on the metric runs in a thread pool.
            if metric_is_async:
                score = await metric(example, prediction)
            elif metric_inline:
                try:
                    score = metric(example, prediction)
                except SyncCallOnIOLoop:
                    metric_inline = False
                    score = await in_thread(example, prediction)
            else:
                score = await in_thread(example, prediction)
            value = float(score)
            telemetry.emit(
                _EXAMPLE_EVENT,
                {"score": value, "duration_s": time.perf_counter() - t0},
                {"program": type(program).__name__},
            )
            return prediction, value

        def on_done(out: Outcome) -> None:
            nonlocal total, done_n
            done_n += 1
            total += out.value[1] if out.error is None else failure_score
            if bar is not None:
                bar.set_description(f"Average Metric: {total:.2f} / {done_n} ({100 * total / done_n:.1f}%)")
                bar.update(1)

        t_start = time.perf_counter()
        try:
            async with telemetry.span(_EVAL_EVENT, program=type(program).__name__, examples=len(devset)) as sp:
                outcomes = await amap(
                    one,
                    devset,
                    concurrency=concurrency,
                    max_errors=self.max_errors if self.max_errors is not None else settings.get("max_errors"),
                    on_done=on_done,
                    provide_traceback=bool(self.provide_traceback),
                )
                results: list[tuple[Example, Any, float]] = []
                for example, out in zip(devset, outcomes, strict=True):
                    if out.error is None:
                        results.append((example, out.value[0], out.value[1]))
                    else:
                        results.append((example, Prediction(), failure_score))
                n = len(results)
                score = round(100 * sum(r[2] for r in results) / n, 2) if n else 0.0
                sp.set(score=score, errors=sum(1 for o in outcomes if o.error is not None))
        finally:
            if bar is not None:
                bar.close()
            if pool is not None:
                pool.shutdown(wait=False)
            if metric_pool is not None:
                metric_pool.shutdown(wait=False)
        errors = sum(1 for o in outcomes if o.error is not None)
        if show:
            log.info(
                "Average Metric: %.2f / %d (%.1f%%) in %.2fs, %d errors",
                sum(r[2] for r in results),
                n,
                score,
                time.perf_counter() - t_start,
                errors,
            )
        table = self.display_table if display_table is None else display_table
        if table:
            _print_table(results, int(table) if not isinstance(table, bool) else len(results))
        self._save(results, save_as_csv or self.save_as_csv, save_as_json or self.save_as_json)
        result = EvaluationResult(score=score, results=results, errors=errors)
        want_scores = self.return_all_scores if return_all_scores is None else return_all_scores
        want_outputs = self.return_outputs if return_outputs is None else return_outputs
        if want_scores or want_outputs:
            # The DSPy 2.x tuple forms, kept for old callers.
            if want_scores and want_outputs:
                return score, results, [r[2] for r in results]
            if want_scores:
                return score, [r[2] for r in results]
            return score, results
        return result

    @staticmethod
    def _save(results: list[tuple[Example, Any, float]], csv_path: str | None, json_path: str | None) -> None:
        if not csv_path and not json_path:
            return
        rows = []
        for example, prediction, score in results:
            row = {**example.toDict()}
            if isinstance(prediction, Example):
                row.update({f"pred_{k}": v for k, v in prediction.toDict().items()})
            row["score"] = score
            rows.append(row)
        if json_path:
            with open(json_path, "w", encoding="utf-8") as f:
                json.dump(rows, f, indent=2, default=str)
        if csv_path:
            keys: list[str] = []
            for row in rows:
                keys.extend(k for k in row if k not in keys)
            with open(csv_path, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=keys)
                writer.writeheader()
                writer.writerows(rows)


def _print_table(results: list[tuple[Example, Any, float]], limit: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False)
    if not results:
        return
    example0, pred0, _ = results[0]
    ex_keys = list(example0.keys())
    pred_keys = list(pred0.keys()) if isinstance(pred0, Example) else []
    for k in ex_keys:
        table.add_column(k, overflow="fold", max_width=40)
    for k in pred_keys:
        table.add_column(f"pred_{k}", overflow="fold", max_width=40)
    table.add_column("score")
    for example, prediction, score in results[:limit]:
        cells = [str(example.get(k, ""))[:200] for k in ex_keys]
        if isinstance(prediction, Example):
            cells += [str(prediction.get(k, ""))[:200] for k in pred_keys]
        else:
            cells += [""] * len(pred_keys)
        table.add_row(*cells, f"{score:.2f}")
    Console().print(table)
