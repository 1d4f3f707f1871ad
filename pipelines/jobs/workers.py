"""The seed's Oban workers as job kinds.

==================  =========================================================================
``optimize``        compile a program with an optimizer on a trainset and save the result as a
                    new immutable program version (the seed's optimization runs)
``evaluate``        score a program (or a stored version) on a dataset
``health_check``    probe registered models and record their health (periodic: the seed's
                    ``ModelHealthCheckWorker``)
``experiment``      run an offline experiment, its record in the store (``ExperimentWorker``)
``rollout_tick``    one tick of a rollout controller (``DeploymentWorker``'s loop, done right):
                    calls the ticker the rollout engine provides
==================  =========================================================================

Each is idempotent where it writes: an optimize job that saved its version and died before it
was marked completed finds that version (``created_by="job:<id>"``) on its retry instead of
saving a second one. Bad args raise ``JobError(discard=True)``: no retry would fix them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from dspex.errors import DSPexError, JobError
from dspex.store import Programs
from dspex.store.programs import hash_trainset

from .inputs import (
    bad,
    build_program,
    dataset_label,
    load_dataset,
    resolve_lm,
    resolve_metric,
    strip_lm,
)
from .registry import JobContext, register_worker

__all__ = [
    "DEFAULT_ROLLOUT_TICKER",
    "RolloutTicker",
    "evaluate",
    "experiment",
    "health_check",
    "optimize",
    "register_builtins",
    "rollout_tick",
    "set_rollout_ticker",
]

#: where the rollout engine's tick function is looked up when none was set in this process
DEFAULT_ROLLOUT_TICKER = "dspex.pipelines.rollouts.controller:tick_job"

#: ``ticker(args, ctx) -> dict | None``: advance the rollout named by ``args`` by one tick
#: (load its state from the store, take a metrics snapshot, ``step``, persist, act)
RolloutTicker = Callable[[dict[str, Any], JobContext], Mapping[str, Any] | None]
_ticker: RolloutTicker | None = None


def _require(args: Mapping[str, Any], *keys: str) -> None:
    missing = [k for k in keys if args.get(k) in (None, "", {})]
    if missing:
        raise bad(f"The job's args lack {missing}.")


def _ray_settings(args: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
    """Optimizer settings that spread candidates and trials over Ray, when asked and connected."""
    if not args.get("ray"):
        return {}, None
    from dspex.actors._ray import ray_ready

    if not ray_ready():
        return {}, None
    from dspex.pipelines.optimization import RayEvaluator, RayTrialRunner, WorkerPool

    pool = WorkerPool(num_workers=int(args.get("ray_workers", 2)))
    return {"optimizer_evaluator": RayEvaluator(pool=pool), "optimizer_trial_runner": RayTrialRunner(pool=pool)}, pool


def optimize(args: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Optimize a program and save it as a new version."""
    import dspex
    from dspex.optimizers import get_optimizer

    _require(args, "program", "trainset", "lm")
    store = ctx.store
    program, info = build_program(args["program"], store)
    save_as = str(args.get("save_as") or info.get("stored") or "")
    if not save_as:
        raise bad("Name the program version to save: args['save_as'] (--save-as).")
    created_by = f"job:{ctx.job.id}"
    programs = Programs(store)
    try:
        done = [v for v in programs.versions(save_as) if v.created_by == created_by]
    except DSPexError:
        done = []
    if done:  # an earlier attempt saved it, then died before completing: do not save twice
        v = done[-1]
        return {"program": save_as, "version": v.version, "score": v.score, "resumed": True, **v.notes.get("summary", {})}

    train = load_dataset(args["trainset"], program)
    val = load_dataset(args["valset"], program) if args.get("valset") else None
    metric = resolve_metric(args.get("metric"), args["trainset"], program)
    lm_spec = resolve_lm(args["lm"], store)
    name = str(args.get("optimizer") or "BootstrapFewShot")
    try:
        cls: Any = get_optimizer(name)
    except DSPexError as exc:
        raise bad(exc.message) from exc
    params = dict(args.get("optimizer_params") or {})
    try:
        optimizer = cls(metric=metric, **params)
    except TypeError as exc:
        raise bad(f"{name} does not take these parameters: {exc}.") from exc
    except DSPexError as exc:
        raise bad(exc.message) from exc
    compile_kwargs = dict(args.get("compile") or {})
    if val is not None:
        compile_kwargs["valset"] = val
    settings, pool = _ray_settings(args)
    started = time.perf_counter()
    try:
        with dspex.context(lm=lm_spec.build(), **settings):
            compiled = optimizer.compile(program, trainset=train, **compile_kwargs)
    except TypeError as exc:
        raise bad(f"{name}.compile() does not take {sorted(compile_kwargs)}: {exc}.") from exc
    finally:
        if pool is not None:
            pool.shutdown()
    record = getattr(compiled, "optimization_result", None)
    best = getattr(record, "best_score", None)
    summary = {
        "optimizer": name,
        "lm": lm_spec.model,
        "trainset": dataset_label(args["trainset"]),
        "valset": dataset_label(args["valset"]) if args.get("valset") else None,
        "best_score_pct": best,
        "baseline_score_pct": getattr(record, "baseline_score", None),
        "lm_calls": getattr(record, "lm_calls", None),
        "cost_usd": getattr(record, "cost_usd", None),
        "duration_s": round(time.perf_counter() - started, 3),
    }
    version = programs.save_version(
        save_as,
        strip_lm(compiled.dump_state()),
        score=None if best is None else float(best) / 100.0,
        created_by=created_by,
        trainset_hash=hash_trainset(train),
        notes={"recipe": info["recipe"], "optimizer_params": params, "from": info.get("version"), "summary": summary},
        tags=[str(t) for t in args.get("tags") or []],
    )
    return {"program": save_as, "version": version.version, "score": version.score, **summary}


