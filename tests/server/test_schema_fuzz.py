"""Schema fuzzing: every operation of the published OpenAPI document (`GET /openapi.json`) gets requests
that schemathesis draws from it, against a real daemon; no answer may be a 5xx, nor break the document
(its status, Content-Type, headers and body must be the documented ones). Seeded and bounded, so it is
repeatable and takes about two minutes here; generations are cut to a few tokens. Pulls go to dead
loopback ports, so nothing is downloaded, and deletes can only meet the embedded model, which is not the
store's to delete."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core import NOT_SET
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests import web
from tests.server.conftest import MODEL_ID, Daemon

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = {GenerationMode.POSITIVE: 10, GenerationMode.NEGATIVE: 6}
"""At most, per operation: bodies and parameters that fit the document, and ones that break it (an
operation with little to vary gets fewer). About two minutes in all on two cores."""
MAX_TOKENS = 3
PULLS_AND_DELETES = ("/api/pull", "/api/delete", "/appliance/v1/models/pull")


def _bounded(path: str, body: Any) -> Any:
    """The body with the served model named (so requests generate, rather than all being 404s; pulls and
    deletes keep the names drawn) and every generation cut to a few tokens."""
    if not isinstance(body, dict):
        return body
    if path not in PULLS_AND_DELETES:
        body["model"] = MODEL_ID
    for key in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        if isinstance(body.get(key), int):
            body[key] = min(body[key], MAX_TOKENS)
    if "max_tokens" not in body:
        body["max_tokens"] = MAX_TOKENS
    if path == "/v1/responses" and "max_output_tokens" not in body:
        body["max_output_tokens"] = MAX_TOKENS
    options = body.get("options")
    if isinstance(options, dict):
        options["num_predict"] = MAX_TOKENS
    else:
        body["options"] = {"num_predict": MAX_TOKENS}
    return body


def _operations(daemon: Daemon) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{daemon.url}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def _fuzz(
    daemon: Daemon, operation: Any, mode: GenerationMode, session: requests.Session, statuses: Counter[int]
) -> None:
    """EXAMPLES[mode] requests drawn for ``operation``, each answer checked against the document."""

    # No shrinking: a failing example is reported as drawn, and a hang costs one timeout, not many.
    @settings(max_examples=EXAMPLES[mode], derandomize=True, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: Any) -> None:
        if case.body is not NOT_SET:
            case.body = _bounded(operation.path, case.body)
        response = case.call(base_url=daemon.url, session=session, timeout=60)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=CHECKS)

    try:
        fuzz()
    except Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE  # nothing to break: no body, no parameters
    except Exception as exc:
        raise AssertionError(f"{operation.label} ({mode.value}): {exc}") from exc


def test_every_operation_is_documented_and_fuzzed(offline_daemon: Daemon) -> None:
    document = web.get(f"{offline_daemon.url}/openapi.json", timeout=30).json()
    operations = _operations(offline_daemon)
    assert len(operations) == sum(len(methods) for methods in document["paths"].values()) >= 28
    session = requests.Session()
    started = time.monotonic()
    statuses: Counter[int] = Counter()
    for operation in operations:
        for mode in EXAMPLES:
            _fuzz(offline_daemon, operation, mode, session, statuses)
    took_s = time.monotonic() - started
    health = web.get(f"{offline_daemon.url}/health", timeout=30)
    assert health.status_code == 200, health.text
    print(f"fuzzed {len(operations)} operations with {sum(statuses.values())} requests in {took_s:.0f} s; "
          f"statuses {dict(sorted(statuses.items()))}")  # fmt: skip
    assert statuses[200] > 0 and not any(status >= 500 for status in statuses)
    assert "Traceback" not in offline_daemon.log(), offline_daemon.log()[-3000:]
