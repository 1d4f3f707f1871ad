"""``TuneTrialRunner``: the same trials through Ray Tune (``Tuner`` + ``OptunaSearch``).

Use it for Tune's own features (its experiment directory, result grid, dashboards, schedulers,
``Tuner.restore``). Configured from measurement (notes/ray-measured.md): Tune's defaults (one
CPU and a new process per trial) made 40 trials of 0.2 s take 40 s on 2 cores; here each trial
reserves ``cpus_per_trial=0.5`` and actors are reused (``reuse_actors=True``), and the console reporter is off.

The dspex searcher's space, metric, mode and a fresh seeded TPE sampler configure
``OptunaSearch``; the searcher's finished trials are handed to it as evaluated points (so a
later run of the same search learns from earlier ones); after the run, every Tune trial is
added to the dspex searcher. A trial that raises is retried by Tune (``max_retries``), then
recorded as failed while the search goes on. With ``checkpoint_path``, Tune keeps its
experiments beside it (``<checkpoint_path>.tune/run-NNN``); a run whose driver died is
continued by the next ``run`` with ``Tuner.restore``, Tune's searcher state included.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dspex.errors import OptimizerError
from dspex.optimizers.evaluation import Evaluator, LocalEvaluator
from dspex.optimizers.result import TrialRecord
from dspex.optimizers.search import Objective, Searcher, TPESearcher, TrialRunner

from .worker import Shipment, count_remote_usage, ship

__all__ = ["TuneTrialRunner", "trial_number"]

#: Tune's copy of a trial's config in its directory: a trial that errored before reporting
#: comes back from ``Tuner.restore`` without its config, and this file still has it
_PARAMS_FILE = "params.json"
#: written into a Tune experiment's directory once its run returned
_DONE = ".dspex-done"


def trial_number(trial_dir: str, trial_id: str) -> int:
    """The search's sequence number of a Tune trial (1, 2, ...): Tune names a trial's directory
    ``<trainable>_<trial id>_<counter>_<params>_<date>``."""
    name = os.path.basename(str(trial_dir).rstrip("/"))
    _, found, rest = name.partition(f"{trial_id}_")
    digits = rest.split("_", 1)[0] if found else ""
    if not digits.isdigit():
        raise OptimizerError(f"Cannot read the trial number from Tune's trial directory {name!r}.")
    return int(digits)


def _tune_trial(config: dict[str, Any], objective: Objective, shipment: Shipment, num_threads: int) -> None:
    from ray import tune

    ctx = tune.get_context()
    number = trial_number(ctx.get_trial_dir(), ctx.get_trial_id())
    with shipment.applied():
        values = objective(dict(config), number, LocalEvaluator(num_threads=num_threads))
    tune.report(dict(values))


class TuneTrialRunner(TrialRunner):
    """Trials as Ray Tune trials.

    Args:
        max_concurrent: trials running at once.
        cpus_per_trial: Ray CPUs per trial (fractional: trials wait on LM calls).
        reuse_actors: keep trial processes between trials (measured: 40 s -> 5 s).
        max_retries: Tune restarts of a failing trial before it counts as failed.
        storage_path: where Tune keeps experiments (default ``$DSPEX_HOME/tune``).
        num_threads: examples in flight inside a trial.
        stop: a Tune stopper / stop criteria (stops the search for good: a stopped experiment
            is finished, ``Tuner.restore`` does not continue it).
        callbacks: Tune callbacks (run on the driver).
        checkpoint_period_s: how often Tune saves the experiment state (searcher included).
            0 saves after every step, so a restored search loses no finished trial; Tune's
            own "auto" saves at most every 10 s (a crash then re-runs what finished since).
    """

    def __init__(
        self,
        *,
        max_concurrent: int = 4,
        cpus_per_trial: float = 0.5,
        reuse_actors: bool = True,
        max_retries: int = 1,
        storage_path: str | os.PathLike[str] | None = None,
        num_threads: int = 32,
        stop: Any = None,
        callbacks: list[Any] | None = None,
        checkpoint_period_s: float | str = 0.0,
    ) -> None:
        if max_concurrent < 1:
            raise OptimizerError(f"max_concurrent must be at least 1, got {max_concurrent}.")
        self.max_concurrent = max_concurrent
        self.cpus_per_trial = cpus_per_trial
        self.reuse_actors = reuse_actors
        self.max_retries = max_retries
        self.storage_path = storage_path
        self.num_threads = num_threads
        self.stop = stop
        self.callbacks = list(callbacks or [])
        self.checkpoint_period_s = checkpoint_period_s
        self.last_result_grid: Any = None

    def _storage(self) -> str:
        if self.storage_path is not None:
            return os.path.abspath(self.storage_path)
        home = os.environ.get("DSPEX_HOME") or os.path.join(Path.home(), ".dspex")
        return os.path.abspath(os.path.join(home, "tune"))

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
        """``checkpoint_path`` is where the searcher is saved after the run (as for the other
        runners); Tune's experiments live beside it in ``<checkpoint_path>.tune/run-NNN``. A
        run that did not finish (the driver died) is restored and continued by the next call."""
        if not isinstance(searcher, TPESearcher):
            raise OptimizerError("TuneTrialRunner runs OptunaSearch; give it a TPESearcher.")
        from ray import tune
        from ray.tune.search.optuna import OptunaSearch

        trainable = tune.with_resources(
            tune.with_parameters(_tune_trial, objective=objective, shipment=ship(objective), num_threads=self.num_threads),
            {"cpu": self.cpus_per_trial},
        )
        state_file = Path(checkpoint_path) if checkpoint_path is not None else None
        runs = state_file.with_name(state_file.name + ".tune") if state_file is not None else Path(self._storage()) / f"dspex-{uuid.uuid4().hex[:8]}"
        previous = sorted(runs.glob("run-*")) if runs.exists() else []
        if previous and not (previous[-1] / _DONE).exists() and tune.Tuner.can_restore(str(previous[-1])):
            exp_dir = previous[-1]
            tuner = tune.Tuner.restore(str(exp_dir), trainable, resume_unfinished=True, resume_errored=False, restart_errored=False)
        else:
            exp_dir = runs / f"run-{len(previous) + 1:03d}"
            done = [r for r in searcher.records() if r.state == "complete" and r.values and searcher.metric in r.values]
            search = OptunaSearch(
                space=searcher.optuna_space,
                metric=searcher.metric,
                mode=searcher.mode,
                sampler=searcher.new_sampler(),
                points_to_evaluate=[dict(r.params) for r in done] or None,
                evaluated_rewards=[float((r.values or {})[searcher.metric]) for r in done] or None,
            )
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=search,
                    num_samples=num_trials,
                    max_concurrent_trials=self.max_concurrent,
                    reuse_actors=self.reuse_actors,
                ),
                run_config=tune.RunConfig(
                    name=exp_dir.name,
                    storage_path=str(runs),
                    verbose=0,
                    stop=self.stop,
                    callbacks=self.callbacks or None,
                    failure_config=tune.FailureConfig(max_failures=self.max_retries),
                    checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),
                ),
            )
        grid = _fit(tuner, self.checkpoint_period_s)
        (exp_dir / _DONE).touch()
        self.last_result_grid = grid
        results = []
        for i in range(len(grid)):
            res = grid[i]
            trial_id = _trial_id(res.path)
            results.append((trial_number(res.path, trial_id), trial_id, res))
        seen = {r.user_attrs.get("tune_trial_id") for r in searcher.records()}
        out: list[TrialRecord] = []
        for number, trial_id, res in sorted(results, key=lambda t: t[0]):
            config = res.config or _saved_params(res.path)
            if trial_id in seen or not config:
                continue
            params = {k: config[k] for k in searcher.space}
            attrs = {"tune_trial_id": trial_id, "tune_trial_number": number}
            if res.error is not None or not res.metrics or searcher.metric not in res.metrics:
                record = searcher.add(params, None, failed=True, error=repr(res.error), user_attrs=attrs)
            else:
                values = {k: float(v) for k, v in res.metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
                record = searcher.add(params, values, user_attrs=attrs)
            out.append(record)
            count_remote_usage(record)
            if on_trial is not None:
                on_trial(record)
        if state_file is not None:
            searcher.save(state_file)
        return out


def _saved_params(trial_dir: str) -> dict[str, Any]:
    path = os.path.join(str(trial_dir), _PARAMS_FILE)
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def _trial_id(trial_dir: str) -> str:
    # ``<trainable>_<8 hex id>_<counter>_...``: the id is the 8-hex part before the counter.
    parts = os.path.basename(str(trial_dir).rstrip("/")).split("_")
    for i in range(len(parts) - 1):
        if len(parts[i]) == 8 and all(c in "0123456789abcdef" for c in parts[i]) and parts[i + 1].isdigit():
            return parts[i]
    raise OptimizerError(f"Cannot read the trial id from Tune's trial directory {trial_dir!r}.")


def _fit(tuner: Any, checkpoint_period_s: float | str) -> Any:
    # Tune reads the experiment-state checkpoint period from the environment when a run starts.
    old = os.environ.get("TUNE_GLOBAL_CHECKPOINT_S")
    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = str(checkpoint_period_s)
    try:
        return tuner.fit()
    finally:
        if old is None:
            os.environ.pop("TUNE_GLOBAL_CHECKPOINT_S", None)
        else:
            os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = old
