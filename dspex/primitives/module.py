"""``Module``: composition of predictors, learned state, save/load, batch (DSPy's ``dspy.Module``).

A module's learned state is the state of its predictors (demos, instructions, field prefixes,
per-predictor LM settings). ``save("prog.json")`` writes that state in DSPy's JSON layout
(``{"<predictor path>": {"traces", "train", "demos", "signature", "lm"}, "metadata": ...}``),
so a program saved by dspex loads in DSPy and the other way round. ``save(dir,
save_program=True)`` pickles the whole program with cloudpickle instead.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import json
import logging
import platform
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dspex import telemetry
from dspex.telemetry import names
from dspex.errors import ConfigurationError
from dspex.settings import settings
from dspex.utils.callback import active_callbacks, with_callbacks, with_callbacks_async

__all__ = ["BaseModule", "Module", "Parameter"]

log = logging.getLogger("dspex.module")

_MODULE_EVENT = names.MODULE


def _event() -> tuple[str, ...]:
    """The outermost module call is the program; calls below it are modules."""
    return names.PROGRAM if telemetry.current_span() is None else _MODULE_EVENT


class Parameter:
    """Marker for objects that hold learned state (Predict)."""

    def reset(self) -> None:  # pragma: no cover - overridden
        pass

    def dump_state(self) -> dict[str, Any]:  # pragma: no cover - overridden
        return {}

    def load_state(self, state: dict[str, Any]) -> Any:  # pragma: no cover - overridden
        return self


class BaseModule:
    """Parameter discovery, copying and state (de)serialization."""

    def named_parameters(self) -> list[tuple[str, Parameter]]:
        """Every Parameter reachable from this module's attributes, with its attribute path
        (``"generate.predict"``, ``"layers[0]"``, ``"tools['search']"``), as DSPy names them.
        A sub-module already compiled by an optimizer (``_compiled``) is frozen and skipped."""
        seen: set[int] = set()
        out: list[tuple[str, Parameter]] = []

        def add(name: str, value: Any) -> None:
            if isinstance(value, Parameter):
                if id(value) not in seen:
                    seen.add(id(value))
                    out.append((name, value))
            elif isinstance(value, BaseModule) and not getattr(value, "_compiled", False):
                for sub_name, param in value.named_parameters():
                    add(f"{name}.{sub_name}", param)

        if isinstance(self, Parameter):
            add("self", self)
        for name, value in self.__dict__.items():
            if isinstance(value, Parameter | BaseModule):
                add(name, value)
            elif isinstance(value, list | tuple):
                for i, item in enumerate(value):
                    add(f"{name}[{i}]", item)
            elif isinstance(value, dict):
                for key, item in value.items():
                    add(f"{name}['{key}']", item)
        return out

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def named_sub_modules(self, type_: type | None = None, skip_compiled: bool = False) -> Iterator[tuple[str, Any]]:
        """This module and every module under it, breadth first: ("self", self), ("self.x", ...)."""
        type_ = type_ or BaseModule
        queue: list[tuple[str, Any]] = [("self", self)]
        seen = {id(self)}
        while queue:
            name, item = queue.pop(0)
            if isinstance(item, type_):
                yield name, item
            if isinstance(item, BaseModule):
                if skip_compiled and getattr(item, "_compiled", False):
                    continue
                for sub_name, sub in item.__dict__.items():
                    _enqueue(sub, f"{name}.{sub_name}", queue, seen)

    def deepcopy(self) -> Any:
        """A deep copy; attributes that cannot be deep-copied (clients, locks) are shared."""
        try:
            return copy.deepcopy(self)
        except Exception:
            pass
        new = self.__class__.__new__(self.__class__)
        for attr, value in self.__dict__.items():
            if isinstance(value, BaseModule):
                setattr(new, attr, value.deepcopy())
            else:
                try:
                    setattr(new, attr, copy.deepcopy(value))
                except Exception:
                    try:
                        setattr(new, attr, copy.copy(value))
                    except Exception:
                        setattr(new, attr, value)
        return new

    def reset_copy(self) -> Any:
        """A deep copy with every predictor's learned state cleared."""
        new = self.deepcopy()
        for param in new.parameters():
            param.reset()
        return new

    def dump_state(self) -> dict[str, Any]:
        return {name: param.dump_state() for name, param in self.named_parameters()}

    def load_state(self, state: dict[str, Any]) -> Any:
        missing = [name for name, _ in self.named_parameters() if name not in state]
        if missing:
            raise ConfigurationError(
                f"The saved state has no entry for predictor(s) {missing}; it was saved from a "
                "program with a different structure. Load it into the same program class."
            )
        for name, param in self.named_parameters():
            param.load_state(state[name])
        return self

    def save(self, path: str | Path, save_program: bool = False) -> None:
        """Save learned state as JSON (``.json``) or pickle (``.pkl``); or the whole program
        (``save_program=True``, ``path`` a directory) with cloudpickle."""
        path = Path(path)
        metadata = _metadata()
        if save_program:
            import cloudpickle

            if path.suffix:
                raise ConfigurationError(
                    f"save_program=True saves into a directory; {str(path)!r} looks like a file. Pass a directory path."
                )
            path.mkdir(parents=True, exist_ok=True)
            with open(path / "program.pkl", "wb") as f:
                cloudpickle.dump(self, f)
            with open(path / "metadata.json", "w", encoding="utf-8") as f:
                json.dump(metadata, f, indent=2)
            return
        state = self.dump_state()
        state["metadata"] = metadata
        if path.suffix == ".json":
            try:
                text = json.dumps(state, indent=2, ensure_ascii=False)
            except TypeError as exc:
                raise ConfigurationError(
                    f"The program's state is not JSON-serializable ({exc}); save it as .pkl instead."
                ) from exc
            path.write_text(text, encoding="utf-8")
        elif path.suffix == ".pkl":
            import cloudpickle

            with open(path, "wb") as f:
                cloudpickle.dump(state, f)
        else:
            raise ConfigurationError(f"Save to a .json or .pkl file, got {str(path)!r}.")

    def load(self, path: str | Path) -> Any:
        path = Path(path)
        if not path.exists():
            raise ConfigurationError(f"No saved program at {str(path)!r}.")
        if path.suffix == ".json":
            state = json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".pkl":
            import cloudpickle

            with open(path, "rb") as f:
                state = cloudpickle.load(f)
        else:
            raise ConfigurationError(f"Load from a .json or .pkl file, got {str(path)!r}.")
        state.pop("metadata", None)
        return self.load_state(state)


