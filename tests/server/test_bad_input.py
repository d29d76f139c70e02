"""The bad-input corpus, sent to every dialect's generation and embedding routes and to the appliance's
own pull and load: malformed, huge and deeply nested JSON, invalid UTF-8, lone surrogates, raw control
characters, NaN and infinities, negative and huge numbers, wrong types, 10,000 messages. Each gets a 4xx
in the route's own error shape with a readable message (no traceback, no Python repr), promptly, and the
daemon stays healthy after each. Odd but valid input (escaped control characters, a 70-bit seed) is
answered, not refused. tests/server/test_fuzz.py draws bodies at random; this is the fixed list."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests import web
from tests.server.conftest import MODEL_ID, Daemon, error_shape_ok

HANG_GUARD_S = 120
TEXT = "@@TEXT@@"  # where a case puts its raw JSON: in a string field the route reads
NUMBER = "@@NUMBER@@"  # ... in a number field
HI = [{"role": "user", "content": "hi"}]
ASK = [{"role": "user", "content": TEXT}]
ROUTES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "/v1/chat/completions": (
        {"model": MODEL_ID, "messages": ASK, "max_tokens": 2},
        {"model": MODEL_ID, "messages": HI, "max_tokens": NUMBER},
    ),
    "/v1/completions": (
        {"model": MODEL_ID, "prompt": TEXT, "max_tokens": 2},
        {"model": MODEL_ID, "prompt": "hi", "max_tokens": NUMBER},
    ),
    "/v1/embeddings": (
        {"model": MODEL_ID, "input": TEXT},
        {"model": MODEL_ID, "input": "hi", "top_k": NUMBER},
    ),
    "/v1/messages": (
        {"model": MODEL_ID, "messages": ASK, "max_tokens": 2},
        {"model": MODEL_ID, "messages": HI, "max_tokens": NUMBER},
    ),
    "/v1/responses": (
        {"model": MODEL_ID, "input": TEXT, "max_output_tokens": 2},
        {"model": MODEL_ID, "input": "hi", "max_output_tokens": NUMBER},
    ),
    "/api/chat": (
        {"model": MODEL_ID, "messages": ASK, "stream": False, "options": {"num_predict": 2}},
        {"model": MODEL_ID, "messages": HI, "stream": False, "options": {"num_predict": NUMBER}},
    ),
    "/api/generate": (
        {"model": MODEL_ID, "prompt": TEXT, "stream": False, "options": {"num_predict": 2}},
        {"model": MODEL_ID, "prompt": "hi", "stream": False, "options": {"num_predict": NUMBER}},
    ),
    "/api/embed": (
        {"model": MODEL_ID, "input": TEXT},
        {"model": MODEL_ID, "input": "hi", "options": {"top_k": NUMBER}},
    ),
    "/api/embeddings": (
        {"model": MODEL_ID, "prompt": TEXT},
        {"model": MODEL_ID, "prompt": "hi", "options": {"top_k": NUMBER}},
    ),
    "/appliance/v1/models/pull": (
        {"model": TEXT, "stream": False},
        {"model": "owner/repo", "stream": NUMBER},
    ),
    f"/appliance/v1/models/{MODEL_ID}/load": ({"keep_alive": TEXT}, {"keep_alive": NUMBER}),
}
"""Each route's body with a string field to spoil, and one with a number field, valid when TEXT is a short
string and NUMBER a small count. (OpenAI's embeddings take no number: ``top_k`` there is an unknown field,
which any JSON value passes, so only numbers JSON itself refuses are refused there.) A pull is never sent
valid: each case is refused before a pull could start, and the daemon's hubs are dead ports anyway."""
# Cases that are valid on a route: a load's keep_alive is a duration, so a number or "10" is one (2**70
# seconds means until the memory is needed); an unknown field takes any JSON value.
VALID_ON = {
    "/appliance/v1/models/pull": {"true"},  # stream: true would start the pull
    f"/appliance/v1/models/{MODEL_ID}/load": {"a number", "2**70", "a string", "a fraction"},
    "/v1/embeddings": {"2**70", "a string", "true", "a fraction", "a list"},
}

