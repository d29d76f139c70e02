"""The fields of Ollama's and Anthropic's requests that the appliance reads, validated as the OpenAI routes'
are (server/schemas.py), so a wrong type is a 400 in the client's own error shape, never a 500. Unknown
fields pass: both APIs have options that mean nothing here (num_ctx, num_gpu, metadata, ...)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from server.schemas import Tool

__all__ = ["TOOLS", "AnthropicParams", "OllamaOptions", "OllamaToolCall", "ValidationError", "problem"]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class OllamaOptions(_Lenient):
    temperature: float | None = Field(None, ge=0)
    top_k: int | None = Field(None, ge=0)
    top_p: float | None = Field(None, ge=0, le=1)
    min_p: float | None = Field(None, ge=0, le=1)
    repeat_penalty: float | None = Field(None, ge=0)
    repeat_last_n: int | None = Field(None, ge=-1)
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    num_predict: int | None = None
    stop: str | list[str] | None = None


class _OllamaFunctionCall(_Lenient):
    name: str = Field(min_length=1)
    arguments: dict[str, Any] | None = None


class OllamaToolCall(_Lenient):
    function: _OllamaFunctionCall


class _AnthropicTool(_Lenient):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class AnthropicParams(_Lenient):
    max_tokens: int = Field(ge=1)
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0)
    stop_sequences: list[str] | None = None
    tools: list[_AnthropicTool] | None = None


TOOLS = TypeAdapter(list[Tool])
"""OpenAI-shaped tools, as Ollama takes them too."""


def problem(exc: ValidationError, prefix: str = "") -> str:
    """One readable line from a validation error, located under ``prefix``: ``tools.0.function.name:
    Field required``."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in (prefix, *first["loc"]) if p != "")
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message
