"""Evaluate throughput: dspex against a raw aiohttp client (the floor) on the simulated server.

    python benchmarks/evaluate_throughput.py --n 1000 --concurrency 64 --latency-ms 100

Starts the simulator out of process (``dspex.sim.SimProcess``) with one model whose latency is
exactly ``--latency-ms`` (no jitter, no per-token time, no faults, no prompt cache, so both
clients make the server do the same work). Then, in one run:

- floor: a raw ``aiohttp`` client sends the very request bodies dspex would send (built with
  dspex's ChatAdapter) at the same concurrency: what any Python client must at least spend;
- dspex: ``dspex.Evaluate(num_threads=C)`` runs ``Predict("question -> answer")`` over N
  distinct examples with a plain sync metric, through ``dspex.LM`` (cache off: every example is
  a real HTTP call). ``--mode lm`` runs bare ``lm.acall`` at the same concurrency instead.

ideal = ceil(N / C) * latency. Prints a table and ends with one JSON line:
``{"dspex_s": ..., "floor_s": ..., "ratio": ..., "ideal_s": ...}``. With ``--repeats R`` each
side runs R times, alternating, and the best time of each counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import time
from typing import Any

import aiohttp

import dspex
from dspex.adapters.chat_adapter import ChatAdapter
from dspex.clients import LM, PoolLimits
from dspex.clients.transport import default_pool
from dspex.sim import LatencySpec, ModelSpec, PriceSpec, SimConfig, SimProcess
from dspex.utils.asyncio_bridge import run_sync

MODEL = "bench"


def sim_config(latency_ms: float) -> SimConfig:
    model = ModelSpec(
        name=MODEL,
        skill=0.5,
        latency=LatencySpec(base_ms=latency_ms, per_output_token_ms=0.0, jitter_ms=0.0),
        price=PriceSpec(input_per_1m_usd=0.15, output_per_1m_usd=0.60),
    )
    return SimConfig(models=[model], prompt_cache_size=0)


def devset(n: int, offset: int = 0) -> list[dspex.Example]:
    return [
        dspex.Example(question=f"Question {offset + i}: what is {i} plus {i + 1}?", answer=str(2 * i + 1)).with_inputs("question")
        for i in range(n)
    ]


def metric(example: dspex.Example, prediction: Any, trace: Any = None) -> bool:
    return bool(getattr(prediction, "answer", None) == example.answer)


async def async_metric(example: dspex.Example, prediction: Any, trace: Any = None) -> bool:
    return metric(example, prediction, trace)


async def floor_run(url: str, bodies: list[bytes], concurrency: int) -> tuple[float, int]:
    """Raw aiohttp: one session, a connection limit of C, C workers pulling from a queue."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    ok = 0
    async with aiohttp.ClientSession(connector=connector) as session:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        for b in bodies:
            queue.put_nowait(b)

        async def worker() -> None:
            nonlocal ok
            while True:
                try:
                    body = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                async with session.post(url, data=body, headers={"content-type": "application/json"}) as resp:
                    data = json.loads(await resp.read())
                    ok += resp.status == 200 and bool(data["choices"][0]["message"]["content"])

        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        return time.perf_counter() - t0, ok


def dspex_evaluate_run(
    lm: LM, examples: list[dspex.Example], concurrency: int, metric_kind: str = "sync"
) -> tuple[float, int, float]:
    program = dspex.Predict("question -> answer")
    program.lm = lm
    fn = metric if metric_kind == "sync" else async_metric
    evaluate = dspex.Evaluate(devset=examples, metric=fn, num_threads=concurrency, max_errors=len(examples))
    t0 = time.perf_counter()
    result = evaluate(program)
    elapsed = time.perf_counter() - t0
    failed = sum(1 for _, pred, _ in result.results if not hasattr(pred, "answer"))
    return elapsed, len(examples) - failed, float(result.score)


async def _lm_run(lm: LM, messages: list[list[dict[str, Any]]], concurrency: int) -> tuple[float, int]:
    sem = asyncio.Semaphore(concurrency)
    ok = 0

    async def one(m: list[dict[str, Any]]) -> None:
        nonlocal ok
        async with sem:
            out = await lm.acall(messages=m)
            ok += bool(out and out[0])

    t0 = time.perf_counter()
    await asyncio.gather(*[one(m) for m in messages])
    return time.perf_counter() - t0, ok


