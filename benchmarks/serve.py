"""Serving a program on Ray Serve: what dspex adds over Serve, and how fast a weight change lands.

    python benchmarks/serve.py                          # defaults below
    python benchmarks/serve.py --concurrency 16 64 --latency-ms 100 --repeat 3

Against the simulator (out of process, one model answering after exactly ``--latency-ms``),
at each concurrency C, requests/s and p50 / p99 latency of:

- ``raw``: an aiohttp client calling the simulator directly (the floor);
- ``bare/http``, ``bare/handle``: a bare Serve deployment (``max_ongoing_requests`` as ours,
  Serve's defaults otherwise) making the same raw HTTP call, through Serve's HTTP proxy and
  through a DeploymentHandle: Serve's own cost;

``raw`` and ``bare`` send the very body the dspex program sends (recorded from the program:
its system and user messages), so the simulator does the same work for every target;
- ``dspex/http``, ``dspex/handle``: a dspex program (``Predict("question -> answer")`` on
  ``dspex.LM``) served by ``dspex.cluster.serve`` with its defaults (versions colocated in
  the ingress replicas: one Serve hop), through the proxy (``POST
  /v1/programs/bench/predict``) and through a handle to the ingress (``apredict``);
- ``split/http``, ``split/handle``: the same program in the split topology
  (``ServeOptions(colocate_versions=False)``: ingress + one deployment per version, two hops);
- with ``--bare-tuned``, ``bare-tp/*``: the bare deployment with the same replica settings as
  dspex's (``THROUGHPUT_ENV``), to separate what those settings buy from what dspex costs;
- with ``--plain-profile``, ``plain/*``: the dspex app without those settings.

Every app runs one replica per deployment (``--max-replicas``, like the bare deployment), so
the ratios compare like with like. At each concurrency every target first runs once untimed
(connections, heaps), then the targets run interleaved, ``--repeat`` times (every other round
in reverse order); the table shows the median run and the median of per-round ratios. Per
request it also records the CPU seconds each process spent (``/proc``). ``--targets`` runs a
subset (glob patterns) for profiling. On 2 cores consecutive identical rounds vary by up to
±20 % (bare/handle at c=256: 351-542 req/s in ten rounds), so use ``--repeat 5`` or more.

Then the time from a weight change (``supervisor.set_weights``, 100 % v1 -> 100 % v2) until
every request that starts is served by v2, probed every 5 ms (median of ``--swaps``), for
both topologies.

Goals (issue 9): dspex >= 0.9 x bare on each path; a weight change served within 0.5 s.
Prints a table, then one JSON line. Needs the machine to itself (2 cores: the load generator,
the proxy, the replicas and the simulator share them); the load average is printed with
every row.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import aiohttp

MODEL = "bench-model"
APPS = {"dspex": "bench", "split": "bench_split"}  # target prefix -> program (= Serve app)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def measure(call: Callable[[int], Awaitable[Any]], concurrency: int, n: int) -> dict[str, Any]:
    """``n`` calls with ``concurrency`` in flight (closed loop); req/s, p50/p99 ms, failures."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    next_i = 0

    async def worker() -> None:
        nonlocal next_i
        while next_i < n:
            i = next_i
            next_i += 1
            t0 = time.perf_counter()
            try:
                await call(i)
                latencies.append((time.perf_counter() - t0) * 1000.0)
            except Exception as exc:
                errors[type(exc).__name__] += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": _pct(latencies, 0.5),
        "p99_ms": _pct(latencies, 0.99),
        "failures": sum(errors.values()),
        "errors": dict(errors),
        "n": n,
    }


_QUESTION = "@@question@@"


