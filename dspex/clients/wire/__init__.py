"""Wire formats (what goes in the HTTP body and comes back), apart from providers (auth, URL)."""

from dspex.clients.wire._types import Strategy, StreamChunk, ToolCallDelta, WireRequest

__all__ = ["Strategy", "StreamChunk", "ToolCallDelta", "WireRequest"]
