"""Ollama's API (`/api/*`) driven by the official `ollama` Python client against a real daemon."""

from __future__ import annotations

import json

import ollama
import pytest

from tests import web
from tests.server.conftest import MODEL_ID, Daemon, wait_until


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


def test_show_gives_the_models_template_metadata_and_settings(client: ollama.Client) -> None:
    shown = client.show(MODEL_ID)
    assert shown.template and "<|im_start|>" in shown.template  # the GGUF's own Jinja template
    info = shown.modelinfo or {}
    assert info["general.parameter_count"] == 134_515_008 and info["llama.attention.head_count_kv"] == 3
    assert info["tokenizer.ggml.eos_token_id"] == 2 and info["tokenizer.ggml.tokens"] is None  # not verbose
    assert "tokenizer.chat_template" not in info
    assert shown.modelfile and shown.modelfile.splitlines()[1].startswith("FROM /")
    assert shown.details is not None and shown.details.quantization_level == "Q4_1"


def test_replies_say_how_long_the_load_took(client: ollama.Client) -> None:
    answer = client.chat(MODEL_ID, messages=[{"role": "user", "content": "Hi"}], options={"num_predict": 2})
    assert answer.load_duration is not None and answer.total_duration is not None
    assert 0 < answer.load_duration < answer.total_duration
    parts = (answer.load_duration, answer.prompt_eval_duration or 0, answer.eval_duration or 0)
    assert sum(parts) <= answer.total_duration


def test_empty_messages_load_the_model_and_generate_nothing(client: ollama.Client) -> None:
    loaded = client.chat(MODEL_ID, messages=[])
    assert (loaded.done, loaded.done_reason, loaded.message.content) == (True, "load", "")
    assert not loaded.eval_count


def test_think_on_a_model_that_cannot_is_ollamas_400(client: ollama.Client) -> None:
    hi = [{"role": "user", "content": "hi"}]
    for think in (True, "high"):
        with pytest.raises(ollama.ResponseError) as refused:
            client.chat(MODEL_ID, messages=hi, think=think, options={"num_predict": 2})  # type: ignore[arg-type]
        assert refused.value.status_code == 400
        assert refused.value.error == f'"{MODEL_ID}" does not support thinking'
    assert client.chat(MODEL_ID, messages=hi, think=False, options={"num_predict": 2}).done


def test_logprobs_and_dimensions_are_honoured(client: ollama.Client) -> None:
    hi = [{"role": "user", "content": "hi"}]
    answer = client.chat(MODEL_ID, messages=hi, logprobs=True, top_logprobs=2, options={"num_predict": 3})
    assert answer.logprobs is not None and len(answer.logprobs) == answer.eval_count == 3
    assert "".join(lp.token for lp in answer.logprobs) == answer.message.content
    assert all(len(lp.top_logprobs or []) == 2 and lp.logprob <= 0 for lp in answer.logprobs)
    streamed = list(
        client.generate(MODEL_ID, prompt="Hi", logprobs=True, options={"num_predict": 3}, stream=True)
    )
    assert sum(len(part.logprobs or []) for part in streamed) == 3
    full = client.embed(MODEL_ID, input="a text").embeddings[0]
    cut = client.embed(MODEL_ID, input="a text", dimensions=8).embeddings[0]
    assert len(cut) == 8 and abs(sum(x * x for x in cut) - 1) < 1e-6
    norm = sum(x * x for x in full[:8]) ** 0.5
    assert max(abs(a - b / norm) for a, b in zip(cut, full[:8], strict=True)) < 1e-6


@pytest.mark.parametrize(
    ("path", "extra", "expected"),
    [
        ("generate", {"template": "{{ .Prompt }}"}, "template (a Go template) is not run here"),
        ("generate", {"context": [1, 2, 3]}, "context (an earlier /api/generate's tokens) is not kept"),
        ("chat", {"top_logprobs": 3}, "top_logprobs needs logprobs: true"),
        ("chat", {"logprobs": True, "top_logprobs": 21}, "top_logprobs must be between 0 and 20"),
    ],
)  # fmt: skip
def test_fields_that_cannot_be_honoured_are_400s(
    daemon: Daemon, path: str, extra: dict[str, object], expected: str
) -> None:
    body = {
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": "hi"}],
        "prompt": "hi",
        "stream": False,
    }
    response = web.post(f"{daemon.url}/api/{path}", json={**body, **extra}, timeout=30)
    assert response.status_code == 400, response.text
    assert expected in response.json()["error"]


def test_options_this_engine_lacks_are_named_in_a_warning(client: ollama.Client, daemon: Daemon) -> None:
    options = {"num_predict": 1, "mirostat": 2, "num_gpu": 1}
    client.generate(MODEL_ID, prompt="Hi", options=options)
    assert wait_until(lambda: "/api/generate: ignoring options num_gpu" in daemon.log())
    assert "mirostat (not in this engine's sampler)" in daemon.log()