def evaluate(args: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Score a program (or a stored version) on a dataset."""
    import dspex

    _require(args, "program", "devset", "lm")
    program, info = build_program(args["program"], ctx.store)
    dev = load_dataset(args["devset"], program)
    metric = resolve_metric(args.get("metric"), args["devset"], program)
    lm_spec = resolve_lm(args["lm"], ctx.store)
    started = time.perf_counter()
    with dspex.context(lm=lm_spec.build()):
        result = dspex.Evaluate(
            devset=dev,
            metric=metric,
            num_threads=int(args.get("num_threads", 16)),
            display_progress=bool(args.get("progress", False)),
            max_errors=args.get("max_errors"),
        )(program)
    errors = int(getattr(result, "errors", 0) or 0)
    if errors >= len(dev):
        # nothing was measured (an outage, a wrong address): a failure to retry, not a score of 0
        raise JobError(
            f"All {len(dev)} examples failed (their LM calls or the program raised); nothing was measured. "
            f"Check that {lm_spec.model} answers (`dspex models health`)."
        )
    return {
        "score_pct": float(result.score),
        "n": len(dev),
        "errors": errors,
        "program": info.get("stored") or info.get("recipe"),
        "version": info.get("version"),
        "dataset": dataset_label(args["devset"]),
        "lm": lm_spec.model,
        "duration_s": round(time.perf_counter() - started, 3),
    }


def health_check(args: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Probe registered models (one, or every model in testing or available)."""
    from dspex.registry import ModelRegistry, ModelStatus

    registry = ModelRegistry(ctx.store, clock=ctx.clock)
    if args.get("model"):
        names = [str(args["model"])]
        try:
            registry.get(names[0])
        except DSPexError as exc:
            raise bad(exc.message) from exc
    else:
        names = [m.name for m in registry.models() if m.status in (ModelStatus.TESTING, ModelStatus.AVAILABLE)]
    timeout_s = float(args.get("timeout_s", 10.0))
    models: dict[str, Any] = {}
    for name in names:
        if ctx.should_stop():
            break
        r = registry.health_check(name, timeout_s=timeout_s)
        models[name] = {"success": r.success, "latency_ms": round(r.latency_ms, 1), "health": r.health.value, "error": r.error}
    return {"checked": len(models), "healthy": sum(1 for m in models.values() if m["success"]), "models": models}


def experiment(args: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Run an offline experiment; its record lives in the store's experiments table."""
    from dspex.pipelines.experiments import ExperimentRunner, ExperimentSpec, Report
    from dspex.pipelines.experiments.store_archive import StoreArchive
    from dspex.registry import ModelRegistry

    _require(args, "spec")
    try:
        spec = ExperimentSpec(**dict(args["spec"]))
    except DSPexError as exc:
        raise bad(exc.message) from exc
    backend = str(args.get("backend", "auto"))
    runner = ExperimentRunner(backend=backend, registry=ModelRegistry(ctx.store), archive=StoreArchive(ctx.store))
    result = runner.run(spec)
    out: dict[str, Any] = {
        "experiment_id": result.experiment_id,
        "name": result.name,
        "n": result.n,
        "winner": result.winner,
        "conclusion": result.conclusion,
    }
    if args.get("report_dir"):
        paths = Report(result).write(str(args["report_dir"]))
        out["report"] = {p.name: str(p) for p in paths.all()}
    return out


def set_rollout_ticker(fn: RolloutTicker | None) -> None:
    """Install the function ``rollout_tick`` jobs call in this process (None: look it up at
    ``DEFAULT_ROLLOUT_TICKER`` again)."""
    global _ticker
    _ticker = fn


def rollout_tick(args: dict[str, Any], ctx: JobContext) -> dict[str, Any] | None:
    """One controller tick of a rollout (args name it, e.g. ``{"program": "qa"}``)."""
    ticker = _ticker
    if ticker is None:
        from dspex.pipelines.experiments.spec import import_object

        path = str(args.get("ticker") or DEFAULT_ROLLOUT_TICKER)
        try:
            ticker = import_object(path)
        except DSPexError as exc:
            raise JobError(
                f"No rollout controller is installed ({exc.message}); the rollout engine provides "
                f"{DEFAULT_ROLLOUT_TICKER} or calls set_rollout_ticker(fn).",
                discard=True,
            ) from exc
    out = ticker(dict(args), ctx)
    return None if out is None else dict(out)


def register_builtins() -> None:
    """Register the built-in kinds (called once, the first time a kind is looked up)."""
    register_worker(
        "optimize", optimize, queue="default", max_attempts=3, timeout_s=6 * 3600.0, num_cpus=0.5,
        description="Optimize a program and save it as a new version.",
    )
    register_worker("evaluate", evaluate, max_attempts=3, timeout_s=3600.0, description="Score a program on a dataset.")
    register_worker(
        "health_check", health_check, max_attempts=3, timeout_s=600.0, unique_period_s=60.0,
        description="Probe registered models and record their health.",
    )
    register_worker(
        "experiment", experiment, max_attempts=2, timeout_s=12 * 3600.0, num_cpus=0.25,
        description="Run an offline experiment; its record lives in the store.",
    )
    register_worker(
        "rollout_tick", rollout_tick, max_attempts=5, timeout_s=300.0, unique_period_s=5.0,
        description="One tick of a rollout controller.",
    )
