"""Optimizer wall time and LM calls, in-process and on Ray; and the trial machinery alone.

1. BootstrapFewShotWithRandomSearch on the simulator's arithmetic task: 40 train, 40 dev,
   6 candidate programs (+ zero-shot, labeled-only and the unshuffled bootstrap, as DSPy), a
   model answering after a fixed 100 ms, the simulator in its own process. Run in-process
   and with the Ray evaluator on 1, 2 and 4 workers; each run starts with an empty LM
   cache. LM calls are the requests the simulator received. Reference: DSPy 3.4.1 took
   5.15 s and 378 LM calls on this job here; target <= a third of that time.
2. 40 trials of a 0.2 s synthetic objective, 4 at a time, TPE-suggested: through dspex's Ray
   trial runner (reused workers), through Ray Tune (``TuneTrialRunner``) and through plain
   optuna with ``n_jobs=4`` threads, in the same run. Target: dspex's runner <= 2.5x optuna.

Prints a table, then one JSON line.

    python benchmarks/optimizers.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import dspex
from dspex.clients.cache import configure_cache
from dspex.optimizers import (
    BootstrapFewShotWithRandomSearch,
    Categorical,
    FloatRange,
    LocalEvaluator,
    TPESearcher,
)
from dspex.sim import LatencySpec, ModelSpec, PriceSpec, SimConfig, SimProcess, get_task, load_task

MODEL = "sim-bench-100ms"
DSPY_REFERENCE = {"wall_s": 5.15, "lm_calls": 378}


def sim_config() -> SimConfig:
    return SimConfig(
        models=[
            ModelSpec(
                name=MODEL,
                skill=0.6,
                latency=LatencySpec(base_ms=100.0),
                price=PriceSpec(input_per_1m_usd=1.0, output_per_1m_usd=4.0),
            )
        ]
    )


def fresh_cache(root: str, name: str) -> str:
    """A new DSPEX_HOME (so an empty LM cache) for this process and any workers started after."""
    home = os.path.join(root, name)
    os.makedirs(home, exist_ok=True)
    os.environ["DSPEX_HOME"] = home
    configure_cache(disk_dir=os.path.join(home, "cache"))
    return home


def random_search(sim: SimProcess, evaluator: Any, num_threads: int) -> dict[str, Any]:
    task = get_task("arithmetic")
    train = load_task("arithmetic", n=40, seed=0, split="train")
    dev = load_task("arithmetic", n=40, seed=0, split="dev")
    before = sim.model_stats(MODEL)["requests"]
    optimizer = BootstrapFewShotWithRandomSearch(
        metric=task.metric,
        max_bootstrapped_demos=4,
        max_labeled_demos=16,
        num_candidate_programs=6,
        num_threads=num_threads,
        progress=False,
    )
    t0 = time.perf_counter()
    compiled = optimizer.compile(dspex.Predict(task.signature), trainset=train, valset=dev, evaluator=evaluator)
    wall_s = time.perf_counter() - t0
    result = compiled.optimization_result
    return {
        "wall_s": round(wall_s, 3),
        "lm_calls": sim.model_stats(MODEL)["requests"] - before,
        "metered_calls": result.paid_calls,
        "score": result.best_score,
        "candidates": len(result.candidates),
    }


class SleepObjective:
    """0.2 s of waiting, then a smooth function of the parameters (a stand-in for a trial)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, params: dict[str, Any], number: int, evaluator: Any) -> dict[str, float]:
        time.sleep(self.seconds)
        return {"score": -((params["x"] - 0.3) ** 2) + 0.1 * params["k"]}


def space() -> dict[str, Any]:
    return {"x": FloatRange(0.0, 1.0), "k": Categorical([0, 1, 2])}


def trials_optuna(n: int, seconds: float, concurrency: int) -> float:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0, multivariate=True))
    objective = SleepObjective(seconds)

    def run(trial: Any) -> float:
        params = {"x": trial.suggest_float("x", 0.0, 1.0), "k": trial.suggest_categorical("k", [0, 1, 2])}
        return objective(params, trial.number, None)["score"]

    t0 = time.perf_counter()
    study.optimize(run, n_trials=n, n_jobs=concurrency)
    return time.perf_counter() - t0


