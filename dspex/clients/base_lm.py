"""``BaseLM``: the seam every language model in dspex sits behind (DSPy's ``dspy.BaseLM``).

A subclass implements ``aforward`` (async, preferred: the HTTP clients) or ``forward`` (sync:
in-process fakes such as DummyLM), returning an ``LMResponse``. ``BaseLM`` turns that into
DSPy's outputs (a list with one entry per choice: a string, or a dict when there are tool
calls or reasoning content), keeps a bounded ``history``, and emits telemetry.
"""

from __future__ import annotations

import copy
import random
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from dspex import telemetry
from dspex.telemetry import names
from dspex.settings import settings
from dspex.utils.asyncio_bridge import run_sync
from dspex.utils.callback import active_callbacks, with_callbacks, with_callbacks_async

__all__ = [
    "GLOBAL_HISTORY",
    "BaseLM",
    "Choice",
    "LMResponse",
    "ToolCall",
    "Usage",
    "inspect_history",
]

#: the last calls of every LM in the process (bounded), for ``dspex.inspect_history``
GLOBAL_HISTORY: deque[dict[str, Any]] = deque(maxlen=10_000)

_LM_EVENT = names.LM_CALL


@dataclass(slots=True)
class ToolCall:
    """One function/tool call requested by the model. ``arguments`` is the parsed JSON."""

    name: str
    arguments: dict[str, Any]
    id: str = ""


@dataclass(slots=True)
class Choice:
    text: str | None
    tool_calls: list[ToolCall] | None = None
    finish_reason: str | None = None
    reasoning_content: str | None = None
    logprobs: Any = None


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: True when the provider gave no usage and the counts are our estimate
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "estimated": self.estimated,
        }


@dataclass(slots=True)
class LMResponse:
    """A provider's reply in one shape, whatever the provider."""

    model: str
    choices: list[Choice]
    usage: Usage = field(default_factory=Usage)
    cost_usd: float | None = None
    provider: str = ""
    cache_hit: bool = False
    latency_s: float = 0.0
    request_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["usage"] = self.usage.to_dict()
        return d


