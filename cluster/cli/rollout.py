"""``dspex deploy`` and ``dspex rollout ...``: start and steer rollouts from a shell.

The commands work on the store (``--database``, default ``DSPEX_DATABASE_URL`` or the local
file): ``deploy`` records the rollout and schedules its controller ticks as a durable job
(``rollout:<program>``, run by any ``dspex jobs`` worker connected to the cluster), and every
control is stored with the actions it asks for, which the next controller tick executes. So no
command needs Ray, and a control takes effect within one tick wherever the controller runs.
``dspex rollout run`` runs a controller loop in the foreground instead (it joins Ray).

    dspex deploy qa --version 4 --strategy canary --steps 5,10,25,50,100 --gate "error_rate<=0.05"
    dspex rollout status qa --json
    dspex rollout pause qa --reason "looking at a dashboard"
    dspex rollout promote qa --full
"""

from __future__ import annotations

import re
import time
from typing import Any

import typer

from dspex.cluster.cli._common import guarded, print_json, print_table

__all__ = ["app", "deploy", "register"]

app = typer.Typer(
    help="Steer rollouts: status, promote, pause, resume, abort, retry, undo.", no_args_is_help=True
)

_DB = typer.Option(
    None, "--database", help="Store URL (default: DSPEX_DATABASE_URL, else the local file)."
)
_JSON = typer.Option(False, "--json", help="Print JSON instead of a table.")
_GATE = re.compile(r"^\s*([A-Za-z_][\w:.]*)\s*(<=|>=|<|>)\s*([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)\s*$")


def register(root: typer.Typer) -> None:
    """Add ``dspex deploy`` and the ``dspex rollout`` group to the root command."""
    root.command("deploy")(deploy)
    root.add_typer(app, name="rollout")


def _store(database: str | None) -> Any:
    from dspex.store import open_store

    return open_store(database)


def _persistence(store: Any) -> Any:
    from dspex.pipelines.rollouts.persistence import StorePersistence

    return StorePersistence(store)


def _gates(
    texts: list[str], min_executions: int, missing_data: str, non_inferiority: float | None
) -> list[Any]:
    from dspex.errors import ValidationError
    from dspex.pipelines.rollouts import Condition, Gate, MissingData
    from dspex.pipelines.rollouts import non_inferiority as ni

    try:
        policy = MissingData(missing_data)
    except ValueError:
        raise ValidationError(
            f"--missing-data must be wait, inconclusive or fail, got {missing_data!r}.",
            field="missing_data",
        ) from None
    gates: list[Any] = []
    for text in texts:
        m = _GATE.match(text)
        if m is None:
            raise ValidationError(
                f"Cannot read the gate {text!r}; write it as METRIC OP NUMBER, e.g. 'error_rate<=0.05' or "
                "'score:accuracy>=0.8'.",
                field="gate",
            )
        metric, op, value = m.group(1), m.group(2), float(m.group(3))
        gates.append(
            Gate(
                name=metric,
                metric=metric,
                success=Condition(op, value),
                min_executions=min_executions,
                missing_data=policy,
            )
        )
    if non_inferiority is not None:
        gates.append(ni(non_inferiority, missing_data=policy))
    return gates


