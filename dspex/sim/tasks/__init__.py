"""Synthetic tasks: seeded datasets whose examples the simulated LM recognises.

``load_task("arithmetic", n=200, seed=0, split="train")`` returns ``dspex.Example`` objects
with their inputs marked; ``get_task(name)`` the task itself (signature, metric, hints,
misleading phrases, clusters).
"""

from __future__ import annotations

from dspex.primitives.example import Example
from dspex.sim.tasks._base import (
    REF_RE,
    AnswerMatch,
    Hint,
    SimExample,
    Task,
    normalize_answer,
    parse_ref,
)
from dspex.sim.tasks.arithmetic import ArithmeticTask
from dspex.sim.tasks.classification import ClassificationTask
from dspex.sim.tasks.multihop import MultiHopTask

__all__ = [
    "REF_RE",
    "TASKS",
    "AnswerMatch",
    "Hint",
    "SimExample",
    "Task",
    "get_task",
    "list_tasks",
    "load_task",
    "lookup_ref",
    "normalize_answer",
    "parse_ref",
    "sim_example",
]

TASKS: dict[str, Task] = {
    t.name: t for t in (ArithmeticTask(), ClassificationTask(), MultiHopTask())
}


def list_tasks() -> list[str]:
    return sorted(TASKS)


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"No simulated task {name!r}; the tasks are {list_tasks()}.") from None


def load_task(name: str, n: int = 100, seed: int = 0, split: str = "train") -> list[Example]:
    """``n`` examples of task ``name`` (the same ones for the same seed and split, and the
    first ``n`` of a larger load), as ``dspex.Example`` with ``.with_inputs(...)`` set."""
    task = get_task(name)
    return [ex.to_example(task.answer_field) for ex in task.load(n, seed=seed, split=split)]


def lookup_ref(text: str) -> tuple[Task, SimExample] | None:
    """The task and example named by the first reference tag in ``text``, or None."""
    ref = parse_ref(text)
    if ref is None or ref[0] not in TASKS:
        return None
    task = TASKS[ref[0]]
    return task, task.example(ref[1], ref[2], ref[3])


def sim_example(example: object) -> tuple[Task, SimExample] | None:
    """Recover the generated example behind a ``dspex.Example``, dict or SimExample."""
    if isinstance(example, SimExample):
        return TASKS[example.task], example
    getter = example.get if hasattr(example, "get") else None
    if getter is not None:
        ref = getter("sim_ref")
        if isinstance(ref, str):
            found = lookup_ref(f"(ref {ref})")
            if found is not None:
                return found
        for key in ("question", "text"):
            value = getter(key)
            if isinstance(value, str):
                found = lookup_ref(value)
                if found is not None:
                    return found
    return None
