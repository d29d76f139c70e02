"""A real vLLM server (CPU, the same small model) as the remote GPU host, in a network namespace at a
tailnet address, found through a fake tailscaled LocalAPI: ../shared/remote-standin/ (its README says
how each piece behaves). Needs root for the namespace; setup.sh builds vLLM once (about 2 minutes).

Each run's namespaces are its own (named after the pytest process, at addresses no other namespace
holds), so two runs on one machine (two clones, CI and a developer) never touch each other's; those of
an earlier run that died without cleaning up are removed when the next one starts."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import web
from tests.server.conftest import Daemon, start_daemon, stop_daemon, wait_until

STANDIN = Path(__file__).resolve().parents[2].parent / "shared" / "remote-standin"
NETNS_SH = str(STANDIN / "netns.sh")
PORT = 8000
# Ours: "agpu-PID", "abox-PID" (netns.sh allows 12 characters: its host link is "vh-NAME", and a link
# name has at most 15). The fixed names of older checkouts ("appl-gpu1") are left alone.
_OURS = re.compile(r"^a(gpu|box)-(\d+)$")
# Addresses from 100.64.1.1 up: 100.64.0.0/24 is the README's and older checkouts' (.1 the host side,
# shared by every namespace, .2 and .3 the fixed remotes).
_FIRST_ADDRESS = ipaddress.IPv4Address("100.64.1.1")
_LOCK = Path(tempfile.gettempdir()) / "llm-appliance-test-netns.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale() -> None:
    """The namespaces of runs whose process is gone (a crash, a kill -9): their processes killed, the
    namespace, its link and routes removed."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    for name in (line.split()[0] for line in listed.splitlines() if line.strip()):
        match = _OURS.match(name)
        if match is not None and not _alive(int(match.group(2))):
            subprocess.run([NETNS_SH, "crash", name], capture_output=True, timeout=60)
            subprocess.run([NETNS_SH, "down", name], capture_output=True, timeout=60)


def free_address() -> str:
    """The first address from _FIRST_ADDRESS that no route on this machine names (a namespace of
    netns.sh leaves two: the link's and an ``unreachable`` fallback)."""
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True,
                            check=True).stdout  # fmt: skip
    used = set(re.findall(r"\b\d+\.\d+\.\d+\.\d+\b", routes))
    address = _FIRST_ADDRESS
    while str(address) in used or str(address).endswith((".0", ".255")):
        address += 1
    return str(address)


@dataclass(frozen=True)
class Namespace:
    """A network namespace of this run, playing a remote host at ``address`` (netns.sh)."""

    name: str
    address: str

    def run(self, *args: str, check: bool = True) -> None:
        """``netns.sh ARGS... NAME`` (cut, restore, crash, down)."""
        subprocess.run([NETNS_SH, *args, self.name], check=check, capture_output=True, timeout=60)


@contextlib.contextmanager
def namespace(role: str) -> Iterator[Namespace]:
    """This run's namespace for ``role`` ("gpu" or "box") at a free address, up until the block ends;
    then every process in it killed and the namespace removed. Stale ones are removed first. Address
    choice and creation happen under a lock, so two runs starting together pick different addresses."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("a remote's network namespace needs root and iproute2")
    with _LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _remove_stale()
        created = Namespace(f"a{role}-{os.getpid()}", free_address())
        created.run("down", check=False)  # this process's own, if an earlier fixture left it
        subprocess.run([NETNS_SH, "up", created.name, created.address], check=True, capture_output=True,
                       timeout=60)  # fmt: skip
    try:
        yield created
    finally:
        created.run("restore", check=False)
        created.run("crash", check=False)
        created.run("down", check=False)


@dataclass
class Standin:
    url: str
    socket: Path
    namespace: Namespace

    def netns(self, *args: str) -> None:
        self.namespace.run(*args)

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
        out = subprocess.run(["ip", "netns", "pids", self.namespace.name], capture_output=True, text=True,
                             check=True)  # fmt: skip
        return [int(pid) for pid in out.stdout.split()]

    def running(self) -> float:
        """vLLM's requests in flight, from its /metrics."""
        for line in web.get(f"{self.url}/metrics", timeout=5).text.splitlines():
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
    """vLLM in this run's namespace and the fake tailscaled, up until the block ends (needs root)."""
    subprocess.run([str(STANDIN / "setup.sh")], check=True, capture_output=True, timeout=900)
    with namespace("gpu") as gpu:
        url = f"http://{gpu.address}:{PORT}"
        log = (tmp / "vllm.log").open("wb")
        server = subprocess.Popen([str(STANDIN / "serve-vllm.sh"), "--netns", gpu.name, "--port", str(PORT)],
                                  stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        socket = tmp / "ts" / "tailscaled.sock"
        socket.parent.mkdir()
        fake = subprocess.Popen(
            [sys.executable, str(STANDIN / "fake-tailscaled.py"), "--socket", str(socket),
             "--peer", f"gpu-box={gpu.address},tag:gpu", "--peer", "laptop=100.64.0.9,offline,os=macOS"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 240
            while True:
                if server.poll() is not None:
                    raise RuntimeError(f"vLLM exited: {(tmp / 'vllm.log').read_text()[-2000:]}")
                try:
                    if web.get(f"{url}/health", timeout=2).status_code == 200 and socket.exists():
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"vLLM did not start: {(tmp / 'vllm.log').read_text()[-2000:]}")
                time.sleep(1)
            yield Standin(url, socket, gpu)
        finally:
            gpu.run("restore", check=False)
            _stop(server)
            _stop(fake)


REMOTE_MODEL = "smollm2-135m-instruct"  # the stand-in's name for the model


def config(standin: Standin, routing: str, first_byte_s: float) -> str:
    """A daemon's config.toml with the stand-in as remote gpu-box, found on the (fake) tailnet, serving
    "big-model" (not installed here) under its own name, and said to read images (its model does not:
    it refuses them, after the router sent them there)."""
    return f"""
[tailscale]
socket = "{standin.socket}"

[routing]
{routing}

[[remotes]]
name = "gpu-box"
kind = "vllm"
vision = true
tailscale = {{ hostname = "gpu-box", port = {PORT} }}
models = {{ "big-model" = "{REMOTE_MODEL}" }}
timeouts = {{ connect_s = 1, first_byte_s = {first_byte_s:g}, between_chunks_s = 3 }}
"""


def remote_state(daemon: Any) -> dict[str, Any]:
    """The daemon's view of its one remote (GET /appliance/v1/remotes)."""
    data = web.get(f"{daemon.url}/appliance/v1/remotes", timeout=10).json()
    return data["remotes"][0]  # type: ignore[no-any-return]


@contextlib.contextmanager
def remote_daemon(standin: Standin, home: Path, routing: str, first_byte_s: float) -> Iterator[Daemon]:
    """A daemon (1024 tokens of context, one slot) with the stand-in as its remote (``config``), up and
    seeing the remote healthy until the block ends."""
    (home / "config.toml").write_text(config(standin, routing, first_byte_s))
    daemon = start_daemon(home, "--ctx", "1024", "--parallel", "1")
    try:
        assert wait_until(lambda: remote_state(daemon)["healthy"], 30), remote_state(daemon)
        yield daemon
    finally:
        stop_daemon(daemon)


@pytest.fixture(scope="session")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standin]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("the remote stand-in needs root and iproute2 for its network namespace")
    with run_standin(tmp_path_factory.mktemp("standin")) as standin:
        yield standin
