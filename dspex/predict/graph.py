"""``ProgramGraph``: a declarative program whose independent steps run concurrently.

    graph = dspex.ProgramGraph(inputs=["question"])
    graph.add("keywords", dspex.Predict("question -> keywords: list[str]"))
    graph.add("summary", dspex.Predict("question -> summary"))
    graph.add("answer", dspex.ChainOfThought("question, keywords, summary -> answer"))
    graph(question="...").answer

Each step's inputs are bound explicitly (``inputs={"question": "input.question",
"keywords": "keywords.keywords"}``) or, when left out, by name: a graph input of that name, else
the one earlier step that outputs a field of that name. Steps are grouped into execution levels
(a topological sort, the seed's §2.2 execution plan); the steps of a level run concurrently and
a level starts when the one before it has finished. It is a Module: its steps are its
predictors, so optimizers, save and load see them as ``steps['<name>']...``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from dspex import telemetry
from dspex.telemetry import names
from dspex.errors import ConfigurationError, StepFailed
from dspex.primitives.module import Module
from dspex.primitives.prediction import Prediction
from dspex.utils.asyncio_bridge import run_sync

__all__ = ["ProgramGraph", "StepFailed"]

_STEP_EVENT = names.GRAPH_STEP
_GRAPH_EVENT = names.PROGRAM


@dataclass
class _Step:
    name: str
    bindings: dict[str, tuple[str, str]]  # field -> (source step or "input", source field)
    outputs: list[str]
    deps: set[str] = field(default_factory=set)


def _signature_fields(module: Any) -> tuple[list[str], list[str]]:
    sig = getattr(module, "signature", None)
    if sig is None and hasattr(module, "predict"):
        sig = getattr(module.predict, "signature", None)
    if sig is None:
        return [], []
    ins = list(sig.input_fields)
    outs = [k for k in sig.output_fields if k != "reasoning"] + (["reasoning"] if "reasoning" in sig.output_fields else [])
    return ins, outs


class ProgramGraph(Module):
    def __init__(self, inputs: list[str], outputs: dict[str, str] | list[str] | None = None, step_timeout_s: float | None = None) -> None:
        super().__init__()
        if not inputs:
            raise ConfigurationError("A ProgramGraph needs at least one input name, e.g. ProgramGraph(inputs=['question']).")
        self.graph_inputs = list(inputs)
        self.steps: dict[str, Module] = {}
        self._plan: dict[str, _Step] = {}
        self._outputs_spec = outputs
        self.step_timeout_s = step_timeout_s

    def add(
        self,
        name: str,
        module: Module,
        inputs: dict[str, str] | None = None,
        outputs: list[str] | None = None,
    ) -> ProgramGraph:
        """Add a step. ``inputs`` maps the step's input fields to ``"input.<name>"`` or
        ``"<step>.<field>"``; unbound fields are bound by name. ``outputs`` names the fields the
        step produces when the module has no signature to read them from."""
        if name in self._plan or name == "input":
            raise ConfigurationError(f"A step named {name!r} already exists (or the name is reserved); pick another name.")
        if not name.isidentifier():
            raise ConfigurationError(f"Step name {name!r} must be an identifier.")
        sig_in, sig_out = _signature_fields(module)
        out_fields = list(outputs) if outputs is not None else sig_out
        if not out_fields:
            raise ConfigurationError(f"Step {name!r}: its module has no signature; pass outputs=[...] to say what it produces.")
        bindings: dict[str, tuple[str, str]] = {}
        explicit = dict(inputs or {})
        for field_name, ref in explicit.items():
            src, _, src_field = ref.partition(".")
            if not src_field:
                raise ConfigurationError(f"Step {name!r}: binding {ref!r} must look like 'input.<name>' or '<step>.<field>'.")
            if src == "input":
                if src_field not in self.graph_inputs:
                    raise ConfigurationError(f"Step {name!r}: the graph has no input {src_field!r}; its inputs are {self.graph_inputs}.")
            elif src not in self._plan:
                raise ConfigurationError(f"Step {name!r}: binding {ref!r} names step {src!r}, which is not added yet (add steps in order).")
            elif src_field not in self._plan[src].outputs:
                raise ConfigurationError(f"Step {name!r}: step {src!r} produces {self._plan[src].outputs}, not {src_field!r}.")
            bindings[field_name] = (src, src_field)
        for field_name in sig_in:
            if field_name in bindings:
                continue
            if field_name in self.graph_inputs:
                bindings[field_name] = ("input", field_name)
                continue
            producers = [s.name for s in self._plan.values() if field_name in s.outputs]
            if len(producers) == 1:
                bindings[field_name] = (producers[0], field_name)
            elif not producers:
                raise ConfigurationError(
                    f"Step {name!r} needs input {field_name!r}, which is neither a graph input nor produced by an earlier step; "
                    "bind it with inputs={...}."
                )
            else:
                raise ConfigurationError(
                    f"Step {name!r}: input {field_name!r} is produced by several steps {producers}; bind it explicitly with inputs={{...}}."
                )
        step = _Step(name, bindings, out_fields, {src for src, _ in bindings.values() if src != "input"})
        self._plan[name] = step
        self.steps[name] = module
        return self

    def levels(self) -> list[list[str]]:
        """Execution levels: every step's dependencies sit in earlier levels."""
        level_of: dict[str, int] = {}
        for name, step in self._plan.items():  # steps are added after their dependencies
            level_of[name] = 1 + max((level_of[d] for d in step.deps), default=-1)
        levels: list[list[str]] = [[] for _ in range(max(level_of.values(), default=-1) + 1)]
        for name, lvl in level_of.items():
            levels[lvl].append(name)
        return levels

    def forward(self, **inputs: Any) -> Prediction:
        return run_sync(self.aforward(**inputs))

    async def aforward(self, **inputs: Any) -> Prediction:
        missing = [k for k in self.graph_inputs if k not in inputs]
        if missing:
            raise ConfigurationError(f"ProgramGraph is missing input(s) {missing}; it takes {self.graph_inputs}.")
        if not self._plan:
            raise ConfigurationError("This ProgramGraph has no steps; add them with graph.add(name, module).")
        results: dict[str, Any] = {}
        async with telemetry.span(_GRAPH_EVENT, program="ProgramGraph", steps=len(self._plan)):
            for level_no, level in enumerate(self.levels()):
                coros = [self._run_step(self._plan[name], inputs, results, level_no) for name in level]
                outs = await asyncio.gather(*coros, return_exceptions=True)
                for name, out in zip(level, outs, strict=True):
                    if isinstance(out, BaseException):
                        if isinstance(out, StepFailed):
                            raise out
                        raise StepFailed(
                            f"Step {name!r} (level {level_no}) failed: {type(out).__name__}: {out}",
                            step=name,
                            level=level_no,
                        ) from out
                    results[name] = out
        return self._collect(results)

    async def _run_step(self, step: _Step, inputs: dict[str, Any], results: dict[str, Any], level: int) -> Any:
        kwargs = {}
        for field_name, (src, src_field) in step.bindings.items():
            kwargs[field_name] = inputs[src_field] if src == "input" else results[src][src_field]
        module = self.steps[step.name]
        async with telemetry.span(_STEP_EVENT, step=step.name, level=level):
            coro = module.acall(**kwargs)
            if self.step_timeout_s is not None:
                try:
                    return await asyncio.wait_for(coro, self.step_timeout_s)
                except TimeoutError as exc:
                    raise StepFailed(
                        f"Step {step.name!r} (level {level}) took longer than {self.step_timeout_s}s; raise step_timeout_s or speed it up.",
                        step=step.name,
                        level=level,
                    ) from exc
            return await coro

    def _collect(self, results: dict[str, Any]) -> Prediction:
        spec = self._outputs_spec
        out: dict[str, Any] = {}
        if spec is None:
            for name in self.levels()[-1]:
                res = results[name]
                for k in self._plan[name].outputs:
                    out[k] = res[k]
        else:
            mapping = {k: k for k in spec} if isinstance(spec, list) else dict(spec)
            for out_name, ref in mapping.items():
                src, _, src_field = ref.partition(".")
                if src_field and src in results:
                    out[out_name] = results[src][src_field]
                else:
                    producers = [n for n in results if ref in self._plan[n].outputs]
                    if not producers:
                        raise ConfigurationError(f"Graph output {out_name!r}: no step produces {ref!r}.")
                    out[out_name] = results[producers[-1]][ref]
        return Prediction(**out)
