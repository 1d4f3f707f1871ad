"""``JSONAdapter``: outputs as one JSON object, with the provider's native structured output.

The request mode is chosen from the signature and the LM's capabilities (``lm.supports``):
strict ``json_schema`` structured output when the provider has it and every output can be
expressed strictly, ``json_object`` mode when an output is a free-form dict, and a plain
request (the format lives in the prompt alone) for providers with neither — as DSPy does for
model names it does not know. ``mode=`` forces one of "json_schema", "json_object", "plain" or
"tools" (the outputs requested as a forced function call).
"""

from __future__ import annotations

import json
from typing import Any

import json_repair

from dspex.adapters.base import Adapter, type_info
from dspex.adapters.utils import parse_error, parse_value, serialize_for_json
from dspex.clients.base_lm import BaseLM
from dspex.errors import BadRequest
from dspex.signatures.compiled import CompiledSignature, compile_signature

__all__ = ["JSONAdapter"]

_MODES = ("auto", "json_schema", "json_object", "plain", "tools")


class JSONAdapter(Adapter):
    name = "json"

    def __init__(
        self,
        callbacks: list[Any] | None = None,
        use_native_function_calling: bool = False,
        mode: str = "auto",
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"JSONAdapter mode must be one of {_MODES}, got {mode!r}.")
        super().__init__(callbacks, use_native_function_calling)
        self.mode = mode

    def choose_mode(self, lm: BaseLM, compiled: CompiledSignature) -> str:
        if self.mode != "auto":
            return self.mode
        if compiled.has_open_dict_output:
            return "json_object" if lm.supports("json_object") else "plain"
        if lm.supports("json_schema"):
            return "json_schema"
        if lm.supports("json_object"):
            return "json_object"
        return "plain"

    def request_kwargs(self, lm: BaseLM, compiled: CompiledSignature, lm_kwargs: dict[str, Any]) -> dict[str, Any]:
        if "response_format" in lm_kwargs or "tools" in lm_kwargs:
            return lm_kwargs  # the caller chose
        mode = self.choose_mode(lm, compiled)
        if mode == "tools":
            lm_kwargs["tools"] = [compiled.tool_schema()]
            lm_kwargs["tool_choice"] = {"type": "function", "function": {"name": "respond"}}
        else:
            rf = compiled.response_format(mode)
            if rf is not None:
                lm_kwargs["response_format"] = rf
        return lm_kwargs

    def __call__(
        self, lm: BaseLM, lm_kwargs: dict[str, Any], signature: Any, demos: list[Any], inputs: dict[str, Any]
    ) -> list[dict[str, Any]]:
        try:
            return super().__call__(lm, lm_kwargs, signature, demos, inputs)
        except BadRequest:
            # The provider refused the structured-output request: ask again with the prompt alone.
            if "response_format" in lm_kwargs or self.mode == "plain":
                raise
            return super().__call__(lm, {**lm_kwargs, "response_format": None}, signature, demos, inputs)

    async def acall(
        self, lm: BaseLM, lm_kwargs: dict[str, Any], signature: Any, demos: list[Any], inputs: dict[str, Any]
    ) -> list[dict[str, Any]]:
        try:
            return await super().acall(lm, lm_kwargs, signature, demos, inputs)
        except BadRequest:
            if "response_format" in lm_kwargs or self.mode == "plain":
                raise
            return await super().acall(lm, {**lm_kwargs, "response_format": None}, signature, demos, inputs)

    # -- prompt pieces -------------------------------------------------------------------------------
    def format_field_structure(self, signature: Any) -> str:
        compiled = compile_signature(signature)
        parts = [
            "All interactions will be structured in the following way, with the appropriate values filled in.",
            "Inputs will have the following structure:",
            "\n\n".join(f"[[ ## {s.name} ## ]]\n{{{s.name}}}" for s in compiled.inputs),
            "Outputs will be a JSON object with the following fields.",
            json.dumps({s.name: f"{{{s.name}}}{s.note}" for s in compiled.outputs}, indent=2, ensure_ascii=False),
        ]
        return "\n\n".join(p for p in parts if p).strip()

    def user_message_output_requirements(self, signature: Any) -> str | None:
        compiled = compile_signature(signature)
        key = (self.name, "request")
        cached = compiled.templates.get(key)
        if cached is None:
            cached = (
                "Respond with a JSON object in the following order of fields: "
                + ", then ".join(f"`{s.name}`{type_info(s)}" for s in compiled.outputs)
                + "."
            )
            compiled.templates[key] = cached
        return str(cached)

    def format_assistant_message_content(
        self, signature: Any, outputs: Any, missing_field_message: str | None = None
    ) -> str:
        compiled = compile_signature(signature)
        d = {s.name: serialize_for_json(outputs[s.name]) if s.name in outputs else missing_field_message for s in compiled.outputs}
        return json.dumps(d, indent=2, ensure_ascii=False)

    def format_field_with_value(self, fields_with_values: dict[Any, Any], role: str = "user") -> str:
        if role == "user":
            return super().format_field_with_value(fields_with_values, role)
        d = {getattr(k, "name", k): serialize_for_json(v) for k, v in fields_with_values.items()}
        return json.dumps(d, indent=2, ensure_ascii=False)

    # -- parsing -----------------------------------------------------------------------------------
    def parse(self, signature: Any, completion: str) -> dict[str, Any]:
        compiled = compile_signature(signature)
        obj = _load_object(completion)
        if not isinstance(obj, dict):
            raise parse_error(self.name, "The LM reply is not a JSON object.", completion)
        fields: dict[str, Any] = {}
        for spec in compiled.outputs:
            if spec.name not in obj:
                continue
            try:
                fields[spec.name] = parse_value(obj[spec.name], spec)
            except ValueError as exc:
                raise parse_error(self.name, f"Failed to parse {spec.name!r} from the LM reply: {exc}.", completion, fields) from None
        if len(fields) != len(compiled.outputs):
            missing = [n for n in compiled.output_names if n not in fields]
            raise parse_error(
                self.name,
                f"The LM's JSON lacks the output field(s) {missing}; expected {list(compiled.output_names)}.",
                completion,
                fields,
            )
        return fields


def _load_object(text: str) -> Any:
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    # The object may sit inside prose or a ```json fence: take the outermost braces.
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        try:
            return json.loads(text[start : end + 1])
        except ValueError:
            text = text[start : end + 1]
    repaired = json_repair.loads(text)
    return repaired if repaired != "" else None


