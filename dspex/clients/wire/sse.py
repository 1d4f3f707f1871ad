"""Server-sent events: turn a stream of lines into (event, data) pairs (the WHATWG rules we need)."""

from __future__ import annotations

from collections.abc import AsyncIterator

__all__ = ["iter_sse"]


async def iter_sse(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, str]]:
    """Yield ``(event, data)`` per event; ``event`` is "message" when the server named none.

    Multi-line data is joined with "\\n"; comment lines (":") and ids are skipped.
    """
    event = ""
    data: list[str] = []
    async for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield (event or "message", "\n".join(data))
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
    if data:
        yield (event or "message", "\n".join(data))
