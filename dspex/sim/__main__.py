"""``python -m dspex.sim``: serve the simulator, print its default config, list its tasks,
or measure its throughput.

    python -m dspex.sim serve [--host 127.0.0.1] [--port 0] [--config FILE.yaml|json]
    python -m dspex.sim config                      # the built-in config as YAML, to edit
    python -m dspex.sim tasks [--show 3]
    python -m dspex.sim bench [--n 5000] [--concurrency 256] [--latency-ms 100] [--url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys

from dspex.errors import ConfigurationError

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from dspex.sim.config import SimConfig
    from dspex.sim.runner import READY_PREFIX, uvicorn_config_kwargs
    from dspex.sim.server import SimApp

    config = SimConfig.load(args.config) if args.config else SimConfig.default()
    host = args.host or config.host
    port = config.port if args.port is None else args.port
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)  # connections queue from now on, so "ready" is true when printed
    sim = SimApp(config)
    server = uvicorn.Server(
        uvicorn.Config(sim.app, **uvicorn_config_kwargs(), timeout_graceful_shutdown=1)
    )
    print(f"{READY_PREFIX}http://{host}:{sock.getsockname()[1]}", flush=True)
    print(
        f"models: {', '.join(m.name for m in config.models)} (a synthetic benchmark, not a real LM)",
        flush=True,
    )
    server.run(sockets=[sock])
    sim.stopping = True
    return 0


def _tasks(args: argparse.Namespace) -> int:
    from dspex.sim.tasks import get_task, list_tasks

    for name in list_tasks():
        task = get_task(name)
        print(f"{name}: {task.signature!r}  clusters={list(task.clusters)}")
        for ex in task.load(args.show, seed=args.seed, split=args.split):
            print(f"  [{ex.cluster}, difficulty {ex.difficulty:.2f}] {ex.inputs} -> {ex.answer!r}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from dspex.sim.loadgen import bench_config, run_load
    from dspex.sim.runner import SimProcess

    if args.url:
        result = asyncio.run(run_load(args.url, args.n, args.concurrency, args.model))
    else:
        with SimProcess(bench_config(args.latency_ms)) as sim:
            asyncio.run(
                run_load(sim.base_url, min(args.n, 2 * args.concurrency), args.concurrency)
            )  # warm-up
            result = asyncio.run(run_load(sim.base_url, args.n, args.concurrency))
        result["latency_ms"] = args.latency_ms
        result["ideal_s"] = round(args.n / args.concurrency * args.latency_ms / 1000, 3)
    print(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dspex.sim", description="The dspex simulated LM server."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="serve OpenAI and Anthropic APIs on HOST:PORT")
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None, help="0 picks a free port (printed on stdout)")
    p.add_argument("--config", default=None, help="a YAML or JSON SimConfig file")
    p = sub.add_parser("config", help="print the built-in config as YAML")
    p = sub.add_parser("tasks", help="list the synthetic tasks with sample examples")
    p.add_argument("--show", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="train")
    p = sub.add_parser("bench", help="measure requests per second")
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--concurrency", type=int, default=256)
    p.add_argument("--latency-ms", type=float, default=100.0)
    p.add_argument(
        "--url", default=None, help="a running server (else one is started in a subprocess)"
    )
    p.add_argument("--model", default="sim-bench")
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "config":
            from dspex.sim.config import SimConfig

            print(SimConfig.default().dump_yaml(), end="")
            return 0
        if args.command == "tasks":
            return _tasks(args)
        return _bench(args)
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
