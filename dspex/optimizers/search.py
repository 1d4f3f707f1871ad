"""Search over discrete and continuous choices: our own suggest / observe calls around optuna.

    space = {"instruction": Categorical(range(4)), "temperature": FloatRange(0.0, 1.0)}
    searcher = TPESearcher(space, metric="score", mode="max", seed=0)
    number, params = searcher.ask()
    searcher.tell(number, {"score": 71.0})

A ``TrialRunner`` runs an objective ``objective(params, trial_number, evaluator) -> {metric:
value}`` for many trials: ``LocalTrialRunner`` here (in this process, optionally a few at a
time in threads); ``dspex.pipelines.optimization`` has the Ray runners. A searcher pickles
whole (optuna study, sampler RNG state, trial records), so a stopped search saved with
``save`` continues with ``load`` exactly where it was: trials that were running are run again.
"""

from __future__ import annotations

import contextvars
import logging
import os
import pickle
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dspex import telemetry
from dspex.errors import OptimizerError
from dspex.optimizers.evaluation import Evaluator
from dspex.optimizers.result import TrialRecord
from dspex.telemetry import names

__all__ = [
    "Categorical",
    "Distribution",
    "FloatRange",
    "IntRange",
    "LocalTrialRunner",
    "Objective",
    "Searcher",
    "TPESearcher",
    "TrialRunner",
    "import_optuna",
    "run_with_retries",
]

log = logging.getLogger("dspex.optimizers.search")


def import_optuna() -> Any:
    try:
        import optuna
    except ImportError as exc:  # pragma: no cover - optuna is a dependency of dspex
        raise OptimizerError("This optimizer searches with optuna; install it: pip install 'optuna>=4'.") from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


# -- the space ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Categorical:
    choices: tuple[Any, ...]

    def __init__(self, choices: Iterable[Any]) -> None:
        values = tuple(choices)
        if not values:
            raise OptimizerError("A categorical choice needs at least one option.")
        object.__setattr__(self, "choices", values)


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise OptimizerError(f"A float range needs low <= high, got [{self.low}, {self.high}].")


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise OptimizerError(f"An integer range needs low <= high, got [{self.low}, {self.high}].")


Distribution = Categorical | FloatRange | IntRange


def to_optuna(space: Mapping[str, Distribution]) -> dict[str, Any]:
    optuna = import_optuna()
    d = optuna.distributions
    out: dict[str, Any] = {}
    for name, dist in space.items():
        if isinstance(dist, Categorical):
            out[name] = d.CategoricalDistribution(list(dist.choices))
        elif isinstance(dist, FloatRange):
            out[name] = d.FloatDistribution(dist.low, dist.high, log=dist.log)
        elif isinstance(dist, IntRange):
            out[name] = d.IntDistribution(dist.low, dist.high)
        else:
            raise OptimizerError(f"Search dimension {name!r} must be Categorical, FloatRange or IntRange, got {dist!r}.")
    return out


# -- searchers ----------------------------------------------------------------------------------
class Searcher(ABC):
    """Suggests parameters (``ask``) and learns from results (``tell`` / ``add``)."""

    space: Mapping[str, Distribution]
    metric: str
    mode: str

    @abstractmethod
    def ask(self) -> tuple[int, dict[str, Any]]: ...

    @abstractmethod
    def tell(
        self,
        number: int,
        values: Mapping[str, float] | None,
        *,
        failed: bool = False,
        error: str | None = None,
        attempts: int = 1,
        duration_s: float = 0.0,
        user_attrs: Mapping[str, Any] | None = None,
    ) -> TrialRecord: ...

    @abstractmethod
    def add(
        self,
        params: Mapping[str, Any],
        values: Mapping[str, float] | None,
        *,
        failed: bool = False,
        error: str | None = None,
        user_attrs: Mapping[str, Any] | None = None,
    ) -> TrialRecord:
        """Record a point evaluated elsewhere (a warm start, a full evaluation, a Tune trial)."""

    @abstractmethod
    def records(self) -> list[TrialRecord]: ...

    @abstractmethod
    def pending(self) -> list[tuple[int, dict[str, Any]]]:
        """Trials asked for but never told (running when a search stopped)."""

    def best(self) -> TrialRecord | None:
        done = [r for r in self.records() if r.state == "complete" and r.values and self.metric in r.values]
        if not done:
            return None
        sign = 1.0 if self.mode == "max" else -1.0
        return max(done, key=lambda r: sign * float(r.values[self.metric]))  # type: ignore[index]

    # -- checkpoints ----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Pickle the whole searcher atomically (write a temp file, then rename)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".searcher-")
        with os.fdopen(fd, "wb") as f:
            pickle.dump(self, f)
        os.replace(tmp, target)

    @staticmethod
    def load(path: str | os.PathLike[str]) -> Searcher:
        with open(path, "rb") as f:
            obj = pickle.load(f)
        if not isinstance(obj, Searcher):
            raise OptimizerError(f"{path} does not hold a saved searcher.")
        return obj


