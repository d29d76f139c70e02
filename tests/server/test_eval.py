"""`appliance eval` for real: the built-in golden set answered by the model loaded here and by a daemon
(the same replies), drift between real quantizations of the default model, and one-line errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from appliance import cli
from appliance.cli.eval import builtin_text
from appliance.evaluation.golden import builtin_golden
from models.embedded import embedded_model_path
from tests.benchmark_scripts import load_script
from tests.server.conftest import MODEL_ID, Daemon

EVAL = [sys.executable, "-m", "appliance", "eval"]


def _eval(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env["APPLIANCE_HOME"] = str(home)
    return subprocess.run([*EVAL, *args], capture_output=True, text=True, env=env, timeout=timeout)


def _json(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert done.returncode == 0, done.stderr
    data: dict[str, object] = json.loads(done.stdout)
    return data


@pytest.fixture(scope="module")
def requantized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The default model (Q4_1) requantized by llama.cpp's quantizer to Q8_0 (close to it) and Q2_K
    (far from it): real quantizations of one model, sharing its tokenizer."""
    source = embedded_model_path()
    assert source is not None, "the [default-model] extra is needed"
    out = tmp_path_factory.mktemp("requantized")
    files = {}
    for name in ("Q8_0", "Q2_K"):
        files[name] = out / f"SmolLM2-135M-Instruct.{name}.gguf"
        load_script("make_models").quantize(source, files[name], name, 2, requantize=True)
    return files


def _one_case_of_each_kind(golden: Path) -> list[str]:
    """The lines of ``golden`` that between them ask for everything a case can: the first plain one and
    the first with each of a system prompt, a conversation, a token limit, JSON and a JSON schema."""
    lines = golden.read_text(encoding="utf-8").splitlines()
    kinds: dict[str, str] = {}
    for line in lines:
        case = json.loads(line)
        fmt = case.get("format")
        kind = ("system" if "system" in case else "messages" if "messages" in case
                else "max_tokens" if "max_tokens" in case else "json" if fmt == "json"
                else "schema" if isinstance(fmt, dict) else "plain")  # fmt: skip
        kinds.setdefault(kind, line)
    assert len(kinds) == 6, sorted(kinds)
    return list(kinds.values())


def test_the_golden_set_gets_the_same_replies_here_and_from_the_daemon(
    daemon: Daemon, tmp_path: Path
) -> None:
    # One case of each kind of the built-in set (the whole set would take three times as long and check
    # nothing more: every case goes through the same road).
    lines = builtin_golden().read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 20
    subset = tmp_path / "subset.jsonl"
    subset.write_text("\n".join(_one_case_of_each_kind(builtin_golden())) + "\n", encoding="utf-8")
    served = _json(_eval(tmp_path, MODEL_ID, "--url", daemon.url, "--golden", str(subset), "--json"))
    # The daemon says which file it serves, so the results are kept with that file (appliance list).
    assert served["file"] == str(embedded_model_path()) and served["golden"] == str(subset)
    cases = served["cases"]
    assert isinstance(cases, list) and len(cases) == 6
    passed = sum(c["passed"] for c in cases)
    assert served["passed"] == passed and served["pass_rate"] == passed / len(cases)
    # A real model gets some right and some wrong; a check that passed or failed everything is broken.
    assert 0 < passed < len(cases)
    assert all(c["why"] is None for c in cases if c["passed"])
    assert all(c["why"] for c in cases if not c["passed"])
    assert "kld_mean" not in served

    # Loaded here: greedy decoding through the same engine, template and grammar gives the same
    # replies, reply for reply.
    here = _json(_eval(tmp_path, MODEL_ID, "--golden", str(subset), "--json"))
    assert here["file"] == str(embedded_model_path())
    assert [c["reply"] for c in here["cases"]] == [c["reply"] for c in cases]  # type: ignore[union-attr]


def test_text_output_lists_each_case_then_the_pass_rate(tmp_path: Path) -> None:
    golden = tmp_path / "golden.jsonl"
    golden.write_text(
        '{"id": "paris", "prompt": "What is the capital of France? One word.",'
        ' "expect": {"contains": "Paris"}}\n'
        '{"id": "never", "prompt": "Say hello.", "max_tokens": 8, "expect": {"contains": "xylophone-42"}}\n'
    )
    done = _eval(tmp_path, str(embedded_model_path()), "--golden", str(golden))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"golden set {golden} (2 cases):"
    assert lines[1] == "  pass  paris"
    assert lines[2].startswith("  FAIL  never: 'xylophone-42' missing in ")
    assert lines[3].endswith("1 of 2 golden cases passed, pass rate 0.50")


