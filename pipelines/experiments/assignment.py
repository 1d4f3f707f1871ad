"""Sticky, weighted assignment of units (users, sessions, requests) to experiment arms.

A unit's arm is a pure function of (salt, unit key, weights): blake2b of the salted key gives
a uniform bucket in [0, 1), and the bucket falls into one arm's slice of the cumulative
weights. The same unit therefore sees the same arm in every process, on every replica and
after restarts, without storing anything; Python's ``hash()`` is salted per process and
would not do. Each experiment uses its own salt so assignments of different experiments are
independent.

Arms are laid out in the order given. When weights change (a ramp from 5% to 50%), only the
units whose bucket crosses a slice boundary move; keep the order fixed between ramps.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dspex.errors import ExperimentError

__all__ = ["Assigner", "assign", "unit_bucket"]

_SCALE = float(2**64)


def unit_bucket(unit_key: str, salt: str) -> float:
    """Uniform number in [0, 1) fixed by (salt, unit_key): the first 8 bytes of blake2b."""
    if not isinstance(unit_key, str | int) or isinstance(unit_key, bool):
        raise ExperimentError(f"A unit key must be a str (or int), got {type(unit_key).__name__}.")
    digest = hashlib.blake2b(f"{salt}\x1f{unit_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


@dataclass(frozen=True)
class Assigner:
    """Assigns unit keys to arms with the given weights, deterministically.

    Example:
        >>> a = Assigner.create("exp-42", {"control": 0.5, "treatment": 0.5})
        >>> a.assign("user-17") == a.assign("user-17")
        True
    """

    salt: str
    arms: tuple[str, ...]
    probabilities: tuple[float, ...]
    _edges: tuple[float, ...]

    @classmethod
    def create(cls, salt: str, weights: Mapping[str, float] | Iterable[str]) -> Assigner:
        """``weights``: arm -> non-negative weight (normalised here), or arm names for equal split."""
        if not isinstance(salt, str) or not salt:
            raise ExperimentError("An assigner needs a non-empty salt, e.g. the experiment's id.")
        if isinstance(weights, Mapping):
            items = [(str(k), float(v)) for k, v in weights.items()]
        else:
            items = [(str(k), 1.0) for k in weights]
        if not items:
            raise ExperimentError("An assigner needs at least one arm.")
        names = [k for k, _ in items]
        if len(set(names)) != len(names):
            raise ExperimentError(f"Arm names must be unique, got {names}.")
        for name, w in items:
            if not math.isfinite(w) or w < 0:
                raise ExperimentError(
                    f"Arm {name!r} has weight {w}; weights must be finite and >= 0."
                )
        total = sum(w for _, w in items)
        if total <= 0:
            raise ExperimentError("All arm weights are 0; give at least one arm a positive weight.")
        probs = tuple(w / total for _, w in items)
        edges: list[float] = []
        acc = 0.0
        for p in probs:
            acc += p
            edges.append(acc)
        edges[-1] = 1.0  # guard against rounding leaving a sliver past the last arm
        return cls(salt, tuple(names), probs, tuple(edges))

    @property
    def weights(self) -> dict[str, float]:
        return dict(zip(self.arms, self.probabilities, strict=True))

    def assign(self, unit_key: str) -> str:
        u = unit_bucket(unit_key, self.salt)
        i = bisect.bisect_right(self._edges, u)
        # zero-weight arms have empty slices; bisect_right never lands on them
        return self.arms[min(i, len(self.arms) - 1)]

    def assign_many(self, unit_keys: Iterable[str]) -> list[str]:
        return [self.assign(k) for k in unit_keys]


def assign(unit_key: str, weights: Mapping[str, float] | Iterable[str], *, salt: str) -> str:
    """One-off form of ``Assigner.create(salt, weights).assign(unit_key)``."""
    return Assigner.create(salt, weights).assign(unit_key)
