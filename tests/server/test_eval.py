"""`appliance eval` for real: the built-in golden set answered by the model loaded here and by a daemon
(the same replies), drift between real quantizations of the default model, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_the_golden_set_gets_the_same_replies_here_and_from_the_daemon(
    daemon: Daemon, tmp_path: Path
) -> None:
    here = _json(_eval(tmp_path, MODEL_ID, "--json"))
    served = _json(_eval(tmp_path, MODEL_ID, "--url", daemon.url, "--json"))
    assert here["file"] == str(embedded_model_path()) and served["file"] is None
    cases = here["cases"]
    assert isinstance(cases, list) and len(cases) >= 20
    passed = sum(c["passed"] for c in cases)
    assert here["passed"] == passed and here["pass_rate"] == passed / len(cases)
    # A real model gets some right and some wrong; a check that passed or failed everything is broken.
    assert 0 < passed < len(cases)
    assert all(c["why"] is None for c in cases if c["passed"])
    assert all(c["why"] for c in cases if not c["passed"])
    # Greedy decoding through the same engine, template and grammar: the same replies, reply for reply.
    assert [c["reply"] for c in cases] == [c["reply"] for c in served["cases"]]  # type: ignore[union-attr]
    assert "kld_mean" not in here


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
    reference = str(embedded_model_path())
    same = _json(_eval(tmp_path, MODEL_ID, "--against", reference, "--golden", str(golden), "--json"))
    assert same["against_file"] == reference and same["chunks"] == 3 and same["tokens"] == 3 * 255
    assert same["kld_mean"] == same["kld_max"] == 0.0
    assert same["top1_agreement"] == 1.0 and same["ppl"] == same["ppl_against"]
    ppl = same["ppl"]
    assert isinstance(ppl, float) and 5 < ppl < 100  # English prose under a real 135M chat model

    # The requantized pair is scored on one shorter chunk of the same prose: enough to tell them apart,
    # at a sixth of the time.
    words = (Path(str(same["text"])).read_text(encoding="utf-8")).split()
    one_chunk = tmp_path / "one-chunk.txt"
    one_chunk.write_text(" ".join(words[:250]))
    drift = ("--against", MODEL_ID, "--golden", str(golden), "--text", str(one_chunk), "--chunk", "256")
    close = _json(_eval(tmp_path, str(requantized["Q8_0"]), *drift, "--json"))
    far = _json(_eval(tmp_path, str(requantized["Q2_K"]), *drift, "--json"))
    assert close["chunks"] == far["chunks"] == 1
    assert close["ppl_against"] == far["ppl_against"]  # the same reference, scored the same way
    assert 0 < close["kld_mean"] < 0.05 < far["kld_mean"]  # type: ignore[operator]
    assert far["top1_agreement"] < close["top1_agreement"] < 1.0  # type: ignore[operator]
    assert far["ppl"] > far["ppl_against"]  # type: ignore[operator]
    assert close["kld_median"] <= close["kld_p99"] <= close["kld_max"]  # type: ignore[operator]

    text = _eval(tmp_path, str(requantized["Q2_K"]), *drift)
    assert text.returncode == 0, text.stderr
    assert "drift against smollm2-135m-instruct (SmolLM2-135M-Instruct.Q4_1.gguf)" in text.stdout
    assert "chunks of 256" in text.stdout and "top-1 agreement" in text.stdout


def test_errors_are_one_line_and_exit_1(daemon: Daemon, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi"}\n')
    short = tmp_path / "short.txt"
    short.write_text("Too short to score.")
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("not a model")
    cases = [
        (["no-such-model"], "no such file or installed model: no-such-model"),
        ([str(not_gguf)], "not a GGUF file"),
        ([MODEL_ID, "--url", "http://127.0.0.1:9"], "no daemon answers at http://127.0.0.1:9"),
        (["no-such-model", "--url", daemon.url], "no-such-model"),
        ([MODEL_ID, "--golden", str(bad)], f"{bad} line 1: expect: Field required"),
        ([MODEL_ID, "--golden", str(tmp_path / "none.jsonl")], "cannot read"),
        ([MODEL_ID, "--against", "no-such-model"], "no such file or installed model: no-such-model"),
        ([MODEL_ID, "--against", MODEL_ID, "--text", str(short)], "drift needs at least one chunk of 512"),
        ([MODEL_ID, "--against", MODEL_ID, "--chunk", "4"], "--chunk must be at least 16"),
        ([MODEL_ID, "--probe", "--against", MODEL_ID], "--probe runs the probe set alone"),
    ]
    for args, expected in cases:
        done = _eval(tmp_path, *args)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert expected in done.stderr and len(done.stderr.strip().splitlines()) == 1, (args, done.stderr)
        assert "Traceback" not in done.stderr
