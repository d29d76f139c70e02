"""How much faster prompt-lookup guesses could make a reply at best on a machine, from its step times:
the reply is generated once plain and greedily, then replayed step by step under guessing rules, each
step charged the time of its size. ``oracle`` guesses at every lookup match exactly the tokens that
will be kept (no rule can do better with this lookup); ``every match, k`` guesses k tokens at every
match; ``match of L+, k`` only where the tokens before the lookup's n-gram also repeat, L tokens in all
(llama-server's ngram-simple looks up 12). A rule's reply is plain decoding's here, which the engine's
is only up to llama.cpp's numerics (its logits differ by batch size).

    python benchmarks/guess_bound.py [MODEL] [--prompt edit] [--tokens 256] [--threads 2]
        [--gpu-layers 0] [--step-times benchmarks/steps/h200-smollm2-135m-q4_1.json] [--requests N]

With --requests N, the prompts ``appliance bench`` sends ("Request 1." to "Request N." before the
workload's prompt), one row each: the oracle, two fixed rules and the engine's, against plain.

Without --step-times the steps are measured here (a decode of each size, outputs for all, median of
--repeats), a size change costing nothing; with it, that machine's (benchmarks/engine_steps.StepTimes:
steps right after a size change and capturing a CUDA graph charged apart).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

from appliance.bench.load import PROMPTS
from appliance.engine.batching import BatchingEngine
from appliance.engine.llama import LlamaModel
from appliance.engine.speculation import NgramDrafter
from appliance.engine.tokens import common_prefix

sys.path.insert(0, str(Path(__file__).parent))
from engine_steps import StepTimes, chat_prompt, generate, learned, load_model
from step_cost import SIZES, step_ms

# A rule: (tokens the lookup found, how many of them are right, the match's length) -> tokens to guess.
Rule = Callable[[list[int], int, int], int]


class Measured(StepTimes):
    """This machine's steps by size, a size change costing nothing (on a CPU it costs about 1 ms)."""

    def __init__(self, held: dict[int, float]) -> None:
        self.held = self.changed = held
        self.capture_ms = 0.0

    def ms(self, tokens: int, run: int) -> float:
        return self.line(self.held, tokens)


def plain_reply(model: LlamaModel, prompt: list[int], tokens: int) -> list[int]:
    """The prompt and its greedy reply of ``tokens`` tokens, plain decoding (as the cache holds them: the
    last token sampled is never decoded)."""
    generate(model, BatchingEngine(model), prompt, tokens)
    return model.cached_tokens(0)


def match_length(seen: list[int], at: int, n: int) -> int:
    """How many tokens at ``seen``'s end (and the token sampled after them) repeat those before position
    ``at``, where the lookup's n-gram occurrence ends: the n-gram's own n, and as many before it as
    agree, up to 64."""
    length = n
    while length < 64 and at - 1 - length >= 0 and seen[at - 1 - length] == seen[len(seen) - length]:
        length += 1
    return length


def replay(reply: list[int], start: int, rule: Rule) -> list[int]:
    """The step sizes of generating ``reply[start:]`` with ``rule``'s guesses (the first step, the
    prompt's, left out)."""
    drafter = NgramDrafter(draft_max=64)
    sizes, at = [], start  # reply[at] is the token sampled last, about to be decoded
    while at < len(reply) - 1:
        drafter.sync(reply[:at])
        follows = drafter.occurrence(reply[at])
        found = drafter.lookup(reply[at])
        right = common_prefix(found, reply[at + 1 :])
        length = match_length(reply[:at], follows, drafter.n) if follows is not None else 0
        k = min(rule(found, right, length), len(found), len(reply) - 1 - at) if found else 0
        sizes.append(1 + k)
        at += 1 + min(k, right)
    return sizes


def replay_engine(reply: list[int], start: int, times: StepTimes, draft_max: int = 16) -> list[int]:
    """The step sizes of generating ``reply[start:]`` with the engine's own guesses (one slot, its
    ``NgramDrafter`` deciding from ``times``, learnt beforehand as the engine learns its steps)."""
    cost = learned(times)
    drafter = NgramDrafter(draft_max)
    sizes: list[int] = []
    at = start
    while at < len(reply) - 1:
        drafter.sync(reply[:at])
        guess = drafter.draft(reply[at], len(reply) - 1 - at, cost.price(1, sizes[-1] if sizes else 1))
        right = common_prefix(guess, reply[at + 1 :])
        if guess:
            drafter.feedback(len(guess), right)
        sizes.append(1 + len(guess))
        at += 1 + right
    return sizes


