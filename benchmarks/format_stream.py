"""What reading a reply as it streams costs each model family's format: the reader parses the whole output
again after every token (appliance.engine.formats.reader), so the cost grows with the reply's length.

    python benchmarks/format_stream.py [--tokens 2000]

A reply of about ``--tokens`` tokens (4 characters each) in each family's own layout: thoughts (where
the family has them) making up most of it, a sentence, then two calls. Prints, per family, the time to
stream it all and the mean and last token's parse time.
"""

from __future__ import annotations

import argparse
import time

from appliance.engine.formats import (
    DeepSeekFormat,
    FunctionaryV31Format,
    FunctionaryV32Format,
    GptOssFormat,
    GraniteFormat,
    HermesFormat,
)
from appliance.engine.formats.base import ChatFormat
from appliance.engine.formats.reader import ReplyReader

ARGS = '{"city": "Saint-\\"Malo\\" été", "where": {"lat": 48.6, "lon": -2.0}}'


def replies(thoughts: str) -> list[tuple[ChatFormat, bool, str]]:
    """(format, whether the prompt opened the thoughts, the reply) for each family."""
    r1_call = (
        "<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
        + ARGS
        + "\n```<｜tool▁call▁end｜>"
    )
    v31_call = "<｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>" + ARGS + "<｜tool▁call▁end｜>"
    oss_call = "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
    hermes_call = '<tool_call>\n{"name": "get_weather", "arguments": ' + ARGS + "}\n</tool_call>"
    granite_call = '{"name": "get_weather", "arguments": ' + ARGS + "}"
    return [
        (
            HermesFormat(thinks=True),
            False,
            f"<think>{thoughts}</think>Let me look.{hermes_call}{hermes_call}",
        ),
        (
            DeepSeekFormat(),
            True,
            f"{thoughts}</think>Let me look.<｜tool▁calls▁begin｜>{r1_call}\n{r1_call}<｜tool▁calls▁end｜>",
        ),
        (
            DeepSeekFormat(v31=True),
            True,
            f"{thoughts}</think>Let me look.<｜tool▁calls▁begin｜>{v31_call}{v31_call}<｜tool▁calls▁end｜>",
        ),
        (
            GptOssFormat(),
            False,
            f"<|channel|>analysis<|message|>{thoughts}<|end|>"
            f"<|start|>assistant<|channel|>commentary<|message|>Let me look.<|end|>{oss_call}{ARGS}",
        ),
        (
            FunctionaryV31Format(),
            False,
            f"{thoughts}<function=get_weather>{ARGS}</function><function=get_weather>{ARGS}</function>",
        ),
        (FunctionaryV32Format(), False, f"all\n{thoughts}>>>get_weather\n{ARGS}>>>get_weather\n{ARGS}"),
        (
            GraniteFormat(),
            False,
            f"<think>{thoughts}</think>Let me look.<|tool_call|>[{granite_call}, {granite_call}]",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2000)
    options = parser.parse_args()
    sentence = "The user asks about the weather in Saint-Malo, so I should call the tool. "
    thoughts = (sentence * (options.tokens * 4 // len(sentence) + 1))[: options.tokens * 4 - 400]
    print(f"{'family':<18} {'chars':>7} {'tokens':>7} {'total s':>8} {'mean us':>8} {'last us':>8}")
    for fmt, inside, reply in replies(thoughts):
        pieces = [reply[i : i + 4] for i in range(0, len(reply), 4)]
        reader = ReplyReader(fmt, thinking=inside, tools=True)
        started = time.perf_counter()
        last_s = 0.0
        for piece in pieces:
            before = time.perf_counter()
            reader.feed(piece)
            last_s = time.perf_counter() - before
        _, calls = reader.finish(cut=False)
        total_s = time.perf_counter() - started
        assert len(calls) == 2 or fmt.name == "gpt-oss", (fmt.name, calls)
        mean_us, last_us = total_s / len(pieces) * 1e6, last_s * 1e6
        print(
            f"{fmt.name:<18} {len(reply):>7} {len(pieces):>7} {total_s:>8.3f} {mean_us:>8.0f} {last_us:>8.0f}"
        )


if __name__ == "__main__":
    main()
