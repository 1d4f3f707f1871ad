"""Rows to models and back, and the checks of values an action is given."""

from __future__ import annotations

from datetime import UTC, datetime

from dspex.errors import ValidationError
from dspex.registry.assignment import Strategy
from dspex.registry.model import Model, ModelStatus
from dspex.store.schema import ModelRow

__all__ = ["check_name", "check_positive", "check_price", "epoch_s", "model_from_row", "parse_strategy", "utc_datetime"]


def epoch_s(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


def utc_datetime(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def model_from_row(row: ModelRow) -> Model:
    return Model(
        id=row.id,
        name=row.name,
        provider=row.provider,
        model_name=row.model_name,
        base_url=row.base_url,
        secret_ref=row.secret_ref,
        config=dict(row.config or {}),
        status=ModelStatus(row.status),
        status_reason=row.status_reason,
        input_price_per_1m_usd=row.input_price_per_1m_usd,
        output_price_per_1m_usd=row.output_price_per_1m_usd,
        max_tokens=row.max_tokens,
        context_window=row.context_window,
        supports_functions=row.supports_functions,
        supports_streaming=row.supports_streaming,
        average_latency_ms=row.average_latency_ms,
        success_rate=row.success_rate,
        last_health_check_s=epoch_s(row.last_health_check),
        last_call_s=epoch_s(row.last_call_at),
    )


def check_positive(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValidationError(f"{name} must be a positive integer, got {value!r}.", field=name)
    return value


def check_price(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValidationError(f"{name} must be a non-negative number of USD, got {value!r}.", field=name)
    return float(value)


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise ValidationError(f"A {kind} name is a non-empty string of at most 200 characters.", field="name")
    return name


def parse_strategy(value: Strategy | str) -> Strategy:
    try:
        return Strategy(value)
    except ValueError:
        raise ValidationError(
            f"Unknown routing strategy {value!r}; use one of {[s.value for s in Strategy]}.", field="strategy"
        ) from None
