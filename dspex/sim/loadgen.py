"""A load generator for the simulator: how many requests per second it sustains.

``python -m dspex.sim bench --n 5000 --concurrency 256 --latency-ms 100`` starts the server
in a subprocess (so client and server do not share a GIL), sends ``n`` DSPy-format chat
requests over distinct task examples with a raw aiohttp client at the given concurrency, and
prints a JSON line: elapsed_s, rps, ideal_s (n / concurrency * latency), p50/p99 latency.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from dspex.sim.config import LatencySpec, ModelSpec, SimConfig
from dspex.sim.tasks import load_task

__all__ = ["bench_config", "chat_request", "run_load"]


def bench_config(latency_ms: float) -> SimConfig:
    """One model with a fixed latency (no jitter, no per-token time) and no faults."""
    return SimConfig(
        models=[ModelSpec(name="sim-bench", skill=0.6, latency=LatencySpec(base_ms=latency_ms))]
    )


def chat_request(question: str, model: str = "sim-bench") -> dict[str, Any]:
    """A chat-adapter request body for ``question -> answer`` (the shape DSPy sends)."""
    system = (
        "Your input fields are:\n1. `question` (str): \nYour output fields are:\n1. `answer` (str): \n"
        "All interactions will be structured in the following way, with the appropriate values filled in.\n\n"
        "[[ ## question ## ]]\n{question}\n\n[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]\n"
        "In adhering to this structure, your objective is: \n        Given the fields `question`, produce the fields `answer`."
    )
    user = (
        f"[[ ## question ## ]]\n{question}\n\nRespond with the corresponding output fields, starting with the field "
        "`[[ ## answer ## ]]`, and then ending with the marker for `[[ ## completed ## ]]`."
    )
    return {
        "model": model,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
    }


async def run_load(
    base_url: str, n: int, concurrency: int, model: str = "sim-bench"
) -> dict[str, Any]:
    import aiohttp

    bodies = [
        json.dumps(chat_request(str(ex.question), model)).encode()
        for ex in load_task("arithmetic", n, split="bench")
    ]
    url = base_url.rstrip("/") + "/v1/chat/completions"
    latencies: list[float] = []
    errors = 0
    queue = iter(bodies)
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal errors
            for body in queue:
                t0 = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "n": n,
        "concurrency": concurrency,
        "elapsed_s": round(elapsed, 3),
        "rps": round(n / elapsed, 1),
        "errors": errors,
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 1) if latencies else None,
        "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99) - 1], 1) if latencies else None,
    }
