"""Every command takes the installed models from the settings: with `store.discover = false`, the models
other tools hold (here an LM Studio folder) are not there for `plan`, `bench` or `rm`, as for `list` and
the daemon; with it on (the default), they are."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from appliance.cli import main
from appliance.cli.bench import BenchError, model_file
from appliance.config import load_settings
from appliance.inventory import installed_models
from models.embedded import embedded_model_path


@pytest.fixture
def external(appliance_home: Path) -> str:
    """The name of a model only LM Studio's folder holds (under the test's HOME)."""
    source = embedded_model_path()
    assert source is not None, "the [default-model] extra is needed"
    folder = appliance_home / ".lmstudio" / "models" / "acme" / "Tiny-GGUF"
    folder.mkdir(parents=True)
    try:
        os.link(source, folder / "Tiny-Q4_1.gguf")
    except OSError:  # another file system
        shutil.copyfile(source, folder / "Tiny-Q4_1.gguf")
    (found,) = [m for m in installed_models(load_settings()) if m.external]
    return found.id


def _off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLIANCE_STORE__DISCOVER", "false")


def test_plan_finds_another_tool_s_model_only_while_discovery_is_on(
    external: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", external, "--no-dry-run", "--json"]) == 0
    assert "Tiny-Q4_1.gguf" in capsys.readouterr().out
    _off(monkeypatch)
    assert main(["plan", external, "--no-dry-run"]) == 1
    assert f"no such file or installed model: {external}" in capsys.readouterr().err


def test_bench_finds_another_tool_s_model_only_while_discovery_is_on(
    external: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert model_file(external, load_settings()).name == "Tiny-Q4_1.gguf"
    _off(monkeypatch)
    with pytest.raises(BenchError, match="no such file or installed model"):
        model_file(external, load_settings())
    # The command refuses before it starts any server.
    assert main(["bench", external, "--requests", "1"]) == 1
    assert f"no such file or installed model: {external}" in capsys.readouterr().err


def test_rm_sees_another_tool_s_model_only_while_discovery_is_on(
    external: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rm", external, "-y"]) == 1
    assert "belongs to lm-studio" in capsys.readouterr().err
    _off(monkeypatch)
    assert main(["rm", external, "-y"]) == 1
    assert f"no installed model named {external!r}" in capsys.readouterr().err
