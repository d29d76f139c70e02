"""`/metrics` and `/appliance/v1/status` change as requests are served."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests import web
from tests.server.conftest import MODEL_ID, Daemon

HELLO = [{"role": "user", "content": "Hello"}]


def _samples(daemon: Daemon) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = web.get(f"{daemon.url}/metrics").text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_follow_requests(daemon: Daemon) -> None:
    before = _samples(daemon)
    chat = web.post(f"{daemon.v1}/chat/completions", json={"messages": HELLO, "max_tokens": 4}).json()
    with web.stream(
        "POST", f"{daemon.v1}/chat/completions", json={"messages": HELLO, "max_tokens": 4, "stream": True}
    ) as response:
        for _ in response.iter_lines():
            pass
    embedded = web.post(f"{daemon.v1}/embeddings", json={"input": "Hello there"}).json()
    assert (
        web.post(f"{daemon.v1}/chat/completions", json={"model": "nope", "messages": HELLO}).status_code
        == 404
    )
    assert web.get(f"{daemon.v1}/no/such/path").status_code == 404
    after = _samples(daemon)

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    ok = {"backend": "local", "model": MODEL_ID, "status": "200"}
    assert grew("appliance_requests_total", endpoint="/v1/chat/completions", **ok) == 2
    assert grew("appliance_requests_total", endpoint="/v1/embeddings", **ok) == 1
    missing = {"backend": "local", "model": "", "status": "404", "endpoint": "/v1/chat/completions"}
    assert grew("appliance_requests_total", **missing) == 1
    unknown = {"backend": "local", "model": "", "status": "404", "endpoint": "other"}
    assert grew("appliance_requests_total", **unknown) == 1
    assert not any(labels and ("endpoint", "/v1/no/such/path") in labels for _, labels in after)
    assert grew("appliance_time_to_first_token_seconds_count", backend="local", model=MODEL_ID) == 2
    generated = grew("appliance_generation_tokens_total", model=MODEL_ID)
    assert generated >= chat["usage"]["completion_tokens"] + 1
    prompt = grew("appliance_prompt_tokens_total", model=MODEL_ID)
    assert prompt == 2 * chat["usage"]["prompt_tokens"] + embedded["usage"]["prompt_tokens"]
    for gauge in (
        "appliance_queue_length",
        "appliance_slots_busy",
        "appliance_slots_total",
        "appliance_model_ready",
    ):
        assert (gauge, (("model", MODEL_ID),)) in after
    assert _value(after, "appliance_model_ready", model=MODEL_ID) == 1


def test_status(daemon: Daemon) -> None:
    status = web.get(f"{daemon.url}/appliance/v1/status").json()
    assert status["version"] and status["uptime_s"] >= 0
    assert status["hardware"]["cpu"]["cores_logical"] >= 1
    assert [m["id"] for m in status["models"]] == [MODEL_ID]
    assert status["slots"]["total"] == 4 and status["queue"] == 0  # the planner's choice here
    assert status["requests"].get("200", 0) >= 1
    assert status["requests_by_backend"]["local"].get("200", 0) >= 1
    models = web.get(f"{daemon.url}/appliance/v1/models").json()["models"]
    assert models[0]["state"] == "ready"


def test_recent_request_log_lines_are_served_as_json(daemon: Daemon) -> None:
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}
    assert web.post(f"{daemon.v1}/chat/completions", json=body, timeout=60).status_code == 200
    entries = web.get(f"{daemon.url}/appliance/v1/logs", params={"limit": 5}, timeout=10).json()["requests"]
    assert 1 <= len(entries) <= 5
    last = entries[-1]
    assert (last["endpoint"], last["model"], last["backend"], last["status"]) == (
        "/v1/chat/completions", MODEL_ID, "local", "ok",
    )  # fmt: skip
    assert last["generated_tokens"] >= 1 and last["ttft_ms"] is not None and last["time"] > 0


def test_refused_requests_and_embeddings_have_log_lines_too(daemon: Daemon) -> None:
    body = {"model": "no-such-model", "messages": [{"role": "user", "content": "Hi"}]}
    assert web.post(f"{daemon.v1}/chat/completions", json=body, timeout=60).status_code == 404
    logs = f"{daemon.url}/appliance/v1/logs"
    refused = web.get(logs, params={"limit": 1}, timeout=10).json()["requests"][-1]
    assert (refused["endpoint"], refused["model"], refused["status"]) == (
        "/v1/chat/completions", "no-such-model", "404",
    )  # fmt: skip
    embedded = web.post(f"{daemon.v1}/embeddings", json={"model": MODEL_ID, "input": "a b c"}, timeout=60)
    assert embedded.status_code == 200
    line = web.get(logs, params={"limit": 1}, timeout=10).json()["requests"][-1]
    assert (line["endpoint"], line["model"], line["status"]) == ("/v1/embeddings", MODEL_ID, "ok")
    assert line["prompt_tokens"] == embedded.json()["usage"]["prompt_tokens"]
    before = len(web.get(logs, params={"limit": 200}, timeout=10).json()["requests"])
    assert web.get(f"{daemon.v1}/models", timeout=10).status_code == 200  # not a request to log
    assert len(web.get(logs, params={"limit": 200}, timeout=10).json()["requests"]) == before
