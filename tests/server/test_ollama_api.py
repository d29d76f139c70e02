"""Ollama's API (`/api/*`) driven by the official `ollama` Python client against a real daemon."""

from __future__ import annotations

import json

import ollama
import pytest

from tests import web
from tests.server.conftest import MODEL_ID, Daemon


@pytest.fixture(scope="module")
def client(daemon: Daemon) -> ollama.Client:
    return ollama.Client(host=daemon.url, timeout=120)


def test_version_tags_show_and_ps(client: ollama.Client, daemon: Daemon) -> None:
    listed = client.list()
    entry = next(m for m in listed.models if m.model == MODEL_ID)
    assert entry.size and entry.size > 90_000_000 and entry.modified_at is not None
    assert entry.details is not None and entry.details.format == "gguf"
    assert (entry.details.family, entry.details.quantization_level) == ("llama", "Q4_1")
    assert entry.details.parameter_size == "135M"
    shown = client.show(MODEL_ID)
    assert shown.modelinfo is not None and shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.context_length"] == 8192 and "completion" in (shown.capabilities or [])
    running = client.ps()
    loaded = next(m for m in running.models if m.model == MODEL_ID)
    assert loaded.size and loaded.size_vram == 0 and loaded.expires_at is not None
    assert web.get(f"{daemon.url}/api/version", timeout=10).json()["version"]


def test_chat_streams_and_answers_whole(client: ollama.Client) -> None:
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    options = {"temperature": 0, "num_predict": 12}
    whole = client.chat(MODEL_ID, messages=messages, options=options, stream=False)
    assert whole.done and whole.message.role == "assistant" and whole.message.content
    assert whole.eval_count and 1 <= whole.eval_count <= 12 and whole.prompt_eval_count
    assert whole.done_reason in ("stop", "length") and whole.total_duration
    parts = list(client.chat(MODEL_ID, messages=messages, options=options, stream=True))
    assert parts[-1].done and not any(p.done for p in parts[:-1])
    assert "".join(p.message.content or "" for p in parts) == whole.message.content  # temperature 0


def test_generate_format_json_and_load(client: ollama.Client) -> None:
    answer = client.generate(MODEL_ID, prompt="Name a colour.", options={"temperature": 0, "num_predict": 8})
    assert answer.done and answer.response
    structured = client.generate(MODEL_ID, prompt="Give a JSON object with a name.", format="json",
                                 options={"temperature": 0, "num_predict": 40})  # fmt: skip
    if structured.done_reason == "stop":  # not cut by num_predict: then it is whole JSON
        assert isinstance(json.loads(structured.response), dict)
    loaded = client.generate(MODEL_ID, prompt="")
    assert loaded.done and loaded.done_reason == "load"
    raw = client.generate(MODEL_ID, prompt="Once upon a time", raw=True, options={"num_predict": 5})
    assert raw.done and raw.eval_count == 5


def test_embed(client: ollama.Client) -> None:
    result = client.embed(MODEL_ID, input=["first text", "second text"])
    assert len(result.embeddings) == 2 and len(result.embeddings[0]) == 576
    assert abs(sum(x * x for x in result.embeddings[0]) - 1.0) < 1e-3  # normalised, as Ollama's are
    # The older endpoint (one prompt, one vector), which the client still offers: the same vector.
    legacy = client.embeddings(MODEL_ID, prompt="first text")
    assert len(legacy.embedding) == 576
    assert max(abs(a - b) for a, b in zip(legacy.embedding, result.embeddings[0], strict=True)) < 1e-6
    with pytest.raises(ollama.ResponseError) as empty:
        client.embeddings(MODEL_ID, prompt="")
    assert empty.value.status_code == 400 and "prompt" in empty.value.error


def test_errors_are_ollamas_shape(client: ollama.Client, daemon: Daemon) -> None:
    with pytest.raises(ollama.ResponseError) as missing:
        client.chat("no-such-model", messages=[{"role": "user", "content": "hi"}], stream=False)
    assert missing.value.status_code == 404 and "not found" in missing.value.error
    logs = web.get(f"{daemon.url}/appliance/v1/logs", params={"limit": 1}, timeout=10).json()["requests"]
    assert (logs[-1]["endpoint"], logs[-1]["model"], logs[-1]["status"]) == (
        "/api/chat",
        "no-such-model",
        "404",
    )
    with pytest.raises(ollama.ResponseError) as images:
        client.chat(MODEL_ID, messages=[{"role": "user", "content": "hi", "images": ["aGk="]}], stream=False)
    assert images.value.status_code == 400 and "images" in images.value.error
    bad = web.post(f"{daemon.url}/api/chat", content=b"{not json", timeout=10)
    assert bad.status_code == 400 and "error" in bad.json()


@pytest.mark.parametrize(
    ("path", "extra", "expected"),
    [
        ("chat", {"tools": ["search"]}, "tools.0: Input should be an object"),
        ("chat", {"tools": [{"type": "function"}]}, "missing required field 'tools.0.function'"),
        ("chat", {"tools": {"a": 1}}, "tools: Input should be a valid array"),
        ("chat", {"options": {"temperature": "hot"}}, "options.temperature: Input should be a valid number"),
        ("generate", {"options": {"num_predict": "many"}}, "options.num_predict: Input should be"),
        ("generate", {"options": {"stop": 5}}, "options.stop"),
        ("generate", {"options": {"top_p": 7}}, "options.top_p: Input should be less than or equal to 1"),
        ("chat", {"messages": [{"role": "assistant", "content": "", "tool_calls": [{"function": 3}]}]},
         "messages.0.tool_calls.0.function: Input should be an object"),
        ("chat", {"messages": [{"role": "assistant", "content": "", "tool_calls": "call"}]},
         "messages.0.tool_calls: Input should be a valid array"),
    ],
)  # fmt: skip
def test_wrong_types_are_400_in_ollamas_shape(
    daemon: Daemon, path: str, extra: dict[str, object], expected: str
) -> None:
    # Found by fuzzing the live daemon: these were 500s.
    hi = [{"role": "user", "content": "hi"}]
    body = {"model": MODEL_ID, "messages": hi, "prompt": "hi", "stream": False, **extra}
    response = web.post(f"{daemon.url}/api/{path}", json=body, timeout=30)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error"} and expected in response.json()["error"]
