"""What job args name, as JSON, and how a worker (or the CLI, before it enqueues) resolves them.

Programs::

    {"import": "my_pkg.programs:qa"}                      # a Module, or a factory returning one
    {"signature": "question -> answer", "module": "ChainOfThought"}
    {"stored": "qa", "version": "champion"}               # a saved version (number, alias, latest)
    {"stored": "qa", "version": 3, "import": "my_pkg.programs:qa"}

A saved version holds learned state, not code: it is loaded into the program its ``notes
["recipe"]`` names (written by the optimize job), or into the ``import`` / ``signature`` given.

Datasets: ``{"task": "arithmetic", "n": 50, "seed": 0, "split": "train"}`` (a simulated task)
or ``{"path": "data.jsonl"}`` (one JSON object per line; the inputs are the program's input
fields, or ``"inputs": [...]``). Models: ``{"registry": "fast"}`` or an ``LMSpec`` as a dict
(``{"model": "openai/sim-small", "api_base": ...}``). Metrics: an import path, or None (the
task's metric; for files, exact match of the program's output fields).

Every problem is a ``JobError(discard=True)`` naming what to fix: no retry repairs a bad path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dspex.errors import DSPexError, JobError, NotFound
from dspex.primitives.example import Example
from dspex.primitives.module import Module
from dspex.sim.tasks import get_task, list_tasks, normalize_answer
from dspex.store import Programs, Store

__all__ = [
    "FieldsMatch",
    "build_program",
    "dataset_label",
    "load_dataset",
    "parse_program_ref",
    "resolve_lm",
    "resolve_metric",
    "strip_lm",
]

_IMPORT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_SPLITS = ("train", "dev", "test")
MODULES = ("Predict", "ChainOfThought")


def bad(message: str) -> JobError:
    """A job error no retry can fix."""
    return JobError(message, discard=True)


# -- programs -------------------------------------------------------------------------------------
def parse_program_ref(text: str | None, *, module: str = "Predict", version: str | int | None = None) -> dict[str, Any]:
    """The CLI's words for a program as a ref: ``pkg.mod:attr``, a signature (``q -> a``), or a
    stored program name (``qa`` / ``qa@3`` / ``qa@champion``; ``version`` overrides)."""
    if module not in MODULES:
        raise bad(f"--module must be one of {list(MODULES)}, got {module!r}.")
    if not text or not text.strip():
        raise bad("Name a program: 'package.module:attribute', a signature like 'question -> answer', or a stored name.")
    text = text.strip()
    if _IMPORT.match(text):
        ref: dict[str, Any] = {"import": text}
    elif "->" in text:
        ref = {"signature": text, "module": module}
    else:
        name, _, ver = text.partition("@")
        ref = {"stored": name, "version": _version(ver) if ver else "latest"}
    if version is not None:
        if "stored" in ref:
            ref["version"] = _version(str(version))
        else:
            raise bad("A version only applies to a stored program; name it as 'program@version'.")
    return ref


def _version(text: str) -> str | int:
    return int(text) if text.isdigit() else text


def strip_lm(value: Any) -> Any:
    """A program state without LM settings (the run's model is recorded apart, and a stored
    version must not pin an address that changes, like a local server's port)."""
    if isinstance(value, dict):
        return {k: strip_lm(v) for k, v in value.items() if k != "lm"}
    if isinstance(value, list):
        return [strip_lm(v) for v in value]
    return value


def _import(path: str) -> Any:
    from dspex.pipelines.experiments.spec import ProgramSpec

    try:
        return ProgramSpec(factory=path).build()
    except DSPexError as exc:
        raise bad(f"Cannot build the program {path!r}: {exc.message}") from exc


def _from_recipe(recipe: Mapping[str, Any]) -> Module:
    if recipe.get("import"):
        return _import(str(recipe["import"]))
    if recipe.get("signature"):
        import dspex

        module = str(recipe.get("module") or "Predict")
        if module not in MODULES:
            raise bad(f"Unknown program module {module!r}; use one of {list(MODULES)}.")
        try:
            program: Module = getattr(dspex, module)(str(recipe["signature"]))
        except DSPexError as exc:
            raise bad(f"The signature {recipe['signature']!r} is not valid: {exc.message}") from exc
        return program
    raise bad("A program ref needs 'import', 'signature' or 'stored'.")


def recipe_of(ref: Mapping[str, Any]) -> dict[str, Any] | None:
    """How to rebuild the program's code (stored with each version it produces)."""
    if ref.get("import"):
        return {"import": ref["import"]}
    if ref.get("signature"):
        return {"signature": ref["signature"], "module": ref.get("module") or "Predict"}
    return None


def build_program(ref: Mapping[str, Any], store: Store | None = None) -> tuple[Module, dict[str, Any]]:
    """The program a ref names, and what it is (recipe, stored name and version)."""
    if not isinstance(ref, Mapping):
        raise bad(f"A program ref is a JSON object, got {ref!r}.")
    info: dict[str, Any] = {"recipe": recipe_of(ref)}
    stored = ref.get("stored")
    if stored is None:
        return _from_recipe(ref), info
    if store is None:
        raise bad(f"The program {stored!r} is a stored version, but no store was given.")
    try:
        version = Programs(store).version(str(stored), ref.get("version", "latest"))
    except NotFound as exc:
        raise bad(f"{exc.message} See `dspex programs versions {stored}`.") from exc
    recipe = info["recipe"] or version.notes.get("recipe")
    if not recipe:
        raise bad(
            f"Version {version.version} of {stored!r} does not say how to build its program; "
            "name the code too (--program package.module:attribute)."
        )
    program = _from_recipe(recipe)
    try:
        program.load_state(strip_lm(version.state))
    except DSPexError as exc:
        raise bad(f"Version {version.version} of {stored!r} does not fit the program {recipe}: {exc.message}") from exc
    info.update(recipe=recipe, stored=str(stored), version=version.version)
    return program, info


# -- datasets -------------------------------------------------------------------------------------
def dataset_label(ref: Mapping[str, Any]) -> str:
    if ref.get("task"):
        return f"{ref['task']}(n={ref.get('n')}, seed={ref.get('seed', 0)}, split={ref.get('split', 'train')})"
    return str(ref.get("path"))


def _input_fields(program: Module | None) -> list[str]:
    if program is None:
        return []
    names: list[str] = []
    for _, predictor in program.named_predictors():
        for field in predictor.signature.input_fields:
            if field not in names:
                names.append(field)
    return names


def load_dataset(ref: Mapping[str, Any], program: Module | None = None) -> list[Example]:
    """The examples a dataset ref names, with their inputs marked."""
    if not isinstance(ref, Mapping):
        raise bad(f"A dataset ref is a JSON object, got {ref!r}.")
    if ref.get("task"):
        task = str(ref["task"])
        if task not in list_tasks():
            raise bad(f"No simulated task {task!r}; the tasks are {list_tasks()}.")
        split = str(ref.get("split", "train"))
        if split not in _SPLITS:
            raise bad(f"A task split is one of {list(_SPLITS)}, got {split!r}.")
        n, seed = ref.get("n"), ref.get("seed", 0)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise bad(f"A task dataset needs n >= 1 examples, got {n!r}.")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise bad(f"A task dataset's seed is an integer >= 0, got {seed!r}.")
        from dspex.sim.tasks import load_task

        return load_task(task, n, seed=seed, split=split)
    if ref.get("path"):
        return _load_jsonl(Path(str(ref["path"])), ref.get("inputs"), program, ref.get("n"))
    raise bad("A dataset ref needs 'task' (a simulated task) or 'path' (a JSONL file).")


def _load_jsonl(path: Path, inputs: Any, program: Module | None, n: Any) -> list[Example]:
    if not path.is_file():
        raise bad(f"No dataset file at {path}; check the path.")
    keys = [str(k) for k in inputs] if isinstance(inputs, list) else _input_fields(program)
    examples: list[Example] = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise bad(f"{path} line {number} is not JSON ({exc.msg}); each line must be one JSON object.") from exc
            if not isinstance(row, dict):
                raise bad(f"{path} line {number} is a {type(row).__name__}, not a JSON object.")
            missing = [k for k in keys if k not in row]
            if missing:
                raise bad(f"{path} line {number} lacks the input field(s) {missing} the program needs.")
            examples.append(Example(**row).with_inputs(*(keys or list(row)[:1])))
            if isinstance(n, int) and len(examples) >= n:
                break
    if not examples:
        raise bad(f"{path} holds no examples.")
    return examples


# -- metrics and models ---------------------------------------------------------------------------
class FieldsMatch:
    """Normalized exact match of every output field the example has a label for."""

    def __init__(self, fields: list[str]) -> None:
        self.fields = list(fields)

    def __call__(self, example: Any, prediction: Any, trace: Any = None) -> bool:
        checked = 0
        for f in self.fields:
            gold = example.get(f) if hasattr(example, "get") else None
            if gold is None:
                continue
            got = getattr(prediction, f, None)
            if got is None or normalize_answer(str(got)) != normalize_answer(str(gold)):
                return False
            checked += 1
        return checked > 0

    def __repr__(self) -> str:
        return f"FieldsMatch({self.fields!r})"


def resolve_metric(path: str | None, dataset: Mapping[str, Any], program: Module | None = None) -> Callable[..., Any]:
    if path:
        if not _IMPORT.match(path):
            raise bad(f"A metric is an import path 'package.module:function', got {path!r}.")
        from dspex.pipelines.experiments.spec import import_object

        try:
            fn = import_object(path)
        except DSPexError as exc:
            raise bad(exc.message) from exc
        if not callable(fn):
            raise bad(f"The metric {path!r} is not callable.")
        return fn
    if dataset.get("task"):
        return get_task(str(dataset["task"])).metric
    outputs: list[str] = []
    for _, predictor in (program.named_predictors() if program is not None else []):
        outputs += [f for f in predictor.signature.output_fields if f not in outputs]
    if not outputs:
        raise bad("Give a metric (--metric package.module:function) for a dataset file.")
    return FieldsMatch(outputs)


def resolve_lm(ref: Mapping[str, Any] | str, store: Store | None = None) -> Any:
    """An ``LMSpec`` for a model ref (a registry name, or LMSpec fields)."""
    from dspex.pipelines.experiments.spec import LMSpec

    if isinstance(ref, str):
        ref = {"registry": ref}
    if not isinstance(ref, Mapping):
        raise bad(f"A model ref is a registry name or LM settings, got {ref!r}.")
    if "registry" in ref:
        from dspex.pipelines.experiments.runner import ExperimentRunner
        from dspex.registry import ModelRegistry

        registry = ModelRegistry(store) if store is not None else None
        try:
            return ExperimentRunner(registry=registry).resolve_model(str(ref["registry"]))
        except DSPexError as exc:
            raise bad(f"{exc.message} See `dspex models list`.") from exc
    try:
        return LMSpec(**dict(ref))
    except DSPexError as exc:
        raise bad(exc.message) from exc
