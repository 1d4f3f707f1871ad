"""The two vendor wire formats, read into one ``WireRequest`` so the server's flow does not
care which API was called: OpenAI chat completions (``POST /v1/chat/completions``) and
Anthropic messages (``POST /v1/messages``), as the official SDKs expect them."""

from dspex.sim.wire.anthropic import (
    anthropic_error,
    anthropic_message,
    anthropic_stream,
    parse_anthropic,
)
from dspex.sim.wire.common import WireError, WireRequest, split_chunks
from dspex.sim.wire.openai import openai_completion, openai_error, openai_stream, parse_openai

__all__ = [
    "WireError",
    "WireRequest",
    "anthropic_error",
    "anthropic_message",
    "anthropic_stream",
    "openai_completion",
    "openai_error",
    "openai_stream",
    "parse_anthropic",
    "parse_openai",
    "split_chunks",
]
