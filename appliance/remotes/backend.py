"""A remote OpenAI-compatible server (vLLM, SGLang, another appliance) behind the same Backend seam as
llama.cpp here: the core's chat, completion and embedding requests go out as OpenAI JSON, and the
remote's SSE stream comes back as the same TextDelta/Finished events the local engine yields (with the
tokens' log-probabilities when asked for), so every dialect can answer from either.

``chat`` and ``complete`` return only once the remote's first byte has arrived: until then a failure is
a Failover (the caller tries the next remote, or this machine); after it, a RemoteFailed raised from
the event stream, which each dialect writes as its own error event.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from appliance.backend import (
    Capabilities,
    ChatParams,
    CompletionParams,
    Embeddings,
    Event,
    Finished,
    FinishReason,
    Reasoning,
    TextDelta,
    TokenLogprob,
    ToolCallDelta,
    Usage,
)
from appliance.engine.params import SamplingParams
from appliance.engine.tools import ToolCall
from appliance.remotes.pool import Remote
from appliance.remotes.upstream import (
    Failover,
    RemoteFailed,
    RemoteRejected,
    first_chunk,
    open_response,
    unless_down,
)

_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "tool_calls": "tool_calls"}
_MESSAGE_CHARS = 500  # of a remote's error body quoted back to the client


def _sampling(sampling: SamplingParams, kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k,
        "min_p": sampling.min_p,
        "presence_penalty": sampling.presence_penalty,
        "frequency_penalty": sampling.frequency_penalty,
    }
    if sampling.repeat_penalty != 1.0:  # vLLM and SGLang name llama.cpp's repeat_penalty so
        out["repeat_penalty" if kind == "openai" else "repetition_penalty"] = sampling.repeat_penalty
    if sampling.seed is not None:
        out["seed"] = sampling.seed
    if sampling.logit_bias:
        out["logit_bias"] = {str(token): bias for token, bias in sampling.logit_bias.items()}
    if sampling.ignore_eos:
        out["ignore_eos"] = True
    return out


def _response_format(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    if schema is None:
        return None
    if schema == {"type": "object"}:  # any JSON object (Ollama's format "json")
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


def chat_body(params: ChatParams, model: str, kind: str) -> dict[str, Any]:
    """``params`` as an OpenAI chat completion request for ``model`` on a remote of ``kind``, streamed."""
    body: dict[str, Any] = {
        "model": model,
        "messages": params.messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        **_sampling(params.sampling, kind),
    }
    if params.max_tokens is not None:
        body["max_tokens"] = params.max_tokens
    if params.stop:
        body["stop"] = list(params.stop)
    if params.tools:
        body["tools"] = params.tools
        if params.tool_choice is not None:
            body["tool_choice"] = params.tool_choice
    if (response_format := _response_format(params.json_schema)) is not None:
        body["response_format"] = response_format
    body.update(_grammar(params.grammar, kind))
    if params.top_logprobs is not None:
        body["logprobs"] = True
        body["top_logprobs"] = params.top_logprobs
    body.update(_reasoning(params.reasoning, kind))
    if params.template_kwargs:  # the client's own, passed on as it gave them (its switch wins)
        body["chat_template_kwargs"] = {**params.template_kwargs, **body.get("chat_template_kwargs", {})}
    return body


def _reasoning(reasoning: Reasoning, kind: str) -> dict[str, Any]:
    """The request's thinking switch in OpenAI's terms (``reasoning_effort``), and for vLLM and SGLang
    also as the chat template's ``enable_thinking`` (how Qwen3 and its kin are switched)."""
    out: dict[str, Any] = {}
    effort = reasoning.effort
    if effort is not None:
        # vLLM and SGLang take low, medium and high only.
        out["reasoning_effort"] = "low" if effort == "minimal" and kind != "openai" else effort
    elif reasoning.enabled is False and kind == "openai":
        out["reasoning_effort"] = "none"
    if reasoning.enabled is not None and kind != "openai":
        out["chat_template_kwargs"] = {"enable_thinking": reasoning.enabled}
    return out


