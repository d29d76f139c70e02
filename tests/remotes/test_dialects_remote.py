"""Every dialect escalates: Ollama's /api/chat and Anthropic's /v1/messages sent to the real vLLM
stand-in (through appliance.remotes.backend.RemoteBackend), whole and streamed, read with the official
clients; the same headers and log line as the OpenAI routes; failover here before the first byte; a
remote lost mid-stream ends the stream in the dialect's own error shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import ollama
import openai
import pytest

from tests import web
from tests.remotes.conftest import Standin, remote_daemon, remote_state
from tests.server.conftest import MODEL_ID, Daemon, error_shape_ok

ASK = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def daemon(standin: Standin, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    # Probed once at start: the failover below must be the request's own, not a probe's finding.
    with remote_daemon(
        standin, tmp_path_factory.mktemp("dialects"), "probe_interval_s = 600", first_byte_s=5
    ) as d:
        yield d


def _last_log(daemon: Daemon) -> dict[str, Any]:
    lines = web.get(f"{daemon.url}/appliance/v1/logs", params={"limit": 1}, timeout=10).json()
    return lines["requests"][-1]  # type: ignore[no-any-return]


def test_ollama_chat_escalates_whole_and_streamed(daemon: Daemon) -> None:
    body = {
        "model": "big-model",
        "messages": ASK,
        "stream": False,
        "options": {"num_predict": 8, "temperature": 0},
    }
    raw = web.post(f"{daemon.url}/api/chat", json=body, timeout=60)
    assert raw.status_code == 200, raw.text
    assert raw.headers["x-appliance-backend"] == "remote:gpu-box"
    assert raw.headers["x-appliance-escalation-reason"] == "capability"
    line = _last_log(daemon)
    assert (line["endpoint"], line["backend"], line["model"], line["reason"], line["status"]) == (
        "/api/chat", "remote:gpu-box", "big-model", "capability", "ok",
    )  # fmt: skip
    assert line["generated_tokens"] == raw.json()["eval_count"] and line["prompt_tokens"] > 0

    client = ollama.Client(host=daemon.url, timeout=60)
    whole = client.chat(model="big-model", messages=ASK, options={"num_predict": 8, "temperature": 0})
    assert whole.message.content and whole.done and whole.eval_count == 8 and whole.prompt_eval_count
    assert whole.message.content == raw.json()["message"]["content"]  # greedy: the same words
    parts = list(client.chat(model="big-model", messages=ASK, stream=True,
                             options={"num_predict": 8, "temperature": 0}))  # fmt: skip
    last = parts[-1]
    assert last.done and last.done_reason == whole.done_reason and last.eval_count == whole.eval_count
    assert "".join(p.message.content or "" for p in parts) == whole.message.content


def test_anthropic_messages_escalate_whole_and_streamed(daemon: Daemon) -> None:
    client = anthropic.Anthropic(base_url=daemon.url, api_key="unused", max_retries=0)
    greedy = {"temperature": 0}
    raw = client.messages.with_raw_response.create(model="big-model", max_tokens=8, messages=ASK,  # type: ignore[arg-type]
                                                   extra_body=greedy)  # fmt: skip
    assert raw.headers["x-appliance-backend"] == "remote:gpu-box"
    assert raw.headers["x-appliance-escalation-reason"] == "capability"
    whole = raw.parse()
    assert whole.content[0].type == "text" and whole.content[0].text
    assert whole.stop_reason in ("max_tokens", "end_turn") and 1 <= whole.usage.output_tokens <= 8
    assert whole.usage.input_tokens > 0
    with client.messages.stream(model="big-model", max_tokens=8, messages=ASK, extra_body=greedy) as stream:  # type: ignore[arg-type]
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == whole.content[0].text and final.usage.output_tokens == whole.usage.output_tokens
    assert final.stop_reason == whole.stop_reason
    assert final.usage.input_tokens == whole.usage.input_tokens  # from message_delta: vLLM says it last
    line = _last_log(daemon)
    assert (line["endpoint"], line["backend"], line["status"]) == ("/v1/messages", "remote:gpu-box", "ok")
    # vLLM names the stop string that ended the text (its stop_reason): Anthropic's stop_sequence.
    sequence = whole.content[0].text.strip().split()[-1]
    cut = client.messages.create(model="big-model", max_tokens=8, messages=ASK, extra_body=greedy,
                                 stop_sequences=["never written", sequence])  # fmt: skip
    assert (cut.stop_reason, cut.stop_sequence) == ("stop_sequence", sequence)


def test_openai_responses_escalate_as_chat_whole_and_streamed(daemon: Daemon) -> None:
    """A Responses request goes to the remote as a chat completion (the stand-in speaks no Responses
    API) and comes back as a response, whole and streamed."""
    client = openai.OpenAI(base_url=daemon.v1, api_key="unused", max_retries=0)
    asked: Any = {"model": "big-model", "input": ASK, "max_output_tokens": 8, "temperature": 0}
    raw = client.responses.with_raw_response.create(**asked)
    assert raw.headers["x-appliance-backend"] == "remote:gpu-box"
    whole = raw.parse()
    assert whole.output_text and whole.usage is not None and 1 <= whole.usage.output_tokens <= 8
    line = _last_log(daemon)
    assert (line["endpoint"], line["backend"], line["status"]) == ("/v1/responses", "remote:gpu-box", "ok")
    with client.responses.stream(**asked) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response() if whole.status == "completed" else None
    assert text == whole.output_text
    assert final is None or final.output_text == text


def test_an_error_event_mid_stream_then_failover_here_before_the_first_byte(
    daemon: Daemon, standin: Standin
) -> None:
    story = [{"role": "user", "content": "Tell a long story about a dragon."}]
    body = {"model": MODEL_ID, "max_tokens": 1000, "messages": story, "stream": True}
    always = {"X-Escalate": "always"}
    url = f"{daemon.url}/v1/messages"
    try:
        with web.stream("POST", url, json=body, headers=always, timeout=60) as response:
            assert response.headers["x-appliance-backend"] == "remote:gpu-box"
            lines = response.iter_lines()
            while "content_block_delta" not in next(lines):
                pass
            standin.netns("cut")
            rest = list(lines)
        # Anthropic's own error event (between_chunks_s after the cut), as its SDK reads one.
        assert [line for line in rest if line.startswith("event: ")][-1] == "event: error", rest[-6:]
        error = json.loads(rest[rest.index("event: error") + 1].removeprefix("data: "))
        assert error["type"] == "error" and "gpu-box" in error["error"]["message"], error
        # The remote is still healthy as far as its (rare) probes know: the request tries it, gets no
        # first byte, and is served here.
        chat = {"model": MODEL_ID, "messages": ASK, "stream": False, "options": {"num_predict": 4}}
        raw = web.post(f"{daemon.url}/api/chat", json=chat, headers=always, timeout=60)
        assert raw.status_code == 200 and raw.json()["message"]["content"]
        assert raw.headers["x-appliance-backend"] == "local"
        assert "remote failed before answering: gpu-box" in daemon.log()
    finally:
        standin.netns("restore")
    assert remote_state(daemon)["breaker"] != "open"
    answer = ollama.Client(host=daemon.url, timeout=60).chat(model="big-model", messages=ASK,
                                                             options={"num_predict": 4})  # fmt: skip
    assert answer.done and answer.eval_count == 4


# A 1x1 PNG: the stand-in's text model refuses any image, so its content does not matter.
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


def test_images_go_to_the_remote_that_reads_them(daemon: Daemon) -> None:
    """The model is here, but reads no images: a chat carrying one goes to the remote said to (reason
    capability), in every dialect; the stand-in's text model then refuses it, and its refusal comes
    back in the dialect's shape (a 4xx, never a 500)."""
    u = f"data:image/png;base64,{PIXEL}"
    asks = {
        "/v1/chat/completions": {"model": MODEL_ID, "max_tokens": 4, "messages": [{"role": "user",
            "content": [{"type": "text", "text": "What?"}, {"type": "image_url", "image_url": {"url": u}}]}]},
        "/api/chat": {"model": MODEL_ID, "stream": False, "messages": [
            {"role": "user", "content": "What is this?", "images": [PIXEL]}]},
        "/v1/messages": {"model": MODEL_ID, "max_tokens": 4, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
            {"type": "text", "text": "What is this?"}]}]},
    }  # fmt: skip
    for route, body in asks.items():
        answer = web.post(f"{daemon.url}{route}", json=body, timeout=60)
        assert (answer.headers["x-appliance-backend"], answer.headers["x-appliance-escalation-reason"]) == (
            "remote:gpu-box", "capability"
        ), (route, answer.text)  # fmt: skip
        assert 400 <= answer.status_code < 500 and error_shape_ok(route, answer), (route, answer.text)
    text_only = {"model": MODEL_ID, "max_tokens": 2, "messages": ASK}
    assert (
        web.post(f"{daemon.url}/v1/chat/completions", json=text_only, timeout=60).headers[
            "x-appliance-backend"
        ]
        == "local"
    )