class BaseLM:
    """Base class of every LM. Mirrors ``dspy.BaseLM``: ``lm(prompt=None, messages=None, **kw)``
    returns a list of outputs, ``await lm.acall(...)`` the same, ``lm.history`` the last calls."""

    #: the provider name used in telemetry and errors ("openai", "anthropic", "dummy", ...)
    provider: str = "base"
    #: request features this LM's provider accepts: "json_schema" (strict structured output),
    #: "json_object" (JSON mode), "tools", "n" (several choices in one request), "streaming".
    #: Adapters pick their request strategy from it; a subclass sets it per provider / model.
    capabilities: frozenset[str] = frozenset()

    def __init__(
        self,
        model: str,
        model_type: str = "chat",
        temperature: float | None = None,
        max_tokens: int | None = None,
        cache: bool = True,
        **kwargs: Any,
    ) -> None:
        self.model = model
        self.model_type = model_type
        self.cache = cache
        self.callbacks: list[Any] = list(kwargs.pop("callbacks", None) or [])
        self.kwargs: dict[str, Any] = dict(kwargs)
        if temperature is not None:
            self.kwargs["temperature"] = temperature
        if max_tokens is not None:
            self.kwargs["max_tokens"] = max_tokens
        self.history: deque[dict[str, Any]] = deque(maxlen=int(settings.get("max_history_size", 10_000)))

    # -- what a subclass implements -------------------------------------------------------------
    def forward(
        self, prompt: str | None = None, messages: list[dict[str, Any]] | None = None, **kwargs: Any
    ) -> LMResponse:
        """Sync call. The default runs ``aforward`` on dspex's shared I/O loop."""
        if type(self).aforward is BaseLM.aforward:
            raise NotImplementedError(f"{type(self).__name__} must implement forward or aforward.")
        return run_sync(self.aforward(prompt=prompt, messages=messages, **kwargs))

    async def aforward(
        self, prompt: str | None = None, messages: list[dict[str, Any]] | None = None, **kwargs: Any
    ) -> LMResponse:
        """Async call. The default calls the sync ``forward`` (fine for in-process fakes)."""
        if type(self).forward is BaseLM.forward:
            raise NotImplementedError(f"{type(self).__name__} must implement forward or aforward.")
        return self.forward(prompt=prompt, messages=messages, **kwargs)

    def supports(self, feature: str) -> bool:
        """Whether the provider accepts a request feature (see ``capabilities``)."""
        return feature in self.capabilities

    # -- the DSPy call surface ----------------------------------------------------------------
    def __call__(
        self, prompt: str | None = None, messages: list[dict[str, Any]] | None = None, **kwargs: Any
    ) -> list[Any]:
        cbs = active_callbacks(self)
        if cbs:
            inputs = {"prompt": prompt, "messages": messages, **kwargs}
            return with_callbacks(cbs, "lm", self, inputs, lambda: self._invoke(prompt, messages, kwargs))
        return self._invoke(prompt, messages, kwargs)

    def _invoke(self, prompt: str | None, messages: list[dict[str, Any]] | None, kwargs: dict[str, Any]) -> list[Any]:
        messages = self._messages(prompt, messages)
        merged = {**self.kwargs, **kwargs}
        t0 = time.perf_counter()
        with telemetry.span(_LM_EVENT, model=self.model, provider=self.provider) as sp:
            response = self.forward(messages=messages, **merged)
            self._measure(sp, response)
        return self._finish(prompt, messages, merged, response, time.perf_counter() - t0)

    async def acall(
        self, prompt: str | None = None, messages: list[dict[str, Any]] | None = None, **kwargs: Any
    ) -> list[Any]:
        cbs = active_callbacks(self)
        if cbs:
            inputs = {"prompt": prompt, "messages": messages, **kwargs}
            return await with_callbacks_async(cbs, "lm", self, inputs, lambda: self._ainvoke(prompt, messages, kwargs))
        return await self._ainvoke(prompt, messages, kwargs)

    async def _ainvoke(self, prompt: str | None, messages: list[dict[str, Any]] | None, kwargs: dict[str, Any]) -> list[Any]:
        messages = self._messages(prompt, messages)
        merged = {**self.kwargs, **kwargs}
        queue = settings.get("send_stream")
        if queue is not None and hasattr(self, "astream") and int(merged.get("n", 1) or 1) == 1:
            return await self._astream_to(queue, prompt, messages, merged)
        t0 = time.perf_counter()
        with telemetry.span(_LM_EVENT, model=self.model, provider=self.provider) as sp:
            response = await self.aforward(messages=messages, **merged)
            self._measure(sp, response)
        return self._finish(prompt, messages, merged, response, time.perf_counter() - t0)

    async def _astream_to(
        self, queue: Any, prompt: str | None, messages: list[dict[str, Any]], merged: dict[str, Any]
    ) -> list[Any]:
        """Inside ``streamify``: stream the reply, sending each text delta to the call's queue.

        ``astream`` records history itself; the assembled reply's outputs are returned as usual.
        """
        from dspex.streaming.streamify import _RawChunk

        predict = settings.get("caller_predict")
        final = None
        async for chunk in self.astream(messages=messages, **merged):  # type: ignore[attr-defined]
            if getattr(chunk, "done", False):
                final = chunk.response
                continue
            if chunk.text:
                queue.put_nowait(_RawChunk(predict, chunk.text))
        queue.put_nowait(_RawChunk(predict, "", done=True))
        if final is None:
            entry = self.history[-1] if self.history else None
            if entry is None:
                raise RuntimeError(f"{type(self).__name__}.astream ended without a reply.")
            return list(entry["outputs"])
        return [self._output(c) for c in final.choices]

    # -- helpers --------------------------------------------------------------------------------
    @staticmethod
    def _messages(prompt: str | None, messages: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        if messages is not None:
            return messages
        if prompt is None:
            raise ValueError("Call an LM with prompt= or messages=.")
        return [{"role": "user", "content": prompt}]

    @staticmethod
    def _measure(sp: telemetry.Span, response: LMResponse) -> None:
        # A cache hit carries the usage it had when paid for; it costs nothing now, so its
        # tokens are not counted as spent.
        spent = not response.cache_hit
        sp.set(
            input_tokens=response.usage.prompt_tokens if spent else 0,
            output_tokens=response.usage.completion_tokens if spent else 0,
            cost_usd=response.cost_usd or 0.0,
        )
        sp.meta(cache_hit=response.cache_hit)

    def _finish(
        self,
        prompt: str | None,
        messages: list[dict[str, Any]],
        kwargs: dict[str, Any],
        response: LMResponse,
        elapsed_s: float,
    ) -> list[Any]:
        outputs = [self._output(c) for c in response.choices]
        if not settings.get("disable_history"):
            entry = {
                "prompt": prompt,
                "messages": messages,
                "kwargs": {k: v for k, v in kwargs.items() if k not in _SECRET_KWARGS},
                "response": response,
                "outputs": outputs,
                "usage": response.usage.to_dict(),
                "cost": response.cost_usd,
                "timestamp": time.time(),
                "uuid": f"{random.getrandbits(128):032x}",
                "model": self.model,
                "response_model": response.model,
                "model_type": self.model_type,
                "cache_hit": response.cache_hit,
                "latency_s": elapsed_s,
            }
            self.history.append(entry)
            GLOBAL_HISTORY.append(entry)
        tracker = settings.get("usage_tracker")
        if tracker is not None and not response.cache_hit:
            tracker.add_usage(self.model, response.usage.to_dict())
        return outputs

    @staticmethod
    def _output(choice: Choice) -> Any:
        if choice.tool_calls is None and choice.reasoning_content is None and choice.logprobs is None:
            return choice.text
        out: dict[str, Any] = {"text": choice.text}
        if choice.tool_calls is not None:
            out["tool_calls"] = [
                {"id": tc.id, "type": "function", "function": {"name": tc.name, "arguments": tc.arguments}}
                for tc in choice.tool_calls
            ]
        if choice.reasoning_content is not None:
            out["reasoning_content"] = choice.reasoning_content
        if choice.logprobs is not None:
            out["logprobs"] = choice.logprobs
        return out

    def copy(self, **kwargs: Any) -> BaseLM:
        """A copy with some settings changed and an empty history (DSPy's ``lm.copy``)."""
        new = copy.copy(self)
        new.kwargs = {**self.kwargs}
        new.history = deque(maxlen=self.history.maxlen)
        for key, value in kwargs.items():
            if key in ("model", "model_type", "cache"):
                setattr(new, key, value)
            elif value is None:
                new.kwargs.pop(key, None)
            else:
                new.kwargs[key] = value
        return new

    def dump_state(self) -> dict[str, Any]:
        """The LM's settings for a saved program. Never contains an API key."""
        return {
            "model": self.model,
            "model_type": self.model_type,
            "cache": self.cache,
            **{k: v for k, v in self.kwargs.items() if k not in _SECRET_KWARGS},
        }

    def inspect_history(self, n: int = 1) -> str:
        return inspect_history(n, history=list(self.history))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r})"


