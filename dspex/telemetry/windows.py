"""Sliding windows over time buckets: 1m, 5m, 15m, 1h and 24h for every metric series.

A ``WindowedSeries`` keeps tiers of time buckets aligned to the epoch (so buckets from many
processes line up and merge). A value goes into one bucket only, the open bucket of tier 0;
when a tier's bucket closes it is kept in that tier's ring and merged into the open bucket of
the next tier, so a value is touched once when added and once per tier when rolled up.

    tier  resolution  serves windows up to   closed buckets kept
    0     10 s        1 m                    7
    1     60 s        15 m (5m, 15m)         16
    2     300 s       1 h                    13
    3     3600 s      24 h                   25

A window of W seconds is answered from the first tier whose span covers W: its closed
buckets that end after ``now - W``, plus the open buckets of that tier and all finer tiers.
So a window holds every value of the last W seconds and at most one bucket (the tier's
resolution) of older values: 1m is 60-70 s, 5m is 5-6 min, 1h is 60-65 min, 24h is 24-25 h.

Memory bound per series: at most 61 closed + 4 open = 65 buckets, whatever the load; a bucket
is a ``Stats`` (4 floats, ~200 B) or a ``QuantileSketch`` (at most 64 KiB, ~11 KiB for a day of
latencies), so a histogram series is bounded by 65 x 64 KiB ~ 4 MiB (0.7 MiB measured with
every bucket full) and a counter series by ~15 KiB. Empty buckets are never stored, so an idle
series costs nothing more.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from dspex.telemetry.sketch import Aggregate, aggregate_from_dict

__all__ = [
    "TIERS",
    "WINDOWS",
    "WindowStats",
    "WindowedSeries",
    "parse_window",
]

#: the seed's windows, name -> seconds
WINDOWS: dict[str, float] = {"1m": 60.0, "5m": 300.0, "15m": 900.0, "1h": 3600.0, "24h": 86400.0}

#: (bucket resolution in seconds, longest window served); each resolution divides the next
TIERS: tuple[tuple[float, float], ...] = ((10.0, 60.0), (60.0, 900.0), (300.0, 3600.0), (3600.0, 86400.0))


def parse_window(window: str | float) -> float:
    """Seconds in a window given as seconds or as "30s", "5m", "1h", "1d"."""
    if isinstance(window, int | float):
        seconds = float(window)
    else:
        text = window.strip().lower()
        units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
        try:
            seconds = float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
        except (ValueError, IndexError):
            raise ValueError(
                f"Cannot read window {window!r}; give seconds or a number with s, m, h or d (e.g. '5m')."
            ) from None
    if not 0 < seconds <= TIERS[-1][1]:
        raise ValueError(f"A window is between 0 and {TIERS[-1][1]:g} s (24h), got {window!r}.")
    return seconds


@dataclass(frozen=True)
class WindowStats:
    """Aggregates of one window. Percentiles are None for counters and gauges (no sketch)."""

    window_s: float
    count: float
    sum: float
    avg: float | None
    min: float | None
    max: float | None
    p50: float | None
    p95: float | None
    p99: float | None

    @classmethod
    def of(cls, window_s: float, agg: Aggregate) -> WindowStats:
        if agg.count == 0:
            return cls(window_s, 0.0, 0.0, None, None, None, None, None, None)
        return cls(
            window_s,
            agg.count,
            agg.sum,
            agg.sum / agg.count,
            agg.min,
            agg.max,
            agg.quantile(0.5),
            agg.quantile(0.95),
            agg.quantile(0.99),
        )

    def get(self, aggregation: str) -> float | None:
        """One aggregate by name: count, sum, avg, min, max, p50, p95, p99 or rate (sum per s)."""
        if aggregation == "rate":
            return self.sum / self.window_s
        if aggregation not in _AGGREGATIONS:
            raise ValueError(
                f"Unknown aggregation {aggregation!r}; use one of {', '.join(sorted(_AGGREGATIONS | {'rate'}))}."
            )
        value: float | None = getattr(self, aggregation)
        return value

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_AGGREGATIONS = frozenset({"count", "sum", "avg", "min", "max", "p50", "p95", "p99"})


class WindowedSeries:
    """Tiered time buckets of one series. Not thread-safe: the metrics store holds a lock."""

    __slots__ = ("_make", "_now", "_open", "_rings", "_starts", "head", "open_until")

    def __init__(self, make_aggregate: Callable[[], Aggregate]) -> None:
        self._make = make_aggregate
        n = len(TIERS)
        self._open: list[Aggregate] = [make_aggregate() for _ in range(n)]
        self._starts: list[float] = [-math.inf] * n
        self._rings: list[deque[tuple[float, Aggregate]]] = [
            deque(maxlen=int(span / res) + 1) for res, span in TIERS
        ]
        self.head: Aggregate = self._open[0]  # tier 0's open bucket, where values go
        self.open_until = -math.inf  # its end: the one check on the hot path
        self._now = -math.inf  # the latest time seen

    def add(self, value: float, now: float) -> None:
        if now >= self.open_until:
            self.advance(now)
        self.head.add(value)

    def advance(self, now: float) -> None:
        """Close every bucket whose period ended before ``now`` and open the current ones."""
        if now > self._now:
            self._now = now
        for k, (res, _span) in enumerate(TIERS):
            if now >= self._starts[k] + res:
                self._close(k)
                self._starts[k] = math.floor(now / res) * res
        self.open_until = self._starts[0] + TIERS[0][0]
        self.head = self._open[0]

    def _close(self, k: int) -> None:
        agg = self._open[k]
        if agg.count == 0:
            return
        start = self._starts[k]
        self._rings[k].append((start, agg))
        self._open[k] = agg.empty_like()
        if k + 1 < len(TIERS):
            self._roll_up(k + 1, start, agg)

    def _roll_up(self, k: int, start: float, agg: Aggregate) -> None:
        # The closed bucket [start, start + res_{k-1}) lies inside exactly one tier-k period;
        # tier k's open bucket is never newer than it (tiers advance from the finest up).
        res = TIERS[k][0]
        if start >= self._starts[k] + res:
            self._close(k)
            self._starts[k] = math.floor(start / res) * res
        self._open[k].merge(agg)

    def tier_for(self, window_s: float) -> int:
        for k, (_res, span) in enumerate(TIERS):
            if window_s <= span:
                return k
        raise ValueError(f"Window {window_s:g} s is longer than the longest kept ({TIERS[-1][1]:g} s).")

    def aggregate(self, window_s: float, now: float, into: Aggregate | None = None) -> Aggregate:
        """Merge the buckets covering the last ``window_s`` seconds (see the module docstring)."""
        self.advance(now)
        k = self.tier_for(window_s)
        out = into if into is not None else self._make()
        res = TIERS[k][0]
        cutoff = now - window_s
        for start, agg in self._rings[k]:
            if start + res > cutoff:
                out.merge(agg)
        for j in range(k + 1):
            out.merge(self._open[j])
        return out

    def stats(self, window: str | float, now: float) -> WindowStats:
        window_s = parse_window(window)
        return WindowStats.of(window_s, self.aggregate(window_s, now))

    # -- many processes ---------------------------------------------------------------------
    def merge(self, other: WindowedSeries) -> None:
        """Fold another series (e.g. from another process) into this one, bucket by bucket.

        Buckets are aligned to the epoch, so equal starts mean equal periods. Both are first
        advanced to the later of their clocks so their open buckets cover the same periods.
        """
        now = max(self._now, other._now)
        if now == -math.inf:
            return
        self.advance(now)
        other.advance(now)
        for k in range(len(TIERS)):
            self._open[k].merge(other._open[k])
            by_start: dict[float, Aggregate] = {s: a for s, a in self._rings[k]}
            for s, a in other._rings[k]:
                if s in by_start:
                    by_start[s].merge(a)
                else:
                    copy = a.empty_like()
                    copy.merge(a)
                    by_start[s] = copy
            ring = self._rings[k]
            ring.clear()
            ring.extend(sorted(by_start.items(), key=lambda item: item[0]))  # deque keeps the newest

    def to_dict(self) -> dict[str, Any]:
        return {
            "now": None if self._now == -math.inf else self._now,
            "tiers": [
                {
                    "start": None if self._starts[k] == -math.inf else self._starts[k],
                    "open": self._open[k].to_dict(),
                    "closed": [[s, a.to_dict()] for s, a in self._rings[k]],
                }
                for k in range(len(TIERS))
            ],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], make_aggregate: Callable[[], Aggregate]) -> WindowedSeries:
        series = cls(make_aggregate)
        tiers = d["tiers"]
        if len(tiers) != len(TIERS):
            raise ValueError(f"A serialized series has {len(tiers)} tiers; this version keeps {len(TIERS)}.")
        for k, t in enumerate(tiers):
            series._starts[k] = -math.inf if t["start"] is None else float(t["start"])
            series._open[k] = aggregate_from_dict(t["open"])
            series._rings[k].extend((float(s), aggregate_from_dict(a)) for s, a in t["closed"])
        series.open_until = series._starts[0] + TIERS[0][0]
        series.head = series._open[0]
        series._now = -math.inf if d["now"] is None else float(d["now"])
        return series