def _enqueue(value: Any, path: str, queue: list[tuple[str, Any]], seen: set[int]) -> None:
    if isinstance(value, BaseModule):
        if id(value) not in seen:
            seen.add(id(value))
            queue.append((path, value))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _enqueue(item, f"{path}[{i}]", queue, seen)
    elif isinstance(value, dict):
        for key, item in value.items():
            _enqueue(item, f"{path}[{key}]", queue, seen)


def _metadata() -> dict[str, Any]:
    from dspex import __version__

    # DSPy reads only metadata.dependency_versions and compares every key it finds there with
    # its own, so only keys DSPy knows go in it; dspex's own version sits beside it.
    return {
        "dependency_versions": {"python": ".".join(platform.python_version_tuple()[:2])},
        "dspex_version": __version__,
    }


class Module(BaseModule):
    """Base class of programs. Subclasses define ``forward`` (and optionally ``aforward``).

    ``program(**inputs)`` calls ``forward``; ``await program.acall(**inputs)`` calls
    ``aforward``, which by default runs ``forward`` in a worker thread (so a sync program still
    runs concurrently under asyncio, e.g. in ``Evaluate``).
    """

    # Class-level defaults, so a subclass that forgets super().__init__() still works (DSPy
    # guarantees this with a metaclass).
    _compiled: bool = False
    callbacks: list[Any] | tuple[Any, ...] = ()

    def __init__(self, callbacks: list[Any] | None = None) -> None:
        if callbacks is not None and not isinstance(callbacks, list | tuple):
            raise TypeError(
                f"callbacks must be a list of dspex.BaseCallback, got {type(callbacks).__name__}. (To give "
                "instructions, write dspex.Predict(dspex.Signature('a -> b', 'instructions')).)"
            )
        self.callbacks = list(callbacks or [])
        self._compiled = False

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward(self, **inputs).")

    async def aforward(self, *args: Any, **kwargs: Any) -> Any:
        ctx = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, lambda: ctx.run(self.forward, *args, **kwargs))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if settings.get("track_usage") and settings.get("usage_tracker") is None:
            return tracked(lambda: self.__call__(*args, **kwargs))
        cbs = active_callbacks(self)
        with telemetry.span(_event(), module=type(self).__name__):
            if cbs:
                return with_callbacks(cbs, "module", self, kwargs, lambda: self.forward(*args, **kwargs))
            return self.forward(*args, **kwargs)

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        if settings.get("track_usage") and settings.get("usage_tracker") is None:
            return await atracked(lambda: self.acall(*args, **kwargs))
        cbs = active_callbacks(self)
        async with telemetry.span(_event(), module=type(self).__name__):
            if cbs:
                return await with_callbacks_async(cbs, "module", self, kwargs, lambda: self.aforward(*args, **kwargs))
            return await self.aforward(*args, **kwargs)

    def named_predictors(self) -> list[tuple[str, Any]]:
        from dspex.predict.predict import Predict

        return [(name, p) for name, p in self.named_parameters() if isinstance(p, Predict)]

    def predictors(self) -> list[Any]:
        return [p for _, p in self.named_predictors()]

    def set_lm(self, lm: Any) -> None:
        for _, predictor in self.named_predictors():
            predictor.lm = lm

    def get_lm(self) -> Any:
        lms = {id(p.lm): p.lm for p in self.predictors()}
        if len(lms) == 1:
            return next(iter(lms.values()))
        raise ConfigurationError(
            "The predictors of this program use different LMs (or some none); use "
            "named_predictors() to read each one's lm."
        )

    def map_named_predictors(self, func: Callable[[Any], Any]) -> Module:
        """Replace each predictor ``p`` with ``func(p)``."""
        for name, predictor in self.named_predictors():
            _set_by_path(self, name, func(predictor))
        return self

    def batch(
        self,
        examples: list[Any],
        num_threads: int | None = None,
        max_errors: int | None = None,
        return_failed_examples: bool = False,
        provide_traceback: bool | None = None,
        disable_progress_bar: bool = False,
    ) -> Any:
        """Run the program on many examples concurrently (their ``inputs()``), in order."""
        from dspex.evaluate.parallel import run_parallel

        results, failed, errors = run_parallel(
            self,
            [ex.inputs() if hasattr(ex, "inputs") else ex for ex in examples],
            num_threads=num_threads,
            max_errors=max_errors,
            display_progress=not disable_progress_bar,
            provide_traceback=provide_traceback,
        )
        if return_failed_examples:
            return results, failed, errors
        return results

    def inspect_history(self, n: int = 1) -> str:
        from dspex.clients.base_lm import inspect_history

        return inspect_history(n)

    def __repr__(self) -> str:
        lines = [f"{name} = {p!r}" for name, p in self.named_predictors()]
        return "\n".join(lines) if lines else f"{type(self).__name__}()"


