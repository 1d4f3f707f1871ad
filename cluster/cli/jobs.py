"""``dspex jobs``: durable jobs in the store (list, show, retry, cancel), the periodic schedules,
and a job engine to work the queue (here, in threads, or as Ray tasks)."""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import Any

import typer

from dspex.cluster.cli._common import console, err_console, fail, guarded, print_json, print_table
from dspex.cluster.cli._helpers import ago, connect_ray, finish, store, when
from dspex.errors import ValidationError

app = typer.Typer(help="Durable jobs: list, show, retry, cancel; schedules; work the queue.", no_args_is_help=True)


def _engine(**kw: Any) -> Any:
    from dspex.pipelines.jobs import JobEngine

    return JobEngine(store(), **kw)


def _short(text: str | None, width: int = 60) -> str:
    if not text:
        return ""
    line = text.strip().splitlines()[0]
    return line if len(line) <= width else line[: width - 1] + "…"


@app.command("list")
@guarded
def list_jobs(
    state: list[str] | None = typer.Option(None, "--state", help="Only jobs in this state (repeat it): scheduled, available, executing, retryable, completed, discarded, cancelled."),
    kind: list[str] | None = typer.Option(None, "--kind", help="Only jobs of this kind (repeat it)."),
    limit: int = typer.Option(50, help="At most this many (newest first)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List jobs, newest first, with a count per state."""
    from dspex.pipelines.jobs import JobState

    known = {s.value for s in JobState}
    bad = [s for s in state or [] if s not in known]
    if bad:
        raise ValidationError(f"Unknown job state {bad[0]!r}; use one of {sorted(known)}.", field="state")
    if limit < 1:
        raise ValidationError(f"--limit must be >= 1, got {limit}.", field="limit")
    engine = _engine()
    jobs = engine.jobs.find(states=state or None, kinds=kind or None, limit=limit)
    if as_json:
        print_json({"counts": engine.jobs.counts(), "jobs": [j.to_dict() for j in jobs]})
        return
    now = time.time()
    rows = [
        (j.id, j.kind, j.state.value, f"{j.attempt}/{j.max_attempts}", ago(j.inserted_at, now),
         ago(j.scheduled_at, now) if j.state.value in ("scheduled", "retryable") else "", _short(j.last_error))
        for j in jobs
    ]
    print_table("jobs", ["id", "kind", "state", "attempt", "inserted", "next run", "last error"], rows)
    counts = ", ".join(f"{k} {v}" for k, v in engine.jobs.counts().items() if v)
    console.print(f"[dim]{counts or 'no jobs'}[/]")


@app.command()
@guarded
def show(
    job_id: str = typer.Argument(..., help="The job's id."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show one job: its args, state, result, and every attempt with its error."""
    engine = _engine()
    job = engine.jobs.get(job_id)
    attempts = engine.jobs.attempts(job_id)
    if as_json:
        print_json({**job.to_dict(), "attempts": [a.to_dict() for a in attempts]})
        return
    fields = [
        ("kind", job.kind), ("state", job.state.value), ("attempt", f"{job.attempt} of {job.max_attempts}"),
        ("queue", job.queue), ("inserted", when(job.inserted_at)), ("scheduled", when(job.scheduled_at)),
        ("worker", job.worker or "—"), ("ray task", job.ray_task_id or "—"), ("ray submission", job.submission_id or "—"),
        ("finished", when(job.finished_at)), ("args", json.dumps(job.args)),
        ("result", json.dumps(job.result) if job.result is not None else "—"), ("last error", job.last_error or "—"),
    ]
    print_table(f"job {job.id}", ["", ""], fields)
    print_table("attempts", ["#", "outcome", "worker", "started", "took s", "error"], [
        (a.attempt, a.outcome, a.worker or "—", when(a.started_at),
         "—" if a.finished_at is None else f"{a.finished_at - a.started_at:.1f}", a.error or "")
        for a in attempts
    ])


@app.command()
@guarded
def retry(
    job_id: str = typer.Argument(..., help="The job's id."),
    run: bool = typer.Option(False, "--run", help="Run it here now instead of leaving it to a job engine."),
    as_json: bool = typer.Option(False, "--json", help="Print the job as JSON."),
) -> None:
    """Make a failed, cancelled, finished or scheduled job available again (one more attempt
    if it had used them all)."""
    engine = _engine()
    job = engine.retry(job_id)
    if run:
        finish(engine.run_to_end(job.id, max_wait_s=0.0), as_json)
        return
    if as_json:
        print_json(job.to_dict())
    else:
        console.print(f"job {job.id} ({job.kind}) is available again (attempt {job.attempt + 1} of {job.max_attempts} next); "
                      "a job engine runs it (`dspex jobs work`), or use --run.", highlight=False)


@app.command()
@guarded
def cancel(
    job_id: str = typer.Argument(..., help="The job's id."),
    reason: str = typer.Option("cancelled by an operator", help="Why (kept with the job)."),
    address: str | None = typer.Option(None, help="The Ray dashboard address, to stop a submitted job's Ray job too."),
    as_json: bool = typer.Option(False, "--json", help="Print the job as JSON."),
) -> None:
    """Cancel a job that has not finished (and stop its Ray job when it was submitted)."""
    engine = _engine()
    job = engine.cancel(job_id, reason)
    stopped = None
    if job.submission_id:
        from dspex.cluster.submit import Submitter

        try:
            stopped = Submitter(address, store=engine.store).stop(job.submission_id)
        except Exception as exc:  # the record is cancelled either way; say what happened to Ray's
            err_console.print(f"[yellow]warning:[/] could not stop Ray job {job.submission_id}: {type(exc).__name__}: {exc}", highlight=False, soft_wrap=True)
    if as_json:
        print_json({**job.to_dict(), "ray_job_stopped": stopped})
    else:
        console.print(f"job {job.id} ({job.kind}) cancelled" + (" and its Ray job stopped" if stopped else ""), highlight=False)


@app.command()
@guarded
def schedules(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List periodic schedules (e.g. `dspex models health --every 300`)."""
    items = _engine().jobs.schedules()
    if as_json:
        print_json([s.to_dict() for s in items])
        return
    now = time.time()
    print_table("schedules", ["name", "kind", "every s", "next run", "enabled", "last job", "args"], [
        (s.name, s.kind, f"{s.every_s:g}", ago(s.next_run_at, now), "yes" if s.enabled else "no", s.last_job_id or "—", json.dumps(s.args))
        for s in items
    ])


@app.command()
@guarded
def work(
    threads: int = typer.Option(2, help="Jobs run at once in this process."),
    use_ray: bool = typer.Option(False, "--ray", help="Run each attempt as a Ray task (joins RAY_ADDRESS, else starts a local Ray)."),
    queue: list[str] | None = typer.Option(None, "--queue", help="Queues to take jobs from (default: default)."),
    once: bool = typer.Option(False, "--once", help="Run what is available now, then exit (exit 1 if any failed)."),
    poll_s: float = typer.Option(1.0, help="Seconds between polls of the queue."),
) -> None:
    """Work the job queue: run available jobs, retry failures after their backoff, rescue jobs
    of dead workers, fire periodic schedules, prune old jobs. Ctrl-C stops it."""
    from dspex.pipelines.jobs import JobState, RayExecutor, ThreadExecutor

    if threads < 1:
        raise ValidationError(f"--threads must be >= 1, got {threads}.", field="threads")
    if use_ray:
        connect_ray()
        executor: Any = RayExecutor(max_in_flight=threads)
    else:
        executor = ThreadExecutor(threads)
    engine = _engine(executor=executor, queues=tuple(queue or ("default",)))
    if once:
        outcomes = engine.drain()
        engine.close()
        rows = [(o.job.id, o.job.kind, o.state.value, o.error or "") for o in outcomes]
        print_table("jobs run", ["id", "kind", "state", "error"], rows)
        failed = [o for o in outcomes if o.state is not JobState.COMPLETED]
        if failed:
            fail(f"{len(failed)} of {len(outcomes)} jobs did not complete; see `dspex jobs show <id>`.")
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    err_console.print(f"[dim]job engine {engine.worker_id} working queues {', '.join(engine.queues)}; Ctrl-C stops it[/]")
    try:
        engine.run_forever(stop, poll_interval_s=poll_s)
    except KeyboardInterrupt:
        stop.set()
