"""Wall time of an offline experiment: in process vs on Ray, calls paid vs answered by the cache.

    python benchmarks/experiments.py --n-test 200 --latency-ms 100

Starts the simulator out of process with one model answering after exactly ``--latency-ms``
(no jitter, no per-token time). The experiment: the classification task, a plain baseline
and three BootstrapFewShot variants (2, 4 and 8 bootstrapped demos), ``--n-train`` train and
``--n-test`` test examples, temperature 1. Four runs, each a whole ``ExperimentRunner.run``
(split, optimization, evaluation of every arm, statistics):

- local / paid: in this process, every call new (a fresh cache folder);
- local / cached: the same spec again, every call answered by the response cache;
- ray / paid, new workers: on a local Ray (one task per arm), another seed so every call is
  new; includes starting the worker processes (each imports dspex);
- ray / cached: that spec again on Ray, answered by the cache's shared disk layer;
- ray / paid, warm workers: a third seed on the now running workers.

ideal (per arm, paid) = ceil(n_test / num_threads) * latency for evaluation, plus the
bootstrap rounds. Prints a table and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from typing import Any

# A fresh cache for this run, set before dspex (and Ray's workers) read DSPEX_HOME.
os.environ["DSPEX_HOME"] = tempfile.mkdtemp(prefix="dspex-bench-exp-")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from dspex.pipelines.experiments import (
    DatasetSpec,
    ExperimentResult,
    ExperimentRunner,
    ExperimentSpec,
    LMSpec,
    VariantSpec,
)

from dspex.sim import LatencySpec, ModelSpec, PriceSpec, SimConfig, SimProcess

MODEL = "sim-bench"


def sim_config(latency_ms: float) -> SimConfig:
    model = ModelSpec(
        name=MODEL,
        skill=0.5,
        latency=LatencySpec(base_ms=latency_ms, per_output_token_ms=0.0, jitter_ms=0.0),
        price=PriceSpec(input_per_1m_usd=1.0, output_per_1m_usd=4.0),
    )
    return SimConfig(models=[model])


def spec(sim: SimProcess, args: argparse.Namespace, seed: int) -> ExperimentSpec:
    variants = [
        VariantSpec(
            name=f"bootstrap-{k}",
            optimizer="BootstrapFewShot",
            optimizer_params={"max_bootstrapped_demos": k, "max_labeled_demos": k},
        )
        for k in (2, 4, 8)
    ]
    return ExperimentSpec(
        name=f"bench-{seed}",
        dataset=DatasetSpec(
            task="classification", n_train=args.n_train, n_test=args.n_test, seed=seed
        ),
        lm=LMSpec.from_sim(sim, MODEL, temperature=1.0),
        variants=variants,
        num_threads=args.threads,
        seed=seed,
        n_resamples=999,
    )


def measure(runner: ExperimentRunner, s: ExperimentSpec) -> tuple[float, ExperimentResult]:
    t0 = time.perf_counter()
    result = runner.run(s)
    return time.perf_counter() - t0, result


def row(name: str, wall_s: float, result: ExperimentResult) -> dict[str, Any]:
    arms = result.arms.values()
    calls = sum(a.lm_calls + a.optimization["lm_calls"] for a in arms)
    paid = sum(a.paid_calls + a.optimization["paid_calls"] for a in arms)
    return {
        "run": name,
        "wall_s": round(wall_s, 3),
        "lm_calls": calls,
        "paid_calls": paid,
        "cache_hits": calls - paid,
        "cost_usd": round(sum(a.cost_usd + a.optimization["cost_usd"] for a in arms), 6),
        "max_arm_optimize_s": round(max(a.optimize_s for a in arms), 3),
        "max_arm_evaluate_s": round(max(a.evaluate_s for a in arms), 3),
        "winner": result.winner,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--n-train", type=int, default=40)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--threads", type=int, default=16, help="examples in flight per arm")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray runs")
    args = parser.parse_args()

    rows: list[dict[str, Any]] = []
    ray_init_s: float | None = None
    with SimProcess(sim_config(args.latency_ms)) as sim:
        local = ExperimentRunner(backend="local")
        local_spec = spec(sim, args, seed=1)
        rows.append(row("local / paid", *measure(local, local_spec)))
        rows.append(row("local / cached", *measure(local, local_spec)))
        if not args.no_ray:
            import ray

            t0 = time.perf_counter()
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            ray_init_s = time.perf_counter() - t0
            try:
                on_ray = ExperimentRunner(backend="ray")
                ray_spec = spec(sim, args, seed=2)
                rows.append(row("ray / paid, new workers", *measure(on_ray, ray_spec)))
                rows.append(row("ray / cached", *measure(on_ray, ray_spec)))
                rows.append(
                    row("ray / paid, warm workers", *measure(on_ray, spec(sim, args, seed=3)))
                )
            finally:
                ray.shutdown()

    ideal_eval_s = math.ceil(args.n_test / args.threads) * args.latency_ms / 1000.0
    cols = [
        "run",
        "wall_s",
        "lm_calls",
        "paid_calls",
        "cache_hits",
        "cost_usd",
        "max_arm_optimize_s",
        "max_arm_evaluate_s",
    ]
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
    print(
        f"4 arms (baseline + 3 BootstrapFewShot), {args.n_train} train / {args.n_test} test, "
        f"sim at {args.latency_ms:.0f} ms, {args.threads} examples in flight per arm"
    )
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths, strict=True)))
    print(
        f"ideal evaluation per arm (paid): {ideal_eval_s:.2f} s; ray.init: "
        f"{'n/a' if ray_init_s is None else f'{ray_init_s:.2f} s'} (not in the runs' wall time)"
    )
    summary = {
        "benchmark": "experiments",
        "n_test": args.n_test,
        "n_train": args.n_train,
        "latency_ms": args.latency_ms,
        "arms": 4,
        "ideal_eval_per_arm_s": ideal_eval_s,
        "ray_init_s": None if ray_init_s is None else round(ray_init_s, 3),
        **{
            f"{r['run'].replace(' / ', '_').replace(', ', '_').replace(' ', '_')}_s": r["wall_s"]
            for r in rows
        },
        "runs": rows,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