def program_body_template(api_base: str) -> str:
    """The chat-completions body the benchmark program sends, as JSON text with ``_QUESTION``
    where the question goes: recorded from the program itself (an ``httpx.MockTransport``
    that answers in the adapter's format), so ``raw`` and ``bare`` send byte for byte what
    dspex sends and the simulator does the same work for all of them."""
    import httpx

    import dspex
    from dspex.clients.lm import LM

    seen: list[bytes] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        content = "[[ ## answer ## ]]\nok\n\n[[ ## completed ## ]]"
        return httpx.Response(200, json={"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})

    lm = LM(f"openai/{MODEL}", api_base=api_base, api_key="sim", cache=False, num_retries=0, http_transport=httpx.MockTransport(answer))
    with dspex.context(lm=lm):
        bench_program()(question=_QUESTION)
    text = seen[-1].decode()
    if text.count(_QUESTION) != 1:
        raise RuntimeError(f"the recorded body holds the question {text.count(_QUESTION)} times, not once")
    return text


def chat_body(template: str, i: int) -> bytes:
    return template.replace(_QUESTION, f"q{i}").encode()


_JSON = {"Content-Type": "application/json"}


class BareLM:
    """The bare Serve deployment: one raw chat-completions call per request, with the body
    the dspex program sends (the reply's text is returned unparsed)."""

    def __init__(self, url: str, template: str) -> None:
        self.url = url
        self.template = template
        self.session: aiohttp.ClientSession | None = None

    async def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            # idle connections go before uvicorn's 5 s keep-alive closes them (as dspex.LM's
            # pool does): reusing one the simulator just closed failed calls with ClientOSError
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=4.0))
        return self.session

    async def call(self, i: int) -> str:
        session = await self._session()
        async with session.post(self.url, data=chat_body(self.template, i), headers=_JSON) as r:
            r.raise_for_status()
            body = await r.json()
            return str(body["choices"][0]["message"]["content"])

    async def __call__(self, request: Any) -> str:
        payload = await request.json()
        return await self.call(int(payload.get("i", 0)))


def bench_program() -> Any:
    import dspex

    return dspex.Predict("question -> answer")


