"""Process memory: the RSS gauge and a memory-pressure event past a threshold.

``rss_bytes()`` reads the current resident set size from ``/proc/self/statm`` (Linux); where
there is no /proc it falls back to ``resource.getrusage``'s peak RSS, which is an upper bound.
``MemoryMonitor.check()`` emits ``MEMORY_SAMPLE`` (which sets the gauge) and, while RSS is at or
above the threshold, ``MEMORY_PRESSURE``: once when the threshold is crossed, then at most every
``repeat_s`` while it stays above. The alert evaluator calls ``check()`` on its tick.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from dspex.telemetry import names
from dspex.telemetry._events import emit

__all__ = ["MemoryMonitor", "rss_bytes", "total_memory_bytes"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Resident set size of this process, in bytes."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS gives bytes, Linux KiB


def total_memory_bytes() -> int | None:
    """Physical memory of the machine, or None when it cannot be read."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * _PAGE
    except (ValueError, OSError, AttributeError):
        return None


class MemoryMonitor:
    """Emits the RSS gauge and memory-pressure events. Pure apart from the injected reader.

    ``threshold_bytes`` defaults to 80 % of physical memory.
    """

    def __init__(
        self,
        threshold_bytes: int | None = None,
        *,
        component: str = "process",
        repeat_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        read_rss: Callable[[], int] = rss_bytes,
    ) -> None:
        if threshold_bytes is None:
            total = total_memory_bytes()
            if total is None:
                raise ValueError("Cannot read physical memory here; pass threshold_bytes= explicitly.")
            threshold_bytes = int(total * 0.8)
        if threshold_bytes <= 0:
            raise ValueError(f"threshold_bytes must be positive, got {threshold_bytes!r}.")
        if repeat_s < 0:
            raise ValueError(f"repeat_s must not be negative, got {repeat_s!r}.")
        self.threshold_bytes = threshold_bytes
        self.component = component
        self.repeat_s = repeat_s
        self._clock = clock
        self._read = read_rss
        self._last_pressure_at: float | None = None  # None while below the threshold

    @property
    def under_pressure(self) -> bool:
        return self._last_pressure_at is not None

    def check(self) -> int:
        """Read RSS, emit the sample, and a pressure event when due. Returns RSS in bytes."""
        rss = self._read()
        md = {"component": self.component, "pid": os.getpid()}
        emit(names.MEMORY_SAMPLE, {"rss_bytes": rss}, md)
        if rss < self.threshold_bytes:
            self._last_pressure_at = None
            return rss
        now = self._clock()
        if self._last_pressure_at is None or now - self._last_pressure_at >= self.repeat_s:
            self._last_pressure_at = now
            emit(
                names.MEMORY_PRESSURE,
                {
                    "rss_bytes": rss,
                    "threshold_bytes": self.threshold_bytes,
                    "pressure_ratio": rss / self.threshold_bytes,
                },
                md,
            )
        return rss
