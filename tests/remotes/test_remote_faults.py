"""A remote that goes away under a request: silently (its link cut, as a tailnet peer dropping off) or
abruptly (its host crashed), before the first byte and in the middle of a stream. The remote is another
appliance (an `openai` remote, cheap to restart after a crash) in a network namespace of the stand-in
(../shared/remote-standin/netns.sh); the vLLM stand-in stays untouched for the other remote tests.

The first-byte timeout is 60 s, so that only the probes (every second here) can end the wait in time:
a request waiting on a remote found down fails over at once (issue 14: it used to wait the whole
first-byte timeout although the probes already knew)."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.remotes.conftest import STANDIN
from tests.server.conftest import MODEL_ID, NO_EOS_BIAS, Daemon, start_daemon, stop_daemon, wait_until

NETNS, ADDRESS, PORT = "appl-box", "100.64.0.3", 8000
KEY = "box-key"
FIRST_BYTE_S = 60


def _netns(*args: str) -> None:
    subprocess.run([str(STANDIN / "netns.sh"), *args], check=True, capture_output=True, timeout=60)


class Box:
    """The remote: an appliance serving inside the namespace NETNS at ADDRESS."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.url = f"http://{ADDRESS}:{PORT}"
        self.process: subprocess.Popen[bytes] | None = None
        (home / "config.toml").write_text(f'[server]\nallowed_hosts = ["{ADDRESS}"]\n')

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
        env.update({"APPLIANCE_HOME": str(self.home), "HOME": str(self.home)})
        serve = ["serve", "--host", "0.0.0.0", "--port", str(PORT), "--api-key", KEY,
                 "--parallel", "1", "--ctx", "2048"]  # fmt: skip
        command = ["ip", "netns", "exec", NETNS, sys.executable, "-m", "appliance", *serve]
        with (self.home / "box.log").open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 120
        while not self.healthy():
            assert self.process.poll() is None, (self.home / "box.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the remote appliance did not start"
            time.sleep(0.3)

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def busy(self) -> int:
        status = httpx.get(f"{self.url}/appliance/v1/status", headers=self.headers, timeout=5).json()
        return int(status["slots"]["busy"]) + int(status["queue"])

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {KEY}"}

    def crash(self) -> None:
        _netns("crash", NETNS)
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


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("the remote's network namespace needs root and iproute2")
    subprocess.run([str(STANDIN / "netns.sh"), "down", NETNS], capture_output=True, timeout=30)
    _netns("up", NETNS, ADDRESS)
    remote = Box(tmp_path_factory.mktemp("box"))
    try:
        remote.start()
        yield remote
    finally:
        subprocess.run([str(STANDIN / "netns.sh"), "restore", NETNS], capture_output=True, timeout=30)
        remote.stop()
        subprocess.run([str(STANDIN / "netns.sh"), "crash", NETNS], capture_output=True, timeout=30)
        subprocess.run([str(STANDIN / "netns.sh"), "down", NETNS], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def front(box: Box, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    home = tmp_path_factory.mktemp("front")
    (home / "config.toml").write_text(f"""
[routing]
probe_interval_s = 1

[[remotes]]
name = "box"
kind = "openai"
base_url = "{box.url}"
api_key_env = "BOX_KEY"
models = {{ "far-model" = "{MODEL_ID}" }}
timeouts = {{ connect_s = 1, first_byte_s = {FIRST_BYTE_S}, between_chunks_s = {FIRST_BYTE_S} }}
""")
    d = start_daemon(home, "--parallel", "1", "--ctx", "1024", env={"BOX_KEY": KEY})
    try:
        assert wait_until(lambda: _remote(d)["healthy"], 30), _remote(d)
        yield d
    finally:
        stop_daemon(d)


def _remote(front: Daemon) -> dict[str, Any]:
    return httpx.get(f"{front.url}/appliance/v1/remotes", timeout=10).json()["remotes"][0]  # type: ignore[no-any-return]


def _back_in_use(front: Daemon) -> None:
    assert wait_until(lambda: _remote(front)["healthy"] and _remote(front)["breaker"] == "closed", 90), (
        _remote(front)
    )


class Blocker:
    """A long stream sent straight to the remote, holding its only slot: a request the front forwards
    then waits in the remote's queue, before its first byte, for as long as this one runs."""

    def __init__(self, box: Box) -> None:
        body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Tell a long story."}],
                "max_tokens": 1500, "logit_bias": NO_EOS_BIAS, "stream": True}  # fmt: skip
        self._client = httpx.Client(timeout=httpx.Timeout(5, read=None))
        request = self._client.build_request("POST", f"{box.url}/v1/chat/completions", json=body,
                                             headers=box.headers)  # fmt: skip
        self._response = self._client.send(request, stream=True)
        self._lines = self._response.iter_lines()
        next(self._lines)  # it generates

    def close(self) -> None:
        threading.Thread(target=self._client.close, daemon=True).start()  # a cut link may hang the close


def _waiting_request(front: Daemon, box: Box) -> tuple[Blocker, dict[str, Any]]:
    """Start a request through the front that waits at the remote for its first byte; its outcome and
    timings land in the returned dict once it ends."""
    blocker = Blocker(box)
    outcome: dict[str, Any] = {}

    def send() -> None:
        body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}
        started = time.monotonic()
        response = httpx.post(f"{front.v1}/chat/completions", json=body, headers={"X-Escalate": "always"},
                              timeout=FIRST_BYTE_S * 2)  # fmt: skip
        outcome.update(response=response, ended=time.monotonic(), started=started)

    thread = threading.Thread(target=send)
    thread.start()
    outcome["thread"] = thread
    assert wait_until(lambda: box.busy() == 2, 30)  # the blocker runs, ours waits behind it
    return blocker, outcome


def test_a_remote_cut_before_the_first_byte_fails_over_when_its_probe_fails(front: Daemon, box: Box) -> None:
    _back_in_use(front)
    blocker, outcome = _waiting_request(front, box)
    try:
        _netns("cut", NETNS)
        cut_at = time.time()
        outcome["thread"].join(FIRST_BYTE_S * 2)
        response = outcome["response"]
        assert response.status_code == 200 and response.headers["x-appliance-backend"] == "local"
        # When the front gave up on the remote, from its log (serving here after that takes what it takes).
        line = next(line for line in front.log().splitlines() if "went down while the request waited" in line)
        gave_up_at = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        waited_s = gave_up_at - cut_at
        print(f"\nfailed over {waited_s:.1f} s after the cut (first-byte timeout {FIRST_BYTE_S} s)")
        assert 0 < waited_s < 10, waited_s  # a probe failing (every 1 s, connect timeout 1 s), not 60 s
    finally:
        _netns("restore", NETNS)
        blocker.close()
    _back_in_use(front)


def test_a_remote_crashing_before_the_first_byte_fails_over_at_once(front: Daemon, box: Box) -> None:
    _back_in_use(front)
    blocker, outcome = _waiting_request(front, box)
    try:
        box.crash()
        crashed_at = time.monotonic()
        outcome["thread"].join(FIRST_BYTE_S * 2)
        response = outcome["response"]
        assert response.status_code == 200 and response.headers["x-appliance-backend"] == "local"
        assert outcome["ended"] - crashed_at < 10
    finally:
        blocker.close()
        box.start()
    _back_in_use(front)


def test_a_remote_crashing_mid_stream_ends_the_stream_with_an_error(front: Daemon, box: Box) -> None:
    _back_in_use(front)
    body = {"model": "far-model", "messages": [{"role": "user", "content": "Tell a long story."}],
            "max_tokens": 1500, "logit_bias": NO_EOS_BIAS, "stream": True}  # fmt: skip
    try:
        with httpx.stream(
            "POST", f"{front.v1}/chat/completions", json=body, timeout=FIRST_BYTE_S * 2
        ) as response:
            assert response.headers["x-appliance-backend"] == "remote:box"
            lines = response.iter_lines()
            seen = [next(lines) for _ in range(6)]
            box.crash()
            crashed_at = time.monotonic()
            rest = [line for line in lines if line.startswith("data: ")]
        assert time.monotonic() - crashed_at < 10
        assert any(line.startswith("data: {") for line in seen)
        assert rest[-1] == "data: [DONE]"
        error = json.loads(rest[-2][6:])["error"]
        # An abrupt end of the chunked body, or of the stream without a finish_reason: either is a failure.
        assert error["code"] == "remote_failed" and error["message"].startswith("the remote box ")
    finally:
        box.start()
    _back_in_use(front)
    assert httpx.post(f"{front.v1}/chat/completions", json={**body, "stream": False, "max_tokens": 4},
                      timeout=60).headers["x-appliance-backend"] == "remote:box"  # fmt: skip