def _grammar(grammar: str | None, kind: str) -> dict[str, Any]:
    """A client's GBNF grammar, for the remotes that read llama-server's field (kind ``openai``: another
    appliance, llama-server); the router sends a request with one to no other kind (Capabilities)."""
    return {"grammar": grammar} if grammar is not None and kind == "openai" else {}


def completion_body(params: CompletionParams, model: str, kind: str) -> dict[str, Any]:
    """``params`` as an OpenAI completion request for ``model`` on a remote of ``kind``, streamed."""
    body: dict[str, Any] = {
        "model": model,
        "prompt": params.prompt,
        "stream": True,
        "echo": params.echo,
        "stream_options": {"include_usage": True},
        **_sampling(params.sampling, kind),
    }
    if params.max_tokens is not None:
        body["max_tokens"] = params.max_tokens
    if params.stop:
        body["stop"] = list(params.stop)
    if (response_format := _response_format(params.json_schema)) is not None:
        body["response_format"] = response_format
    body.update(_grammar(params.grammar, kind))
    if params.top_logprobs is not None:
        body["logprobs"] = params.top_logprobs  # the legacy shape: how many alternatives
    return body


def _token(token: Any, data: Any) -> tuple[str, bytes]:
    """A token's text and bytes as the remote gave them (bytes only in the chat shape; else its UTF-8)."""
    text = str(token or "")
    if isinstance(data, list) and all(isinstance(b, int) and 0 <= b < 256 for b in data):
        return text, bytes(data)
    return text, text.encode()


def _chat_logprobs(logprobs: dict[str, Any]) -> tuple[TokenLogprob, ...]:
    """A chat chunk's ``logprobs.content`` entries as the core's TokenLogprobs."""
    out = []
    for item in logprobs.get("content") or []:
        top = tuple(
            (*_token(alt.get("token"), alt.get("bytes")), float(alt.get("logprob") or 0.0))
            for alt in item.get("top_logprobs") or []
        )
        text, data = _token(item.get("token"), item.get("bytes"))
        out.append(TokenLogprob(text, data, float(item.get("logprob") or 0.0), top))
    return tuple(out)


def _completion_logprobs(logprobs: dict[str, Any]) -> tuple[TokenLogprob, ...]:
    """A completion chunk's legacy ``logprobs`` (parallel lists, alternatives as dicts) as TokenLogprobs."""
    tokens = logprobs.get("tokens") or []
    values = logprobs.get("token_logprobs") or []
    tops = logprobs.get("top_logprobs") or []
    out = []
    for i, token in enumerate(tokens):
        alternatives = tops[i] if i < len(tops) and isinstance(tops[i], dict) else {}
        top = tuple((*_token(t, None), float(v or 0.0)) for t, v in alternatives.items())
        value = values[i] if i < len(values) else None
        out.append(TokenLogprob(*_token(token, None), float(value or 0.0), top))
    return tuple(out)


def _error_message(remote: Remote, status: int, content: bytes) -> str:
    """The remote's own words for an error (OpenAI's or vLLM's shape), else its body's start."""
    try:
        data = json.loads(content)
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        message = error.get("message") if isinstance(error, dict) else data.get("message")
        if isinstance(message, str) and message:
            return message[:_MESSAGE_CHARS]
    text = content.decode(errors="replace").strip()[:_MESSAGE_CHARS]
    return f"the remote {remote.name} answered {status}" + (f": {text}" if text else "")


def _refusal(remote: Remote, status: int, content: bytes) -> Exception:
    """A non-200 answer that is not a failover status: the client's fault (4xx) as it is, else a 502."""
    message = _error_message(remote, status, content)
    return RemoteRejected(message, status=status) if status < 500 else RemoteFailed(message)


