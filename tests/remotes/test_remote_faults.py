"""A remote that goes away under a request: silently (its link cut, as a tailnet peer dropping off) or
abruptly (its host crashed), before the first byte and in the middle of a stream. The remote is another
appliance (an `openai` remote, cheap to restart after a crash) in a network namespace of this run
(../shared/remote-standin/netns.sh); the vLLM stand-in stays untouched for the other remote tests.

The first-byte timeout is 60 s, so that only the probes (every second here) can end the wait in time:
a request waiting on a remote found down fails over at once (issue 14: it used to wait the whole
first-byte timeout although the probes already knew)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests import web
from tests.benchmark_scripts import load_script
from tests.remotes.conftest import namespace
from tests.server.conftest import NO_EOS_BIAS, Daemon, start_daemon, stop_daemon, wait_until

failover = load_script("failover")  # benchmarks/failover.py: the remote, and a cut measured
FIRST_BYTE_S = 60


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with namespace("box") as netns:
        remote = failover.Box(tmp_path_factory.mktemp("box"), netns.name, netns.address)
        try:
            remote.start()
            yield remote
        finally:
            netns.run("restore", check=False)
            remote.stop()


@pytest.fixture(scope="module")
def front(box: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    home = tmp_path_factory.mktemp("front")
    (home / "config.toml").write_text(failover.front_config(box, 1, 1, FIRST_BYTE_S))
    d = start_daemon(home, "--parallel", "1", "--ctx", "1024", env={"BOX_KEY": failover.KEY})
    try:
        assert wait_until(lambda: failover.remote_state(d.url)["healthy"], 30)
        yield d
    finally:
        stop_daemon(d)


def test_a_remote_cut_before_the_first_byte_fails_over_when_its_probe_fails(front: Daemon, box: Any) -> None:
    failover.wait_in_use(front.url)
    waited_s, why, response = failover.fail_under_a_request(
        front.url, front.log_path, box, FIRST_BYTE_S, "cut"
    )
    assert response.status_code == 200 and response.headers["x-appliance-backend"] == "local"
    print(f"\nfailed over {waited_s:.1f} s after the cut (first-byte timeout {FIRST_BYTE_S} s)")
    assert "went down while the request waited for it: its probe failed" in why, why
    assert 0 < waited_s < 10, waited_s  # a probe failing (every 1 s, connect timeout 1 s), not 60 s
    failover.wait_in_use(front.url)


def test_a_remote_crashing_before_the_first_byte_fails_over_at_once(front: Daemon, box: Any) -> None:
    failover.wait_in_use(front.url)
    try:
        waited_s, why, response = failover.fail_under_a_request(
            front.url, front.log_path, box, FIRST_BYTE_S, "crash"
        )
        assert response.status_code == 200 and response.headers["x-appliance-backend"] == "local"
        assert "Server disconnected without sending a response" in why and waited_s < 5, (waited_s, why)
    finally:
        box.start()
    failover.wait_in_use(front.url)


def test_a_remote_crashing_mid_stream_ends_the_stream_with_an_error(front: Daemon, box: Any) -> None:
    failover.wait_in_use(front.url)
    body = {"model": "far-model", "messages": [{"role": "user", "content": "Tell a long story."}],
            "max_tokens": 1500, "logit_bias": NO_EOS_BIAS, "stream": True}  # fmt: skip
    url = f"{front.v1}/chat/completions"
    try:
        with web.stream("POST", url, json=body, timeout=FIRST_BYTE_S * 2) as response:
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
    failover.wait_in_use(front.url)
    answer = web.post(url, json={**body, "stream": False, "max_tokens": 4}, timeout=60)
    assert answer.status_code == 200 and answer.headers["x-appliance-backend"] == "remote:box"
