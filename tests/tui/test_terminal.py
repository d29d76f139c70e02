"""The TUI in a real terminal: tmux at 120x40, the screen read back as text."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.server.conftest import MODEL_ID, Daemon, wait_until


def _screen(session: str) -> str:
    out = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True)
    return out.stdout


def _alive(session: str) -> bool:
    return subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode == 0


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_the_tui_draws_in_a_120x40_terminal_and_quits_on_q(tui_daemon: Daemon, tmp_path: Path) -> None:
    session = f"appliance-{uuid.uuid4().hex[:8]}"
    env = f"APPLIANCE_HOME={tmp_path} TERM=xterm-256color COLORTERM=truecolor"
    command = f"env {env} {sys.executable} -m appliance tui --url {tui_daemon.url}"
    try:
        subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "40", command],
                       check=True, env={**os.environ, "TMUX": ""})  # fmt: skip
        assert wait_until(lambda: MODEL_ID in _screen(session), 30), _screen(session)
        screen = _screen(session)
        assert "llm-appliance" in screen and "Dashboard" in screen and "Models" in screen
        assert "CPU" in screen and "Slots" in screen
        assert len(screen.splitlines()) == 40 and max(len(line) for line in screen.splitlines()) <= 120
        subprocess.run(["tmux", "send-keys", "-t", session, "m"], check=True)
        assert wait_until(lambda: "fits" in _screen(session), 10)
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        assert wait_until(
            lambda: (
                subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode != 0
            ),
            10,
        )
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
