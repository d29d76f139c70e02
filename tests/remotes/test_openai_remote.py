"""Another appliance as an `openai` remote (the cheap stand-in the issue allows): keys from a file and
from the environment, a wrong key reported as the remote being down, and requests that stay local."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from models.embedded import embedded_model_path
from tests import web
from tests.server.conftest import MODEL_ID, Daemon, start_daemon, stop_daemon, wait_until

KEY = "sekrit-key"


@pytest.fixture(scope="module")
def remote_appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    home = tmp_path_factory.mktemp("remote")
    source = embedded_model_path()
    assert source is not None
    (home / "data" / "models").mkdir(parents=True)
    shutil.copyfile(source, home / "data" / "models" / "second-model.Q4_1.gguf")
    d = start_daemon(home, "--api-key", KEY, "--parallel", "1", "--ctx", "2048")
    yield d
    stop_daemon(d)


def _front(home: Path, remote: Daemon, key_line: str) -> Daemon:
    (home / "config.toml").write_text(f"""
[routing]
probe_interval_s = 30

[[remotes]]
name = "peer"
kind = "openai"
base_url = "{remote.url}"
{key_line}
models = {{ "far-model" = "{MODEL_ID}" }}
timeouts = {{ connect_s = 1, first_byte_s = 20, between_chunks_s = 5 }}
""")
    return start_daemon(home, "--parallel", "1", "--ctx", "2048", env={"PEER_KEY": KEY})


def _remote(front: Daemon) -> dict[str, Any]:
    return web.get(f"{front.url}/appliance/v1/remotes", timeout=10).json()["remotes"][0]  # type: ignore[no-any-return]


def test_keys_from_a_file_or_the_environment(remote_appliance: Daemon, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    for home, line in (
        (tmp_path / "a", f'api_key_file = "{key_file}"'),
        (tmp_path / "b", 'api_key_env = "PEER_KEY"'),
    ):
        home.mkdir()
        front = _front(home, remote_appliance, line)
        try:
            assert wait_until(lambda f=front: _remote(f)["healthy"], 20), _remote(front)
            body = {"model": "far-model", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
            reply = web.post(f"{front.v1}/chat/completions", json=body, timeout=60)
            assert reply.status_code == 200, reply.text
            assert reply.headers["x-appliance-backend"] == "remote:peer"
            assert reply.headers["x-appliance-escalation-reason"] == "capability"
            assert reply.headers.get("x-appliance-backend") and reply.json()["model"] == MODEL_ID
        finally:
            stop_daemon(front)


def test_a_wrong_key_shows_the_remote_down_and_requests_stay_local(
    remote_appliance: Daemon, tmp_path: Path
) -> None:
    front = _front(tmp_path, remote_appliance, 'api_key_env = "NO_SUCH_VARIABLE"')
    try:
        assert wait_until(lambda: _remote(front)["error"] is not None, 20)
        remote = _remote(front)
        assert not remote["healthy"] and "401" in remote["error"]
        body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        url = f"{front.v1}/chat/completions"
        forced = web.post(url, json=body, headers={"X-Escalate": "always"}, timeout=60)
        assert forced.status_code == 200 and forced.headers["x-appliance-backend"] == "local"
        named = web.post(url, json={**body, "model": f"peer/{MODEL_ID}"}, timeout=60)
        assert named.status_code == 503 and named.json()["error"]["code"] == "remote_unavailable"
        missing = web.post(url, json={**body, "model": "far-model"}, timeout=60)
        assert missing.status_code == 404  # not here, and the only remote serving it is down
    finally:
        stop_daemon(front)


def test_a_404_from_the_remote_goes_back_as_it_is(remote_appliance: Daemon, tmp_path: Path) -> None:
    """The remote stopped serving a model since it was last probed: its 404 is the client's answer,
    not a reason to fail over."""
    front = _front(tmp_path, remote_appliance, 'api_key_env = "PEER_KEY"')
    try:
        assert wait_until(lambda: "second-model" in (_remote(front)["models"] or {}), 20)
        body = {"model": "second-model", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        url = f"{front.v1}/chat/completions"
        first = web.post(url, json=body, timeout=60)
        assert first.status_code == 200 and first.headers["x-appliance-backend"] == "remote:peer"
        removed = web.delete(f"{remote_appliance.url}/appliance/v1/models/second-model",
                               headers={"Authorization": f"Bearer {KEY}"}, timeout=30)  # fmt: skip
        assert removed.status_code == 200
        gone = web.post(url, json=body, timeout=60)  # the front's last probe still lists it
        assert gone.status_code == 404 and gone.headers["x-appliance-backend"] == "remote:peer"
        assert gone.json()["error"]["code"] == "model_not_found"
    finally:
        stop_daemon(front)


def _post(url: str, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return web.post(url, json=body, headers=headers, timeout=60)


def test_embeddings_escalate_to_a_remote_configured_to_embed(
    remote_appliance: Daemon, tmp_path: Path
) -> None:
    """Two remotes of kind vllm (both the second appliance, which speaks vLLM's /health, /v1/models and
    /v1/embeddings): "gen" as vLLM is by default (no embeddings), "emb" with ``embeddings = true``.
    Texts and token ids, OpenAI's and Ollama's routes, reach "emb" only, and come back as its vectors."""
    remote = f"""
