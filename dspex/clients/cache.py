"""The LM response cache: in memory (LRU) and on disk (SQLite), keyed by the canonical request.

The key is a SHA-256 of the request as sent (model, messages, sampling settings, response
format, tools) plus the provider and DSPy's ``rollout_id``; never the API key or the base URL
(as in DSPy, the same request to a mirror of the same model is the same request). Values are
JSON, never pickles, so a cache file cannot run code. Disk writes go through one writer
thread, so a cache miss never blocks the event loop on an fsync.

Hits and misses are counted through telemetry (``("dspex", "lm_cache", "hit" | "miss")``).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import queue
import sqlite3
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from dspex.errors import ConfigurationError

__all__ = ["LMCache", "cache_dir", "configure_cache", "get_cache", "request_key"]


def cache_dir() -> Path:
    """``$DSPEX_HOME/cache``, by default ``~/.dspex/cache``."""
    home = os.environ.get("DSPEX_HOME") or os.path.join(Path.home(), ".dspex")
    return Path(home) / "cache"


def request_key(request: dict[str, Any]) -> str:
    text = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class _DiskCache:
    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._reader = sqlite3.connect(path, check_same_thread=False, timeout=30.0)
            self._reader.execute("PRAGMA journal_mode=WAL")
            self._reader.execute(
                "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            self._reader.commit()
        except (OSError, sqlite3.Error) as exc:
            raise ConfigurationError(
                f"Cannot open the LM cache at {path}: {exc}. Set DSPEX_HOME to a writable folder "
                "or configure_cache(enable_disk=False)."
            ) from exc
        self.path = path
        self._read_lock = threading.Lock()
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self._writer = threading.Thread(target=self._write_loop, name="dspex-lm-cache", daemon=True)
        self._writer.start()

    def get(self, key: str) -> str | None:
        with self._read_lock:
            row = self._reader.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, value: str) -> None:
        self._queue.put((key, value))

    def _write_loop(self) -> None:
        conn = sqlite3.connect(self.path, timeout=30.0)
        conn.execute("PRAGMA synchronous=NORMAL")
        while True:
            item = self._queue.get()
            batch = [item]
            # Write whatever else is queued in the same transaction.
            while not self._queue.empty() and len(batch) < 512:
                batch.append(self._queue.get_nowait())
            rows = [b for b in batch if b is not None]
            if rows:
                try:
                    conn.executemany("INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)", rows)
                    conn.commit()
                except sqlite3.Error:
                    conn.rollback()  # a full disk loses cache entries, never calls
            for _ in batch:
                self._queue.task_done()
            if None in batch:
                conn.close()
                return

    def flush(self) -> None:
        """Wait until every queued write is on disk."""
        self._queue.join()

    def close(self) -> None:
        self._queue.put(None)
        self._writer.join(timeout=10)
        with self._read_lock:
            self._reader.close()

    def clear(self) -> None:
        self.flush()
        with self._read_lock:
            self._reader.execute("DELETE FROM responses")
            self._reader.commit()


class LMCache:
    """Two layers; either may be off. ``get``/``put`` take and give JSON-able dicts."""

    def __init__(
        self,
        *,
        enable_memory: bool = True,
        enable_disk: bool = True,
        disk_dir: str | os.PathLike[str] | None = None,
        memory_max_entries: int = 100_000,
    ) -> None:
        if memory_max_entries < 1:
            raise ConfigurationError(f"memory_max_entries must be at least 1, got {memory_max_entries}.")
        self.memory_max_entries = memory_max_entries
        self._memory: OrderedDict[str, dict[str, Any]] | None = OrderedDict() if enable_memory else None
        self._lock = threading.Lock()
        self.disk: _DiskCache | None = (
            _DiskCache(Path(disk_dir or cache_dir()) / "lm_responses.sqlite") if enable_disk else None
        )

    def get(self, key: str) -> tuple[dict[str, Any], str] | None:
        """(value, layer) or None; a disk hit is promoted to memory."""
        if self._memory is not None:
            with self._lock:
                value = self._memory.get(key)
                if value is not None:
                    self._memory.move_to_end(key)
                    return value, "memory"
        if self.disk is not None:
            text = self.disk.get(key)
            if text is not None:
                value = json.loads(text)
                self._remember(key, value)
                return value, "disk"
        return None

    def _remember(self, key: str, value: dict[str, Any]) -> None:
        if self._memory is None:
            return
        with self._lock:
            self._memory[key] = value
            self._memory.move_to_end(key)
            while len(self._memory) > self.memory_max_entries:
                self._memory.popitem(last=False)

    def put(self, key: str, value: dict[str, Any]) -> None:
        self._remember(key, value)
        if self.disk is not None:
            self.disk.put(key, json.dumps(value, default=str))

    def __len__(self) -> int:
        return 0 if self._memory is None else len(self._memory)

    def flush(self) -> None:
        if self.disk is not None:
            self.disk.flush()

    def clear(self) -> None:
        with self._lock:
            if self._memory is not None:
                self._memory.clear()
        if self.disk is not None:
            self.disk.clear()

    def close(self) -> None:
        if self.disk is not None:
            self.disk.close()
            self.disk = None


_cache_lock = threading.Lock()
_cache: LMCache | None = None


def get_cache() -> LMCache:
    """The process's cache, created on first use from ``DSPEX_HOME``."""
    global _cache
    if _cache is None:
        with _cache_lock:
            if _cache is None:
                _cache = LMCache()
    return _cache


def configure_cache(
    *,
    enable_memory: bool = True,
    enable_disk: bool = True,
    disk_dir: str | os.PathLike[str] | None = None,
    memory_max_entries: int = 100_000,
) -> LMCache:
    """Replace the process's cache (DSPy's ``dspy.configure_cache``)."""
    global _cache
    new = LMCache(
        enable_memory=enable_memory,
        enable_disk=enable_disk,
        disk_dir=disk_dir,
        memory_max_entries=memory_max_entries,
    )
    with _cache_lock:
        old, _cache = _cache, new
    if old is not None:
        old.close()
    return new


@atexit.register
def _flush_at_exit() -> None:
    if _cache is not None:
        _cache.flush()
