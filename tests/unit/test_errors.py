"""server/errors.py: every error reaches the client as OpenAI-shaped JSON with the right status."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from appliance.errors import (
    ApplianceError,
    ContextOverflow,
    EngineFailure,
    InvalidRequest,
    ModelLoadFailed,
    ModelLoading,
    ModelNotFound,
    QueueFull,
    Unauthorized,
)
from server.errors import install_error_handlers

SECRET_DETAIL = "secret internal detail 0xdeadbeef"

# (error raised by a route, status, type, param, code)
APPLIANCE_ERRORS = [
    (
        InvalidRequest("bad temperature", param="temperature"),
        400,
        "invalid_request_error",
        "temperature",
        None,
    ),
    (InvalidRequest("bad request"), 400, "invalid_request_error", None, None),
    (
        ContextOverflow("prompt is 5000 tokens, context is 4096", param="messages"),
        400,
        "invalid_request_error",
        "messages",
        "context_length_exceeded",
    ),
    (Unauthorized("incorrect API key"), 401, "authentication_error", None, "invalid_api_key"),
    (
        ModelNotFound("no model 'gpt-5'", param="model"),
        404,
        "invalid_request_error",
        "model",
        "model_not_found",
    ),
    (QueueFull("too many requests", retry_after_s=7), 429, "rate_limit_error", None, "queue_full"),
    (ModelLoading("the model is loading"), 503, "server_error", None, "model_loading"),
    (ModelLoadFailed("cannot load model.gguf"), 503, "server_error", None, "model_load_failed"),
    (EngineFailure("llama_decode returned -1"), 500, "server_error", None, "engine_failure"),
]


class Body(BaseModel):
    model: str
    max_tokens: int


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/raise/{index}")
    async def raise_appliance_error(index: int) -> None:
        raise APPLIANCE_ERRORS[index][0]

    @app.get("/runtime-error")
    async def raise_runtime_error() -> None:
        raise RuntimeError(SECRET_DETAIL)

    @app.get("/api/raise/{index}")
    @app.get("/v1/messages/raise/{index}")
    async def raise_in_a_dialect(index: int) -> None:
        raise APPLIANCE_ERRORS[index][0]

    @app.get("/api/runtime-error")
    @app.get("/v1/messages/runtime-error")
    async def raise_runtime_error_in_a_dialect() -> None:
        raise RuntimeError(SECRET_DETAIL)

    @app.get("/sync-runtime-error")
    def raise_runtime_error_sync() -> None:
        raise RuntimeError(SECRET_DETAIL)

    @app.post("/body")
    async def with_body(body: Body) -> dict[str, str]:
        return {"model": body.model}

    # Starlette re-raises unexpected errors after the 500 handler has answered; the client must
    # still get that answer, which is what this test looks at.
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _assert_openai_error(body: object) -> dict[str, object]:
    assert isinstance(body, dict)
    assert list(body) == ["error"]
    error = body["error"]
    assert isinstance(error, dict)
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str)
    assert error["message"]
    return error


@pytest.mark.parametrize(
    ("index", "status", "error_type", "param", "code"),
    [(i, *row[1:]) for i, row in enumerate(APPLIANCE_ERRORS)],
    ids=[type(row[0]).__name__ for row in APPLIANCE_ERRORS],
)
def test_appliance_errors_map_to_openai_errors(
    client: TestClient, index: int, status: int, error_type: str, param: str | None, code: str | None
) -> None:
    exc: ApplianceError = APPLIANCE_ERRORS[index][0]

    response = client.get(f"/raise/{index}")

    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert _assert_openai_error(response.json()) == {
        "message": exc.message,
        "type": error_type,
        "param": param,
        "code": code,
    }


@pytest.mark.parametrize("index", range(len(APPLIANCE_ERRORS)))
def test_retry_after_only_on_queue_full(client: TestClient, index: int) -> None:
    response = client.get(f"/raise/{index}")
    if isinstance(APPLIANCE_ERRORS[index][0], QueueFull):
        assert response.headers["retry-after"] == "7"
    else:
        assert "retry-after" not in response.headers


@pytest.mark.parametrize("path", ["/runtime-error", "/sync-runtime-error"])
def test_unexpected_error_is_a_generic_500_without_traceback(client: TestClient, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 500
    error = _assert_openai_error(response.json())
    assert error["type"] == "server_error"
    assert error["param"] is None
    assert error["code"] == "internal_error"
    for leak in ("Traceback", "RuntimeError", SECRET_DETAIL, 'File "', ".py"):
        assert leak not in response.text


# (request body, expected param, fragment of the message)
INVALID_BODIES = [
    ({"max_tokens": 5}, "model", "missing required field 'model'"),
    ({"model": "m"}, "max_tokens", "missing required field 'max_tokens'"),
    ({"model": "m", "max_tokens": "many"}, "max_tokens", "max_tokens: "),
    ({"model": ["m"], "max_tokens": 5}, "model", "model: "),
]


@pytest.mark.parametrize(("body", "param", "fragment"), INVALID_BODIES)
def test_request_validation_failure_is_400_invalid_request(
    client: TestClient, body: dict[str, object], param: str, fragment: str
) -> None:
    response = client.post("/body", json=body)

    assert response.status_code == 400
    error = _assert_openai_error(response.json())
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["code"] is None
    assert isinstance(error["message"], str)
    assert fragment in error["message"]


def test_body_that_is_not_json_is_400(client: TestClient) -> None:
    response = client.post("/body", content=b"{not json", headers={"content-type": "application/json"})

    assert response.status_code == 400
    error = _assert_openai_error(response.json())
    assert error == {
        "message": "the request body is not valid JSON",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


def test_valid_body_passes(client: TestClient) -> None:
    response = client.post("/body", json={"model": "m", "max_tokens": 5})
    assert response.status_code == 200
    assert response.json() == {"model": "m"}


# (method, path, status, type, code): framework errors (HTTPException) get the same shape.
HTTP_ERRORS = [
    ("GET", "/no-such-route", 404, "invalid_request_error", "not_found"),
    ("DELETE", "/body", 405, "invalid_request_error", None),
]


@pytest.mark.parametrize(("method", "path", "status", "error_type", "code"), HTTP_ERRORS)
def test_http_errors_are_openai_errors(
    client: TestClient, method: str, path: str, status: int, error_type: str, code: str | None
) -> None:
    response = client.request(method, path)

    assert response.status_code == status
    error = _assert_openai_error(response.json())
    assert (error["type"], error["code"]) == (error_type, code)


@pytest.mark.parametrize("index", range(len(APPLIANCE_ERRORS)))
def test_ollama_and_anthropic_routes_get_their_own_error_shape(client: TestClient, index: int) -> None:
    exc, status = APPLIANCE_ERRORS[index][0], APPLIANCE_ERRORS[index][1]

    ollama = client.get(f"/api/raise/{index}")
    anthropic = client.get(f"/v1/messages/raise/{index}")

    assert ollama.status_code == anthropic.status_code == status
    assert ollama.json() == {"error": exc.message}
    body = anthropic.json()
    assert body["type"] == "error"
    assert body["error"]["message"] == exc.message
    expected = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                429: "rate_limit_error", 500: "api_error", 503: "overloaded_error"}  # fmt: skip
    assert body["error"]["type"] == expected[status]
    if isinstance(exc, QueueFull):
        assert ollama.headers["retry-after"] == anthropic.headers["retry-after"] == "7"


def test_an_unexpected_error_on_ollama_and_anthropic_routes_is_their_500(client: TestClient) -> None:
    ollama = client.get("/api/runtime-error")
    anthropic = client.get("/v1/messages/runtime-error")

    assert ollama.status_code == anthropic.status_code == 500
    assert ollama.json() == {"error": "internal error; see the daemon's log"}
    assert anthropic.json()["error"]["type"] == "api_error"
    assert SECRET_DETAIL not in ollama.text + anthropic.text
