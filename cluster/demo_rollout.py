"""Step 6 of the demo: a canary rollout of the optimized version on Ray Serve.

The champion (v1) is served through an ingress on Ray Serve; generated user traffic flows
through the HTTP proxy; the live rollout controller moves traffic to the challenger in steps
(20 -> 50 -> 100 %) while an error-rate gate reads each version's measured calls, and promotes
it. Its state is persisted in the store at every tick.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from typing import Any

from rich.console import Console

console = Console()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_canary(ctx: Any) -> str:
    return asyncio.run(_canary(ctx))


async def _canary(ctx: Any) -> str:
    import httpx
    from ray import serve

    from dspex.cluster.serve import ServeOptions, delete_program, deploy_program, program_supervisor
    from dspex.pipelines.rollouts import RolloutSpec, error_rate
    from dspex.pipelines.rollouts.controller import RolloutController
    from dspex.pipelines.rollouts.persistence import StorePersistence
    from dspex.pipelines.rollouts.registry import RegistrySpecs

    program = ctx.state["program_name"]
    registry = ctx.state["program_registry"]
    champion, challenger = ctx.state["versions"]
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    specs = RegistrySpecs(registry, program, lm=lambda _version: ctx.lm("medium"))
    deploy_program(specs(champion), options=ServeOptions(route_prefix=f"/{program}", max_replicas=1), tick_s=0.2)
    supervisor = program_supervisor(program)
    url = f"http://127.0.0.1:{port}/{program}"
    console.print(f"  serving {program} v{champion} at {url}/v1/programs/{program}/predict")

    questions = [ex.question for ex in ctx.state["traffic"]]
    results: list[tuple[int, str | None]] = []
    stop = asyncio.Event()

    async def user(client: httpx.AsyncClient, w: int) -> None:
        i = w
        while not stop.is_set():
            q = questions[i % len(questions)]
            i += 7
            try:
                r = await client.post(f"/v1/programs/{program}/predict", json={"inputs": {"question": q}})
                results.append((r.status_code, r.headers.get("X-Dspex-Version")))
            except httpx.HTTPError:
                results.append((0, None))
            await asyncio.sleep(0.05)

    spec = RolloutSpec(
        strategy="canary",
        interval_s=2.0,
        step_weights=(20, 50, 100),
        threshold=2,
        gates=(error_rate(0.05, min_executions=10),),
        progress_deadline_s=120.0,
        allow_short_interval=True,
    )
    controller = RolloutController(
        program,
        supervisor,
        persistence=StorePersistence(ctx.state["store"]),
        registry=registry,
        specs=specs,
        tick_s=0.2,
    )
    t0 = time.perf_counter()
    weights_seen: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        users = [asyncio.create_task(user(client, w)) for w in range(6)]
        try:
            await controller.submit(challenger, spec)
            controller.start()
            deadline = time.monotonic() + 150
            while time.monotonic() < deadline:
                state = controller.state()
                if state is not None:
                    if not weights_seen or weights_seen[-1] != state.weight:
                        weights_seen.append(state.weight)
                        console.print(f"  rollout: {state.phase.value}, v{challenger} at {state.weight:.0f}% of traffic")
                else:
                    latest = controller.latest()
                    if latest is not None:
                        break
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await asyncio.gather(*users, return_exceptions=True)
            await controller.stop()
    latest = controller.latest()
    phase = latest.state.phase.value if latest is not None else "unknown"
    took = time.perf_counter() - t0
    by_version = Counter(v for s, v in results if s == 200)
    failed = sum(1 for s, _ in results if s != 200)
    aliases = registry.aliases(program)
    delete_program(program)
    serve.shutdown()
    ctx.state["rollout_phase"] = phase
    return (
        f"v{challenger} {phase} in {took:.0f}s through steps "
        f"{'/'.join(f'{w:.0f}' for w in weights_seen if w)}%; {len(results)} user requests, {failed} failed; "
        f"served by version {dict(by_version)}; champion is now v{aliases.get('champion')}"
    )
