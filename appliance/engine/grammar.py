"""JSON schemas as GBNF grammars for constrained output, refusing the schemas whose grammar would nest
deeper than llama.cpp's recursive grammar parser can take."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from llama_cpp import llama_grammar

from appliance.engine.gbnf import MAX_GRAMMAR_DEPTH
from appliance.engine.int_range import integer_range_rule
from appliance.errors import InvalidRequest

# Re-exported: the JSON schema's bound is the one every grammar has (see there).
__all__ = [
    "MAX_GRAMMAR_DEPTH",
    "check_schema_size",
    "grammar_depth",
    "json_schema_grammar",
    "schema_converter",
    "unbounded_long_strings",
]


# Keys that say nothing of a value's shape: a schema of only these accepts any JSON value.
_ANNOTATIONS = frozenset(("description", "title", "examples", "default", "$comment", "deprecated"))


# A character of a JSON string: llama-cpp-python's converter lets raw control characters in ([^"\\]),
# which JSON forbids and every parser refuses (a string with a raw newline came back from a schema-bound
# reply); llama.cpp's own converter leaves them out, and DEL, as here.
_JSON_CHAR = llama_grammar.BuiltinRule(
    r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])', []
)


class _SchemaConverter(llama_grammar.SchemaConverter):
    """llama-cpp-python's converter, plus the integer bounds it leaves out, schemas of annotations
    only (Claude Code's tools have ``{"description": ...}`` for "any value"), which it refuses, and
    strings without raw control characters."""

    def _add_primitive(self, name: str, rule: Any) -> str:
        result: str = super()._add_primitive(name, _JSON_CHAR if name == "char" else rule)
        return result

    def visit(self, schema: Any, name: str) -> str:
        if isinstance(schema, dict) and schema and _ANNOTATIONS.issuperset(schema):
            rule_name = name or "root"
            if rule_name in llama_grammar.RESERVED_NAMES:
                rule_name += "-"
            value = llama_grammar.PRIMITIVE_RULES["value"]
            any_value: str = self._add_rule(rule_name, self._add_primitive("value", value))
            return any_value
        bounds = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
        if isinstance(schema, dict) and schema.get("type") == "integer" and any(b in schema for b in bounds):
            low = schema.get("minimum")
            if "exclusiveMinimum" in schema:
                low = max(low if low is not None else -(10**18), math.floor(schema["exclusiveMinimum"]) + 1)
            high = schema.get("maximum")
            if "exclusiveMaximum" in schema:
                high = min(high if high is not None else 10**18, math.ceil(schema["exclusiveMaximum"]) - 1)
            low = None if low is None else math.ceil(low)
            high = None if high is None else math.floor(high)
            rule_name = name or "root"
            if rule_name in llama_grammar.RESERVED_NAMES:
                rule_name += "-"
            rule: str = self._add_rule(rule_name, f"({integer_range_rule(low, high)}) space")
            return rule
        result: str = super().visit(schema, name)
        return result


def grammar_depth(grammar: str) -> int:
    """How deeply the groups of a GBNF grammar nest (brackets inside literals and classes not counted)."""
    depth = deepest = 0
    quote: str | None = None
    escaped = False
    for char in grammar:
        if quote is not None:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
        elif char in '"[':
            quote = "]" if char == "[" else char
        elif char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    return deepest


_REPETITION = re.compile(r"\{(\d+)(?:,(\d*))?\}")


def _too_long(schema: Any) -> bool:
    """Whether ``schema`` asks for a string length, or a pattern for a repetition, over
    MAX_GRAMMAR_DEPTH: checked before converting, as the grammar grows with the number (a maxLength of
    10**9 would exhaust memory first)."""
    if isinstance(schema, list):
        return any(_too_long(item) for item in schema)
    if not isinstance(schema, dict):
        return False
    for key in ("minLength", "maxLength"):
        value = schema.get(key)
        if isinstance(value, int | float) and value > MAX_GRAMMAR_DEPTH:
            return True
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        counts = (int(n) for match in _REPETITION.finditer(pattern) for n in match.groups() if n)
        if any(n > MAX_GRAMMAR_DEPTH for n in counts):
            return True
    return any(_too_long(value) for value in schema.values())


def unbounded_long_strings(schema: Any) -> Any:
    """``schema`` without the ``maxLength`` bounds over MAX_GRAMMAR_DEPTH, which no grammar here can
    enforce. For tool arguments only: agents declare such bounds as "as long as you like" (Claude Code's
    Workflow tool, 524,288 characters), and a reply's max_tokens bounds it long before; an asked
    response_format keeps its bounds, or is refused."""
    if isinstance(schema, list):
        return [unbounded_long_strings(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    return {
        key: unbounded_long_strings(value)
        for key, value in schema.items()
        if not (key == "maxLength" and isinstance(value, int | float) and value > MAX_GRAMMAR_DEPTH)
    }


def schema_converter(prop_order: dict[str, int] | None = None) -> llama_grammar.SchemaConverter:
    """A JSON-schema-to-GBNF converter with our integer bounds, properties in ``prop_order`` first."""
    return _SchemaConverter(prop_order=prop_order or {}, allow_fetch=False, dotall=False, raw_pattern=False)


def _too_large(param: str) -> InvalidRequest:
    return InvalidRequest(
        f"the JSON schema is too large to enforce: a string length or a pattern's repetition over "
        f"{MAX_GRAMMAR_DEPTH}, or nesting that deep",
        param=param,
    )


def check_schema_size(schema: Any, *, param: str) -> None:
    """Refuse a schema whose grammar would be too large to enforce (see _too_long)."""
    if _too_long(schema):
        raise _too_large(param)


def json_schema_grammar(schema: dict[str, Any]) -> str:
    """A GBNF grammar accepting exactly the JSON documents valid under ``schema``."""
    check_schema_size(schema, param="response_format")
    try:
        converter = schema_converter()
        resolved = converter.resolve_refs(json.loads(json.dumps(schema)), "request")
        converter.visit(resolved, "")
        grammar: str = converter.format_grammar()
    except Exception as exc:  # the converter raises bare Exceptions for schemas it cannot handle
        raise InvalidRequest(f"unsupported JSON schema: {exc}", param="response_format") from exc
    if grammar_depth(grammar) > MAX_GRAMMAR_DEPTH:
        raise _too_large("response_format")
    return grammar
