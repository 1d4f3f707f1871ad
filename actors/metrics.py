"""A predictor's measured metrics: counts, errors, rejections and latency percentiles over a
sliding window, on an injected clock.

Time is cut into buckets of ``bucket_s`` (default 1 s) kept for ``horizon_s``; each bucket
holds counts and a DDSketch of latencies (``dspex.telemetry.sketch.QuantileSketch``, 1 %
relative accuracy), so a window is answered by merging the buckets it covers (to within one
bucket at its old end) and views from many predictors merge into one per version. The
supervisor's health check reads these views; the windows of ``dspex.telemetry`` (10 s
resolution and up) are too coarse for rollout steps of a few seconds.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from dspex.telemetry.sketch import QuantileSketch

__all__ = ["MetricsView", "Outcome", "RollingMetrics"]


class Outcome:
    SUCCESS = "success"
    ERROR = "error"
    REJECTED = "rejected"


@dataclass
class MetricsView:
    """Counts and latencies over ``span_s`` seconds (the window, or less when younger)."""

    span_s: float
    count: int = 0  # executions that ran (successes + errors)
    errors: int = 0
    rejected: int = 0  # turned away by backpressure; never ran
    latency: QuantileSketch = field(default_factory=QuantileSketch)

    @property
    def successes(self) -> int:
        return self.count - self.errors

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.count if self.count else None

    @property
    def throughput_per_s(self) -> float:
        return self.count / self.span_s if self.span_s > 0 else 0.0

    def latency_ms(self, q: float) -> float | None:
        value = self.latency.quantile(q)
        return None if value is None else value * 1000.0

    @property
    def p50_ms(self) -> float | None:
        return self.latency_ms(0.5)

    @property
    def p95_ms(self) -> float | None:
        return self.latency_ms(0.95)

    @property
    def p99_ms(self) -> float | None:
        return self.latency_ms(0.99)

    def merge(self, other: MetricsView) -> MetricsView:
        """Fold another predictor's view of the same window into this one (span: the longer)."""
        self.span_s = max(self.span_s, other.span_s)
        self.count += other.count
        self.errors += other.errors
        self.rejected += other.rejected
        self.latency.merge(other.latency)
        return self

    @classmethod
    def merged(cls, views: Iterable[MetricsView]) -> MetricsView:
        out = cls(0.0)
        for v in views:
            out.merge(v)
        return out

    def summary(self) -> dict[str, Any]:
        """The numbers only (for status pages and logs)."""
        return {
            "span_s": self.span_s,
            "count": self.count,
            "errors": self.errors,
            "rejected": self.rejected,
            "error_rate": self.error_rate,
            "throughput_per_s": self.throughput_per_s,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything, the sketch included, as plain data (crosses actor boundaries)."""
        return {**self.summary(), "latency": self.latency.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MetricsView:
        return cls(
            span_s=float(d["span_s"]),
            count=int(d["count"]),
            errors=int(d["errors"]),
            rejected=int(d["rejected"]),
            latency=QuantileSketch.from_dict(d["latency"]),
        )


@dataclass(slots=True)
class _Bucket:
    start_s: float
    count: int = 0
    errors: int = 0
    rejected: int = 0
    latency: QuantileSketch = field(default_factory=QuantileSketch)


class RollingMetrics:
    """Counts and latency sketches in time buckets; see the module docstring."""

    def __init__(
        self, *, bucket_s: float = 1.0, horizon_s: float = 600.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if bucket_s <= 0 or horizon_s < bucket_s:
            raise ValueError(f"RollingMetrics needs 0 < bucket_s <= horizon_s, got {bucket_s} and {horizon_s}.")
        self.bucket_s = bucket_s
        self.horizon_s = horizon_s
        self.clock = clock
        self._buckets: deque[_Bucket] = deque(maxlen=math.ceil(horizon_s / bucket_s) + 1)
        self.started_s = clock()
        self.total = MetricsView(0.0)

    def reset(self) -> None:
        self._buckets.clear()
        self.started_s = self.clock()
        self.total = MetricsView(0.0)

    def _bucket(self, now: float) -> _Bucket:
        start = math.floor(now / self.bucket_s) * self.bucket_s
        if not self._buckets or self._buckets[-1].start_s < start:
            self._buckets.append(_Bucket(start))
        return self._buckets[-1]

    def record(self, outcome: str, latency_s: float | None = None) -> None:
        """One execution: ``Outcome.SUCCESS`` / ``ERROR`` with its latency, or ``REJECTED``."""
        b = self._bucket(self.clock())
        if outcome == Outcome.REJECTED:
            b.rejected += 1
            self.total.rejected += 1
            return
        if outcome not in (Outcome.SUCCESS, Outcome.ERROR):
            raise ValueError(f"Unknown outcome {outcome!r}; use success, error or rejected.")
        b.count += 1
        self.total.count += 1
        if outcome == Outcome.ERROR:
            b.errors += 1
            self.total.errors += 1
        if latency_s is not None and math.isfinite(latency_s) and latency_s >= 0:
            b.latency.add(latency_s)
            self.total.latency.add(latency_s)

    def window(self, window_s: float | None = None) -> MetricsView:
        """The last ``window_s`` seconds (None: everything since the last reset)."""
        now = self.clock()
        age = max(0.0, now - self.started_s)
        if window_s is None:
            view = MetricsView(age, self.total.count, self.total.errors, self.total.rejected)
            view.latency.merge(self.total.latency)
            return view
        if window_s <= 0:
            raise ValueError(f"A metrics window must be positive, got {window_s}.")
        cutoff = now - window_s
        view = MetricsView(min(window_s, age))
        for b in reversed(self._buckets):
            if b.start_s + self.bucket_s <= cutoff:
                break
            view.count += b.count
            view.errors += b.errors
            view.rejected += b.rejected
            view.latency.merge(b.latency)
        return view
