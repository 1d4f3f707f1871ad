"""Paired shadow traffic for the non-inferiority gate: the same inputs to champion and canary.

While a rollout has shadowing on (``StartShadow`` / ``StopShadow`` actions), the recorder takes
inputs from two places and sends each one to *both* versions, pinned (``VersionCaller``):

* ``offer(example)``: live requests mirrored by the caller's code (e.g. the app that calls the
  program also offers the request here); non-blocking, sampled by ``sample_rate``, dropped when
  the bounded queue is full;
* ``source``: a ``ReplaySource`` over a pinned example set (traffic replay), which tops each batch
  up to ``batch_size`` so the gate gets pairs even when live traffic is thin.

Both answers are scored with ``metric(example, prediction)`` and recorded as one pair, stamped
with the controller's clock, only when both versions answered (a failed call is the error-rate
gate's business, not a pair). ``pairs(since_s)`` gives the gate the pairs of its window. Pairs
live in memory: a restarted controller starts collecting again (the gate then waits for
``min_pairs`` anew, which is the safe direction). Shadow calls run on the versions' predictors,
so they count in their measured metrics and add load: cap them with ``pairs_per_s``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from dspex.errors import ConfigurationError

from .canary_test import Metric, as_score, inputs_of, sim_metric
from .pinned import VersionCaller
from .snapshot import ShadowPairs

__all__ = ["ReplaySource", "ShadowPair", "ShadowRecorder"]

log = logging.getLogger("dspex.pipelines.rollouts")


@dataclass(frozen=True)
class ShadowPair:
    at: float
    champion_score: float
    canary_score: float


class ReplaySource:
    """Cycles through a pinned list of examples (a dev or shadow set), ``take(n)`` at a time."""

    def __init__(self, examples: Sequence[Any], *, cycle: bool = True) -> None:
        if not examples:
            raise ConfigurationError(
                "A ReplaySource needs at least one example; give it the pinned set to replay."
            )
        self.examples = list(examples)
        self.cycle = cycle
        self._next = 0

    def take(self, n: int) -> list[Any]:
        out: list[Any] = []
        while len(out) < n:
            if self._next >= len(self.examples):
                if not self.cycle:
                    break
                self._next = 0
            out.append(self.examples[self._next])
            self._next += 1
        return out


class ShadowRecorder:
    """Mirrors inputs to champion and canary and keeps the scored pairs (module docstring)."""

    def __init__(
        self,
        metric: Metric = sim_metric,
        *,
        source: ReplaySource | None = None,
        batch_size: int = 32,
        concurrency: int = 16,
        sample_rate: float = 1.0,
        max_queue: int = 10_000,
        max_pairs: int = 100_000,
        example_for: Callable[[dict[str, Any]], Any] | None = None,
        pairs_per_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if (
            batch_size < 1
            or concurrency < 1
            or not 0.0 < sample_rate <= 1.0
            or (pairs_per_s is not None and pairs_per_s <= 0)
        ):
            raise ConfigurationError(
                f"ShadowRecorder needs batch_size >= 1, concurrency >= 1, 0 < sample_rate <= 1 and pairs_per_s > 0; "
                f"got {batch_size}, {concurrency}, {sample_rate}, {pairs_per_s}."
            )
        self.metric = metric
        self.source = source
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.sample_rate = sample_rate
        self.example_for = example_for
        self.pairs_per_s = pairs_per_s
        self.clock = clock
        self._queue: deque[Any] = deque(maxlen=max_queue)
        self._pairs: deque[ShadowPair] = deque(maxlen=max_pairs)
        self._lock = threading.Lock()
        self._versions: tuple[int, int] | None = None
        self._offered = 0
        self.dropped = 0
        self.failed_calls = 0

    # -- on / off ---------------------------------------------------------------------------
    @property
    def versions(self) -> tuple[int, int] | None:
        """(champion, canary) while shadowing, else None."""
        return self._versions

    def start(self, champion: int, canary: int) -> None:
        """Shadow ``canary`` against ``champion`` (idempotent; a new pair of versions starts
        from no pairs)."""
        with self._lock:
            if self._versions != (champion, canary):
                self._pairs.clear()
                self._queue.clear()
            self._versions = (champion, canary)

    def stop(self, champion: int | None = None, canary: int | None = None) -> None:
        with self._lock:
            if champion is None or self._versions == (champion, canary):
                self._versions = None
                self._queue.clear()

    # -- inputs -----------------------------------------------------------------------------
    def offer(self, example: Any) -> bool:
        """Mirror one live request (an Example with its labels, or the inputs dict). Never
        blocks; False when not shadowing, sampled out, or the queue was full (oldest dropped)."""
        with self._lock:
            if self._versions is None:
                return False
            self._offered += 1
            n, rate = self._offered, self.sample_rate
            if int(n * rate) == int((n - 1) * rate):
                return False  # a deterministic sample: every (1/rate)-th offer is kept
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
            self._queue.append(example)
            return True

    def _batch(self) -> list[Any]:
        with self._lock:
            items = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
        if self.source is not None and len(items) < self.batch_size:
            items += self.source.take(self.batch_size - len(items))
        return items

    # -- mirroring --------------------------------------------------------------------------
    async def pump(self, caller: VersionCaller) -> int:
        """Mirror one batch to both versions; the number of pairs recorded."""
        versions = self._versions
        if versions is None:
            return 0
        champion, canary = versions
        batch = self._batch()
        sem = asyncio.Semaphore(self.concurrency)

        async def score(version: int, example: Any, inputs: dict[str, Any]) -> float | None:
            try:
                prediction = await caller.call(version, inputs)
            except Exception as exc:
                self.failed_calls += 1
                log.debug("shadow call to version %s failed: %s", version, exc)
                return None
            try:
                return as_score(self.metric(example, prediction))
            except Exception as exc:  # the metric is user code
                log.warning("shadow metric raised on version %s: %s", version, exc)
                return None

        async def one(item: Any) -> ShadowPair | None:
            inputs = inputs_of(item)
            example = (
                self.example_for(inputs)
                if self.example_for is not None and isinstance(item, dict)
                else item
            )
            async with sem:
                a, b = await asyncio.gather(
                    score(champion, example, inputs), score(canary, example, inputs)
                )
            if a is None or b is None:
                return None
            return ShadowPair(self.clock(), a, b)

        pairs = [p for p in await asyncio.gather(*(one(i) for i in batch)) if p is not None]
        with self._lock:
            if self._versions == versions:  # not switched off or to other versions meanwhile
                self._pairs.extend(pairs)
                return len(pairs)
        return 0

    async def run(self, caller: VersionCaller, stop: asyncio.Event, idle_s: float = 0.05) -> None:
        """Pump batches until ``stop`` is set (the live controller runs this in the background),
        at most ``pairs_per_s`` pairs a second when that is set."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                recorded = await self.pump(caller)
            except Exception:
                log.exception("shadow pump failed")
                recorded = 0
            wait_s = idle_s if recorded == 0 else 0.0
            if self.pairs_per_s is not None and recorded:
                wait_s = max(0.0, recorded / self.pairs_per_s - (time.monotonic() - started))
            if wait_s > 0:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=wait_s)
                except TimeoutError:
                    pass

    # -- reading ----------------------------------------------------------------------------
    def pairs(self, since_s: float | None = None) -> ShadowPairs | None:
        """The pairs recorded at or after ``since_s`` for the versions being shadowed."""
        with self._lock:
            versions = self._versions
            chosen = [p for p in self._pairs if since_s is None or p.at >= since_s]
        if versions is None:
            return None
        return ShadowPairs(
            champion=versions[0],
            canary=versions[1],
            champion_scores=tuple(p.champion_score for p in chosen),
            canary_scores=tuple(p.canary_score for p in chosen),
        )

    def __len__(self) -> int:
        return len(self._pairs)

    def __iter__(self) -> Iterator[ShadowPair]:
        with self._lock:
            return iter(list(self._pairs))
