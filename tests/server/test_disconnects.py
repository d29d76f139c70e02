"""Clients that go away at random points (seeded): while queued, before the first token, in the middle of
a stream, in the middle of a whole (non-streamed) generation; on the OpenAI, Ollama and Anthropic routes,
streamed and not; some closing politely (FIN), some abruptly (RST). Each such request stops generating
(its log line says so), and afterwards no slot is busy, nothing is queued, and every dialect answers."""

from __future__ import annotations

import json
import random
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import ollama
import pytest

from tests import web
from tests.server.conftest import MODEL_ID, NO_EOS_BIAS, Daemon, start_daemon, stop_daemon, wait_until

SEED = 14
DISCONNECTS = 30
SLOTS = 2
STORY = "Write a very long story about a dragon."
MAX_TOKENS = 2000  # far more than any of these requests may generate before its client leaves


def _body(path: str, stream: bool) -> dict[str, Any]:
    messages = [{"role": "user", "content": STORY}]
    if path == "/v1/chat/completions":
        return {"model": MODEL_ID, "messages": messages, "max_tokens": MAX_TOKENS, "logit_bias": NO_EOS_BIAS,
                "stream": stream}  # fmt: skip
    if path == "/v1/completions":
        return {"model": MODEL_ID, "prompt": "Once upon a time", "max_tokens": MAX_TOKENS,
                "logit_bias": NO_EOS_BIAS, "stream": stream}  # fmt: skip
    if path == "/api/chat":
        return {
            "model": MODEL_ID,
            "messages": messages,
            "stream": stream,
            "options": {"num_predict": MAX_TOKENS},
        }
    if path == "/api/generate":
        return {"model": MODEL_ID, "prompt": STORY, "stream": stream, "options": {"num_predict": MAX_TOKENS}}
    return {"model": MODEL_ID, "messages": messages, "max_tokens": MAX_TOKENS, "stream": stream}


ROUTES = ("/v1/chat/completions", "/v1/completions", "/api/chat", "/api/generate", "/v1/messages")


class Client:
    """One request on a raw socket, so that it can be dropped at any byte."""

    def __init__(self, daemon: Daemon, path: str, stream: bool) -> None:
        port = int(daemon.url.rsplit(":", 1)[1])
        data = json.dumps(_body(path, stream)).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n\r\n")  # fmt: skip
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.sendall(head.encode() + data)
        self.received = b""

    def read_lines(self, n: int) -> None:
        """Wait until ``n`` lines of the answer's body have arrived (the answer is under way)."""
        while self.received.partition(b"\r\n\r\n")[2].count(b"\n") < n:
            chunk = self.sock.recv(65536)
            assert chunk, self.received[-300:]
            self.received += chunk
        assert self.received.startswith(b"HTTP/1.1 200"), self.received[:300]

    def drop(self, abrupt: bool) -> None:
        if abrupt:  # RST instead of FIN
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def _status(daemon: Daemon) -> dict[str, Any]:
    return web.get(f"{daemon.url}/appliance/v1/status", timeout=10).json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("disconnects"), "--parallel", str(SLOTS), "--ctx", "8192")
    yield d
    stop_daemon(d)


def _queued(daemon: Daemon, path: str, stream: bool, rng: random.Random) -> None:
    """Fill the slots, queue one more request, drop it while it waits, then drop those running."""
    running = [Client(daemon, rng.choice(ROUTES), True) for _ in range(SLOTS)]
    for client in running:
        client.read_lines(2)
    waiting = Client(daemon, path, stream)
    assert wait_until(lambda: _status(daemon)["queue"] == 1, 30)
    waiting.drop(abrupt=rng.random() < 0.5)
    assert wait_until(lambda: _status(daemon)["queue"] == 0, 10)  # it left the queue, unserved
    for client in running:
        client.drop(abrupt=rng.random() < 0.5)


def _one(daemon: Daemon, path: str, stream: bool, rng: random.Random) -> str:
    """A request dropped at a random point; which point."""
    client = Client(daemon, path, stream)
    point = rng.choice(["before the first token", "mid-stream" if stream else "mid-generation"])
    if point == "before the first token":
        time.sleep(rng.uniform(0.0, 0.05))
        client.drop(abrupt=False)  # an RST this early may discard the request unread: nothing to stop
    elif point == "mid-stream":
        client.read_lines(rng.randint(2, 12))
        client.drop(abrupt=rng.random() < 0.5)
    else:
        time.sleep(rng.uniform(0.2, 1.0))
        client.drop(abrupt=rng.random() < 0.5)
    return point


def test_clients_leaving_at_random_points_leave_nothing_behind(daemon: Daemon) -> None:
    rng = random.Random(SEED)
    started_at = time.time()
    dropped: list[tuple[str, bool, str]] = []
    for path in ROUTES:
        stream = rng.random() < 0.5
        _queued(daemon, path, stream, rng)
        dropped += [(path, stream, "queued")] + [("?", True, "mid-stream")] * SLOTS
    while len(dropped) < DISCONNECTS:
        path, stream = rng.choice(ROUTES), rng.random() < 0.5
        dropped.append((path, stream, _one(daemon, path, stream, rng)))

    assert wait_until(lambda: _status(daemon)["slots"]["busy"] == 0 and _status(daemon)["queue"] == 0, 15), (
        _status(daemon)["slots"]
    )
    lines = [r for r in web.get(f"{daemon.url}/appliance/v1/logs", params={"limit": 500}, timeout=10)
             .json()["requests"] if r["time"] >= started_at]  # fmt: skip
    # Every one of them ended when its client left (a slot still generating 2000 tokens for nobody would
    # have kept it busy well past the wait above), and was logged once, as cancelled.
    summary = [(line["endpoint"], line["status"]) for line in lines]
    assert len(lines) == len(dropped), (summary, dropped)
    assert {line["status"] for line in lines} <= {"cancelled", "499"}, summary

    ask = [{"role": "user", "content": "Say hi."}]
    assert daemon.client().chat.completions.create(model=MODEL_ID, messages=ask, max_tokens=4).choices  # type: ignore[arg-type]
    reply = ollama.Client(host=daemon.url, timeout=60).chat(
        MODEL_ID, messages=ask, options={"num_predict": 4}
    )
    assert reply.done
    claude = anthropic.Anthropic(base_url=daemon.url, api_key="unused", max_retries=0)
    assert claude.messages.create(model=MODEL_ID, max_tokens=4, messages=ask).content  # type: ignore[arg-type]
    assert daemon.process.poll() is None
