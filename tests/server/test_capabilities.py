"""Capabilities end to end: what the default model's file declares, shown by /api/show, /v1/models and
`appliance list`; the probe run once against the daemon, its results kept with the model file and read
back by `list`, `plan`, /api/show and /v1/models (the model's real numbers, whatever they are)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import ollama

from tests import web
from tests.server.conftest import MODEL_ID, Daemon

DECLARED = ["completion", "tools", "embedding"]  # SmolLM2: ChatML template, no tool format, no FIM


def _appliance(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env["APPLIANCE_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True,
                          env=env, timeout=600)  # fmt: skip


def _ok_json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _shown(daemon: Daemon) -> dict[str, Any]:
    response = web.post(f"{daemon.url}/api/show", json={"model": MODEL_ID}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _card(daemon: Daemon) -> dict[str, Any]:
    return web.get(f"{daemon.v1}/models/{MODEL_ID}", timeout=30).json()["meta"]  # type: ignore[no-any-return]


def test_the_default_model_declares_what_its_file_says(daemon: Daemon) -> None:
    shown = ollama.Client(host=daemon.url).show(MODEL_ID)
    assert shown.capabilities == DECLARED
    raw = _shown(daemon)
    assert raw["appliance"]["declared"]["tool_format"] == "generic"
    assert raw["appliance"]["declared"]["template"] == "gguf"
    assert raw["appliance"]["declared"]["vision"] is None
    meta = _card(daemon)
    assert meta["capabilities"] == DECLARED and meta["declared"]["embedding_only"] is False
    listed = web.get(f"{daemon.v1}/models", timeout=30).json()["data"]
    assert next(c for c in listed if c["id"] == MODEL_ID)["meta"]["capabilities"] == DECLARED


def test_the_probe_runs_once_and_list_plan_and_the_daemon_show_its_results(daemon: Daemon) -> None:
    home = daemon.log_path.parent  # the daemon's own state: results kept there are what it shows
    probed = _ok_json(_appliance(home, "eval", MODEL_ID, "--probe", "--url", daemon.url, "--json"))
    probe = probed["probe"]
    assert probed["file"] == _card(daemon)["path"]
    assert {k: probe[k]["total"] for k in ("tools", "json")} == {"tools": 3, "json": 2}
    assert "thinking" not in probe  # SmolLM2 declares no thinking: nothing to split
    failed = sum(probe[k]["total"] - probe[k]["passed"] for k in ("tools", "json"))
    assert len(probe["failures"]) == failed  # every failure says why
    assert Path(probed["stored"]).is_file()

    summary = f"tools {probe['tools']['passed']}/3, json {probe['json']['passed']}/2"
    entry = next(e for e in _ok_json(_appliance(home, "list", "--json")) if e["name"] == MODEL_ID)
    assert entry["capabilities"] == DECLARED and entry["short"] == "chat tools:generic"
    assert entry["measured"]["probe"]["tools"] == probe["tools"] and entry["measured"]["summary"] == summary
    listed = _appliance(home, "list")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()[:2]
    assert "CAPABILITIES" in header and "MEASURED" in header and summary in row
    plan = _appliance(home, "plan", MODEL_ID, "--no-dry-run")
    assert plan.returncode == 0, plan.stderr
    assert f"  measured {summary}" in plan.stdout.splitlines()
    assert (
        _ok_json(_appliance(home, "plan", MODEL_ID, "--no-dry-run", "--json"))["measured"]["probe"]["json"]
        == probe["json"]
    )

    assert _shown(daemon)["appliance"]["measured"]["summary"] == summary
    assert _card(daemon)["measured"]["probe"]["tools"] == probe["tools"]