class ProcessCpu:
    """CPU seconds of this machine's Serve processes (proxy, replicas) and the simulator."""

    def __init__(self) -> None:
        out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
        self.pids: dict[str, int] = {}
        for line in out.splitlines()[1:]:
            pid, _, args = line.strip().partition(" ")
            if args.startswith("ray::ServeReplica:") or args.startswith("ray::ProxyActor"):
                self.pids[args.split()[0].removeprefix("ray::")] = int(pid)
            elif "dspex.sim serve" in args:
                self.pids["sim"] = int(pid)
        self.tick = os.sysconf("SC_CLK_TCK")

    def sample(self) -> dict[str, float]:
        out = {"driver": time.process_time()}
        for name, pid in self.pids.items():
            try:
                fields = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()
                out[name] = (int(fields[11]) + int(fields[12])) / self.tick
            except OSError:
                continue
        return out

    @staticmethod
    def per_request_ms(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
        spent = {k: after[k] - before[k] for k in after if k in before}
        out = {k: round(1000.0 * v / max(n, 1), 3) for k, v in spent.items() if v > 0.02}
        out["total"] = round(1000.0 * sum(spent.values()) / max(n, 1), 3)
        return out


async def weight_swap_s(supervisor: Any, handle: Any, to_version: int, other: int) -> float:
    """Seconds from ``set_weights`` until every request starting is served by ``to_version``."""
    probes: list[tuple[float, Any]] = []
    stop = asyncio.Event()

    async def probe(i: int) -> None:
        t = time.perf_counter()
        try:
            r = await handle.apredict.remote({"question": f"swap {i}"})
        except Exception:
            return  # a failed probe shows no version
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
    from ray import serve

    from dspex.sim import SimConfig, SimProcess
    from dspex.sim.config import LatencySpec, ModelSpec

    config = SimConfig(models=[ModelSpec(name=MODEL, skill=0.5, latency=LatencySpec(base_ms=args.latency_ms))])
    sim = SimProcess(config).start()
    try:
        # a Ray of its own ("local"), never another one running on the machine
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        return await measure_all(args, sim, port)
    finally:
        try:
            serve.shutdown()
            ray.shutdown()
        finally:
            sim.stop()


async def measure_all(args: argparse.Namespace, sim: Any, port: int) -> dict[str, Any]:
    from ray import serve

    from dspex.actors import VersionSpec
    from dspex.clients.lm import LM
    from dspex.cluster.serve import ServeOptions, deploy_program, program_supervisor
    from dspex.cluster.serve.options import THROUGHPUT_ENV

    base = f"http://127.0.0.1:{port}"
    chat_url = f"{sim.openai_base_url}/chat/completions"
    template = program_body_template(sim.openai_base_url)
    bare_dep = serve.deployment(BareLM).options(max_ongoing_requests=args.max_ongoing, ray_actor_options={"num_cpus": 0})
    bare = serve.run(bare_dep.options(name="bare").bind(chat_url, template), name="bare", route_prefix="/bare")
    bares = {"bare": bare}
    if args.bare_tuned:
        tuned = bare_dep.options(name="bare-tp", ray_actor_options={"num_cpus": 0, "runtime_env": {"env_vars": THROUGHPUT_ENV}})
        bares["bare-tp"] = serve.run(tuned.bind(chat_url, template), name="bare-tp", route_prefix="/bare-tp")

    def spec(program: str, version: int) -> Any:
        lm = LM(f"openai/{MODEL}", api_base=sim.openai_base_url, api_key="sim", cache=False, num_retries=0)
        return VersionSpec(program, version, factory=bench_program, lm=lm, max_in_flight=args.max_ongoing * 4)

    handles: dict[str, Any] = {}
    supervisors: dict[str, Any] = {}
    if args.plain_profile:
        APPS["plain"] = "bench_plain"
    for prefix, program in APPS.items():
        options = ServeOptions(
            route_prefix=f"/{program}", max_ongoing_requests=args.max_ongoing, max_queued_requests=-1,
            min_replicas=1, max_replicas=args.max_replicas, colocate_versions=prefix != "split",
            throughput_profile=prefix != "plain",
        )
        handles[prefix] = deploy_program(spec(program, 1), options=options, tick_s=0.5)
        supervisors[prefix] = program_supervisor(program)
        await supervisors[prefix].prepare.remote(spec(program, 2))

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=4.0), timeout=aiohttp.ClientTimeout(total=120)
    )

    async def raw(i: int) -> None:
        async with session.post(chat_url, data=chat_body(template, i), headers=_JSON) as r:
            r.raise_for_status()
            await r.read()

    def bare_targets(name: str) -> dict[str, Callable[[int], Awaitable[Any]]]:
        handle = bares[name]

        async def http(i: int) -> None:
            async with session.post(f"{base}/{name}", json={"i": i}) as r:
                r.raise_for_status()
                await r.read()

        async def via_handle(i: int) -> None:
            await handle.call.remote(i)

        return {f"{name}/http": http, f"{name}/handle": via_handle}

    def dspex_targets(prefix: str) -> dict[str, Callable[[int], Awaitable[Any]]]:
        program, handle = APPS[prefix], handles[prefix]
        url = f"{base}/{program}/v1/programs/{program}/predict"

        async def http(i: int) -> None:
            async with session.post(url, json={"inputs": {"question": f"q{i}"}}) as r:
                r.raise_for_status()
                await r.read()

        async def via_handle(i: int) -> None:
            await handle.apredict.remote({"question": f"q{i}"})

        return {f"{prefix}/http": http, f"{prefix}/handle": via_handle}

    targets: dict[str, Callable[[int], Awaitable[Any]]] = {"raw": raw}
    for name in bares:
        targets.update(bare_targets(name))
    for prefix in APPS:
        targets.update(dspex_targets(prefix))
    order = ["raw"] + [t for kind in ("http", "handle") for t in targets if t.endswith("/" + kind)]
    if args.targets:
        order = [t for t in order if any(fnmatch.fnmatch(t, pattern) for pattern in args.targets)]
        targets = {t: targets[t] for t in order}
    for fn in targets.values():  # warm connections, replicas and the signature cache
        await measure(fn, 16, 64)

    cpu = ProcessCpu()
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for c in args.concurrency:
        n = max(args.min_requests, c * args.rounds)
        # Untimed, at this concurrency: the first run of a target at a new concurrency opens
        # its connections (the LM pool, the bare deployment's session, Serve's channels) and
        # grows the processes' heaps; measured, it was 20-30 % slower than the runs after it,
        # and which target ran first decided the ratio.
        for name in order:
            await measure(targets[name], c, max(c * 2, n // 4))
        for rnd in range(args.repeat):
            # every other round backwards, so no target always runs right after the same one
            for name in order if rnd % 2 == 0 else order[::-1]:
                before = cpu.sample()
                r = await measure(targets[name], c, n)
                r["cpu_ms_per_request"] = cpu.per_request_ms(before, cpu.sample(), n - r["failures"])
                r["load"] = round(os.getloadavg()[0], 2)
                runs.setdefault((name, c), []).append(r)
                errors = f" {r['errors']}" if r["failures"] else ""
                print(
                    f"  {name:13s} c={c:<4d} {r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  "
                    f"fail {r['failures']}{errors}  cpu {r['cpu_ms_per_request']['total']:.2f} ms/req  load {r['load']}",
                    flush=True,
                )

    swaps: dict[str, list[float]] = {}
    for prefix in APPS:
        current, other = 1, 2
        for _ in range(args.swaps):
            swaps.setdefault(prefix, []).append(await weight_swap_s(supervisors[prefix], handles[prefix], other, current))
            current, other = other, current

    await session.close()
    rows = []
    for (name, c), results in runs.items():
        median = sorted(results, key=lambda r: r["rps"])[len(results) // 2]
        rows.append({"target": name, "concurrency": c, **median, "rps_runs": [r["rps"] for r in results]})
    return {"rows": rows, "weight_change_s": swaps}


def report(result: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    by = {(r["target"], r["concurrency"]): r for r in result["rows"]}

    def paired(target: str, base: str, c: int) -> float | None:
        """Median over rounds of target/base req/s: each pair ran close together, under the
        same background load, so the ratio is steadier than a ratio of medians."""
        if (target, c) not in by or (base, c) not in by:
            return None  # not measured (``--targets``)
        runs = zip(by[(target, c)]["rps_runs"], by[(base, c)]["rps_runs"], strict=True)
        return statistics.median(t / b for t, b in runs)

    def cell(value: float | None, width: int, digits: int) -> str:
        return f"{'-':>{width}}" if value is None else f"{value:{width}.{digits}f}"

    ratios: dict[str, float] = {}
    print()
    for kind in ("http", "handle"):
        cols = ["bare", *(["bare-tp"] if args.bare_tuned else []), "dspex", "split"]
        head = " | ".join(f"{c + '/' + kind:>13}" for c in cols)
        print(
            f"{'concurrency':>11} | {'raw':>8} | {head} | dspex/bare | split/bare   "
            f"(req/s: median of {args.repeat} runs; ratios: median of per-round ratios)"
        )
        for c in args.concurrency:
            rps = {col: by[(f"{col}/{kind}", c)]["rps"] if (f"{col}/{kind}", c) in by else None for col in cols}
            shown: dict[str, float | None] = {}
            for col in ("dspex", "split"):
                shown[col] = paired(f"{col}/{kind}", f"bare/{kind}", c)
                tuned = paired(f"{col}/{kind}", f"bare-tp/{kind}", c) if args.bare_tuned else None
                if shown[col] is not None:
                    ratios[f"{col}_{kind}_c{c}"] = shown[col]  # type: ignore[assignment]
                if tuned is not None:
                    ratios[f"{col}_{kind}_c{c}_vs_tuned"] = tuned
            cells = " | ".join(cell(rps[col], 13, 1) for col in cols)
            raw = by[("raw", c)]["rps"] if ("raw", c) in by else None
            print(f"{c:>11} | {cell(raw, 8, 1)} | {cells} | {cell(shown['dspex'], 10, 2)} | {cell(shown['split'], 10, 2)}")
        print()
    medians = {k: statistics.median(v) for k, v in result["weight_change_s"].items()}
    for k, v in result["weight_change_s"].items():
        print(f"weight change served after ({k}): {', '.join(f'{s * 1000:.0f} ms' for s in v)} (median {medians[k] * 1000:.0f} ms)")
    goals = {
        "dspex_vs_bare_ge_0.9": all(v >= 0.9 for k, v in ratios.items() if k.startswith("dspex_") and "tuned" not in k),
        "split_vs_bare_ge_0.9": all(v >= 0.9 for k, v in ratios.items() if k.startswith("split_") and "tuned" not in k),
        "weight_change_le_0.5s": all(v <= 0.5 for v in medians.values()),
    }
    partial = " (partial run: only the targets measured count)" if args.targets or not args.swaps else ""
    print(f"goals: {goals}{partial}")
    return {
        "benchmark": "serve",
        "latency_ms": args.latency_ms,
        "max_ongoing_requests": args.max_ongoing,
        "max_replicas": args.max_replicas,
        "repeat": args.repeat,
        "rows": result["rows"],
        "ratios": ratios,
        "weight_change_s": result["weight_change_s"],
        "weight_change_median_s": medians,
        "goals": goals,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--max-ongoing", type=int, default=256)
    parser.add_argument("--max-replicas", type=int, default=1, help="replicas per dspex deployment (bare runs 1)")
    parser.add_argument("--min-requests", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=8, help="requests per concurrency slot")
    parser.add_argument("--repeat", type=int, default=1, help="runs per target and concurrency (median shown)")
    parser.add_argument("--swaps", type=int, default=3)
    parser.add_argument(
        "--targets", nargs="+", default=None, help="only these targets (glob patterns, e.g. 'raw' '*/handle'); the table needs all"
    )
    parser.add_argument(
        "--plain-profile", action="store_true",
        help="also measure the dspex app without THROUGHPUT_ENV (ServeOptions(throughput_profile=False)): 'plain/*'",
    )
    parser.add_argument("--bare-tuned", action="store_true", help="also measure the bare deployment with THROUGHPUT_ENV")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(report(result, args)))


if __name__ == "__main__":
    main()
