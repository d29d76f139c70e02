"""The grammar a request's reply follows: the client's own GBNF (checked before anything is queued, so
a bad one is a 400 before the stream), the model family's call format when tools are in force, or a
JSON schema's."""

from __future__ import annotations

import asyncio
from typing import Any

from appliance.backend import ChatParams
from appliance.engine.formats import ChatFormat
from appliance.engine.formats.base import Grammar
from appliance.engine.gbnf import check_gbnf
from appliance.errors import InvalidRequest


async def reply_grammar(
    model: Any, params: ChatParams, fmt: ChatFormat, choice: str | None
) -> Grammar | None:
    """The grammar a chat's reply follows: the client's own, else the family's call format when
    tools are in force, else the JSON schema's; None: free text."""
    if params.grammar is not None:  # the client's own: it drives sampling, tools or not
        return Grammar(await client_grammar(model, params.grammar))
    if choice is not None:
        return fmt.grammar(params.tools, choice, parallel=params.parallel_tool_calls)
    if params.json_schema is not None:
        return Grammar(schema_grammar(params.json_schema))
    return None


def schema_grammar(schema: dict[str, Any]) -> str:
    """A JSON schema's GBNF (llama.cpp's converter is imported when first needed)."""
    from appliance.engine.grammar import json_schema_grammar

    return json_schema_grammar(schema)


async def client_grammar(model: Any, grammar: str) -> str:
    """A client's GBNF ``grammar`` once it is known to be good: its syntax and size here, then its
    tokens and llama.cpp's own build of it (off the event loop), so a bad one is a 400 before the
    stream."""
    tokens = check_gbnf(grammar)

    def check() -> None:
        for text in tokens:  # llama.cpp would refuse it too, saying why only on stderr
            if len(model.tokenize(text, add_special=False, parse_special=True)) != 1:
                raise InvalidRequest(
                    f"invalid grammar: {text} is not one token of this model", param="grammar"
                )
        model.check_grammar(grammar)

    await asyncio.to_thread(check)
    return grammar
