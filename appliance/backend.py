"""The seam between the server and whatever generates text: requests, events, and the Backend protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from appliance.engine.params import SamplingParams
from appliance.engine.tools import ToolCall

# SamplingParams and ToolCall are part of the seam: the server names them from here, not from the engine.
__all__ = ["SamplingParams", "ToolCall"]


Effort = Literal["minimal", "low", "medium", "high"]


@dataclass(frozen=True)
class Reasoning:
    """What a chat asks of a model that thinks before it answers; None: the model's own default.
    Every dialect's switch lands here: OpenAI's ``reasoning_effort``, Ollama's ``think``, Anthropic's
    ``thinking``."""

    enabled: bool | None = None
    effort: Effort | None = None
    budget_tokens: int | None = None


@dataclass(frozen=True)
class ChatParams:
    """A chat request in the core's terms (validated wire data, OpenAI semantics)."""

    messages: list[dict[str, Any]]
    """OpenAI-shaped messages; a content may be a list of ``text`` and ``image_url`` parts."""
    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    top_logprobs: int | None = None  # None: no logprobs; 0: the chosen token's only
    json_schema: dict[str, Any] | None = None
    grammar: str | None = None
    """A client's GBNF grammar (llama-server's ``grammar``), instead of ``json_schema``; with ``tools``
    it drives sampling in place of the tool format's own grammar, and the reply is still read for calls."""
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: Any = None
    # llama-server's default: small models asked for a list of calls tend to repeat one forever.
    parallel_tool_calls: bool = False
    reasoning: Reasoning = field(default_factory=Reasoning)
    template_kwargs: dict[str, Any] = field(default_factory=dict)
    """More variables for the model's chat template (vLLM's ``chat_template_kwargs``)."""
    context_tokens: int | None = None
    """The context this request may use (Ollama's ``num_ctx``): prompt and reply within it. None: one
    slot's; more than a slot holds is the manager's to grant (a reload) before the engine sees it."""


def has_images(messages: list[dict[str, Any]]) -> bool:
    """Whether a chat's messages carry images (OpenAI ``image_url`` content parts, as every dialect's
    images are written on the seam)."""
    return any(
        isinstance(part, dict) and part.get("type") == "image_url"
        for message in messages
        if isinstance(message.get("content"), list)
        for part in message["content"]
    )


@dataclass(frozen=True)
class Infill:
    """Fill-in-the-middle: the text before the gap and after it, other files of the repository for
    context (``(filename, text)`` pairs, llama-server's ``input_extra``), and text the middle starts with
    (llama-server's ``prompt`` on /infill). The model's FIM tokens frame them (appliance.engine.infill)."""

    prefix: str
    suffix: str
    extra: tuple[tuple[str, str], ...] = ()
    prompt: str = ""


@dataclass(frozen=True)
class CompletionParams:
    """A text completion request: a raw prompt, no chat template; or, with ``infill``, the middle between
    a prefix and a suffix (``prompt`` is then ignored)."""

    prompt: str | list[int]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int | None = 16
    stop: tuple[str, ...] = ()
    top_logprobs: int | None = None
    echo: bool = False
    json_schema: dict[str, Any] | None = None
    grammar: str | None = None  # a client's GBNF grammar, instead of json_schema
    context_tokens: int | None = None  # as ChatParams.context_tokens
    infill: Infill | None = None


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    token_bytes: bytes
    logprob: float
    top: tuple[tuple[str, bytes, float], ...] = ()


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class TextDelta:
    """New output text, with the log-probabilities of the tokens generated since the last delta;
    ``reasoning``: new text of the model's thinking, kept apart from the answer (each dialect writes it
    in its own field: OpenAI ``reasoning_content``, Ollama ``thinking``, Anthropic thinking blocks)."""

    text: str
    logprobs: tuple[TokenLogprob, ...] = ()
    reasoning: str = ""


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a tool call as the model writes it (OpenAI's streamed ``tool_calls``): a call's first
    delta carries its ``id`` and ``name``, later ones ``arguments`` text to append to it. The
    concatenated ``arguments`` of a call's deltas are its whole arguments; Finished still carries every
    call whole, for answers that are not streamed."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


FinishReason = Literal["stop", "length", "tool_calls"]


@dataclass(frozen=True)
class Finished:
    """The end of a generation."""

    finish_reason: FinishReason
    usage: Usage
    tool_calls: tuple[ToolCall, ...] = ()
    stop_sequence: str | None = None
    """The client's stop string that ended the text, when one did (Anthropic's ``stop_sequence``)."""


Event = TextDelta | ToolCallDelta | Finished


@dataclass(frozen=True)
class Embeddings:
    vectors: list[list[float]]
    prompt_tokens: int


@dataclass(frozen=True)
class Capabilities:
    chat: bool = True
    completions: bool = True
    embeddings: bool = True
    embed_token_ids: bool = True  # embedding input given as token ids (OpenAI's list[int] form)
    tools: bool = True
    structured_output: bool = True
    logprobs: bool = True
    grammar: bool = True
    """It samples under a client's GBNF grammar (llama-server's ``grammar`` field)."""
    reasoning: bool = False
    """Its thinking comes back apart from the answer (TextDelta.reasoning)."""
    vision: bool = False
    """It reads images (OpenAI image_url content parts in the messages)."""
    infill: bool = False
    """It fills in the middle (CompletionParams.infill): the model has FIM tokens, and the backend frames
    them. Only the local engine does."""


class EventStream(Protocol):
    """One generation's events, consumed once; ``cancel()`` stops it (the local job, or the remote's
    request), and is safe to call again or after the end."""

    prompt_tokens: int | None
    """The prompt's length in tokens when known before the first event (the local engine tokenized it;
    Anthropic's ``message_start`` reports it); None: known only from Finished's usage (a remote)."""

    def __aiter__(self) -> AsyncIterator[Event]: ...

    def cancel(self) -> None: ...


class Backend(Protocol):
    """Something that serves one model id: the local llama.cpp engine (appliance.engine.local), or a
    remote OpenAI-compatible host (appliance.remotes.backend). The server talks to both through this."""

    @property
    def model_id(self) -> str: ...

    @property
    def capabilities(self) -> Capabilities: ...

    async def chat(self, params: ChatParams) -> EventStream:
        """Start the reply to a chat. Raises typed errors (before any event) on bad input; a remote raises
        Failover until its first byte has arrived."""
        ...

    async def complete(self, params: CompletionParams) -> EventStream:
        """Start a raw completion."""
        ...

    async def embed(self, inputs: list[str] | list[list[int]]) -> Embeddings:
        """One normalised vector per input."""
        ...
