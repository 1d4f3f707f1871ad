"""Streaming a program's outputs as they are generated (DSPy's ``streamify`` shape).

    stream = dspex.streamify(program, stream_listeners=[dspex.streaming.StreamListener("answer")])
    async for item in stream(question="..."):
        if isinstance(item, dspex.streaming.StreamResponse):
            print(item.chunk, end="")
        elif isinstance(item, dspex.Prediction):
            final = item

While a streamed call runs, every LM that can stream (``astream``) sends its text chunks to the
call's queue; each listener picks out the text of its output field from between the adapter's
``[[ ## field ## ]]`` markers (or the JSON adapter's ``"field": "..."`` value).
"""

from dspex.streaming.streamify import StatusMessage, StreamListener, StreamResponse, streamify

__all__ = ["StatusMessage", "StreamListener", "StreamResponse", "streamify"]
