"""Client libraries that cannot share the test venv, unchanged, against the session's daemon: LlamaIndex's
OpenAILike needs openai<3 and the embedded model's package (`llm`) needs openai>3; instructor pins
rich<15 and the TUI's snapshot tests need rich 15. Each one's package and the versions it needs are
installed without dependencies (the rest is the venv's) into a directory that a subprocess puts first on
its path, and its script in tests/clients/ runs there. Needs the package index, as the install of the
test extra does; pip's cache makes it quick after the first time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.server.conftest import MODEL_ID, Daemon

ROOT = Path(__file__).resolve().parents[2]


def _side_install(target: Path, packages: list[str]) -> None:
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
           "--target", str(target), *packages]  # fmt: skip
    done = subprocess.run(pip, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def _run(script: str, side: Path, daemon: Daemon) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(side), str(ROOT)])}
    run = subprocess.run([sys.executable, str(ROOT / "tests" / "clients" / script), daemon.url, MODEL_ID],
                         capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def test_llama_index_openai_like(daemon: Daemon, tmp_path: Path) -> None:
    packages = ["llama-index-llms-openai-like>=0.8,<0.9", "llama-index-llms-openai>=0.8,<0.9", "openai>=2,<3"]
    _side_install(tmp_path, packages)
    got = _run("openai_like.py", tmp_path, daemon)
    assert got["openai"].startswith("2.")  # the client ran on the openai it needs, not the venv's
    assert got["chat"] and got["stream"] and got["complete"]
    assert got["stream"] == got["chat"]  # temperature 0: the same reply whole and streamed
    assert got["city"]  # parsed into the pydantic model from a json_schema-constrained reply
    assert got["calls"] and got["calls"][0][0] == "get_weather" and "city" in got["calls"][0][1]


def test_instructor_json_schema_and_tools_modes(daemon: Daemon, tmp_path: Path) -> None:
    _side_install(tmp_path, ["instructor>=1.10", "rich>=13.7,<15", "jiter>=0.6.1,<0.15"])
    got = _run("instructor_check.py", tmp_path, daemon)
    assert not got["rich"].startswith("15")  # the rich it pins, not the venv's
    for mode in ("json_schema_mode", "tool_call"):  # response_format json_schema; a forced tool call
        assert set(got[mode]) == {"name", "country"} and all(got[mode].values()), got