class TPESearcher(Searcher):
    """Optuna's TPE sampler (multivariate, as MIPROv2 uses it) over ``space``."""

    def __init__(
        self,
        space: Mapping[str, Distribution],
        *,
        metric: str = "score",
        mode: str = "max",
        seed: int | None = None,
        multivariate: bool = True,
        n_startup_trials: int = 10,
    ) -> None:
        if mode not in ("max", "min"):
            raise OptimizerError(f"mode must be 'max' or 'min', got {mode!r}.")
        if not space:
            raise OptimizerError("A search needs at least one dimension in its space.")
        self.space = dict(space)
        self.metric = metric
        self.mode = mode
        self.seed = seed
        self.multivariate = multivariate
        self.n_startup_trials = n_startup_trials
        optuna = import_optuna()
        self._dists = to_optuna(self.space)
        self._study = optuna.create_study(direction="maximize" if mode == "max" else "minimize", sampler=self.new_sampler())
        self._records: dict[int, TrialRecord] = {}
        self._asked: dict[int, dict[str, Any]] = {}

    def new_sampler(self) -> Any:
        optuna = import_optuna()
        return optuna.samplers.TPESampler(
            seed=self.seed, multivariate=self.multivariate, n_startup_trials=self.n_startup_trials
        )

    @property
    def optuna_space(self) -> dict[str, Any]:
        return dict(self._dists)

    def ask(self) -> tuple[int, dict[str, Any]]:
        trial = self._study.ask(fixed_distributions=self._dists)
        params = dict(trial.params)
        self._asked[trial.number] = params
        return trial.number, params

    def tell(
        self,
        number: int,
        values: Mapping[str, float] | None,
        *,
        failed: bool = False,
        error: str | None = None,
        attempts: int = 1,
        duration_s: float = 0.0,
        user_attrs: Mapping[str, Any] | None = None,
    ) -> TrialRecord:
        optuna = import_optuna()
        params = self._asked.pop(number, None)
        if params is None:
            raise OptimizerError(f"Trial {number} was not asked for, or was already told.")
        value = None if failed or values is None else values.get(self.metric)
        if value is None and not failed:
            raise OptimizerError(f"Trial {number} reported {dict(values or {})} without the metric {self.metric!r}.")
        state = optuna.trial.TrialState.FAIL if value is None else optuna.trial.TrialState.COMPLETE
        self._study.tell(number, None if value is None else float(value), state=state)
        record = TrialRecord(
            number=number,
            params=params,
            values=None if value is None else {k: float(v) for k, v in (values or {}).items()},
            state="failed" if value is None else "complete",
            attempts=attempts,
            duration_s=duration_s,
            error=error,
            user_attrs=dict(user_attrs or {}),
        )
        self._records[number] = record
        return record

    def add(
        self,
        params: Mapping[str, Any],
        values: Mapping[str, float] | None,
        *,
        failed: bool = False,
        error: str | None = None,
        user_attrs: Mapping[str, Any] | None = None,
    ) -> TrialRecord:
        optuna = import_optuna()
        if not failed and (values is None or self.metric not in values):
            raise OptimizerError(f"An evaluated point needs the metric {self.metric!r}, got {dict(values or {})}.")
        missing = set(self._dists) - set(params)
        if missing:
            raise OptimizerError(f"An evaluated point needs every dimension of the space; missing {sorted(missing)}.")
        point = {k: params[k] for k in self._dists}
        trial = optuna.trial.create_trial(
            params=point,
            distributions=self._dists,
            value=None if failed else float((values or {})[self.metric]),
            state=optuna.trial.TrialState.FAIL if failed else optuna.trial.TrialState.COMPLETE,
            user_attrs=dict(user_attrs or {}),
        )
        self._study.add_trial(trial)
        number = self._study.trials[-1].number
        record = TrialRecord(
            number=number,
            params=point,
            values=None if failed else {k: float(v) for k, v in (values or {}).items()},
            state="failed" if failed else "complete",
            error=error,
            user_attrs=dict(user_attrs or {}),
        )
        self._records[number] = record
        return record

    def records(self) -> list[TrialRecord]:
        return [self._records[k] for k in sorted(self._records)]

    def pending(self) -> list[tuple[int, dict[str, Any]]]:
        return sorted(self._asked.items())


