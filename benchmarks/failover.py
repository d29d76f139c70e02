"""How long a request waiting for a remote's first byte waits when the remote silently goes away (its link
cut, as a tailnet peer dropping off): from the cut to the daemon giving up on the remote (its log line),
after which it serves the request here. The remote is another appliance in a network namespace made by
../shared/remote-standin/netns.sh (needs root); the request waits in the remote's queue behind a long
stream sent straight to it, so that only the remote's probes can tell it is gone.

    python benchmarks/failover.py [--runs 5] [--probe-interval 5] [--connect-timeout 3] \
        [--first-byte-timeout 60] [--json OUT]

The defaults are the daemon's own (routing.probe_interval_s, a remote's timeouts).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

STANDIN = Path(__file__).resolve().parents[2] / "shared" / "remote-standin"
NETNS, ADDRESS, PORT = "appl-box", "100.64.0.3", 8000
KEY = "box-key"
MODEL_ID = "smollm2-135m-instruct"
NO_EOS_BIAS = {"0": -100, "2": -100}  # SmolLM2's end-of-generation tokens: a generation runs to max_tokens
FAILED_OVER = "remote failed before answering"  # the daemon's log line when it gives up on a remote


def netns(*args: str, check: bool = True) -> None:
    subprocess.run([str(STANDIN / "netns.sh"), *args], check=check, capture_output=True, timeout=60)


def _environment(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update({"APPLIANCE_HOME": str(home), "HOME": str(home), **(extra or {})})
    return env


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the daemon at {url} did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.3)


class Box:
    """The remote: an appliance serving inside namespace ``netns`` at ``address``, one slot (the tests
    give each run a namespace of its own)."""

    def __init__(self, home: Path, netns: str = NETNS, address: str = ADDRESS) -> None:
        self.home = home
        self.netns, self.address = netns, address
        self.url = f"http://{address}:{PORT}"
        self.headers = {"Authorization": f"Bearer {KEY}"}
        self.process: subprocess.Popen[bytes] | None = None
        (home / "config.toml").write_text(f'[server]\nallowed_hosts = ["{address}"]\n')

    def start(self) -> None:
        serve = ["serve", "--host", "0.0.0.0", "--port", str(PORT), "--api-key", KEY,
                 "--parallel", "1", "--ctx", "2048"]  # fmt: skip
        command = ["ip", "netns", "exec", self.netns, sys.executable, "-m", "appliance", *serve]
        log = self.home / "box.log"
        with log.open("ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                            env=_environment(self.home))  # fmt: skip
        _wait_healthy(self.url, self.process, log)

    def busy(self) -> int:
        """Requests running or waiting there."""
        status = httpx.get(f"{self.url}/appliance/v1/status", headers=self.headers, timeout=5).json()
        return int(status["slots"]["busy"]) + int(status["queue"])

    def crash(self) -> None:
        netns("crash", self.netns)
        if self.process is not None:
            self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def front_config(box: Box, probe_interval_s: float, connect_s: float, first_byte_s: float) -> str:
    """The daemon's config.toml with ``box`` as its one remote (serving "far-model" too)."""
    return f"""
[routing]
probe_interval_s = {probe_interval_s}

[[remotes]]
name = "box"
kind = "openai"
base_url = "{box.url}"
api_key_env = "BOX_KEY"
models = {{ "far-model" = "{MODEL_ID}" }}
timeouts = {{ connect_s = {connect_s}, first_byte_s = {first_byte_s}, between_chunks_s = {first_byte_s} }}
"""


def remote_state(front_url: str) -> dict[str, Any]:
    return httpx.get(f"{front_url}/appliance/v1/remotes", timeout=10).json()["remotes"][0]  # type: ignore[no-any-return]


def wait_in_use(front_url: str, timeout_s: float = 120) -> None:
    """Until the front uses the remote again: healthy, its breaker closed."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = remote_state(front_url)
        if state["healthy"] and state["breaker"] == "closed":
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the remote is not back in use: {state}")
        time.sleep(0.3)


class Blocker:
    """A long stream sent straight to the remote on a raw socket, holding its only slot: a request the
    front forwards then waits in the remote's queue, before its first byte, while this one runs."""

    def __init__(self, box: Box) -> None:
        story = [{"role": "user", "content": "Tell a long story."}]
        body = json.dumps({"model": MODEL_ID, "messages": story, "max_tokens": 1500,
                           "logit_bias": NO_EOS_BIAS, "stream": True}).encode()  # fmt: skip
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {box.address}:{PORT}\r\n"
                f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n")  # fmt: skip
        self.sock = socket.create_connection((box.address, PORT), timeout=60)
        self.sock.sendall(head.encode() + body)
        received = b""
        while b"data: " not in received:  # it generates
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError(f"the remote did not stream: {received[-300:]!r}")
            received += chunk

    def close(self) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


