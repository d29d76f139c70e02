"""A failure inside generation fails that request only: an error in its dialect's shape (a 500, or an
error event then the stream's normal end), its slot freed, the other requests of the same batch
unharmed, and the daemon serving on. Faults are injected with APPLIANCE_TEST_FAULTS=1 and a marker in a
request's prompt (appliance/engine/faults.py says why and where); the one real trigger found, a JSON
grammar ending while end-of-generation is banned, killed the daemon with a C++ abort before its fix."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import ollama
import openai
import pytest

from tests import web
from tests.server.conftest import MODEL_ID, NO_EOS_BIAS, Daemon, start_daemon, stop_daemon, wait_until


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("faults"), "--parallel", "4", env={"APPLIANCE_TEST_FAULTS": "1"})
    yield d
    stop_daemon(d)


def _body(content: str, max_tokens: int = 48, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL_ID, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "temperature": 0, "logit_bias": NO_EOS_BIAS, **extra}  # fmt: skip


def _stream(daemon: Daemon, content: str, max_tokens: int = 48) -> tuple[str, list[dict[str, Any]]]:
    """The streamed text and every event after it ([DONE] as {"done": True})."""
    text, events = [], []
    body = _body(content, max_tokens, stream=True)
    with web.stream("POST", f"{daemon.v1}/chat/completions", json=body, timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line == "data: [DONE]":
                events.append({"done": True})
            elif line.startswith("data: "):
                event = json.loads(line[6:])
                if event.get("choices"):
                    text.append(event["choices"][0]["delta"].get("content") or "")
                events.append(event)
    return "".join(text), events


def _status(daemon: Daemon) -> dict[str, Any]:
    return web.get(f"{daemon.url}/appliance/v1/status", timeout=10).json()  # type: ignore[no-any-return]


def assert_serving(daemon: Daemon) -> None:
    """No slot left busy, nothing queued, and a normal request answers."""
    assert wait_until(lambda: _status(daemon)["slots"]["busy"] == 0, 10), _status(daemon)["slots"]
    assert _status(daemon)["queue"] == 0
    reply = web.post(f"{daemon.v1}/chat/completions", json=_body("Say hi.", 4), timeout=60)
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"]
    assert daemon.process.poll() is None


OTHERS = ("Write about the sea.", "Write about the mountains.")


def test_failures_mid_stream_end_those_streams_only(faulty: Daemon) -> None:
    """Two requests fail (a Python exception in sampling; llama_decode returning an error) while two
    others generate in the same batch: the two get an error event then [DONE]; the others finish with
    exactly the text they produce alone."""
    poisoned = {"sample": "Repeat [[fault:sample]] forever.", "decode": "Repeat [[fault:decode]] forever."}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        running = [pool.submit(_stream, faulty, p, 48) for p in OTHERS]
        assert wait_until(lambda: _status(faulty)["slots"]["busy"] == 2, 30)
        failing = {point: pool.submit(_stream, faulty, prompt, 48) for point, prompt in poisoned.items()}
        failed = {point: future.result() for point, future in failing.items()}
        # The others still generate (the failed ones' slots are freed just after their streams end).
        assert wait_until(lambda: _status(faulty)["slots"]["busy"] == 2, 10), _status(faulty)["slots"]
        together = [f.result()[0] for f in running]
    for point, says in (("sample", "generation failed (InjectedFault)"), ("decode", "llama_decode failed")):
        text, events = failed[point]
        assert text  # it had streamed tokens before the failure
        assert events[-1] == {"done": True}
        error = events[-2]["error"]
        assert error["code"] == "engine_failure" and says in error["message"], error
        assert "Traceback" not in json.dumps(events)
    assert together == [_stream(faulty, p, 48)[0] for p in OTHERS]  # the batch mates were unharmed
    assert_serving(faulty)


def test_a_failure_of_the_step_itself_fails_what_runs_and_the_daemon_serves_on(faulty: Daemon) -> None:
    _, events = _stream(faulty, "Count [[fault:step]] to ten.")
    assert events[-1] == {"done": True} and events[-2]["error"]["code"] == "engine_failure"
    assert "an engine step failed" in events[-2]["error"]["message"]
    assert "InjectedFault: injected fault at step" in faulty.log()  # the traceback went to the log
    assert_serving(faulty)


def test_each_dialect_gets_a_500_in_its_own_shape(faulty: Daemon) -> None:
    poisoned = "Tell me [[fault:sample]] a story."
    with pytest.raises(openai.InternalServerError) as whole:
        faulty.client().chat.completions.create(**_body(poisoned))
    assert whole.value.status_code == 500 and whole.value.code == "engine_failure"
    client = ollama.Client(host=faulty.url, timeout=60)
    messages: Any = [{"role": "user", "content": poisoned}]
    options = {"temperature": 0, "num_predict": 48}
    with pytest.raises(ollama.ResponseError) as plain:
        client.chat(MODEL_ID, messages=messages, options=options, stream=False)
    assert plain.value.status_code == 500 and "generation failed" in plain.value.error
    with pytest.raises(ollama.ResponseError, match="generation failed"):
        list(client.generate(MODEL_ID, poisoned, options=options, stream=True))  # the error line
    claude = anthropic.Anthropic(base_url=faulty.url, api_key="unused", max_retries=0)
    with pytest.raises(anthropic.InternalServerError) as message:
        claude.messages.create(
            model=MODEL_ID, max_tokens=48, messages=messages, extra_body={"temperature": 0}
        )
    assert message.value.status_code == 500
    assert message.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    streamed = claude.messages.stream(model=MODEL_ID, max_tokens=48, messages=messages)
    with pytest.raises(anthropic.APIStatusError, match="generation failed"), streamed as stream:
        "".join(stream.text_stream)
    asked = {"model": MODEL_ID, "input": poisoned, "max_output_tokens": 48, "temperature": 0}
    with pytest.raises(openai.InternalServerError) as response:
        faulty.client().responses.create(**asked)  # type: ignore[call-overload]
    assert response.value.code == "engine_failure"
    # Streamed (Responses API): the failure after the 200 is the stream's last event, response.failed.
    events = list(faulty.client().responses.create(**asked, stream=True))  # type: ignore[call-overload]
    assert [e.type for e in events[:3]] == ["response.created", "response.in_progress",
                                            "response.output_item.added"]  # fmt: skip
    assert events[-1].type == "response.failed" and events[-1].response.status == "failed"
    assert events[-1].response.error.code == "engine_failure"
    assert "generation failed" in events[-1].response.error.message
    assert_serving(faulty)


def test_a_failing_embedding_fails_that_request_only(faulty: Daemon) -> None:
    client = faulty.client()
    with pytest.raises(openai.InternalServerError) as failed:
        client.embeddings.create(model=MODEL_ID, input=["a fine input", "a [[fault:embed]] input"])
    assert failed.value.code == "engine_failure"
    ok = client.embeddings.create(model=MODEL_ID, input=["a fine input"])
    assert len(ok.data[0].embedding) > 0
    assert_serving(faulty)


def test_a_json_grammar_ending_while_eos_is_banned_ends_the_reply(faulty: Daemon) -> None:
    """The real trigger: llama.cpp threw (and aborted the process) when the sampler chain picked a token
    the completed grammar forbids; now the reply ends where the JSON does."""
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
              "additionalProperties": False}  # fmt: skip
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    for seed in range(3):
        body = {**_body("Give JSON.", 60, temperature=1.0, seed=seed), "ignore_eos": True,
                "response_format": response_format}  # fmt: skip
        reply = web.post(f"{faulty.v1}/chat/completions", json=body, timeout=60)
        assert reply.status_code == 200, reply.text
        choice = reply.json()["choices"][0]
        assert isinstance(json.loads(choice["message"]["content"])["a"], int)
        assert choice["finish_reason"] == "stop"
    assert_serving(faulty)