def tracked(fn: Callable[[], Any]) -> Any:
    """Run a top-level call with a usage tracker; attach its totals to the prediction."""
    from dspex.utils.usage_tracker import track_usage

    with track_usage() as tracker:
        out = fn()
    if hasattr(out, "set_lm_usage"):
        out.set_lm_usage(tracker.get_total_tokens())
    return out


async def atracked(fn: Callable[[], Any]) -> Any:
    from dspex.utils.usage_tracker import track_usage

    with track_usage() as tracker:
        out = await fn()
    if hasattr(out, "set_lm_usage"):
        out.set_lm_usage(tracker.get_total_tokens())
    return out


def _set_by_path(obj: Any, path: str, value: Any) -> None:
    import re

    tokens = re.findall(r"[^.\[\]]+|\[[^\]]+\]", path)
    target = obj
    for tok in tokens[:-1]:
        target = _step(target, tok)
    last = tokens[-1]
    if last.startswith("["):
        key = last[1:-1].strip("'\"")
        target[int(key) if key.isdigit() else key] = value
    else:
        setattr(target, last, value)


def _step(obj: Any, tok: str) -> Any:
    if tok.startswith("["):
        key = tok[1:-1].strip("'\"")
        return obj[int(key) if key.isdigit() else key]
    return getattr(obj, tok)
