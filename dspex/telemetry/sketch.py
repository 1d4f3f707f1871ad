"""Mergeable aggregates: a DDSketch quantile sketch and plain count/sum/min/max stats.

``QuantileSketch`` is DDSketch (Masson et al., VLDB 2019) built from the ``ddsketch``
package's logarithmic key mapping and collapsing dense store, plus exact count, sum, min
and max. Any quantile it returns is within ``relative_accuracy`` (default 1 %) of the
true order statistic ``x[floor(q * (n - 1))]``, for any number of points, and two sketches
with the same accuracy merge into the sketch of the union of their points. We keep our own
wrapper (rather than ``ddsketch.DDSketch``) so serialization uses only the store's public
fields and the fast path is one log, one ceil and one list update.

Memory: a store holds at most ``bin_limit`` bins (default 1024; at 1 % accuracy that covers
a range of max/min = 1.02**1024 ~ 8e8, e.g. 1 us to 800 s, before the lowest bins collapse,
which only loses accuracy on the lowest quantiles). One bin costs at most 32 bytes (a list
slot and a float), so a sketch is bounded by 2 stores x 1024 x 32 B = 64 KiB, and is
typically a few KiB (only the span between its smallest and largest key is allocated).

``Stats`` is the cheap aggregate for counters and gauges: count, sum, min, max; no quantiles.
Both share ``add``, ``merge``, ``to_dict``/``from_dict`` and ``quantile`` (None for Stats).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Protocol

from ddsketch.mapping import LogarithmicMapping
from ddsketch.store import CollapsingLowestDenseStore

__all__ = ["Aggregate", "QuantileSketch", "Stats", "aggregate_from_dict"]

DEFAULT_RELATIVE_ACCURACY = 0.01
DEFAULT_BIN_LIMIT = 1024


class Aggregate(Protocol):
    count: float
    sum: float
    min: float
    max: float

    def add(self, value: float) -> None: ...

    def merge(self, other: Any) -> None: ...

    def quantile(self, q: float) -> float | None: ...

    def to_dict(self) -> dict[str, Any]: ...

    def empty_like(self) -> Aggregate: ...


class Stats:
    """Count, sum, min and max of the values added. Mergeable and JSON-serializable."""

    __slots__ = ("count", "max", "min", "sum")

    def __init__(self) -> None:
        self.count = 0.0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, value: float) -> None:
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def merge(self, other: Stats | QuantileSketch) -> None:
        if other.count == 0:
            return
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def quantile(self, q: float) -> float | None:
        return None

    def empty_like(self) -> Stats:
        return Stats()

    def to_dict(self) -> dict[str, Any]:
        return {"type": "stats", **_stats_dict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Stats:
        s = cls()
        _load_stats(s, d)
        return s


@lru_cache(maxsize=8)
def _mapping(relative_accuracy: float) -> LogarithmicMapping:
    # One immutable mapping per accuracy, shared by every sketch: sketches merge only when
    # their mappings agree, and sharing it saves an object per time bucket.
    return LogarithmicMapping(relative_accuracy)


class QuantileSketch:
    """DDSketch with exact count/sum/min/max. See the module docstring for the guarantees."""

    __slots__ = ("bin_limit", "count", "mapping", "max", "min", "neg", "pos", "sum", "zero")

    def __init__(
        self, relative_accuracy: float = DEFAULT_RELATIVE_ACCURACY, bin_limit: int = DEFAULT_BIN_LIMIT
    ) -> None:
        if not 0.0 < relative_accuracy < 1.0:
            raise ValueError(f"relative_accuracy must be in (0, 1), got {relative_accuracy!r}.")
        if bin_limit < 16:
            raise ValueError(f"bin_limit must be at least 16, got {bin_limit!r}.")
        self.mapping = _mapping(relative_accuracy)
        self.bin_limit = bin_limit
        self.pos = CollapsingLowestDenseStore(bin_limit)
        self.neg = CollapsingLowestDenseStore(bin_limit)
        self.zero = 0.0
        self.count = 0.0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    @property
    def relative_accuracy(self) -> float:
        return float(self.mapping.relative_accuracy)

    def add(self, value: float) -> None:
        """Add one finite value (non-finite values raise ValueError: they have no bin)."""
        m = self.mapping
        if value > m.min_possible:
            if value == math.inf:
                raise ValueError("QuantileSketch.add needs a finite value, got inf.")
            self.pos.add(m.key(value))
        elif value < -m.min_possible:
            if value == -math.inf:
                raise ValueError("QuantileSketch.add needs a finite value, got -inf.")
            self.neg.add(m.key(-value))
        elif value != value:
            raise ValueError("QuantileSketch.add needs a finite value, got nan.")
        else:
            self.zero += 1
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def merge(self, other: QuantileSketch | Stats) -> None:
        """Fold ``other`` into this sketch (``other`` is not changed)."""
        if not isinstance(other, QuantileSketch):
            raise TypeError(f"Cannot merge {type(other).__name__} into a QuantileSketch.")
        if other.count == 0:
            return
        if other.mapping.gamma != self.mapping.gamma:
            raise ValueError(
                "Cannot merge sketches of different relative accuracy "
                f"({other.relative_accuracy} into {self.relative_accuracy}); build both with the same one."
            )
        self.pos.merge(other.pos)
        self.neg.merge(other.neg)
        self.zero += other.zero
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0 <= q <= 1), None when empty. Within relative_accuracy of the truth."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"A quantile is between 0 and 1, got {q!r}.")
        if self.count == 0:
            return None
        if q == 0.0 or q == 1.0:  # the extremes are kept exactly
            return self.min if q == 0.0 else self.max
        rank = q * (self.count - 1)
        neg_count = self.neg.count
        if rank < neg_count:
            key = self.neg.key_at_rank(neg_count - rank - 1, lower=False)
            value = -float(self.mapping.value(key))
        elif rank < self.zero + neg_count:
            value = 0.0
        else:
            key = self.pos.key_at_rank(rank - self.zero - neg_count)
            value = float(self.mapping.value(key))
        # min and max are exact, and clamping can only move the estimate towards the truth.
        return min(max(value, self.min), self.max)

    def empty_like(self) -> QuantileSketch:
        return QuantileSketch(self.relative_accuracy, self.bin_limit)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly form; ``QuantileSketch.from_dict`` rebuilds an equal sketch."""
        return {
            "type": "ddsketch",
            "relative_accuracy": self.relative_accuracy,
            "bin_limit": self.bin_limit,
            "pos": _store_dict(self.pos),
            "neg": _store_dict(self.neg),
            "zero": self.zero,
            **_stats_dict(self),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantileSketch:
        s = cls(float(d["relative_accuracy"]), int(d["bin_limit"]))
        _load_store(s.pos, d["pos"])
        _load_store(s.neg, d["neg"])
        s.zero = float(d["zero"])
        _load_stats(s, d)
        return s

    def __repr__(self) -> str:
        return (
            f"QuantileSketch(count={self.count:g}, min={self.min:g}, max={self.max:g}, "
            f"relative_accuracy={self.relative_accuracy:g})"
        )


def aggregate_from_dict(d: dict[str, Any]) -> Stats | QuantileSketch:
    kind = d.get("type")
    if kind == "ddsketch":
        return QuantileSketch.from_dict(d)
    if kind == "stats":
        return Stats.from_dict(d)
    raise ValueError(f"Unknown aggregate type {kind!r}; expected 'ddsketch' or 'stats'.")


def _stats_dict(a: Stats | QuantileSketch) -> dict[str, Any]:
    # JSON has no infinity: an empty aggregate's min/max go out as None.
    empty = a.count == 0
    return {
        "count": a.count,
        "sum": a.sum,
        "min": None if empty else a.min,
        "max": None if empty else a.max,
    }


def _load_stats(a: Stats | QuantileSketch, d: dict[str, Any]) -> None:
    a.count = float(d["count"])
    a.sum = float(d["sum"])
    a.min = math.inf if d.get("min") is None else float(d["min"])
    a.max = -math.inf if d.get("max") is None else float(d["max"])


def _store_dict(store: CollapsingLowestDenseStore) -> dict[str, Any]:
    # Sparse: only non-empty bins, as parallel lists of keys and counts.
    keys: list[int] = []
    counts: list[float] = []
    for i, c in enumerate(store.bins):
        if c:
            keys.append(store.offset + i)
            counts.append(c)
    return {"keys": keys, "counts": counts}


def _load_store(store: CollapsingLowestDenseStore, d: dict[str, Any]) -> None:
    keys, counts = d["keys"], d["counts"]
    if len(keys) != len(counts):
        raise ValueError("A serialized sketch store needs as many counts as keys.")
    for key, c in zip(keys, counts, strict=True):
        store.add(int(key), float(c))
