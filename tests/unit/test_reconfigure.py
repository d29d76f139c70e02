"""What a reload applies now, what it keeps until a restart, and how it names each change."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from appliance.config import Settings
from appliance.reconfigure import RESTART_ONLY, reconcile

_PEER = {"name": "peer", "base_url": "http://10.0.0.2:8000"}


def _settings(**values: Any) -> Settings:
    return Settings(**values)


@pytest.mark.parametrize(
    ("before", "after", "applied", "need_restart"),
    [
        ({}, {}, [], []),
        ({}, {"server": {"max_queue": 4}}, ["server.max_queue"], []),
        ({}, {"log_level": "debug", "model": {"keep_alive": "1h"}}, ["log_level", "model.keep_alive"], []),
        ({}, {"server": {"port": 8080}}, [], ["server.port"]),
        ({}, {"model": {"n_ctx": 8192, "keep_alive": "1m"}}, ["model.keep_alive"], ["model.n_ctx"]),
        ({}, {"planner": {"max_ram": "6GiB"}}, [], ["planner.max_ram"]),
        ({}, {"remotes": [_PEER]}, ["remotes (added peer)"], []),
        ({"remotes": [_PEER]}, {}, ["remotes (removed peer)"], []),
        ({"remotes": [_PEER]}, {"remotes": [{**_PEER, "kind": "vllm"}]}, ["remotes (changed peer)"], []),
        (
            {"remotes": [_PEER, {**_PEER, "name": "b"}]},
            {"remotes": [{**_PEER, "name": "b"}, {**_PEER, "name": "c"}]},
            ["remotes (added c; removed peer)"],
            [],
        ),
        ({}, {"routing": {"models": {"m": "never"}}}, ["routing.models"], []),
        ({"server": {"api_key": "old"}}, {"server": {"api_key": "new"}}, ["server.api_key"], []),
        ({"server": {"api_keys": ["a"]}}, {"server": {"api_keys": ["a"]}}, [], []),
        ({}, {"models": {"m": {"aliases": ["x"], "temperature": 0}}}, ["models"], []),
        ({}, {"models": {"m": {"n_ctx": 2048}}}, [], ['models."m".n_ctx']),
        (
            {"models": {"m": {"n_parallel": 2, "aliases": ["x"]}}},
            {},
            ["models"],
            ['models."m" (its context and slots)'],
        ),
    ],
)
def test_what_changed(
    before: dict[str, Any], after: dict[str, Any], applied: list[str], need_restart: list[str]
) -> None:
    result = reconcile(_settings(**before), _settings(**after))
    assert result.applied == applied
    assert result.need_restart == need_restart


def test_restart_only_settings_keep_their_running_values() -> None:
    running = _settings(server={"port": 8080, "max_queue": 4}, planner={"max_ram": "2GiB"})
    loaded = _settings(
        server={"port": 9090, "max_queue": 9}, planner={"max_ram": "6GiB", "vram_margin": "1GiB"}
    )
    result = reconcile(running, loaded)
    assert result.settings.server.port == 8080 and result.settings.server.max_queue == 9
    assert result.settings.planner == running.planner
    assert result.need_restart == ["planner.max_ram", "planner.vram_margin", "server.port"]
    assert loaded.server.port == 9090  # the configuration read is not changed in place
    result.settings.planner.max_ram = "1GiB"
    assert running.planner.max_ram == "2GiB"  # nor is the running one shared with the new


def test_secrets_are_named_not_shown() -> None:
    result = reconcile(_settings(server={"api_key": "sekrit-1"}), _settings(server={"api_key": "sekrit-2"}))
    assert result.applied == ["server.api_key"]
    assert isinstance(result.settings.server.api_key, SecretStr)
    assert "sekrit" not in repr(result.applied)


def test_every_restart_only_name_is_a_setting() -> None:
    settings = Settings()
    for dotted in RESTART_ONLY:
        value: Any = settings
        for part in dotted.split("."):
            assert hasattr(value, part), dotted
            value = getattr(value, part)


def test_a_models_context_and_slots_keep_their_running_values() -> None:
    running = _settings(models={"m": {"n_ctx": 2048, "aliases": ["x"]}})
    result = reconcile(running, _settings(models={"m": {"n_ctx": 8192, "n_parallel": 2, "aliases": ["y"]}}))
    kept = result.settings.models["m"]
    assert (kept.n_ctx, kept.n_parallel, kept.aliases) == (2048, None, ["y"])
    assert result.need_restart == ['models."m".n_ctx', 'models."m".n_parallel']
