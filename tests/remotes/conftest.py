"""A real vLLM server (CPU, the same small model) as the remote GPU host, in a network namespace at a
tailnet address, found through a fake tailscaled LocalAPI: ../shared/remote-standin/ (its README says
how each piece behaves). Needs root for the namespace; setup.sh builds vLLM once (about 2 minutes)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

STANDIN = Path(__file__).resolve().parents[2].parent / "shared" / "remote-standin"
NETNS, ADDRESS, PORT = "appl-gpu1", "100.64.0.2", 8000
REMOTE_URL = f"http://{ADDRESS}:{PORT}"


@dataclass
class Standin:
    url: str
    socket: Path

    def netns(self, *args: str) -> None:
        subprocess.run([str(STANDIN / "netns.sh"), *args, NETNS], check=True, capture_output=True, timeout=30)

    def set_peer(self, online: bool) -> None:
        transport = httpx.HTTPTransport(uds=str(self.socket))
        with httpx.Client(transport=transport, timeout=5) as client:
            response = client.post(
                "http://local-tailscaled.sock/fake/v0/peer",
                params={"name": "gpu-box", "online": str(online).lower()},
            )
            response.raise_for_status()

    def pids(self) -> list[int]:
        """The processes of the "remote host" (everything in its namespace)."""
        out = subprocess.run(["ip", "netns", "pids", NETNS], capture_output=True, text=True, check=True)
        return [int(pid) for pid in out.stdout.split()]

    def running(self) -> float:
        """vLLM's requests in flight, from its /metrics."""
        for line in httpx.get(f"{self.url}/metrics", timeout=5).text.splitlines():
            if line.startswith("vllm:num_requests_running"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def run_standin(tmp: Path) -> Iterator[Standin]:
    """vLLM in its namespace and the fake tailscaled, up until the block ends (needs root)."""
    subprocess.run([str(STANDIN / "setup.sh")], check=True, capture_output=True, timeout=900)
    netns = str(STANDIN / "netns.sh")
    subprocess.run([netns, "down", NETNS], capture_output=True, timeout=30)
    subprocess.run([netns, "up", NETNS, ADDRESS], check=True, capture_output=True, timeout=30)
    log = (tmp / "vllm.log").open("wb")
    server = subprocess.Popen([str(STANDIN / "serve-vllm.sh"), "--netns", NETNS, "--port", str(PORT)],
                              stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    socket = tmp / "ts" / "tailscaled.sock"
    socket.parent.mkdir()
    fake = subprocess.Popen(
        [sys.executable, str(STANDIN / "fake-tailscaled.py"), "--socket", str(socket),
         "--peer", f"gpu-box={ADDRESS},tag:gpu", "--peer", "laptop=100.64.0.9,offline,os=macOS"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"vLLM exited: {(tmp / 'vllm.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{REMOTE_URL}/health", timeout=2).status_code == 200 and socket.exists():
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"vLLM did not start: {(tmp / 'vllm.log').read_text()[-2000:]}")
            time.sleep(1)
        yield Standin(REMOTE_URL, socket)
    finally:
        subprocess.run([str(STANDIN / "netns.sh"), "restore", NETNS], capture_output=True, timeout=30)
        _stop(server)
        _stop(fake)
        subprocess.run([str(STANDIN / "netns.sh"), "crash", NETNS], capture_output=True, timeout=30)
        subprocess.run([str(STANDIN / "netns.sh"), "down", NETNS], capture_output=True, timeout=30)


REMOTE_MODEL = "smollm2-135m-instruct"  # the stand-in's name for the model


def config(standin: Standin, routing: str, first_byte_s: float) -> str:
    """A daemon's config.toml with the stand-in as remote gpu-box, found on the (fake) tailnet, serving
    "big-model" (not installed here) under its own name."""
    return f"""
[tailscale]
socket = "{standin.socket}"

[routing]
{routing}

[[remotes]]
name = "gpu-box"
kind = "vllm"
tailscale = {{ hostname = "gpu-box", port = 8000 }}
models = {{ "big-model" = "{REMOTE_MODEL}" }}
timeouts = {{ connect_s = 1, first_byte_s = {first_byte_s:g}, between_chunks_s = 3 }}
"""


def remote_state(daemon: Any) -> dict[str, Any]:
    """The daemon's view of its one remote (GET /appliance/v1/remotes)."""
    data = httpx.get(f"{daemon.url}/appliance/v1/remotes", timeout=10).json()
    return data["remotes"][0]  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standin]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("the remote stand-in needs root and iproute2 for its network namespace")
    with run_standin(tmp_path_factory.mktemp("standin")) as standin:
        yield standin
