"""The shapes of the daemon's answers, for the published OpenAPI document (server/openapi.py): each
dialect's success bodies and error bodies. The routes build their answers as plain dicts; the schema
fuzzing test (tests/server/test_schema_fuzz.py) checks every answer against these, so they cannot drift
apart unnoticed. Objects that only the appliance reads (plans, hardware) stay open (``dict``)."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model


class _Out(BaseModel):
    # Answers may grow fields; clients must ignore the ones they do not know.
    model_config = ConfigDict(extra="allow")


def from_dataclass(source: type, name: str, doc: str) -> type[BaseModel]:
    """The wire model of answers written from the dataclass ``source`` (its fields, of its types), so a
    field added there is in the published schema too. A field with a default may be left out, as an
    answer leaves out its empty fields."""
    hints = get_type_hints(source)
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(source):
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        fields[field.name] = (hints[field.name], ...) if required else (hints[field.name] | None, None)
    return create_model(name, __base__=_Out, __doc__=doc, **fields)


# Errors, one shape per dialect (server/errors.py builds them).


class OpenAIErrorDetail(_Out):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(_Out):
    """OpenAI's error shape, also the appliance's own."""

    error: OpenAIErrorDetail


class OllamaError(_Out):
    """Ollama's error shape."""

    error: str


class AnthropicErrorDetail(_Out):
    type: str
    message: str


class AnthropicError(_Out):
    """Anthropic's error shape."""

    type: Literal["error"]
    error: AnthropicErrorDetail


# OpenAI (/v1/*)


class PromptTokensDetails(_Out):
    cached_tokens: int


class Usage(_Out):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class TopLogprob(_Out):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(_Out):
    content: list[TokenLogprob]


class FunctionCallOut(_Out):
    name: str
    arguments: str = Field(description="the call's arguments, a JSON object as text")


class ToolCallOut(_Out):
    id: str
    type: Literal["function"]
    function: FunctionCallOut
    index: int | None = None


class AssistantMessage(_Out):
    role: Literal["assistant"]
    content: str | None
    reasoning_content: str | None = Field(None, description="the model's thinking, apart from its answer")
    tool_calls: list[ToolCallOut] | None = None


class ChatChoice(_Out):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None
    finish_reason: str


class ChatCompletion(_Out):
    """A whole chat completion. With ``"stream": true`` the answer is SSE instead: ``data:`` lines of
    ``chat.completion.chunk`` objects, then ``data: [DONE]``."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionLogprobs(_Out):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoice(_Out):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: str | None


class Completion(_Out):
    """A whole completion (SSE chunks of the same shape with ``"stream": true``)."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class EmbeddingItem(_Out):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str = Field(description="floats, or base64 of little-endian float32")


class EmbeddingUsage(_Out):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(_Out):
    object: Literal["list"]
    data: list[EmbeddingItem]
    model: str
    usage: EmbeddingUsage


class ModelCard(_Out):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    loaded: bool
    state: str
    aliases: list[str]
    meta: dict[str, Any]


class ModelList(_Out):
    object: Literal["list"]
    data: list[ModelCard]


# Ollama (/api/*)


class OllamaDetails(_Out):
    parent_model: str
    format: str
    family: str
    families: list[str]
    parameter_size: str
    quantization_level: str


class OllamaModelEntry(_Out):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str | None = None
    details: OllamaDetails


class OllamaTags(_Out):
    models: list[OllamaModelEntry]


class OllamaRunningEntry(OllamaModelEntry):
    size_vram: int
    expires_at: str
    context_length: int


class OllamaPs(_Out):
    models: list[OllamaRunningEntry]


class OllamaVersion(_Out):
    version: str


class OllamaShow(_Out):
    modelfile: str
    parameters: str
    template: str
    license: str
    details: OllamaDetails
    model_info: dict[str, Any]
    capabilities: list[str]
    appliance: dict[str, Any]
    """Ours: ``declared`` (template, tool_format, embedding_only, vision...) and ``measured`` (the probe,
    golden set and drift results `appliance eval` kept for this file, or null)."""
    modified_at: str


class OllamaFunctionCallOut(_Out):
    name: str
    arguments: dict[str, Any]


class OllamaToolCallOut(_Out):
    function: OllamaFunctionCallOut


