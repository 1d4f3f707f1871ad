"""``Adapter``: turns (signature, demos, inputs) into messages and replies into typed outputs.

The call shape is DSPy's: ``adapter(lm, lm_kwargs, signature, demos, inputs)`` returns one
dict of output values per completion; ``await adapter.acall(...)`` is the async form. A
subclass implements the prompt pieces (``format_field_description``, ``format_field_structure``,
``format_task_description``, ``format_user_message_content``,
``format_assistant_message_content``) and ``parse``; the base class assembles them and caches
what depends only on the signature (the system message, the output request).
"""

from __future__ import annotations

import re
from typing import Any

from dspex import telemetry
from dspex.telemetry import names
from dspex.adapters.utils import format_field_value, parse_error
from dspex.clients.base_lm import BaseLM
from dspex.errors import AdapterParseError
from dspex.signatures.compiled import CompiledSignature, FieldSpec, compile_signature
from dspex.utils.callback import active_callbacks, with_callbacks

__all__ = ["Adapter", "FIELD_HEADER", "INCOMPLETE_DEMO_PREFIX"]

FIELD_HEADER = re.compile(r"\[\[ ## (\w+) ## \]\]")
INCOMPLETE_DEMO_PREFIX = "This is an example of the task, though some input or output fields are not supplied."
_MISSING_IN_DEMO = "Not supplied for this particular example. "
_MISSING_IN_HISTORY = "Not supplied for this conversation history message. "

_PARSE_FAILED = names.ADAPTER_PARSE_ERROR


