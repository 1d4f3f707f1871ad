"""Function calls a model asks for, and the results of running the tools.

``FunctionCall`` reads the shapes providers actually send, so no adapter has to flatten them:
``{"function_name", "arguments", "call_id"}`` (ours), OpenAI's tool call
``{"id", "type": "function", "function": {"name", "arguments": "<JSON text>"}}``, Anthropic's
``{"type": "tool_use", "id", "name", "input"}``, and any object with ``name`` / ``arguments``
attributes (``dspex.clients.base_lm.ToolCall``). Arguments given as JSON text are parsed and
must be a JSON object.

``ToolResult`` is consistent by construction: a failed call explains itself in ``error``, a
successful one carries no error.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from dspex.types._coerce import parse_json_text
from dspex.types._errors import fail

__all__ = ["FunctionCall", "ToolResult"]

# letters, digits, "_", "-", "." (namespaced tools), starting with a letter or "_"; what
# OpenAI and Anthropic accept for tool names
_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.\-]*$"


def _provider_shape(value: Any) -> Any:
    """Flatten OpenAI / Anthropic / dataclass tool calls into our field names."""
    value = parse_json_text(value, expect=dict)
    if isinstance(value, dict):
        fn = value.get("function")
        if isinstance(fn, dict) and "function_name" not in value:
            return {
                "function_name": fn.get("name"),
                "arguments": fn.get("arguments", {}),
                "call_id": value.get("id"),
            }
        if value.get("type") == "tool_use" and "input" in value:
            return {
                "function_name": value.get("name"),
                "arguments": value["input"],
                "call_id": value.get("id"),
            }
        return value
    if hasattr(value, "name") and hasattr(value, "arguments"):
        return {
            "function_name": value.name,
            "arguments": value.arguments,
            "call_id": getattr(value, "id", None) or None,
        }
    return value


class FunctionCall(BaseModel):
    """A call of a named function (tool) with keyword arguments."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, defer_build=True)

    function_name: str = Field(
        min_length=1,
        max_length=100,
        pattern=_NAME_PATTERN,
        validation_alias=AliasChoices("function_name", "name"),
        description="Name of the function to call.",
    )
    arguments: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments, a JSON object."
    )
    call_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("call_id", "id"),
        description="The provider's id for this call, echoed back with its result.",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_provider(cls, value: Any) -> Any:
        return _provider_shape(value)

    @field_validator("arguments", mode="before")
    @classmethod
    def _arguments_from_text(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return {}  # OpenAI sends "" for a call without arguments
        return parse_json_text(value, expect=dict)


class ToolResult(BaseModel):
    """What running a tool gave: the result on success, an error sentence on failure."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    tool_name: str = Field(min_length=1, max_length=100, description="Name of the tool that ran.")
    result: Any = Field(default=None, description="The tool's return value (None on failure).")
    success: bool = Field(description="Whether the tool ran without error.")
    error: str | None = Field(
        default=None, description="Why the tool failed; only when success is false."
    )
    call_id: str | None = Field(default=None, description="Id of the FunctionCall this answers.")

    @model_validator(mode="before")
    @classmethod
    def _from_json_text(cls, value: Any) -> Any:
        return parse_json_text(value, expect=dict)

    @model_validator(mode="after")
    def _error_matches_success(self) -> ToolResult:
        if self.success and self.error is not None:
            fail(
                "error_only_on_failure",
                "must be empty when success is true; set success=false for a failed call",
                at=("error",),
            )
        if not self.success and not (self.error and self.error.strip()):
            fail(
                "error_explains_failure",
                "must say why the tool failed when success is false",
                at=("error",),
            )
        return self

    @classmethod
    def ok(cls, tool_name: str, result: Any, *, call_id: str | None = None) -> ToolResult:
        return cls(tool_name=tool_name, result=result, success=True, call_id=call_id)

    @classmethod
    def failed(cls, tool_name: str, error: str, *, call_id: str | None = None) -> ToolResult:
        return cls(tool_name=tool_name, success=False, error=error, call_id=call_id)