def every(k: int) -> Rule:
    return lambda found, right, length: k


def after_match(least: int, k: int) -> Rule:
    return lambda found, right, length: k if length >= least else 0


RULES: dict[str, Rule] = {
    "plain": every(0),
    "oracle": lambda found, right, length: right,
    **{f"every match, {k}": every(k) for k in (1, 2, 4, 8, 16)},
    **{f"match of {least}+, {k}": after_match(least, k) for least, k in ((8, 8), (12, 8), (12, 16))},
}


def by_request(replies: list[tuple[int, int, list[int]]], times: StepTimes, title: str) -> None:
    """For each (number, prompt length, prompt and reply): the oracle's, two fixed rules' and the engine's
    speed against plain decoding, replayed on that reply; then their means."""
    names = ["oracle", "every match, 4", "match of 12+, 16"]
    print(title)
    print("| request | " + " | ".join([*names, "the engine's rules"]) + " |")
    print("|---" * (len(names) + 2) + "|")
    columns: list[list[float]] = [[] for _ in range(len(names) + 1)]
    for number, start, reply in replies:
        plain = sum(times.each_ms(replay(reply, start, RULES["plain"])))
        runs = [replay(reply, start, RULES[name]) for name in names] + [replay_engine(reply, start, times)]
        for column, sizes in zip(columns, runs, strict=True):
            column.append(plain / sum(times.each_ms(sizes)))
        print(f"| {number} | " + " | ".join(f"{c[-1]:.2f}x" for c in columns) + " |")
    print("| mean | " + " | ".join(f"{statistics.mean(c):.2f}x" for c in columns) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", type=Path, help="a .gguf (default: the embedded model)")
    p.add_argument("--prompt", choices=sorted(PROMPTS), default="edit")
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--gpu-layers", type=int, default=0, help="layers on the GPU (-1: all)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--step-times", type=Path, help="another machine's step times (benchmarks/steps/*.json)")
    p.add_argument("--requests", type=int, help="the bench's prompts 1 to N, a row each")
    a = p.parse_args()
    path, model = load_model(a.model, a.gpu_layers, a.threads)
    try:
        prompt = chat_prompt(model, a.prompt)
        replies = []  # with --requests: each prompt's number, length, and tokens with the reply
        for number in range(1, (a.requests or 0) + 1):
            asked = chat_prompt(model, a.prompt, number)
            replies.append((number, len(asked), plain_reply(model, asked, a.tokens + 1)))
        reply = [] if a.requests else plain_reply(model, prompt, a.tokens + 1)
        if a.step_times:
            times: StepTimes = StepTimes(a.step_times)
        else:
            model.forget()
            model.decode([(0, prompt, 1)])
            filler = prompt[: max(SIZES)]
            times = Measured(
                {n: statistics.median(step_ms(model, filler, n) for _ in range(a.repeats)) for n in SIZES}
            )
    finally:
        model.close()
    where = a.step_times or "this machine"
    if a.requests:
        by_request(
            replies, times, f"{Path(path).name}, prompt {a.prompt!r} after 'Request N.', steps of {where}"
        )
        return
    replayed = len(reply) - len(prompt)
    print(f"{Path(path).name}, prompt {a.prompt!r}: {replayed} tokens replayed, steps of {where}")
    print("step ms by size:", {n: round(ms, 2) for n, ms in times.held.items()})
    print("| rule | steps | ms | vs plain |")
    print("|---|---|---|---|")
    plain_ms = 0.0
    runs = {name: replay(reply, len(prompt), rule) for name, rule in RULES.items()}
    runs["the engine's rules"] = replay_engine(reply, len(prompt), times)
    for name, sizes in runs.items():
        ms = sum(times.each_ms(sizes))
        plain_ms = plain_ms or ms
        print(f"| {name} | {len(sizes)} | {ms:.0f} | {plain_ms / ms:.2f}x |")


if __name__ == "__main__":
    main()
