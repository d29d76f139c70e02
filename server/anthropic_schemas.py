"""Request schemas of Anthropic's Messages API (`/v1/messages`, `/v1/messages/count_tokens`): a wrong type is
a 400 in Anthropic's error shape, never a 500, and the OpenAPI document is built from the same models.
Unknown fields pass, and are logged (server.schemas.read_body): clients send options that mean nothing here
(``cache_control``, ``container``, ``service_tier``, ...)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from server.compat_schemas import Lenient
from server.schemas import INT32_MAX


class AnthropicTool(Lenient):
    """A client tool. Anthropic's server tools (``type`` ``web_search_...``, ``code_execution_...``) run on
    Anthropic's side: refused with a 400 (server.anthropic_translate)."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    type: str | None = Field(None, description='"custom" or absent; other (server) tools are refused')
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class AnthropicBlock(Lenient):
    """A content block: ``text``; ``image`` (``source``: base64 or url) in a user's message, for a model
    that reads images; ``document`` with a plain-text source; ``tool_use`` and ``thinking`` in an
    assistant's; ``tool_result`` in a user's. Other kinds (PDF documents, search results) are refused
    with a 400."""

    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None
    tool_use_id: str | None = None
    content: str | list[AnthropicBlock] | None = None
    thinking: str | None = None
    source: dict[str, Any] | None = None
    title: str | None = None


class AnthropicMessage(Lenient):
    role: Literal["user", "assistant", "system"] = Field(
        description='"system": more instructions, as Claude Code sends them (text only)'
    )
    content: str | list[AnthropicBlock]


class AnthropicToolChoice(Lenient):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = Field(
        None, description="true: one call at most; false: several allowed; absent: one (small models repeat)"
    )

    @model_validator(mode="after")
    def _named(self) -> AnthropicToolChoice:
        if self.type == "tool" and not self.name:
            raise ValueError('type "tool" needs the name of the tool')
        return self


class AnthropicThinking(Lenient):
    """Extended thinking: on with a budget of thinking tokens (at least 1024, as Anthropic asks), off,
    or ``adaptive`` / ``between_tools`` (on: a model here thinks where its family does, unbounded)."""

    type: Literal["enabled", "disabled", "adaptive", "between_tools"]
    budget_tokens: int | None = Field(None, ge=1024)
    display: Literal["summarized", "omitted"] | None = Field(
        None, description='"omitted": thinking blocks come back empty (the model still thinks)'
    )

    @model_validator(mode="after")
    def _budgeted(self) -> AnthropicThinking:
        if self.type == "enabled" and self.budget_tokens is None:
            raise ValueError("thinking.budget_tokens is required when thinking is enabled")
        return self


class AnthropicOutputFormat(Lenient):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema", description="the JSON schema the reply's text follows")


class AnthropicOutputConfig(Lenient):
    format: AnthropicOutputFormat | None = Field(
        None, description="structured output: the reply's text is JSON following the schema (a grammar)"
    )
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = Field(
        None, description="the reasoning effort; xhigh and max are high here"
    )


class AnthropicMetadata(Lenient):
    user_id: str | None = Field(None, description="accepted and not kept: nothing here is per user")


class AnthropicPrompt(Lenient):
    """What decides a request's prompt: the body of `POST /v1/messages/count_tokens`, and the part of a
    `POST /v1/messages` body that its input tokens are counted from."""

    model: str
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: str | list[AnthropicBlock] | None = None
    tools: list[AnthropicTool] | None = None
    tool_choice: AnthropicToolChoice | None = None
    thinking: AnthropicThinking | None = None
    output_config: AnthropicOutputConfig | None = None
    output_format: AnthropicOutputFormat | None = Field(
        None, description="the older name of output_config.format (structured outputs' beta)"
    )
    grammar: str | None = Field(None, description="a GBNF grammar the reply follows (llama-server's field)")

    @model_validator(mode="after")
    def _one_format(self) -> AnthropicPrompt:
        if self.output_format is not None and self.output_config and self.output_config.format:
            raise ValueError("give output_config.format or output_format (its older name), not both")
        return self

    @property
    def output_schema(self) -> dict[str, Any] | None:
        """The JSON schema the reply must follow, from either spelling; None: free text."""
        chosen = self.output_config.format if self.output_config else None
        chosen = chosen or self.output_format
        return chosen.schema_ if chosen is not None else None


class AnthropicRequest(AnthropicPrompt):
    """`POST /v1/messages`."""

    max_tokens: int = Field(ge=1)
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0, le=INT32_MAX)
    stop_sequences: list[str] | None = None
    stream: bool = False
    metadata: AnthropicMetadata | None = None
