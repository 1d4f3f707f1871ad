"""``streamify``, ``StreamListener`` and ``StreamResponse``. See the package docstring."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from dspex.primitives.prediction import Prediction
from dspex.settings import settings

__all__ = ["StatusMessage", "StreamListener", "StreamResponse", "streamify"]

_MARKER = re.compile(r"\[\[ ## (\w+) ## \]\]")


@dataclass
class StreamResponse:
    predict_name: str
    signature_field_name: str
    chunk: str
    is_last_chunk: bool = False


@dataclass
class StatusMessage:
    message: str


@dataclass
class _RawChunk:
    """What an LM sends on the stream queue: the predictor that asked and a text delta."""

    predict: Any
    text: str
    done: bool = False


class StreamListener:
    """Emit the text of one output field as it streams.

    ``predict`` limits the listener to one predictor (else any predictor with that field).
    """

    def __init__(self, signature_field_name: str, predict: Any = None, predict_name: str | None = None, allow_reuse: bool = False) -> None:
        self.signature_field_name = signature_field_name
        self.predict = predict
        self.predict_name = predict_name
        self.allow_reuse = allow_reuse
        self._buffers: dict[int, str] = {}
        self._emitted: dict[int, int] = {}
        self._finished: set[int] = set()

    def _reset(self) -> None:
        self._buffers.clear()
        self._emitted.clear()
        self._finished.clear()

    def receive(self, raw: _RawChunk, name: str) -> StreamResponse | None:
        if self.predict is not None and raw.predict is not self.predict:
            return None
        if raw.predict is None or self.signature_field_name not in raw.predict.signature.output_fields:
            return None
        key = id(raw.predict)
        if key in self._finished:
            if not self.allow_reuse:
                return None
            self._finished.discard(key)
            self._buffers.pop(key, None)
            self._emitted.pop(key, None)
        buf = self._buffers.get(key, "") + raw.text
        self._buffers[key] = buf
        start = _field_start(buf, self.signature_field_name)
        if start is None:
            return None
        end = _field_end(buf, start)
        # Hold back a few characters that could be the start of the next marker.
        visible_end = end if end is not None else max(start, len(buf) - 8) if not raw.done else len(buf)
        text = buf[start:visible_end]
        already = self._emitted.get(key, 0)
        new = text[already:]
        last = end is not None or raw.done
        if last:
            self._finished.add(key)
            new = new.rstrip() if end is not None else new
        if not new and not last:
            return None
        self._emitted[key] = already + len(new)
        return StreamResponse(self.predict_name or name, self.signature_field_name, new, is_last_chunk=last)


def _field_start(buf: str, field: str) -> int | None:
    marker = f"[[ ## {field} ## ]]"
    i = buf.find(marker)
    if i != -1:
        j = i + len(marker)
        while j < len(buf) and buf[j] in "\r\n":
            j += 1
        return j
    m = re.search(r'"' + re.escape(field) + r'"\s*:\s*"', buf)  # JSON adapter
    return m.end() if m else None


def _field_end(buf: str, start: int) -> int | None:
    m = _MARKER.search(buf, start)
    if m:
        return m.start()
    j = buf.find('"', start)
    if j != -1 and buf.startswith('"', j) and buf[start - 1] == '"' and "[[ ##" not in buf[:start]:
        return j
    return None


def streamify(
    program: Any,
    status_message_provider: Any = None,
    stream_listeners: list[StreamListener] | None = None,
    include_final_prediction_in_output_stream: bool = True,
    is_async_program: bool = False,
    async_streaming: bool = True,
) -> Callable[..., AsyncIterator[Any]]:
    """Wrap ``program`` so that calling it returns an async iterator of stream items and, last,
    the final Prediction."""
    listeners = list(stream_listeners or [])
    names = {id(p): n for n, p in program.named_predictors()} if hasattr(program, "named_predictors") else {}

    async def streamer(**kwargs: Any) -> AsyncIterator[Any]:
        for listener in listeners:
            listener._reset()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        done = object()

        async def run() -> Any:
            try:
                with settings.context(send_stream=queue, stream_listeners=listeners):
                    return await program.acall(**kwargs)
            finally:
                queue.put_nowait(done)

        task = asyncio.create_task(run())
        while True:
            item = await queue.get()
            if item is done:
                break
            if isinstance(item, _RawChunk):
                name = names.get(id(item.predict), "self")
                for listener in listeners:
                    resp = listener.receive(item, name)
                    if resp is not None and (resp.chunk or resp.is_last_chunk):
                        yield resp
            else:
                yield item
        result = await task
        if include_final_prediction_in_output_stream and isinstance(result, Prediction):
            yield result
        elif include_final_prediction_in_output_stream:
            yield result

    return streamer


def apply_sync_streaming(async_generator: AsyncIterator[Any]) -> Any:
    """Iterate an async stream from sync code (``for item in apply_sync_streaming(stream(...))``)."""
    from dspex.utils.asyncio_bridge import background_loop

    loop = background_loop()
    it = async_generator.__aiter__()
    while True:
        fut = asyncio.run_coroutine_threadsafe(_anext(it), loop)
        ok, value = fut.result()
        if not ok:
            return
        yield value


async def _anext(it: Any) -> tuple[bool, Any]:
    try:
        return True, await it.__anext__()
    except StopAsyncIteration:
        return False, None
