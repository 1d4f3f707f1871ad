"""``dspex optimize``: optimize a program and save the result as a new version, here or as a
Ray job (``--submit``). Either way it is a durable job (``dspex jobs show <id>``)."""

from __future__ import annotations

from pathlib import Path

import typer

from dspex.cluster.cli._common import guarded
from dspex.cluster.cli._helpers import (
    check_args,
    connect_ray,
    dataset_ref,
    finish,
    lm_ref,
    parse_params,
    program_ref,
    run_here,
    store,
    submit,
)

app = typer.Typer(help="Optimize a program with an optimizer and save it as a new version.")

PROGRAM_HELP = "The program: package.module:attribute (a Module or a factory), a signature ('question -> answer'), or a stored program (name or name@version)."


@app.callback(invoke_without_command=True)
@guarded
def optimize(
    program: str = typer.Option(..., "--program", "-p", help=PROGRAM_HELP),
    module: str = typer.Option("Predict", help="For a signature: Predict or ChainOfThought."),
    version: str | None = typer.Option(None, help="For a stored program: the version or alias to start from."),
    task: str | None = typer.Option(None, help="Train on a simulated task (arithmetic, classification, multihop)."),
    n: int | None = typer.Option(None, "--n", help="Training examples from the task."),
    seed: int = typer.Option(0, help="The task's seed."),
    data: Path | None = typer.Option(None, help="Train on a JSONL file (one example per line)."),
    val_n: int | None = typer.Option(None, "--val-n", help="Validation examples from the task's dev split."),
    val_data: Path | None = typer.Option(None, "--val-data", help="Validation examples from a JSONL file."),
    optimizer: str = typer.Option("BootstrapFewShot", help="The optimizer (see dspex.optimizers.list_optimizers())."),
    param: list[str] | None = typer.Option(None, "--param", help="An optimizer parameter, key=value (repeat it)."),
    model: str | None = typer.Option(None, help="A registered model to run the program with."),
    lm: str | None = typer.Option(None, help="Or an LM: provider/name (e.g. openai/sim-small)."),
    api_base: str | None = typer.Option(None, help="The LM's base URL."),
    api_key_env: str | None = typer.Option(None, help="The environment variable holding the LM's key."),
    temperature: float | None = typer.Option(None, help="The LM's temperature."),
    metric: str | None = typer.Option(None, help="package.module:function (default: the task's metric, or exact match of the outputs)."),
    save_as: str | None = typer.Option(None, help="The program name to save the new version under (default: the stored program's)."),
    tag: list[str] | None = typer.Option(None, "--tag", help="Tag the new version (repeat it)."),
    ray: bool = typer.Option(False, "--ray", help="Spread candidates and trials over the Ray cluster the job runs on."),
    do_submit: bool = typer.Option(False, "--submit", help="Run it as a Ray job on a cluster instead of here."),
    address: str | None = typer.Option(None, help="The Ray dashboard address for --submit (default: RAY_ADDRESS or http://127.0.0.1:8265)."),
    follow: bool = typer.Option(True, "--follow/--no-follow", help="With --submit: tail the job's logs until it ends."),
    job_id: str | None = typer.Option(None, help="The job's id (submitting an id twice runs it once)."),
    max_attempts: int = typer.Option(1, help="Attempts before the job is discarded."),
    as_json: bool = typer.Option(False, "--json", help="Print the job record as JSON."),
) -> None:
    """Optimize PROGRAM on a dataset and save it as a new program version."""
    ref = program_ref(program, module, version)
    args = {
        "program": ref,
        "trainset": dataset_ref(task, n, seed, "train", data, what="training set"),
        "optimizer": optimizer,
        "optimizer_params": parse_params(param),
        "lm": lm_ref(model, lm, api_base, api_key_env, temperature),
        "save_as": save_as or ref.get("stored") or "",
        "tags": list(tag or []),
    }
    if not args["save_as"]:
        from dspex.errors import JobError

        raise JobError("Name the program to save the result under: --save-as NAME.")
    if val_n is not None or val_data is not None:
        args["valset"] = dataset_ref(task if val_data is None else None, val_n, seed, "dev", val_data, what="validation set")
    if metric:
        args["metric"] = metric
    if ray:
        args["ray"] = True
    check_args("optimize", args, store())
    if ray and not do_submit:
        connect_ray()
    if do_submit:
        submit("optimize", args, address=address, follow=follow, job_id=job_id, max_attempts=max_attempts, as_json=as_json)
        return
    finish(run_here("optimize", args, max_attempts=max_attempts, job_id=job_id), as_json)