HUGE_BYTES = 17 * 1024 * 1024  # past the 16 MiB default of server.max_body_size
DEEP = 100_000
TEXT_CASES: dict[str, bytes] = {
    "lone surrogate": b'"\\ud800 alone"',
    "lone low surrogate": b'"x\\udc00"',
    "invalid UTF-8": b'"\xff\xfe\xfa"',
    "UTF-8 of a surrogate": b'"\xed\xa0\x80"',
    "overlong UTF-8": b'"\xc0\xaf"',
    "raw control character": b'"a\x01b"',
    "raw newline in a string": b'"a\nb"',
    "NaN": b"NaN",
    "Infinity": b"Infinity",
    "1e400": b"1e400",
    "nested arrays": b"[" * DEEP + b"]" * DEEP,
    "nested objects": b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    "a number": b"12",
    "an object": b'{"text": "hi"}',
    "a list of numbers and strings": b'[1, "a", {"b": 2}]',
}
NUMBER_CASES: dict[str, bytes] = {
    "NaN": b"NaN",
    "Infinity": b"Infinity",
    "-Infinity": b"-Infinity",
    "1e400": b"1e400",
    "2**70": str(2**70).encode(),
    "-1e400": b"-1e400",
    "4301 digits": b"9" * 4301,
    "a string": b'"10"',
    "true": b"true",
    "a fraction": b"2.5",
    "a list": b"[2]",
}
BODY_CASES: dict[str, bytes] = {
    "not JSON": b"{not json",
    "cut short": b'{"model": "x", "messages": [',
    "trailing garbage": b'{"model": "x"} trailing',
    "a list": b"[]",
    "a string": b'"hello"',
    "null": b"null",
    "a number": b"42",
    "two objects": b"{}{}",
    "single quotes": b"{'model': 'x'}",
    "a comment": b'{"model": "x" /* hi */}',
    "UTF-16": '{"model": "x"}'.encode("utf-16"),
    "a byte order mark": b'\xef\xbb\xbf{"model": "x"}',
    "only nesting": b"[" * DEEP + b"]" * DEEP,
    "huge junk": b"{" + b" " * HUGE_BYTES,
}
# Readable: no traceback, no Python repr of an object, a class or bytes.
UNREADABLE = re.compile(r"Traceback|object at 0x|<class '|\bb'|\\x[0-9a-f]{2}|ValidationError|Errno")


def _body(route: str, text: bytes | None = None, number: bytes | None = None) -> bytes:
    """The route's body with ``text`` (raw JSON) in its string field, or ``number`` in its number field;
    valid without either."""
    with_text, with_number = ROUTES[route]
    if number is not None:
        return json.dumps(with_number).encode().replace(b'"' + NUMBER.encode() + b'"', number)
    text = text or (b'"5m"' if route.endswith("/load") else b'"hi"')
    return json.dumps(with_text).encode().replace(b'"' + TEXT.encode() + b'"', text)


def _refused(daemon: Daemon, route: str, content: bytes, status: int | None = None) -> str:
    """Post ``content`` to ``route``: it must be a 4xx (``status`` when given) in the route's shape with a
    readable message, the daemon healthy afterwards. The message."""
    response = web.post(f"{daemon.url}{route}", content=content, timeout=HANG_GUARD_S)
    assert 400 <= response.status_code < 500, response.text[:2000]
    assert status is None or response.status_code == status, response.text[:2000]
    assert error_shape_ok(route, response), response.text[:2000]
    error = response.json()["error"]
    message = error if isinstance(error, str) else error["message"]
    assert message and len(message) <= 1000 and not UNREADABLE.search(message), message
    assert web.get(f"{daemon.url}/health", timeout=HANG_GUARD_S).status_code == 200
    return str(message)


