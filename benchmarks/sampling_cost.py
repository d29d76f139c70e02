"""What picking one token costs on this CPU, per call, on the embedded model's logits (a 49,152-token
vocabulary): llama.cpp's llama_sampler_sample for a greedy chain and for the default chain at a
temperature, and the appliance's numpy pick for greedy chains (appliance.engine.sampler.Greedy).

    python benchmarks/sampling_cost.py [--calls 2000] [--threads 2]

On a GPU a small model's decode step is ~1.3 ms, so what the CPU spends choosing each token is a visible
part of every token's time (docs/BENCHMARKS.md, "NVIDIA H200").
"""

from __future__ import annotations

import argparse
import time

import llama_cpp

from appliance.engine.llama import LlamaModel
from appliance.engine.params import LoadOptions, SamplingParams
from models.embedded import embedded_model_path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    path = embedded_model_path()
    if path is None:
        raise SystemExit("the [default-model] extra is needed")
    model = LlamaModel(
        path, LoadOptions(n_ctx=1024, n_seq_max=1, n_threads=a.threads, n_threads_batch=a.threads)
    )
    prompt = model.tokenize("<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n", add_special=True,
                            parse_special=True)  # fmt: skip
    index = model.decode([(0, prompt, 1)])[0]
    cases = [
        ("greedy, ignore_eos", SamplingParams(temperature=0.0, ignore_eos=True)),
        ("temperature 0.8, top_k/top_p/min_p", SamplingParams(temperature=0.8, seed=1)),
    ]
    print(f"{model.n_vocab} tokens in the vocabulary, {a.calls} calls each")
    for name, params in cases:
        sampler = model.new_sampler(params)
        started = time.perf_counter()
        for _ in range(a.calls):
            llama_cpp.llama_sampler_sample(sampler.chain, model._ctx, index)
        print(f"llama_sampler_sample, {name}: {(time.perf_counter() - started) / a.calls * 1e6:.1f} us")
        if sampler.greedy is not None:
            started = time.perf_counter()
            for _ in range(a.calls):
                sampler.greedy.pick(llama_cpp.llama_get_logits_ith(model._ctx, index))
            print(f"numpy pick (Greedy), {name}: {(time.perf_counter() - started) / a.calls * 1e6:.1f} us")
        model.free_sampler(sampler)
    model.close()


if __name__ == "__main__":
    main()
