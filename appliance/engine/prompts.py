"""A chat as the model's prompt: the messages prepared for its template (tool calls and results, tool
instructions, client text protected by literals), the rendered text, and the rule for the BOS token.
Pure functions of plain inputs, but for ``tokenize_prompt``, which asks the model's tokenizer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from appliance.engine import tools as toolfmt
from appliance.engine.chat_template import ChatTemplate, TemplateError
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
    tools: list[dict[str, Any]],
    choice: str | None,
    literals: Literals,
) -> list[dict[str, Any]]:
    """Copies of ``messages`` ready for a chat template: an assistant's tool calls written into its
    content, the tool instructions in the system message when a tool ``choice`` is in force, and every
    string content protected by ``literals``."""
    prepared = [dict(m) for m in messages]
    for message in prepared:
        if message.get("role") == "assistant" and message.get("tool_calls"):
            message["content"] = toolfmt.history_content(message.pop("tool_calls"), message.get("content"))
    if choice is not None:
        instructions = toolfmt.system_instructions(tools, choice)
        if prepared and prepared[0].get("role") == "system":
            prepared[0]["content"] = f"{prepared[0].get('content') or ''}\n\n{instructions}".strip()
        else:
            prepared.insert(0, {"role": "system", "content": instructions})
    for message in prepared:
        if isinstance(message.get("content"), str):
            message["content"] = literals.protect(message["content"])
    return prepared


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
    tools: list[dict[str, Any]],
    choice: str | None,
    literals: Literals,
) -> str:
    """The chat as ``template`` renders it, every message's text protected by ``literals``. A template
    that rejects a "tool" turn gets tool results as user turns instead."""
    prepared = chat_messages(messages, tools, choice, literals)
    try:
        return template.render(prepared)
    except TemplateError:
        if not any(m.get("role") == "tool" for m in prepared):
            raise
    return template.render(tool_results_as_user_turns(prepared))


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
