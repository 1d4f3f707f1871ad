"""Serving a program on Ray Serve: what dspex adds over Serve, and how fast a weight change lands.

    python benchmarks/serve.py                          # defaults below
    python benchmarks/serve.py --concurrency 16 64 --latency-ms 100

Against the simulator (out of process, one model answering after exactly ``--latency-ms``),
at each concurrency C, requests/s and p50 / p99 latency of:

- ``raw``: an aiohttp client calling the simulator directly (the floor);
- ``bare/http``, ``bare/handle``: a bare Serve deployment (``max_ongoing_requests`` as ours)
  making the same raw HTTP call, through Serve's HTTP proxy and through a DeploymentHandle:
  Serve's own cost;
- ``dspex/http``, ``dspex/handle``: a dspex program (``Predict("question -> answer")`` on
  ``dspex.LM``) served by ``dspex.cluster.serve`` (ingress + version deployment, Predictor in
  the replica), through the proxy (``POST /v1/programs/bench/predict``) and through a handle
  to the ingress (``apredict``).

Then the time from a weight change (``supervisor.set_weights``, 100 % v1 -> 100 % v2) until
every request that starts is served by v2, probed every 5 ms (median of ``--swaps``).

Goals (issue 9): dspex >= 0.9 x bare on each path; a weight change served within 0.5 s.
Prints a table, then one JSON line. Needs the machine to itself (2 cores: the load generator,
the proxy, the replicas and the simulator share them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import aiohttp

MODEL = "bench-model"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def measure(call: Callable[[int], Awaitable[Any]], concurrency: int, n: int) -> dict[str, float]:
    """``n`` calls with ``concurrency`` in flight (closed loop); req/s, p50/p99 ms, failures."""
    latencies: list[float] = []
    failures = 0
    next_i = 0

    async def worker() -> None:
        nonlocal next_i, failures
        while next_i < n:
            i = next_i
            next_i += 1
            t0 = time.perf_counter()
            try:
                await call(i)
                latencies.append((time.perf_counter() - t0) * 1000.0)
            except Exception:
                failures += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": _pct(latencies, 0.5),
        "p99_ms": _pct(latencies, 0.99),
        "failures": failures,
        "n": n,
    }


def chat_body(i: int) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": f"question {i}"}], "max_tokens": 16}


class BareLM:
    """The bare Serve deployment: one raw chat-completions call per request."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session: aiohttp.ClientSession | None = None

    async def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        return self.session

    async def call(self, i: int) -> str:
        session = await self._session()
        async with session.post(self.url, json=chat_body(i)) as r:
            r.raise_for_status()
            body = await r.json()
            return str(body["choices"][0]["message"]["content"])

    async def __call__(self, request: Any) -> str:
        payload = await request.json()
        return await self.call(int(payload.get("i", 0)))


def bench_program() -> Any:
    import dspex

    return dspex.Predict("question -> answer")