base_url = "{remote_appliance.url}"
api_key_env = "PEER_KEY"
timeouts = {{ connect_s = 1, first_byte_s = 20, between_chunks_s = 5 }}
"""
    (tmp_path / "config.toml").write_text(f"""
[routing]
probe_interval_s = 30

[[remotes]]
name = "gen"
kind = "vllm"
models = {{ "gen-model" = "{MODEL_ID}" }}
{remote}
[[remotes]]
name = "emb"
kind = "vllm"
embeddings = true
models = {{ "emb-model" = "{MODEL_ID}" }}
{remote}""")
    front = start_daemon(tmp_path, "--parallel", "1", "--ctx", "512", env={"PEER_KEY": KEY})
    try:
        remotes = f"{front.url}/appliance/v1/remotes"
        assert wait_until(lambda: all(r["healthy"] for r in web.get(remotes).json()["remotes"]), 20)
        texts, token_ids = ["Paris", "Rome"], [[1, 2, 3, 4], [5, 6]]
        for inputs in (texts, token_ids):
            there = _post(f"{remote_appliance.v1}/embeddings", {"model": MODEL_ID, "input": inputs}, KEY)
            assert there.status_code == 200, there.text
            reply = _post(f"{front.v1}/embeddings", {"model": "emb-model", "input": inputs})
            assert reply.status_code == 200, reply.text
            assert reply.headers["x-appliance-backend"] == "remote:emb"
            assert reply.headers["x-appliance-escalation-reason"] == "capability"
            assert reply.json()["data"] == there.json()["data"] and reply.json()["model"] == "emb-model"
            assert reply.json()["usage"] == there.json()["usage"]
        ollama = _post(f"{front.url}/api/embed", {"model": "emb-model", "input": texts})
        assert ollama.status_code == 200, ollama.text
        assert ollama.headers["x-appliance-backend"] == "remote:emb"
        there = _post(f"{remote_appliance.url}/api/embed", {"model": MODEL_ID, "input": texts}, KEY)
        assert ollama.json()["embeddings"] == there.json()["embeddings"]

        # "gen" does not embed, and the model is not here: not found, in each dialect's shape.
        missing = _post(f"{front.v1}/embeddings", {"model": "gen-model", "input": "Paris"})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
        missing = _post(f"{front.url}/api/embed", {"model": "gen-model", "input": "Paris"})
        assert missing.status_code == 404 and "not found" in missing.json()["error"]
        chat = {"model": "gen-model", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        generated = _post(f"{front.v1}/chat/completions", chat)
        assert generated.status_code == 200 and generated.headers["x-appliance-backend"] == "remote:gen"
    finally:
        stop_daemon(front)
