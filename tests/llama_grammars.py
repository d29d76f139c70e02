"""Grammars built by llama.cpp itself, in a process of its own, for the tests that check what the engine
lets through: a grammar that overflows llama.cpp's stack kills its process, which then fails the test
rather than the test run."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# The start of a script that has the embedded model's vocabulary (only) as ``vocab``, and its input as
# ``job`` (JSON on stdin).
VOCAB_SCRIPT = textwrap.dedent("""
    import json, sys, llama_cpp
    from models.embedded import embedded_model_path
    job = json.load(sys.stdin)
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(embedded_model_path()).encode(), params)
    vocab = llama_cpp.llama_model_get_vocab(model)
""")

_SCRIPT = VOCAB_SCRIPT + textwrap.dedent("""
    import threading
    grammars = job
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
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        input=json.dumps(grammars),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: list[bool] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
