"""A client's own GBNF grammar (llama-server's ``grammar`` field), checked before llama.cpp sees it.

llama.cpp's parser (src/llama-grammar.cpp) writes why it refused a grammar to stderr, not to its log, so
no message could name the problem; and it recurses once per nested group, so a grammar nested deeper than
its thread's stack overflows it and kills the whole process. This module follows the same syntax and
refuses here, with the reason and the place, what llama.cpp would refuse for its syntax, an undefined
rule or a missing ``root``; and what nests or weighs more than it can safely take. What needs the model
is left to the engine: whether each ``<text>`` is one token of its vocabulary (appliance.engine.local),
and what only llama.cpp judges, such as left recursion (appliance.engine.sampler). Pure: no llama.cpp
here.
"""

from __future__ import annotations

import re
from typing import NoReturn

from appliance.errors import InvalidRequest

MAX_GRAMMAR_DEPTH = 1000
"""llama.cpp parses a grammar recursively, one level per group: a grammar whose groups nest deeper (a
JSON schema's ``maxLength`` or a pattern's ``{0,N}`` in the tens of thousands, which the schema converter
spells as N nested optional groups; or a client's grammar written so) overflows its stack and kills the
whole process, so such a grammar is refused."""

MAX_GRAMMAR_CHARS = 65_536
"""A client's grammar may be at most this long: llama.cpp also recurses along chains of rules (each
starting with a reference to the next) when it checks for left recursion and when it matches, so the
number of rules is bounded through the length (a chain this long was checked not to crash it)."""

MAX_REPETITIONS = 2000
"""llama.cpp's MAX_REPETITION_THRESHOLD: the most ``{m}`` may ask for."""

_NAME = re.compile(r"[A-Za-z0-9-]+")
_INT = re.compile(r"[0-9]+")
_SPACE = re.compile(r"(?:[ \t]|#[^\r\n]*)*")
_SPACE_OR_NEWLINE = re.compile(r"(?:[ \t\r\n]|#[^\r\n]*)*")
_ESCAPES = {"x": 2, "u": 4, "U": 8}
_SIMPLE_ESCAPES = frozenset('trn\\"[]')
_HEX = frozenset("0123456789abcdefABCDEF")