def trials_runner(runner: Any, n: int, seconds: float, checkpoint: str | None = None) -> float:
    searcher = TPESearcher(space(), seed=0)
    t0 = time.perf_counter()
    runner.run(SleepObjective(seconds), searcher, num_trials=n, evaluator=LocalEvaluator(), checkpoint_path=checkpoint)
    elapsed = time.perf_counter() - t0
    done = [r for r in searcher.records() if r.state == "complete"]
    if len(done) != n:
        raise RuntimeError(f"expected {n} completed trials, got {len(done)}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="skip the Ray Tune comparison")
    ap.add_argument("--num-threads", type=int, default=128, help="examples in flight (per worker on Ray)")
    args = ap.parse_args()

    import ray
    from dspex.pipelines.optimization import (
        RayEvaluator,
        RayTrialRunner,
        TuneTrialRunner,
        WorkerPool,
    )

    root = tempfile.mkdtemp(prefix="dspex-bench-opt-")
    out: dict[str, Any] = {"bench": "optimizers", "dspy_reference": DSPY_REFERENCE}
    rows: list[tuple[str, str, str, str]] = []

    with SimProcess(sim_config()) as sim:
        lm = dspex.LM(f"openai/{MODEL}", api_base=sim.openai_base_url, api_key="sim", num_retries=0)
        dspex.configure(lm=lm)
        rs: dict[str, Any] = {}
        fresh_cache(root, "in_process")
        rs["in_process"] = random_search(sim, LocalEvaluator(num_threads=args.num_threads), args.num_threads)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        for workers in (1, 2, 4):
            fresh_cache(root, f"ray_{workers}")
            with WorkerPool(workers, num_threads=args.num_threads) as pool:
                pool.actors()  # started before timing: worker start-up is paid once per pool
                rs[f"ray_{workers}"] = random_search(sim, RayEvaluator(pool=pool), args.num_threads)
        out["random_search"] = rs
        for name, r in rs.items():
            rows.append((f"random search, {name.replace('_', ' ')}", f"{r['wall_s']:.2f} s", f"{r['lm_calls']} calls", f"score {r['score']}"))

    # -- the trial machinery alone -------------------------------------------------------------
    n, seconds, conc = 40, 0.2, 4
    trials: dict[str, Any] = {"trials": n, "seconds": seconds, "concurrency": conc, "ideal_s": n * seconds / conc}
    trials["optuna_threads_s"] = round(trials_optuna(n, seconds, conc), 3)
    with WorkerPool(conc, concurrency_per_worker=1) as pool:
        pool.actors()
        trials["dspex_ray_runner_s"] = round(trials_runner(RayTrialRunner(pool=pool), n, seconds), 3)
    if not args.quick:
        fresh_cache(root, "tune")
        trials_runner(TuneTrialRunner(max_concurrent=conc), 4, 0.01)  # warm: Tune's first run starts processes
        trials["ray_tune_s"] = round(trials_runner(TuneTrialRunner(max_concurrent=conc), n, seconds), 3)
    trials["ratio_dspex_to_optuna"] = round(trials["dspex_ray_runner_s"] / trials["optuna_threads_s"], 2)
    out["trials"] = trials
    rows.append(("40 trials x 0.2 s, optuna n_jobs=4", f"{trials['optuna_threads_s']:.2f} s", "", ""))
    rows.append(("40 trials x 0.2 s, dspex RayTrialRunner", f"{trials['dspex_ray_runner_s']:.2f} s", f"x{trials['ratio_dspex_to_optuna']}", ""))
    if "ray_tune_s" in trials:
        rows.append(("40 trials x 0.2 s, Ray Tune (TuneTrialRunner)", f"{trials['ray_tune_s']:.2f} s", "", ""))
    ray.shutdown()
    shutil.rmtree(root, ignore_errors=True)

    best = min(rs.values(), key=lambda r: r["wall_s"])
    out["targets"] = {
        "random_search_wall_s_max": round(DSPY_REFERENCE["wall_s"] / 3, 3),
        "random_search_in_process_wall_s": rs["in_process"]["wall_s"],
        "random_search_best_wall_s": best["wall_s"],
        "random_search_met": rs["in_process"]["wall_s"] <= DSPY_REFERENCE["wall_s"] / 3 and best["wall_s"] <= DSPY_REFERENCE["wall_s"] / 3,
        "trials_ratio_max": 2.5,
        "trials_met": trials["ratio_dspex_to_optuna"] <= 2.5,
    }
    width = max(len(r[0]) for r in rows)
    print(f"{'case':<{width}}  {'wall':>9}  {'':>10}  {''}")
    for r in rows:
        print(f"{r[0]:<{width}}  {r[1]:>9}  {r[2]:>10}  {r[3]}")
    print(f"DSPy 3.4.1 reference: {DSPY_REFERENCE['wall_s']} s, {DSPY_REFERENCE['lm_calls']} LM calls")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
