"""Fixtures for every test: no test reads or writes the real user's appliance state."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def appliance_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``APPLIANCE_HOME`` at a fresh empty directory and drop every other ``APPLIANCE_*`` variable.

    As simonw/llm isolates its user dir: settings a developer exported in their shell, or a real
    ``config.toml``, must not change what a test sees.
    """
    for name in list(os.environ):
        if name.startswith("APPLIANCE_"):
            monkeypatch.delenv(name)
    home = tmp_path_factory.mktemp("appliance-home")
    monkeypatch.setenv("APPLIANCE_HOME", str(home))
    # Nor what other tools downloaded: the Hugging Face cache, Ollama's and LM Studio's stores.
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("OLLAMA_MODELS", str(home / "ollama"))
    monkeypatch.setenv("HOME", str(home))
    return home


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop the daemons a test started and never stopped, and name those tests: a leaked daemon keeps
    a core busy and a port taken after the run."""
    from tests.server.conftest import RUNNING, stop_daemon

    leaked = list(RUNNING.values())
    for daemon, _ in leaked:
        stop_daemon(daemon)
    if leaked:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        names = ", ".join(sorted({test for _, test in leaked}))
        if reporter is not None:
            reporter.write_line(f"stopped {len(leaked)} daemon(s) left running by: {names}", red=True)
