"""appliance.config and the `appliance` CLI around it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from appliance.cli import main
from appliance.config import Settings, load_settings, masked, state_dirs

# (section, field, default)
DEFAULTS = [
    ("server", "host", "127.0.0.1"),
    ("server", "port", 11435),
    ("server", "api_key", None),
    ("server", "max_queue", 64),
    ("model", "default", None),
    ("model", "alias", None),
    ("model", "n_ctx", None),
    ("model", "n_parallel", None),
    ("model", "n_threads", None),
    ("model", "n_batch", 2048),
    ("model", "n_ubatch", 512),
    ("model", "n_gpu_layers", None),
    ("model", "flash_attn", "auto"),
]


def _get(settings: Settings, section: str, field: str) -> Any:
    value = getattr(getattr(settings, section), field)
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


@pytest.mark.parametrize(("section", "field", "expected"), DEFAULTS)
def test_defaults(section: str, field: str, expected: Any) -> None:
    assert _get(load_settings(), section, field) == expected


def test_default_log_level() -> None:
    assert load_settings().log_level == "info"


CONFIG_TOML = """\
log_level = "debug"

[server]
host = "0.0.0.0"
port = 1111
api_key = "from-file"

[model]
n_ctx = 2048
n_batch = 128
"""

# Which layers set the value: "file" (config.toml), "env" (APPLIANCE_SERVER__PORT), "override" (CLI).
# The highest layer present wins.
PORT_PRECEDENCE = [
    ((), 11435),
    (("file",), 1111),
    (("env",), 2222),
    (("override",), 3333),
    (("file", "env"), 2222),
    (("file", "override"), 3333),
    (("env", "override"), 3333),
    (("file", "env", "override"), 3333),
]


@pytest.mark.parametrize(("layers", "expected_port"), PORT_PRECEDENCE)
def test_precedence(
    layers: tuple[str, ...],
    expected_port: int,
    appliance_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if "file" in layers:
        (appliance_home / "config.toml").write_text(CONFIG_TOML)
    if "env" in layers:
        monkeypatch.setenv("APPLIANCE_SERVER__PORT", "2222")
    overrides: dict[str, Any] = {"server": {"port": 3333}} if "override" in layers else {}
    assert load_settings(**overrides).server.port == expected_port


def test_file_env_and_overrides_merge_per_field(
    appliance_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (appliance_home / "config.toml").write_text(CONFIG_TOML)
    monkeypatch.setenv("APPLIANCE_SERVER__PORT", "2222")
    monkeypatch.setenv("APPLIANCE_MODEL__N_BATCH", "256")
    monkeypatch.setenv("APPLIANCE_LOG_LEVEL", "warning")

    settings = load_settings(server={"max_queue": 3}, model={"n_threads": 4})

    assert settings.server.host == "0.0.0.0"  # file
    assert settings.server.port == 2222  # env over file
    assert settings.server.max_queue == 3  # override, siblings kept
    assert settings.server.api_key is not None
    assert settings.server.api_key.get_secret_value() == "from-file"
    assert settings.model.n_ctx == 2048  # file
    assert settings.model.n_batch == 256  # env over file
    assert settings.model.n_threads == 4  # override
    assert settings.log_level == "warning"  # env over file


@pytest.mark.parametrize(
    "overrides",
    [
        {"server": {"port": None}},
        {"server": {"port": None, "host": None, "api_key": None}},
        {"server": {}},
        {"model": {"alias": None, "n_ctx": None}},
        {"log_level": None},
    ],
)
def test_none_overrides_never_mask_lower_layers(
    overrides: dict[str, Any], appliance_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (appliance_home / "config.toml").write_text(CONFIG_TOML)
    monkeypatch.setenv("APPLIANCE_MODEL__ALIAS", "from-env")

    settings = load_settings(**overrides)

    assert settings.server.port == 1111
    assert settings.server.host == "0.0.0.0"
    assert settings.model.alias == "from-env"
    assert settings.model.n_ctx == 2048
    assert settings.log_level == "debug"


def test_explicit_config_file_replaces_the_home_one(appliance_home: Path, tmp_path: Path) -> None:
    (appliance_home / "config.toml").write_text(CONFIG_TOML)
    other = tmp_path / "other.toml"
    other.write_text('[server]\nport = 4444\n[model]\nalias = "mine"\n')

    settings = load_settings(config_file=other)

    assert settings.server.port == 4444
    assert settings.model.alias == "mine"
    assert settings.server.host == "127.0.0.1"  # the home config.toml is not read as well
    assert settings.log_level == "info"


def test_explicit_config_file_still_loses_to_env_and_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other.toml"
    other.write_text("[server]\nport = 4444\nmax_queue = 9\n")
    monkeypatch.setenv("APPLIANCE_SERVER__PORT", "2222")

    settings = load_settings(config_file=other, server={"max_queue": 5})

    assert (settings.server.port, settings.server.max_queue) == (2222, 5)


@pytest.mark.parametrize("name", ["missing.toml", "."])
def test_explicit_config_file_that_is_not_a_file(name: str, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_settings(config_file=tmp_path / name)


def test_state_dirs_under_appliance_home(appliance_home: Path) -> None:
    dirs = load_settings().dirs
    assert dirs.config == appliance_home
    assert dirs.config_file == appliance_home / "config.toml"
    assert dirs.data == appliance_home / "data"
    assert dirs.cache == appliance_home / "cache"
    assert dirs.logs == appliance_home / "logs"


def test_state_dirs_from_an_explicit_home(tmp_path: Path) -> None:
    assert state_dirs(tmp_path).data == tmp_path / "data"
    assert state_dirs(None).data != tmp_path / "data"  # the platform's user dirs


def test_an_empty_appliance_home_is_unset_and_a_config_file_may_move_the_data(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("APPLIANCE_HOME", "")
    assert load_settings().home is None and load_settings().dirs == state_dirs(None)
    monkeypatch.delenv("APPLIANCE_HOME")
    config = tmp_path / "other.toml"
    config.write_text(f'home = "{tmp_path}"\n')
    assert load_settings(config).dirs.models == tmp_path / "data" / "models"
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path / "env"))  # the environment over the file, as ever
    assert load_settings(config).dirs.models == tmp_path / "env" / "data" / "models"


@pytest.mark.parametrize(
    ("api_key", "shown"),
    [(None, None), ("sk-very-secret", "**********")],
)
def test_masked_hides_the_api_key(api_key: str | None, shown: str | None) -> None:
    data = masked(load_settings(server={"api_key": api_key}))
    assert data["server"]["api_key"] == shown
    assert "sk-very-secret" not in json.dumps(data)
    assert data["server"]["port"] == 11435


# ---- the CLI ----


def test_cli_config_show_prints_json_with_the_secret_masked(
    appliance_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (appliance_home / "config.toml").write_text("[server]\nport = 1111\n")
    monkeypatch.setenv("APPLIANCE_SERVER__API_KEY", "sk-very-secret")

    assert main(["config", "show"]) == 0

    out, err = capsys.readouterr()
    shown = json.loads(out)
    assert shown["server"]["port"] == 1111
    assert shown["server"]["api_key"] == "**********"
    assert "sk-very-secret" not in out
    assert err == ""


def test_cli_config_show_with_config_after_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.toml"
    other.write_text("[server]\nport = 4444\n")

    assert main(["config", "show", "--config", str(other)]) == 0

    assert json.loads(capsys.readouterr().out)["server"]["port"] == 4444


def test_cli_config_show_with_config_before_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.toml"
    other.write_text("[server]\nport = 4444\n")

    assert main(["config", "--config", str(other), "show"]) == 0

    assert json.loads(capsys.readouterr().out)["server"]["port"] == 4444


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("appliance: "), err
    assert "Traceback" not in err
    return lines[0]


# (argv, files to write in tmp_path, env, fragment of the one stderr line)
CLI_USER_ERRORS = [
    (["config", "show"], {}, {"APPLIANCE_SERVER__PORT": "99999999"}, "invalid setting server.port"),
    (["config", "show"], {}, {"APPLIANCE_MODEL__FLASH_ATTN": "maybe"}, "invalid setting model.flash_attn"),
    (["config", "show", "--config", "{tmp}/missing.toml"], {}, {}, "config file not found"),
    (["config", "show", "--config", "{tmp}/bad.toml"], {"bad.toml": "[server\n"}, {}, "cannot read"),
    (["serve", "/nonexistent.gguf"], {}, {}, "no such file: /nonexistent.gguf"),
    (["serve", "{tmp}/notes.gguf"], {"notes.gguf": "just some text\n"}, {}, "not a GGUF file"),
    (["serve", "{tmp}/short.gguf"], {"short.gguf": "GGUF\x03\x00"}, {}, "truncated GGUF file"),
    (["serve", "{tmp}"], {}, {}, "not a file"),
    (["serve", "--port", "99999999", "/nonexistent.gguf"], {}, {}, "invalid setting server.port"),
]


@pytest.mark.parametrize(("argv", "files", "env", "fragment"), CLI_USER_ERRORS)
def test_cli_user_errors_exit_1_with_one_line(
    argv: list[str],
    files: dict[str, str],
    env: dict[str, str],
    fragment: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    assert main([arg.format(tmp=tmp_path) for arg in argv]) == 1

    assert fragment in _one_error_line(capsys)


@pytest.mark.parametrize(
    "argv", [["frobnicate"], [], ["config"], ["config", "edit"], ["serve", "--port", "x"]]
)
def test_cli_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc_info:
        main(argv)
    assert exc_info.value.code == 2
    assert "usage:" in capsys.readouterr().err
