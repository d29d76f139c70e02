"""Jobs handed to the engine's thread, and the stream that carries their events back to the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from appliance.engine.formats.reader import ReplyReader
from appliance.engine.params import SamplingParams

DONE = object()


class JobStream:
    """The events of one queued job, consumed on the event loop. ``cancel()`` stops the job."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_done: Callable[[], None] | None = None) -> None:
        self._loop = loop
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self.cancelled = threading.Event()
        self._on_done = on_done  # called once, on the worker, when DONE is first emitted
        self.prompt_tokens: int | None = None  # a generation's prompt length, known when it is queued

    # Worker side.
    def emit(self, item: Any) -> None:
        if item is DONE and self._on_done is not None:
            on_done, self._on_done = self._on_done, None
            on_done()
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, item)
        except RuntimeError:  # the loop is gone (shutdown): nobody is listening any more
            self.cancelled.set()

    # Loop side.
    def cancel(self) -> None:
        self.cancelled.set()

    def __aiter__(self) -> JobStream:
        return self

    async def __anext__(self) -> Any:
        try:
            item = await self._events.get()
        except asyncio.CancelledError:
            self.cancel()  # whoever waited for this job's events is gone (its client left): stop the job
            raise
        if item is DONE:
            self._events.put_nowait(DONE)  # stay exhausted
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item

    async def result(self) -> Any:
        """The single value a non-streaming job produces."""
        try:
            return await self.__anext__()
        finally:
            self.cancel()


@dataclass
class GenerationJob:
    """Generate after ``prompt`` in a slot of the batching engine."""

    stream: JobStream
    prompt: list[int]
    sampling: SamplingParams
    max_tokens: int
    stop: tuple[str, ...] = ()
    top_logprobs: int | None = None
    reader: ReplyReader | None = None
    """Reads the output as its model family writes it (thoughts, tool calls); None: the output is plain
    text, streamed as it comes."""
    preserved: frozenset[int] = frozenset()  # special tokens written as text (a family's markers)
    thinking_budget: int | None = None  # tokens of thoughts at most; then ``end_thoughts`` is written
    end_thoughts: tuple[int, ...] = ()
    prefix_text: str = ""
    deadline: float | None = None  # time.monotonic() after which generation stops ("length")


@dataclass
class ExclusiveJob:
    """Run ``run(model, stream)`` with the model to itself (embeddings), between batches."""

    stream: JobStream
    run: Callable[[Any, JobStream], None]


Job = GenerationJob | ExclusiveJob
