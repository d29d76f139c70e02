"""benchmarks/guess_bound.py's replay of a reply under guessing rules (the steps each rule takes), and the
step tables benchmarks/step_cost.py writes for it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.engine_steps import StepTimes
from benchmarks.guess_bound import RULES, Measured, by_request, match_length, replay, replay_engine
from tests.benchmark_scripts import BENCHMARKS

PROMPT = list(range(100, 140))  # 40 tokens, none repeated
REPLY = PROMPT + PROMPT[:30] + [7, 8, 9, 10]  # the reply copies 30 of them, then writes its own


def test_each_rule_replays_the_reply_in_its_steps() -> None:
    start = len(PROMPT)
    plain = replay(REPLY, start, RULES["plain"])
    assert plain == [1] * (len(REPLY) - 1 - start)
    # The third token sampled completes the first repeated 3-gram: all 27 tokens that follow it in the
    # prompt and in the reply are guessed in one step by the oracle; the reply's own tokens go plain.
    assert replay(REPLY, start, RULES["oracle"]) == [1, 1, 28, 1, 1, 1]
    # Guesses of 4: the last one has 2 right (then the reply's own 7); of 8: the reply's last 4 tokens.
    assert replay(REPLY, start, RULES["every match, 4"]) == [1, 1] + [5] * 6 + [1, 1, 1]
    assert replay(REPLY, start, RULES["every match, 8"]) == [1, 1, 9, 9, 9, 5, 1, 1, 1]
    # The match grows a token a step: 8 long five steps after the first 3-gram repeated, 12 long after nine.
    assert replay(REPLY, start, RULES["match of 8+, 8"]) == [1] * 7 + [9, 9, 9, 1, 1, 1]
    assert replay(REPLY, start, RULES["match of 12+, 8"]) == [1] * 11 + [9, 9, 5, 1, 1, 1]


def test_each_request_gets_a_row_against_plain_decoding_and_the_rows_a_mean(
    capsys: pytest.CaptureFixture[str],
) -> None:
    times = Measured({1: 10.0, 2: 12.0, 4: 16.0, 8: 24.0, 16: 40.0, 32: 72.0})
    own = PROMPT + list(range(300, 320))  # a reply that repeats nothing: no rule guesses
    by_request([(1, len(PROMPT), REPLY), (2, len(PROMPT), own)], times, "edit, 2 requests")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "edit, 2 requests" and len(lines) == 6
    assert lines[1] == "| request | oracle | every match, 4 | match of 12+, 16 | the engine's rules |"
    first = [float(cell.strip().rstrip("x")) for cell in lines[3].strip("|").split("|")[1:]]
    assert first[0] > max(first[1:]) >= min(first[1:]) > 1  # the oracle bounds every rule
    assert lines[4] == "| 2 | 1.00x | 1.00x | 1.00x | 1.00x |"
    mean = [float(cell.strip().rstrip("x")) for cell in lines[5].strip("|").split("|")[1:]]
    assert mean[0] == pytest.approx((first[0] + 1) / 2, abs=0.01)


def test_the_match_length_counts_the_tokens_before_the_ngram_that_repeat_too() -> None:
    seen = [1, 2, 3, 4, 5, 9, 2, 3, 4]  # ... 2, 3, 4 again, and 5 sampled after them
    assert match_length(seen, 5, 3) == 4  # 2, 3, 4, 5 repeated: 4 tokens; the 1 before them did not
    assert match_length([1, 2, 3, 4, 5, 1, 2, 3, 4], 5, 3) == 5


def test_the_engines_rules_guess_where_guesses_are_nearly_free_and_not_where_each_costs_a_step() -> None:
    start = len(PROMPT)
    cheap = Measured({1: 10.0, 2: 10.1, 4: 10.2, 8: 10.4, 16: 10.8, 32: 11.6, 64: 13.2})
    assert len(replay_engine(REPLY, start, cheap)) < len(REPLY) - 1 - start
    dear = Measured({1: 10.0, 2: 20.0, 4: 40.0, 8: 80.0, 16: 160.0, 32: 320.0, 64: 640.0})
    assert replay_engine(REPLY, start, dear) == [1] * (len(REPLY) - 1 - start)


def test_step_costs_tables_are_what_the_replays_read(tmp_path: Path) -> None:
    """benchmarks/step_cost.py --json, on the embedded model here, writes the tables that --step-times
    reads (engine_steps.StepTimes): every size, both ways, and the capture."""
    out = tmp_path / "steps.json"
    args = ["--gpu-layers", "0", "--threads", "1", "--repeats", "1", "--sizes", "1,2,5", "--json", str(out)]
    subprocess.run([sys.executable, str(BENCHMARKS / "step_cost.py"), *args], check=True, capture_output=True)
    times = StepTimes(out)
    assert sorted(times.held) == sorted(times.changed) == [1, 2, 5]
    assert all(ms > 0 for ms in [*times.held.values(), *times.changed.values(), times.capture_ms])
    assert times.each_ms([1, 2, 2, 2])[3] == times.held[2]
