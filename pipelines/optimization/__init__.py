"""Optimization on Ray: the optimizers of ``dspex.optimizers`` with their candidates and trials
spread over a cluster.

    import dspex
    from dspex.pipelines.optimization import RayEvaluator, RayTrialRunner, WorkerPool

    pool = WorkerPool(num_workers=4)
    optimizer = dspex.optimizers.MIPROv2(metric=metric, auto="light")
    compiled = optimizer.compile(student, trainset=train, valset=dev,
                                 evaluator=RayEvaluator(pool=pool), trial_runner=RayTrialRunner(pool=pool))

- ``RayEvaluator``: candidates x examples on reused worker actors (the evaluation seam).
- ``RayTrialRunner``: search trials on the same workers, searcher on the driver, resumable.
- ``TuneTrialRunner``: the trials through Ray Tune (``Tuner`` + ``OptunaSearch``, ``Tuner.restore``).
- MultiObjective's NSGA-II ask / tell loop scores each generation through the evaluator, so
  with ``RayEvaluator`` its evaluations are Ray actor tasks.

The LM response cache shared by every worker is the clients' disk cache (``$DSPEX_HOME/cache``,
SQLite, one per machine; the workers get the driver's ``DSPEX_HOME``).
"""

from .evaluator import RayEvaluator, split_pairs
from .pool import WorkerPool
from .runner import RayTrialRunner
from .tune_runner import TuneTrialRunner
from .worker import OptimizationWorker

__all__ = ["OptimizationWorker", "RayEvaluator", "RayTrialRunner", "TuneTrialRunner", "WorkerPool", "split_pairs"]
