"""Where a generation's time goes, step by step, in process (no server, no HTTP): the batching engine
generates one reply plain and with prompt-lookup guesses, and each step is timed with its size (tokens
decoded) and whether that size differs from the step before's (llama.cpp then builds its graph anew, and
its CUDA backend runs the new graph without a captured CUDA graph: benchmarks/step_cost.py measures
that alone). One engine each, kept from reply to reply as the daemon keeps it, after a first reply
not counted; runs alternate and repeat; the median run is printed with its steps by size.

    python benchmarks/engine_steps.py [MODEL] [--prompt edit|short|long] [--tokens 256] [--repeats 3]
        [--gpu-layers -1] [--threads 8] [--step-times FILE.json] [--no-payoff] [--json OUT.json]
    python benchmarks/engine_steps.py --requests 10 --tokens 192 --gpu-layers 0 --threads 2

With --requests N, the prompts ``appliance bench`` sends instead ("Request 1." to "Request N." before
the workload's prompt: each has its own reply), each generated once plain and once with guesses, timed
without the prompt's step; with the token where the guessed reply first differs from plain decoding's
(llama.cpp's batch numerics at a near tie: on a GPU a step of several tokens runs other kernels), and
the guessed steps' times by size and place in their run of one size.

With --step-times (benchmarks/steps/*.json: another machine's step times from step_cost.py), each step
is charged that machine's time for its size instead of this one's (at a held size, right after a size
change, or capturing: the second step of a size), and the engine learns those: its decisions there, with
the real model and its real guesses here (run the model on the CPU: --gpu-layers 0).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from appliance.bench.load import PROMPTS
from appliance.engine.batching import BatchingEngine
from appliance.engine.jobs import GenerationJob, JobStream
from appliance.engine.llama import LlamaModel
from appliance.engine.params import LoadOptions, SamplingParams
from appliance.engine.speculation import StepCost
from appliance.engine.tokens import common_prefix
from models.embedded import embedded_model_path


class StepTimes:
    """Another machine's step times by size (a --step-times file), read off the line between the sizes
    given."""

    def __init__(self, path: Path) -> None:
        data = json.loads(path.read_text())
        self.held = {int(n): ms for n, ms in data["held_ms"].items()}
        self.changed = {int(n): ms for n, ms in data["changed_ms"].items()}
        self.capture_ms = float(data["capture_ms"])

    @staticmethod
    def line(table: dict[int, float], tokens: int) -> float:
        """The milliseconds of ``tokens`` in ``table``: as given, or on the line between the sizes around
        (the nearest size's beyond them)."""
        sizes = sorted(table)
        below = max((n for n in sizes if n <= tokens), default=sizes[0])
        above = min((n for n in sizes if n >= tokens), default=sizes[-1])
        if below == above:
            return table[below]
        return table[below] + (table[above] - table[below]) * (tokens - below) / (above - below)

    def ms(self, tokens: int, run: int) -> float:
        """What a step of ``tokens`` takes there as the ``run``-th of that size in a row: right after a
        size change (1), capturing the CUDA graph (2), or replaying it."""
        if run <= 1:
            return self.line(self.changed, tokens)
        return self.capture_ms if run == 2 else self.line(self.held, tokens)

    def each_ms(self, sizes: list[int]) -> list[float]:
        """What steps of these sizes, one after the other, take there."""
        out, before, run = [], 0, 0
        for size in sizes:
            run = run + 1 if size == before else 1
            out.append(self.ms(size, run))
            before = size
        return out


class Charged(StepCost):
    """The engine's step costs learned from ``times`` in place of this machine's (and counted so in its
    books of whether guesses pay: appliance.engine.payoff)."""

    def __init__(self, times: StepTimes) -> None:
        super().__init__()
        self.times = times

    def clock(self, tokens: int, seconds: float, run: int = StepCost.HELD) -> float:
        return self.times.ms(tokens, run) / 1000


def learned(times: StepTimes, cost: StepCost | None = None) -> StepCost:
    """``cost`` (default: a new StepCost) once it has learnt every size of ``times`` at each place in a
    run (right after a change, capturing, held), as an engine has after enough steps there."""
    cost = cost if cost is not None else StepCost()
    for _ in range(StepCost.TRUSTED):
        for run in (1, 2, StepCost.HELD):
            for tokens in times.held.keys() | times.changed.keys():
                cost.add(tokens, times.ms(tokens, run) / 1000, run)
    return cost


@contextmanager
def step_sizes(model: Any) -> Iterator[list[int]]:
    """The size (tokens) of each decode ``model`` makes inside the block, in order."""
    sizes: list[int] = []
    decode = model.decode

    def counted(entries: list[tuple[int, list[int], int]], **kw: Any) -> list[int]:
        sizes.append(sum(len(t) for _, t, _ in entries))
        return decode(entries, **kw)

    model.decode = counted
    try:
        yield sizes
    finally:
        del model.decode


def generate(
    model: Any, engine: BatchingEngine, prompt: list[int], tokens: int, times: StepTimes | None = None
) -> dict[str, Any]:
    """One greedy reply of ``tokens`` tokens from ``engine`` (kept between replies, as the daemon keeps
    it: what it learned of the steps stays): seconds, and each step's size and milliseconds (the whole
    step: decode, sampling, the guesses' checks; with ``times``, that machine's time for the step)."""
    loop = asyncio.new_event_loop()
    model.forget()
    steps: list[tuple[int, float]] = []
    before_guessed, before_kept = engine.speculated.get("ngram", (0, 0))
    try:
        with step_sizes(model) as sizes:
            sampling = SamplingParams(temperature=0.0, ignore_eos=True)
            engine.start(GenerationJob(JobStream(loop), prompt, sampling, tokens))
            started = time.perf_counter()
            while engine.active:
                before = time.perf_counter()
                engine.step()
                steps.append((sizes[-1], (time.perf_counter() - before) * 1000))
            seconds = time.perf_counter() - started
        if times is not None:  # that machine's times in place of this one's
            steps = list(zip(sizes, times.each_ms(sizes), strict=True))
            seconds = sum(ms for _, ms in steps[1:]) / 1000
    finally:
        loop.close()
    reply = model.cached_tokens(0)[len(prompt) :]  # what was generated (the last token may be undecoded)
    guessed, kept = engine.speculated.get("ngram", (0, 0))
    learned = {n: round(s * 1000, 3) for n, s in engine.step_cost.table().items()}
    changed = {n: round(s * 1000, 3) for n, s in engine.step_cost.changed_table().items()}
    return {
        "seconds": seconds,
        "steps": steps,
        "reply": reply,
        "guessed": guessed - before_guessed,
        "kept": kept - before_kept,
        "learned_ms": learned,
        "after_change_ms": changed,
    }


def by_size(steps: list[tuple[int, float]]) -> dict[int, dict[str, list[float]]]:
    """Each size's step times, split by whether the step before had the same size (the first step, the
    prompt's, left out)."""
    out: dict[int, dict[str, list[float]]] = defaultdict(lambda: {"same": [], "changed": []})
    for (before, _), (size, ms) in itertools.pairwise(steps):
        out[size]["same" if size == before else "changed"].append(ms)
    return dict(sorted(out.items()))


def load_model(path: Path | None, gpu_layers: int, threads: int) -> tuple[Path, LlamaModel]:
    """The model at ``path`` (default: the embedded one) loaded as the benchmarks load it."""
    path = path or embedded_model_path()
    if path is None:
        raise SystemExit("give a model, or install the [default-model] extra")
    options = LoadOptions(
        n_gpu_layers=gpu_layers, n_ctx=4096, flash_attn="on", n_threads=threads, n_threads_batch=threads
    )
    return Path(path), LlamaModel(Path(path), options)


def chat_prompt(model: LlamaModel, name: str, number: int | None = None) -> list[int]:
    """The tokens of the workload prompt ``name`` as a user's chat turn (the default model's template);
    with ``number``, "Request {number}." before it, as ``appliance bench`` sends it."""
    content = PROMPTS[name]() if number is None else f"Request {number}. {PROMPTS[name]()}"
    text = f"<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n"
    return model.tokenize(text, add_special=True, parse_special=True)


def by_place(steps: list[tuple[int, float]]) -> dict[int, list[list[float]]]:
    """Each size's step times by the step's place in its run of one size: right after a change, the step
    after (where llama.cpp's CUDA backend captures its graph), and held (the first step, the prompt's,
    left out)."""
    out: dict[int, list[list[float]]] = defaultdict(lambda: [[], [], []])
    run, before = 0, None
    for size, ms in steps[1:]:
        run = run + 1 if size == before else 1
        before = size
        out[size][min(run, 3) - 1].append(ms)
    return dict(sorted(out.items()))


def decode_ms(result: dict[str, Any]) -> float:
    """A reply's milliseconds without its first step (the prompt's)."""
    return sum(ms for _, ms in result["steps"][1:])


def by_request(model: Any, engines: dict[str, BatchingEngine], a: argparse.Namespace, times: Any) -> None:
    """Each of the bench's prompts 1 to ``a.requests``, plain and with guesses, one after the other."""
    print(f"prompt {a.prompt!r} after 'Request N.', {a.tokens} tokens a reply, decode time (no prompt step)")
    head = ["plain ms", "guesses ms", "guesses / plain speed", "steps", "size changes", "guessed", "kept"]
    print("| request | " + " | ".join(head) + " | differs from plain at |")
    print("|---|---|---|---|---|---|---|---|---|")
    ratios, guessed, kept = [], 0, 0
    places: dict[int, list[list[float]]] = defaultdict(lambda: [[], [], []])  # over all guessed replies
    for number in range(1, a.requests + 1):
        prompt = chat_prompt(model, a.prompt, number)
        plain = generate(model, engines["plain"], prompt, a.tokens, times)
        guesses = generate(model, engines["guesses"], prompt, a.tokens, times)
        plain_ms, guesses_ms = decode_ms(plain), decode_ms(guesses)
        ratios.append(plain_ms / guesses_ms)
        guessed, kept = guessed + guesses["guessed"], kept + guesses["kept"]
        changes = sum(1 for (a, _), (b, _) in itertools.pairwise(guesses["steps"][1:]) if a != b)
        for size, times_by_place in by_place(guesses["steps"]).items():  # each reply's runs apart
            for into, times_at in zip(places[size], times_by_place, strict=True):
                into += times_at
        # Batch numerics: a step of several tokens may pick another token at a near tie (docs/CONFIG.md).
        differs = common_prefix(plain["reply"], guesses["reply"])
        cells = [f"{plain_ms:.0f}", f"{guesses_ms:.0f}", f"{ratios[-1]:.2f}x", len(guesses["steps"]), changes]
        cells += [guesses["guessed"], guesses["kept"], f"{differs} of {len(plain['reply'])}"]
        print(f"| {number} | " + " | ".join(map(str, cells)) + " |")
    print(
        f"median {statistics.median(ratios):.2f}x, range {min(ratios):.2f}x-{max(ratios):.2f}x; "
        f"{guessed} tokens guessed, {kept} kept"
    )
    print("\nwith guesses, steps by size (median ms; count) by their place in a run of one size")
    print("| size | right after a change | second (CUDA graph capture) | held |")
    print("|---|---|---|---|")
    for size, at in sorted(places.items()):
        print(
            f"| {size} | "
            + " | ".join(f"{statistics.median(t):.2f} ({len(t)})" if t else "" for t in at)
            + " |"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", type=Path, help="a .gguf (default: the embedded model)")
    p.add_argument("--prompt", choices=sorted(PROMPTS), default="edit")
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--draft-max", type=int, default=16)
    p.add_argument("--gpu-layers", type=int, default=-1, help="layers on the GPU (-1: all; 0 on a CPU)")
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--step-times", type=Path, help="another machine's step times (benchmarks/steps/*.json)")
    p.add_argument("--no-payoff", action="store_true", help="guess wherever priced to pay, without the books")
    p.add_argument("--requests", type=int, help="the bench's prompts 1 to N, each once (see above)")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    times = StepTimes(a.step_times) if a.step_times else None
    path, model = load_model(a.model, a.gpu_layers, a.threads)
    try:
        prompt = chat_prompt(model, a.prompt)
        engines = {"plain": BatchingEngine(model), "guesses": BatchingEngine(model, draft_max=a.draft_max)}
        for engine in engines.values():
            if times is not None:
                engine.step_cost = Charged(times)
            if a.no_payoff:
                engine.payoff = None
        warm = chat_prompt(model, "short")
        for engine in engines.values():  # a first reply, not counted (the engine learns its steps)
            generate(model, engine, warm, 64, times)
        if a.requests:
            by_request(model, engines, a, times)
            return
        runs: dict[str, list[dict[str, Any]]] = {"plain": [], "guesses": []}
        for _ in range(a.repeats):
            for name, engine in engines.items():
                runs[name].append(generate(model, engine, prompt, a.tokens, times))
    finally:
        model.close()
    report: dict[str, Any] = {}
    print(f"{Path(path).name}, prompt {a.prompt!r} ({len(prompt)} tokens), {a.tokens} tokens a reply")
    if times is not None:
        print(f"step times charged from {a.step_times} (this machine's own times not counted)")
    print("| run | tok/s (median run) | steps | guessed | kept | seconds of each run |")
    print("|---|---|---|---|---|---|")
    for name, results in runs.items():
        median = sorted(results, key=lambda r: r["seconds"])[len(results) // 2]
        report[name] = {**median, "runs": [round(r["seconds"], 3) for r in results]}
        cells = [
            f"{a.tokens / median['seconds']:.1f}",
            len(median["steps"]),
            median["guessed"],
            median["kept"],
        ]
        print(f"| {name} | " + " | ".join(map(str, cells)) + f" | {report[name]['runs']} |")
    for name, row in report.items():
        print(f"\n{name}: steps by size (median ms; count), after a step of the same size / of another")
        print("| size | same | changed |")
        print("|---|---|---|")
        for size, split in by_size(row["steps"]).items():
            cells = [f"{statistics.median(t):.2f} ({len(t)})" if t else "" for t in split.values()]
            print(f"| {size} | " + " | ".join(cells) + " |")
        if row["learned_ms"]:
            print(
                f"learned by the engine (ms): {row['learned_ms']}; after a change: {row['after_change_ms']}"
            )
    if a.json:
        a.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
