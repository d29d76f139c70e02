"""Request schemas of Ollama's API and of the appliance's own (Anthropic's are in server.anthropic_schemas):
each route validates its body with one of these, as the OpenAI routes do with server/schemas.py, so a wrong
type is a 400 in the client's own error shape, never a 500, and the published OpenAPI document is built from
the same models. Unknown fields pass: Ollama has options that mean nothing here (num_gpu, ...)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from server.schemas import INT32_MAX, Tool

_ROLES = Literal["system", "user", "assistant", "tool"]


class _Lenient(BaseModel):
    """Unknown fields pass; known ones are typed strictly, without NaN or infinities (server/schemas.py)."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


Lenient = _Lenient  # the base of the other dialects' schemas too (server.anthropic_schemas)


# Ollama (/api/*)


class OllamaOptions(_Lenient):
    temperature: float | None = Field(None, ge=0)
    top_k: int | None = Field(None, ge=0, le=INT32_MAX)
    top_p: float | None = Field(None, ge=0, le=1)
    min_p: float | None = Field(None, ge=0, le=1)
    repeat_penalty: float | None = Field(None, ge=0)
    # llama.cpp sizes a window by it: 2**31 of it was seconds of allocation for each request.
    repeat_last_n: int | None = Field(None, ge=-1, le=2**20)
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    num_predict: int | None = Field(None, description="max tokens; -1 or absent: until the context ends")
    stop: str | list[str] | None = None
    num_ctx: int | None = Field(
        None,
        ge=1,
        description="the request's context: one slot's bounds it; more reloads the model when it fits",
    )


class OllamaFunctionCall(_Lenient):
    name: str = Field(min_length=1)
    arguments: dict[str, Any] | None = None


class OllamaToolCall(_Lenient):
    function: OllamaFunctionCall


_IMAGES = "base64 images, for a model that reads them (here: a remote with vision = true)"


class OllamaMessage(_Lenient):
    role: _ROLES
    content: str | None = None
    images: list[str] | None = Field(
        None, description="base64 images, for a model that reads them (here: a remote with vision)"
    )
    tool_calls: list[OllamaToolCall] | None = None
    tool_name: str | None = None
    thinking: str | None = Field(None, description="an assistant turn's thinking, passed back")


class _OllamaNamed(_Lenient):
    """A request naming a model: ``model``, or ``name`` as older clients say."""

    model: str | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _named(self) -> _OllamaNamed:
        if not (self.model or self.name):
            raise ValueError("model is required")
        return self

    @property
    def model_name(self) -> str:
        return self.model or self.name or ""


_KEEP_ALIVE = (
    'how long the model stays loaded after this request: "5m", "1h30m", seconds; 0 unloads it once idle; '
    "negative: until its memory is needed; absent: as it is"
)


class _OllamaGeneration(_OllamaNamed):
    options: OllamaOptions | None = None
    format: Literal["", "json"] | dict[str, Any] | None = Field(
        None, description='"json" or a JSON schema the reply must follow'
    )
    stream: bool | None = Field(None, description="NDJSON lines unless false")
    keep_alive: str | int | float | None = Field(None, description=_KEEP_ALIVE)
    think: bool | Literal["low", "medium", "high"] | None = Field(
        None,
        description="thinking on or off, or how hard; the thoughts come back in `thinking` (a model that "
        "cannot think: 400)",
    )
    logprobs: bool | None = Field(None, description="each output token's log-probability in `logprobs`")
    top_logprobs: int | None = Field(None, description="with logprobs: the N most likely tokens (0-20)")

    @property
    def streams(self) -> bool:
        return self.stream is not False


class OllamaChatRequest(_OllamaGeneration):
    messages: list[OllamaMessage] | None = None
    tools: list[Tool] | None = None


class OllamaGenerateRequest(_OllamaGeneration):
    prompt: str | None = Field(None, description="empty: load the model and answer done_reason 'load'")
    system: str | None = None
    raw: bool | None = None
    images: list[str] | None = Field(
        None, description="base64 images, for a model that reads them (here: a remote with vision)"
    )
    suffix: str | None = Field(
        None, description="fill-in-the-middle: the text after the gap (the prompt is the text before it)"
    )
    template: str | None = Field(None, description="a Go template: refused (the model's own is used)")
    context: list[int] | None = Field(None, description="an earlier generation's tokens: refused")


class OllamaEmbedRequest(_OllamaNamed):
    input: str | list[str]
    options: OllamaOptions | None = None
    keep_alive: str | int | float | None = Field(None, description=_KEEP_ALIVE)
    truncate: bool | None = Field(
        None, description="false: an input longer than the context is a 400 (it is never cut short here)"
    )
    dimensions: int | None = Field(None, ge=1, description="the vectors cut to this length, renormalised")

    @model_validator(mode="after")
    def _some_input(self) -> OllamaEmbedRequest:
        if not self.input:
            raise ValueError("input must be a string or a non-empty list of strings")
        return self


class OllamaEmbeddingsRequest(_OllamaNamed):
    prompt: str = Field(min_length=1)
    options: OllamaOptions | None = None
    keep_alive: str | int | float | None = None


class OllamaModelRequest(_OllamaNamed):
    """/api/show and /api/delete."""


class OllamaPullRequest(_OllamaNamed):
    stream: bool | None = Field(None, description="NDJSON progress lines unless false")
    insecure: bool | None = None


class OllamaCreateMessage(_Lenient):
    role: Literal["system", "user", "assistant"]
    content: str = ""


class OllamaCreateRequest(_OllamaNamed):
    """/api/create: a new model over an installed one, from JSON fields or (older clients) a Modelfile's
    text; the JSON fields win over the Modelfile's lines."""

    from_: str | None = Field(None, alias="from", description="the model it is made from")
    modelfile: str | None = Field(
        None, description="a Modelfile's text (FROM, SYSTEM, PARAMETER, MESSAGE, ...)"
    )
    system: str | None = None
    template: str | None = Field(None, description="Go template syntax: refused (the GGUF's own is used)")
    parameters: dict[str, Any] | None = None
    messages: list[OllamaCreateMessage] | None = None
    license: str | list[str] | None = None
    quantize: str | None = Field(None, description="refused: a derived model shares its base's file")
    files: dict[str, str] | None = Field(None, description="refused: make models from installed ones")
    adapters: dict[str, str] | None = Field(None, description="refused: LoRA adapters are not served")
    path: str | None = Field(None, description="refused: send the Modelfile's text in `modelfile`")
    stream: bool | None = Field(None, description="NDJSON status lines unless false")


class OllamaCopyRequest(BaseModel):
    """/api/copy."""

    model_config = ConfigDict(extra="allow", strict=True)

    source: str = Field(min_length=1)
    destination: str = Field(min_length=1)


# The appliance's own (/appliance/v1/*)


class PullRequest(_Lenient):
    model: str = Field(min_length=1, description='"owner/name[:QUANT]" or "ollama:NAME[:TAG]"')
    stream: bool = True


class LoadRequest(_Lenient):
    keep_alive: str | int | float | None = Field(
        None,
        description='how long the model stays loaded when idle: "10m", seconds, or -1 (until its '
        "memory is needed)",
    )
