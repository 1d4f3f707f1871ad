"""``Tool``: a plain Python function an agent can call, with its arguments' JSON schemas."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any, get_type_hints

import pydantic
from pydantic import TypeAdapter

from dspex.errors import ToolError
from dspex.utils.callback import active_callbacks, with_callbacks, with_callbacks_async

__all__ = ["Tool"]


class Tool:
    """Wrap ``func`` so an LM can call it: name, description and argument schemas are read from
    its signature, type hints and docstring (or given). Arguments are validated before the call."""

    def __init__(
        self,
        func: Callable[..., Any],
        name: str | None = None,
        desc: str | None = None,
        args: dict[str, Any] | None = None,
        arg_types: dict[str, Any] | None = None,
        arg_desc: dict[str, str] | None = None,
        callbacks: list[Any] | None = None,
    ) -> None:
        self.callbacks = callbacks or []
        if not callable(func):
            raise ToolError(f"A tool wraps a callable; got {type(func).__name__}.")
        self.func = func
        self.name = name or getattr(func, "__name__", type(func).__name__)
        self.desc = desc if desc is not None else (inspect.getdoc(func) or "")
        self.has_kwargs = False
        inferred_args, inferred_types = self._infer(func)
        self.args: dict[str, Any] = args if args is not None else inferred_args
        self.arg_types: dict[str, Any] = arg_types if arg_types is not None else inferred_types
        for arg, text in (arg_desc or {}).items():
            if arg in self.args:
                self.args[arg] = {**self.args[arg], "description": text}
        self._validators = {k: TypeAdapter(t) for k, t in self.arg_types.items() if t is not Any}

    def _infer(self, func: Callable[..., Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        target = func if inspect.isfunction(func) or inspect.ismethod(func) else getattr(func, "__call__", func)  # noqa: B004
        try:
            sig = inspect.signature(target)
        except (TypeError, ValueError):
            return {}, {}
        try:
            hints = get_type_hints(target)
        except Exception:
            hints = {}
        args: dict[str, Any] = {}
        types: dict[str, Any] = {}
        for pname, param in sig.parameters.items():
            if param.kind == param.VAR_KEYWORD:
                self.has_kwargs = True
                continue
            if param.kind == param.VAR_POSITIONAL or pname == "self":
                continue
            hint = hints.get(pname, Any)
            types[pname] = hint
            schema: dict[str, Any] = {} if hint is Any else _inline(TypeAdapter(hint).json_schema())
            if param.default is not param.empty:
                try:
                    schema["default"] = TypeAdapter(type(param.default)).dump_python(param.default, mode="json")
                except Exception:
                    schema["default"] = repr(param.default)
            args[pname] = schema
        return args, types

    def _parse_args(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        parsed: dict[str, Any] = {}
        for key, value in kwargs.items():
            if key not in self.args:
                if self.has_kwargs:
                    parsed[key] = value
                    continue
                raise ToolError(
                    f"Tool {self.name!r} has no argument {key!r}; its arguments are {list(self.args)}."
                )
            validator = self._validators.get(key)
            if validator is None:
                parsed[key] = value
                continue
            try:
                parsed[key] = validator.validate_python(value)
            except pydantic.ValidationError as exc:
                raise ToolError(
                    f"Tool {self.name!r}: argument {key!r} is invalid: {exc.errors()[0]['msg']}."
                ) from None
        return parsed

    def __call__(self, **kwargs: Any) -> Any:
        cbs = active_callbacks(self)
        if cbs:
            return with_callbacks(cbs, "tool", self, kwargs, lambda: self._call(kwargs))
        return self._call(kwargs)

    def _call(self, kwargs: dict[str, Any]) -> Any:
        result = self.func(**self._parse_args(kwargs))
        if inspect.isawaitable(result):
            from dspex.utils.asyncio_bridge import run_sync

            async def _await() -> Any:
                return await result

            return run_sync(_await())
        return result

    async def acall(self, **kwargs: Any) -> Any:
        cbs = active_callbacks(self)
        if cbs:
            return await with_callbacks_async(cbs, "tool", self, kwargs, lambda: self._acall(kwargs))
        return await self._acall(kwargs)

    async def _acall(self, kwargs: dict[str, Any]) -> Any:
        parsed = self._parse_args(kwargs)
        if inspect.iscoroutinefunction(self.func):
            return await self.func(**parsed)
        result = await asyncio.to_thread(self.func, **parsed)
        if inspect.isawaitable(result):
            return await result
        return result

    def __str__(self) -> str:
        desc = f", whose description is <desc>{self.desc}</desc>.".replace("\n", "  ") if self.desc else "."
        return f"{self.name}{desc} It takes arguments {self.args}."

    def __repr__(self) -> str:
        return f"Tool(name={self.name!r}, args={self.args})"


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """Resolve local ``$ref``s so the schema reads on its own in a prompt."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(dict(defs.get(ref.split("/")[-1], {})))
            return {k: walk(v) for k, v in node.items() if k != "title"}
        if isinstance(node, list):
            return [walk(x) for x in node]
        return node

    return dict(walk(schema))
