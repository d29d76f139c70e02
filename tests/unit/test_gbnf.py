"""A client's GBNF grammar (appliance/engine/gbnf.py check_gbnf): refused with the reason and the place
where llama.cpp would refuse it for its syntax (llama.cpp says why only on stderr), and refused before
llama.cpp sees it when it nests or weighs more than llama.cpp's recursive parser survives; and where a
request with one may go (only remotes reading llama-server's field get it)."""

from __future__ import annotations

import itertools

import pytest

from appliance.backend import ChatParams, CompletionParams
from appliance.config import RemoteSettings
from appliance.engine.gbnf import MAX_GRAMMAR_CHARS, MAX_GRAMMAR_DEPTH, check_gbnf
from appliance.errors import InvalidRequest
from appliance.remotes.backend import chat_body, completion_body
from appliance.remotes.pool import Remote
from appliance.remotes.probe import Probe
from appliance.routing import LOCAL, LocalOption, route
from tests.llama_grammars import built_by_llama_cpp

# What llama.cpp's own grammars/ directory writes: comments, classes, escapes, groups over several
# lines, repetitions, token references.
GOOD = [
    'root ::= "yes" | "no"',
    'root ::= answer\nanswer ::= [A-Z] [a-z]* "."  # a sentence\n',
    '# leading comment\nroot ::= ( "a" |\n  "b" )+ x{2,3} x{1,} x{2}\nx ::= [^"\\\\\\x41\\u00e9\\]] .',
    'root ::= "\\"" [a-z-]? "\\n" <[2]> !<[0]>',
    'root::=a\r\na::="x"',
    'root ::= ("a" ("b" ("c"))?)*',
    'root ::= ("a"? "b")* [a-z]{0,1000} ("a" | "b")* ("a"?)?',
    'root ::= x*\nx ::= "a" y\ny ::= "b"?',
]

BAD = [
    ("", "defines no 'root' rule"),
    ('answer ::= "x"', "defines no 'root' rule"),
    ('root ::= "x" item', "undefined rule 'item' at line 1, column 14"),
    ('root ::= "x', "unexpected end of input"),
    ("root ::= [a-", "unexpected end of input"),
    ('root ::= "\\q"', "unknown escape at line 1, column 11"),
    ('root ::= "\\x4"', "expecting 2 hex digits"),
    ('root = "x"', "expecting '::=' at line 1, column 6"),
    ('root ::= ("x"', "expecting ')'"),
    ('root ::= "x")', "expecting a newline or the end at line 1, column 13"),
    ('root ::= * "x"', "expecting an item before '*'"),
    ('root ::= "a" | ?', "expecting an item before '?'"),
    ('root ::= "x"{2', "expecting '}'"),
    ('root ::= "x"{a}', "expecting a number of repetitions"),
    ('root ::= "x"{2001}', "2001 repetitions exceed llama.cpp's limit of 2000"),
    ('root ::= "x"\n  "y"', "expecting a rule name at line 2, column 3"),
    ("root ::= <token", "expecting '>' to end the token at line 1, column 10"),
    ("root ::= <[12>", "expecting ']' at line 1, column 14"),
    ("root ::= <[]>", "expecting a token id"),
    ("root ::= <[4294967296]>", "the token id is too big"),
    ("root ::= !", "expecting '<' after '!'"),
    ('root ::= "a"\x00', "NUL"),
    ("root ::= " + "(" * (MAX_GRAMMAR_DEPTH + 1) + '"a"' + ")" * (MAX_GRAMMAR_DEPTH + 1), "nest deeper"),
    ('root ::= "' + "a" * MAX_GRAMMAR_CHARS + '"', f"at most {MAX_GRAMMAR_CHARS}"),
    # Repetitions that make llama.cpp's matcher explode (seconds a token, or no token at all).
    ('root ::= ("a"*)*', "a repetition of something that can match nothing at line 1, column 16"),
    ('root ::= (("a"?)*)*', "a repetition of something that can match nothing"),
    ("root ::= ([a-z]*){0,1000}", "a repetition of something that can match nothing"),
    ('root ::= x+\nx ::= y\ny ::= "" | "b"', "a repetition of something that can match nothing at line 1"),
    ('root ::= ("a"|"a"){0,1000}', "a group with alternatives repeated more than 100 times"),
]


@pytest.mark.parametrize("grammar", GOOD)
def test_llama_cpp_grammars_pass(grammar: str) -> None:
    check_gbnf(grammar)


@pytest.mark.parametrize(("grammar", "reason"), BAD)
def test_bad_grammars_are_refused_naming_why(grammar: str, reason: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_gbnf(grammar)
    assert reason in refused.value.message and refused.value.param == "grammar"


def _chain_of_rules() -> str:
    """The most rules a grammar within MAX_GRAMMAR_CHARS can chain, each starting with the next (llama.cpp
    recurses along such a chain to check left recursion and to start matching)."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    names = [a + b + c for a in alphabet for b in alphabet for c in alphabet]
    lines = ["root::=aaa"]
    size = len(lines[0])
    for this, after in itertools.pairwise(names):
        line = f"{this}::={after}"
        if size + 1 + len(line) + 1 + len(f'{after}::="x"') > MAX_GRAMMAR_CHARS:
            lines.append(f'{this}::="x"')
            break
        lines.append(line)
        size += 1 + len(line)
    return "\n".join(lines)


def test_the_worst_accepted_grammars_build_in_llama_cpp() -> None:
    """The deepest groups and the longest chain of rules this module lets through build in llama.cpp."""
    chain = _chain_of_rules()
    deep = "root ::= " + "(" * MAX_GRAMMAR_DEPTH + '"a"' + ")" * MAX_GRAMMAR_DEPTH
    for grammar in (chain, deep):
        check_gbnf(grammar)
    assert len(chain) > MAX_GRAMMAR_CHARS - 20 and chain.count("::=") > 5000
    assert built_by_llama_cpp([chain, deep]) == [True, True]


@pytest.mark.parametrize(("kind", "forwarded"), [("openai", True), ("vllm", False), ("sglang", False)])
def test_a_grammar_goes_only_to_remotes_reading_it(kind: str, forwarded: bool) -> None:
    grammar = 'root ::= "yes"'
    chat = chat_body(ChatParams(messages=[{"role": "user", "content": "x"}], grammar=grammar), "m", kind)
    completion = completion_body(CompletionParams(prompt="x", grammar=grammar), "m", kind)
    assert ("grammar" in chat, "grammar" in completion) == (forwarded, forwarded)
    if forwarded:
        assert chat["grammar"] == completion["grammar"] == grammar
    # The router, asked with X-Escalate: always for a request with a grammar (need "grammar"), picks the
    # remote only where it reads one, else keeps the request here.
    settings = RemoteSettings(name="r", kind=kind, base_url="http://gpu:8000")
    remote = Remote(settings, base_url=settings.base_url, last_probe=Probe(True, models={"m": None}))
    here = LocalOption(installed=True, fits=True, n_ctx=2048, predicted_wait_s=0.0)
    options = [o for o in [remote.option("m", "grammar")] if o is not None]
    assert route(local=here, remotes=options, header="always").target == ("r" if forwarded else LOCAL)