def test_drift_is_zero_against_itself_and_grows_as_quantization_coarsens(
    requantized: dict[str, Path], tmp_path: Path
) -> None:
    golden = tmp_path / "golden.jsonl"
    golden.write_text('{"prompt": "Say hello.", "max_tokens": 8, "expect": {"regex": "."}}\n')
    # One chunk of 256 tokens of the built-in prose (the whole text is three chunks of 512, six times
    # the work, and would check nothing more here: the scoring is the same).
    words = builtin_text().read_text(encoding="utf-8").split()
    assert len(words) > 1000
    one_chunk = tmp_path / "one-chunk.txt"
    one_chunk.write_text(" ".join(words[:250]))
    drift = ("--against", MODEL_ID, "--golden", str(golden), "--text", str(one_chunk), "--chunk", "256")
    reference = str(embedded_model_path())
    same = _json(_eval(tmp_path, reference, *drift, "--json"))
    assert same["against_file"] == reference and same["chunks"] == 1 and same["tokens"] == 127
    assert same["kld_mean"] == same["kld_max"] == 0.0
    assert same["top1_agreement"] == 1.0 and same["ppl"] == same["ppl_against"]
    ppl = same["ppl"]
    assert isinstance(ppl, float) and 5 < ppl < 100  # English prose under a real 135M chat model

    close = _json(_eval(tmp_path, str(requantized["Q8_0"]), *drift, "--json"))
    assert close["chunks"] == 1 and 0 < close["kld_mean"] < 0.05  # type: ignore[operator]
    assert close["top1_agreement"] < 1.0  # type: ignore[operator]
    assert close["kld_median"] <= close["kld_p99"] <= close["kld_max"]  # type: ignore[operator]

    # The far one as text, which is what people read: its figures are read back from it.
    text = _eval(tmp_path, str(requantized["Q2_K"]), *drift)
    assert text.returncode == 0, text.stderr
    assert (
        "drift against smollm2-135m-instruct (SmolLM2-135M-Instruct.Q4_1.gguf), 127 tokens scored in "
        "1 chunks of 256:" in text.stdout
    )
    figures = re.search(r"KL divergence  mean ([\d.]+), .*\n  top-1 agreement ([\d.]+)%\n"
                        r"  perplexity     ([\d.]+) \(the reference: ([\d.]+)\)", text.stdout)  # fmt: skip
    assert figures is not None, text.stdout
    kld_mean, top1_percent, ppl, ppl_against = (float(figure) for figure in figures.groups())
    assert kld_mean > 0.05 and ppl > ppl_against
    # One token in 127 is 0.8%: the rounding to 0.1% cannot make two different counts equal.
    assert top1_percent < round(100 * close["top1_agreement"], 1)  # type: ignore[operator]
    assert figures.group(4) == f"{close['ppl_against']:.3f}"  # the same reference, scored the same way


def test_errors_are_one_line_and_exit_1(
    daemon: Daemon, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi"}\n')
    short = tmp_path / "short.txt"
    short.write_text("Too short to score.")
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("not a model")
    # Drift is measured after the golden set: one short case, so the text's error comes in seconds.
    tiny = tmp_path / "tiny.jsonl"
    tiny.write_text('{"prompt": "Say hi.", "max_tokens": 2, "expect": {"regex": "."}}\n')
    cases = [
        ([str(not_gguf)], "not a GGUF file"),
        ([MODEL_ID, "--url", "http://127.0.0.1:9"], "no daemon answers at http://127.0.0.1:9"),
        (["no-such-model", "--url", daemon.url], "no-such-model"),
        ([MODEL_ID, "--golden", str(bad)], f"{bad} line 1: expect: Field required"),
        ([MODEL_ID, "--golden", str(tmp_path / "none.jsonl")], "cannot read"),
        ([MODEL_ID, "--against", "no-such-model"], "no such file or installed model: no-such-model"),
        ([MODEL_ID, "--against", MODEL_ID, "--golden", str(tiny), "--text", str(short)],
         "drift needs at least one chunk of 512"),
        ([MODEL_ID, "--against", MODEL_ID, "--chunk", "4"], "--chunk must be at least 16"),
        ([MODEL_ID, "--probe", "--against", MODEL_ID], "--probe runs the probe set alone"),
    ]  # fmt: skip
    # The command's own code, run here: a process each would pay Python's start and our imports nine
    # times over. The real entry point's exit status and stderr are checked once, below.
    for args, expected in cases:
        assert cli.main(["eval", *args]) == 1, args
        err = capsys.readouterr().err
        assert expected in err and len(err.strip().splitlines()) == 1, (args, err)

    done = _eval(tmp_path, "no-such-model")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.startswith("appliance: no such file or installed model: no-such-model")
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