def _print_status(status: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(status)
        return
    dep = status.get("deployment") or {}
    rows = [
        ("rollout", status["rollout_id"]),
        ("canary / champion", f"{status['canary']} / {status['champion']}"),
        ("strategy", status["strategy"]),
        ("phase", status["phase"]),
        ("step", f"{status['step']}/{status['steps']} at {status['weight']:g} %"),
        ("failed checks", f"{status['failed_checks']}/{status['threshold']}"),
        ("message", status["message"]),
        ("allowed", ", ".join(status["allowed"]) or "-"),
        ("pending actions", ", ".join(status["pending_actions"]) or "-"),
        ("deployment", f"{dep.get('id')} ({dep.get('status')})" if dep else "-"),
    ]
    if status.get("error"):
        rows.append(("last error", status["error"]))
    print_table(f"rollout of {status['program']}", ["field", "value"], rows)
    if status["gates"]:
        print_table(
            "gates",
            ["gate", "measured", "failed", "inconclusive", "errors", "last"],
            [
                (g, v["measurements"], v["failed"], v["inconclusive"], v["errors"], v["last"])
                for g, v in status["gates"].items()
            ],
        )


@guarded
def deploy(
    program: str = typer.Argument(..., help="The program's name in the registry."),
    version: int = typer.Option(..., "--version", "-v", help="The registered version to roll out."),
    strategy: str = typer.Option("canary", help="immediate, canary, blue_green or rolling."),
    steps: str = typer.Option("5,10,25,50,100", help="Canary traffic steps in percent."),
    interval_s: float = typer.Option(
        60.0, "--interval", help="Seconds between analyses (at least 10)."
    ),
    threshold: int = typer.Option(2, help="Failed checks before rolling back."),
    deadline_s: float = typer.Option(600.0, "--deadline", help="Progress deadline in seconds."),
    gate: list[str] = typer.Option(
        [], "--gate", help="A gate such as 'error_rate<=0.05' (repeatable)."
    ),
    min_executions: int = typer.Option(20, help="Calls of the new version a gate waits for."),
    missing_data: str = typer.Option(
        "wait", help="A gate without data: wait, inconclusive or fail."
    ),
    non_inferiority: float | None = typer.Option(
        None, help="Add a non-inferiority gate with this margin."
    ),
    canary_test: str | None = typer.Option(
        None, help="DEVSET:MIN_SCORE, replayed before live traffic."
    ),
    schedule: bool = typer.Option(True, help="Schedule the controller ticks as a durable job."),
    database: str | None = _DB,
    as_json: bool = _JSON,
) -> None:
    """Roll a registered version out (a running rollout restarts from step 0 with it)."""
    from dspex.errors import ValidationError
    from dspex.pipelines.rollouts import CanaryTest, RolloutSpec
    from dspex.pipelines.rollouts.control import rollout_status, submit_rollout
    from dspex.pipelines.rollouts.registry import ProgramRegistry

    try:
        weights = tuple(float(w) for w in steps.split(",") if w.strip())
    except ValueError:
        raise ValidationError(
            f"--steps must be numbers separated by commas, got {steps!r}.", field="steps"
        ) from None
    test = None
    if canary_test is not None:
        devset, _, score = canary_test.rpartition(":")
        try:
            test = CanaryTest(devset=devset, min_score=float(score))
        except ValueError:
            raise ValidationError(
                f"--canary-test must be DEVSET:MIN_SCORE, got {canary_test!r}.", field="canary_test"
            ) from None
    spec = RolloutSpec(
        strategy=strategy,  # a string: the spec validates and converts it
        interval_s=interval_s,
        step_weights=weights,
        threshold=threshold,
        progress_deadline_s=deadline_s,
        gates=tuple(_gates(gate, min_executions, missing_data, non_inferiority)),
        canary_test=test,
    )
    store = _store(database)
    registry = ProgramRegistry(store, actor="cli")
    stored = registry.version(program, version)  # NotFound names the program and version
    persistence = _persistence(store)
    submit_rollout(
        persistence,
        program,
        version,
        spec,
        champion=registry.alias(program, "champion"),
        now=time.time(),
        recent_versions=registry.recent(program),
        trigger_reason="manual (cli)",
        program_snapshot=stored.to_dict(),
    )
    if schedule:
        from dspex.pipelines.jobs import JobEngine

        JobEngine(store).schedule(
            f"rollout:{program}",
            "rollout_tick",
            every_s=max(1.0, spec.interval_s / 5.0),
            args={"program": program},
        )
    _print_status(rollout_status(persistence, program), as_json)


def _control(program: str, event: Any, database: str | None, as_json: bool) -> None:
    from dspex.pipelines.rollouts.control import apply_control, rollout_status

    persistence = _persistence(_store(database))
    apply_control(persistence, program, event, time.time())
    _print_status(rollout_status(persistence, program), as_json)


@app.command()
@guarded
def status(
    program: str = typer.Argument(...), database: str | None = _DB, as_json: bool = _JSON
) -> None:
    """Where the program's rollout stands (the active one, else the latest)."""
    from dspex.pipelines.rollouts.control import rollout_status

    _print_status(rollout_status(_persistence(_store(database)), program), as_json)


@app.command("list")
@guarded
def list_rollouts(
    program: str | None = typer.Option(None, help="Only this program's rollouts."),
    active: bool = typer.Option(False, "--active", help="Only rollouts still running."),
    database: str | None = _DB,
    as_json: bool = _JSON,
) -> None:
    """Rollouts, most recently updated first."""
    from dspex.store.deployments import DeploymentStore

    rows = DeploymentStore(_store(database)).rollouts(
        program=program, active=True if active else None
    )
    docs = [r.doc for r in rows]
    if as_json:
        print_json(
            [
                {
                    k: d.get(k)
                    for k in (
                        "rollout_id",
                        "program",
                        "canary",
                        "champion",
                        "phase",
                        "step_index",
                        "weight",
                    )
                }
                for d in docs
            ]
        )
        return
    print_table(
        "rollouts",
        ["rollout", "program", "canary", "champion", "phase", "weight %"],
        [
            (d["rollout_id"], d["program"], d["canary"], d["champion"], d["phase"], d["weight"])
            for d in docs
        ],
    )


@app.command()
@guarded
def promote(
    program: str = typer.Argument(...),
    full: bool = typer.Option(False, "--full", help="Straight to 100 % instead of one step."),
    database: str | None = _DB,
    as_json: bool = _JSON,
) -> None:
    """Move the rollout one step on (or all the way with --full)."""
    from dspex.pipelines.rollouts import Promote

    _control(program, Promote(full=full), database, as_json)


@app.command()
@guarded
def pause(
    program: str = typer.Argument(...),
    reason: str = typer.Option("paused by operator", help="Why (kept in the rollout's history)."),
    database: str | None = _DB,
    as_json: bool = _JSON,
) -> None:
    """Stop analysing and stepping; traffic stays where it is."""
    from dspex.pipelines.rollouts import Pause

    _control(program, Pause(reason=reason), database, as_json)


@app.command()
@guarded
def resume(
    program: str = typer.Argument(...), database: str | None = _DB, as_json: bool = _JSON
) -> None:
    """Resume a paused rollout (with a fresh analysis window)."""
    from dspex.pipelines.rollouts import Resume

    _control(program, Resume(), database, as_json)


@app.command()
@guarded
def abort(
    program: str = typer.Argument(...),
    reason: str = typer.Option("aborted by operator", help="Why (kept in the rollout's history)."),
    database: str | None = _DB,
    as_json: bool = _JSON,
) -> None:
    """Send all traffic back to the champion and end the rollout."""
    from dspex.pipelines.rollouts import Abort

    _control(program, Abort(reason=reason), database, as_json)


@app.command()
@guarded
def retry(
    program: str = typer.Argument(...), database: str | None = _DB, as_json: bool = _JSON
) -> None:
    """Start the program's aborted, failed or rolled-back rollout again from the beginning."""
    from dspex.pipelines.rollouts import Retry

    _control(program, Retry(), database, as_json)


@app.command("skip-analysis")
@guarded
def skip_analysis(
    program: str = typer.Argument(...), database: str | None = _DB, as_json: bool = _JSON
) -> None:
    """Treat every further analysis (and the canary test) as passed."""
    from dspex.pipelines.rollouts import SkipAnalysis

    _control(program, SkipAnalysis(), database, as_json)


@app.command()
@guarded
def undo(
    program: str = typer.Argument(...), database: str | None = _DB, as_json: bool = _JSON
) -> None:
    """Abort the running rollout; with none running, put the previous champion back at once
    (no gates) if it is within the rollback window."""
    from dspex.pipelines.rollouts import Abort
    from dspex.pipelines.rollouts.control import rollout_status, submit_rollout, undo_target
    from dspex.pipelines.rollouts.persistence import active_record
    from dspex.pipelines.rollouts.registry import ProgramRegistry

    store = _store(database)
    persistence = _persistence(store)
    if active_record(persistence, program) is not None:
        _control(program, Abort(reason="undone by operator"), database, as_json)
        return
    registry = ProgramRegistry(store, actor="cli")
    recent = registry.recent(program)
    target, spec = undo_target(
        persistence, program, previous=registry.previous(program), recent=recent
    )
    submit_rollout(
        persistence,
        program,
        target,
        spec,
        champion=registry.alias(program, "champion"),
        now=time.time(),
        recent_versions=recent,
        trigger_reason="undo (cli)",
    )
    _print_status(rollout_status(persistence, program), as_json)


@app.command()
@guarded
def run(
    program: str = typer.Argument(...),
    address: str = typer.Option("auto", help="The Ray cluster to join ('auto': the local one)."),
    lm: str | None = typer.Option(
        None, help="The LM new versions are served with, e.g. openai/gpt-4o-mini."
    ),
    api_base: str | None = typer.Option(
        None, help="The LM's base URL (OpenAI-compatible servers)."
    ),
    database: str | None = _DB,
) -> None:
    """Run the program's rollout controller in the foreground until its rollout ends."""
    import asyncio

    from dspex.actors import _ray
    from dspex.cluster.runtime import init
    from dspex.errors import NotFound
    from dspex.pipelines.rollouts.controller import RolloutController
    from dspex.pipelines.rollouts.registry import ProgramRegistry, RegistrySpecs

    init(address=address)
    supervisor = _ray.lookup(_ray.supervisor_name(program))
    if supervisor is None:
        raise NotFound(f"No supervisor runs program {program!r} on this cluster; serve it first.")
    store = _store(database)
    registry = ProgramRegistry(store, actor="controller")
    model = None
    if lm is not None:
        from dspex.clients.lm import LM

        model = LM(lm, api_base=api_base)  # the key comes from the provider's environment variable
    controller = RolloutController(
        program,
        supervisor,
        persistence=_persistence(store),
        registry=registry,
        specs=RegistrySpecs(registry, program, lm=model),
    )
    asyncio.run(controller.run(until_done=True))
    typer.echo(f"no rollout of {program} is running any more")
