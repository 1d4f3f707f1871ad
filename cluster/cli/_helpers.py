"""What the job-running commands share: the store, readable times, the words for programs,
datasets and models turned into job args, checking those args before anything is written,
and running a job here or submitting it to Ray."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dspex.cluster.cli._common import console, err_console, fail, print_json, print_table
from dspex.errors import DSPexError, JobError

__all__ = [
    "ago",
    "check_args",
    "connect_ray",
    "dataset_ref",
    "finish",
    "lm_ref",
    "parse_params",
    "program_ref",
    "run_here",
    "store",
    "submit",
    "when",
]


def store() -> Any:
    from dspex.store import open_store

    return open_store()


def when(value: float | datetime | None) -> str:
    if value is None:
        return "—"
    dt = value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def ago(value: float | None, now: float | None = None) -> str:
    if value is None:
        return "—"
    delta = (now if now is not None else time.time()) - value
    future = delta < 0
    delta = abs(delta)
    text = f"{delta:.0f}s" if delta < 120 else f"{delta / 60:.0f}m" if delta < 7200 else f"{delta / 3600:.1f}h"
    return f"in {text}" if future else f"{text} ago"


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``key=value`` pairs; values are JSON when they parse (``4``, ``true``, ``"x"``), else text."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise JobError(f"--param takes key=value, got {item!r}.")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def program_ref(program: str | None, module: str, version: str | None) -> dict[str, Any]:
    from dspex.pipelines.jobs.inputs import parse_program_ref

    return parse_program_ref(program, module=module, version=version)


def dataset_ref(task: str | None, n: int | None, seed: int, split: str, data: Path | None, *, what: str) -> dict[str, Any]:
    if (task is None) == (data is None):
        raise JobError(f"Name the {what}: a simulated task (--task NAME --n N) or a JSONL file (--data FILE), not both.")
    if data is not None:
        return {"path": str(data.resolve())}
    if n is None:
        raise JobError(f"The {what} needs a size: --n N.")
    return {"task": task, "n": n, "seed": seed, "split": split}


def lm_ref(model: str | None, lm: str | None, api_base: str | None, api_key_env: str | None, temperature: float | None) -> dict[str, Any]:
    if (model is None) == (lm is None):
        raise JobError("Name the model: a registered one (--model NAME) or an LM (--lm provider/name --api-base URL), not both.")
    if model is not None:
        return {"registry": model}
    ref: dict[str, Any] = {"model": lm}
    if api_base is not None:
        ref["api_base"] = api_base
    if api_key_env is not None:
        ref["api_key_env"] = api_key_env
    if temperature is not None:
        ref["temperature"] = temperature
    return ref


def check_args(kind: str, args: dict[str, Any], st: Any) -> None:
    """Resolve everything the job names (program, data, model, metric, optimizer) without
    running it, so bad input fails here, before any record is written."""
    from dspex.optimizers import get_optimizer
    from dspex.pipelines.jobs.inputs import (
        bad,
        build_program,
        load_dataset,
        resolve_lm,
        resolve_metric,
    )

    program, _ = build_program(args["program"], st)
    data_key = "trainset" if kind == "optimize" else "devset"
    load_dataset(args[data_key], program)
    if args.get("valset"):
        load_dataset(args["valset"], program)
    resolve_metric(args.get("metric"), args[data_key], program)
    resolve_lm(args["lm"], st)
    if kind == "optimize":
        try:
            get_optimizer(str(args.get("optimizer")))
        except DSPexError as exc:
            raise bad(exc.message) from exc


def run_here(kind: str, args: dict[str, Any], *, max_attempts: int, job_id: str | None = None) -> Any:
    """Insert the job and run it in this process to its end (the job record keeps it)."""
    from dspex.pipelines.jobs import JobEngine

    engine = JobEngine(store())
    job = engine.enqueue(kind, args, max_attempts=max_attempts, job_id=job_id).job
    err_console.print(f"[dim]{kind} job {job.id}: running here (attempts: {job.max_attempts})[/]")
    return engine.run_to_end(job.id, max_wait_s=0.0)


def submit(
    kind: str,
    args: dict[str, Any],
    *,
    address: str | None,
    follow: bool,
    job_id: str | None,
    max_attempts: int | None,
    as_json: bool,
) -> None:
    """Submit the job to a Ray cluster; with ``follow``, tail its logs and exit with its outcome."""
    from dspex.cluster.submit import Submitter

    sub = Submitter(address, store=store())
    s = sub.submit(kind, args, job_id=job_id, max_attempts=max_attempts)
    verb = "submitted" if s.created else "already submitted"
    if not follow:
        if as_json:
            print_json({"job_id": s.job_id, "kind": kind, "created": s.created, "status": s.status, "address": sub.address})
        else:
            console.print(f"{kind} job {s.job_id} {verb} to {sub.address} ({s.status}); follow it with `dspex jobs show {s.job_id}`.")
        return
    err_console.print(f"[dim]{kind} job {s.job_id} {verb} to {sub.address}; following its logs[/]")
    status = sub.follow(s.job_id, lambda line: err_console.print(line, markup=False, highlight=False))
    from dspex.pipelines.jobs import JobStore

    finish(JobStore(store()).get(s.job_id), as_json, ray_status=status)


def finish(job: Any, as_json: bool, *, ray_status: str | None = None) -> None:
    """Print the job's outcome; exit 1 (one sentence) unless it completed."""
    from dspex.pipelines.jobs import JobState

    if as_json:
        print_json(job.to_dict())
    elif job.state is JobState.COMPLETED and job.result:
        rows = [(k, json.dumps(v) if isinstance(v, dict | list) else v) for k, v in job.result.items()]
        print_table(f"{job.kind} job {job.id}: completed", ["", "value"], rows)
    if job.state is JobState.COMPLETED:
        return
    detail = job.last_error or (f"the Ray job ended {ray_status}" if ray_status else "no error was recorded")
    state = job.state.value
    hint = f"see `dspex jobs show {job.id}`" + ("" if job.state.final else ", or run it again with `dspex jobs retry --run`")
    fail(f"{job.kind} job {job.id} is {state}: {detail.rstrip('.')}; {hint}.")


def read_json_or_yaml(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text)
        return json.loads(text)
    except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise JobError(f"{path} is not valid {'YAML' if path.suffix in ('.yaml', '.yml') else 'JSON'}: {first}.") from exc


def connect_ray() -> None:
    """Join the Ray this process runs in, or RAY_ADDRESS's cluster, or start a local one."""
    import os

    import ray

    if ray.is_initialized():
        return
    from dspex.cluster import init

    init(address="auto" if os.environ.get("RAY_ADDRESS") else None)
