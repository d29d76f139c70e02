"""The base of the family formats: Hermes/Qwen and the generic JSON reply, read whole and streamed at
every split (tests/format_streams.py), and their grammars accepted by llama.cpp's parser."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.engine.formats import GenericFormat, HermesFormat, detect
from appliance.engine.formats.base import Thinking, held_back, split_thinking
from tests.format_streams import check_every_split, stream

TEMPLATES = Path(__file__).parent.parent / "fixtures" / "templates"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}

# Qwen3's reply as its model card shows one (a thought, words, two calls).
QWEN3_REPLY = (
    "<think>\nThe user wants the weather in two cities.\n</think>\n\nI'll check both."
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Saint-\\"Malo\\""}}\n</tool_call>'
)


def test_hermes_reply_with_thoughts_words_and_two_calls_streams_at_every_split() -> None:
    whole = check_every_split(HermesFormat(thinks=True), QWEN3_REPLY)
    assert whole.reasoning == "The user wants the weather in two cities."
    assert whole.content == "I'll check both."
    assert [(c.name, c.arguments) for c in whole.calls] == [
        ("get_weather", '{"city": "Paris"}'),
        ("get_weather", '{"city": "Saint-\\"Malo\\""}'),
    ]


def test_a_prompt_that_opens_the_thinking_block_reads_thoughts_from_the_first_token() -> None:
    whole = check_every_split(HermesFormat(thinks=True), "Hmm.\n</think>\n\nHello!", thinking=True)
    assert (whole.reasoning, whole.content, whole.calls) == ("Hmm.", "Hello!", [])


def test_words_that_only_look_like_a_tag_are_content() -> None:
    whole = check_every_split(HermesFormat(), "a < b and <tool is not a call")
    assert whole.content == "a < b and <tool is not a call" and not whole.calls


def test_a_reply_cut_mid_call_keeps_what_was_written() -> None:
    output = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa'
    got = stream(HermesFormat(), output, [output], cut=True)
    assert got.calls == [("get_weather", '{"city": "Pa')] and got.content == ""


def test_generic_reply_streams_its_words_and_its_calls() -> None:
    fmt = GenericFormat()
    words = check_every_split(fmt, '{"response": "Hello \\"you\\" \\u00e9t\\u00e9"}')
    assert words.content == 'Hello "you" été' and not words.calls
    calls = check_every_split(
        fmt, '{"tool_calls": [{"name": "x", "arguments": {"a": 1}}, {"name": "y", "arguments": {}}]}'
    )
    assert [(c.name, c.arguments) for c in calls.calls] == [("x", '{"a": 1}'), ("y", "{}")]
    assert check_every_split(fmt, "no JSON at all").content == "no JSON at all"


def test_a_generic_reply_cut_by_max_tokens_never_shows_its_wrapper() -> None:
    output = '{"tool_calls": [{"name": "'
    got = stream(GenericFormat(), output, [output], cut=True)
    assert got.content == "" and got.calls == []
    output = '{"response": "Half a sent'
    assert stream(GenericFormat(), output, [output], cut=True).content == "Half a sent"


def test_held_back_and_thinking_split() -> None:
    assert held_back("abc<tool_c", ["<tool_call>"]) == 7
    assert held_back("abc", ["<tool_call>"]) == 0
    think = Thinking("<think>", "</think>")
    assert split_thinking("  <think>a</think> b", think, inside=False, partial=False) == ("a", "b", True)
    assert split_thinking("<thi", think, inside=False, partial=True) == ("", "", False)
    assert split_thinking("x <think>", think, inside=False, partial=True) == ("", "x <think>", True)


@pytest.mark.parametrize(
    ("template", "name", "thinks"),
    [
        ("Qwen-Qwen3-0.6B.jinja", "hermes", True),
        ("Qwen-Qwen2.5-7B-Instruct.jinja", "hermes", False),
        ("NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja", "hermes", False),
        ("Qwen-QwQ-32B.jinja", "hermes", True),
    ],
)
def test_real_templates_are_recognised(template: str, name: str, thinks: bool) -> None:
    fmt = detect((TEMPLATES / template).read_text())
    assert fmt.name == name and (fmt.thinking is not None) == thinks


def test_no_template_is_the_generic_format() -> None:
    assert detect(None).name == "generic"


@pytest.mark.parametrize("fmt", [GenericFormat(), HermesFormat()], ids=lambda f: f.name)
@pytest.mark.parametrize("choice", ["auto", "required", "get_weather"])
def test_tool_grammars_are_valid_gbnf(fmt, choice: str) -> None:  # type: ignore[no-untyped-def]
    from appliance.engine.gbnf import check_gbnf

    grammar = fmt.grammar([WEATHER], choice, parallel=True)
    assert grammar is not None
    check_gbnf(grammar.gbnf)
    lazy = choice == "auto" and fmt.name == "hermes"
    assert bool(grammar.triggers) == lazy
