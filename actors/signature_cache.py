"""The cluster-wide signature cache (the seed's ETS signature cache, Stage 2 §1.4).

``SignatureCacheCore`` is the pure part: entries by content hash with access statistics,
eviction, TTL expiry and compile locks, on an injected clock. ``SignatureCache`` is the async
actor body around it (made remote in ``factory.py``): a worker that misses asks to compile,
and if another worker holds the compile lock for that hash it *waits* for that worker's
result instead of compiling too.

Eviction, as the seed: when an insert finds the cache full, a tenth of ``max_size`` (at least
one entry) goes, chosen by the strategy:

- ``lru``: least recently used first;
- ``lfu``: least frequently used first (ties: least recently used);
- ``ttl``: the entries closest to expiry (oldest inserted) first.

Independently of the strategy, an entry older than ``ttl_s`` (when set) is expired on access
and on the periodic sweep. Counts of hits, misses, evictions (by reason), compiles, waits and
expired locks are kept for ``stats()`` and emitted as telemetry (``cache="signature_cluster"``).

A compile lock expires after ``lock_timeout_s``, so a worker that died mid-compile does not
block the others for ever: the next waiter takes the lock over.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dspex import telemetry
from dspex.errors import ConfigurationError

from ._events import CACHE_EVICT, CACHE_HIT, CACHE_MISS
from .signature_artifacts import SignatureArtifacts

__all__ = ["LockResult", "SignatureCache", "SignatureCacheCore", "Strategy"]

CACHE_LABEL = "signature_cluster"


class Strategy(enum.StrEnum):
    LRU = "lru"
    LFU = "lfu"
    TTL = "ttl"


@dataclass(slots=True)
class _Entry:
    artifacts: SignatureArtifacts
    inserted_s: float
    last_access_s: float
    accesses: int


@dataclass(frozen=True, slots=True)
class _Lock:
    owner: str
    since_s: float


class LockKind(enum.StrEnum):
    CACHED = "cached"  # the artifacts are there: use them
    GRANTED = "granted"  # you hold the compile lock: compile, then publish (or release)
    BUSY = "busy"  # someone else is compiling: wait


@dataclass(frozen=True, slots=True)
class LockResult:
    kind: LockKind
    artifacts: SignatureArtifacts | None = None
    owner: str | None = None
    #: for BUSY: seconds until the holder's lock expires
    expires_in_s: float = 0.0


class SignatureCacheCore:
    """Entries, eviction, expiry and compile locks. Pure: the caller's clock, no I/O, no Ray."""

    def __init__(
        self,
        *,
        max_size: int = 10_000,
        strategy: Strategy | str = Strategy.LRU,
        ttl_s: float | None = None,
        lock_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_size < 1:
            raise ConfigurationError(f"The signature cache needs max_size >= 1, got {max_size}.")
        try:
            self.strategy = Strategy(strategy)
        except ValueError:
            raise ConfigurationError(
                f"Unknown eviction strategy {strategy!r}; use one of {', '.join(s.value for s in Strategy)}."
            ) from None
        if ttl_s is not None and ttl_s <= 0:
            raise ConfigurationError(f"ttl_s must be positive or None, got {ttl_s}.")
        if lock_timeout_s <= 0:
            raise ConfigurationError(f"lock_timeout_s must be positive, got {lock_timeout_s}.")
        self.max_size = int(max_size)
        self.ttl_s = ttl_s
        self.lock_timeout_s = lock_timeout_s
        self.clock = clock
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, _Lock] = {}
        self.counts: dict[str, int] = {
            "hits": 0,
            "misses": 0,
            "inserts": 0,
            "compiles": 0,
            "waits": 0,
            "lock_takeovers": 0,
            "evicted_lru": 0,
            "evicted_lfu": 0,
            "evicted_ttl": 0,
            "expired": 0,
        }

    # -- reads ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, h: str) -> bool:
        return h in self._entries

    def get(self, h: str) -> SignatureArtifacts | None:
        """The artifacts for hash ``h`` (counting a hit or a miss), or None."""
        now = self.clock()
        entry = self._live(h, now)
        if entry is None:
            self._count("misses", CACHE_MISS)
            return None
        entry.accesses += 1
        entry.last_access_s = now
        self._count("hits", CACHE_HIT)
        return entry.artifacts

    def _live(self, h: str, now: float) -> _Entry | None:
        entry = self._entries.get(h)
        if entry is not None and self.ttl_s is not None and now - entry.inserted_s >= self.ttl_s:
            del self._entries[h]
            self._evicted("ttl", 1, expired=True)
            return None
        return entry

    # -- writes -----------------------------------------------------------------------------
    def put(self, h: str, artifacts: SignatureArtifacts) -> int:
        """Store ``artifacts`` under ``h``; returns how many entries were evicted to make room."""
        if artifacts.hash != h:
            raise ConfigurationError(f"Artifacts for hash {artifacts.hash[:12]} cannot be stored under {h[:12]}.")
        now = self.clock()
        existing = self._entries.get(h)
        if existing is not None:
            existing.artifacts = artifacts
            existing.inserted_s = now
            return 0
        evicted = 0
        if len(self._entries) >= self.max_size:
            evicted = self._evict(now)
        self._entries[h] = _Entry(artifacts, now, now, 1)
        self.counts["inserts"] += 1
        return evicted

    def _evict(self, now: float) -> int:
        """Make room: expired entries first, then a tenth of max_size by the strategy."""
        expired = self.sweep(now)
        if len(self._entries) < self.max_size:
            return expired
        n = max(1, self.max_size // 10)
        items = list(self._entries.items())
        if self.strategy is Strategy.LRU:
            items.sort(key=lambda kv: kv[1].last_access_s)
        elif self.strategy is Strategy.LFU:
            items.sort(key=lambda kv: (kv[1].accesses, kv[1].last_access_s))
        else:
            items.sort(key=lambda kv: kv[1].inserted_s)
        for h, _ in items[:n]:
            del self._entries[h]
        self._evicted(self.strategy.value, n)
        return expired + n

    def sweep(self, now: float | None = None) -> int:
        """Drop expired entries and expired locks (the seed's periodic maintenance)."""
        now = self.clock() if now is None else now
        dropped = 0
        if self.ttl_s is not None:
            old = [h for h, e in self._entries.items() if now - e.inserted_s >= self.ttl_s]
            for h in old:
                del self._entries[h]
            dropped = len(old)
            if dropped:
                self._evicted("ttl", dropped, expired=True)
        for h in [h for h, lock in self._locks.items() if now - lock.since_s >= self.lock_timeout_s]:
            del self._locks[h]
            self.counts["lock_takeovers"] += 1
        return dropped

    def clear(self) -> None:
        self._entries.clear()
        self._locks.clear()

    # -- compile locks ----------------------------------------------------------------------
    def try_lock(self, h: str, owner: str) -> LockResult:
        """Ask to compile ``h``: CACHED (use these artifacts), GRANTED (compile it) or BUSY."""
        now = self.clock()
        entry = self._live(h, now)
        if entry is not None:
            entry.accesses += 1
            entry.last_access_s = now
            self._count("hits", CACHE_HIT)
            return LockResult(LockKind.CACHED, artifacts=entry.artifacts)
        lock = self._locks.get(h)
        if lock is not None and lock.owner != owner:
            age = now - lock.since_s
            if age < self.lock_timeout_s:
                return LockResult(LockKind.BUSY, owner=lock.owner, expires_in_s=self.lock_timeout_s - age)
            self.counts["lock_takeovers"] += 1  # the holder died or hung: take over
        self._locks[h] = _Lock(owner, now)
        self._count("misses", CACHE_MISS)
        return LockResult(LockKind.GRANTED)

    def publish(self, h: str, owner: str, artifacts: SignatureArtifacts) -> None:
        """Store the result of a compile and release its lock. Accepted from a holder whose
        lock expired too: a correct result is useful whoever computed it."""
        lock = self._locks.get(h)
        if lock is not None and lock.owner == owner:
            del self._locks[h]
        self.put(h, artifacts)
        self.counts["compiles"] += 1

    def release(self, h: str, owner: str) -> bool:
        """Give up a compile lock without a result (the compile failed)."""
        lock = self._locks.get(h)
        if lock is None or lock.owner != owner:
            return False
        del self._locks[h]
        return True

    def locked(self, h: str) -> bool:
        lock = self._locks.get(h)
        return lock is not None and self.clock() - lock.since_s < self.lock_timeout_s

    # -- stats ------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        hits, misses = self.counts["hits"], self.counts["misses"]
        return {
            **self.counts,
            "evictions": self.counts["evicted_lru"] + self.counts["evicted_lfu"] + self.counts["evicted_ttl"],
            "size": len(self._entries),
            "max_size": self.max_size,
            "strategy": self.strategy.value,
            "ttl_s": self.ttl_s,
            "locks": len(self._locks),
            "hit_rate": hits / (hits + misses) if hits + misses else None,
        }

    def _count(self, key: str, event: tuple[str, ...]) -> None:
        self.counts[key] += 1
        telemetry.emit(event, {"count": 1}, {"cache": CACHE_LABEL})

    def _evicted(self, reason: str, n: int, *, expired: bool = False) -> None:
        self.counts[f"evicted_{reason}"] += n
        if expired:
            self.counts["expired"] += n
        telemetry.emit(CACHE_EVICT, {"count": n}, {"cache": CACHE_LABEL, "reason": reason})


class SignatureCache:
    """The actor body: ``SignatureCacheCore`` plus waiting for another worker's compile.

    A worker calls ``acquire(hash, owner)``; the answer is ``("cached", artifacts)`` or
    ``("compile", None)``. In the second case the worker compiles locally and calls
    ``publish`` (or ``release`` when the compile failed). Concurrent ``acquire`` calls for the
    same hash wait on the holder's result, so a signature is compiled once cluster-wide.
    """

    def __init__(
        self,
        *,
        max_size: int = 10_000,
        strategy: Strategy | str = Strategy.LRU,
        ttl_s: float | None = None,
        lock_timeout_s: float = 30.0,
        sweep_interval_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.core = SignatureCacheCore(
            max_size=max_size, strategy=strategy, ttl_s=ttl_s, lock_timeout_s=lock_timeout_s, clock=clock
        )
        self.sweep_interval_s = sweep_interval_s
        self._last_sweep_s = clock()
        # hash -> event set when that hash's lock is published or released
        self._events: dict[str, asyncio.Event] = {}

    def _maintain(self) -> None:
        now = self.core.clock()
        if now - self._last_sweep_s >= self.sweep_interval_s:
            self._last_sweep_s = now
            self.core.sweep(now)

    async def acquire(self, h: str, owner: str, max_wait_s: float = 60.0) -> tuple[str, SignatureArtifacts | None]:
        """``("cached", artifacts)`` or ``("compile", None)`` (you hold the lock). Waits while
        another worker compiles ``h``, at most ``max_wait_s`` in total (then compiles itself)."""
        self._maintain()
        deadline = self.core.clock() + max_wait_s
        waited = False
        while True:
            result = self.core.try_lock(h, owner)
            if result.kind is LockKind.CACHED:
                return ("cached", result.artifacts)
            if result.kind is LockKind.GRANTED:
                return ("compile", None)
            if not waited:
                self.core.counts["waits"] += 1
                waited = True
            left = deadline - self.core.clock()
            if left <= 0:
                # Waited long enough: compile anyway rather than fail the caller's load.
                return ("compile", None)
            event = self._events.setdefault(h, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), timeout=min(left, max(result.expires_in_s, 0.01)))
            except TimeoutError:
                pass  # the holder's lock expired (or our deadline): ask again

    def _wake(self, h: str) -> None:
        event = self._events.pop(h, None)
        if event is not None:
            event.set()

    async def publish(self, h: str, owner: str, artifacts: SignatureArtifacts) -> None:
        self.core.publish(h, owner, artifacts)
        self._wake(h)

    async def release(self, h: str, owner: str) -> bool:
        released = self.core.release(h, owner)
        self._wake(h)
        return released

    async def get(self, h: str) -> SignatureArtifacts | None:
        self._maintain()
        return self.core.get(h)

    async def put(self, artifacts: SignatureArtifacts) -> int:
        evicted = self.core.put(artifacts.hash, artifacts)
        self._wake(artifacts.hash)
        return evicted

    async def stats(self) -> dict[str, Any]:
        return self.core.stats()

    async def sweep(self) -> int:
        return self.core.sweep()

    async def clear(self) -> None:
        self.core.clear()
        for h in list(self._events):
            self._wake(h)

    async def ready(self) -> bool:
        return True
