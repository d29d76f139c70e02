"""`appliance chat` against a real daemon: piped (one message in, the reply out) and interactive in a
real pseudo-terminal (a reply, /clear, /bye), and its one-line errors."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.server.conftest import MODEL_ID, Daemon

CHAT = [sys.executable, "-m", "appliance", "chat"]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "APPLIANCE_HOME": str(tmp_path)}


def test_piped_message_gets_the_reply_on_stdout(daemon: Daemon, tmp_path: Path) -> None:
    done = subprocess.run(
        [*CHAT, MODEL_ID, "--url", daemon.url, "--max-tokens", "12", "--temperature", "0"],
        input="What is the capital of France?", capture_output=True, text=True, env=_env(tmp_path),
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() and done.stderr == ""


def test_errors_are_one_line_and_exit_1(daemon: Daemon, tmp_path: Path) -> None:
    cases = [
        (["no-such-model", "--url", daemon.url], "hello", "no-such-model"),
        (["--url", "http://127.0.0.1:9"], "hello", "no daemon answers at http://127.0.0.1:9"),
        (["--url", daemon.url], "", "stdin was empty"),
        (["--url", daemon.url, "--max-tokens", "0"], "hello", "--max-tokens must be at least 1"),
    ]
    for args, stdin, expected in cases:
        done = subprocess.run([*CHAT, *args], input=stdin, capture_output=True, text=True,
                              env=_env(tmp_path), timeout=60)  # fmt: skip
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert expected in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr


def _read_until(fd: int, marker: bytes, seen: bytearray, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while marker not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                seen += os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
    return marker in seen


@contextlib.contextmanager
def _chat_in_terminal(tmp_path: Path, *args: str) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """`appliance chat ARGS` on a real pseudo-terminal: its master side and the process, killed if the
    test leaves it running."""
    master, slave = os.openpty()
    process = subprocess.Popen([*CHAT, *args], stdin=slave, stdout=slave, stderr=slave, env=_env(tmp_path))
    os.close(slave)
    try:
        yield master, process
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)


def test_interactive_in_a_terminal(daemon: Daemon, tmp_path: Path) -> None:
    seen = bytearray()
    with _chat_in_terminal(tmp_path, "--url", daemon.url, "--max-tokens", "8", "--temperature", "0") as (
        master,
        process,
    ):
        assert _read_until(master, b">>> ", seen), seen.decode(errors="replace")
        assert b"/bye" in seen  # the help line
        seen.clear()
        os.write(master, b"Say hello.\n")
        assert _read_until(master, b">>> ", seen, 120), seen.decode(errors="replace")
        reply = seen.decode(errors="replace").replace("Say hello.", "").replace(">>> ", "").strip()
        assert reply and "error" not in reply, reply
        seen.clear()
        os.write(master, b"/clear\n")
        assert _read_until(master, b"(conversation cleared)", seen)
        os.write(master, b"/bye\n")
        assert process.wait(timeout=30) == 0


def test_interactive_says_how_to_start_over_when_the_context_is_full(daemon: Daemon, tmp_path: Path) -> None:
    seen = bytearray()
    # More tokens asked for than the context holds (4096 a slot; under server.max_tokens_cap, 32768, which
    # would refuse first): the same error a conversation grown too long gets.
    with _chat_in_terminal(tmp_path, "--url", daemon.url, "--max-tokens", "30000") as (master, process):
        assert _read_until(master, b">>> ", seen), seen.decode(errors="replace")
        seen.clear()
        os.write(master, b"Say hello.\n")
        assert _read_until(master, b"/clear starts a new conversation", seen, 60), seen.decode(
            errors="replace"
        )
        assert b"maximum context length" in seen
        os.write(master, b"/bye\n")
        assert process.wait(timeout=30) == 0
