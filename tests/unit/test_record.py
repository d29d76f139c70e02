"""The request record's log line: what each kind of request says, and what a remote's line adds."""

from __future__ import annotations

import json

from server.record import RequestRecord, record_of


def test_a_refused_request_names_the_model_asked_for_and_its_status() -> None:
    record = RequestRecord(endpoint="/v1/chat/completions", asked_model="nope")
    record.status = "404"
    line = record.fields()
    assert {k: line[k] for k in ("endpoint", "model", "backend", "status")} == {
        "endpoint": "/v1/chat/completions", "model": "nope", "backend": "local", "status": "404"
    }  # fmt: skip
    assert "prompt_tokens" not in line and "reason" not in line


def test_a_generation_s_line_has_its_tokens_ttft_and_speed() -> None:
    record = RequestRecord(started_s=100.0)
    record.serve("/api/chat", "m", "remote:gpu", "load")
    record.kind = "generation"
    record.first_token_s, record.last_token_s = 100.25, 102.25
    record.prompt_tokens, record.generated_tokens, record.status = 7, 41, "ok"
    line = record.fields()
    assert (line["reason"], line["ttft_ms"], line["tokens_per_s"], line["generated_tokens"]) == (
        "load", 250, 20.0, 41
    )  # fmt: skip


def test_one_token_has_no_speed_and_prompts_are_quoted_on_one_line() -> None:
    record = RequestRecord(kind="generation", first_token_s=1.0, last_token_s=1.0, generated_tokens=1)
    record.request_text = 'line one\nline "two"'
    line = record.fields()
    assert line["tokens_per_s"] is None
    assert json.loads(line["request"]) == 'line one\nline "two"' and "\n" not in line["request"]


def test_a_scope_keeps_one_record() -> None:
    scope = {"type": "http", "path": "/api/embed"}
    first = record_of(scope)
    assert record_of(scope) is first and first.endpoint == "/api/embed"
