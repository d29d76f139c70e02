"""`appliance plan` and the planner's gate in `appliance serve`, on this machine with real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.cli import main
from models.embedded import embedded_model_path


@pytest.fixture(scope="module")
def model() -> Path:
    path = embedded_model_path()
    assert path is not None
    return path


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("appliance: "), err
    return err[0]


def test_plan_json_fields(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(model), "--json", "--ctx", "2048"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["fits"] is True and data["n_ctx"] == 2048 and data["quant"] == "Q4_1"
    assert data["n_layers"] == 30 and data["kv_type"] == "f16" and data["flash_attn"] is True
    assert data["file"] == str(model)
    memory = data["memory"]
    assert memory["weights_bytes"] > 90 * 2**20 and memory["vram_bytes"] == 0
    assert memory["ram_bytes"] >= memory["weights_bytes"] + memory["kv_bytes"]
    # The estimate's KV cache equals llama.cpp's own figure from the dry run.
    assert data["llama_cpp"]["kv_bytes"] == memory["kv_bytes"] == 45 * 2**20
    assert data["reasons"] and data["alternatives"][0]["fits"] is True


def test_plan_text(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(model)]) == 0
    out = capsys.readouterr().out
    # Memory is plentiful here: the planner gives it 4 slots of 4096 tokens.
    assert "Q4_1, context 16384" in out and "4 parallel slots" in out and "llama.cpp dry run" in out


def test_plan_that_does_not_fit_exits_1(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(model), "--json", "--max-ram", "50MiB"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["fits"] is False
    assert captured.err.startswith("appliance: does not fit")


@pytest.mark.parametrize(
    ("name", "size", "fragment"),
    [
        ("absent.gguf", None, "no such file"),
        ("text.gguf", 0, "not a GGUF file"),
        ("cut.gguf", 4096, "truncated"),
        ("half.gguf", 50 << 20, "truncated GGUF file"),
        ("", None, "no .gguf file"),
    ],
)
def test_plan_bad_input(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    model: Path,
    name: str,
    size: int | None,
    fragment: str,
) -> None:
    target = tmp_path / name
    if size == 0:
        target.write_bytes(b"hello world")
    elif size is not None:
        target.write_bytes(model.read_bytes()[:size])
    assert main(["plan", str(target)]) == 1
    assert fragment in _one_line(capsys)


def test_context_beyond_training(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(model), "--ctx", "100000"]) == 1
    assert "exceeds what" in _one_line(capsys)


def test_bad_size(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(model), "--max-ram", "lots"]) == 1
    assert "not a size" in _one_line(capsys)


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        (["--max-ram", "50MiB"], "does not fit"),
        # No GPU here: a restriction to one is refused, naming the usable ones (none).
        (
            ["--gpus", "3"],
            "GPU 3 cannot be used (--gpus / model.gpus): the GPUs this llama.cpp build can use",
        ),
    ],
)
def test_serve_refuses_what_does_not_fit(model: Path, tmp_path: Path, flags: list[str], reason: str) -> None:
    """Nothing is loaded and the daemon exits 1 with one line when the plan does not fit."""
    result = subprocess.run(
        [sys.executable, "-m", "appliance", "serve", str(model), "--port", "0", *flags],
        capture_output=True,
        text=True,
        timeout=60,
        # PYTHONPATH, where set, so that the daemon runs this checkout's code (a worktree's).
        env={"APPLIANCE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
        | {k: v for k, v in os.environ.items() if k == "PYTHONPATH"},
    )
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"appliance: SmolLM2-135M-Instruct.Q4_1.gguf: {reason}")
    )
    assert "Traceback" not in result.stderr