_SECRET_KWARGS = frozenset({"api_key", "authorization", "headers", "extra_headers"})


def inspect_history(n: int = 1, history: list[dict[str, Any]] | None = None, *, file: Any = None) -> str:
    """Print and return the last ``n`` calls: messages and outputs, as DSPy's does."""
    entries = list(GLOBAL_HISTORY if history is None else history)[-n:]
    lines: list[str] = []
    for entry in entries:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(entry["timestamp"]))
        lines.append(f"\n\n\x1b[34m[{ts}]\x1b[0m\n")
        for msg in entry["messages"] or [{"role": "user", "content": entry["prompt"]}]:
            lines.append(f"\x1b[31m{msg['role'].capitalize()} message:\x1b[0m\n")
            content = msg.get("content")
            if isinstance(content, list):
                content = "\n".join(str(part.get("text", part)) for part in content)
            lines.append(f"{content}\n")
        lines.append("\x1b[31mResponse:\x1b[0m\n")
        for i, out in enumerate(entry["outputs"]):
            text = out.get("text") if isinstance(out, dict) else out
            prefix = f"\x1b[32m[{i}]\x1b[0m " if len(entry["outputs"]) > 1 else ""
            lines.append(f"\x1b[32m{prefix}{text}\x1b[0m\n")
            if isinstance(out, dict) and out.get("tool_calls"):
                lines.append(f"\x1b[32mTool calls: {out['tool_calls']}\x1b[0m\n")
    text = "".join(lines)
    print(text, file=file)
    return text
