"""SIGTERM and Ctrl-C drain the real daemon: new connections are refused at once, requests in flight
finish within `server.shutdown_timeout_s`, what still runs then ends in its API's own framing, and the
process exits 0. A second signal exits at once."""

from __future__ import annotations

import re
import signal
import socket
import time
from pathlib import Path

import ollama

from tests.integration.lifecycle import (
    OllamaStream,
    Sse,
    Whole,
    exit_status,
    model_state,
    refused_while_draining,
)
from tests.server.conftest import Daemon, start_daemon, stop_daemon, wait_until


def _daemon(home: Path, *args: str, shutdown_timeout_s: float | None = None) -> Daemon:
    # One generation thread: llama.cpp's threads wait for each other by spinning, and on a 2-core machine
    # shared with other daemons (as when tests run beside each other) that turns a decode step into
    # seconds; the shutdown's cut takes effect between two steps.
    env = (
        {}
        if shutdown_timeout_s is None
        else {"APPLIANCE_SERVER__SHUTDOWN_TIMEOUT_S": str(shutdown_timeout_s)}
    )
    return start_daemon(home, "--threads", "1", *args, env=env)


def test_streams_in_flight_finish_before_the_daemon_exits(tmp_path: Path) -> None:
    # A bound far above what 150 tokens take even on a busy machine: this is about finishing.
    daemon = _daemon(tmp_path, "--parallel", "1", "--ctx", "2048", shutdown_timeout_s=300)
    stream = Sse(daemon.url, max_tokens=150)
    stream.start()
    assert stream.started_streaming.wait(60)
    daemon.process.send_signal(signal.SIGTERM)
    refused_while_draining(daemon)
    assert exit_status(daemon, within_s=300) == 0
    stream.join(10)
    assert stream.status == 200
    assert stream.finish() == ("length", 150)  # all it asked for: the drain let it finish
    log = daemon.log()
    assert "draining: new requests are refused; 1 in flight have up to 300 s to finish" in log
    assert "1 of 1 requests in flight finished, 0 cut short" in log
    assert "Traceback" not in log


def test_at_the_bound_streams_end_well_formed_and_waiting_requests_get_503(tmp_path: Path) -> None:
    daemon = _daemon(tmp_path, "--parallel", "2", "--ctx", "4096", shutdown_timeout_s=1)
    sse, counting = Sse(daemon.url, max_tokens=1500), OllamaStream(daemon.url, num_predict=1500)
    sse.start()
    counting.start()
    assert sse.started_streaming.wait(60) and counting.started_streaming.wait(60)
    waiting = Whole(daemon.url)
    waiting.start()
    assert wait_until(lambda: model_state(daemon)["queue_depth"] == 1, 30), model_state(daemon)
    signalled = time.monotonic()
    daemon.process.send_signal(signal.SIGTERM)
    assert exit_status(daemon, within_s=30) == 0
    for thread in (sse, counting, waiting):
        thread.join(10)
    # Cut at the bound: a final chunk with finish_reason "length", usage, then [DONE].
    reason, generated = sse.finish()
    assert reason == "length" and generated is not None and 0 < generated < 1500
    # Ollama's stream ends with its final "done" line.
    assert counting.error is None, counting.error
    last = counting.chunks[-1]
    assert last.done and last.done_reason == "length" and last.eval_count < 1500
    assert all(not c.done for c in counting.chunks[:-1])
    # The request still waiting for a slot: 503 in OpenAI's shape.
    assert waiting.status == 503 and waiting.body["error"]["code"] == "shutting_down"
    log = daemon.log()
    # The two streams and the waiting request are cut short. (The test's own status poll can still be in
    # flight as the signal lands, and then it finishes: it is counted, as any request is.)
    drained = re.search(r"(\d+) of (\d+) requests in flight finished, (\d+) cut short", log)
    assert drained is not None and drained.group(3) == "3", log[-2000:]
    assert "Traceback" not in log and "status=500" not in log
    print(f"exit {time.monotonic() - signalled:.1f} s after SIGTERM with a 1 s bound")


def test_a_waiting_ollama_stream_gets_an_error_line(tmp_path: Path) -> None:
    daemon = _daemon(tmp_path, "--parallel", "1", "--ctx", "4096", shutdown_timeout_s=0)
    running = Sse(daemon.url, max_tokens=1500)
    running.start()
    assert running.started_streaming.wait(60)
    queued = OllamaStream(daemon.url, num_predict=20)
    queued.start()
    assert wait_until(lambda: model_state(daemon)["queue_depth"] == 1, 30), model_state(daemon)
    daemon.process.send_signal(signal.SIGTERM)
    assert exit_status(daemon, within_s=30) == 0
    queued.join(10)
    running.join(10)
    assert running.finish()[0] == "length"
    # Ollama's clients raise its error line as a ResponseError; nothing was generated for it.
    assert isinstance(queued.error, ollama.ResponseError), queued.error
    assert "shutting down" in str(queued.error) and queued.chunks == []


def test_ctrl_c_when_idle_exits_at_once(tmp_path: Path) -> None:
    daemon = _daemon(tmp_path, "--parallel", "1", "--ctx", "2048")
    signalled = time.monotonic()
    daemon.process.send_signal(signal.SIGINT)
    assert exit_status(daemon, within_s=15) == 0
    print(f"idle exit {time.monotonic() - signalled:.2f} s after Ctrl-C")
    # (the health check start_daemon made may still be finishing when the signal comes)
    drained = r"drained in [\d.]+ s: (\d) of \1 requests in flight finished, 0 cut short"
    assert re.search(drained, daemon.log())


def test_a_second_signal_exits_at_once(tmp_path: Path) -> None:
    daemon = _daemon(tmp_path, "--parallel", "1", "--ctx", "4096")
    stream = Sse(daemon.url, max_tokens=1500)
    stream.start()
    assert stream.started_streaming.wait(60)
    daemon.process.send_signal(signal.SIGTERM)
    refused_while_draining(daemon)
    daemon.process.send_signal(signal.SIGTERM)
    assert exit_status(daemon, within_s=10) == 128 + signal.SIGTERM
    stream.join(10)
    assert not stream.is_alive()
    assert "second signal: exiting now" in daemon.log()


def test_tells_systemd_ready_once_listening_and_stopping_at_the_signal(tmp_path: Path) -> None:
    # As systemd's Type=notify units see it: READY=1 on $NOTIFY_SOCKET once /health answers, so that
    # `systemctl start` (and `appliance service install`) returns then, STOPPING=1 when the drain begins.
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    manager.bind(str(tmp_path / "notify"))
    manager.settimeout(30)
    with manager:
        daemon = start_daemon(tmp_path, "--threads", "1", env={"NOTIFY_SOCKET": str(tmp_path / "notify")})
        try:
            assert manager.recv(256) == b"READY=1"  # sent before start_daemon saw /health answer
            daemon.process.send_signal(signal.SIGTERM)
            assert manager.recv(256) == b"STOPPING=1"
            assert exit_status(daemon, within_s=60) == 0
        finally:
            stop_daemon(daemon)
    assert "could not tell systemd" not in daemon.log()
