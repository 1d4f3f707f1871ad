"""What the actor layer costs and what it sustains, on one local Ray.

1. Per-call overhead of the actor path against the in-process path, same program (a
   ``Predict`` over ``DummyLM``), calls one after another: in-process ``program.acall``;
   a direct ``predictor.execute.remote``; and a ``ProgramClient`` call (routing included).
2. Throughput against the simulator (a child process, one model answering after a fixed
   100 ms) at concurrency 64: the in-process ``Evaluate`` floor (a local ``dspex.LM``); raw
   LM calls through a local client and through the ``ProviderClient`` actor (its hop alone);
   then 1, 2 and 4 predictors behind a ``ProgramClient``, all sharing one ``ProviderClient``
   through ``RemoteLM``. The ideal is 64 / 0.1 s = 640 calls/s; on a 2-core machine the
   simulator, the driver and the actors share the CPUs, so the floor is below it.
3. Swap latency: milliseconds from the ``deploy`` call to the routing table at 100 % on an
   immediate swap, measured by the supervisor (``swap_ms``) and as seen by a caller's
   routing watcher; warm (a drained predictor is re-loaded) and cold (new Ray workers).

    python benchmarks/actors.py [--calls 300] [--requests 1500] [--swaps 20]

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray
import ray.cloudpickle
from dspex.actors import ProgramClient, RemoteLM, VersionSpec, get_supervisor, start_predictor
from dspex.cluster import init

import dspex
from dspex.sim import SimProcess
from dspex.sim.loadgen import bench_config
from dspex.utils.dummies import DummyLM

CONCURRENCY = 64
LATENCY_MS = 100.0


class QA(dspex.Module):
    def __init__(self) -> None:
        super().__init__()
        self.answer = dspex.Predict("question -> answer")

    async def aforward(self, question: str) -> Any:
        return await self.answer.acall(question=question)


ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


async def sequential_us(call: Any, n: int) -> float:
    for _ in range(min(50, n)):
        await call()
    t0 = time.perf_counter()
    for _ in range(n):
        await call()
    return (time.perf_counter() - t0) / n * 1e6


async def overhead(calls: int) -> dict[str, float]:
    lm = DummyLM([{"answer": "Paris"}]).cycle()
    program = QA()
    inputs = {"question": "What is the capital of France?"}
    with dspex.context(lm=lm):
        local_us = await sequential_us(lambda: program.acall(**inputs), calls)
    spec = VersionSpec("bench-overhead", 1, factory=QA, lm=lm)
    predictor = start_predictor("bench.overhead", spec)
    await predictor.ready.remote()
    direct_us = await sequential_us(lambda: predictor.execute.remote(inputs), calls)
    sup = get_supervisor("bench-overhead", replicas=1, monitor_s=0)
    await sup.deploy.remote(spec)
    client = ProgramClient("bench-overhead")
    routed_us = await sequential_us(lambda: client.acall(**inputs), calls)
    client.close()
    await sup.shutdown.remote()
    ray.kill(sup)
    ray.kill(predictor)
    return {
        "in_process_us": local_us,
        "actor_direct_us": direct_us,
        "actor_routed_us": routed_us,
        "actor_overhead_us": routed_us - local_us,
    }


async def run_concurrent(call: Any, n: int, concurrency: int) -> tuple[float, int]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    errors = 0

    async def worker() -> None:
        nonlocal errors
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                await call(i)
            except Exception:
                errors += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - t0), errors


def evaluate_floor(base_url: str, requests: int) -> float:
    lm = dspex.LM("openai/sim-bench", api_base=base_url, cache=False, num_retries=0)
    devset = [dspex.Example(question=f"floor question {i}?").with_inputs("question") for i in range(requests)]
    evaluate = dspex.Evaluate(devset=devset, metric=lambda ex, pred, trace=None: 1.0, num_threads=CONCURRENCY)
    with dspex.context(lm=lm):
        evaluate(QA())  # warm the connection pool
        t0 = time.perf_counter()
        evaluate(QA())
    return requests / (time.perf_counter() - t0)


async def throughput(base_url: str, requests: int) -> dict[str, Any]:
    out: dict[str, Any] = {"evaluate_floor_rps": await asyncio.to_thread(evaluate_floor, base_url, requests)}
    # the ProviderClient hop alone: raw LM calls from this process, local client vs the actor
    local = dspex.LM("openai/sim-bench", api_base=base_url, cache=False, num_retries=0)
    lm = RemoteLM("openai/sim-bench", api_base=base_url, cache=False, num_retries=0)
    for label, client_lm in (("lm_local_rps", local), ("lm_remote_rps", lm)):
        await run_concurrent(lambda i, c=client_lm: c.acall(f"warm {i}"), CONCURRENCY * 2, CONCURRENCY)
        rps, _ = await run_concurrent(lambda i, c=client_lm: c.acall(f"hop question {i}?"), requests, CONCURRENCY)
        out[label] = rps
    for n in (1, 2, 4):
        name = f"bench-tp-{n}"
        sup = get_supervisor(name, replicas=n, monitor_s=0)
        await sup.deploy.remote(VersionSpec(name, 1, factory=QA, lm=lm, max_in_flight=CONCURRENCY))
        client = ProgramClient(name)
        await run_concurrent(lambda i, c=client: c.acall(question=f"warm {i}"), CONCURRENCY * 2, CONCURRENCY)
        rps, errors = await run_concurrent(
            lambda i, c=client, n=n: c.acall(question=f"{n} predictors, question {i}?"), requests, CONCURRENCY
        )
        out[f"predictors_{n}_rps"] = rps
        out[f"predictors_{n}_errors"] = errors
        client.close()
        await sup.shutdown.remote()
        ray.kill(sup)
    state = await lm.state()
    out["provider_client_peak_in_flight"] = state["peak_in_flight"]
    ray.kill(lm.handle())
    return out


async def swap_latency(swaps: int) -> dict[str, Any]:
    name = "bench-swap"
    lm = DummyLM([{"answer": "x"}]).cycle()
    sup = get_supervisor(name, replicas=1, monitor_s=0)
    t0 = time.perf_counter()
    await sup.deploy.remote(VersionSpec(name, 0, factory=QA, lm=lm))
    first_ms = (time.perf_counter() - t0) * 1000
    client = ProgramClient(name)
    await client.acall(question="start the routing watcher")
    t0 = time.perf_counter()
    status = await sup.deploy.remote(VersionSpec(name, 1, factory=QA, lm=lm))
    cold_ms = status["last_swap"]["swap_ms"]
    cold_call_ms = (time.perf_counter() - t0) * 1000
    supervisor_ms: list[float] = []
    seen_ms: list[float] = []
    for v in range(2, swaps + 2):
        t0 = time.perf_counter()
        ref = sup.deploy.remote(VersionSpec(name, v, factory=QA, lm=lm))
        while client.table is None or client.table.weights.get(v) != 100.0:
            await asyncio.sleep(0.0005)
        seen_ms.append((time.perf_counter() - t0) * 1000)
        status = await ref
        supervisor_ms.append(status["last_swap"]["swap_ms"])
    client.close()
    await sup.shutdown.remote()
    ray.kill(sup)
    return {
        "first_deploy_ms": first_ms,
        "cold_swap_ms": cold_ms,
        "cold_deploy_call_ms": cold_call_ms,
        "warm_swap_ms_p50": statistics.median(supervisor_ms),
        "warm_swap_ms_p95": pct(supervisor_ms, 0.95),
        "warm_swap_seen_by_caller_ms_p50": statistics.median(seen_ms),
        "warm_swap_seen_by_caller_ms_p95": pct(seen_ms, 0.95),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}
    result.update(await overhead(args.calls))
    with SimProcess(bench_config(LATENCY_MS)) as sim:
        result.update(await throughput(sim.openai_base_url, args.requests))
    result.update(await swap_latency(args.swaps))
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--requests", type=int, default=1500)
    ap.add_argument("--swaps", type=int, default=20)
    args = ap.parse_args()
    init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    r = asyncio.run(main_async(args))
    ideal = CONCURRENCY / (LATENCY_MS / 1000)
    print(f"{'measure':<52}{'value':>12}")
    rows = [
        ("in-process call (DummyLM), us", r["in_process_us"]),
        ("predictor.execute.remote, us", r["actor_direct_us"]),
        ("ProgramClient call (routed), us", r["actor_routed_us"]),
        ("actor overhead per call, us", r["actor_overhead_us"]),
        (f"ideal at concurrency {CONCURRENCY}, {LATENCY_MS:g} ms, calls/s", ideal),
        ("in-process Evaluate floor, calls/s", r["evaluate_floor_rps"]),
        ("raw LM calls, local client, calls/s", r["lm_local_rps"]),
        ("raw LM calls through the ProviderClient, calls/s", r["lm_remote_rps"]),
        ("1 predictor, calls/s", r["predictors_1_rps"]),
        ("2 predictors, calls/s", r["predictors_2_rps"]),
        ("4 predictors, calls/s", r["predictors_4_rps"]),
        ("ProviderClient peak in-flight calls", r["provider_client_peak_in_flight"]),
        ("first deploy (new workers), ms", r["first_deploy_ms"]),
        ("cold swap (new workers), ms to 100 %", r["cold_swap_ms"]),
        ("warm swap p50, ms to 100 % (supervisor)", r["warm_swap_ms_p50"]),
        ("warm swap p95, ms to 100 % (supervisor)", r["warm_swap_ms_p95"]),
        ("warm swap p50, ms until a caller routes to it", r["warm_swap_seen_by_caller_ms_p50"]),
        ("warm swap p95, ms until a caller routes to it", r["warm_swap_seen_by_caller_ms_p95"]),
    ]
    for name, value in rows:
        print(f"{name:<52}{value:>12.1f}")
    errors = sum(r[f"predictors_{n}_errors"] for n in (1, 2, 4))
    print(f"errors during the throughput runs: {errors}")
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}))


if __name__ == "__main__":
    main()
