"""`appliance service`: the unit and the plist rendered from packaging/'s templates (golden files, checked
by systemd-analyze and plistlib), and install, status and uninstall into a temporary home.

systemd is not PID 1 in this container (`systemctl --user` fails: "Failed to connect to bus") and
launchctl exists only on macOS, so the install tests put recording stand-ins for them on PATH
(tests/fixtures/service/bin) and check the calls; the one test that needs no manager uses the real
systemctl's failure."""

from __future__ import annotations

import json
import plistlib
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.cli import main
from appliance.errors import UserError
from appliance.service import manage
from appliance.service.manage import install, service_target, status, uninstall
from appliance.service.units import (
    LAUNCHD_TEMPLATE,
    SYSTEM_TEMPLATE,
    USER_TEMPLATE,
    appliance_command,
    read_template,
    render_launchd,
    render_systemd,
    service_environment,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "service"
FAKES = FIXTURES / "bin"
COMMAND = [
    "/opt/llm-appliance/bin/appliance",
    "serve",
    "--config",
    "/home/ada/.config/llm-appliance/config.toml",
]
# Values that need systemd's escaping: a space, a quote, a specifier's % and a backslash.
ENVIRONMENT = {
    "APPLIANCE_SERVER__PORT": "8080",
    "APPLIANCE_SERVER__API_KEY": 'sk-"quoted"%h\\x',
    "XDG_DATA_HOME": "/home/ada/my data",
}


def _render_user(command: list[str]) -> str:
    return render_systemd(read_template(USER_TEMPLATE), command, ENVIRONMENT)


def _render_system(command: list[str]) -> str:
    return render_systemd(read_template(SYSTEM_TEMPLATE), command, {"APPLIANCE_MODEL__N_THREADS": "4"})


def _render_plist(command: list[str]) -> bytes:
    log_file = Path("/Users/ada/Library/Logs/llm-appliance/serve.log")
    return render_launchd(read_template(LAUNCHD_TEMPLATE).encode(), command, ENVIRONMENT, log_file)


def test_user_unit_matches_golden() -> None:
    assert _render_user(COMMAND) == (FIXTURES / "llm-appliance.service").read_text()


def test_system_unit_matches_golden() -> None:
    # The template's APPLIANCE_HOME stays; the sandboxing and User= come from the template unchanged.
    assert _render_system(COMMAND[:2]) == (FIXTURES / "llm-appliance-system.service").read_text()


def test_plist_matches_golden_and_parses() -> None:
    rendered = _render_plist(COMMAND)
    assert rendered == (FIXTURES / "llm-appliance.plist").read_bytes()
    agent = plistlib.loads(rendered)
    assert agent["ProgramArguments"] == COMMAND
    assert agent["EnvironmentVariables"] == ENVIRONMENT
    assert agent["KeepAlive"] == {"SuccessfulExit": False} and agent["RunAtLoad"] is True
    assert (
        agent["StandardErrorPath"]
        == agent["StandardOutPath"]
        == "/Users/ada/Library/Logs/llm-appliance/serve.log"
    )


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize("render", [_render_user, _render_system], ids=["user", "system"])
def test_rendered_units_verify(render, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # verify checks that ExecStart's program exists: this environment's `appliance`.
    unit = tmp_path / "llm-appliance.service"
    unit.write_text(render([*appliance_command(), "serve", "--config", str(tmp_path / "my config.toml")]))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


def test_environment_carries_appliance_and_xdg_but_not_the_rest() -> None:
    environ = {
        "APPLIANCE_HOME": "/a",
        "XDG_CONFIG_HOME": "/c",
        "XDG_RUNTIME_DIR": "/run/user/1",
        "PATH": "/bin",
        "HF_TOKEN": "hf_x",
    }
    assert service_environment(environ, system=False) == {
        "APPLIANCE_HOME": "/a",
        "HF_TOKEN": "hf_x",
        "XDG_CONFIG_HOME": "/c",
    }
    assert service_environment(environ, system=True) == {"APPLIANCE_HOME": "/a"}


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The recording systemctl and launchctl first on PATH; their calls land in the returned dir."""
    state = tmp_path / "fake-state"
    state.mkdir()
    monkeypatch.setenv("FAKE_SERVICE_DIR", str(state))
    monkeypatch.setenv("PATH", f"{FAKES}:{Path(sys.executable).parent}:/usr/bin:/bin")
    # The manager's own search path, elsewhere than the caller's XDG_CONFIG_HOME (as a real one is).
    monkeypatch.setenv("FAKE_UNIT_PATH", f"{_manager_units(tmp_path)} /etc/xdg/systemd/user")
    monkeypatch.setattr(manage, "_SETTLE_S", 0.0)
    return state


def _manager_units(tmp_path: Path) -> Path:
    """Where the stand-in user manager looks for units: its persistent configuration directory."""
    return tmp_path / "home" / ".config" / "systemd" / "user"


def _fake_state(state: Path) -> dict[str, object]:
    return dict(json.loads((state / "systemd-state.json").read_text()))


def _calls(state: Path) -> list[list[str]]:
    path = state / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_user_service_install_status_uninstall(
    fakes: Path,
    tmp_path: Path,
    appliance_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config_home = tmp_path / "xdg config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
    monkeypatch.setenv("APPLIANCE_SERVER__PORT", "11999")
    (appliance_home / "config.toml").write_text("[model]\nkeep_alive = '10m'\n")
    before = _files(tmp_path) | _files(appliance_home)

    assert main(["service", "install"]) == 0
    out = capsys.readouterr().out
    # Where the user's manager looks (its UnitPath), not under the XDG_CONFIG_HOME of this shell: a
    # real systemd started without it answers "Unit file llm-appliance.service does not exist" there.
    unit = _manager_units(tmp_path) / "llm-appliance.service"
    assert not (config_home / "systemd").exists()
    assert f"installed {unit}" in out and "journalctl --user -u llm-appliance -f" in out
    assert "loginctl enable-linger" in out
    text = unit.read_text()
    assert f'Environment="APPLIANCE_HOME={appliance_home}"' in text
    assert 'Environment="APPLIANCE_SERVER__PORT=11999"' in text
    assert f'Environment="XDG_CONFIG_HOME={config_home}"' in text
    exec_start = f"ExecStart={' '.join(appliance_command())} serve --config {appliance_home / 'config.toml'}"
    assert exec_start in text.splitlines()
    assert unit.stat().st_mode & 0o077 == 0
    show_unit = [
        "systemctl",
        "--user",
        "show",
        "llm-appliance.service",
        "--property=LoadState,UnitFileState,ActiveState,SubState,MainPID,NRestarts,Result,ExecMainStatus",
    ]
    assert _calls(fakes) == [
        ["systemctl", "--user", "show", "--property=Version", "--property=UnitPath"],
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", "llm-appliance.service"],
        show_unit,  # still running after the settling time
    ]

    assert main(["service", "status", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert (found["installed"], found["enabled"], found["running"], found["pid"]) == (True, True, True, 4242)
    assert (found["path"], found["state"], found["restarts"], found["last_exit"]) == (
        str(unit),
        "active (running)",
        0,
        None,
    )

    assert main(["service", "install"]) == 1
    assert "already installed" in capsys.readouterr().err

    assert main(["service", "uninstall"]) == 0
    assert f"removed {unit}" in capsys.readouterr().out
    assert _calls(fakes)[-3:] == [
        ["systemctl", "--user", "disable", "--now", "llm-appliance.service"],
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "reset-failed", "llm-appliance.service"],
    ]
    assert _files(tmp_path) | _files(appliance_home) == before | _files(fakes)
    assert main(["service", "status"]) == 0
    assert "installed  no" in capsys.readouterr().out
    assert main(["service", "uninstall"]) == 1
    assert "not installed" in capsys.readouterr().err


def test_launchd_agent_install_status_uninstall(fakes: Path, tmp_path: Path) -> None:
    home = tmp_path / "Users" / "ada"
    before = _files(tmp_path)
    target = service_target(
        "Darwin",
        system=False,
        home=home,
        environ={},
        uid=501,
        logs_dir=home / "Library" / "Logs" / "llm-appliance",
    )
    lines = install(target, COMMAND, {"APPLIANCE_SERVER__PORT": "8080"}, is_root=False)
    agent_path = home / "Library" / "LaunchAgents" / "llm-appliance.plist"
    assert lines[-1] == f"follow the logs: tail -f {home}/Library/Logs/llm-appliance/serve.log"
    agent = plistlib.loads(agent_path.read_bytes())
    assert agent["ProgramArguments"] == COMMAND and agent["EnvironmentVariables"] == {
        "APPLIANCE_SERVER__PORT": "8080"
    }
    assert _calls(fakes) == [
        ["launchctl", "print", "gui/501"],
        ["launchctl", "bootstrap", "gui/501", str(agent_path)],
    ]
    found = status(target)
    assert (found["installed"], found["enabled"], found["running"], found["pid"]) == (True, True, True, 4242)
    uninstall(target, is_root=False)
    assert _calls(fakes)[-1] == ["launchctl", "bootout", "gui/501/llm-appliance"]
    assert _files(tmp_path) == before | _files(fakes)
    found = status(target)
    assert (found["installed"], found["enabled"], found["running"]) == (False, False, False)


def test_system_unit_install(fakes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The service user is not made on this machine for a test: its lookup answers as if it existed.
    monkeypatch.setattr(pwd, "getpwnam", lambda name: name)
    monkeypatch.setenv("FAKE_UNIT_PATH", str(tmp_path / "etc"))
    target = service_target(
        "Linux",
        system=True,
        home=tmp_path,
        environ={},
        uid=0,
        logs_dir=tmp_path,
        system_unit_dir=tmp_path / "etc",
    )
    lines = install(target, ["/opt/llm-appliance/bin/appliance", "serve"], {}, is_root=True)
    assert lines[-1] == "follow the logs: journalctl -u llm-appliance -f"
    assert "User=llm-appliance" in (tmp_path / "etc" / "llm-appliance.service").read_text()
    assert _calls(fakes)[-2][:4] == ["systemctl", "enable", "--now", "llm-appliance.service"]
    uninstall(target, is_root=True)
    assert not (tmp_path / "etc" / "llm-appliance.service").exists()


def _error(call) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(UserError) as raised:
        call()
    message = str(raised.value)
    assert "\n" not in message
    return message


def test_errors_are_one_line(fakes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def target(system: bool = False, platform_name: str = "Linux") -> manage.ServiceTarget:
        return service_target(
            platform_name, system=system, home=tmp_path, environ={}, uid=1000, logs_dir=tmp_path
        )

    assert "not Windows" in _error(lambda: target(platform_name="Windows"))
    assert "launchd agent" in _error(lambda: target(system=True, platform_name="Darwin"))
    assert "needs root" in _error(lambda: install(target(system=True), COMMAND, {}, is_root=False))
    hidden = ["/home/ada/venv/bin/appliance", "serve"]
    assert "ProtectHome" in _error(lambda: install(target(system=True), hidden, {}, is_root=True))
    hidden_config = ["/opt/llm-appliance/bin/appliance", "serve", "--config", "/root/cfg/config.toml"]
    assert "cannot read /root/cfg/config.toml" in _error(
        lambda: install(target(system=True), hidden_config, {}, is_root=True)
    )
    monkeypatch.setattr(pwd, "getpwnam", lambda name: (_ for _ in ()).throw(KeyError(name)))
    assert "useradd --system" in _error(lambda: install(target(system=True), COMMAND[:2], {}, is_root=True))
    assert "not installed" in _error(lambda: uninstall(target(), is_root=False))
    # A manager that refuses: the half-written unit is removed again.
    monkeypatch.setenv("FAKE_SERVICE_FAIL", "enable")
    assert "enable --now llm-appliance.service` failed: Failed to enable unit" in _error(
        lambda: install(target(), COMMAND, {}, is_root=False)
    )
    assert not (_manager_units(tmp_path) / "llm-appliance.service").exists()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert "systemctl is not on PATH" in _error(lambda: install(target(), COMMAND, {}, is_root=False))


@pytest.mark.skipif(shutil.which("systemctl") is None, reason="needs systemctl")
def test_no_systemd_here_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if (
        subprocess.run(["systemctl", "--user", "show", "--property=Version"], capture_output=True).returncode
        == 0
    ):
        pytest.skip("systemd runs for this user here")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert main(["service", "install"]) == 1
    assert capsys.readouterr().err.startswith("appliance: systemd is not running for this user here")
    assert list(tmp_path.iterdir()) == []


def test_system_service_refuses_a_python_under_a_hidden_home(
    fakes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A venv in /opt made by a Python under /root (pyenv's, say): its bin/python links there, and the
    # system unit (ProtectHome=yes) fails with status 203/EXEC. Seen under a real systemd.
    monkeypatch.setattr(pwd, "getpwnam", lambda name: name)
    venv = tmp_path / "opt" / "llm-appliance" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").symlink_to("/root/.pyenv/versions/3.11.7/bin/python3.11")
    script = venv / "appliance"
    script.write_text(f"#!{venv / 'python'}\nimport sys\n")
    target = service_target(
        "Linux", system=True, home=tmp_path, environ={}, uid=0, logs_dir=tmp_path,
        system_unit_dir=tmp_path / "etc",
    )  # fmt: skip
    message = _error(lambda: install(target, [str(script), "serve"], {}, is_root=True))
    assert f"cannot run {script} (its Python is /root/.pyenv/versions/3.11.7/bin/python3.11)" in message
    assert "/usr/bin/python3 -m venv /opt/llm-appliance" in message
    assert not (tmp_path / "etc").exists() and _calls(fakes) == []


def test_failed_start_leaves_nothing_enabled_or_failed(
    fakes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `enable --now` links the unit, then its start fails: a real systemd kept the link (dangling once
    # the file was removed) and a failed "not-found" unit until the rollback disabled and reset it.
    monkeypatch.setenv("FAKE_SERVICE_FAIL", "start")
    target = service_target("Linux", system=False, home=tmp_path, environ={}, uid=1000, logs_dir=tmp_path)
    message = _error(lambda: install(target, COMMAND, {}, is_root=False))
    assert "failed: Job for llm-appliance.service failed" in message
    assert 'See "systemctl' not in message  # that unit is gone by now
    assert "(the daemon: exit-code, status 1); removed the unit again" in message
    assert "journalctl --user -u llm-appliance -n 30" in message
    assert not (_manager_units(tmp_path) / "llm-appliance.service").exists()
    state = _fake_state(fakes)
    assert (state["enabled"], state["active"]) == (False, "inactive")


def test_install_says_when_the_daemon_does_not_stay_up(
    fakes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The daemon starts, then exits (a config it cannot read, a missing library): systemd restarts it
    # every 3 s. install said "started now" regardless; now it says what systemd saw, and status too.
    monkeypatch.setenv("FAKE_SERVICE_CRASH", "1")
    target = service_target("Linux", system=False, home=tmp_path, environ={}, uid=1000, logs_dir=tmp_path)
    message = _error(lambda: install(target, COMMAND, {}, is_root=False))
    unit = _manager_units(tmp_path) / "llm-appliance.service"
    assert f"installed {unit}, but the daemon does not stay up" in message
    assert "activating (auto-restart), last exit exit-code, status 1, 1 restart;" in message
    assert unit.exists()  # kept: a fixed config is picked up by the next restart
    found = status(target)
    assert (found["installed"], found["enabled"], found["running"], found["pid"]) == (True, True, False, None)
    assert (found["state"], found["last_exit"]) == ("activating (auto-restart)", "exit-code, status 1")
    monkeypatch.setattr("platform.system", lambda: "Linux")
    monkeypatch.setenv("FAKE_UNIT_PATH", str(_manager_units(tmp_path)))
    assert main(["service", "status"]) == 0
    running = [line for line in capsys.readouterr().out.splitlines() if line.startswith("running")]
    assert running == ["running    no (activating (auto-restart); last exit exit-code, status 1; 3 restarts)"]


def test_no_user_manager_says_why(fakes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # systemd is PID 1 but `systemctl --user` cannot reach the user's manager: run from `sudo -u` or
    # `su` (no XDG_RUNTIME_DIR; a real one answers "Failed to connect to bus: No medium found"), or no
    # manager runs for the user at all (not logged in, no linger).
    monkeypatch.setattr(manage, "_SYSTEMD_BOOTED", tmp_path)
    monkeypatch.setattr(manage, "_RUN_USER", tmp_path / "run-user")
    monkeypatch.setenv("FAKE_SERVICE_FAIL", "show")

    def target(runtime_dir: str | None) -> manage.ServiceTarget:
        environ = {} if runtime_dir is None else {"XDG_RUNTIME_DIR": runtime_dir}
        return service_target(
            "Linux", system=False, home=tmp_path, environ=environ, uid=1000, logs_dir=tmp_path
        )

    no_manager = _error(lambda: install(target(None), COMMAND, {}, is_root=False))
    assert f"no systemd user manager runs for uid 1000 (no {tmp_path}/run-user/1000/bus" in no_manager
    assert "loginctl enable-linger USER" in no_manager
    (tmp_path / "run-user" / "1000").mkdir(parents=True)
    (tmp_path / "run-user" / "1000" / "bus").touch()
    no_runtime_dir = _error(lambda: install(target(None), COMMAND, {}, is_root=False))
    assert f"run again with XDG_RUNTIME_DIR={tmp_path}/run-user/1000" in no_runtime_dir
    assert "systemd is not running for this user here" in _error(
        lambda: install(target(str(tmp_path / "run-user" / "1000")), COMMAND, {}, is_root=False)
    )
    assert not _manager_units(tmp_path).exists()
