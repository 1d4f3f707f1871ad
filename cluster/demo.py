"""``dspex demo`` / ``make demo``: the whole story, end to end, on the embedded defaults.

1. start local Ray and the simulated LM (a synthetic benchmark whose best configuration is
   known, so every figure can be checked against the optimum);
2. register three models in the store and health-check them;
3. measure a zero-shot ChainOfThought program;
4. optimize it with MIPROv2, its trials and evaluations running on Ray;
5. register both as immutable program versions (v1 champion, v2 candidate);
6. canary v2 on Ray Serve under generated traffic until the rollout controller promotes it;
7. run an experiment (baseline vs optimized, paired statistics) and write its report.

Everything is local: 127.0.0.1, an SQLite store and reports under ``.dspex/demo``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

__all__ = ["run_demo"]

console = Console()
TASK = "arithmetic"
PROGRAM = "arith-qa"
MODELS = {  # registry name -> the simulator's model
    "small": "sim-small",
    "medium": "sim-medium",
    "large": "sim-large",
}


@dataclass
class Story:
    started: float = field(default_factory=time.perf_counter)
    facts: list[tuple[str, str]] = field(default_factory=list)
    timings: list[tuple[str, float]] = field(default_factory=list)

    def fact(self, what: str, value: str) -> None:
        self.facts.append((what, value))
        console.print(f"  [green]✓[/] {what}: [bold]{value}[/]")

    def step(self, title: str, fn: Callable[[], Any]) -> Any:
        console.rule(f"[bold]{title}")
        t0 = time.perf_counter()
        out = fn()
        self.timings.append((title.split(".")[0], time.perf_counter() - t0))
        return out


def exact_match(example: Any, pred: Any, trace: Any = None) -> bool:
    from dspex.sim import normalize_answer

    return bool(normalize_answer(str(example.answer)) == normalize_answer(str(pred.answer)))


@dataclass
class Sizes:
    train: int
    val: int
    test: int
    traffic_rps: float


def run_demo(fast: bool = False) -> int:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("DSPEX_SIM_KEY", "sim-demo-key")
    home = Path(os.environ.get("DSPEX_HOME", ".dspex")) / "demo"
    home.mkdir(parents=True, exist_ok=True)
    sizes = Sizes(train=30, val=40, test=200, traffic_rps=20) if fast else Sizes(train=40, val=60, test=300, traffic_rps=30)
    story = Story()
    console.print(
        Panel.fit(
            "The dspex demo: a DSPy program optimized, versioned, rolled out and measured.\n"
            "The language model is dspex's simulator (a synthetic benchmark, not a real LM):\n"
            "its best configuration is known, so every figure below can be checked.",
            title="dspex",
        )
    )
    import dspex
    from dspex.sim import SimConfig, SimServer

    config = SimConfig.default()
    with SimServer(config) as sim:
        ctx = _Context(home=home, sim_url=sim.base_url, sizes=sizes, story=story)
        story.step("1. Start local Ray and the simulated LM", ctx.start)
        story.step("2. Register models and health-check them", ctx.register_models)
        story.step("3. Measure the zero-shot program", ctx.baseline)
        story.step("4. Optimize with MIPROv2, trials on Ray", ctx.optimize)
        story.step("5. Register the program versions", ctx.register_versions)
        story.step("6. Canary v2 on Ray Serve until promoted", ctx.canary)
        story.step("7. Experiment: baseline vs optimized", ctx.experiment)
        ctx.stop()
        dspex.settings.reset()
    _summary(story)
    return 0


@dataclass
class _Context:
    home: Path
    sim_url: str
    sizes: Sizes
    story: Story
    state: dict[str, Any] = field(default_factory=dict)

    # -- 1 ------------------------------------------------------------------------------------------
    def start(self) -> None:
        from dspex.cluster import init
        from dspex.sim import load_task

        info = init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        self.state["ray"] = info
        self.story.fact("Ray", f"local, {2} CPUs ({type(info).__name__})")
        self.story.fact("simulator", f"{self.sim_url} (models {', '.join(MODELS.values())})")
        s = self.sizes
        self.state["train"] = load_task(TASK, n=s.train, seed=0, split="train")
        self.state["val"] = load_task(TASK, n=s.val, seed=0, split="dev")
        self.state["traffic"] = load_task(TASK, n=200, seed=5, split="dev")

    def stop(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()

    # -- 2 ------------------------------------------------------------------------------------------
    def register_models(self) -> None:
        from dspex.registry import ModelRegistry
        from dspex.sim import SimConfig
        from dspex.store import open_store

        store = open_store(f"sqlite:///{(self.home / 'dspex.db').resolve()}")
        self.state["store"] = store
        registry = ModelRegistry(store)
        self.state["registry"] = registry
        specs = {m.name: m for m in SimConfig.default().models}
        rows = []
        for name, sim_model in MODELS.items():
            spec = specs[sim_model]
            if name not in {m.name for m in registry.models()}:
                registry.register(
                    name,
                    "openai",
                    sim_model,
                    base_url=self.sim_url + "/v1",
                    secret_ref="DSPEX_SIM_KEY",
                    input_price_per_1m_usd=spec.price.input_per_1m_usd,
                    output_price_per_1m_usd=spec.price.output_per_1m_usd,
                    context_window=spec.context_window,
                )
            else:
                registry.update(name, base_url=self.sim_url + "/v1")
            check = registry.health_check(name)
            model = registry.get(name)
            if model.status.value != "available":
                if model.status.value != "testing":
                    registry.retest(name)
                registry.approve(name, reason="demo health check passed")
            rows.append((name, sim_model, f"{check.latency_ms:.0f} ms" if check.success else f"failed: {check.error}", registry.health(name).value))
        _table("models", ["name", "model", "probe", "health"], rows)
        self.story.fact("models registered", ", ".join(MODELS))

    # -- 3 ------------------------------------------------------------------------------------------
    def lm(self, name: str = "medium") -> Any:
        from dspex.registry import lm_for

        return lm_for(self.state["registry"].get(name))

    def baseline(self) -> None:
        import dspex
        from dspex.sim import expected_score, optimum

        dspex.configure(lm=self.lm())
        program = dspex.ChainOfThought("question -> answer")
        result = dspex.Evaluate(devset=self.state["val"], metric=exact_match, num_threads=32, display_progress=True)(program)
        expected = 100 * expected_score(TASK, self.state["val"], model="sim-medium", reasoning=True)
        best = optimum(TASK, self.state["val"], model="sim-medium")
        self.state["baseline_program"] = program
        self.state["baseline_score"] = result.score
        self.state["optimum"] = 100 * best.score
        self.story.fact("zero-shot score", f"{result.score:.1f}% (simulator expects {expected:.1f}%)")
        self.story.fact("known optimum for sim-medium", f"{100 * best.score:.1f}%")

    # -- 4 ------------------------------------------------------------------------------------------
    def optimize(self) -> None:
        import dspex
        from dspex.optimizers import MIPROv2
        from dspex.pipelines.optimization import RayEvaluator, RayTrialRunner

        from dspex.pipelines.optimization import WorkerPool

        optimizer = MIPROv2(metric=exact_match, auto="light", seed=0, num_threads=32)
        student = dspex.ChainOfThought("question -> answer")
        t0 = time.perf_counter()
        # One pool of worker actors for both the evaluations and the trials, released after.
        with WorkerPool(2) as pool:
            optimized = optimizer.compile(
                student,
                trainset=self.state["train"],
                valset=self.state["val"],
                evaluator=RayEvaluator(pool=pool),
                trial_runner=RayTrialRunner(pool=pool),
            )
        elapsed = time.perf_counter() - t0
        score = dspex.Evaluate(devset=self.state["val"], metric=exact_match, num_threads=32)(optimized).score
        self.state["optimized_program"] = optimized
        self.state["optimized_score"] = score
        result = getattr(optimized, "optimization_result", None)
        trials = len(getattr(result, "trials", []) or [])
        calls, paid = getattr(result, "lm_calls", 0), getattr(result, "paid_calls", 0)
        self.story.fact(
            "MIPROv2 on Ray",
            f"{score:.1f}% on the validation set, {100 * score / self.state['optimum']:.0f}% of the known optimum "
            f"({trials} trials, {calls} LM calls of which {paid} paid and {calls - paid} from the cache, {elapsed:.0f}s)",
        )

    # -- 5 ------------------------------------------------------------------------------------------
    def register_versions(self) -> None:
        from dspex.pipelines.rollouts.registry import ProgramRegistry

        registry = ProgramRegistry(self.state["store"], actor="demo")
        recipe = {"signature": "question -> answer", "module": "ChainOfThought"}
        name = f"{PROGRAM}-{int(time.time())}"  # a fresh program per run keeps reruns independent
        v1 = registry.register(
            name, self.state["baseline_program"], recipe=recipe,
            scores={"val": self.state["baseline_score"]}, created_by="demo:zero-shot",
        )
        v2 = registry.register(
            name, self.state["optimized_program"], recipe=recipe, scores={"val": self.state["optimized_score"]},
            optimizer_run="MIPROv2", trainset=self.state["train"], parent=v1.version, created_by="demo:MIPROv2",
        )
        registry.deploy(name, v1.version, reason="the zero-shot baseline")
        self.state["program_name"] = name
        self.state["program_registry"] = registry
        self.state["versions"] = (v1.version, v2.version)
        self.story.fact("program versions", f"{name} v{v1.version} (champion), v{v2.version} (candidate, parent v{v1.version})")

    # -- 6 ------------------------------------------------------------------------------------------
    def canary(self) -> None:
        from dspex.cluster.demo_rollout import run_canary

        outcome = run_canary(self)
        self.story.fact("canary rollout", outcome)

    # -- 7 ------------------------------------------------------------------------------------------
    def experiment(self) -> None:
        from dspex.pipelines.experiments import (
            DatasetSpec,
            ExperimentRunner,
            ExperimentSpec,
            ProgramSpec,
            Report,
            StoreArchive,
            VariantSpec,
        )

        optimized = self.state["optimized_program"]
        predictor = optimized.predictors()[0]
        spec = ExperimentSpec(
            name="demo-optimized-vs-baseline",
            program=ProgramSpec(signature="question -> answer", module="ChainOfThought"),
            dataset=DatasetSpec(task=TASK, n_train=self.sizes.train, n_test=self.sizes.test, seed=3),
            lm="medium",  # registry models: the arms get their client settings and prices from the store
            variants=[
                VariantSpec(
                    name="mipro",
                    instructions=predictor.signature.instructions,
                    demos=list(predictor.demos),
                ),
                VariantSpec(name="large-model", model="large"),
            ],
            margin=0.02,
        )
        runner = ExperimentRunner(archive=StoreArchive(self.state["store"]), registry=self.state["registry"])
        result = runner.run(spec)
        paths = Report(result).write(self.home / "reports" / spec.name)
        console.print(Panel(str(result.conclusion), title="conclusion", expand=False))
        self.story.fact("experiment conclusion", str(result.conclusion).splitlines()[0])
        self.story.fact("report", ", ".join(str(p) for p in paths.all()))


def _table(title: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*(str(v) for v in row))
    console.print(table)


def _summary(story: Story) -> None:
    table = Table(title="What the demo did", title_justify="left", show_header=False)
    table.add_column("")
    table.add_column("")
    for what, value in story.facts:
        table.add_row(what, value)
    console.print(table)
    total = time.perf_counter() - story.started
    steps = ", ".join(f"step {t}: {s:.0f}s" for t, s in story.timings)
    console.print(f"[bold]demo finished in {total:.0f}s[/] ({steps})")
