"""The published OpenAPI document (server/openapi.py) is valid OpenAPI, and says for every route what it
reads and answers: the request body of each POST, the errors in the route's own dialect."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from openapi_spec_validator import validate

from appliance.config import Settings
from appliance.hardware.detect import detect_hardware
from appliance.manager import ModelManager
from appliance.pulls import PullEvent
from models.catalog import LocalModel
from models.embedded import embedded_model_path
from server.app import create_app

MODEL_ID = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    path = embedded_model_path()
    assert path is not None
    settings = Settings()
    manager = ModelManager(
        settings, detect_hardware(), [LocalModel(MODEL_ID, path, "embedded")], default_id=MODEL_ID
    )
    return create_app(settings, manager).openapi()  # no lifespan: nothing is loaded


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    paths = document["paths"].items()
    return [(path, method, operation) for path, methods in paths for method, operation in methods.items()]


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)
    assert len(_operations(document)) >= 28


def test_every_body_is_described(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for path, method, operation in _operations(document):
        bodiless = ("/appliance/v1/models/{name}/unload", "/appliance/v1/models/{name}",
                    "/appliance/v1/reload", "/v1/responses/{response_id}")  # fmt: skip
        if method not in ("post", "delete") or path in bodiless:
            assert method not in ("post", "delete") or "requestBody" not in operation, path
            continue
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        name = body["$ref"].rsplit("/", 1)[1]
        assert schemas[name]["type"] == "object" and schemas[name]["properties"], (path, name)
        # Unknown fields are accepted (and logged), as OpenAI clients keep sending new ones.
        assert schemas[name]["additionalProperties"] is True, (path, name)
    chat = schemas["ChatCompletionRequest"]
    assert chat["required"] == ["messages"] and chat["properties"]["messages"]["minItems"] == 1


@pytest.mark.parametrize(
    ("path", "method", "error"),
    [("/v1/chat/completions", "post", "OpenAIError"), ("/api/chat", "post", "OllamaError"),
     ("/v1/messages", "post", "AnthropicError"), ("/appliance/v1/models/pull", "post", "OpenAIError")],
)  # fmt: skip
def test_errors_in_the_dialects_shape(document: dict[str, Any], path: str, method: str, error: str) -> None:
    responses = document["paths"][path][method]["responses"]
    for status in ("400", "401", "403", "413", "429"):
        schema = responses[status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{error}"}, (path, status)
    assert responses["429"]["headers"]["Retry-After"]["required"] is True
    assert "422" not in responses  # bad parameters are 400s here
    media = set(responses["200"]["content"])
    assert media >= {"application/json"}


def test_streams_are_described(document: dict[str, Any]) -> None:
    paths = document["paths"]
    assert "text/event-stream" in paths["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert "text/event-stream" in paths["/v1/messages"]["post"]["responses"]["200"]["content"]
    for path in ("/api/chat", "/api/generate", "/api/pull", "/appliance/v1/models/pull"):
        assert "application/x-ndjson" in paths[path]["post"]["responses"]["200"]["content"], path


def test_a_pull_line_is_described_by_the_fields_of_the_event_that_writes_it(document: dict[str, Any]) -> None:
    """The NDJSON lines of /appliance/v1/models/pull are PullEvent.to_json(): the schema has PullEvent's
    fields, no more and no fewer, and the route's 404 (a missing model) is described."""
    responses = document["paths"]["/appliance/v1/models/pull"]["post"]["responses"]
    line = responses["200"]["content"]["application/x-ndjson"]["schema"]
    schema = document["components"]["schemas"][line["$ref"].rsplit("/", 1)[1]]
    assert set(schema["properties"]) == {field.name for field in dataclasses.fields(PullEvent)}
    assert schema["required"] == ["status"] and "error" in schema["properties"]["status"]["enum"]
    assert {"enum": ["not_found", "failed"], "type": "string"} in schema["properties"]["kind"]["anyOf"]
    assert responses["404"]["content"]["application/json"]["schema"]["$ref"].endswith("/OpenAIError")