class RemoteStream:
    """The events of one remote generation; ``cancel()`` closes the upstream request (the remote stops)."""

    prompt_tokens: int | None = None  # the remote says it only in the usage at the end

    def __init__(
        self, remote: Remote, response: httpx.Response, chunks: AsyncIterator[bytes], first: bytes, chat: bool
    ) -> None:
        self._remote = remote
        self._response = response
        self._chunks = chunks
        self._first = first
        self._chat = chat
        self._closing: asyncio.Future[None] | None = None

    def cancel(self) -> None:
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._response.aclose())

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        remote = self._remote
        buffer, done = self._first, False
        finish: str | None = None
        matched: str | None = None  # vLLM names the stop string that ended the text in ``stop_reason``
        usage: dict[str, Any] = {}
        calls: dict[int, _Call] = {}  # the remote's index -> the call as it comes in
        try:
            while not done:
                buffer = buffer.replace(b"\r\n", b"\n")
                while b"\n\n" in buffer and not done:
                    raw, buffer = buffer.split(b"\n\n", 1)
                    data = b"".join(
                        line[5:].strip() for line in raw.split(b"\n") if line.startswith(b"data:")
                    )
                    if data == b"[DONE]":
                        done = True
                    elif data:
                        chunk = self._chunk(data)
                        usage = chunk.get("usage") or usage
                        for choice in chunk.get("choices") or []:
                            text, thought = self._text(choice)
                            logprobs = self._logprobs(choice)
                            if text or thought or logprobs:
                                yield TextDelta(text, logprobs, reasoning=thought)
                            for delta in self._tool_call_deltas(choice, calls):
                                yield delta
                            finish = choice.get("finish_reason") or finish
                            if isinstance(choice.get("stop_reason"), str):
                                matched = choice["stop_reason"]
                if done:
                    break
                try:
                    more = await asyncio.wait_for(
                        anext(self._chunks), remote.settings.timeouts.between_chunks_s
                    )
                except StopAsyncIteration:
                    break
                except (TimeoutError, httpx.HTTPError) as exc:
                    remote.breaker.failure()
                    why = (
                        "stopped answering"
                        if isinstance(exc, TimeoutError)
                        else f"failed ({type(exc).__name__})"
                    )
                    raise RemoteFailed(
                        f"the remote {remote.name} {why} in the middle of the answer"
                    ) from None
                buffer += more
            if finish is None:
                remote.breaker.failure()
                raise RemoteFailed(
                    f"the remote {remote.name} ended the stream before the answer was complete"
                )
            tool_calls = tuple(call.whole() for call in calls.values())
            counts = Usage(
                int(usage.get("prompt_tokens") or 0),
                int(usage.get("completion_tokens") or 0),
                int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0),
            )
            yield Finished(_FINISH.get(finish, "stop"), counts, tool_calls, matched)
        finally:
            self.cancel()

    def _chunk(self, data: bytes) -> dict[str, Any]:
        try:
            chunk = json.loads(data)
        except ValueError:
            chunk = None
        if not isinstance(chunk, dict):
            raise RemoteFailed(f"the remote {self._remote.name} sent an event that is not JSON")
        error = chunk.get("error")
        if error is not None:  # vLLM's way to fail mid-stream
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise RemoteFailed(f"the remote {self._remote.name} failed: {message}"[:_MESSAGE_CHARS])
        return chunk

    def _logprobs(self, choice: dict[str, Any]) -> tuple[TokenLogprob, ...]:
        """The log-probabilities of a choice's new tokens, when the request asked for them."""
        logprobs = choice.get("logprobs")
        if not isinstance(logprobs, dict):
            return ()
        return _chat_logprobs(logprobs) if self._chat else _completion_logprobs(logprobs)

    def _text(self, choice: dict[str, Any]) -> tuple[str, str]:
        """A choice's new text and thoughts (vLLM's and SGLang's reasoning parsers split them out, named
        ``reasoning_content``, or ``reasoning`` in newer vLLM)."""
        if not self._chat:
            return str(choice.get("text") or ""), ""
        delta = choice.get("delta") or {}
        thought = delta.get("reasoning_content") or delta.get("reasoning") or ""
        return str(delta.get("content") or ""), str(thought)

    def _tool_call_deltas(self, choice: dict[str, Any], calls: dict[int, _Call]) -> list[ToolCallDelta]:
        """A choice's tool call pieces, gathered into ``calls`` (by the remote's index, in the order the
        calls began) for Finished, and passed on as the seam's deltas: a call's first delta once its name
        is known (with its id, and any arguments that came with it), then its argument text. vLLM sends
        the id and name in a call's first piece only; SGLang sends later pieces with null id and name."""
        out: list[ToolCallDelta] = []
        pieces = (choice.get("delta") or {}).get("tool_calls") if self._chat else None
        for piece in pieces if isinstance(pieces, list) else []:
            if not isinstance(piece, dict):
                continue
            key = piece.get("index")
            call = calls.setdefault(key if isinstance(key, int) else len(calls), _Call(len(calls)))
            function = piece.get("function")
            function = function if isinstance(function, dict) else {}
            if piece.get("id") and not call.id:
                call.id = str(piece["id"])
            name, arguments = function.get("name"), function.get("arguments")
            if isinstance(name, str):
                call.name += name
            fragment = arguments if isinstance(arguments, str) else ""
            call.arguments += fragment
            if not call.begun and call.name:
                call.begun = True
                call.id = call.id or f"call_{call.position}"
                out.append(ToolCallDelta(call.position, call.id, call.name, call.arguments))
            elif call.begun and fragment:
                out.append(ToolCallDelta(call.position, arguments=fragment))
        return out


