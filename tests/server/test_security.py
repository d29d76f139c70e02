"""Secure by default: keys, the bind address, Host names (DNS rebinding), web origins and CORS, each
against a real daemon process."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import ollama
import openai
import pytest

from tests import web
from tests.server.conftest import MODEL_ID, Daemon, free_port, start_daemon, stop_daemon

KEY_A, KEY_B = "sk-test-key-a-7f3c9e", "sk-test-key-b-41d2aa"
APP_ORIGIN = "https://app.example"
EVIL_ORIGIN = "https://evil.example"
CHAT = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env["APPLIANCE_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, str]]:
    """A daemon with three keys: one from `appliance key new` (the keys file), two from the environment;
    and one web origin let in."""
    home = tmp_path_factory.mktemp("keyed")
    made = _cli(home, "key", "new", "--name", "laptop")
    assert made.returncode == 0, made.stderr
    file_key = made.stdout.strip()
    env = {
        "APPLIANCE_SERVER__API_KEYS": json.dumps([KEY_A, KEY_B]),
        "APPLIANCE_SERVER__CORS_ORIGINS": json.dumps([APP_ORIGIN]),
    }
    daemon = start_daemon(home, env=env)
    yield daemon, file_key
    stop_daemon(daemon)


def _operations(daemon: Daemon, key: str) -> list[tuple[str, str]]:
    """Every route of the daemon (method, path with its parameters filled in), from its OpenAPI."""
    schema = web.get(f"{daemon.url}/openapi.json", headers={"Authorization": f"Bearer {key}"}).json()
    found = []
    for path, methods in schema["paths"].items():
        for method in methods:
            if method in ("get", "post", "delete"):
                found.append((method.upper(), path.replace("{model_id}", MODEL_ID).replace("{name}", "x")))
    return found


def _is_error_shape(path: str, body: object) -> bool:
    if path.startswith("/api/"):
        return isinstance(body, dict) and isinstance(body.get("error"), str)
    if path.startswith("/v1/messages"):
        return isinstance(body, dict) and body.get("type") == "error" and "message" in body["error"]
    return isinstance(body, dict) and set(body.get("error", {})) == {"message", "type", "param", "code"}


def test_every_route_but_health_needs_one_of_the_keys(keyed: tuple[Daemon, str]) -> None:
    daemon, file_key = keyed
    operations = _operations(daemon, file_key)
    assert len(operations) > 20
    for method, path in operations:
        if path == "/health":
            continue
        wrong = [
            {"Authorization": "Bearer wrong"},
            {"x-api-key": "wrong"},
            {"Authorization": f"Basic {KEY_A}"},
        ]
        for headers in [{}, *wrong, {"Authorization": f"Bearer {KEY_A}x"}]:
            response = web.request(method, daemon.url + path, headers=headers, json={}, timeout=10)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert _is_error_shape(path, response.json()), (path, response.text)
    assert web.get(f"{daemon.url}/health").status_code == 200


def test_each_key_works_in_each_dialect(keyed: tuple[Daemon, str]) -> None:
    daemon, file_key = keyed
    for key in (file_key, KEY_A, KEY_B):
        assert daemon.client(api_key=key).chat.completions.create(**CHAT).choices  # type: ignore[call-overload]
    reply = ollama.Client(host=daemon.url, headers={"Authorization": f"Bearer {KEY_B}"}).chat(
        model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], options={"num_predict": 2}
    )
    assert reply.message.content is not None
    message = anthropic.Anthropic(base_url=daemon.url, api_key=KEY_A, max_retries=0).messages.create(
        model=MODEL_ID, max_tokens=2, messages=[{"role": "user", "content": "Hi"}]
    )
    assert message.content
    with pytest.raises(openai.AuthenticationError):
        daemon.client(api_key="wrong").models.list()
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=daemon.url, api_key="wrong", max_retries=0).messages.create(
            model=MODEL_ID, max_tokens=2, messages=[{"role": "user", "content": "Hi"}]
        )


def test_keys_never_reach_the_log(keyed: tuple[Daemon, str]) -> None:
    daemon, file_key = keyed
    web.get(f"{daemon.v1}/models", headers={"Authorization": "Bearer sk-wrong-key-in-log-check"})
    daemon.client(api_key=KEY_A).chat.completions.create(**CHAT)  # type: ignore[call-overload]
    log = daemon.log()
    for secret in (file_key, KEY_A, KEY_B, "sk-wrong-key-in-log-check"):
        assert secret not in log


def test_key_new_writes_an_owner_only_file_and_list_masks_the_keys(tmp_path: Path) -> None:
    made = _cli(tmp_path, "key", "new", "--name", "ide", "--json")
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    path = Path(created["file"])
    assert path == tmp_path / "api-keys"
    assert path.stat().st_mode & 0o777 == 0o600
    assert created["key"].startswith("sk-appl-") and len(created["key"]) > 40
    listed = _cli(tmp_path, "key", "list", "--json")
    entries = json.loads(listed.stdout)
    assert [e["name"] for e in entries] == ["ide"]
    assert created["key"] not in listed.stdout


def test_a_non_loopback_address_without_a_key_is_refused(tmp_path: Path) -> None:
    refused = _cli(tmp_path, "serve", "--host", "0.0.0.0", "--port", str(free_port()))
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "without an API key" in lines[0] and "appliance key new" in lines[0]
    assert "Traceback" not in refused.stderr


def test_insecure_no_auth_starts_and_says_so(tmp_path: Path) -> None:
    port = free_port()
    daemon = start_daemon(tmp_path, "--host", "0.0.0.0", "--insecure-no-auth", port=port)
    try:
        assert "without an API key (--insecure-no-auth)" in daemon.log()
        assert web.get(f"http://127.0.0.1:{port}/v1/models").status_code == 200
    finally:
        stop_daemon(daemon)


# -- Host names: DNS rebinding --------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["evil.example.com", "evil.example.com:11435", "127.0.0.1.nip.io", "localhost.evil.example", "[", "a:b"],
)
def test_a_host_name_that_is_not_this_machine_is_refused(daemon: Daemon, host: str) -> None:
    for path in ("/v1/models", "/health", "/api/tags"):
        response = web.get(daemon.url + path, headers={"Host": host})
        assert response.status_code == 403, (path, host)
        assert "allowed_hosts" in response.text
    assert web.get(f"{daemon.v1}/models").status_code == 200


def test_loopback_and_this_machine_s_names_and_addresses_are_answered(daemon: Daemon) -> None:
    port = daemon.url.rsplit(":", 1)[1]
    addresses = {"localhost", "127.0.0.1", "[::1]", "app.localhost", socket.gethostname()}
    addresses |= {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None) if ":" not in a[4][0]}
    for host in addresses:
        response = web.get(f"{daemon.v1}/models", headers={"Host": f"{host}:{port}"})
        assert response.status_code == 200, host


def test_allowed_hosts_adds_names_and_domains(tmp_path: Path) -> None:
    env = {"APPLIANCE_SERVER__ALLOWED_HOSTS": json.dumps(["llm.home.arpa", ".corp.example"])}
    daemon = start_daemon(tmp_path, env=env)
    try:
        for host, status in (("llm.home.arpa", 200), ("gpu.corp.example", 200), ("corp.example", 200),
                             ("xcorp.example", 403), ("home.arpa", 403)):  # fmt: skip
            assert web.get(f"{daemon.v1}/models", headers={"Host": host}).status_code == status, host
    finally:
        stop_daemon(daemon)


# -- Web origins: cross-site requests and CORS ------------------------------------------------------


class _CountingHub(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:
        self.hits.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, list[str]]]:
    """The default daemon (loopback, no key: what a user runs), its hub and registry a local server that
    counts what reaches it."""
    hub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CountingHub)
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{hub.server_address[1]}"
    daemon = start_daemon(
        tmp_path_factory.mktemp("watched"), env={"HF_ENDPOINT": url, "APPLIANCE_STORE__OLLAMA_REGISTRY": url}
    )
    yield daemon, _CountingHub.hits
    stop_daemon(daemon)
    hub.shutdown()


def _generated_tokens(daemon: Daemon) -> float:
    for line in web.get(f"{daemon.url}/metrics").text.splitlines():
        if line.startswith("appliance_generation_tokens_total{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/pull", {"model": "owner/repo"}),
        ("/appliance/v1/models/pull", {"model": "owner/repo", "stream": False}),
        ("/api/delete", {"model": MODEL_ID}),
        ("/api/generate", {"model": MODEL_ID, "prompt": "Hi", "stream": False}),
        ("/v1/chat/completions", CHAT),
        ("/v1/completions", {"model": MODEL_ID, "prompt": "Hi", "max_tokens": 4}),
    ],
)
def test_a_cross_site_text_plain_post_does_nothing(
    watched: tuple[Daemon, list[str]], path: str, body: dict[str, object]
) -> None:
    """What a web page can send without a CORS preflight: a "simple" POST, text/plain, with its Origin."""
    daemon, hits = watched
    before = _generated_tokens(daemon)
    for origin in (EVIL_ORIGIN, "null", "http://localhost:3000"):
        response = web.request(
            "DELETE" if path == "/api/delete" else "POST",
            daemon.url + path,
            content=json.dumps(body),
            headers={"Content-Type": "text/plain", "Origin": origin},
            timeout=60,
        )
        assert response.status_code == 403, response.text
        assert "cors_origins" in response.text
        assert "access-control-allow-origin" not in response.headers
    assert hits == []
    assert web.get(f"{daemon.url}/appliance/v1/models/pulls").json() == {"pulls": []}
    assert _generated_tokens(daemon) == before
    assert MODEL_ID in [m["id"] for m in web.get(f"{daemon.v1}/models").json()["data"]]


def test_clients_without_an_origin_work_as_before(watched: tuple[Daemon, list[str]]) -> None:
    daemon, _ = watched
    response = web.post(
        f"{daemon.v1}/chat/completions",
        content=json.dumps(CHAT),
        headers={"Content-Type": "text/plain"},
        timeout=60,
    )
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


def _preflight(daemon: Daemon, origin: str) -> httpx.Response:
    return web.options(
        f"{daemon.v1}/chat/completions",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"},
    )  # fmt: skip


def test_a_preflight_from_an_unlisted_origin_gets_no_cors_headers(keyed: tuple[Daemon, str]) -> None:
    daemon, _ = keyed
    for origin in (EVIL_ORIGIN, "https://app.example.evil.example", "http://app.example", "null"):
        response = _preflight(daemon, origin)
        assert response.status_code == 403
        assert not [h for h in response.headers if h.startswith("access-control-")], origin


def test_a_listed_origin_gets_exactly_itself_back(keyed: tuple[Daemon, str]) -> None:
    daemon, _ = keyed
    preflight = _preflight(daemon, APP_ORIGIN)
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"]
    assert "access-control-allow-credentials" not in preflight.headers
    assert "Origin" in preflight.headers["vary"]
    response = web.post(
        f"{daemon.v1}/chat/completions",
        json=CHAT,
        headers={"Origin": APP_ORIGIN, "Authorization": f"Bearer {KEY_A}"},
        timeout=60,
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "x-appliance-backend" in response.headers["access-control-expose-headers"].lower()
    # The page still needs a key: an origin let in is not a key.
    assert (
        web.post(f"{daemon.v1}/chat/completions", json=CHAT, headers={"Origin": APP_ORIGIN}).status_code
        == 401
    )


def test_a_stream_to_a_listed_origin_carries_the_cors_header(keyed: tuple[Daemon, str]) -> None:
    daemon, _ = keyed
    headers = {"Origin": APP_ORIGIN, "Authorization": f"Bearer {KEY_A}"}
    url = f"{daemon.v1}/chat/completions"
    with web.stream("POST", url, json={**CHAT, "stream": True}, headers=headers, timeout=30) as response:
        assert response.headers["access-control-allow-origin"] == APP_ORIGIN
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