@pytest.mark.parametrize("route", [route for route in ROUTES if "pull" not in route])
def test_the_bodies_are_valid_unspoiled(offline_daemon: Daemon, route: str) -> None:
    """The cases below are refused for what each spoils, not for something else."""
    count = b"600" if route.endswith("/load") else b"2"  # seconds to stay loaded; tokens
    for body in (_body(route), _body(route, number=count)):
        response = web.post(f"{offline_daemon.url}{route}", content=body, timeout=HANG_GUARD_S)
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("case", list(BODY_CASES))
@pytest.mark.parametrize("route", list(ROUTES))
def test_malformed_bodies(offline_daemon: Daemon, route: str, case: str) -> None:
    _refused(offline_daemon, route, BODY_CASES[case])


@pytest.mark.parametrize("case", list(TEXT_CASES))
@pytest.mark.parametrize("route", list(ROUTES))
def test_bad_strings(offline_daemon: Daemon, route: str, case: str) -> None:
    if case in VALID_ON.get(route, ()):
        pytest.skip(f"valid on {route}")
    _refused(offline_daemon, route, _body(route, text=TEXT_CASES[case]))


@pytest.mark.parametrize("case", list(NUMBER_CASES))
@pytest.mark.parametrize("route", list(ROUTES))
def test_bad_numbers(offline_daemon: Daemon, route: str, case: str) -> None:
    if case in VALID_ON.get(route, ()):
        pytest.skip(f"valid on {route}")
    _refused(offline_daemon, route, _body(route, number=NUMBER_CASES[case]))


@pytest.mark.parametrize(
    ("route", "field", "value"),
    [
        ("/v1/chat/completions", "max_tokens", -1),
        ("/v1/chat/completions", "max_tokens", 0),
        ("/v1/chat/completions", "top_k", 2**70),
        ("/v1/chat/completions", "top_k", 2**31),
        ("/v1/chat/completions", "temperature", -0.5),
        ("/v1/chat/completions", "top_logprobs", 2**70),
        ("/v1/chat/completions", "logit_bias", {str(2**40): 5}),
        ("/v1/chat/completions", "logit_bias", {"49152": 5}),
        ("/v1/chat/completions", "logit_bias", {"-1": 5}),
        ("/v1/completions", "prompt", [2**40]),
        ("/v1/completions", "max_tokens", -5),
        ("/v1/embeddings", "input", [[2**63]]),
        ("/v1/messages", "max_tokens", -1),
        ("/v1/messages", "top_k", 2**70),
        ("/api/chat", "options", {"top_k": 2**31}),
        ("/api/chat", "options", {"repeat_last_n": 2**31 - 1}),
        ("/api/chat", "options", {"temperature": -1}),
        ("/api/generate", "options", {"num_predict": 0}),
        ("/api/generate", "options", {"repeat_last_n": -2}),
    ],
)
def test_numbers_out_of_range(offline_daemon: Daemon, route: str, field: str, value: Any) -> None:
    body = json.loads(_body(route))
    body[field] = value
    message = _refused(offline_daemon, route, json.dumps(body).encode())
    assert field in message or "token" in message, message


@pytest.mark.parametrize(
    ("route", "field", "value"),
    [
        # Numbers that fit no C int reach llama.cpp masked or clamped, never cut at random.
        ("/v1/chat/completions", "seed", 2**70),
        ("/v1/chat/completions", "seed", -(2**70)),
        ("/api/chat", "options", {"seed": 2**70, "num_predict": 2}),
        ("/api/chat", "options", {"repeat_last_n": 2**20, "repeat_penalty": 1.3, "num_predict": 2}),
        ("/api/chat", "options", {"repeat_last_n": -1, "repeat_penalty": 1.3, "num_predict": 2}),
        ("/v1/messages", "system", "\u0000\u0001\u001f\u007f\u200b\ufeff"),
        ("/v1/chat/completions", "messages", [{"role": "user", "content": "\u0000 nul \u001b[31m red"}]),
        ("/api/generate", "prompt", "\U0001f600 astral characters are fine"),
    ],
)
def test_odd_but_valid_input_is_answered(offline_daemon: Daemon, route: str, field: str, value: Any) -> None:
    body = json.loads(_body(route))
    body[field] = value
    response = web.post(f"{offline_daemon.url}{route}", json=body, timeout=HANG_GUARD_S)
    assert response.status_code == 200, response.text
    assert web.get(f"{offline_daemon.url}/health", timeout=HANG_GUARD_S).status_code == 200


