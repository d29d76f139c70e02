"""Build OpenAI response bodies and stream chunks from the core's events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from appliance.backend import Event, Finished, TextDelta, TokenLogprob, ToolCall, ToolCallDelta, Usage


@dataclass(frozen=True)
class Meta:
    id: str
    created: int
    model: str


@dataclass
class Collected:
    """A whole generation gathered from its events."""

    text: str = ""
    reasoning: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finished: Finished | None = None


async def collect(events: AsyncIterator[Event]) -> Collected:
    """The answer's text, its thinking, log-probabilities and end, from a whole generation's events
    (shared by every dialect that answers whole)."""
    out = Collected()
    parts: list[str] = []
    thoughts: list[str] = []
    async for event in events:
        if isinstance(event, TextDelta):
            parts.append(event.text)
            thoughts.append(event.reasoning)
            out.logprobs.extend(event.logprobs)
        elif isinstance(event, Finished):  # calls come whole with it; their deltas are for streams
            out.finished = event
    out.text = "".join(parts)
    out.reasoning = "".join(thoughts)
    return out


def usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def chat_logprob(lp: TokenLogprob) -> dict[str, Any]:
    """One token's log-probability as OpenAI's chat answers (and Ollama's) write it."""
    return {
        "token": lp.token,
        "logprob": lp.logprob,
        "bytes": list(lp.token_bytes),
        "top_logprobs": [{"token": t, "logprob": v, "bytes": list(b)} for t, b, v in lp.top],
    }


def _tool_calls_body(calls: tuple[ToolCall, ...], *, streaming: bool) -> list[dict[str, Any]]:
    out = []
    for index, call in enumerate(calls):
        item: dict[str, Any] = {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        if streaming:
            item["index"] = index
        out.append(item)
    return out


def _tool_call_pieces(delta: ToolCallDelta, streamed: set[int]) -> list[dict[str, Any]]:
    """A ToolCallDelta as OpenAI streams a call: its first piece with the id, type and name (and empty
    arguments), then argument fragments alone."""
    pieces: list[dict[str, Any]] = []
    if delta.index not in streamed:
        streamed.add(delta.index)
        pieces.append({"index": delta.index, "id": delta.id, "type": "function",
                       "function": {"name": delta.name, "arguments": ""}})  # fmt: skip
    if delta.arguments:
        pieces.append({"index": delta.index, "function": {"arguments": delta.arguments}})
    return pieces


def chat_completion(collected: Collected, meta: Meta, *, logprobs: bool) -> dict[str, Any]:
    finished = collected.finished
    assert finished is not None
    message: dict[str, Any] = {"role": "assistant", "content": collected.text or None}
    if collected.reasoning:  # as llama-server and vLLM name it
        message["reasoning_content"] = collected.reasoning
    if finished.tool_calls:
        message["tool_calls"] = _tool_calls_body(finished.tool_calls, streaming=False)
    elif message["content"] is None:
        message["content"] = ""
    return {
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": {"content": [chat_logprob(lp) for lp in collected.logprobs]}
                if logprobs
                else None,
                "finish_reason": finished.finish_reason,
            }
        ],
        "usage": usage_body(finished.usage),
    }


async def chat_chunks(
    events: AsyncIterator[Event], meta: Meta, *, logprobs: bool, include_usage: bool
) -> AsyncIterator[dict[str, Any]]:
    def chunk(delta: dict[str, Any], finish: str | None = None, lps: Any = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": meta.id,
            "object": "chat.completion.chunk",
            "created": meta.created,
            "model": meta.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": lps, "finish_reason": finish}],
        }
        if include_usage:
            body["usage"] = None
        return body

    yield chunk({"role": "assistant", "content": ""})
    streamed: set[int] = set()  # the calls whose deltas went out: Finished does not repeat them
    async for event in events:
        if isinstance(event, TextDelta):
            if event.reasoning:
                yield chunk({"reasoning_content": event.reasoning})
            if event.text or not event.reasoning:
                lps = {"content": [chat_logprob(lp) for lp in event.logprobs]} if logprobs else None
                yield chunk({"content": event.text}, lps=lps)
            continue
        if isinstance(event, ToolCallDelta):
            for piece in _tool_call_pieces(event, streamed):
                yield chunk({"tool_calls": [piece]})
            continue
        # Calls that came only whole (a backend that does not stream them) go out whole, in one chunk.
        whole = [item for item in _tool_calls_body(event.tool_calls, streaming=True)
                 if item["index"] not in streamed]  # fmt: skip
        if whole:
            yield chunk({"tool_calls": whole})
        yield chunk({}, finish=event.finish_reason)
        if include_usage:
            yield {
                "id": meta.id,
                "object": "chat.completion.chunk",
                "created": meta.created,
                "model": meta.model,
                "choices": [],
                "usage": usage_body(event.usage),
            }


def _completion_logprobs(lps: list[TokenLogprob], start_offset: int) -> dict[str, Any]:
    offsets, offset = [], start_offset
    for lp in lps:
        offsets.append(offset)
        offset += len(lp.token)
    return {
        "tokens": [lp.token for lp in lps],
        "token_logprobs": [lp.logprob for lp in lps],
        "top_logprobs": [{t: v for t, _, v in lp.top} for lp in lps],
        "text_offset": offsets,
    }


def completion(collected: Collected, meta: Meta, *, logprobs: bool) -> dict[str, Any]:
    finished = collected.finished
    assert finished is not None
    return {
        "id": meta.id,
        "object": "text_completion",
        "created": meta.created,
        "model": meta.model,
        "choices": [
            {
                "index": 0,
                "text": collected.text,
                "logprobs": _completion_logprobs(collected.logprobs, 0) if logprobs else None,
                "finish_reason": finished.finish_reason,
            }
        ],
        "usage": usage_body(finished.usage),
    }


async def completion_chunks(
    events: AsyncIterator[Event], meta: Meta, *, logprobs: bool, include_usage: bool
) -> AsyncIterator[dict[str, Any]]:
    offset = 0

    def chunk(text: str, finish: str | None, lps: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": meta.id,
            "object": "text_completion",
            "created": meta.created,
            "model": meta.model,
            "choices": [{"index": 0, "text": text, "logprobs": lps, "finish_reason": finish}],
        }
        if include_usage:
            body["usage"] = None
        return body

    async for event in events:
        if isinstance(event, TextDelta):
            lps = _completion_logprobs(list(event.logprobs), offset) if logprobs else None
            offset += len(event.text)
            yield chunk(event.text, None, lps)
            continue
        if isinstance(event, ToolCallDelta):
            continue
        yield chunk("", event.finish_reason, None)
        if include_usage:
            final = chunk("", None, None)
            final["choices"] = []
            final["usage"] = usage_body(event.usage)
            yield final
