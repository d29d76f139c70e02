"""Wire schemas of the OpenAI-compatible API (requests). Unknown fields are accepted and logged.

Types are strict, as OpenAI's are (``"max_tokens": "10"`` or ``true`` is a 400, not 10 or 1), so the
published OpenAPI document (server/openapi.py, built from these models) says what is accepted; NaN and
infinities are refused, and integers that reach llama.cpp as C ints are bounded to fit one."""

from __future__ import annotations

import json
import logging
import math
from typing import Any, Literal, TypeVar, cast

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from appliance.errors import InvalidRequest
from server.errors import validation_message
from server.record import record_of

log = logging.getLogger(__name__)
_Body = TypeVar("_Body", bound=BaseModel)

INT32_MAX = 2**31 - 1
"""The largest value a C int holds: sampler settings go to llama.cpp as ones."""


class _Open(BaseModel):
    """Accepts fields it does not know: OpenAI clients send new ones all the time."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


class ContentPart(_Open):
    type: str
    text: str | None = None


class FunctionCall(_Open):
    name: str
    arguments: str = "{}"


class ToolCallIn(_Open):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None
    """An assistant turn's thinking, passed back (llama-server's and vLLM's name for it)."""

    @model_validator(mode="after")
    def _content_present(self) -> ChatMessage:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a {self.role} message needs content")
        return self

    def seam_content(self) -> str | list[dict[str, Any]]:
        """The message's content on the seam: its text, or, when it carries images, its ``text`` and
        ``image_url`` parts (a backend that reads no images refuses them). Other parts (audio, files)
        are refused."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts: list[dict[str, Any]] = []
        for part in self.content:
            image = (part.model_extra or {}).get("image_url")
            if part.type == "text" and part.text is not None:
                parts.append({"type": "text", "text": part.text})
            elif part.type == "image_url" and isinstance(image, dict) and isinstance(image.get("url"), str):
                parts.append({"type": "image_url", "image_url": {"url": image["url"]}})
            else:
                raise ValueError(f"content part of type {part.type!r} is not supported by this model")
        if all(part["type"] == "text" for part in parts):
            return "".join(part["text"] for part in parts)
        return parts


class FunctionDef(_Open):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(_Open):
    type: Literal["function"]
    function: FunctionDef


class JsonSchemaFormat(_Open):
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Open):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and (self.json_schema is None or self.json_schema.schema_ is None):
            raise ValueError("response_format of type json_schema needs json_schema.schema")
        return self


class StreamOptions(_Open):
    include_usage: bool = False


class _Sampling(_Open):
    """Sampling fields shared by chat and completions (OpenAI's, plus llama.cpp's usual extras)."""

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0, le=INT32_MAX)
    min_p: float | None = Field(None, ge=0, le=1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    repeat_penalty: float | None = Field(None, gt=0)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    logit_bias: dict[str, float] | None = None
    ignore_eos: bool = False
    """llama.cpp's extension: keep generating past end-of-text (benchmarks use it)."""
    user: str | None = None
    grammar: str | None = None
    """llama-server's extension: a GBNF grammar the output must follow (not with ``response_format``)."""
    speculative_n_max: int | None = Field(None, ge=0, le=64, alias="speculative.n_max")
    """llama-server's extension: tokens guessed at most per step (prompt lookup); 0: none for this request."""

    @model_validator(mode="after")
    def _one_constraint(self) -> _Sampling:
        response_format = getattr(self, "response_format", None)
        if self.grammar and response_format is not None and response_format.type != "text":
            raise ValueError("grammar and response_format cannot both be given: one constraint at a time")
        return self

    def grammar_text(self) -> str | None:
        """The grammar asked for; an empty one is none, as llama-server reads it."""
        return self.grammar or None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only n=1 is supported")
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 16:
            raise ValueError("at most 16 stop sequences")
        return value

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    # llama-server's default: small models asked for a list of calls tend to repeat one forever.
    parallel_tool_calls: bool = False
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high"] | None = None
    # vLLM's and llama-server's: more variables for the model's chat template (e.g. enable_thinking).
    chat_template_kwargs: dict[str, Any] | None = None
    # llama-server's: tokens of thoughts at most (-1: no bound), then the thoughts are closed for the model.
    reasoning_budget_tokens: int | None = Field(None, ge=-1)

    @model_validator(mode="after")
    def _consistent(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs set to true")
        if (isinstance(self.tool_choice, dict) or self.tool_choice == "required") and not self.tools:
            raise ValueError("tool_choice needs tools")
        return self


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False
    suffix: str | None = None
    """Fill-in-the-middle: the text after the gap; the prompt is the text before it."""
    response_format: ResponseFormat | None = None

    @field_validator("prompt")
    @classmethod
    def _single_prompt(cls, value: Any) -> Any:
        if isinstance(value, list) and value and isinstance(value[0], (str, list)):
            if len(value) != 1:
                raise ValueError("one prompt per request is supported; send several requests")
            return value[0]
        if value == "" or value == []:
            raise ValueError("the prompt is empty")
        return value

    @model_validator(mode="after")
    def _infill(self) -> CompletionRequest:
        if self.suffix and not isinstance(self.prompt, str):
            raise ValueError("suffix (fill-in-the-middle) needs the prompt as text, not token ids")
        if self.suffix and self.echo:
            raise ValueError("echo cannot be combined with suffix: the middle comes back alone")
        return self


class EmbeddingRequest(_Open):
    input: str | list[str] | list[int] | list[list[int]]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if value == "" or value == [] or (isinstance(value, list) and any(v == "" or v == [] for v in value)):
            raise ValueError("input must not be empty")
        return value

    @field_validator("dimensions")
    @classmethod
    def _no_dimensions(cls, value: int | None) -> int | None:
        if value is not None:
            raise ValueError("dimensions is not supported: the model's embedding size is fixed")
        return value

    def inputs(self) -> list[str] | list[list[int]]:
        value = self.input
        if isinstance(value, str):
            return [value]
        if all(isinstance(v, int) for v in value):
            return [cast(list[int], value)]
        return cast("list[str] | list[list[int]]", value)


def parse_body(raw: bytes, schema: type[_Body]) -> _Body:
    """``raw`` read as JSON whatever Content-Type the client sent (curl -d sends a form type), validated
    as ``schema``; InvalidRequest with one readable line when it is not. An empty body is ``{}``.
    Pydantic's parser refuses invalid UTF-8, lone surrogates and nesting past 200 levels as invalid JSON,
    without recursing in Python."""
    try:
        body = schema.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        message, param = validation_message(exc.errors())
        raise InvalidRequest(message, param=param) from None
    # Pydantic reads NaN, Infinity and 1e400 into fields of any type (unknown fields, JSON schemas); JSON
    # has no such numbers, and a remote the request is escalated to may choke on them.
    try:
        json.loads(raw or b"{}", parse_constant=_not_json, parse_float=_finite)
    except ValueError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    return body


def _not_json(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text[:20]} is out of range")
    return value


async def read_body(request: Request, schema: type[_Body]) -> _Body:
    """The request's body as ``schema`` (see parse_body); the model it names is kept for the log line of
    a refused request, and unknown fields are logged."""
    body = parse_body(await request.body(), schema)
    record_of(request.scope).asked_model = getattr(body, "model", None) or getattr(body, "name", None)
    unknown = sorted((body.model_extra or {}).keys())
    if unknown:
        named = ", ".join(unknown)
        log.info("%s: ignoring unknown fields %s", request.url.path, named, extra={"ignored_fields": unknown})
    return body