@pytest.mark.parametrize("route", list(ROUTES))
def test_huge_bodies(offline_daemon: Daemon, route: str) -> None:
    """17 MiB in the field that names the model (the duration, for a load): refused at once, without
    tokenizing it (a huge prompt would be tokenized first, then refused as longer than the context)."""
    body = json.loads(_body(route))
    body["keep_alive" if route.endswith("/load") else "model"] = "a" * HUGE_BYTES
    assert "server.max_body_size" in _refused(offline_daemon, route, json.dumps(body).encode(), 413)


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/messages", "/api/chat"])
def test_ten_thousand_messages(offline_daemon: Daemon, route: str) -> None:
    body = json.loads(_body(route))
    body["messages"] = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": "hi"} for i in range(10_000)
    ]
    assert "server.max_messages" in _refused(offline_daemon, route, json.dumps(body).encode(), 400)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "maxLength": 100_000},  # llama.cpp's grammar parser overflowed its stack: a crash
        {"type": "string", "minLength": 10**9},
        {"type": "string", "pattern": "^a{0,50000}$"},
        {"type": "object", "properties": {"name": {"type": "string", "maxLength": 30_000}}},
    ],
)
def test_schemas_too_large_to_enforce(offline_daemon: Daemon, schema: dict[str, Any]) -> None:
    for route in ("/v1/chat/completions", "/api/chat"):
        body = json.loads(_body(route))
        if route.startswith("/api/"):
            body["format"] = schema
        else:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
        assert "too large" in _refused(offline_daemon, route, json.dumps(body).encode())


def test_a_wide_integer_range_is_enforced_promptly(offline_daemon: Daemon) -> None:
    # The range's grammar doubled with every digit: 19 digits were seconds of work and 20 MB of grammar.
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": -(10**18), "maximum": 10**18}},
        "required": ["n"],
    }
    body = json.loads(_body("/v1/chat/completions"))
    body |= {
        "max_tokens": 12,
        "temperature": 0,
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
    }
    response = web.post(f"{offline_daemon.url}/v1/chat/completions", json=body, timeout=HANG_GUARD_S)
    assert response.status_code == 200, response.text


def test_a_keep_alive_past_any_uptime_means_until_needed(offline_daemon: Daemon) -> None:
    # 10**14 hours was kept as seconds, and /api/ps then failed (500) to write its expiry as a date.
    url = f"{offline_daemon.url}/appliance/v1/models/{MODEL_ID}/load"
    loaded = web.post(url, json={"keep_alive": "99999999999999h"}, timeout=HANG_GUARD_S)
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["model"]["keep_alive_s"] is None
    running = web.get(f"{offline_daemon.url}/api/ps", timeout=HANG_GUARD_S)
    assert running.status_code == 200, running.text
    assert running.json()["models"][0]["expires_at"].startswith("9999-")
    restored = web.post(url, json={"keep_alive": "5m"}, timeout=HANG_GUARD_S)
    assert restored.json()["model"]["keep_alive_s"] == 300


def test_a_pull_whose_registry_is_unreachable_is_a_400(offline_daemon: Daemon) -> None:
    # Ollama's /api/pull answered a failed pull, not streamed, with a 500.
    for route, name in (("/api/pull", "llama3.2:1b"), ("/appliance/v1/models/pull", "ollama:llama3.2:1b")):
        response = web.post(f"{offline_daemon.url}{route}", json={"model": name, "stream": False},
                              timeout=HANG_GUARD_S)  # fmt: skip
        assert response.status_code == 400, response.text
        assert error_shape_ok(route, response) and "refused" in response.text, response.text
