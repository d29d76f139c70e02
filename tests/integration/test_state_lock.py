"""One daemon per state directory: a second `appliance serve` on the same home refuses to start, before
loading anything, whatever its port; commands that only read the store still work; a daemon killed with
SIGKILL leaves no stale lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.server.conftest import free_port, start_daemon, stop_daemon


def _appliance(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env["APPLIANCE_HOME"] = str(home)
    command = [sys.executable, "-m", "appliance", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def test_a_second_daemon_on_the_same_home_refuses_to_start(tmp_path: Path) -> None:
    home, other = tmp_path / "home", tmp_path / "other"
    home.mkdir()
    other.mkdir()
    first = start_daemon(home, "--parallel", "1", "--ctx", "2048")
    try:
        second = _appliance(home, "serve", "--port", str(free_port()))
        assert second.returncode == 1
        data = home / "data"
        assert second.stderr == (
            f"appliance: another appliance daemon (pid {first.process.pid}) is running on this state "
            f"directory ({data}); stop it first\n"
        )
        assert second.stdout == ""  # nothing detected, planned or loaded before it refused
        listed = _appliance(home, "list", "--json")
        assert listed.returncode == 0 and '"name": "smollm2-135m-instruct"' in listed.stdout
        beside = start_daemon(other, "--parallel", "1", "--ctx", "2048")  # another home: starts
        stop_daemon(beside)
    finally:
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
    # The killed daemon's lock went with its process: the next one starts on the same home.
    assert (home / "data" / "daemon.lock").exists()
    again = start_daemon(home, "--parallel", "1", "--ctx", "2048")
    stop_daemon(again)
    assert again.process.returncode == 0
