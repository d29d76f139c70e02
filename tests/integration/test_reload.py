"""SIGHUP reloads the real daemon's configuration: what can change live changes (queue length, remotes,
routing, log level, the shutdown bound), what needs a restart is named and kept, and a broken file is
logged while the daemon goes on serving with the configuration it had. Proxied streams survive a reload
that changes their remote, and a shutdown ends them in OpenAI's framing."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import web
from tests.integration.lifecycle import Sse, Whole, model_state
from tests.server.conftest import MODEL_ID, Daemon, free_port, start_daemon, stop_daemon, wait_until

_FIRST = """
[server]
max_queue = 8
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    home = tmp_path_factory.mktemp("reload")
    (home / "config.toml").write_text(_FIRST)
    # One generation thread, as in test_shutdown: steady speed on a shared 2-core machine.
    d = start_daemon(home, "--parallel", "1", "--ctx", "2048", "--threads", "1")
    yield d
    stop_daemon(d)


def _config(daemon: Daemon) -> Path:
    return Path(daemon.log_path).parent / "config.toml"


def _reload_by_signal(daemon: Daemon, what: str) -> str:
    """Send SIGHUP and wait for the log line it causes (starting with ``what``); that line."""
    before = daemon.log().count(what)
    daemon.process.send_signal(signal.SIGHUP)
    assert wait_until(lambda: daemon.log().count(what) > before, 15), daemon.log()[-2000:]
    return [line for line in daemon.log().splitlines() if what in line][-1]


def _remotes(daemon: Daemon) -> list[dict[str, Any]]:
    remotes: list[dict[str, Any]] = web.get(f"{daemon.url}/appliance/v1/remotes", timeout=10).json()[
        "remotes"
    ]
    return remotes


def test_sighup_applies_what_changes_live_and_names_what_needs_a_restart(daemon: Daemon) -> None:
    spare_port = free_port()  # nothing listens there: the remote is listed, probed and down
    _config(daemon).write_text(f"""
log_level = "debug"

[server]
max_queue = 1
shutdown_timeout_s = 1

[model]
n_ctx = 1024  # serve's --ctx 2048 still wins: no change
n_batch = 256

[[remotes]]
name = "spare"
kind = "openai"
base_url = "http://127.0.0.1:{spare_port}"
""")
    line = _reload_by_signal(daemon, "configuration reloaded:")
    assert line.endswith(
        "configuration reloaded: log_level, remotes (added spare), server.max_queue, "
        "server.shutdown_timeout_s in effect now; model.n_batch changed; takes effect after a restart"
    )
    assert model_state(daemon)["n_ctx"] == 2048
    assert wait_until(lambda: _remotes(daemon) and _remotes(daemon)[0]["error"] is not None)
    spare = _remotes(daemon)[0]
    assert spare["name"] == "spare" and spare["address"] == f"http://127.0.0.1:{spare_port}"
    assert not spare["healthy"]
    assert wait_until(lambda: " DEBUG " in daemon.log().split(line, 1)[1])  # the new log level
    # max_queue = 1: with the one slot busy and one request waiting, the next one is refused.
    running = Sse(daemon.url, max_tokens=1500)
    running.start()
    try:
        assert running.started_streaming.wait(60)
        waiting = Whole(daemon.url)
        waiting.start()
        assert wait_until(lambda: model_state(daemon)["queue_depth"] == 1, 30)
        body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        refused = web.post(f"{daemon.v1}/chat/completions", json=body, timeout=30)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "queue_full"
        assert int(refused.headers["retry-after"]) >= 1
    finally:
        running.stop()
    waiting.join(60)
    assert waiting.status == 200


