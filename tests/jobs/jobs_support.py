"""Worker functions for the job tests, importable in a subprocess and in Ray workers (tests/ is
on their PYTHONPATH), and the subprocess entry point that runs one job until it is killed.

``block_then_complete``: attempt 1 writes its pid to ``<dir>/started-1`` and blocks until told
to stop (the test kills its process); later attempts append a line to ``<dir>/completed`` and
return. The file is how a test counts how many times the job really completed.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

from dspex.errors import JobError
from dspex.pipelines.jobs import JobContext, register_worker

KIND_BLOCK = "test.block_then_complete"
KIND_FAIL = "test.always_fails"
KIND_COUNT = "test.count"


def block_then_complete(args: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    folder = Path(args["dir"])
    if ctx.attempt == 1:
        (folder / "started-1").write_text(str(os.getpid()))
        stop = threading.Event()
        while not ctx.should_stop():
            stop.wait(0.05)
        raise JobError("stopped while blocking")
    with (folder / "completed").open("a") as fh:
        fh.write(f"attempt {ctx.attempt}\n")
    return {"attempt": ctx.attempt, "pid": os.getpid()}


def always_fails(args: dict[str, Any], ctx: JobContext) -> None:
    raise RuntimeError(f"failure of attempt {ctx.attempt}")


def count(args: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    folder = Path(args["dir"])
    with (folder / f"ran-{args.get('name', 'x')}").open("a") as fh:
        fh.write(f"{ctx.job_id} {ctx.attempt}\n")
    return {"ok": True}


def register_test_kinds() -> None:
    register_worker(KIND_BLOCK, block_then_complete, replace=True, max_attempts=3, num_cpus=0.1)
    register_worker(KIND_FAIL, always_fails, replace=True, num_cpus=0.1)
    register_worker(KIND_COUNT, count, replace=True, num_cpus=0.1, unique_period_s=60)


def main(argv: list[str]) -> int:
    """``python jobs_support.py <store url> <job id>``: claim the job and run it here."""
    from dspex.pipelines.jobs import JobEngine
    from dspex.store import open_store

    register_test_kinds()
    url, job_id = argv
    engine = JobEngine(open_store(url), heartbeat_interval_s=0.1, rescue_after_s=1.0)
    engine.run_now(job_id)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
