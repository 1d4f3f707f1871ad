"""``dspex evaluate``: score a program, or a stored version, on a dataset (here or as a Ray
job with ``--submit``); the run is a durable job (``dspex jobs show <id>``)."""

from __future__ import annotations

from pathlib import Path

import typer

from dspex.cluster.cli._common import guarded
from dspex.cluster.cli._helpers import (
    check_args,
    dataset_ref,
    finish,
    lm_ref,
    program_ref,
    run_here,
    store,
    submit,
)
from dspex.cluster.cli.optimize import PROGRAM_HELP

app = typer.Typer(help="Score a program, or a stored version, on a dataset.")


@app.callback(invoke_without_command=True)
@guarded
def evaluate(
    program: str = typer.Option(..., "--program", "-p", help=PROGRAM_HELP),
    module: str = typer.Option("Predict", help="For a signature: Predict or ChainOfThought."),
    version: str | None = typer.Option(None, help="For a stored program: the version or alias to score."),
    task: str | None = typer.Option(None, help="Score on a simulated task (arithmetic, classification, multihop)."),
    n: int | None = typer.Option(None, "--n", help="Examples from the task."),
    seed: int = typer.Option(0, help="The task's seed."),
    split: str = typer.Option("dev", help="The task's split (train, dev, test)."),
    data: Path | None = typer.Option(None, help="Score on a JSONL file (one example per line)."),
    model: str | None = typer.Option(None, help="A registered model to run the program with."),
    lm: str | None = typer.Option(None, help="Or an LM: provider/name (e.g. openai/sim-small)."),
    api_base: str | None = typer.Option(None, help="The LM's base URL."),
    api_key_env: str | None = typer.Option(None, help="The environment variable holding the LM's key."),
    temperature: float | None = typer.Option(None, help="The LM's temperature."),
    metric: str | None = typer.Option(None, help="package.module:function (default: the task's metric, or exact match of the outputs)."),
    num_threads: int = typer.Option(16, help="Examples scored at once."),
    do_submit: bool = typer.Option(False, "--submit", help="Run it as a Ray job on a cluster instead of here."),
    address: str | None = typer.Option(None, help="The Ray dashboard address for --submit."),
    follow: bool = typer.Option(True, "--follow/--no-follow", help="With --submit: tail the job's logs until it ends."),
    job_id: str | None = typer.Option(None, help="The job's id (submitting an id twice runs it once)."),
    max_attempts: int = typer.Option(1, help="Attempts before the job is discarded."),
    as_json: bool = typer.Option(False, "--json", help="Print the job record as JSON."),
) -> None:
    """Score PROGRAM on a dataset; prints the score and where it came from."""
    args = {
        "program": program_ref(program, module, version),
        "devset": dataset_ref(task, n, seed, split, data, what="dataset"),
        "lm": lm_ref(model, lm, api_base, api_key_env, temperature),
        "num_threads": num_threads,
        "progress": not as_json and not do_submit,
    }
    if metric:
        args["metric"] = metric
    check_args("evaluate", args, store())
    if do_submit:
        submit("evaluate", args, address=address, follow=follow, job_id=job_id, max_attempts=max_attempts, as_json=as_json)
        return
    finish(run_here("evaluate", args, max_attempts=max_attempts, job_id=job_id), as_json)
