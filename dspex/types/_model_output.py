"""Token usage and a model's output, in one shape whatever the provider.

``TokenUsage`` accepts OpenAI's names (``prompt_tokens`` / ``completion_tokens`` /
``total_tokens``), Anthropic's (``input_tokens`` / ``output_tokens``) and any object with those
attributes (``dspex.clients.base_lm.Usage``); a missing total is computed, a given total must
equal the sum. Extra provider keys (cache details, reasoning details) are ignored, not refused:
they are not errors in the provider's reply.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from dspex.types._calls import FunctionCall
from dspex.types._coerce import parse_json_text
from dspex.types._errors import fail

__all__ = ["ModelOutput", "TokenUsage"]

_TOOL_FINISH_REASONS = frozenset({"tool_calls", "tool_use", "function_call"})
_TRUNCATED_FINISH_REASONS = frozenset({"length", "max_tokens"})


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


class TokenUsage(BaseModel):
    """Tokens one call (or a sum of calls) used."""

    model_config = ConfigDict(
        extra="ignore", populate_by_name=True, defer_build=True, from_attributes=True
    )

    prompt_tokens: int = Field(
        ge=0,
        validation_alias=AliasChoices("prompt_tokens", "input_tokens"),
        description="Tokens in the prompt.",
    )
    completion_tokens: int = Field(
        ge=0,
        validation_alias=AliasChoices("completion_tokens", "output_tokens"),
        description="Tokens in the completion.",
    )
    # when absent it is computed from the two counts; the schema shows no default so an LM
    # does not copy a 0 from it
    total_tokens: int = Field(
        default=0,
        ge=0,
        description="prompt_tokens + completion_tokens.",
        json_schema_extra=_no_default,
    )

    @model_validator(mode="before")
    @classmethod
    def _read_provider_shape(cls, value: Any) -> Any:
        value = parse_json_text(value, expect=dict)
        if not isinstance(value, dict):
            names = (
                "prompt_tokens",
                "completion_tokens",
                "input_tokens",
                "output_tokens",
                "total_tokens",
            )
            if not any(hasattr(value, key) for key in names):
                return value
            value = {key: getattr(value, key) for key in names if hasattr(value, key)}
        if "total_tokens" in value and value["total_tokens"] is None:
            value = {k: v for k, v in value.items() if k != "total_tokens"}  # "not reported"
        return value

    @model_validator(mode="after")
    def _total_is_sum(self) -> TokenUsage:
        expected = self.prompt_tokens + self.completion_tokens
        if "total_tokens" not in self.model_fields_set:
            self.total_tokens = expected
        elif self.total_tokens != expected:
            fail(
                "total_is_sum",
                f"must equal prompt_tokens + completion_tokens ({self.prompt_tokens} + "
                f"{self.completion_tokens} = {expected}), got {self.total_tokens}",
                at=("total_tokens",),
            )
        return self

    def __add__(self, other: TokenUsage) -> TokenUsage:
        if not isinstance(other, TokenUsage):
            return NotImplemented
        return TokenUsage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )


class ModelOutput(BaseModel):
    """One completion: its text, the model that wrote it, why it stopped, tokens and tool calls."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    content: str = Field(description="The text the model produced ('' when it only called tools).")
    model: str = Field(min_length=1, description="The model that produced it.")
    usage: TokenUsage | None = Field(
        default=None, description="Tokens used, when the provider reported them."
    )
    finish_reason: str | None = Field(
        default=None, description="Why generation stopped (stop, length, ...)."
    )
    tool_calls: list[FunctionCall] = Field(
        default_factory=list, description="Function calls the model asked for."
    )

    @model_validator(mode="before")
    @classmethod
    def _from_json_text(cls, value: Any) -> Any:
        return parse_json_text(value, expect=dict)

    @model_validator(mode="after")
    def _tool_calls_match_finish_reason(self) -> ModelOutput:
        if self.finish_reason in _TOOL_FINISH_REASONS and not self.tool_calls:
            fail(
                "tool_calls_present",
                f"must hold at least one call when finish_reason is {self.finish_reason!r}",
                at=("tool_calls",),
            )
        return self

    @property
    def truncated(self) -> bool:
        """True when the model stopped at its token limit, so the content is cut short."""
        return self.finish_reason in _TRUNCATED_FINISH_REASONS

    @classmethod
    def from_lm_response(cls, response: Any, choice: int = 0) -> ModelOutput:
        """Build from a ``dspex.clients.base_lm.LMResponse`` (read by attribute, not imported)."""
        picked = response.choices[choice]
        usage = getattr(response, "usage", None)
        return cls(
            content=picked.text or "",
            model=response.model,
            usage=TokenUsage.model_validate(usage) if usage is not None else None,
            finish_reason=picked.finish_reason,
            tool_calls=[FunctionCall.model_validate(call) for call in (picked.tool_calls or [])],
        )
