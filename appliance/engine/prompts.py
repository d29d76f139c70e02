"""A chat as the model's prompt: the messages prepared for its template (tool calls and results, tool
instructions, client text protected by literals), the rendered text, and the rule for the BOS token.
Pure functions of plain inputs, but for ``tokenize_prompt``, which asks the model's tokenizer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from appliance.backend import Reasoning
from appliance.engine.chat_template import ChatTemplate, TemplateError
from appliance.engine.formats.base import ChatFormat
from appliance.engine.literals import Literals


class Vocabulary(Protocol):
    """What prompt tokenization needs of a model (appliance.engine.llama.LlamaModel)."""

    @property
    def add_bos(self) -> bool: ...

    @property
    def bos_token(self) -> int: ...

    def token_text(self, token: int) -> str: ...

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]: ...


def chat_messages(
    messages: Sequence[Mapping[str, Any]],
    fmt: ChatFormat,
    tools: list[dict[str, Any]],
    choice: str | None,
    literals: Literals,
) -> list[dict[str, Any]]:
    """Copies of ``messages`` ready for a chat template: an assistant's tool calls as the model's family
    writes them (``fmt``), the tool instructions in the system message when a tool ``choice`` is in
    force and the template does not list the tools itself, and every string a client wrote protected
    by ``literals``."""

    def ready(message: dict[str, Any]) -> dict[str, Any]:
        if message.get("role") == "assistant" and message.get("tool_calls"):
            return fmt.history_calls(message)
        if message.get("role") == "tool":
            return fmt.history_result(message)
        return message

    prepared = [ready(dict(m)) for m in messages]
    instructions = (
        fmt.tool_instructions(tools, choice) if choice is not None and not fmt.native_tools else None
    )
    if instructions:
        if prepared and prepared[0].get("role") == "system":
            prepared[0]["content"] = f"{prepared[0].get('content') or ''}\n\n{instructions}".strip()
        else:
            prepared.insert(0, {"role": "system", "content": instructions})
    return [protected(message, literals) for message in prepared]


def protected(value: Any, literals: Literals) -> Any:
    """``value`` with every string in it protected by ``literals`` (message texts, tool-call arguments,
    tool descriptions: all of it is client text the template writes into the prompt)."""
    if isinstance(value, str):
        return literals.protect(value)
    if isinstance(value, dict):
        return {key: protected(item, literals) for key, item in value.items()}
    if isinstance(value, list):
        return [protected(item, literals) for item in value]
    return value


def tool_results_as_user_turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` with each "tool" turn handed back as a user turn, for templates that know no
    "tool" role."""
    return [
        {
            **message,
            "role": "user",
            "content": f"Tool result ({message.get('tool_call_id', '')}): {message.get('content')}",
        }
        if message.get("role") == "tool"
        else message
        for message in messages
    ]


def render_chat(
    template: ChatTemplate,
    messages: Sequence[Mapping[str, Any]],
    fmt: ChatFormat,
    tools: list[dict[str, Any]],
    choice: str | None,
    literals: Literals,
    variables: Mapping[str, Any] | None = None,
) -> str:
    """The chat as ``template`` renders it, every client text protected by ``literals``; the tools go to
    the template when the family's template lists them (``fmt.native_tools``), ``variables`` as more
    template variables. A template that rejects a "tool" turn gets tool results as user turns instead."""
    prepared = chat_messages(messages, fmt, tools, choice, literals)
    listed = None
    if choice is not None and fmt.native_tools:
        listed = protected(fmt.template_tools(tools), literals)
    try:
        return template.render(prepared, tools=listed, variables=variables)
    except TemplateError:
        if not any(m.get("role") == "tool" for m in prepared):
            raise
    return template.render(tool_results_as_user_turns(prepared), tools=listed, variables=variables)


def template_variables(fmt: ChatFormat, reasoning: Reasoning, client: Mapping[str, Any]) -> dict[str, Any]:
    """The chat template's extra variables: the request's thinking switch the way templates read it
    (Qwen3 and its kin ``enable_thinking``, on unless asked off as llama.cpp renders templates, since
    some close the thinking block at once when it is not set; ``reasoning_effort``; and what the family
    reads besides, ``fmt.template_variables``), then the client's ``chat_template_kwargs``, which win."""
    out: dict[str, Any] = {"enable_thinking": reasoning.enabled is not False}
    if reasoning.effort is not None:
        out["reasoning_effort"] = reasoning.effort
    out.update(fmt.template_variables(thinking=reasoning.enabled, effort=reasoning.effort))
    return {**out, **client}


def adds_bos(model_adds_bos: bool, bos_text: str, prompt: str) -> bool:
    """Whether tokenizing ``prompt`` adds a BOS token: when the model asks for one and the text does
    not already start with it (templates often write it; a second BOS changes the model's output)."""
    return model_adds_bos and not (bos_text and prompt.startswith(bos_text))


def prompt_pieces(prompt: str, literals: Literals | None, add_bos: bool) -> list[tuple[str, bool, bool]]:
    """``prompt`` as (text, add_special, parse_special) pieces to tokenize in order: special tokens
    parsed except in the texts ``literals`` protected, and BOS added (when ``add_bos``) to the first
    piece only."""
    segments = literals.segments(prompt) if literals is not None else [(prompt, True)]
    return [(text, add_bos and index == 0, parse) for index, (text, parse) in enumerate(segments)]


def tokenize_prompt(model: Vocabulary, prompt: str, literals: Literals | None = None) -> list[int]:
    """The token ids of a rendered prompt (see prompt_pieces)."""
    add_bos = adds_bos(model.add_bos, model.token_text(model.bos_token), prompt)
    tokens: list[int] = []
    for text, add_special, parse_special in prompt_pieces(prompt, literals, add_bos):
        tokens += model.tokenize(text, add_special=add_special, parse_special=parse_special)
    return tokens
