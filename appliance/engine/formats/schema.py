"""Building a family's tool-call grammar: GBNF rules for each tool's JSON arguments (llama-cpp-python's
JSON-schema converter, with our integer bounds and size checks) put together with the family's own
literal text around them."""

from __future__ import annotations

import json
import re
from typing import Any

from appliance.engine.formats.base import literal
from appliance.errors import InvalidRequest

__all__ = ["GrammarBuilder", "alternatives", "literal", "prefixed", "repeated"]


class GrammarBuilder:
    """Rules added one by one, then the whole grammar with its root."""

    def __init__(self, prop_order: dict[str, int] | None = None) -> None:
        # Imported here: the converter comes with llama_cpp, which the daemon loads with a model only.
        from appliance.engine.grammar import schema_converter

        self._converter = schema_converter(prop_order or {})

    def json(self, schema: dict[str, Any], name: str) -> str:
        """A rule accepting the JSON values valid under ``schema``; its name."""
        from appliance.engine.grammar import check_schema_size, unbounded_long_strings

        schema = unbounded_long_strings(schema)
        check_schema_size(schema, param="tools")
        try:
            resolved = self._converter.resolve_refs(json.loads(json.dumps(schema)), name)
            rule: str = self._converter.visit(resolved, name)
        except InvalidRequest:
            raise
        except Exception as exc:  # the converter raises bare Exceptions for schemas it cannot handle
            raise InvalidRequest(f"unsupported JSON schema in tools: {exc}", param="tools") from exc
        return rule

    def arguments(self, tool: dict[str, Any]) -> str:
        """The rule for one tool's arguments object (any object when it declares no parameters)."""
        fn = tool["function"]
        return self.json(fn.get("parameters") or {"type": "object"}, f"{fn['name']}-args")

    def ws(self) -> str:
        """A rule for the white space a family writes between its markers and JSON: a space, or a line
        break or two and an indent (llama.cpp's own bound, so a model cannot write blank lines forever)."""
        return self.rule("ws", '| " " | "\\n"{1,2} [ \\t]{0,20}')

    def rule(self, name: str, body: str) -> str:
        """Add ``name ::= body``; the name it got (made unique and valid)."""
        added: str = self._converter._add_rule(name, body)
        return added

    def build(self, root: str | None) -> str:
        """The grammar text, ``root ::= root`` (None: a rule named root was added already)."""
        if root is not None:
            self._converter._add_rule("root", root)
        text: str = self._converter.format_grammar()
        return text


def prefixed(gbnf: str, prefix: str, *, then_space: bool = False) -> str:
    """``gbnf`` with its root preceded by the literal ``prefix`` (and, with ``then_space``, any white
    space): the text before a lazily started grammar's trigger in the trigger's first token (a token can
    hold both), or the end of the thoughts before a reply's grammar."""
    if not prefix:
        return gbnf
    n = 0
    while re.search(rf"(?m)^root-{n} ::=", gbnf):
        n += 1
    body = re.sub(r"(?m)^root ::=", f"root-{n} ::=", gbnf)
    space = " [ \\t\\n]*" if then_space else ""
    return f"root ::= {literal(prefix)}{space} root-{n}\n{body}"


_CLASS_ESCAPES = {"\n": "\\n", "\\": "\\\\", "]": "\\]", "-": "\\-", "^": "\\^"}


def text_until(builder: GrammarBuilder, name: str, delimiter: str) -> str:
    """A rule matching any text up to and including the first ``delimiter`` (a DFA over the
    delimiter's prefixes, as llama.cpp's own ``until`` rules are built); its name."""
    fail = [0] * len(delimiter)  # KMP: the longest proper prefix that is also a suffix
    for i in range(1, len(delimiter)):
        k = fail[i - 1]
        while k and delimiter[i] != delimiter[k]:
            k = fail[k - 1]
        fail[i] = k + 1 if delimiter[i] == delimiter[k] else 0

    def step(state: int, char: str) -> int:
        while state and delimiter[state] != char:
            state = fail[state - 1]
        return state + 1 if delimiter[state] == char else 0

    def state_name(state: int) -> str:
        return name if state == 0 else f"{name}-{state}"

    def char_class(chars: list[str], negate: bool) -> str:
        escaped = "".join(_CLASS_ESCAPES.get(c, c) for c in chars)
        return f"[{'^' if negate else ''}{escaped}]"

    for state in range(len(delimiter)):
        ends: list[str] = []
        moves: dict[int, list[str]] = {}
        for char in sorted(set(delimiter)):
            after = step(state, char)
            if after == len(delimiter):
                ends.append(char)
            elif after:
                moves.setdefault(after, []).append(char)
        options = [char_class(ends, False)] if ends else []
        options += [f"{char_class(chars, False)} {state_name(to)}" for to, chars in sorted(moves.items())]
        specific = ends + [c for chars in moves.values() for c in chars]
        options.append(f"{char_class(specific, True)} {state_name(0)}")
        builder.rule(state_name(state), " | ".join(options))
    return name


def json_object(fields: list[tuple[str, str]]) -> str:
    """GBNF for a JSON object with exactly ``fields``, in order: (key, the rule for its value, which
    takes the white space after it, as the schema converter's rules do)."""
    parts = [f'{literal(literal(key))} space ":" space {value}' for key, value in fields]
    return '"{" space ' + ' "," space '.join(parts) + ' "}" space'


def alternatives(rules: list[str]) -> str:
    return rules[0] if len(rules) == 1 else "( " + " | ".join(rules) + " )"


def repeated(rule: str, *, parallel: bool, separator: str = "") -> str:
    """One ``rule``, or with ``parallel`` one or more (``separator`` between)."""
    if not parallel:
        return rule
    sep = f"{separator} " if separator else ""
    return f"{rule} ( {sep}{rule} )*"