class Waiting:
    """A short request through the front (forced to the remote) that waits there behind a Blocker."""

    def __init__(self, front_url: str, box: Box, timeout_s: float) -> None:
        self.blocker = Blocker(box)
        self.response: httpx.Response | None = None
        self.ended: float | None = None
        body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}

        def send() -> None:
            self.response = httpx.post(f"{front_url}/v1/chat/completions", json=body,
                                       headers={"X-Escalate": "always"}, timeout=timeout_s)  # fmt: skip
            self.ended = time.time()

        self.thread = threading.Thread(target=send)
        self.thread.start()
        deadline = time.monotonic() + 30
        while box.busy() < 2:  # the blocker runs, this one waits behind it
            if time.monotonic() > deadline:
                raise RuntimeError("the request did not reach the remote")
            time.sleep(0.1)

    def join(self, timeout_s: float) -> httpx.Response:
        self.thread.join(timeout_s)
        self.blocker.close()
        assert self.response is not None, "no answer"
        return self.response


def failovers(log: Path) -> list[tuple[float, str]]:
    """When the front gave up on a remote before its first byte (wall-clock seconds), and why, from
    its log."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if FAILED_OVER in line]
    return [(datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp(),
             line.partition(FAILED_OVER)[2]) for line in lines]  # fmt: skip


def fail_under_a_request(front_url: str, front_log: Path, box: Box, first_byte_s: float,
                         how: str) -> tuple[float, str, httpx.Response]:  # fmt: skip
    """Make the remote fail (``how``: "cut" its link, or "crash" it) under a request waiting for its
    first byte: the seconds from then to the front giving up on the remote, why it did, and the
    request's answer. A cut link is restored before returning; a crashed remote stays down."""
    before = len(failovers(front_log))
    waiting = Waiting(front_url, box, first_byte_s * 2)
    if how == "cut":
        netns("cut", box.netns)
    else:
        box.crash()
    failed_at = time.time()
    try:
        response = waiting.join(first_byte_s * 2)
    finally:
        if how == "cut":
            netns("restore", box.netns)
    found = failovers(front_log)[before:]
    gave_up_at, why = found[0] if found else (waiting.ended or time.time(), "")
    return gave_up_at - failed_at, why, response


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--probe-interval", type=float, default=5.0, help="routing.probe_interval_s")
    parser.add_argument("--connect-timeout", type=float, default=3.0, help="the remote's timeouts.connect_s")
    parser.add_argument("--first-byte-timeout", type=float, default=60.0, help="timeouts.first_byte_s")
    parser.add_argument("--json", type=Path, metavar="OUT")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("failover.py needs root (a network namespace)", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="failover-"))
    (work / "box").mkdir()
    (work / "front").mkdir()
    netns("down", NETNS, check=False)
    netns("up", NETNS, ADDRESS)
    box = Box(work / "box")
    front: subprocess.Popen[bytes] | None = None
    try:
        box.start()
        home = work / "front"
        (home / "config.toml").write_text(
            front_config(box, args.probe_interval, args.connect_timeout, args.first_byte_timeout)
        )
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url, log = f"http://127.0.0.1:{port}", home / "daemon.log"
        with log.open("wb") as out:
            front = subprocess.Popen(
                [sys.executable, "-m", "appliance", "serve", "--port", str(port), "--parallel", "1"],
                stdout=out, stderr=subprocess.STDOUT, env=_environment(home, {"BOX_KEY": KEY}),
            )  # fmt: skip
        _wait_healthy(url, front, log)
        waits = []
        for run in range(args.runs):
            wait_in_use(url)
            waited_s, why, response = fail_under_a_request(url, log, box, args.first_byte_timeout, "cut")
            served = response.headers.get("x-appliance-backend")
            print(f"run {run + 1}: {waited_s:.1f} s from the cut to giving up ({why.strip(': ')}); "
                  f"answered by {served}")  # fmt: skip
            waits.append(waited_s)
        result = {"probe_interval_s": args.probe_interval, "connect_s": args.connect_timeout,
                  "first_byte_s": args.first_byte_timeout, "runs": len(waits),
                  "failover_s": {"min": round(min(waits), 2), "median": round(statistics.median(waits), 2),
                                 "max": round(max(waits), 2)}}  # fmt: skip
        print(json.dumps(result))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
    finally:
        if front is not None:
            front.terminate()
            front.wait(30)
        netns("restore", NETNS, check=False)
        box.stop()
        netns("crash", NETNS, check=False)
        netns("down", NETNS, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
