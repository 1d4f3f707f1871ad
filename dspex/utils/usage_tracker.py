"""Token usage per LM across a program call (``configure(track_usage=True)``, DSPy's shape)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from dspex.settings import settings

__all__ = ["UsageTracker", "track_usage"]


class UsageTracker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.usage_data: dict[str, list[dict[str, Any]]] = {}

    def add_usage(self, model: str, usage: dict[str, Any]) -> None:
        with self._lock:
            self.usage_data.setdefault(model, []).append(dict(usage))

    def get_total_tokens(self) -> dict[str, dict[str, int]]:
        totals: dict[str, dict[str, int]] = {}
        with self._lock:
            for model, entries in self.usage_data.items():
                agg = totals.setdefault(model, {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
                for e in entries:
                    for k in agg:
                        agg[k] += int(e.get(k, 0) or 0)
        return totals


@contextlib.contextmanager
def track_usage() -> Iterator[UsageTracker]:
    tracker = UsageTracker()
    with settings.context(usage_tracker=tracker):
        yield tracker