async def weight_swap_s(supervisor: Any, handle: Any, to_version: int, other: int) -> float:
    """Seconds from ``set_weights`` until every request starting is served by ``to_version``."""
    probes: list[tuple[float, Any]] = []
    stop = asyncio.Event()

    async def probe(i: int) -> None:
        t = time.perf_counter()
        r = await handle.apredict.remote({"question": f"swap {i}"})
        probes.append((t, r["version"]))

    async def prober() -> None:
        tasks = []
        i = 0
        while not stop.is_set():
            tasks.append(asyncio.create_task(probe(i)))
            i += 1
            await asyncio.sleep(0.005)
        await asyncio.gather(*tasks)

    runner = asyncio.create_task(prober())
    await asyncio.sleep(0.3)
    t0 = time.perf_counter()
    await supervisor.set_weights.remote({to_version: 100.0, other: 0.0})
    await asyncio.sleep(1.5)
    stop.set()
    await runner
    after = sorted((t, v) for t, v in probes if t >= t0)
    last_old = max((t for t, v in after if v != to_version), default=t0)
    return last_old - t0


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import ray
    from dspex.actors import VersionSpec
    from dspex.cluster.serve import ServeOptions, deploy_program, program_supervisor
    from ray import serve

    from dspex.clients.lm import LM
    from dspex.sim import SimConfig, SimProcess
    from dspex.sim.config import LatencySpec, ModelSpec

    config = SimConfig(models=[ModelSpec(name=MODEL, skill=0.5, latency=LatencySpec(base_ms=args.latency_ms))])
    sim = SimProcess(config).start()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    base = f"http://127.0.0.1:{port}"
    chat_url = f"{sim.openai_base_url}/chat/completions"
    options = ServeOptions(route_prefix="/dspex", max_ongoing_requests=args.max_ongoing, max_queued_requests=-1)

    bare_dep = serve.deployment(BareLM).options(
        name="bare", max_ongoing_requests=args.max_ongoing, ray_actor_options={"num_cpus": 0}
    )
    bare = serve.run(bare_dep.bind(chat_url), name="bare", route_prefix="/bare")

    def spec(version: int) -> VersionSpec:
        lm = LM(f"openai/{MODEL}", api_base=sim.openai_base_url, api_key="sim", cache=False, num_retries=0)
        return VersionSpec("bench", version, factory=bench_program, lm=lm, max_in_flight=args.max_ongoing * 4)

    dspex_handle = deploy_program(spec(1), options=options, tick_s=0.5)
    supervisor = program_supervisor("bench")
    await supervisor.prepare.remote(spec(2))

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=120))

    async def raw(i: int) -> None:
        async with session.post(chat_url, json=chat_body(i)) as r:
            r.raise_for_status()
            await r.read()

    async def bare_http(i: int) -> None:
        async with session.post(f"{base}/bare", json={"i": i}) as r:
            r.raise_for_status()
            await r.read()

    async def bare_handle(i: int) -> None:
        await bare.call.remote(i)

    async def dspex_http(i: int) -> None:
        async with session.post(f"{base}/dspex/v1/programs/bench/predict", json={"inputs": {"question": f"q{i}"}}) as r:
            r.raise_for_status()
            await r.read()

    async def dspex_h(i: int) -> None:
        await dspex_handle.apredict.remote({"question": f"q{i}"})

    targets = {"raw": raw, "bare/http": bare_http, "bare/handle": bare_handle, "dspex/http": dspex_http, "dspex/handle": dspex_h}
    for fn in targets.values():  # warm connections, replicas and the signature cache
        await measure(fn, 16, 64)

    rows: list[dict[str, Any]] = []
    for c in args.concurrency:
        n = max(args.min_requests, c * args.rounds)
        for name, fn in targets.items():
            r = await measure(fn, c, n)
            rows.append({"target": name, "concurrency": c, **r})
            print(f"  {name:13s} c={c:<4d} {r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  fail {r['failures']}", flush=True)

    swaps = []
    current, other = 1, 2
    for _ in range(args.swaps):
        swaps.append(await weight_swap_s(supervisor, dspex_handle, other, current))
        current, other = other, current

    await session.close()
    serve.shutdown()
    ray.shutdown()
    sim.stop()
    return {"rows": rows, "weight_change_s": swaps}


def report(result: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    rows = result["rows"]
    by = {(r["target"], r["concurrency"]): r for r in rows}
    print()
    print(f"{'concurrency':>11} | {'raw':>8} | {'bare/http':>9} | {'dspex/http':>10} | {'ratio':>5} | {'bare/handle':>11} | {'dspex/handle':>12} | {'ratio':>5}   (req/s)")
    ratios: dict[str, float] = {}
    for c in args.concurrency:
        bh, dh = by[("bare/http", c)]["rps"], by[("dspex/http", c)]["rps"]
        bd, dd = by[("bare/handle", c)]["rps"], by[("dspex/handle", c)]["rps"]
        ratios[f"http_c{c}"] = dh / bh
        ratios[f"handle_c{c}"] = dd / bd
        print(f"{c:>11} | {by[('raw', c)]['rps']:8.1f} | {bh:9.1f} | {dh:10.1f} | {dh / bh:5.2f} | {bd:11.1f} | {dd:12.1f} | {dd / bd:5.2f}")
    swap = statistics.median(result["weight_change_s"])
    print(f"\nweight change served after: {', '.join(f'{s * 1000:.0f} ms' for s in result['weight_change_s'])} (median {swap * 1000:.0f} ms)")
    goals = {
        "dspex_vs_bare_ge_0.9": all(v >= 0.9 for v in ratios.values()),
        "weight_change_le_0.5s": swap <= 0.5,
    }
    print(f"goals: {goals}")
    return {
        "benchmark": "serve",
        "latency_ms": args.latency_ms,
        "max_ongoing_requests": args.max_ongoing,
        "rows": rows,
        "ratios": ratios,
        "weight_change_s": result["weight_change_s"],
        "weight_change_median_s": swap,
        "goals": goals,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--max-ongoing", type=int, default=256)
    parser.add_argument("--min-requests", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=8, help="requests per concurrency slot")
    parser.add_argument("--swaps", type=int, default=3)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(report(result, args)))


if __name__ == "__main__":
    main()