def test_a_broken_configuration_is_logged_and_the_running_one_stays(daemon: Daemon) -> None:
    config = _config(daemon)
    good = config.read_text()
    remotes_before = [r["name"] for r in _remotes(daemon)]
    for broken, why in (
        ("[server\nmax_queue = 2\n", "cannot read the configuration"),  # TOML syntax
        ("[server]\nmax_queue = 0\n", "invalid setting server.max_queue"),  # a value out of range
        (f'[server]\napi_keys_file = "{config.parent}"\n', "cannot read the API keys file"),  # a directory
    ):
        config.write_text(broken)
        line = _reload_by_signal(daemon, "configuration not reloaded")
        assert "ERROR appliance.daemon: configuration not reloaded, the running one stays: " + why in line
        assert web.get(f"{daemon.url}/health", timeout=10).status_code == 200
        assert [r["name"] for r in _remotes(daemon)] == remotes_before
        answer = web.post(f"{daemon.url}/appliance/v1/reload", timeout=10)
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_configuration"
        assert why in answer.json()["error"]["message"]
    assert daemon.process.poll() is None
    assert "Traceback" not in daemon.log()
    config.write_text(good)
    answer = web.post(f"{daemon.url}/appliance/v1/reload", timeout=10)
    assert answer.status_code == 200
    assert answer.json()["reloaded"] and answer.json()["applied"] == []  # as it was before the breakage


def test_a_proxied_stream_survives_a_reload_and_a_shutdown_ends_it_well_formed(tmp_path: Path) -> None:
    (tmp_path / "remote").mkdir()
    (tmp_path / "front").mkdir()
    remote = start_daemon(tmp_path / "remote", "--parallel", "1", "--ctx", "4096", "--threads", "1")
    try:
        front = start_daemon(tmp_path / "front", "--parallel", "1", "--ctx", "2048", "--threads", "1",
                             env={"APPLIANCE_SERVER__SHUTDOWN_TIMEOUT_S": "1"})  # fmt: skip
        config = tmp_path / "front" / "config.toml"
        peer = f"""
[[remotes]]
name = "peer"
kind = "openai"
base_url = "{remote.url}"
models = {{ "far-model" = "{MODEL_ID}" }}
"""
        config.write_text(peer)
        assert "remotes (added peer)" in _reload_by_signal(front, "configuration reloaded:")
        assert wait_until(lambda: _remotes(front)[0]["healthy"], 30), _remotes(front)
        stream = Sse(front.url, max_tokens=1500, model="far-model")
        stream.start()
        assert stream.started_streaming.wait(60)
        assert stream.headers["x-appliance-backend"] == "remote:peer"
        config.write_text(peer + "timeouts = { connect_s = 2, first_byte_s = 30, between_chunks_s = 20 }\n")
        assert "remotes (changed peer)" in _reload_by_signal(front, "configuration reloaded:")
        seen = len(stream.lines)
        assert wait_until(lambda: len(stream.lines) > seen + 5, 30), "the stream stopped at the reload"
        front.process.send_signal(signal.SIGTERM)
        assert front.process.wait(30) == 0
        stream.join(10)
        events = stream.events()  # ends with [DONE]
        assert events[-1]["error"]["code"] == "shutting_down"
        assert any(e.get("choices") and e["choices"][0]["delta"].get("content") for e in events[:-1])
        assert "0 of 1 requests in flight finished, 1 cut short" in front.log()
        # The remote stopped generating for the client that went away.
        assert wait_until(lambda: model_state(remote)["slots_busy"] == 0, 30)
    finally:
        stop_daemon(remote)


def test_api_keys_from_the_keys_file_change_on_sighup(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, "--parallel", "1", "--ctx", "2048", "--threads", "1")
    try:
        models = f"{daemon.v1}/models"

        def status(key: str | None) -> int:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            return web.get(models, headers=headers, timeout=10).status_code

        assert status(None) == 200  # no key anywhere: open, on loopback
        keys = tmp_path / "api-keys"  # where `appliance key new` writes
        keys.write_text("# laptop\nsk-appl-first-key\n")
        keys.chmod(0o600)
        assert "server.api_keys_file" not in _reload_by_signal(daemon, "configuration reloaded:")
        assert (status(None), status("sk-appl-first-key"), status("wrong")) == (401, 200, 401)
        keys.write_text("# phone\nsk-appl-second-key\n")  # the first one revoked
        _reload_by_signal(daemon, "configuration reloaded:")
        assert (status("sk-appl-first-key"), status("sk-appl-second-key")) == (401, 200)
        assert "sk-appl-" not in daemon.log()  # keys are never logged
    finally:
        stop_daemon(daemon)
