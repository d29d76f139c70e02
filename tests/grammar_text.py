"""Whether llama.cpp's own grammar sampler lets a model write a given text, token by token over the
embedded model's vocabulary, and then end it: the family formats' tool-call grammars checked against
the replies they are meant to allow (and ones they must refuse). In a process of its own, as in
tests/llama_grammars.py: llama.cpp aborts its process on some grammar errors."""

from __future__ import annotations

import textwrap

from tests.llama_grammars import in_llama_process

_SCRIPT = textwrap.dedent("""
    import ctypes, math
    cases = json.load(sys.stdin)
    one = (llama_cpp.llama_token_data * 1)()
    array = llama_cpp.llama_token_data_array(ctypes.cast(one, llama_cpp.llama_token_data_p), 1, -1, False)

    def allows(sampler, token):
        one[0].id, one[0].logit, one[0].p = token, 1.0, 0.0
        array.size, array.selected, array.sorted = 1, -1, False
        llama_cpp.llama_sampler_apply(sampler, ctypes.byref(array))
        return one[0].logit != -math.inf

    def tokens(text):
        data = text.encode()
        out = (llama_cpp.llama_token * (len(data) + 8))()
        n = llama_cpp.llama_tokenize(vocab, data, len(data), out, len(out), False, False)
        return list(out[:n])

    results = []
    for grammar, text in cases:
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
        ok = bool(sampler)
        for token in tokens(text) if ok else []:
            if not allows(sampler, token):
                ok = False
                break
            llama_cpp.llama_sampler_accept(sampler, token)
        # The text must be a whole reply: the grammar then lets the model end it.
        results.append(ok and allows(sampler, llama_cpp.llama_vocab_eos(vocab)))
    print(json.dumps(results))
""")


def allowed_by_llama_cpp(cases: list[tuple[str, str]]) -> list[bool]:
    """For each (grammar, text): whether llama.cpp's grammar sampler lets the embedded model's
    vocabulary write exactly ``text`` (tokenized as plain text) and stop there."""
    result = in_llama_process(_SCRIPT, cases)
    assert isinstance(result, list)
    return result
