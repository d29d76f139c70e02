"""Helpers for the lifecycle tests: requests read in the background while the daemon is signalled."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import ollama

from tests import web
from tests.server.conftest import MODEL_ID, NO_EOS_BIAS, Daemon

COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"  # the model goes on counting: a long Ollama generation


class Sse(threading.Thread):
    """A streamed OpenAI chat read raw in the background, so its framing can be checked to the end."""

    def __init__(self, url: str, max_tokens: int, **extra: Any) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Go on."}],
                     "max_tokens": max_tokens, "stream": True, "stream_options": {"include_usage": True},
                     "logit_bias": NO_EOS_BIAS, **extra}  # fmt: skip
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.lines: list[str] = []
        self.error: Exception | None = None
        self.started_streaming = threading.Event()
        self._leave = threading.Event()

    def stop(self) -> None:
        """Go away mid-stream, as a client that closes the connection."""
        self._leave.set()
        self.join(30)

    def run(self) -> None:
        try:
            with web.stream("POST", f"{self.url}/v1/chat/completions", json=self.body, timeout=120) as r:
                self.status, self.headers = r.status_code, dict(r.headers)
                for line in r.iter_lines():
                    if self._leave.is_set():
                        return
                    if line:
                        self.lines.append(line)
                    if '"content":"' in line.replace(" ", "") and '"content":""' not in line.replace(" ", ""):
                        self.started_streaming.set()  # generating (the first event only names the role)
        except httpx.HTTPError as exc:
            self.error = exc
        finally:
            self.started_streaming.set()

    def events(self) -> list[dict[str, Any]]:
        """The data events before ``[DONE]``, asserting the stream is well-formed SSE ending in it."""
        assert self.error is None, self.error
        assert all(line.startswith("data: ") for line in self.lines), self.lines[-3:]
        assert self.lines and self.lines[-1] == "data: [DONE]", self.lines[-3:]
        return [json.loads(line.removeprefix("data: ")) for line in self.lines[:-1]]

    def finish(self) -> tuple[str | None, int | None]:
        """(finish_reason, completion_tokens) of a stream that ended with its final chunk and usage."""
        events = self.events()
        reasons = [c["choices"][0]["finish_reason"] for c in events if c.get("choices")]
        usage = events[-1].get("usage") or {}
        return reasons[-1], usage.get("completion_tokens")


class OllamaStream(threading.Thread):
    """A streamed Ollama generate, through Ollama's own client, in the background."""

    def __init__(self, url: str, num_predict: int) -> None:
        super().__init__(daemon=True)
        self.client = ollama.Client(host=url, timeout=120)
        self.num_predict = num_predict
        self.chunks: list[Any] = []
        self.error: Exception | None = None
        self.started_streaming = threading.Event()

    def run(self) -> None:
        try:
            options = {"num_predict": self.num_predict, "temperature": 0}
            for chunk in self.client.generate(MODEL_ID, COUNTING, raw=True, stream=True, options=options):
                self.chunks.append(chunk)
                self.started_streaming.set()
        except Exception as exc:  # ollama.ResponseError, or the connection failing
            self.error = exc
        finally:
            self.started_streaming.set()


class Whole(threading.Thread):
    """A non-streamed chat in the background: its status and JSON body."""

    def __init__(self, url: str, max_tokens: int = 8) -> None:
        super().__init__(daemon=True)
        self.url, self.max_tokens = url, max_tokens
        self.status: int | None = None
        self.body: dict[str, Any] = {}

    def run(self) -> None:
        body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": self.max_tokens}  # fmt: skip
        response = web.post(f"{self.url}/v1/chat/completions", json=body, timeout=120)
        self.status, self.body = response.status_code, response.json()


def model_state(daemon: Daemon) -> dict[str, Any]:
    """The default model's slots and queue, as /health reports them."""
    models: list[dict[str, Any]] = web.get(f"{daemon.url}/health", timeout=10).json()["models"]
    return models[0]


def refused_while_draining(daemon: Daemon) -> None:
    """A new connection is refused (a request slipping in before the listener closed gets 503
    shutting_down), while the daemon is still running.

    A connection the kernel accepted in the instant the listener closed, before uvicorn read its
    request, is closed unanswered (the request was never handled: a client may retry it, as with any
    HTTP server that stops listening); that too means no new work is taken."""
    deadline = time.monotonic() + 5
    while True:
        assert time.monotonic() < deadline, "the daemon still accepts connections while draining"
        try:
            response = web.get(f"{daemon.url}/v1/models", timeout=5)
        except httpx.ConnectError:
            break
        except (httpx.RemoteProtocolError, httpx.ReadError):  # closed unanswered as the listener closed
            time.sleep(0.05)
            continue
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "shutting_down"
        time.sleep(0.05)
    assert daemon.process.poll() is None, "the daemon exited before its requests finished"


def exit_status(daemon: Daemon, within_s: float) -> int:
    """The daemon's exit status, once it exits (a hang guard of ``within_s``, not a speed goal)."""
    return daemon.process.wait(timeout=within_s)
