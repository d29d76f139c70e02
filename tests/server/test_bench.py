"""`appliance bench` for real: against a running daemon (--url), starting its own server, the table
with ratios from a recorded side-by-side run, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from appliance import cli
from appliance.cli.bench import table
from models.embedded import embedded_model_path
from tests.server.conftest import MODEL_ID, Daemon

BENCH = [sys.executable, "-m", "appliance", "bench"]
RECORDED = Path(__file__).resolve().parents[1] / "fixtures" / "bench" / "appliance-vs-llama-server.json"


def _bench(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    full.update({"APPLIANCE_HOME": str(home), **(env or {})})
    return subprocess.run([*BENCH, *args], capture_output=True, text=True, env=full, timeout=300)


def test_a_running_daemon_is_measured(daemon: Daemon, tmp_path: Path) -> None:
    # Given as an OpenAI base URL (.../v1/), as clients are configured: the server's root is measured.
    done = _bench(
        tmp_path, "--url", f"{daemon.v1}/", "--requests", "3", "--tokens", "8", "--concurrency", "2", "--json"
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["config"] == {
        "url": daemon.url, "tokens": 8, "concurrency": 2, "requests": 3, "prompt": "short",
        "request_timeout_s": 600.0,
    }  # fmt: skip
    result = report["results"][daemon.url]
    assert result["model"] == MODEL_ID  # the first model the daemon lists
    # ignore_eos: every request generates exactly what it asked for, and the usage chunk says so.
    assert result["generated_tokens"] == 24 and result["min_tokens_per_request"] == 8
    assert result["content_chunks"] == 24 and result["errors"] == 0 and result["prompt_tokens"] > 10
    assert result["decode_tok_s"] > 0 and result["aggregate_tok_s"] > 0
    assert 0 < result["ttft_ms_p50"] <= result["ttft_ms_p95"]
    assert 0 < result["itl_ms_p50"] <= result["itl_ms_p95"]


def test_it_starts_a_server_measures_it_and_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    done = _bench(tmp_path, MODEL_ID, "--requests", "2", "--tokens", "8", "--threads", "2", "--out", str(out),
                  "--log-dir", str(tmp_path / "logs"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("model=SmolLM2-135M-Instruct.Q4_1.gguf threads=2 ctx=4096 tokens=8")
    assert "| metric | appliance |" in lines
    assert "| generated tokens (total) | 16 |" in lines and "| errors | 0 |" in lines
    report = json.loads(out.read_text())
    assert report["config"]["model"] == str(embedded_model_path())
    command = report["results"]["appliance"]["command"]
    assert command[1:4] == ["-m", "appliance", "serve"] and "--parallel" in command
    # The appliance's own account of the run: what it guessed and the step times it weighed that with.
    (engine,) = report["results"]["appliance"]["engine"]
    assert engine["id"] and "step_ms" in engine["speculation"] and engine["prompt_cache"]["limit_bytes"] > 0
    assert "step_ms_after_change" in engine["speculation"] and "payoff" in engine["speculation"]
    assert "[appliance] healthy after" in done.stderr
    # The server was stopped, and its log kept.
    (log,) = (tmp_path / "logs").iterdir()
    assert "ready" in log.read_text()


def test_the_table_puts_ours_beside_llama_server_with_ratios() -> None:
    report = json.loads(RECORDED.read_text())  # a real side-by-side run on this machine (docs/BENCHMARKS.md)
    lines = table(report["results"]).splitlines()
    assert lines[0] == "| metric | appliance | llama-server | ours / llama-server |"
    decode = next(line for line in lines if line.startswith("| decode tok/s"))
    ours, reference = (report["results"][n]["decode_tok_s"] for n in ("appliance", "llama-server"))
    assert (
        decode
        == f"| decode tok/s (per stream, p50) | {ours:.1f} | {reference:.1f} | {ours / reference:.2f}x |"
    )
    assert lines[-1] == "| errors | 0 | 0 | - |"
    failed = table({"appliance": report["results"]["appliance"], "llama-server": {"failed": "boom"}})
    assert "| aggregate tok/s | " in failed and "| FAILED | - |" in failed


def test_errors_are_one_line_and_exit_1(
    daemon: Daemon, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = [
        (["--url", "http://127.0.0.1:9", "--requests", "1"], {}, "no server answers at http://127.0.0.1:9"),
        (["no-such-model", "--url", daemon.url, "--requests", "1"], {}, "warm-up request failed: HTTP 404: "),
        (["--url", daemon.url, "--servers", "appliance"], {}, "give one of them"),
        (["--servers", "appliance,vllm"], {}, "unknown server 'vllm'"),
        (["--servers", "appliance-draft"], {}, "the -draft servers need a draft model"),
        (["--servers", "appliance-draft", "--draft", "no-such-draft"], {}, "no such file or installed model"),
        (["--servers", "llama-server"], {"PATH": "/nonexistent"}, "no llama-server on PATH"),
        (["no-such-model"], {}, "no such file or installed model: no-such-model"),
        (["--tokens", "0"], {}, "must be at least 1"),
    ]  # fmt: skip
    # The command's own code, run here: a process each would pay Python's start and our imports again.
    for args, env, expected in cases:
        with monkeypatch.context() as patched:
            for name, value in env.items():
                patched.setenv(name, value)
            assert cli.main(["bench", *args]) == 1, args
        err = capsys.readouterr().err
        last = err.strip().splitlines()[-1]
        assert last.startswith("appliance: ") and expected in last, (args, err)

    # Through the real entry point, whose server it starts exits: the exit status and stderr as users see.
    not_gguf = tmp_path / "broken.gguf"
    not_gguf.write_text("not a model")
    done = _bench(tmp_path, str(not_gguf), "--requests", "1", "--startup-timeout", "60")
    assert done.returncode == 1, (done.stdout, done.stderr)
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("appliance: appliance failed: the server exited with code 1 before it was healthy")
    assert "Traceback" not in done.stderr


def test_the_chat_and_agent_workloads_send_what_they_say(daemon: Daemon) -> None:
    """chat: twice as many conversations as slots, turns round robin, each turn carrying its history
    with the server's own replies; agent: one ~1,500-token system prompt with every task."""
    import asyncio

    import client
    from appliance.bench.load import Load
    from appliance.bench.workloads import run_workload

    def body(messages: list[dict[str, str]]) -> dict[str, object]:
        return {"model": MODEL_ID, "messages": messages, "max_tokens": 6, "temperature": 0,
                "ignore_eos": True, "stream_options": {"include_usage": True}}  # fmt: skip

    async def run(load: Load) -> list[Any]:
        server = client.AsyncDaemonClient(daemon.url, None, timeout_s=120, stream_read_timeout_s=120)
        try:
            return (await run_workload(server, load, body))[0]
        finally:
            await server.close()

    chat = asyncio.run(run(Load(tokens=6, concurrency=1, requests=5, prompt="chat")))
    assert all(r.ok and r.tokens == 6 for r in chat)
    first_turns, second_turns, third = chat[:2], chat[2:4], chat[4]
    # Turn two of each conversation holds turn one and its reply: more tokens than turn one and a reply.
    for one, two in zip(first_turns, second_turns, strict=True):
        assert two.prompt_tokens > one.prompt_tokens + 6
    assert third.prompt_tokens > second_turns[0].prompt_tokens
    agent = asyncio.run(run(Load(tokens=6, concurrency=1, requests=2, prompt="agent")))
    assert all(r.ok for r in agent) and all(r.prompt_tokens > 1000 for r in agent)
