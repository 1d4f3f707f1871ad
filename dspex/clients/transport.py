"""HTTP transport settings and one pooled httpx transport per event loop.

The seam is httpx's ``AsyncBaseTransport``: production uses ``httpx_aiohttp.AiohttpTransport``
(httpx's request/response types over aiohttp's connection pool, which the issue measured at 8x
httpx's own pool at concurrency 64), tests use ``httpx.MockTransport``. The LM sends its
``httpx.Request`` to the transport directly rather than through ``httpx.AsyncClient.send``:
the client layer (cookies, auth flows, redirects, event hooks) does nothing for an LM API and
cost about 100 us of CPU per request, a third of the client's whole cost at concurrency 256
(benchmarks/evaluate_throughput.py). An ``httpx.AsyncClient`` can still be injected and is then
used as is.

A whole (non-streaming) call skips httpx's types as well: ``AiohttpPool.post`` sends the
body with aiohttp and returns the status, headers and bytes (``Reply``). Building the
``httpx.Request``, then reading the reply through httpx's stream, decoder and close layers over
aiohttp's, was a quarter of the CPU of a served program's whole request path (py-spy of
``VersionHost.predict`` against the simulator); the LM uses ``post`` whenever its transport is
the default pool's, and the httpx seam for streams, injected transports and clients.

aiohttp sessions belong to the loop that made them, hence one transport per loop: dspex's
background loop (sync calls) and any loop a user runs ``acall`` on.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from dspex.errors import ConfigurationError

__all__ = ["AiohttpPool", "PoolLimits", "Reply", "Timeouts", "TransportPool", "default_pool"]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. ``total_s`` bounds one attempt from sending to the last byte of the reply
    (retries each get their own); ``connect_s``/``read_s`` bound the socket steps; ``pool_s``
    the wait for a free connection."""

    total_s: float | None = 600.0
    connect_s: float | None = 10.0
    read_s: float | None = 600.0
    pool_s: float | None = 60.0

    def __post_init__(self) -> None:
        for name in ("total_s", "connect_s", "read_s", "pool_s"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigurationError(f"Timeouts.{name} must be positive or None, got {value}.")

    def httpx(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect_s, read=self.read_s, write=self.read_s, pool=self.pool_s)

    def aiohttp(self) -> aiohttp.ClientTimeout:
        """The socket bounds as httpx_aiohttp maps them, and ``total_s`` as aiohttp's total
        (connection, sending and reading the whole reply: what ``asyncio.timeout`` bounds on
        the httpx path, without a second timer per call)."""
        return aiohttp.ClientTimeout(total=self.total_s, sock_connect=self.connect_s, sock_read=self.read_s, connect=self.pool_s)


@dataclass(frozen=True, slots=True)
class PoolLimits:
    max_connections: int = 512
    max_keepalive_connections: int = 512
    #: below the shortest keep-alive timeout of common LM servers (uvicorn's, hence vLLM's and
    #: the simulator's, is 5 s): a pooled connection the server has just closed is never
    #: reused, which failed a call with "Can not write request body" (benchmarks/router.py)
    keepalive_expiry_s: float = 4.0

    def httpx(self) -> httpx.Limits:
        return httpx.Limits(
            max_connections=self.max_connections,
            max_keepalive_connections=self.max_keepalive_connections,
            keepalive_expiry=self.keepalive_expiry_s,
        )


TRANSPORTS = ("aiohttp", "httpx")


def check_transport(name: str) -> str:
    if name not in TRANSPORTS:
        raise ConfigurationError(
            f"transport must be 'aiohttp' (httpx over aiohttp's pool) or 'httpx' (httpx's own pool), got {name!r}."
        )
    return name


@dataclass(frozen=True, slots=True)
class Reply:
    """A whole HTTP reply: ``headers`` is case-insensitive (aiohttp's ``CIMultiDictProxy``)."""

    status_code: int
    headers: Any
    content: bytes


class AiohttpPool(AiohttpTransport):
    """httpx_aiohttp's transport (the httpx seam: streams) plus ``post``, a whole call on
    aiohttp's own types. Both share one aiohttp session, hence one connection pool."""

    def _session(self) -> aiohttp.ClientSession:
        if not isinstance(self.client, aiohttp.ClientSession):
            self.client = self.get_client()
        return self.client

    async def post(self, url: str, headers: dict[str, str], content: bytes, timeout: aiohttp.ClientTimeout) -> Reply:
        """POST ``content``; the reply read whole. aiohttp's exceptions propagate unmapped
        (``errors_map.error_from_exception`` reads them)."""
        async with self._session().post(
            url, data=content, headers=headers, allow_redirects=False, compress=False, timeout=timeout
        ) as response:
            body = await response.read()
            return Reply(response.status, response.headers, body)


_DEFAULT_LIMITS = PoolLimits()


def _new_transport(limits: PoolLimits, transport: str) -> httpx.AsyncBaseTransport:
    check_transport(transport)
    if transport == "aiohttp":
        return AiohttpPool(limits=limits.httpx())
    return httpx.AsyncHTTPTransport(limits=limits.httpx())


class TransportPool:
    """One httpx transport per (event loop, limits, kind).

    A loop's transports close with ``aclose()``, or by themselves when the loop is shut down by
    ``asyncio.run`` (or any runner that calls ``loop.shutdown_asyncgens()``): each loop gets a
    parked async generator whose ``finally`` closes them, so a script that never calls
    ``aclose()`` does not end with aiohttp's "Unclosed client session" warnings.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[tuple[PoolLimits, str], httpx.AsyncBaseTransport]
        ] = weakref.WeakKeyDictionary()
        self._closers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncGenerator[None, None]] = (
            weakref.WeakKeyDictionary()
        )
        # the last lookup (loop, limits, kind, transport): an LM asks on every call, and the
        # weak-keyed lookup below cost ~5 us of a ~230 us call (py-spy); read as one tuple, so
        # threads with loops of their own only ever miss it
        self._last: tuple[asyncio.AbstractEventLoop, PoolLimits | None, str, httpx.AsyncBaseTransport] | None = None

    def _forget(self, loop: asyncio.AbstractEventLoop) -> None:
        last = self._last
        if last is not None and last[0] is loop:
            self._last = None

    async def _closer(self, loop: asyncio.AbstractEventLoop) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            with self._lock:
                per_loop = self._clients.pop(loop, {})
                self._closers.pop(loop, None)
                self._forget(loop)
            for client in per_loop.values():
                await client.aclose()

    def _park_closer(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop in self._closers:
            return
        gen = self._closer(loop)
        self._closers[loop] = gen
        # Advancing it once registers it with the loop's async-generator hooks.
        step = gen.__anext__()
        try:
            step.send(None)
        except StopIteration:
            pass

    def get(self, limits: PoolLimits | None = None, transport: str = "aiohttp") -> httpx.AsyncBaseTransport:
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0] is loop and last[1] is limits and last[2] == transport:
            return last[3]
        key = (limits or _DEFAULT_LIMITS, transport)
        per_loop = self._clients.get(loop)
        if per_loop is not None:
            found = per_loop.get(key)
            if found is not None:
                self._last = (loop, limits, transport, found)
                return found
        with self._lock:
            per_loop = self._clients.setdefault(loop, {})
            found = per_loop.get(key)
            if found is None:
                found = _new_transport(key[0], transport)
                per_loop[key] = found
        self._park_closer(loop)
        self._last = (loop, limits, transport, found)
        return found

    async def aclose(self) -> None:
        """Close this loop's transports (call before the loop ends to free its sockets)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            per_loop = self._clients.pop(loop, {})
            closer = self._closers.pop(loop, None)
            self._forget(loop)
        for client in per_loop.values():
            await client.aclose()
        if closer is not None:
            await closer.aclose()


default_pool = TransportPool()
