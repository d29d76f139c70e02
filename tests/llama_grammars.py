"""Grammars built by llama.cpp itself, in a process of its own, for the tests that check what the engine
lets through: a grammar that overflows llama.cpp's stack kills its process, which then fails the test
rather than the test run."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

_VOCAB = textwrap.dedent("""
    import json, sys, llama_cpp
    from models.embedded import embedded_model_path
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(embedded_model_path()).encode(), params)
    vocab = llama_cpp.llama_model_get_vocab(model)
""")

_SCRIPT = textwrap.dedent("""
    import threading
    grammars = json.load(sys.stdin)
    made = []
    def build():
        for grammar in grammars:
            made.append(bool(llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")))
    worker = threading.Thread(target=build)  # on a thread, with a thread's stack, as the engine builds them
    worker.start(); worker.join()
    print(json.dumps(made))
""")


def in_llama_process(script: str, payload: object) -> object:
    """What ``script`` (after the embedded model's vocabulary is loaded as ``vocab``) prints last as
    JSON, given ``payload`` as JSON on its stdin; fails the calling test with llama.cpp's stderr if its
    process died."""
    done = subprocess.run(
        [sys.executable, "-c", _VOCAB + script],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def built_by_llama_cpp(grammars: list[str]) -> list[bool]:
    """Whether llama.cpp built each of ``grammars`` over the embedded model's vocabulary."""
    result = in_llama_process(_SCRIPT, grammars)
    assert isinstance(result, list)
    return result
