"""Building a family's tool-call grammar: GBNF rules for each tool's JSON arguments (llama-cpp-python's
JSON-schema converter, with our integer bounds and size checks) put together with the family's own
literal text around them."""

from __future__ import annotations

import json
import re
from typing import Any

from appliance.engine.grammar import check_schema_size, schema_converter
from appliance.errors import InvalidRequest


def literal(text: str) -> str:
    """``text`` as a GBNF string literal."""
    return json.dumps(text, ensure_ascii=False)


class GrammarBuilder:
    """Rules added one by one, then the whole grammar with its root."""

    def __init__(self, prop_order: dict[str, int] | None = None) -> None:
        self._converter = schema_converter(prop_order or {})

    def json(self, schema: dict[str, Any], name: str) -> str:
        """A rule accepting the JSON values valid under ``schema``; its name."""
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


def prefixed(gbnf: str, prefix: str) -> str:
    """``gbnf`` with its root preceded by the literal ``prefix``: the text of the first token a lazily
    started grammar sees that comes before the trigger (a token can hold both)."""
    if not prefix:
        return gbnf
    body = re.sub(r"(?m)^root ::=", "root-triggered ::=", gbnf)
    return f"root ::= {literal(prefix)} root-triggered\n{body}"


def alternatives(rules: list[str]) -> str:
    return rules[0] if len(rules) == 1 else "( " + " | ".join(rules) + " )"


def repeated(rule: str, *, parallel: bool, separator: str = "") -> str:
    """One ``rule``, or with ``parallel`` one or more (``separator`` between)."""
    if not parallel:
        return rule
    sep = f"{separator} " if separator else ""
    return f"{rule} ( {sep}{rule} )*"