def dspex_lm_run(lm: LM, messages: list[list[dict[str, Any]]], concurrency: int) -> tuple[float, int, float]:
    elapsed, ok = run_sync(_lm_run(lm, messages, concurrency))
    return elapsed, ok, float("nan")


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--latency-ms", type=float, default=100.0)
    ap.add_argument("--mode", choices=["evaluate", "lm"], default="evaluate")
    ap.add_argument("--transport", choices=["aiohttp", "httpx"], default="aiohttp",
                    help="dspex's HTTP transport: httpx over aiohttp (default) or httpx's own pool")
    ap.add_argument("--metric", choices=["sync", "async"], default="sync",
                    help="the Evaluate metric: a plain function (as DSPy users write) or a coroutine")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json-out", default=None, help="also write the result as JSON to this file")
    args = ap.parse_args(argv)
    if args.n < 1 or args.concurrency < 1 or args.latency_ms < 0 or args.repeats < 1:
        ap.error("--n, --concurrency and --repeats must be positive and --latency-ms non-negative")

    n, c, lat = args.n, args.concurrency, args.latency_ms
    ideal_s = math.ceil(n / c) * lat / 1000.0
    adapter = ChatAdapter()
    signature = dspex.Predict("question -> answer").signature
    with SimProcess(sim_config(lat)) as sim:
        url = sim.openai_base_url + "/chat/completions"
        lm = LM(f"openai/{MODEL}", api_base=sim.openai_base_url, cache=False, num_retries=0,
                transport=args.transport, pool_limits=PoolLimits(max_connections=max(c, 16), max_keepalive_connections=max(c, 16)))
        examples = devset(n)
        messages = [adapter.format(signature, [], ex.inputs().toDict()) for ex in examples]
        bodies = [json.dumps({"model": MODEL, "messages": m}).encode() for m in messages]

        # Warm both sides up (connections, imports, the server's first requests), off the clock.
        warm = devset(min(n, 2 * c), offset=10**6)
        asyncio.run(floor_run(url, [json.dumps({"model": MODEL, "messages": adapter.format(signature, [], e.inputs().toDict())}).encode() for e in warm], c))
        if args.mode == "evaluate":
            dspex_evaluate_run(lm, warm, c, args.metric)
        else:
            dspex_lm_run(lm, [adapter.format(signature, [], e.inputs().toDict()) for e in warm], c)
        sim.reset()

        floors: list[float] = []
        dspexs: list[float] = []
        ok_floor = ok_dspex = 0
        score = float("nan")
        for _ in range(args.repeats):
            f_s, ok_floor = asyncio.run(floor_run(url, bodies, c))
            floors.append(f_s)
            if args.mode == "evaluate":
                d_s, ok_dspex, score = dspex_evaluate_run(lm, examples, c, args.metric)
            else:
                d_s, ok_dspex, score = dspex_lm_run(lm, messages, c)
            dspexs.append(d_s)
        stats = sim.model_stats(MODEL)
        run_sync(default_pool.aclose())

    floor_s, dspex_s = min(floors), min(dspexs)
    result = {
        "dspex_s": round(dspex_s, 4),
        "floor_s": round(floor_s, 4),
        "ratio": round(dspex_s / floor_s, 4),
        "ideal_s": round(ideal_s, 4),
    }
    rows = [
        ("N / concurrency / latency", f"{n} / {c} / {lat:g} ms"),
        ("dspex mode", (f"Evaluate(Predict), {args.metric} metric" if args.mode == "evaluate" else "lm.acall")
         + f", transport {args.transport}"),
        ("ideal (ceil(N/C) x latency)", f"{ideal_s:.3f} s"),
        ("floor: raw aiohttp", f"{floor_s:.3f} s  ({ok_floor}/{n} ok)" + (f"  runs {', '.join(f'{x:.3f}' for x in floors)}" if args.repeats > 1 else "")),
        ("dspex", f"{dspex_s:.3f} s  ({ok_dspex}/{n} ok)" + (f"  runs {', '.join(f'{x:.3f}' for x in dspexs)}" if args.repeats > 1 else "")),
        ("ratio dspex / floor", f"{dspex_s / floor_s:.3f}"),
        ("ratio floor / ideal", f"{floor_s / ideal_s:.3f}" if ideal_s else "-"),
        ("server requests / max in flight", f"{stats['requests']} / {stats['max_in_flight']}"),
    ]
    if args.mode == "evaluate":
        # The simulator answers an arbitrary prompt with type-correct filler, so the score is
        # not the point here; it shows every example ran through the metric.
        rows.append(("Evaluate score (filler answers)", f"{score:.1f}%"))
    width = max(len(k) for k, _ in rows)
    print("\nevaluate_throughput")
    for k, v in rows:
        print(f"  {k.ljust(width)}  {v}")
    if args.repeats > 1:
        print(f"  {'median dspex / floor'.ljust(width)}  {statistics.median(dspexs) / statistics.median(floors):.3f}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({**result, "n": n, "concurrency": c, "latency_ms": lat, "mode": args.mode,
                       "metric": args.metric, "transport": args.transport}, f)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
