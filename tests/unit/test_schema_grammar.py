"""JSON schemas as grammars (appliance/engine/grammar.py json_schema_grammar): a schema whose grammar would
nest past what llama.cpp's recursive parser survives is refused with a 400, not handed to it (a
``maxLength`` of 30,000 killed the daemon with a segmentation fault)."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.engine.formats.schema import GrammarBuilder
from appliance.engine.grammar import MAX_GRAMMAR_DEPTH, grammar_depth, json_schema_grammar
from appliance.errors import InvalidRequest
from tests.llama_grammars import built_by_llama_cpp


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "maxLength": 30_000},
        {"type": "string", "maxLength": 10**12},  # refused before building: it would exhaust memory
        {"type": "string", "minLength": 10**6},
        {"type": "string", "pattern": "^(ab){2,50000}$"},
        {"type": "array", "items": {"type": "string", "maxLength": MAX_GRAMMAR_DEPTH + 1}},
        {"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 5000}]},
    ],
)
def test_too_large_schemas_are_refused(schema: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest, match="too large to enforce"):
        json_schema_grammar(schema)


def test_depth_counts_groups_not_quoted_brackets() -> None:
    assert grammar_depth('root ::= ("(" [(] ((a)) ")")') == 3
    assert grammar_depth('root ::= "\\"(((" x') == 0


def test_the_largest_accepted_schema_parses_in_llama_cpp() -> None:
    """At the limit, llama.cpp builds the grammar (on a thread, as the engine does)."""
    grammar = json_schema_grammar({"type": "string", "maxLength": MAX_GRAMMAR_DEPTH})
    assert built_by_llama_cpp([grammar]) == [True]


def test_a_tool_s_long_string_bound_is_dropped_and_its_other_bounds_kept() -> None:
    """Claude Code's Workflow tool takes a script of up to 524,288 characters: a tool's maxLength over
    the limit means no bound (max_tokens bounds the reply); a minLength over it is still refused."""
    long_script = {"type": "object", "properties": {"script": {"type": "string", "maxLength": 524_288},
                                                    "id": {"type": "string", "maxLength": 8}}}  # fmt: skip
    builder = GrammarBuilder()
    grammar = builder.build(builder.json(long_script, "workflow-args"))
    assert built_by_llama_cpp([grammar]) == [True]
    assert "workflow-args-id ::=" in grammar and "workflow-args-script ::=" not in grammar  # any string
    with pytest.raises(InvalidRequest, match="too large to enforce"):
        GrammarBuilder().json({"type": "string", "minLength": 10**6}, "x")
    with pytest.raises(InvalidRequest, match="too large to enforce"):
        json_schema_grammar(long_script)  # a response_format keeps its bounds


def test_a_schema_of_annotations_only_is_any_value() -> None:
    """Claude Code's Workflow tool declares ``args`` by a description alone: any JSON value."""
    grammar = json_schema_grammar({"type": "object", "properties": {"args": {"description": "anything"}}})
    assert built_by_llama_cpp([grammar]) == [True]
    assert "args-kv ::= " in grammar and '":" space value' in grammar


def test_strings_take_no_raw_control_characters() -> None:
    """JSON strings escape control characters: a schema's grammar must not let a model write a raw
    newline or tab into one (llama-cpp-python's converter did; a Claude Code structured reply came back
    as `{"name": "Paris }\\n\\nThe answer..."` that no JSON parser reads). Escaped ones are fine."""
    from tests.grammar_text import allowed_by_llama_cpp

    string = json_schema_grammar({"type": "object", "properties": {"name": {"type": "string"}},
                                  "required": ["name"], "additionalProperties": False})  # fmt: skip
    anything = json_schema_grammar({"type": "object"})
    texts = ['{"name": "Paris"}', '{"name": "Paris\\nFrance"}', '{"name": "Paris\nFrance"}',
             '{"name": "a\tb"}', '{"k": ["x\ny"]}', '{"k": ["x\\ty"]}']  # fmt: skip
    grammars = [string] * 4 + [anything] * 2
    assert allowed_by_llama_cpp(list(zip(grammars, texts, strict=True))) == [
        True,
        True,
        False,
        False,
        False,
        True,
    ]
