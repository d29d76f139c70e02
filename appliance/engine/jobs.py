"""Jobs handed to the engine's thread, and the stream that carries their events back to the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from appliance.backend import TextDelta
from appliance.engine.formats.reader import ReplyReader
from appliance.engine.params import SamplingParams

DONE = object()


def merged(items: list[Any]) -> list[Any]:
    """``items`` with each run of text deltas joined into one where their order survives it (thoughts
    then answer, not answer then thoughts): what one step brings goes out as one chunk."""
    out: list[Any] = []
    for item in items:
        last = out[-1] if out else None
        if isinstance(item, TextDelta) and isinstance(last, TextDelta) and not (last.text and item.reasoning):
            out[-1] = TextDelta(
                last.text + item.text, last.logprobs + item.logprobs, last.reasoning + item.reasoning
            )
        else:
            out.append(item)
    return out


class JobStream:
    """The events of one queued job, consumed on the event loop. ``cancel()`` stops the job."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_done: Callable[[], None] | None = None) -> None:
        self._loop = loop
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self.cancelled = threading.Event()
        self._on_done = on_done  # called once, on the worker, when DONE is first emitted
        self.prompt_tokens: int | None = None  # a generation's prompt length, known when it is queued
        self._held: list[Any] | None = None  # events kept between hold() and flush()

    # Worker side.
    def emit(self, item: Any) -> None:
        if item is DONE and self._on_done is not None:
            on_done, self._on_done = self._on_done, None
            on_done()
        if self._held is not None:
            self._held.append(item)
        else:
            self._send(self._events.put_nowait, item)

    def hold(self) -> None:
        """Keep the events emitted from now until ``flush``: the several tokens of one step (kept
        guesses) then reach the event loop in one wakeup, their text in one delta. Each event's work
        there (a chunk encoded, the middleware, a socket write: 150-200 us on a 2-core VM) is a fair part
        of the ~1 ms a GPU spends on a token of a small model, and holds the GIL the engine's thread
        needs."""
        if self._held is None:
            self._held = []

    def flush(self) -> None:
        """Send what was kept since ``hold``, and stop keeping."""
        held, self._held = self._held, None
        if held:
            self._send(self._put_all, merged(held))

    def _put_all(self, items: list[Any]) -> None:
        for item in items:
            self._events.put_nowait(item)

    def _send(self, put: Callable[[Any], None], what: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(put, what)
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
