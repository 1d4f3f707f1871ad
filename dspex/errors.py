"""The one exception hierarchy of dspex.

    DSPexError                      base of everything dspex raises on purpose
    ├── ConfigurationError          a setting is missing or wrong (no LM configured, bad URL, ...)
    │   └── SecretError             an API key could not be found (never carries the key)
    ├── SignatureError              a signature string, field or type is malformed
    ├── ValidationError             a value breaks a field's type or constraint
    ├── AdapterParseError           an LM reply could not be parsed into the signature's outputs
    ├── ProviderError               an LM provider call failed (provider, model, status, retry_after_s)
    │   ├── RateLimited             429, or the local rate limiter would wait past its deadline
    │   ├── ProviderUnavailable     5xx, connection refused or reset, outage
    │   ├── ProviderTimeout         connect / read / total timeout
    │   ├── CircuitOpen             the endpoint's circuit breaker is open
    │   ├── BadResponse             the provider answered with a body we cannot read
    │   ├── AuthenticationError     401 / 403
    │   ├── QuotaExceeded           402, billing or quota
    │   ├── ModelNotFound           404, unknown model
    │   ├── BadRequest              400 / 422, the request itself is wrong
    │   ├── ContextWindowExceeded   the prompt does not fit the model's context window
    │   └── ContentPolicyViolation  the provider refused on content policy
    ├── ToolError                   a ReAct tool raised or was called with bad arguments
    ├── Overloaded                  a bounded queue or concurrency limit is full (backpressure)
    ├── ExecutionAborted            a batch run stopped after too many errors (max_errors)
    ├── StepFailed                  a step of a ProgramGraph raised (step, level)
    ├── NotFound                    a named thing (model, program, version, job, ...) does not exist
    ├── AlreadyExists               a named thing already exists
    ├── InvalidTransition           a state machine refused an event in its current state
    ├── RoutingError                no model could serve a call
    ├── StoreError                  the database failed or its schema is out of date
    ├── OptimizerError              an optimizer was misconfigured or could not run
    ├── DeploymentError             a deployment, pipeline or rollout could not proceed
    ├── ExperimentError             an experiment spec or run is wrong
    └── JobError                    a durable job could not be enqueued or run

Rules (STYLE.md 2-4): third-party errors are mapped at the boundary with ``raise ... from
exc``; provider errors are classified by type and status code, never by message text; every
error pickles with all its fields, because errors cross Ray actor boundaries; a message says
what was wrong and what to do about it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AdapterParseError",
    "AlreadyExists",
    "AuthenticationError",
    "BadRequest",
    "BadResponse",
    "CircuitOpen",
    "ConfigurationError",
    "ContentPolicyViolation",
    "ContextWindowExceeded",
    "DSPexError",
    "DeploymentError",
    "ExecutionAborted",
    "ExperimentError",
    "InvalidTransition",
    "JobError",
    "ModelNotFound",
    "NotFound",
    "OptimizerError",
    "Overloaded",
    "ProviderError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "QuotaExceeded",
    "RateLimited",
    "RoutingError",
    "SecretError",
    "SignatureError",
    "StepFailed",
    "StoreError",
    "ToolError",
    "ValidationError",
    "error_for_status",
]


def _rebuild(cls: type[DSPexError], message: str, fields: dict[str, Any]) -> DSPexError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.message = message
    err.fields = dict(fields)
    for key, value in fields.items():
        setattr(err, key, value)
    return err


class DSPexError(Exception):
    """Base class. ``message`` is the whole human sentence; ``fields`` the structured data."""

    message: str
    fields: dict[str, Any]

    #: a short hint appended to the message when the raiser gives none
    default_hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None, **fields: Any) -> None:
        hint = self.default_hint if hint is None else hint
        if hint and hint not in message:
            message = f"{message.rstrip()} {hint}".strip()
        super().__init__(message)
        self.message = message
        self.fields = fields
        for key, value in fields.items():
            setattr(self, key, value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.fields))

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view (for HTTP replies and job records). Never holds secrets."""
        out: dict[str, Any] = {"type": type(self).__name__, "message": self.message}
        for key, value in self.fields.items():
            if isinstance(value, str | int | float | bool) or value is None:
                out[key] = value
            else:
                out[key] = repr(value)
        return out


class ConfigurationError(DSPexError):
    pass


class SecretError(ConfigurationError):
    default_hint = "Set the environment variable named in the model's secret reference, or pass api_key=."


class SignatureError(DSPexError):
    pass


class ValidationError(DSPexError):
    """A value breaks a field's type or constraint. ``field`` and ``constraint`` name which."""

    field: str | None
    constraint: str | None

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        constraint: str | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(message, field=field, constraint=constraint, **fields)


