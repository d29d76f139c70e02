"""Wire schemas of OpenAI's Responses API (`POST /v1/responses`): the request, typed strictly as
server/schemas.py types chat (unknown fields pass and are logged), and the answer's shape for the
published OpenAPI document. Input items are read by server/responses_items.py, which refuses the kinds
this daemon cannot serve (built-in tools' calls, files) with a 400 naming the item."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from server.schemas import INT32_MAX, FunctionDef


class _Open(BaseModel):
    """Unknown fields pass (and are logged); known ones are typed strictly, without NaN or infinities."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


class _Out(BaseModel):
    # Answers may grow fields; clients must ignore the ones they do not know.
    model_config = ConfigDict(extra="allow")


class ResponsesContentPart(_Open):
    """A part of a message's content: ``input_text`` (``output_text`` in an assistant's), ``input_image``
    (``image_url``), ``refusal``. Others (``input_file``, ``input_audio``) are refused."""

    type: str
    text: str | None = None
    image_url: str | None = None
    refusal: str | None = None


class ResponsesInputItem(_Open):
    """One item of ``input``: a message (``type`` "message" or left out, with ``role`` and ``content``),
    a ``function_call`` (``call_id``, ``name``, ``arguments``), a ``function_call_output`` (``call_id``,
    ``output``) or a ``reasoning`` item (its ``content``, ``summary`` or ``encrypted_content`` text)."""

    type: str | None = None
    id: str | None = None
    role: Literal["system", "developer", "user", "assistant"] | None = None
    content: str | list[ResponsesContentPart] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[ResponsesContentPart] | None = None
    summary: list[ResponsesContentPart] | None = None
    encrypted_content: str | None = None
    status: str | None = None


class ResponsesTool(FunctionDef):
    """A function tool, flat as the Responses API writes it (``name`` beside ``type``)."""

    type: Literal["function"]
    strict: bool | None = None


class ResponsesNamespace(_Open):
    """A group of function tools under one name (Codex sends its sub-agent tools so): the model sees the
    functions, and a call to one names its ``namespace``."""

    type: Literal["namespace"]
    name: str
    description: str | None = None
    tools: list[ResponsesTool]


HOSTED_TOOLS = ("web_search", "web_search_preview", "web_search_2025_08_26", "file_search",
                "code_interpreter", "image_generation", "mcp", "tool_search")  # fmt: skip
"""Tools OpenAI's servers run for the model. Nothing here runs them: a request's are left out, logged."""


class ResponsesHostedTool(_Open):
    type: Literal[HOSTED_TOOLS]  # type: ignore[valid-type]


AnyTool = Annotated[ResponsesTool | ResponsesNamespace | ResponsesHostedTool, Field(discriminator="type")]


class ResponsesFormat(_Open):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    description: str | None = None
    strict: bool | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponsesFormat:
        if self.type == "json_schema" and self.schema_ is None:
            raise ValueError("text.format of type json_schema needs a schema")
        return self


class ResponsesText(_Open):
    format: ResponsesFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ResponsesReasoning(_Open):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None


class ResponsesRequest(_Open):
    model: str | None = None
    input: str | list[ResponsesInputItem] | None = None
    instructions: str | None = None
    """A system message before the input; not carried to a response that names this one as previous."""
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0, le=INT32_MAX)
    min_p: float | None = Field(None, ge=0, le=1)
    seed: int | None = None
    tools: list[AnyTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    # llama-server's default: small models asked for a list of calls tend to repeat one forever.
    parallel_tool_calls: bool = False
    text: ResponsesText | None = None
    reasoning: ResponsesReasoning | None = None
    store: bool = True
    """Keep the response (in the daemon's memory, bounded) so a later request can name it as previous."""
    previous_response_id: str | None = None
    stream: bool = False
    include: list[str] | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    metadata: dict[str, str] | None = None
    user: str | None = None
    truncation: Literal["auto", "disabled"] | None = None
    max_tool_calls: int | None = Field(None, ge=1)
    """A bound on built-in tools' calls: none run here, so it bounds nothing."""
    background: bool | None = None
    grammar: str | None = None
    """llama-server's extension, as on chat: a GBNF grammar the output must follow."""
    chat_template_kwargs: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _servable(self) -> ResponsesRequest:
        if self.background:
            raise ValueError("background responses are not supported: stream, or wait for the answer")
        extra = self.model_extra or {}
        for name in ("conversation", "prompt"):
            if extra.get(name) is not None:
                raise ValueError(f"{name} is not supported here: send the input (or previous_response_id)")
        if (isinstance(self.tool_choice, dict) or self.tool_choice == "required") and not self.tools:
            raise ValueError("tool_choice needs tools")
        if self.input is None and self.previous_response_id is None:
            raise ValueError("missing required field 'input'")
        fmt = self.text.format if self.text else None
        if self.grammar and fmt is not None and fmt.type != "text":
            raise ValueError("grammar and text.format cannot both be given: one constraint at a time")
        return self


# The answer (for the OpenAPI document; the routes write plain dicts).


class ResponsesOutputContent(_Out):
    type: Literal["output_text", "reasoning_text", "refusal"]
    text: str


class ResponsesOutputItem(_Out):
    """A ``message``, a ``function_call`` or a ``reasoning`` item."""

    id: str
    type: Literal["message", "function_call", "reasoning"]
    status: Literal["in_progress", "completed", "incomplete"] | None = None
    role: Literal["assistant"] | None = None
    content: list[ResponsesOutputContent] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    summary: list[dict[str, Any]] | None = None


class ResponsesUsage(_Out):
    input_tokens: int
    input_tokens_details: dict[str, int]
    output_tokens: int
    output_tokens_details: dict[str, int]
    total_tokens: int


class ResponseObject(_Out):
    """A response: what ``POST /v1/responses`` answers and ``GET /v1/responses/{id}`` gives again."""

    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["completed", "incomplete", "failed", "in_progress"]
    model: str
    output: list[ResponsesOutputItem]
    usage: ResponsesUsage | None
    error: dict[str, Any] | None
    incomplete_details: dict[str, Any] | None
    previous_response_id: str | None
    store: bool


class ResponseDeleted(_Out):
    id: str
    object: Literal["response"]
    deleted: bool
