"""A lazy grammar over the embedded model's real vocabulary (in a process of its own, as llama.cpp
aborts a process it is fed a token its grammar refuses): nothing is constrained until the trigger is
in the output; then the grammar holds, fed the tokens from the one the trigger starts in, including
text of that token that comes before the trigger."""

from __future__ import annotations

import textwrap

from appliance.engine.formats import HermesFormat
from tests.llama_grammars import in_llama_process

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}

_SCRIPT = textwrap.dedent("""
    import ctypes
    job = json.load(sys.stdin)
    from appliance.engine.params import SamplingParams
    from appliance.engine.sampler import new_sampler
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    def piece(token):
        buf = ctypes.create_string_buffer(128)
        n = llama_cpp.llama_token_to_piece(vocab, token, buf, 128, 0, True)
        return buf.raw[:n]
    def tokens(text):
        out = (llama_cpp.llama_token * 256)()
        n = llama_cpp.llama_tokenize(vocab, text.encode(), len(text.encode()), out, 256, False, False)
        return list(out[:n])
    sampling = SamplingParams(grammar=job["gbnf"], grammar_triggers=tuple(job["triggers"]))
    sampler = new_sampler(vocab, n_vocab, sampling, lambda: [])
    report = {"pieces": [], "on_after": []}
    for token in tokens(job["output"]):
        if sampler.lazy is not None:  # as LlamaModel.sample does
            sampler.watch(token, piece(token))
        elif sampler._allows(sampler.grammar, token):  # as Sampler.sample_checked does
            llama_cpp.llama_sampler_accept(sampler.grammar, token)
        else:
            raise SystemExit(f"the grammar refused {piece(token)!r}")
        report["pieces"].append(piece(token).decode("utf-8", "replace"))
        report["on_after"].append(sampler.grammar is not None)
    report["on"] = sampler.grammar is not None
    if report["on"]:
        report["allowed"] = {t: sampler._allows(sampler.grammar, tokens(t)[0]) for t in job["next"]}
    print(json.dumps(report))
""")


def _run(gbnf: str, triggers: tuple[str, ...], output: str, next_texts: list[str]) -> dict:  # type: ignore[type-arg]
    job = {"gbnf": gbnf, "triggers": list(triggers), "output": output, "next": next_texts}
    report = in_llama_process(_SCRIPT, job)
    assert isinstance(report, dict)
    return report


def test_the_grammar_switches_on_at_the_trigger_and_then_holds() -> None:
    grammar = HermesFormat().grammar([WEATHER], "auto", parallel=False)
    assert grammar is not None and grammar.triggers == ("<tool_call>",)
    # " <" is one token of this vocabulary: the trigger starts inside it, after its space.
    report = _run(
        grammar.gbnf, grammar.triggers, 'Sure, I will look. <tool_call>\n{"name": "', ["get", "}", "x"]
    )
    assert " <" in report["pieces"]
    assert report["on"]
    first = report["on_after"].index(True)  # the grammar holds from the token that ends the trigger
    assert "<tool_call>" in "".join(report["pieces"][: first + 1])
    assert "<tool_call>" not in "".join(report["pieces"][:first])
    # Inside the call the grammar allows the tool's name and nothing else.
    assert report["allowed"] == {"get": True, "}": False, "x": False}


def test_no_trigger_no_grammar() -> None:
    grammar = HermesFormat().grammar([WEATHER], "auto", parallel=False)
    assert grammar is not None
    report = _run(grammar.gbnf, grammar.triggers, "It is sunny in Paris <tool but no call.", [])
    assert report["on"] is False
