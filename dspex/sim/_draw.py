"""Seeded uniform draws from a hash, so a reply is a pure function of its request."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TypeVar

__all__ = ["choice", "digest", "uniform"]

T = TypeVar("T")
_SCALE = float(1 << 64)


def digest(*parts: object) -> bytes:
    """A 16-byte blake2b digest of the parts (joined with an unambiguous separator)."""
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(str(p).encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return h.digest()


def uniform(*parts: object) -> float:
    """A uniform number in [0, 1) determined by ``parts``."""
    return int.from_bytes(digest(*parts)[:8], "big") / _SCALE


def choice(options: Sequence[T], *parts: object) -> T:
    """One of ``options`` determined by ``parts``."""
    if not options:
        raise ValueError("choice() needs at least one option")
    return options[int(uniform(*parts) * len(options)) % len(options)]