# -- running trials -----------------------------------------------------------------------------
#: ``objective(params, trial_number, evaluator) -> {metric: value, ...}``
Objective = Callable[[dict[str, Any], int, Evaluator], Mapping[str, float]]


class TrialRunner(ABC):
    """Runs ``num_trials`` trials of an objective, asking and telling ``searcher``."""

    @abstractmethod
    def run(
        self,
        objective: Objective,
        searcher: Searcher,
        *,
        num_trials: int,
        evaluator: Evaluator,
        checkpoint_path: str | os.PathLike[str] | None = None,
        on_trial: Callable[[TrialRecord], None] | None = None,
    ) -> list[TrialRecord]:
        """Trials that were pending in a resumed searcher run first and count towards
        ``num_trials``. The searcher is saved to ``checkpoint_path`` after every trial."""


def run_with_retries(
    objective: Objective, params: dict[str, Any], number: int, evaluator: Evaluator, max_retries: int
) -> tuple[Mapping[str, float] | None, str | None, int, float]:
    """(values, error, attempts, duration_s): a raising trial is retried ``max_retries`` times."""
    t0 = time.perf_counter()
    error: str | None = None
    for attempt in range(1, max_retries + 2):
        try:
            return objective(params, number, evaluator), None, attempt, time.perf_counter() - t0
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.warning("Trial %d attempt %d failed: %s", number, attempt, error)
            if attempt <= max_retries:
                telemetry.emit(
                    names.ERROR_RECOVERY,
                    {"attempt": attempt},
                    {"component": "optimizer_trial", "strategy": "retry", "error": type(exc).__name__},
                )
    return None, error, max_retries + 1, time.perf_counter() - t0


class LocalTrialRunner(TrialRunner):
    """Trials in this process: one at a time (reproducible with a seed), or up to
    ``max_concurrent`` in threads (their evaluations still share dspex's I/O loop).

    A trial that raises is retried ``max_retries`` times, then recorded as failed; the
    search goes on.
    """

    def __init__(self, *, max_concurrent: int = 1, max_retries: int = 1) -> None:
        if max_concurrent < 1:
            raise OptimizerError(f"max_concurrent must be at least 1, got {max_concurrent}.")
        if max_retries < 0:
            raise OptimizerError(f"max_retries must be >= 0, got {max_retries}.")
        self.max_concurrent = max_concurrent
        self.max_retries = max_retries

    def run(
        self,
        objective: Objective,
        searcher: Searcher,
        *,
        num_trials: int,
        evaluator: Evaluator,
        checkpoint_path: str | os.PathLike[str] | None = None,
        on_trial: Callable[[TrialRecord], None] | None = None,
    ) -> list[TrialRecord]:
        queue = list(searcher.pending())[:num_trials]
        to_ask = num_trials - len(queue)
        done: list[TrialRecord] = []

        def finish(number: int, outcome: tuple[Mapping[str, float] | None, str | None, int, float]) -> None:
            values, error, attempts, duration_s = outcome
            record = searcher.tell(
                number, values, failed=values is None, error=error, attempts=attempts, duration_s=duration_s
            )
            if checkpoint_path is not None:
                searcher.save(checkpoint_path)
            done.append(record)
            if on_trial is not None:
                on_trial(record)

        def next_trial() -> tuple[int, dict[str, Any]] | None:
            nonlocal to_ask
            if queue:
                return queue.pop(0)
            if to_ask > 0:
                to_ask -= 1
                return searcher.ask()
            return None

        if self.max_concurrent == 1:
            while (item := next_trial()) is not None:
                finish(item[0], run_with_retries(objective, item[1], item[0], evaluator, self.max_retries))
            return done
        with ThreadPoolExecutor(self.max_concurrent, thread_name_prefix="dspex-trial") as pool:
            running: dict[Future[Any], int] = {}
            while True:
                while len(running) < self.max_concurrent and (item := next_trial()) is not None:
                    # Each trial runs in a copy of the caller's context (settings such as lm=).
                    ctx = contextvars.copy_context()
                    fut = pool.submit(ctx.run, run_with_retries, objective, item[1], item[0], evaluator, self.max_retries)
                    running[fut] = item[0]
                if not running:
                    return done
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in sorted(finished, key=lambda f: running[f]):
                    finish(running.pop(fut), fut.result())
