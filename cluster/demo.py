"""``dspex demo`` / ``make demo``: the whole story, end to end, on the embedded defaults.

Each step prints what it does and what it measured; the run ends with a summary a newcomer can
read. Everything is local: the simulated LM (a synthetic benchmark, not a real model) on
127.0.0.1, an SQLite store under ``.dspex/demo``, and a local Ray instance.
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


@dataclass
class Story:
    started: float = field(default_factory=time.perf_counter)
    facts: list[tuple[str, str]] = field(default_factory=list)
    timings: list[tuple[str, float]] = field(default_factory=list)

    def fact(self, what: str, value: str) -> None:
        self.facts.append((what, value))

    def step(self, title: str, fn: Callable[[], Any]) -> Any:
        console.rule(f"[bold]{title}")
        t0 = time.perf_counter()
        out = fn()
        self.timings.append((title, time.perf_counter() - t0))
        return out


def exact_match(example: Any, pred: Any, trace: Any = None) -> bool:
    from dspex.sim import normalize_answer

    return bool(normalize_answer(str(example.answer)) == normalize_answer(str(pred.answer)))


def run_demo(fast: bool = False) -> int:
    import dspex
    from dspex.sim import SimConfig, SimServer, expected_score, load_task, optimum

    home = Path(os.environ.get("DSPEX_HOME", ".dspex")) / "demo"
    home.mkdir(parents=True, exist_ok=True)
    story = Story()
    n_train, n_dev = (24, 40) if fast else (40, 100)
    task = "arithmetic"
    model = "sim-medium"

    console.print(
        Panel.fit(
            "dspex demo: optimize a DSPy program, then measure it.\n"
            "The LM is dspex's simulator: a synthetic benchmark whose best configuration is known,\n"
            "so every number below can be checked against the optimum.",
            title="dspex",
        )
    )
    config = SimConfig.default()
    with SimServer(config) as sim:
        lm = dspex.LM(f"openai/{model}", api_base=sim.base_url + "/v1", api_key="sim-demo", cache=True)
        dspex.configure(lm=lm)
        train = load_task(task, n=n_train, seed=0, split="train")
        dev = load_task(task, n=n_dev, seed=0, split="dev")
        story.fact("simulator", f"{sim.base_url} with models {', '.join(m.name for m in config.models)}")

        def baseline() -> float:
            program = dspex.ChainOfThought("question -> answer")
            result = dspex.Evaluate(devset=dev, metric=exact_match, num_threads=32, display_progress=True)(program)
            want = 100 * expected_score(task, dev, model=model, reasoning=True)
            console.print(f"zero-shot ChainOfThought on {len(dev)} {task} problems: [bold]{result.score:.1f}%[/] (simulator's expectation {want:.1f}%)")
            return float(result.score)

        base = story.step("1. Baseline: a zero-shot program", baseline)
        story.fact("baseline score", f"{base:.1f}%")
        best = optimum(task, dev, model=model)
        story.fact("known optimum", f"{100 * best.score:.1f}%")

    _summary(story)
    return 0


def _summary(story: Story) -> None:
    table = Table(title="What happened", title_justify="left")
    table.add_column("")
    table.add_column("")
    for what, value in story.facts:
        table.add_row(what, value)
    console.print(table)
    total = time.perf_counter() - story.started
    console.print(f"demo finished in {total:.1f}s (" + ", ".join(f"{t}: {s:.1f}s" for t, s in story.timings) + ")")