@dataclass
class _Call:
    """A tool call as a remote streams it: ``position`` is its place among the reply's calls."""

    position: int
    id: str = ""
    name: str = ""
    arguments: str = ""
    begun: bool = False
    """Its first ToolCallDelta (id and name) has gone out."""

    def whole(self) -> ToolCall:
        return ToolCall(self.id or f"call_{self.position}", self.name, self.arguments)


class RemoteBackend:
    """Serves ``model_id`` (the name asked for here) from ``remote``, under the remote's name for it."""

    def __init__(self, client: httpx.AsyncClient, remote: Remote, model_id: str, remote_model: str) -> None:
        self._client = client
        self.remote = remote
        self.model_id = model_id
        self.remote_model = remote_model

    @property
    def capabilities(self) -> Capabilities:
        return self.remote.capabilities

    async def chat(self, params: ChatParams) -> RemoteStream:
        """The reply's stream once its first byte is here; Failover before that."""
        body = chat_body(params, self.remote_model, self.remote.settings.kind)
        return await self._stream("/v1/chat/completions", body, chat=True)

    async def complete(self, params: CompletionParams) -> RemoteStream:
        """A raw completion's stream once its first byte is here; Failover before that."""
        body = completion_body(params, self.remote_model, self.remote.settings.kind)
        return await self._stream("/v1/completions", body, chat=False)

    async def embed(self, inputs: list[str] | list[list[int]]) -> Embeddings:
        """The remote's vectors; Failover if it cannot answer."""
        remote = self.remote
        down = remote.down_signal()
        body: dict[str, Any] = {"model": self.remote_model, "input": inputs}
        response = await open_response(self._client, remote, "/v1/embeddings", body, down)
        try:
            content = await unless_down(response.aread(), remote, down, remote.settings.timeouts.first_byte_s)
        except (httpx.HTTPError, TimeoutError) as exc:
            remote.breaker.failure()
            raise Failover(f"{remote.name}: {type(exc).__name__}") from None
        finally:
            await response.aclose()
        remote.breaker.success()
        if response.status_code != 200:
            raise _refusal(remote, response.status_code, content)
        try:
            data = json.loads(content)
            vectors = [item["embedding"] for item in sorted(data["data"], key=lambda item: item["index"])]
            prompt_tokens = int((data.get("usage") or {}).get("prompt_tokens") or 0)
        except (ValueError, KeyError, TypeError):
            raise RemoteFailed(f"the remote {remote.name} sent embeddings that cannot be read") from None
        return Embeddings(vectors, prompt_tokens)

    async def _stream(self, path: str, body: dict[str, Any], chat: bool) -> RemoteStream:
        remote = self.remote
        started = time.monotonic()
        down = remote.down_signal()
        response = await open_response(self._client, remote, path, body, down)
        chunks = response.aiter_bytes()
        first = await first_chunk(response, chunks, remote, down)
        if response.status_code != 200:
            rest = b"".join([first, *[c async for c in chunks]])
            await response.aclose()
            raise _refusal(remote, response.status_code, rest)
        remote.ttft_s.append(time.monotonic() - started)
        return RemoteStream(remote, response, chunks, first, chat)
