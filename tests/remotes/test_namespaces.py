"""Two runs of the remote tests on one machine: a second run (another process) gets a namespace and an
address of its own while this run's stand-in keeps serving, removes the namespace a dead run left behind,
and takes its own away when done."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests import web
from tests.remotes.conftest import NETNS_SH, Namespace, Standin, free_address

ROOT = Path(__file__).resolve().parents[2]
# Holds a namespace as another run would, until its stdin closes.
SECOND_RUN = """
import json, sys
from tests.remotes.conftest import namespace
with namespace("gpu") as ns:
    print(json.dumps([ns.name, ns.address]), flush=True)
    sys.stdin.read()
"""


def _namespaces() -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in listed.splitlines() if line.strip()]


def test_a_second_run_gets_its_own_namespace_and_removes_a_dead_runs(standin: Standin) -> None:
    dead = Namespace("agpu-4194305", free_address())  # above any pid_max: its run is surely gone
    subprocess.run([NETNS_SH, "up", dead.name, dead.address], check=True, capture_output=True, timeout=60)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    second = subprocess.Popen([sys.executable, "-c", SECOND_RUN], cwd=ROOT, env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert second.stdout is not None and second.stdin is not None
        name, address = json.loads(second.stdout.readline())
        assert name == f"agpu-{second.pid}" and address != standin.namespace.address
        assert dead.name not in _namespaces() and name in _namespaces()
        assert web.get(f"{standin.url}/health", timeout=10).status_code == 200
        second.stdin.close()
        assert second.wait(60) == 0
    finally:
        second.kill()
        dead.run("down", check=False)
    assert name not in _namespaces() and standin.namespace.name in _namespaces()
    assert web.get(f"{standin.url}/health", timeout=10).status_code == 200
