"""How soon a streamed tool call reaches a client, and what writing it costs, in each dialect.

1. A recorded vLLM tool-call stream (tests/fixtures/remotes/vllm-llama3.1-tool-call-stream.txt: one call,
   its arguments in five pieces) is replayed with ``--gap-ms`` between its chunks through the remote
   backend and each dialect's writer: the time from the start to the first byte of the call the client
   gets (OpenAI's first ``tool_calls`` chunk, Anthropic's ``tool_use`` block start, Ollama's
   ``tool_calls`` line, the Responses API's ``function_call`` item added) and to the end. "whole" is
   the same reply with the call given only in Finished, as every writer sent it before calls streamed.
2. The writers' cost per ToolCallDelta: a reply of two calls of ``--fragments`` argument pieces each,
   written ``--rounds`` times.

    python benchmarks/tool_call_stream.py [--gap-ms 20] [--fragments 500] [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx

from appliance.backend import Event, Finished, ToolCall, ToolCallDelta, Usage
from appliance.config import RemoteSettings
from appliance.remotes.backend import RemoteStream
from appliance.remotes.pool import Remote
from server import anthropic_routes, ollama_routes, openai_payloads, responses_stream
from server.sse import frame

RECORDED = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "remotes"
STREAM = (RECORDED / "vllm-llama3.1-tool-call-stream.txt").read_bytes()


async def _openai(events: AsyncIterator[Event]) -> AsyncIterator[Any]:
    meta = openai_payloads.Meta("chatcmpl-1", 0, "m")
    async for chunk in openai_payloads.chat_chunks(events, meta, logprobs=False, include_usage=False):
        yield frame(chunk)  # as the route's SSE writer sends it


def _anthropic(events: AsyncIterator[Event]) -> AsyncIterator[Any]:
    return anthropic_routes._events(events, lambda: None, "msg_1", "m")


async def _ollama(events: AsyncIterator[Event]) -> AsyncIterator[Any]:
    answer = await ollama_routes._answer(
        events, lambda: None, "m", True, chat=True, started=time.monotonic_ns()
    )
    async for line in answer.body_iterator:
        yield line


async def _responses(events: AsyncIterator[Event]) -> AsyncIterator[Any]:
    def finish(*_: Any) -> dict[str, Any]:
        return {"id": "resp_1"}

    started = {"id": "resp_1"}
    written = responses_stream.response_events(events, started, finish, logprobs=False, namespaces={})
    async for event in written:
        yield frame(event, event=event["type"])  # as the route sends it


_CALL_MARKS = {"anthropic": '"tool_use"', "responses": '"function_call"'}


def _carries_call(dialect: str, item: Any) -> bool:
    text = item.decode() if isinstance(item, bytes) else str(item)
    return _CALL_MARKS.get(dialect, '"tool_calls"') in text


WRITERS: dict[str, Callable[[AsyncIterator[Event]], AsyncIterator[Any]]] = {
    "openai": _openai, "anthropic": _anthropic, "ollama": _ollama, "responses": _responses,
}  # fmt: skip


async def _replayed(gap_s: float, whole_only: bool) -> AsyncIterator[Event]:
    """The recorded stream's events, its chunks ``gap_s`` apart; ``whole_only``: its deltas held back."""

    async def chunks() -> AsyncIterator[bytes]:
        for piece in STREAM.split(b"\n\n"):
            await asyncio.sleep(gap_s)
            yield piece + b"\n\n"

    remote = Remote(RemoteSettings(name="gpu", kind="vllm", base_url="http://100.64.0.2:8000"))
    stream = RemoteStream(remote, httpx.Response(200, content=b""), chunks(), b"", chat=True)
    async for event in stream:
        if not (whole_only and isinstance(event, ToolCallDelta)):
            yield event


async def _first_call_s(dialect: str, gap_s: float, whole_only: bool) -> tuple[float, float]:
    started = time.monotonic()
    first = None
    async for item in WRITERS[dialect](_replayed(gap_s, whole_only)):
        if first is None and _carries_call(dialect, item):
            first = time.monotonic() - started
    return first or 0.0, time.monotonic() - started


def _reply(fragments: int) -> list[Event]:
    events: list[Event] = []
    calls = []
    for index in (0, 1):
        pieces = ['{"text": "'] + ["word " for _ in range(fragments)] + ['"}']
        events.append(ToolCallDelta(index, f"call_{index}", "write"))
        events += [ToolCallDelta(index, arguments=piece) for piece in pieces]
        calls.append(ToolCall(f"call_{index}", "write", "".join(pieces)))
    return [*events, Finished("tool_calls", Usage(10, 2 * fragments), tuple(calls))]


async def _cost_us(dialect: str, reply: list[Event], rounds: int) -> float:
    async def events() -> AsyncIterator[Event]:
        for event in reply:
            yield event

    started = time.perf_counter()
    for _ in range(rounds):
        async for _item in WRITERS[dialect](events()):
            pass
    deltas = sum(isinstance(e, ToolCallDelta) for e in reply)
    return 1e6 * (time.perf_counter() - started) / (rounds * deltas)


@dataclasses.dataclass
class Row:
    dialect: str
    first_call_ms: float
    first_call_whole_ms: float
    end_ms: float
    us_per_delta: float


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gap-ms", type=float, default=20.0)
    parser.add_argument("--fragments", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    gap_s = args.gap_ms / 1000
    reply = _reply(args.fragments)
    rows = []
    for dialect in WRITERS:
        first, end = await _first_call_s(dialect, gap_s, whole_only=False)
        whole, _ = await _first_call_s(dialect, gap_s, whole_only=True)
        cost = await _cost_us(dialect, reply, args.rounds)
        rows.append(Row(dialect, 1000 * first, 1000 * whole, 1000 * end, cost))
    print(f"recorded vLLM stream, {args.gap_ms:g} ms between chunks; 2 calls x {args.fragments} pieces")
    print(f"{'dialect':<10} {'first call (ms)':>16} {'whole only (ms)':>16} {'end (ms)':>9} {'us/delta':>9}")
    for row in rows:
        print(f"{row.dialect:<10} {row.first_call_ms:>16.0f} {row.first_call_whole_ms:>16.0f} "
              f"{row.end_ms:>9.0f} {row.us_per_delta:>9.1f}")  # fmt: skip
    print(json.dumps([dataclasses.asdict(row) for row in rows]))


if __name__ == "__main__":
    asyncio.run(main())