class AdapterParseError(DSPexError):
    """The LM's reply could not be parsed. ``lm_response`` holds the raw reply text."""

    default_hint = (
        "The model did not follow the output format; try JSONAdapter, a stronger model, "
        "or fewer/clearer output fields."
    )

    adapter_name: str
    lm_response: str | None
    parsed_result: dict[str, Any] | None

    def __init__(
        self,
        message: str,
        *,
        adapter_name: str = "",
        lm_response: str | None = None,
        parsed_result: dict[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(
            message,
            adapter_name=adapter_name,
            lm_response=lm_response,
            parsed_result=parsed_result,
            **fields,
        )


class ProviderError(DSPexError):
    """An LM provider call failed.

    Fields: ``provider`` (e.g. "openai"), ``model``, ``status`` (HTTP status or None),
    ``retry_after_s`` (from Retry-After, or None), ``provider_message`` (the provider's own
    words). ``retryable`` says whether a retry of the same call can succeed.
    """

    retryable: bool = False
    provider: str | None
    model: str | None
    status: int | None
    retry_after_s: float | None
    provider_message: str | None

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        model: str | None = None,
        status: int | None = None,
        retry_after_s: float | None = None,
        provider_message: str | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(
            message,
            provider=provider,
            model=model,
            status=status,
            retry_after_s=retry_after_s,
            provider_message=provider_message,
            **fields,
        )


class RateLimited(ProviderError):
    retryable = True
    default_hint = "Lower the request rate, raise the model's rpm/tpm limits, or add a fallback model."


class ProviderUnavailable(ProviderError):
    retryable = True
    default_hint = "The provider is down or unreachable; retry later or route to a fallback model."


class ProviderTimeout(ProviderError):
    retryable = True
    default_hint = "Raise the timeout (timeout_s=) or use a faster model."


class CircuitOpen(ProviderError):
    retryable = False
    default_hint = "Calls are short-circuited until the breaker half-opens; route to a fallback model."


class BadResponse(ProviderError):
    retryable = True


class AuthenticationError(ProviderError):
    default_hint = "Check the API key (its environment variable) and its permissions."


class QuotaExceeded(ProviderError):
    default_hint = "Check the account's billing or quota with the provider."


class ModelNotFound(ProviderError):
    default_hint = "Check the model name against the provider's model list (GET /v1/models)."


class BadRequest(ProviderError):
    default_hint = "The request was rejected as malformed; check the model's parameters."


class ContextWindowExceeded(ProviderError):
    default_hint = "Shorten the inputs or demos, or route to a model with a larger context window."


class ContentPolicyViolation(ProviderError):
    pass


class ToolError(DSPexError):
    pass


class Overloaded(DSPexError):
    retryable = True
    default_hint = "Retry later, lower the request rate, or raise the concurrency limit / add replicas."


class ExecutionAborted(DSPexError):
    """A batch (Evaluate, Module.batch, an optimizer's evaluation) stopped after too many errors.

    ``errors`` counts them; the first one is chained as ``__cause__``."""

    default_hint = "Fix the failing examples, or raise max_errors to tolerate more failures."


class StepFailed(DSPexError):
    """A step of a ProgramGraph raised; ``step`` and ``level`` say which; the cause is chained."""


class NotFound(DSPexError):
    pass


class AlreadyExists(DSPexError):
    pass


class InvalidTransition(DSPexError):
    """A state machine refused ``event`` in ``state``; ``allowed`` lists what it accepts there."""

    machine: str
    state: str
    event: str
    allowed: tuple[str, ...]

    def __init__(
        self,
        message: str,
        *,
        machine: str = "",
        state: str = "",
        event: str = "",
        allowed: tuple[str, ...] = (),
        **fields: Any,
    ) -> None:
        super().__init__(
            message, machine=machine, state=state, event=event, allowed=tuple(allowed), **fields
        )

    @classmethod
    def of(cls, machine: str, state: str, event: str, allowed: tuple[str, ...] | list[str]) -> InvalidTransition:
        allowed_t = tuple(sorted(allowed))
        options = ", ".join(allowed_t) if allowed_t else "none"
        return cls(
            f"Cannot {event} a {machine} that is {state}; from {state} the allowed actions are: {options}.",
            machine=machine,
            state=state,
            event=event,
            allowed=allowed_t,
        )


class RoutingError(DSPexError):
    pass


class StoreError(DSPexError):
    pass


class OptimizerError(DSPexError):
    pass


class DeploymentError(DSPexError):
    pass


class ExperimentError(DSPexError):
    pass


class JobError(DSPexError):
    pass


def error_for_status(
    status: int,
    message: str,
    *,
    provider: str | None = None,
    model: str | None = None,
    retry_after_s: float | None = None,
    provider_message: str | None = None,
    error_code: str | None = None,
) -> ProviderError:
    """Map an HTTP status (and the provider's error code, when it gives one) to an error type.

    Classification is by status and structured code only, never by message text.
    """
    cls: type[ProviderError]
    code = (error_code or "").lower()
    if code in {"context_length_exceeded", "context_window_exceeded"}:
        cls = ContextWindowExceeded
    elif code in {"content_filter", "content_policy_violation"}:
        cls = ContentPolicyViolation
    elif status == 429:
        cls = RateLimited
    elif status in (401, 403):
        cls = AuthenticationError
    elif status == 402:
        cls = QuotaExceeded
    elif status == 404:
        cls = ModelNotFound
    elif status == 408:
        cls = ProviderTimeout
    elif status == 413:
        cls = ContextWindowExceeded
    elif status in (400, 422):
        cls = BadRequest
    elif status >= 500:
        cls = ProviderUnavailable
    else:
        cls = BadResponse
    return cls(
        message,
        provider=provider,
        model=model,
        status=status,
        retry_after_s=retry_after_s,
        provider_message=provider_message,
    )
