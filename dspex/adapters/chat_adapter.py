"""``ChatAdapter``: DSPy's field-marker format (``[[ ## name ## ]]``).

On a reply it cannot parse it retries the same call once through ``JSONAdapter`` (as DSPy
does); if that fails too it raises ``AdapterParseError`` carrying both raw replies. Unlike
DSPy, it falls back only on parse failures, never on provider errors, so a rate limit or an
outage is not silently doubled into a second request.
"""

from __future__ import annotations

from typing import Any

from dspex.adapters.base import FIELD_HEADER, Adapter, type_info
from dspex.adapters.utils import format_field_value, parse_error, parse_value
from dspex.clients.base_lm import BaseLM
from dspex.errors import AdapterParseError
from dspex.signatures.compiled import compile_signature

__all__ = ["ChatAdapter"]


class ChatAdapter(Adapter):
    name = "chat"

    def __init__(
        self,
        callbacks: list[Any] | None = None,
        use_native_function_calling: bool = False,
        use_json_adapter_fallback: bool = True,
    ) -> None:
        super().__init__(callbacks, use_native_function_calling)
        self.use_json_adapter_fallback = use_json_adapter_fallback

    def __call__(
        self, lm: BaseLM, lm_kwargs: dict[str, Any], signature: Any, demos: list[Any], inputs: dict[str, Any]
    ) -> list[dict[str, Any]]:
        try:
            return super().__call__(lm, lm_kwargs, signature, demos, inputs)
        except AdapterParseError as first:
            if not self.use_json_adapter_fallback:
                raise
            from dspex.adapters.json_adapter import JSONAdapter

            try:
                return JSONAdapter()(lm, lm_kwargs, signature, demos, inputs)
            except AdapterParseError as second:
                raise _both_failed(first, second) from second

    async def acall(
        self, lm: BaseLM, lm_kwargs: dict[str, Any], signature: Any, demos: list[Any], inputs: dict[str, Any]
    ) -> list[dict[str, Any]]:
        try:
            return await super().acall(lm, lm_kwargs, signature, demos, inputs)
        except AdapterParseError as first:
            if not self.use_json_adapter_fallback:
                raise
            from dspex.adapters.json_adapter import JSONAdapter

            try:
                return await JSONAdapter().acall(lm, lm_kwargs, signature, demos, inputs)
            except AdapterParseError as second:
                raise _both_failed(first, second) from second

    # -- prompt pieces ----------------------------------------------------------------------------
    def format_field_structure(self, signature: Any) -> str:
        compiled = compile_signature(signature)
        parts = ["All interactions will be structured in the following way, with the appropriate values filled in."]
        parts.append("\n\n".join(f"[[ ## {s.name} ## ]]\n{{{s.name}}}" for s in compiled.inputs))
        parts.append("\n\n".join(f"[[ ## {s.name} ## ]]\n{{{s.name}}}{s.note}" for s in compiled.outputs))
        parts.append("[[ ## completed ## ]]\n")
        return "\n\n".join(p for p in parts if p).strip()

    def user_message_output_requirements(self, signature: Any) -> str | None:
        compiled = compile_signature(signature)
        key = (self.name, "request")
        cached = compiled.templates.get(key)
        if cached is None:
            cached = (
                "Respond with the corresponding output fields, starting with the field "
                + ", then ".join(f"`[[ ## {s.name} ## ]]`{type_info(s)}" for s in compiled.outputs)
                + ", and then ending with the marker for `[[ ## completed ## ]]`."
            )
            compiled.templates[key] = cached
        return str(cached)

    def format_assistant_message_content(
        self, signature: Any, outputs: Any, missing_field_message: str | None = None
    ) -> str:
        compiled = compile_signature(signature)
        parts = []
        for spec in compiled.outputs:
            value = outputs[spec.name] if spec.name in outputs else missing_field_message
            parts.append(f"[[ ## {spec.name} ## ]]\n{format_field_value(spec, value)}")
        return "\n\n".join(parts).strip() + "\n\n[[ ## completed ## ]]\n"

    # -- parsing -----------------------------------------------------------------------------------
    def parse(self, signature: Any, completion: str) -> dict[str, Any]:
        compiled = compile_signature(signature)
        sections: dict[str, str] = {}
        header: str | None = None
        buf: list[str] = []
        # Split on marker lines; text before the first marker is ignored (as DSPy).
        for line in completion.splitlines():
            stripped = line.strip()
            m = FIELD_HEADER.match(stripped) if stripped.startswith("[[") else None
            if m:
                if header is not None and header not in sections:
                    sections[header] = "\n".join(buf).strip()
                header = m.group(1)
                rest = stripped[m.end() :].strip()
                buf = [rest] if rest else []
            else:
                buf.append(line)
        if header is not None and header not in sections:
            sections[header] = "\n".join(buf).strip()

        fields: dict[str, Any] = {}
        for spec in compiled.outputs:
            if spec.name not in sections:
                continue
            try:
                fields[spec.name] = parse_value(sections[spec.name], spec)
            except ValueError as exc:
                raise parse_error(
                    self.name,
                    f"Failed to parse {spec.name!r} from the LM reply: {exc}.",
                    completion,
                    fields,
                ) from None
        if len(fields) != len(compiled.outputs):
            missing = [n for n in compiled.output_names if n not in fields]
            raise parse_error(
                self.name,
                f"The LM reply lacks the output field(s) {missing}; expected {list(compiled.output_names)}.",
                completion,
                fields,
            )
        return fields


def _both_failed(first: AdapterParseError, second: AdapterParseError) -> AdapterParseError:
    return AdapterParseError(
        f"Neither the chat format nor the JSON format could be parsed. Chat: {first.message} JSON: {second.message}",
        adapter_name="chat+json",
        lm_response=second.lm_response,
        parsed_result=second.parsed_result,
        chat_response=first.lm_response,
    )