class _Checker:
    """One pass over a grammar in llama.cpp's syntax (its parse_rule, parse_alternates and
    parse_sequence), keeping only what is needed to refuse it as llama.cpp would. Groups are counted,
    not recursed into, so no input can exhaust this stack either."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.defined: set[str] = set()
        self.used: dict[str, int] = {}  # rule name -> where it is first referenced
        self.tokens: list[str] = []  # the <text> tokens named, brackets included, as llama.cpp reads them

    def fail(self, what: str, pos: int | None = None) -> NoReturn:
        at = self.pos if pos is None else pos
        line = self.text.count("\n", 0, at) + 1
        column = at - (self.text.rfind("\n", 0, at) + 1) + 1
        near = self.text[at : at + 24]
        where = f"at line {line}, column {column}" + (f" ({near!r})" if near else " (the end)")
        raise InvalidRequest(f"invalid grammar: {what} {where}", param="grammar")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def space(self, newline_ok: bool) -> None:
        pattern = _SPACE_OR_NEWLINE if newline_ok else _SPACE
        match = pattern.match(self.text, self.pos)
        self.pos = match.end() if match else self.pos

    def name(self) -> str:
        match = _NAME.match(self.text, self.pos)
        if match is None:
            self.fail("expecting a rule name")
        self.pos = match.end()
        return match.group()

    def integer(self, what: str) -> int:
        match = _INT.match(self.text, self.pos)
        if match is None:
            self.fail(f"expecting {what}")
        self.pos = match.end()
        return int(match.group())

    def char(self) -> None:
        """One character of a literal or a class, escapes as llama.cpp's parse_char reads them."""
        if self.pos >= len(self.text):
            self.fail("unexpected end of input")
        if self.text[self.pos] != "\\":
            self.pos += 1
            return
        escape = self.text[self.pos + 1 : self.pos + 2]
        if escape in _ESCAPES:
            digits = self.text[self.pos + 2 : self.pos + 2 + _ESCAPES[escape]]
            if len(digits) != _ESCAPES[escape] or not set(digits) <= _HEX:
                self.fail(f"expecting {_ESCAPES[escape]} hex digits after \\{escape}")
            self.pos += 2 + len(digits)
        elif escape and escape in _SIMPLE_ESCAPES:
            self.pos += 2
        else:
            self.fail("unknown escape")

    def closed(self, end: str) -> None:
        """Characters up to ``end`` (a literal's quote or a class's bracket), then past it."""
        while self.peek() != end:
            if not self.peek():
                self.fail(f"unexpected end of input, expecting {end!r}")
            self.char()
            if end == "]" and self.peek() == "-" and self.text[self.pos + 1 : self.pos + 2] != "]":
                self.pos += 1
                self.char()
        self.pos += 1

    def token(self) -> None:
        """``<[id]>`` or ``<text>`` (kept, for the engine to check that it is one token of the
        vocabulary), at its ``<``."""
        start = self.pos
        self.pos += 1
        if self.peek() != "[":
            end = self.text.find(">", self.pos)
            if end < 0:
                self.fail("expecting '>' to end the token", start)
            self.pos = end + 1
            self.tokens.append(self.text[start : self.pos])
            return
        self.pos += 1
        if self.integer("a token id") > 2**32 - 1:
            self.fail("the token id is too big", start)
        for closing in "]>":
            if self.peek() != closing:
                self.fail(f"expecting {closing!r}")
            self.pos += 1

    def repetition(self, nested: bool) -> tuple[int, int | None]:
        """``{m}``, ``{m,}`` or ``{m,n}``, the brace already read: (m, n), n None for no upper bound."""
        self.space(nested)
        low = self.integer("a number of repetitions")
        high: int | None = low
        self.space(nested)
        if self.peek() == ",":
            self.pos += 1
            self.space(nested)
            high = None
            if _INT.match(self.text, self.pos):
                high = self.integer("a number")
                self.space(nested)
        if self.peek() != "}":
            self.fail("expecting '}'")
        self.pos += 1
        if low > MAX_REPETITIONS:
            self.fail(f"{low} repetitions exceed llama.cpp's limit of {MAX_REPETITIONS}")
        return low, high

    def body(self) -> None:
        """A rule's alternatives, nested groups included, up to the end of the rule."""
        depth = 0
        item = False  # an item precedes, which a repetition operator applies to
        while True:
            start = self.pos
            char = self.peek()
            if char == '"':
                self.pos += 1
                self.closed('"')
            elif char == "[":
                self.pos += 2 if self.text[self.pos + 1 : self.pos + 2] == "^" else 1
                self.closed("]")
            elif char == "<" or char == "!":
                if char == "!":
                    self.pos += 1
                    if self.peek() != "<":
                        self.fail("expecting '<' after '!'")
                self.token()
            elif _NAME.match(char):
                self.used.setdefault(self.name(), start)
            elif char == ".":
                self.pos += 1
            elif char == "(":
                depth += 1
                if depth > MAX_GRAMMAR_DEPTH:
                    self.fail(f"groups nest deeper than {MAX_GRAMMAR_DEPTH}")
                self.pos += 1
                self.space(True)
                item = False
                continue
            elif char == ")" and depth:
                depth -= 1
            elif char in ("*", "+", "?", "{"):
                if not item:
                    self.fail(f"expecting an item before {char!r}")
                self.pos += 1
                if char == "{":
                    self.repetition(depth > 0)
                    self.space(depth > 0)
                    continue
            elif char == "|":
                self.pos += 1
                self.space(True)
                item = False
                continue
            else:
                break
            if char == ")":
                self.pos += 1
            item = True
            self.space(depth > 0)
        if depth:
            self.fail("expecting ')'")

    def grammar(self) -> None:
        self.space(True)
        while self.pos < len(self.text):
            name = self.name()
            self.space(False)
            if not self.text.startswith("::=", self.pos):
                self.fail("expecting '::='")
            self.pos += 3
            self.space(True)
            self.body()
            if self.peek() in ("\r", "\n"):
                self.pos += 1
            elif self.peek():
                self.fail("expecting a newline or the end")
            self.defined.add(name)
            self.space(True)
        for name, pos in self.used.items():
            if name not in self.defined:
                self.fail(f"undefined rule {name!r}", pos)
        if "root" not in self.defined:
            raise InvalidRequest("invalid grammar: it defines no 'root' rule", param="grammar")


MAX_ALTERNATIVES_REPEATED = 100
"""A group with alternatives may be repeated at most this many times by ``{m,n}``: llama.cpp follows every
way an ambiguous repetition can match at once, and ``("a"|"a"){0,1000}`` did not produce a token in
two minutes."""

_NULLABLE_PASSES = 50  # rules' "can match nothing" settled through at most this many chains of rules


