"""Grammars built by llama.cpp itself, in a process of its own, for the tests that check what the engine
lets through: a grammar that overflows llama.cpp's stack kills its process, which then fails the test
rather than the test run."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# The embedded model's vocabulary, loaded alone; the payload as ``given``.
_VOCAB = textwrap.dedent("""
    import ctypes, json, sys, threading, llama_cpp
    from models.embedded import embedded_model_path
    given = json.load(sys.stdin)
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(embedded_model_path()).encode(), params)
    vocab = llama_cpp.llama_model_get_vocab(model)
""")

_SCRIPT = _VOCAB + textwrap.dedent("""
    grammars = given
    made = []
    def build():
        for grammar in grammars:
            made.append(bool(llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")))
    worker = threading.Thread(target=build)  # on a thread, with a thread's stack, as the engine builds them
    worker.start(); worker.join()
    print(json.dumps(made))
""")


def built_by_llama_cpp(grammars: list[str]) -> list[bool]:
    """Whether llama.cpp built each of ``grammars`` over the embedded model's vocabulary; fails the
    calling test with llama.cpp's stderr if its process died."""
    return _run(_SCRIPT, grammars)


def _run(script: str, payload: object) -> list[bool]:
    """``script`` run in a Python of its own with ``payload`` as JSON on stdin; its last line's list."""
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: list[bool] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


_MATCH_SCRIPT = _VOCAB + textwrap.dedent("""
    cases = given
    eos = llama_cpp.llama_vocab_eos(vocab)

    def allowed(sampler, token):
        data = (llama_cpp.llama_token_data * 1)(llama_cpp.llama_token_data(token, 0.0, 0.0))
        array = llama_cpp.llama_token_data_array(data, 1, -1, False)
        llama_cpp.llama_sampler_apply(sampler, ctypes.byref(array))
        return data[0].logit != float("-inf")

    results = []
    for grammar, text in cases:
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
        raw = text.encode()
        tokens = (llama_cpp.llama_token * (len(raw) + 8))()
        n = llama_cpp.llama_tokenize(vocab, raw, len(raw), tokens, len(raw) + 8, False, False)
        ok = True
        for token in tokens[:n]:
            if not allowed(sampler, token):
                ok = False
                break
            llama_cpp.llama_sampler_accept(sampler, token)
        results.append(ok and allowed(sampler, eos))  # the whole text, and the grammar may end there
        llama_cpp.llama_sampler_free(sampler)
    print(json.dumps(results))
""")


def matched_by_llama_cpp(cases: list[tuple[str, str]]) -> list[bool]:
    """For each (grammar, text): whether llama.cpp's grammar sampler lets the embedded model write
    exactly ``text`` (every token of it, then the end of generation) under ``grammar``."""
    return _run(_MATCH_SCRIPT, cases)
