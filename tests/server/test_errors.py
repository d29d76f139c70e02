"""Every kind of bad input gets OpenAI's error shape with the right status; never a 500."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests import web
from tests.server.conftest import MODEL_ID, NO_EOS_BIAS, Daemon, start_daemon, stop_daemon

OK_MESSAGES = [{"role": "user", "content": "Hi"}]


def _assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in response.text
    if code is not None:
        assert error["code"] == code
    return error  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("path", "content", "param"),
    [
        ("chat/completions", b"{not json", None),
        ("chat/completions", b'{"model": "x"', None),
        ("chat/completions", b"[]", None),
        ("chat/completions", b'{"model": "smollm2-135m-instruct"}', "messages"),
        ("chat/completions", b'{"messages": []}', "messages"),
        ("chat/completions", b'{"messages": [{"role": "wizard", "content": "x"}]}', "messages.0.role"),
        ("chat/completions", b'{"messages": [{"role": "user"}]}', None),
        (
            "chat/completions",
            b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}',
            "max_tokens",
        ),
        (
            "chat/completions",
            b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"}',
            "max_tokens",
        ),
        (
            "chat/completions",
            b'{"messages": [{"role": "user", "content": "x"}], "temperature": 9}',
            "temperature",
        ),
        ("chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "n": 2}', "n"),
        (
            "chat/completions",
            b'{"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}',
            None,
        ),
        (
            "chat/completions",
            b'{"messages": [{"role": "user", "content": "x"}], "logprobs": false, "top_logprobs": 2}',
            None,
        ),
        (
            "chat/completions",
            b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}',
            "messages.0.content",
        ),
        (
            "chat/completions",
            b'{"messages": [{"role": "user", "content": "x"}], "logit_bias": {"abc": 1}}',
            None,
        ),
        (
            "chat/completions",
            b'{"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema"}}',
            None,
        ),
        ("completions", b'{"prompt": ""}', "prompt"),
        ("completions", b'{"prompt": ["a", "b"]}', "prompt"),
        ("completions", b'{"prompt": [1, 99999999]}', "prompt"),
        ("completions", b"{}", "prompt"),
        ("completions", b'{"prompt": [1, -4211]}', "prompt"),
        ("embeddings", b'{"input": [1, 99999999]}', "input"),
        ("embeddings", b'{"input": [[1, 2], [-4211, 64]]}', "input"),
        ("embeddings", b'{"input": [-6841529866566465444, 98]}', "input"),
        ("embeddings", b'{"input": ""}', "input"),
        ("embeddings", b"{}", "input"),
        ("embeddings", b'{"input": "x", "dimensions": 8}', "dimensions"),
    ],
)
def test_bad_requests_are_400(daemon: Daemon, path: str, content: bytes, param: str | None) -> None:
    response = web.post(f"{daemon.v1}/{path}", content=content, headers={"content-type": "application/json"})
    error = _assert_error(response, 400)
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param


def test_unknown_model_is_404(daemon: Daemon) -> None:
    for path, body in (
        ("chat/completions", {"model": "gpt-9", "messages": OK_MESSAGES}),
        ("completions", {"model": "gpt-9", "prompt": "x"}),
        ("embeddings", {"model": "gpt-9", "input": "x"}),
    ):
        _assert_error(web.post(f"{daemon.v1}/{path}", json=body), 404, "model_not_found")
    _assert_error(web.get(f"{daemon.v1}/models/gpt-9"), 404, "model_not_found")
    _assert_error(web.get(f"{daemon.url}/no/such/route"), 404)


@pytest.mark.parametrize(
    ("method", "path", "status", "shape"),
    [("GET", "/v1/nope", 404, "openai"), ("GET", "/api/nope", 404, "ollama"),
     ("GET", "/v1/messages/nope", 404, "anthropic"), ("GET", "/api/chat", 405, "ollama"),
     ("DELETE", "/v1/messages", 405, "anthropic"), ("PUT", "/v1/chat/completions", 405, "openai")],
)  # fmt: skip
def test_the_router_s_own_errors_are_in_the_api_s_shape(
    daemon: Daemon, method: str, path: str, status: int, shape: str
) -> None:
    # Ollama's and Anthropic's clients read their own error shape; a 404 from the router is no exception.
    response = web.request(method, daemon.url + path, timeout=30)
    assert response.status_code == status
    body = response.json()
    if shape == "ollama":
        assert isinstance(body["error"], str) and body["error"]
    elif shape == "anthropic":
        assert body["type"] == "error" and body["error"]["message"]
        assert body["error"]["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    else:
        assert body["error"]["type"] == "invalid_request_error" and body["error"]["message"]
        assert body["error"]["code"] == ("not_found" if status == 404 else None)


def test_context_overflow_is_stated_not_truncated(daemon: Daemon, client: openai.OpenAI) -> None:
    huge = "word " * 5000
    for body in (
        {"messages": [{"role": "user", "content": huge}], "max_tokens": 1},
        {"messages": OK_MESSAGES, "max_tokens": 4096},
    ):
        error = _assert_error(
            web.post(f"{daemon.v1}/chat/completions", json=body), 400, "context_length_exceeded"
        )
        assert "4096" in str(error["message"])
    unbounded = {
        "messages": [{"role": "user", "content": huge}]
    }  # no max_tokens: the prompt alone is too long
    error = _assert_error(
        web.post(f"{daemon.v1}/chat/completions", json=unbounded), 400, "context_length_exceeded"
    )
    assert str(error["message"]).endswith("tokens, which leaves none to generate")
    _assert_error(web.post(f"{daemon.v1}/embeddings", json={"input": huge}), 400, "context_length_exceeded")
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL_ID, prompt=huge, max_tokens=1)
    assert caught.value.code == "context_length_exceeded"


def test_form_content_type_is_read_as_json(daemon: Daemon) -> None:
    # `curl -d` sends application/x-www-form-urlencoded; the README's curl example must work.
    response = web.post(
        f"{daemon.v1}/chat/completions",
        content=b'{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}',
        headers={"content-type": "application/x-www-form-urlencoded"},
        timeout=60,
    )
    assert response.status_code == 200


@pytest.fixture(scope="module")
def small_queue_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = start_daemon(
        tmp_path_factory.mktemp("queue"), "--max-queue", "1", "--api-key", "sekrit", "--parallel", "1"
    )
    yield d
    stop_daemon(d)


def test_api_key(small_queue_daemon: Daemon) -> None:
    url = f"{small_queue_daemon.v1}/models"
    _assert_error(web.get(url), 401, "invalid_api_key")
    _assert_error(web.get(url, headers={"Authorization": "Bearer wrong"}), 401, "invalid_api_key")
    assert web.get(url, headers={"Authorization": "Bearer sekrit"}).status_code == 200
    assert web.get(url, headers={"x-api-key": "sekrit"}).status_code == 200
    assert web.get(f"{small_queue_daemon.url}/health").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        small_queue_daemon.client(api_key="wrong").models.list()


def test_queue_full_is_429_with_retry_after(small_queue_daemon: Daemon) -> None:
    headers = {"Authorization": "Bearer sekrit"}
    long_body = {"messages": OK_MESSAGES, "max_tokens": 3000, "stream": True, "logit_bias": NO_EOS_BIAS}
    url = f"{small_queue_daemon.v1}/chat/completions"
    release = threading.Event()

    def hold() -> None:
        with web.stream("POST", url, json=long_body, headers=headers, timeout=120) as response:
            for _ in response.iter_lines():
                if release.is_set():
                    return

    running = threading.Thread(target=hold)
    running.start()
    waiting = threading.Thread(target=hold)
    waiting.start()
    try:
        for _ in range(100):  # until one generates and the other waits
            model = web.get(f"{small_queue_daemon.url}/health").json()["models"][0]
            if model["busy"] and model["queue_depth"] == 1:
                break
            time.sleep(0.1)
        rejected = web.post(url, json={"messages": OK_MESSAGES, "max_tokens": 1}, headers=headers)
        _assert_error(rejected, 429, "queue_full")
        assert int(rejected.headers["retry-after"]) >= 1
    finally:
        release.set()
        running.join(60)
        waiting.join(60)
    after = web.post(url, json={"messages": OK_MESSAGES, "max_tokens": 1}, headers=headers, timeout=30)
    assert after.status_code == 200


def test_loading_is_503(monkeypatch: pytest.MonkeyPatch) -> None:
    """While the model loads, health is 503 "loading"; a request waits up to model.load_timeout_s, then
    gets 503, and one that asked not to wait gets 503 at once. (The load is made to never finish.)"""
    from fastapi.testclient import TestClient

    from appliance.config import Settings
    from appliance.engine.local import LocalLlamaBackend
    from appliance.hardware.detect import detect_hardware
    from appliance.manager import ModelManager
    from models.catalog import LocalModel
    from models.embedded import embedded_model_path
    from server.app import create_app

    path = embedded_model_path()
    assert path is not None
    monkeypatch.setattr(LocalLlamaBackend, "start", lambda self: None)
    settings = Settings(model={"load_timeout_s": 0.5})
    manager = ModelManager(
        settings, detect_hardware(), [LocalModel(MODEL_ID, path, "embedded")], default_id=MODEL_ID
    )
    # The daemon answers to loopback names only, not TestClient's default host "testserver".
    with TestClient(create_app(settings, manager), base_url="http://127.0.0.1") as client:
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "loading"
        waited = client.post("/v1/chat/completions", json={"messages": OK_MESSAGES})
        _assert_error(waited, 503, "model_loading")
        assert "still loading after 0.5 s" in waited.json()["error"]["message"]
        no_wait = client.post(
            "/v1/chat/completions",
            json={"messages": OK_MESSAGES},
            headers={"X-Appliance-Wait-For-Load": "false"},
        )
        _assert_error(no_wait, 503, "model_loading")