class _Repeats(_Checker):
    """A second pass over a grammar the first found well formed, refusing the repetitions that make
    llama.cpp's matcher explode (it explores every way a grammar can match, and a repetition of something
    that can match nothing has unboundedly many: ``("a"*)*`` took seconds a token, ``([a-z]*){0,1000}``
    never answered, and nothing interrupts llama.cpp meanwhile). ``nullable`` holds the rules known to
    match the empty string; each pass can only add to it."""

    def __init__(self, text: str, nullable: set[str]) -> None:
        super().__init__(text)
        self.nullable = nullable
        self.found: set[str] = set()
        self.problem: tuple[str, int] | None = None

    def refuse(self, what: str, pos: int) -> None:
        if self.problem is None:
            self.problem = (what, pos)

    def body(self) -> bool:  # type: ignore[override]
        """A rule's alternatives; whether the rule can match the empty string."""
        # An item is (can match nothing, is a group with alternatives). Within the alternative being read:
        # ``prefix``, whether everything before its last item can match nothing, and ``last``, the item a
        # repetition would apply to. Each open group keeps its parent's alternatives, prefix and last.
        groups: list[tuple[list[bool], bool, tuple[bool, bool] | None]] = []
        alternatives: list[bool] = []
        prefix, last = True, None

        def ended() -> bool:
            return prefix and (last is None or last[0])

        while True:
            start = self.pos
            char = self.peek()
            item: tuple[bool, bool]
            if char == '"':
                self.pos += 1
                self.closed('"')
                item = (self.pos - start == 2, False)
            elif char == "[":
                self.pos += 2 if self.text[self.pos + 1 : self.pos + 2] == "^" else 1
                self.closed("]")
                item = (False, False)
            elif char == "<" or char == "!":
                self.pos += 1 if char == "!" else 0
                self.token()
                item = (False, False)
            elif _NAME.match(char):
                item = (self.name() in self.nullable, False)
            elif char == ".":
                self.pos += 1
                item = (False, False)
            elif char == "(":
                groups.append((alternatives, prefix, last))
                alternatives, prefix, last = [], True, None
                self.pos += 1
                self.space(True)
                continue
            elif char == ")" and groups:
                alternatives.append(ended())
                item = (any(alternatives), len(alternatives) > 1)
                alternatives, prefix, last = groups.pop()
                self.pos += 1
            elif char in ("*", "+", "?", "{") and last is not None:
                self.pos += 1
                low, high = (
                    self.repetition(bool(groups))
                    if char == "{"
                    else (1 if char == "+" else 0, 1 if char == "?" else None)
                )
                empty, alternated = last
                if empty and (high is None or high > 1):
                    self.refuse("a repetition of something that can match nothing", start)
                if alternated and char == "{" and (high is None or high > MAX_ALTERNATIVES_REPEATED):
                    self.refuse(
                        f"a group with alternatives repeated more than {MAX_ALTERNATIVES_REPEATED} times",
                        start,
                    )
                last = (empty or low == 0, False)
                self.space(bool(groups))
                continue
            elif char == "|":
                alternatives.append(ended())
                prefix, last = True, None
                self.pos += 1
                self.space(True)
                continue
            else:
                break
            prefix = ended()
            last = item
            self.space(bool(groups))
        alternatives.append(ended())
        return any(alternatives)

    def grammar(self) -> None:
        self.space(True)
        while self.pos < len(self.text):
            name = self.name()
            self.space(False)
            self.pos += 3
            self.space(True)
            if self.body():
                self.found.add(name)
            self.pos += 1 if self.peek() in ("\r", "\n") else 0
            self.space(True)


def _check_repetitions(grammar: str) -> None:
    nullable: set[str] = set()
    for _ in range(_NULLABLE_PASSES):
        scan = _Repeats(grammar, nullable)
        scan.grammar()
        if scan.found <= nullable:
            break
        nullable |= scan.found
    if scan.problem is not None:
        what, pos = scan.problem
        scan.fail(what, pos)


def check_gbnf(grammar: str) -> tuple[str, ...]:
    """Raise InvalidRequest (param ``grammar``) naming the problem when ``grammar`` is not a GBNF grammar
    that llama.cpp can safely parse: its syntax, an undefined rule, no ``root``, groups nested deeper
    than MAX_GRAMMAR_DEPTH, or more than MAX_GRAMMAR_CHARS characters. Returns the ``<text>`` tokens it
    names (brackets included), each of which must be one token of the model's vocabulary."""
    if len(grammar) > MAX_GRAMMAR_CHARS:
        raise InvalidRequest(
            f"the grammar has {len(grammar)} characters; at most {MAX_GRAMMAR_CHARS} are taken",
            param="grammar",
        )
    if "\x00" in grammar:  # llama.cpp reads a C string: the grammar would end there
        raise InvalidRequest("invalid grammar: it contains a NUL character", param="grammar")
    checker = _Checker(grammar)
    checker.grammar()
    _check_repetitions(grammar)
    return tuple(checker.tokens)