class OllamaMessageOut(_Out):
    role: Literal["assistant"]
    content: str
    thinking: str | None = Field(None, description="the model's thinking, apart from its answer")
    tool_calls: list[OllamaToolCallOut] | None = None


class _OllamaDone(_Out):
    model: str
    created_at: str
    done: bool
    done_reason: str | None = None
    total_duration: int | None = Field(None, description="nanoseconds, as every duration here")
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class OllamaChatAnswer(_OllamaDone):
    """The whole answer; streamed, each NDJSON line has this shape and the last has ``done`` true."""

    message: OllamaMessageOut


class OllamaGenerateAnswer(_OllamaDone):
    """The whole answer; streamed, each NDJSON line has this shape and the last has ``done`` true."""

    response: str
    thinking: str | None = Field(None, description="the model's thinking, apart from its answer")


class OllamaEmbedAnswer(_Out):
    model: str
    embeddings: list[list[float]]
    total_duration: int
    load_duration: int
    prompt_eval_count: int


class OllamaEmbeddingsAnswer(_Out):
    embedding: list[float]


class OllamaPullStatus(_Out):
    """One progress line (NDJSON), or the last one when not streamed."""

    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


# Anthropic (/v1/messages)


class AnthropicTextBlock(_Out):
    type: Literal["text"]
    text: str


class AnthropicThinkingBlock(_Out):
    type: Literal["thinking"]
    thinking: str
    signature: str


class AnthropicToolUseBlock(_Out):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class AnthropicUsage(_Out):
    input_tokens: int
    output_tokens: int


class AnthropicTokenCount(_Out):
    """`POST /v1/messages/count_tokens`: the input tokens the same body would count in `/v1/messages`."""

    input_tokens: int


class AnthropicMessageOut(_Out):
    """A whole message; with ``"stream": true`` Anthropic's SSE events instead."""

    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[AnthropicThinkingBlock | AnthropicTextBlock | AnthropicToolUseBlock]
    stop_reason: str
    stop_sequence: str | None
    usage: AnthropicUsage


# The appliance's own (/appliance/v1/*, /health)


class Health(_Out):
    status: Literal["ok", "loading", "error"]
    models: list[dict[str, Any]] = Field(description="the loaded models: id, state, slots, queue, context")


class InstalledModel(_Out):
    id: str
    path: str
    source: str
    default: bool
    aliases: list[str] = Field([], description='other names it answers to ([models."ID"] aliases)')
    loaded: bool
    state: str
    size_bytes: int | None = None
    plan: dict[str, Any] | None = None
    capabilities: list[str] = Field([], description="what its file declares, in Ollama's names")
    declared: dict[str, Any] | None = Field(None, description="how: template, tool_format, embedding_only...")
    measured: dict[str, Any] | None = Field(None, description="what `appliance eval` measured on this file")
    error: str | None = Field(None, description="why the model cannot be planned (a file gone, unreadable)")


class InstalledModels(_Out):
    models: list[InstalledModel]


class Loaded(_Out):
    model: dict[str, Any] = Field(description="the loaded model: id, state, plan, slots, keep_alive_s")
    waited_s: float


class Unloaded(_Out):
    model: str
    unloaded: bool


class Removed(_Out):
    model: str
    removed: Literal[True]


class Slots(_Out):
    busy: int
    total: int


class GpuMemory(_Out):
    index: int
    name: str
    budget_bytes: int = Field(description="what the planner may use on this GPU")
    models_bytes: int = Field(description="what the loaded models' plans hold on it")


class MemoryUse(_Out):
    budget_ram_bytes: int
    budget_vram_bytes: int
    models_ram_bytes: int
    models_vram_bytes: int
    gpus: list[GpuMemory] = Field(default_factory=list, description="per GPU (a model may span several)")


class Status(_Out):
    version: str
    uptime_s: float
    hardware: dict[str, Any] | None
    default_model: str
    models: list[dict[str, Any]]
    queue: int
    slots: Slots
    memory: MemoryUse
    requests: dict[str, int] = Field(description="request totals by HTTP status")
    requests_by_backend: dict[str, dict[str, int]]


class PullJobOut(_Out):
    model: str
    state: Literal["running", "done", "failed"]
    started_at: int
    last: dict[str, Any] | None


class Pulls(_Out):
    pulls: list[PullJobOut]


class RequestLog(_Out):
    requests: list[dict[str, Any]]
