"""Telemetry: events and spans (``:telemetry`` shape), metrics, alerts, exporters.

See ``events.md`` in this folder for the table of events the core emits.
"""

from dspex.telemetry._events import (
    Event,
    Handler,
    Span,
    attach,
    attach_many,
    current_span,
    detach,
    emit,
    has_handlers,
    list_handlers,
    span,
)

__all__ = [
    "Event",
    "Handler",
    "Span",
    "attach",
    "attach_many",
    "current_span",
    "detach",
    "emit",
    "has_handlers",
    "list_handlers",
    "span",
]
