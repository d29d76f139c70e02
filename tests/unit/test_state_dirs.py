"""The state directories come from the Settings object, never from the environment behind its back: a
Settings built with an explicit home is where the store, the pull cache (resumable downloads), the keys
file and the daemon's lock are, whatever APPLIANCE_HOME says."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance.config import Settings, load_settings
from appliance.errors import UserError
from appliance.inventory import installed_models, store
from appliance.keys import keys_file
from appliance.statelock import StateLock
from models.embedded import embedded_model_path
from server.daemon import run_daemon


def test_an_explicit_home_is_honoured_by_the_store_the_pull_cache_and_the_daemon_lock(
    appliance_home: Path, tmp_path: Path
) -> None:
    home = tmp_path / "elsewhere"
    settings = Settings(home=home)
    assert os.environ["APPLIANCE_HOME"] == str(appliance_home)  # the environment names another home
    target = store(settings)
    assert target.root == home / "data" / "models"
    assert target.partial_dir.is_relative_to(home)  # where a pull keeps what it has downloaded so far
    model = embedded_model_path()
    assert model is not None, "the [default-model] extra is needed"
    target.import_file(model, name="mine")
    assert "mine" in {m.name for m in installed_models(settings)}
    assert "mine" not in {m.name for m in installed_models(load_settings())}  # the environment's home
    assert keys_file(settings) == home / "api-keys"
    held = StateLock.acquire(home / "data" / "daemon.lock")  # as a daemon on that home would
    # Listening beyond loopback without a key: a daemon that took another lock stops at once on that
    # instead of serving, so this fails rather than hangs.
    exposed = Settings(home=home, server={"host": "0.0.0.0"})
    try:
        with pytest.raises(UserError, match="another appliance daemon"):
            run_daemon(exposed, None)
    finally:
        held.release()
    assert not (appliance_home / "data").exists()  # nothing was written under the environment's home
