"""SSE streaming: framing, chunk shapes, usage, and a client that walks away mid-stream."""

from __future__ import annotations

import contextlib
import json
import threading

import httpx
import openai

from tests import web
from tests.server.conftest import MODEL_ID, NO_EOS_BIAS, Daemon

HELLO = [{"role": "user", "content": "Tell me about the sea."}]


def _events(response: httpx.Response) -> list[str]:
    """The data payloads of an SSE response, checking the framing as it goes."""
    payloads = []
    for line in response.iter_lines():
        if not line:
            continue
        assert line.startswith("data: "), line
        payloads.append(line.removeprefix("data: "))
    return payloads


def test_stream_shape_and_done(daemon: Daemon) -> None:
    body = {"model": MODEL_ID, "messages": HELLO, "max_tokens": 6, "stream": True, "logit_bias": NO_EOS_BIAS}
    with web.stream("POST", f"{daemon.v1}/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        payloads = _events(response)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert len({c["id"] for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == MODEL_ID for c in chunks)
    assert all("usage" not in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    whole = web.post(
        f"{daemon.v1}/chat/completions", json={**body, "stream": False, "temperature": 0}, timeout=60
    ).json()
    assert text and whole["usage"]["completion_tokens"] == 6


def test_stream_matches_non_stream_and_include_usage(client: openai.OpenAI) -> None:
    kwargs = {"model": MODEL_ID, "messages": HELLO, "max_tokens": 20, "temperature": 0}
    whole = client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    chunks = list(
        client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})  # type: ignore[call-overload]
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == whole.usage.completion_tokens
    assert last.usage.prompt_tokens == whole.usage.prompt_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_completions_stream(client: openai.OpenAI) -> None:
    chunks = list(
        client.completions.create(
            model=MODEL_ID,
            prompt="Once upon a time",
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"logit_bias": NO_EOS_BIAS},
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text


def test_disconnect_mid_stream_frees_the_model(daemon: Daemon) -> None:
    # A generation that would run for a long time (4000 tokens, end-of-text banned)...
    body = {
        "model": MODEL_ID,
        "messages": HELLO,
        "max_tokens": 4000,
        "stream": True,
        "logit_bias": NO_EOS_BIAS,
    }
    with web.stream("POST", f"{daemon.v1}/chat/completions", json=body, timeout=60) as response:
        lines = response.iter_lines()
        seen = 0
        for line in lines:
            if line.startswith("data: "):
                seen += 1
            if seen >= 3:
                break
    # ...is abandoned after 3 chunks. The next request must be served at once, not after the
    # abandoned one: the whole 4000-token generation would take far longer than this timeout.
    reply = web.post(
        f"{daemon.v1}/chat/completions",
        json={"model": MODEL_ID, "messages": HELLO, "max_tokens": 3},
        timeout=15,
    )
    assert reply.status_code == 200
    health = web.get(f"{daemon.url}/health").json()
    assert health["status"] == "ok"


def test_disconnect_while_not_streaming(daemon: Daemon) -> None:
    body = {"model": MODEL_ID, "messages": HELLO, "max_tokens": 4000, "logit_bias": NO_EOS_BIAS}
    done = threading.Event()

    def abandon() -> None:
        with contextlib.suppress(httpx.TimeoutException):
            web.post(f"{daemon.v1}/chat/completions", json=body, timeout=1.0)
        done.set()

    thread = threading.Thread(target=abandon)
    thread.start()
    done.wait(10)
    thread.join()
    reply = web.post(
        f"{daemon.v1}/chat/completions",
        json={"model": MODEL_ID, "messages": HELLO, "max_tokens": 3},
        timeout=15,
    )
    assert reply.status_code == 200