class Adapter:
    """Base class of the prompt formats. See the module docstring."""

    #: a short name used as the template cache key and in errors
    name = "adapter"

    def __init__(self, callbacks: list[Any] | None = None, use_native_function_calling: bool = False) -> None:
        self.callbacks = callbacks or []
        self.use_native_function_calling = use_native_function_calling

    # -- the call ----------------------------------------------------------------------------
    def __call__(
        self,
        lm: BaseLM,
        lm_kwargs: dict[str, Any],
        signature: Any,
        demos: list[Any],
        inputs: dict[str, Any],
    ) -> list[dict[str, Any]]:
        compiled = compile_signature(signature)
        messages = self._format(signature, demos, inputs)
        kwargs = self.request_kwargs(lm, compiled, dict(lm_kwargs))
        outputs = lm(messages=messages, **kwargs)
        return self.postprocess(signature, compiled, outputs)

    async def acall(
        self,
        lm: BaseLM,
        lm_kwargs: dict[str, Any],
        signature: Any,
        demos: list[Any],
        inputs: dict[str, Any],
    ) -> list[dict[str, Any]]:
        compiled = compile_signature(signature)
        messages = self._format(signature, demos, inputs)
        kwargs = self.request_kwargs(lm, compiled, dict(lm_kwargs))
        outputs = await lm.acall(messages=messages, **kwargs)
        return self.postprocess(signature, compiled, outputs)

    def _format(self, signature: Any, demos: list[Any], inputs: dict[str, Any]) -> list[dict[str, Any]]:
        cbs = active_callbacks(self)
        if cbs:
            args = {"signature": signature, "demos": demos, "inputs": inputs}
            return with_callbacks(cbs, "adapter_format", self, args, lambda: self.format(signature, demos, inputs))
        return self.format(signature, demos, inputs)

    def _parse(self, signature: Any, completion: str) -> dict[str, Any]:
        cbs = active_callbacks(self)
        if cbs:
            args = {"signature": signature, "completion": completion}
            return with_callbacks(cbs, "adapter_parse", self, args, lambda: self.parse(signature, completion))
        return self.parse(signature, completion)

    def request_kwargs(self, lm: BaseLM, compiled: CompiledSignature, lm_kwargs: dict[str, Any]) -> dict[str, Any]:
        """Extra request settings this format needs (response_format, tools). Default: none."""
        return lm_kwargs

    def postprocess(self, signature: Any, compiled: CompiledSignature, outputs: list[Any]) -> list[dict[str, Any]]:
        values = []
        for output in outputs:
            logprobs = None
            text = output
            if isinstance(output, dict):
                text = output.get("text")
                logprobs = output.get("logprobs")
                if not text and output.get("tool_calls"):
                    text = self.text_from_tool_calls(output["tool_calls"])
            if not text:
                raise parse_error(self.name, "The LM returned an empty reply.", str(output))
            try:
                value = self._parse(signature, text)
            except AdapterParseError:
                telemetry.emit(_PARSE_FAILED, {"count": 1}, {"adapter": self.name, "signature": compiled.name})
                raise
            if logprobs is not None:
                value["logprobs"] = logprobs
            values.append(value)
        return values

    def text_from_tool_calls(self, tool_calls: list[dict[str, Any]]) -> str | None:
        """A tool-call reply (structured outputs requested as a function call) as JSON text."""
        import json

        args = tool_calls[0].get("function", {}).get("arguments")
        if isinstance(args, dict):
            return json.dumps(args)
        return args if isinstance(args, str) else None

    # -- assembling messages --------------------------------------------------------------------
    def format(self, signature: Any, demos: list[Any], inputs: dict[str, Any]) -> list[dict[str, Any]]:
        compiled = compile_signature(signature)
        history_field = _history_field(compiled)
        if history_field is not None:
            return self._format_with_history(signature, demos, inputs, history_field)
        messages: list[dict[str, Any]] = [{"role": "system", "content": self.system_message(signature, compiled)}]
        if demos:
            messages.extend(self.format_demos(signature, demos))
        content = self.format_user_message_content(signature, inputs, main_request=True)
        messages.append({"role": "user", "content": content})
        return messages

    def _format_with_history(
        self, signature: Any, demos: list[Any], inputs: dict[str, Any], history_field: str
    ) -> list[dict[str, Any]]:
        """A History input becomes user/assistant turns after the demos (as DSPy renders it)."""
        without = signature.delete(history_field)
        messages: list[dict[str, Any]] = [{"role": "system", "content": self.system_message(without)}]
        if demos:
            messages.extend(self.format_demos(without, demos))
        history = inputs.get(history_field)
        for turn in getattr(history, "messages", None) or []:
            messages.append({"role": "user", "content": self.format_user_message_content(without, turn)})
            messages.append(
                {
                    "role": "assistant",
                    "content": self.format_assistant_message_content(without, turn, missing_field_message=_MISSING_IN_HISTORY),
                }
            )
        rest = {k: v for k, v in inputs.items() if k != history_field}
        messages.append({"role": "user", "content": self.format_user_message_content(without, rest, main_request=True)})
        return messages

    def system_message(self, signature: Any, compiled: CompiledSignature | None = None) -> str:
        compiled = compiled or compile_signature(signature)
        key = (self.name, "system")
        cached = compiled.templates.get(key)
        if cached is None:
            cached = (
                f"{self.format_field_description(signature)}\n"
                f"{self.format_field_structure(signature)}\n"
                f"{self.format_task_description(signature)}"
            )
            compiled.templates[key] = cached
        return str(cached)

    def format_demos(self, signature: Any, demos: list[Any]) -> list[dict[str, Any]]:
        compiled = compile_signature(signature)
        names = compiled.fields.keys()
        complete, incomplete = [], []
        for demo in demos:
            if all(k in demo and demo[k] is not None for k in names):
                complete.append(demo)
            elif any(k in demo for k in compiled.input_names) and any(k in demo for k in compiled.output_names):
                incomplete.append(demo)
        messages: list[dict[str, Any]] = []
        for demo in incomplete:
            messages.append(
                {"role": "user", "content": self.format_user_message_content(signature, demo, prefix=INCOMPLETE_DEMO_PREFIX)}
            )
            messages.append(
                {
                    "role": "assistant",
                    "content": self.format_assistant_message_content(signature, demo, missing_field_message=_MISSING_IN_DEMO),
                }
            )
        for demo in complete:
            messages.append({"role": "user", "content": self.format_user_message_content(signature, demo)})
            messages.append(
                {
                    "role": "assistant",
                    "content": self.format_assistant_message_content(signature, demo, missing_field_message=_MISSING_IN_HISTORY),
                }
            )
        return messages

    # -- pieces a format provides ----------------------------------------------------------------
    def format_field_description(self, signature: Any) -> str:
        compiled = compile_signature(signature)
        return (
            f"Your input fields are:\n{describe_fields(compiled.inputs)}\n"
            f"Your output fields are:\n{describe_fields(compiled.outputs)}"
        )

    def format_field_structure(self, signature: Any) -> str:
        raise NotImplementedError(f"{type(self).__name__} must define format_field_structure (see ChatAdapter).")

    def format_task_description(self, signature: Any) -> str:
        instructions = compile_signature(signature).instructions
        objective = ("\n" + " " * 8).join(["", *instructions.splitlines()])
        return f"In adhering to this structure, your objective is: {objective}"

    def format_user_message_content(
        self,
        signature: Any,
        inputs: Any,
        prefix: str = "",
        suffix: str = "",
        main_request: bool = False,
    ) -> str:
        compiled = compile_signature(signature)
        parts = [prefix] if prefix else []
        for spec in compiled.inputs:
            if spec.name in inputs:
                parts.append(f"[[ ## {spec.name} ## ]]\n{format_field_value(spec, inputs[spec.name])}")
        if main_request:
            req = self.user_message_output_requirements(signature)
            if req:
                parts.append(req)
        if suffix:
            parts.append(suffix)
        return "\n\n".join(parts).strip()

    def user_message_output_requirements(self, signature: Any) -> str | None:
        return None

    def format_assistant_message_content(
        self, signature: Any, outputs: Any, missing_field_message: str | None = None
    ) -> str:
        raise NotImplementedError(f"{type(self).__name__} must define format_assistant_message_content (see ChatAdapter).")

    def parse(self, signature: Any, completion: str) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} must define parse(signature, completion) (see ChatAdapter).")

    def format_field_with_value(self, fields_with_values: dict[Any, Any], role: str = "user") -> str:
        """``{FieldInfoWithName | name: value}`` as ``[[ ## name ## ]]`` sections (DSPy's helper)."""
        out = []
        for key, value in fields_with_values.items():
            name = getattr(key, "name", key)
            out.append(f"[[ ## {name} ## ]]\n{format_field_value(None, value)}")
        return "\n\n".join(out).strip()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _history_field(compiled: CompiledSignature) -> str | None:
    key = ("history_field",)
    if key in compiled.templates:
        return compiled.templates[key]
    from dspex.primitives.history import History

    found = next((spec.name for spec in compiled.inputs if spec.annotation is History), None)
    compiled.templates[key] = found
    return found


def describe_fields(specs: tuple[FieldSpec, ...]) -> str:
    """The numbered field list of the system message: ``1. `name` (type): desc``."""
    lines = []
    for i, spec in enumerate(specs):
        line = f"{i + 1}. `{spec.name}` ({spec.type_name}): {spec.desc}"
        if spec.constraints:
            line += f"\nConstraints: {spec.constraints}"
        lines.append(line)
    return "\n".join(lines).strip()


def type_info(spec: FieldSpec) -> str:
    if spec.annotation is str:
        return ""
    return f" (must be formatted as a valid Python {spec.type_name})"
