"""What every ``python -m dspex.jobs.<kind>`` entry point does.

1. Open the store (``--store``, else ``DSPEX_DATABASE_URL``, else the default SQLite file).
2. Find the job (``--job-id``), or create it from ``--args`` / ``--args-file`` (under
   ``--job-id`` when given, so submitting the same id twice is one job).
3. Join the Ray cluster the job was submitted to (``RAY_ADDRESS`` is set by ``ray job
   submit``), so workers that spread work over Ray (``"ray": true`` in optimize args) can.
4. Run it here to the end: each attempt in this process, backoffs waited out up to
   ``--max-wait-s``. A job already completed is not run again: its result is printed.

The last line on stdout is the job's record as JSON (``dspex jobs show`` prints the same).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from dspex.errors import DSPexError

__all__ = ["EXIT_FAILED", "EXIT_INTERNAL", "EXIT_OK", "EXIT_RETRYING", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_RETRYING = 75  # EX_TEMPFAIL: try again later

log = logging.getLogger("dspex.jobs")


def _parser(kind: str | None) -> argparse.ArgumentParser:
    prog = f"python -m dspex.jobs.{kind or 'run'}"
    p = argparse.ArgumentParser(
        prog=prog,
        description=(
            f"Run a durable dspex {'job' if kind is None else kind + ' job'} to its end "
            "(the entry point of `ray job submit`)."
        ),
    )
    p.add_argument("--job-id", help="the job to run; with --args, the id to create it under (idempotent)")
    p.add_argument("--args", dest="args_json", help="the job's args as a JSON object (creates the job)")
    p.add_argument("--args-file", type=Path, help="the job's args in a JSON file (creates the job)")
    p.add_argument("--store", help="database URL (default: DSPEX_DATABASE_URL, else .dspex/dspex.db)")
    p.add_argument("--max-wait-s", type=float, default=900.0, help="longest total wait for retries (default 900)")
    p.add_argument("--max-attempts", type=int, help="attempts for a job created here (default: the kind's)")
    p.add_argument("--no-ray", action="store_true", help="do not join the Ray cluster even when RAY_ADDRESS is set")
    return p


def _args(ns: argparse.Namespace) -> dict[str, Any] | None:
    if ns.args_json is not None and ns.args_file is not None:
        raise SystemExit(_usage("give --args or --args-file, not both"))
    text = ns.args_json
    if ns.args_file is not None:
        try:
            text = ns.args_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise SystemExit(_usage(f"cannot read {ns.args_file}: {exc.strerror}")) from None
    if text is None:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SystemExit(_usage(f"the job args are not JSON ({exc.msg} at line {exc.lineno})")) from None
    if not isinstance(data, dict):
        raise SystemExit(_usage("the job args must be a JSON object"))
    return data


def _usage(message: str) -> int:
    print(f"error: {message}.", file=sys.stderr)
    return EXIT_USAGE


def _join_ray(skip: bool) -> None:
    if skip or not os.environ.get("RAY_ADDRESS"):
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    if not ray.is_initialized():
        ray.init(address="auto", log_to_driver=True)


def main(kind: str | None, argv: list[str] | None = None) -> int:
    """Run the entry point for ``kind`` (None: any kind, by ``--job-id``)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # the store's migration check, every run
    ns = _parser(kind).parse_args(argv)
    try:
        return _run(kind, ns)
    except SystemExit as exc:
        return int(exc.code or 0)
    except DSPexError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        print(f"internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_INTERNAL


def _run(kind: str | None, ns: argparse.Namespace) -> int:
    import dspex
    from dspex.pipelines.jobs import JobEngine, JobState
    from dspex.store import open_store

    print(f"dspex {dspex.__version__} from {Path(dspex.__file__).resolve().parent}", flush=True)
    args = _args(ns)
    if args is None and ns.job_id is None:
        return _usage("give --job-id (a job in the store) or --args (the job to create)")
    if args is not None and kind is None:
        return _usage("`python -m dspex.jobs.run` runs a job by --job-id; create jobs with a kind's module")
    engine = JobEngine(open_store(ns.store))
    if args is not None:
        assert kind is not None
        inserted = engine.enqueue(kind, args, job_id=ns.job_id, max_attempts=ns.max_attempts)
        job = inserted.job
        print(f"job {job.id} ({kind}) {'found' if inserted.duplicate else 'created'}: {job.state.value}", flush=True)
    else:
        job = engine.jobs.get(ns.job_id)
        if kind is not None and job.kind != kind:
            return _usage(f"job {job.id} is a {job.kind!r} job; run it with python -m dspex.jobs.run --job-id {job.id}")
    _join_ray(ns.no_ray)

    def report(out: Any) -> None:
        print(f"job {job.id} attempt {out.job.attempt}: {out.state.value}" + (f" ({out.error})" if out.error else ""), flush=True)

    final = engine.run_to_end(job.id, max_wait_s=ns.max_wait_s, on_attempt=report)
    print(json.dumps(final.to_dict(), default=str), flush=True)
    if final.state is JobState.COMPLETED:
        return EXIT_OK
    if final.state.final:
        return EXIT_FAILED
    return EXIT_RETRYING
