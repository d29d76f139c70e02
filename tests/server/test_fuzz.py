"""Bad input never gets a 500: request bodies drawn by Hypothesis, posted to the live daemon's every
endpoint that reads one. Each API's errors must keep its own shape. Fuzzing like this (more examples,
unseeded) found the 500s fixed in bc9ca44; here it runs seeded and bounded, so CI stays repeatable."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.server.conftest import MODEL_ID, Daemon, error_shape_ok

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
)
JSON = st.recursive(
    SCALARS | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", "wizard"]) | JSON},
    optional={"content": st.text(max_size=20) | JSON, "tool_calls": JSON, "name": JSON, "images": JSON},
)
TOOL = st.fixed_dictionaries(
    {"type": st.just("function") | JSON, "function": st.fixed_dictionaries(
        {"name": st.sampled_from(["get_time", "", "a b"]) | JSON}, optional={"parameters": JSON})},
)  # fmt: skip
OPTION_NAMES = st.sampled_from(
    ["temperature", "top_k", "top_p", "min_p", "seed", "stop", "num_ctx", "num_predict"]
)
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "model": st.sampled_from([MODEL_ID, "no-such-model", ""]) | JSON,
    "messages": st.lists(MESSAGE, max_size=3) | JSON,
    "prompt": st.text(max_size=30) | st.lists(st.integers(-5, 60000), max_size=4) | JSON,
    "input": st.text(max_size=20) | st.lists(st.integers(-(2**40), 2**40), max_size=4) | JSON,
    "stream": st.booleans() | JSON,
    "options": st.dictionaries(OPTION_NAMES, JSON | st.floats(-1, 3) | st.integers(-2, 50), max_size=4)
    | JSON,
    "format": st.sampled_from(["json", "", "yaml"]) | JSON,
    "response_format": st.fixed_dictionaries(
        {"type": st.sampled_from(["json_object", "json_schema", "text"])}
    )
    | JSON,
    "tools": st.lists(TOOL | JSON, max_size=2) | JSON,
    "tool_choice": st.sampled_from(["auto", "none", "required"]) | JSON,
    "temperature": st.floats(-1, 3) | JSON,
    "top_p": st.floats(-1, 2) | JSON,
    "top_k": st.integers(-1, 50) | JSON,
    "stop": st.text(max_size=3) | JSON,
    "stop_sequences": st.lists(st.text(max_size=3), max_size=2) | JSON,
    "logit_bias": st.dictionaries(st.text(max_size=6), st.floats(-200, 200), max_size=2) | JSON,
    "logprobs": st.booleans() | JSON,
    "top_logprobs": st.integers(-1, 30) | JSON,
    "system": st.text(max_size=10) | JSON,
    "raw": st.booleans(),
    "max_tokens": st.integers(-2, 8) | JSON,
}
BODIES = st.fixed_dictionaries({}, optional=FIELDS) | JSON


def _bounded(path: str, body: Any) -> Any:
    """Keep generation short: every valid request would otherwise run to its context's end."""
    if isinstance(body, dict):
        if path.startswith("/api/"):
            options = body.get("options")
            if isinstance(options, dict):
                options["num_predict"] = 4
            elif "options" not in body:
                body["options"] = {"num_predict": 4}
        elif "max_tokens" not in body or (isinstance(body["max_tokens"], int) and body["max_tokens"] > 8):
            body["max_tokens"] = 4
    return body


@pytest.mark.parametrize(
    "path",
    ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/messages", "/api/chat",
     "/api/generate", "/api/embed", "/api/embeddings", "/api/show"],
)  # fmt: skip
def test_no_body_gets_a_500(daemon: Daemon, path: str) -> None:
    with httpx.Client(base_url=daemon.url, timeout=60) as client:

        @settings(max_examples=100, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(body=BODIES)
        def post(body: Any) -> None:
            response = client.post(path, json=_bounded(path, body))
            assert response.status_code < 500 or response.status_code == 503, response.text
            if response.status_code >= 400:
                assert error_shape_ok(path, response), response.text
            assert "Traceback" not in response.text

        post()
