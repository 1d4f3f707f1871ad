"""Running an offline experiment: split, one job per arm in parallel, statistics, record.

    runner = ExperimentRunner(archive=ExperimentArchive(".dspex/experiments"))
    result = runner.run(spec)            # on Ray when connected, else in this process
    print(result.conclusion)
    Report(result).write("reports/exp-1")

The arms run at the same time: as Ray tasks (one per arm) when this process is connected to
Ray (or ``backend="ray"``), else in threads of this process whose LM calls share dspex's
I/O loop. Either way every call goes through the LM response cache, every arm is evaluated
on the same test examples, and the experiment's record (spec, status, per-arm results,
report) is saved at each step when an archive is given.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from dspex.pipelines.experiments.arm import ArmJob, ArmResult, arm_seed, run_arm
from dspex.pipelines.experiments.record import ExperimentRecord, RecordSink
from dspex.pipelines.experiments.result import ExperimentResult, analyze
from dspex.pipelines.experiments.spec import ExperimentSpec, LMSpec, VariantSpec
from dspex.pipelines.experiments.split import Split, split_examples

from dspex.errors import DSPexError, ExperimentError, NotFound
from dspex.primitives.module import Module
from dspex.telemetry import span

__all__ = ["Backend", "ExperimentRunner", "run_experiment"]

Backend = Literal["auto", "local", "ray"]
RUN_EVENT = ("dspex", "experiment", "run")


class ExperimentRunner:
    """Runs ``ExperimentSpec``s.

    Args:
        backend: "auto" (Ray when this process is connected to it), "local" or "ray".
        registry: the ``ModelRegistry`` that arms naming a registry model are resolved in
            (default: one over the default store, opened when first needed).
        archive: where records are saved (spec, status, per-arm results, report) at every
            step: an ``ExperimentArchive``, or anything with ``save(record)``.
        clock: seconds since the epoch, for the record's times.
        ray_num_cpus: CPUs reserved per arm task; arms wait on the LM, so a fraction.
    """

    def __init__(
        self,
        *,
        backend: Backend = "auto",
        registry: Any = None,
        archive: RecordSink | None = None,
        clock: Callable[[], float] = time.time,
        ray_num_cpus: float = 0.25,
    ) -> None:
        if backend not in ("auto", "local", "ray"):
            raise ExperimentError(f"backend must be 'auto', 'local' or 'ray', got {backend!r}.")
        if ray_num_cpus <= 0:
            raise ExperimentError(f"ray_num_cpus must be > 0, got {ray_num_cpus}.")
        self.backend = backend
        self.registry = registry
        self.archive = archive
        self.clock = clock
        self.ray_num_cpus = float(ray_num_cpus)

    # -- the steps -----------------------------------------------------------------------------
    def resolve_model(self, model: LMSpec | str) -> LMSpec:
        """An arm's model as an ``LMSpec``; a registry name becomes the registered model's
        client settings and prices (never its key: only the variable holding it)."""
        if isinstance(model, LMSpec):
            return model
        if self.registry is None:
            from dspex.registry import ModelRegistry

            self.registry = ModelRegistry()
        from dspex.registry.lm_factory import lm_kwargs
        from dspex.registry.model import ModelStatus

        try:
            registered = self.registry.get(model)
        except NotFound as exc:
            raise ExperimentError(f"No model {model!r} in the registry: {exc.message}") from exc
        if registered.status in (ModelStatus.DEPRECATED, ModelStatus.ERROR):
            raise ExperimentError(
                f"Registry model {model!r} is {registered.status.value}; approve it again "
                "(registry.retest / approve) or use another model."
            )
        kwargs = lm_kwargs(registered)
        name = kwargs.pop("model")
        temperature = kwargs.pop("temperature", None)
        return LMSpec(
            model=name,
            api_base=kwargs.pop("api_base", None),
            api_key_env=kwargs.pop("api_key_env", None),
            temperature=temperature,
            max_tokens=kwargs.pop("max_tokens", None),
            # the router retries for serving; an experiment call has no router, so retry here
            num_retries=max(3, int(kwargs.pop("num_retries", 0))),
            input_price_per_1m_usd=registered.input_price_per_1m_usd,
            output_price_per_1m_usd=registered.output_price_per_1m_usd,
            settings=kwargs,
        )

    def split(self, spec: ExperimentSpec) -> Split:
        data = spec.dataset
        return split_examples(
            data.load(),
            n_train=data.train_size(),
            n_test=data.test_size(),
            seed=spec.seed,
            label_field=data.label(),
            stratify=data.stratify,
        )

    def jobs(self, spec: ExperimentSpec, split: Split) -> list[ArmJob]:
        metric = spec.metric_fn()
        program_spec = spec.program_spec()
        jobs = []
        for arm in spec.arms():
            lm = self.resolve_model(spec.model_of(arm))
            if spec.repeats > 1 and lm.temperature == 0:
                raise ExperimentError(
                    f"repeats={spec.repeats} but arm {arm.name!r} (registry model) samples at "
                    "temperature 0; set a temperature > 0 in its config or use repeats=1."
                )
            # Sampling arms send their own seed per repeat: identical arms are independent
            # draws, and a rerun sends the same requests (answered by the cache).
            sampling = lm.temperature is None or lm.temperature > 0
            seeds: list[int | None] = [
                arm_seed(spec.seed, arm.name, r) if sampling else None for r in range(spec.repeats)
            ]
            jobs.append(
                ArmJob(
                    name=arm.name,
                    program=_program_for(program_spec.build(), arm),
                    lm=lm,
                    trainset=list(split.train),
                    testset=list(split.test),
                    metric=metric,
                    optimizer=arm.optimizer,
                    optimizer_params=dict(arm.optimizer_params),
                    seeds=seeds,
                    experiment_seed=spec.seed,
                    num_threads=spec.num_threads,
                    failure_score=spec.failure_score,
                )
            )
        return jobs

    def use_ray(self) -> bool:
        if self.backend == "local":
            return False
        from dspex.actors._ray import ray_ready

        if self.backend == "ray" and not ray_ready():
            raise ExperimentError(
                "backend='ray' but this process is not connected to Ray; call ray.init() "
                "(or dspex.cluster's connect) first, or use backend='local'."
            )
        return ray_ready()

    def execute(self, jobs: list[ArmJob]) -> dict[str, ArmResult]:
        """Run every arm at once; the first arm that fails fails the experiment."""
        if self.use_ray():
            return self._on_ray(jobs)
        with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="dspex-arm") as pool:
            futures = {job.name: pool.submit(run_arm, job) for job in jobs}
            results: dict[str, ArmResult] = {}
            for name, fut in futures.items():
                try:
                    results[name] = fut.result()
                except Exception as exc:
                    raise _arm_failed(name, exc) from exc
            return results

    def _on_ray(self, jobs: list[ArmJob]) -> dict[str, ArmResult]:
        import ray
        from dspex.actors._ray import unwrap

        from dspex.clients.cache import get_cache

        get_cache().flush()  # the workers read what this process wrote to the cache's disk layer
        task = ray.remote(run_arm)
        refs = {
            job.name: task.options(
                num_cpus=self.ray_num_cpus, max_retries=0, name=f"dspex-experiment-arm:{job.name}"
            ).remote(job)
            for job in jobs
        }
        results: dict[str, ArmResult] = {}
        try:
            for name, ref in refs.items():
                try:
                    results[name] = ray.get(ref)
                except Exception as exc:
                    cause = unwrap(exc)
                    raise _arm_failed(name, cause) from cause
        finally:
            for name, ref in refs.items():
                if name not in results:
                    ray.cancel(ref, force=True)
        return results

    # -- the whole run -------------------------------------------------------------------------
    def run(self, spec: ExperimentSpec) -> ExperimentResult:
        """Run ``spec`` to completion. On failure the record is marked failed (and saved)
        and an ``ExperimentError`` says which step or arm failed and why."""
        if not isinstance(spec, ExperimentSpec):
            raise ExperimentError(f"run() takes an ExperimentSpec, got {type(spec).__name__}.")
        record = ExperimentRecord(name=spec.name, spec=spec.to_dict(), created_s=self.clock())
        self._save(record)
        record.transition("start", self.clock())
        self._save(record)
        with span(RUN_EVENT, experiment=spec.name, arms=len(spec.arms())) as sp:
            try:
                split = self.split(spec)
                jobs = self.jobs(spec, split)
                arms = self.execute(jobs)
                record.arms = {name: arm.to_dict() for name, arm in arms.items()}
                result = analyze(
                    spec,
                    arms,
                    split=split.to_dict(),
                    example_ids=[
                        _example_id(e, i)
                        for e, i in zip(split.test, split.test_indices, strict=True)
                    ],
                    experiment_id=record.id,
                )
            except Exception as exc:
                record.transition("fail", self.clock(), error=f"{type(exc).__name__}: {exc}")
                self._save(record)
                if isinstance(exc, DSPexError):
                    raise
                raise ExperimentError(
                    f"Experiment {spec.name!r} failed: {type(exc).__name__}: {exc}"
                ) from exc
            record.result = result.to_dict()
            record.transition("complete", self.clock())
            self._save(record)
            sp.set(n=result.n)
            sp.meta(winner=result.winner, experiment_id=record.id)
        return result

    def _save(self, record: ExperimentRecord) -> None:
        if self.archive is not None:
            self.archive.save(record)


def run_experiment(spec: ExperimentSpec, **runner_options: Any) -> ExperimentResult:
    """``ExperimentRunner(**runner_options).run(spec)``."""
    return ExperimentRunner(**runner_options).run(spec)


def _program_for(program: Module, arm: VariantSpec) -> Module:
    """The arm's program: the instruction and demo changes applied to every predictor."""
    for _, predictor in program.named_predictors():
        if arm.instructions is not None:
            predictor.signature = predictor.signature.with_instructions(arm.instructions)
        if arm.demos is not None:
            predictor.demos = [d.copy() for d in arm.demos]
    return program


def _example_id(example: Any, index: int) -> str:
    ref = example.get("sim_ref") if hasattr(example, "get") else None
    return str(ref) if isinstance(ref, str) else str(index)


def _arm_failed(name: str, exc: BaseException) -> ExperimentError:
    detail = exc.message if isinstance(exc, DSPexError) else f"{type(exc).__name__}: {exc}"
    return ExperimentError(f"Arm {name!r} failed: {detail}", arm=name)
