"""Escalation end to end: the appliance in the middle, a real vLLM as the remote GPU host at a tailnet
address found through (fake) tailscaled, the link cut and restored under it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests import web
from tests.remotes.conftest import REMOTE_MODEL, Standin, remote_daemon, remote_state
from tests.server.conftest import MODEL_ID, NO_EOS_BIAS, Daemon, wait_until


@pytest.fixture(scope="module")
def daemon(standin: Standin, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    home = tmp_path_factory.mktemp("escalation")
    with remote_daemon(standin, home, "max_queue_wait_s = 0.5", first_byte_s=8) as d:
        yield d


def _chat(daemon: Daemon, model: str | None, max_tokens: int = 8, headers: dict[str, str] | None = None,
          **extra: Any) -> httpx.Response:  # fmt: skip
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "What is the capital of France?"}],
                            "max_tokens": max_tokens, "temperature": 0, **extra}  # fmt: skip
    if model is not None:
        body["model"] = model
    return web.post(f"{daemon.v1}/chat/completions", json=body, headers=headers or {}, timeout=120)


def test_the_remote_is_found_on_the_tailnet_with_its_models_and_load(
    daemon: Daemon, standin: Standin
) -> None:
    remote = remote_state(daemon)
    assert remote["found_via"] == "tailscale" and remote["address"] == standin.url
    assert remote["peer"]["hostname"] == "gpu-box" and remote["peer"]["online"]
    assert remote["models"] == {REMOTE_MODEL: 2048}
    assert remote["load"]["running"] == 0 and remote["breaker"] == "closed"
    command = [sys.executable, "-m", "appliance", "remotes", "--json"]
    cli = subprocess.run(command, capture_output=True, text=True, env=_cli_env(daemon), timeout=60)
    assert cli.returncode == 0, cli.stderr
    listed = json.loads(cli.stdout)
    assert listed["from"] == "daemon" and listed["remotes"][0]["healthy"]


def _cli_env(daemon: Daemon) -> dict[str, str]:
    import os

    port = daemon.url.rsplit(":", 1)[1]
    home = str(daemon.log_path.parent)
    return {**os.environ, "APPLIANCE_HOME": home, "APPLIANCE_SERVER__PORT": port}


@pytest.mark.parametrize(
    ("model", "extra", "reason"),
    [
        (f"gpu-box/{REMOTE_MODEL}", {}, "explicit"),
        ("big-model", {}, "capability"),  # not installed here; the remote serves it under another name
        (MODEL_ID, {"max_tokens": 1500}, "context"),  # 1024 tokens here, 2048 there
    ],
)
def test_each_reason_escalates_with_headers_and_usage(
    daemon: Daemon, model: str, extra: dict[str, Any], reason: str
) -> None:
    response = _chat(daemon, model, **{"max_tokens": 8, **extra})
    assert response.status_code == 200, response.text
    assert response.headers["x-appliance-backend"] == "remote:gpu-box"
    assert response.headers["x-appliance-escalation-reason"] == reason
    body = response.json()
    assert body["choices"][0]["message"]["content"] and body["usage"]["completion_tokens"] >= 1


def test_a_busy_local_slot_escalates_for_load(daemon: Daemon) -> None:
    # The one local slot is held by a long stream, closed once the check is done (which frees the slot:
    # waiting for its 400 tokens would only cost time).
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Tell a long story."}],
            "max_tokens": 400, "temperature": 0, "stream": True, "logit_bias": NO_EOS_BIAS}  # fmt: skip
    status = f"{daemon.url}/appliance/v1/status"
    with web.stream("POST", f"{daemon.v1}/chat/completions", json=body, timeout=120) as holder:
        assert holder.status_code == 200 and holder.headers["x-appliance-backend"] == "local"
        assert wait_until(lambda: web.get(status).json()["slots"]["busy"] == 1, 30)
        response = _chat(daemon, MODEL_ID)
        assert response.headers["x-appliance-backend"] == "remote:gpu-box"
        assert response.headers["x-appliance-escalation-reason"] == "load"
        assert web.get(status).json()["slots"]["busy"] == 1  # still generating here meanwhile
    assert wait_until(lambda: web.get(status).json()["slots"]["busy"] == 0, 30)


def test_x_escalate_never_and_the_remotes_client_errors(daemon: Daemon) -> None:
    local = _chat(daemon, MODEL_ID, headers={"X-Escalate": "never"}, max_tokens=1500)
    assert local.status_code == 400 and local.headers["x-appliance-backend"] == "local"  # over 1024 here
    forced = _chat(daemon, None, headers={"X-Escalate": "always"})
    assert forced.headers["x-appliance-backend"] == "remote:gpu-box"
    # A 400 from the remote goes back as it is: no failover to somewhere else.
    too_long = _chat(daemon, f"gpu-box/{REMOTE_MODEL}", max_tokens=5000)
    assert too_long.status_code == 400 and "max_model_len" in too_long.text
    assert too_long.headers["x-appliance-backend"] == "remote:gpu-box"


def _stream(daemon: Daemon, model: str, max_tokens: int, usage: bool = True) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "Tell a long story."}],
            "stream": True, "max_tokens": max_tokens, "ignore_eos": True}  # fmt: skip
    if usage:
        body["stream_options"] = {"include_usage": True}
    client = httpx.Client(timeout=60)
    return client.send(client.build_request("POST", f"{daemon.v1}/chat/completions", json=body), stream=True)


def test_streams_pass_through_with_usage_and_a_disconnect_cancels_upstream(
    daemon: Daemon, standin: Standin
) -> None:
    response = _stream(daemon, "big-model", 12)
    events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    response.close()
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["usage"]["completion_tokens"] == 12
    assert any(c["choices"] and c["choices"][0]["finish_reason"] == "length" for c in chunks)
    # The log line has the remote's token counts and timings, whether or not the client asked for usage
    # (the appliance always asks the remote; the client gets the usage chunk only if it asked).
    response = _stream(daemon, "big-model", 10, usage=False)
    events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    response.close()
    assert events[-1] == "[DONE]" and not any('"usage":{' in e.replace(" ", "") for e in events)
    line = web.get(f"{daemon.url}/appliance/v1/logs", params={"limit": 1}, timeout=10).json()["requests"][-1]
    assert (line["backend"], line["model"], line["reason"], line["status"]) == (
        "remote:gpu-box", "big-model", "capability", "ok",
    )  # fmt: skip
    assert line["generated_tokens"] == 10 and line["prompt_tokens"] > 0
    assert line["ttft_ms"] is not None and line["tokens_per_s"] > 0 and line["duration_s"] >= 0
    status = web.get(f"{daemon.url}/appliance/v1/status", timeout=10).json()
    assert status["requests_by_backend"]["remote:gpu-box"]["200"] >= 3

    response = _stream(daemon, "big-model", 1500)
    lines = response.iter_lines()
    for _ in range(5):
        next(lines)
    assert standin.running() == 1
    response.close()  # the client goes away mid-stream
    assert wait_until(lambda: standin.running() == 0, 10)


def test_the_link_cut_mid_stream_ends_it_with_an_error_then_requests_stay_local(
    daemon: Daemon, standin: Standin
) -> None:
    response = _stream(daemon, "big-model", 1500)
    lines = response.iter_lines()
    for _ in range(3):
        next(lines)
    standin.netns("cut")
    try:
        cut_at = time.monotonic()
        rest = [line for line in lines if line.startswith("data: ")]
        response.close()
        assert time.monotonic() - cut_at < 15  # between_chunks_s (3 s), never a hang
        assert rest[-1] == "data: [DONE]"
        error = json.loads(rest[-2][6:])["error"]
        assert error["code"] == "remote_failed" and "gpu-box" in error["message"]
        # Before the probes notice, a request that must escalate fails over here, before its first byte.
        started = time.monotonic()
        forced = _chat(daemon, MODEL_ID, headers={"X-Escalate": "always"})
        assert forced.status_code == 200 and forced.headers["x-appliance-backend"] == "local"
        assert time.monotonic() - started < 10
        standin.set_peer(online=False)
        assert wait_until(lambda: remote_state(daemon)["unavailable"] is not None, 20)
        assert "offline" in remote_state(daemon)["unavailable"]
        missing = _chat(daemon, "big-model")
        assert missing.status_code == 404 and missing.headers["x-appliance-backend"] == "local"
        standin.set_peer(online=True)  # back on the tailnet, still unreachable: the breaker opens
        assert wait_until(lambda: remote_state(daemon)["breaker"] != "closed", 60), remote_state(daemon)
        assert (
            _chat(daemon, MODEL_ID, headers={"X-Escalate": "always"}).headers["x-appliance-backend"]
            == "local"
        )
    finally:
        standin.netns("restore")
        standin.set_peer(online=True)
    # Healthy again, and past the breaker's cooldown (a probe passing while it cools does not close it).
    assert wait_until(
        lambda: remote_state(daemon)["healthy"] and remote_state(daemon)["breaker"] != "open", 60
    )
    back = _chat(daemon, "big-model")
    assert back.status_code == 200 and back.headers["x-appliance-backend"] == "remote:gpu-box"


def test_a_silent_remote_times_out_before_the_first_byte_and_fails_over(
    daemon: Daemon, standin: Standin
) -> None:
    assert wait_until(
        lambda: remote_state(daemon)["healthy"] and remote_state(daemon)["breaker"] == "closed", 60
    )
    pids = standin.pids()
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)  # the host hangs: connections open, nothing answers
    try:
        started = time.monotonic()
        response = _chat(daemon, MODEL_ID, headers={"X-Escalate": "always"})
        waited = time.monotonic() - started
        assert response.status_code == 200 and response.headers["x-appliance-backend"] == "local"
        assert 7 < waited < 30  # first_byte_s (8 s), then served here
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    assert wait_until(lambda: remote_state(daemon)["healthy"], 60)
