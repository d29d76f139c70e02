"""Install, remove and inspect the service through the platform's manager: systemd (a user unit, or the
system unit with ``system``) on Linux, a launchd agent of the login session on macOS.

Every failure is a UserError with one readable line; an install that fails half way removes what it
wrote, so a second attempt starts clean.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from appliance.errors import UserError
from appliance.service.units import (
    LABEL,
    LAUNCHD_TEMPLATE,
    SYSTEM_TEMPLATE,
    UNIT_NAME,
    USER_TEMPLATE,
    read_template,
    render_launchd,
    render_systemd,
)

SYSTEM_USER = "llm-appliance"  # the system unit's User=
_TOOL_TIMEOUT_S = 60
# The system unit has ProtectHome=yes: an `appliance`, its Python or a config file under these is
# invisible to it.
_HIDDEN_FROM_SYSTEM = ("/home", "/root", "/run/user")
# sd_booted(): systemd is the init system. Each user's manager has its bus under /run/user/UID.
_SYSTEMD_BOOTED = Path("/run/systemd/system")
_RUN_USER = Path("/run/user")
# How long install watches a systemd service after starting it before saying it runs: long enough for
# a daemon that cannot start (a bad config, a missing library, a port in use) to have exited.
_SETTLE_S = 5.0
_STATE_PROPERTIES = "LoadState,UnitFileState,ActiveState,SubState,MainPID,NRestarts,Result,ExecMainStatus"


@dataclass(frozen=True)
class ServiceTarget:
    """Where the service file goes and which manager runs it."""

    manager: str  # "systemd" | "launchd"
    system: bool
    path: Path
    log_file: Path | None = None  # launchd only: systemd's go to the journal
    uid: int = 0
    runtime_dir: str | None = None  # the caller's XDG_RUNTIME_DIR: where `systemctl --user` finds the bus

    @property
    def systemctl(self) -> list[str]:
        return ["systemctl"] if self.system else ["systemctl", "--user"]

    @property
    def logs_hint(self) -> str:
        """The command that follows the service's logs."""
        if self.manager == "launchd":
            return f"tail -f {self.log_file}"
        return f"journalctl {'' if self.system else '--user '}-u {LABEL} -f"

    @property
    def recent_logs_hint(self) -> str:
        """The command that shows the service's last lines (systemd)."""
        return f"journalctl {'' if self.system else '--user '}-u {LABEL} -n 30"


def service_target(
    platform_name: str,
    *,
    system: bool,
    home: Path,
    environ: Mapping[str, str],
    uid: int,
    logs_dir: Path,
    system_unit_dir: Path = Path("/etc/systemd/system"),
) -> ServiceTarget:
    """The target on ``platform_name`` (platform.system()); UserError where there is no service manager
    we support."""
    if platform_name == "Linux":
        if system:
            return ServiceTarget("systemd", True, system_unit_dir / UNIT_NAME, uid=uid)
        # Where the user's manager looks unless it says otherwise (locate() asks it).
        config_home = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
        return ServiceTarget(
            "systemd",
            False,
            config_home / "systemd" / "user" / UNIT_NAME,
            uid=uid,
            runtime_dir=environ.get("XDG_RUNTIME_DIR"),
        )
    if platform_name == "Darwin":
        if system:
            raise UserError(
                "--system is for Linux's systemd; on macOS the service is a launchd agent of "
                "your login session: run `appliance service install` without it"
            )
        agent = home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
        return ServiceTarget("launchd", False, agent, logs_dir / "serve.log", uid)
    raise UserError(
        f"services are supported on Linux (systemd) and macOS (launchd), not {platform_name}: "
        "run `appliance serve` under your own supervisor"
    )


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            list(argv), capture_output=True, text=True, timeout=_TOOL_TIMEOUT_S, check=False
        )
    except FileNotFoundError:
        manager = "systemd's systemctl" if argv[0] == "systemctl" else argv[0]
        raise UserError(
            f"{manager} is not on PATH: this machine has no service manager we can use; "
            "run `appliance serve` under your own supervisor"
        ) from None
    except subprocess.TimeoutExpired:
        raise UserError(f"`{' '.join(argv)}` did not answer within {_TOOL_TIMEOUT_S} s") from None


def _last_line(done: subprocess.CompletedProcess[str]) -> str:
    """The tool's last line of output that says something: not systemctl's closing 'See "systemctl
    [--user] status ..." for details', which names a unit a failed install has just removed."""
    lines = [line.strip() for line in (done.stderr or done.stdout or "").splitlines() if line.strip()]
    said = [line for line in lines if not line.startswith('See "systemctl ')]
    return (said or lines)[-1] if lines else f"exit status {done.returncode}"


def _must(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    done = _run(argv)
    if done.returncode != 0:
        raise UserError(f"`{' '.join(argv)}` failed: {_last_line(done)}")
    return done


def _no_manager(target: ServiceTarget, done: subprocess.CompletedProcess[str]) -> UserError:
    """Why ``systemctl [--user]`` gets no answer, and what to do about it."""
    said = f"`{' '.join(target.systemctl)}`: {_last_line(done)}"
    own = "run `appliance serve` under your own supervisor"
    if target.system or not _SYSTEMD_BOOTED.is_dir():
        scope = "" if target.system else " for this user"
        return UserError(f"systemd is not running{scope} here ({said}); {own}")
    run_dir = _RUN_USER / str(target.uid)
    if not target.runtime_dir and (run_dir / "bus").exists():
        return UserError(
            f"this shell has no XDG_RUNTIME_DIR, so systemctl cannot reach your user manager ({said}): "
            f"sudo -u and su leave it unset; run again with XDG_RUNTIME_DIR={run_dir}, or from a login "
            "session (ssh, machinectl shell USER@)"
        )
    if not (run_dir / "bus").exists():
        return UserError(
            f"no systemd user manager runs for uid {target.uid} (no {run_dir / 'bus'}; {said}): log in "
            "to a session first, or have root run `loginctl enable-linger USER`; or " + own
        )
    return UserError(f"systemd is not running for this user here ({said}); {own}")


def _manager_state(target: ServiceTarget) -> dict[str, str]:
    """The systemd manager's Version and UnitPath; UserError unless it answers (systemd not PID 1, no
    user session bus, ...)."""
    done = _run([*target.systemctl, "show", "--property=Version", "--property=UnitPath"])
    if done.returncode != 0:
        raise _no_manager(target, done)
    return _systemd_state(done.stdout)


def locate(target: ServiceTarget, manager: Mapping[str, str]) -> ServiceTarget:
    """``target`` with a user unit's path where the user's manager looks for units: the first
    ``.../systemd/user`` of its UnitPath, its persistent configuration directory. That is
    ``$XDG_CONFIG_HOME/systemd/user`` only when the manager itself was started with that
    XDG_CONFIG_HOME: a shell that sets it afterwards does not move the manager's search path."""
    if target.manager != "systemd" or target.system:
        return target
    for entry in manager.get("UnitPath", "").split():
        if entry.endswith("/systemd/user"):
            return replace(target, path=Path(entry) / UNIT_NAME)
    return target


def _check_manager(target: ServiceTarget) -> ServiceTarget:
    """``target`` located by its manager; UserError unless the manager answers."""
    if target.manager == "systemd":
        return locate(target, _manager_state(target))
    _must(["launchctl", "print", f"gui/{target.uid}"])
    return target


def _shebang(path: str) -> str | None:
    """The interpreter named by the script at ``path``'s #! line, if it is one."""
    try:
        with open(path, "rb") as script:
            first = script.readline(4096)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode(errors="replace").split()
    return words[0] if words else None


def _hidden_paths(command: Sequence[str]) -> Iterator[tuple[str, str]]:
    """(argument, path) for each absolute path the system service would need (the program, its
    interpreter, a --config file; each as given and with its symlinks resolved) that is under a
    directory ProtectHome hides from it."""
    for word in command:
        if not word.startswith("/"):
            continue
        paths = [word, os.path.realpath(word)]
        interpreter = _shebang(word)
        if interpreter is not None:
            paths += [interpreter, os.path.realpath(interpreter)]
        for path in paths:
            if any(path == d or path.startswith(d + "/") for d in _HIDDEN_FROM_SYSTEM):
                yield word, path
                break


def _check_system(command: Sequence[str], is_root: bool) -> None:
    if not is_root:
        raise UserError("--system installs into /etc/systemd/system and needs root: run it with sudo")
    for word, path in _hidden_paths(command):
        if word == command[0]:
            what = f"run {word}" + (f" (its Python is {path})" if path != word else "")
            fix = (
                "install into a venv in /opt/llm-appliance made with a Python outside home directories, "
                "e.g. `/usr/bin/python3 -m venv /opt/llm-appliance` (docs/INSTALL.md)"
            )
        else:
            what = f"read {word}" + (f" ({path})" if path != word else "")
            fix = "put the config file under /etc or in /var/lib/llm-appliance/config.toml"
        raise UserError(
            f"the system service cannot {what}: it runs as {SYSTEM_USER} with home directories hidden "
            f"(ProtectHome); {fix}"
        )
    import pwd  # POSIX only: imported on the one path only Linux takes

    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise UserError(
            f"no user {SYSTEM_USER} for the system service: create it with `useradd --system "
            f"--home-dir /var/lib/llm-appliance --shell /usr/sbin/nologin {SYSTEM_USER}`"
        ) from None


def render(target: ServiceTarget, command: Sequence[str], environment: Mapping[str, str]) -> bytes:
    """The service file for ``target`` as it would be written."""
    if target.manager == "launchd":
        assert target.log_file is not None
        return render_launchd(read_template(LAUNCHD_TEMPLATE).encode(), command, environment, target.log_file)
    template = read_template(SYSTEM_TEMPLATE if target.system else USER_TEMPLATE)
    return render_systemd(template, command, environment).encode()


def _forget(target: ServiceTarget) -> None:
    """Best effort, after a failed install: the unit disabled (enable may have made its links before
    the start failed), its file removed, and no failed unit left in the manager's list."""
    if target.manager == "systemd":
        _run([*target.systemctl, "disable", "--now", UNIT_NAME])
    target.path.unlink(missing_ok=True)
    if target.manager == "systemd":
        _run([*target.systemctl, "daemon-reload"])
        _run([*target.systemctl, "reset-failed", UNIT_NAME])


def _unit_state(target: ServiceTarget) -> dict[str, str] | subprocess.CompletedProcess[str]:
    """The unit's state as systemctl shows it, or the failed call."""
    done = _run([*target.systemctl, "show", UNIT_NAME, f"--property={_STATE_PROPERTIES}"])
    return _systemd_state(done.stdout) if done.returncode == 0 else done


def _is_running(state: Mapping[str, str]) -> bool:
    return state.get("ActiveState") == "active" and state.get("SubState") == "running"


def _last_exit(state: Mapping[str, str]) -> str | None:
    """How the daemon last ended when that was a failure ("exit-code, status 1"), else None."""
    result = state.get("Result", "success")
    if result in ("", "success"):
        return None
    return f"{result}, status {state.get('ExecMainStatus') or '?'}"


def _settled(target: ServiceTarget) -> str | None:
    """None when the systemd service still runs, unrestarted, _SETTLE_S after its start; else why not."""
    time.sleep(_SETTLE_S)
    state = _unit_state(target)
    if not isinstance(state, dict):
        return f"`systemctl show` failed: {_last_line(state)}"
    restarts = int(state.get("NRestarts") or 0)
    if _is_running(state) and restarts == 0:
        return None
    how = _last_exit(state) or "it exited"
    return (
        f"{state.get('ActiveState')} ({state.get('SubState')}), last exit {how}, "
        f"{restarts} restart{'' if restarts == 1 else 's'}"
    )


def install(
    target: ServiceTarget, command: Sequence[str], environment: Mapping[str, str], *, is_root: bool
) -> list[str]:
    """Write the service file, enable and start it; the lines to tell the user. A systemd service that
    does not keep running for _SETTLE_S is a UserError naming its log (the unit stays installed, so
    that systemd's restarts pick up a fix)."""
    if target.system:
        _check_system(command, is_root)
    target = _check_manager(target)
    if target.path.exists():
        raise UserError(f"already installed at {target.path}: `appliance service uninstall` first")
    content = render(target, command, environment)
    target.path.parent.mkdir(parents=True, exist_ok=True)
    if target.log_file is not None:
        target.log_file.parent.mkdir(parents=True, exist_ok=True)
    # Owner-only: the environment may hold an API key or a Hub token.
    target.path.touch(mode=0o600)
    target.path.write_bytes(content)
    try:
        if target.manager == "systemd":
            _must([*target.systemctl, "daemon-reload"])
            _must([*target.systemctl, "enable", "--now", UNIT_NAME])
        else:
            _must(["launchctl", "bootstrap", f"gui/{target.uid}", str(target.path)])
    except UserError as error:
        if target.manager != "systemd":
            _forget(target)
            raise
        state = _unit_state(target)
        ended = _last_exit(state) if isinstance(state, dict) else None
        _forget(target)
        raise UserError(
            f"{error}{f' (the daemon: {ended})' if ended else ''}; removed the unit again; "
            f"the daemon's log: `{target.recent_logs_hint}`"
        ) from None
    if target.manager == "systemd":
        why = _settled(target)
        if why is not None:
            raise UserError(
                f"installed {target.path}, but the daemon does not stay up: {why}; see "
                f"`{target.recent_logs_hint}`; systemd restarts it every 3 s, so a fixed config is picked "
                "up, or `appliance service uninstall` removes it"
            )
    when = "at boot" if target.system else "at login"
    lines = [
        f"installed {target.path}: started now and {when}, restarted if it fails",
        f"follow the logs: {target.logs_hint}",
    ]
    if target.manager == "systemd" and not target.system:
        # A user's units stop at logout and wait for a login after a reboot, unless the user lingers.
        lines.append("to run it from boot without logging in: loginctl enable-linger $USER")
    return lines


def uninstall(target: ServiceTarget, *, is_root: bool) -> list[str]:
    """Stop and disable the service and remove its file; the lines to tell the user."""
    if target.system and not is_root:
        raise UserError("--system removes /etc/systemd/system's unit and needs root: run it with sudo")
    if target.manager == "systemd":
        target = _check_manager(target)
    if not target.path.exists():
        raise UserError(f"not installed (no {target.path})")
    if target.manager == "systemd":
        _must([*target.systemctl, "disable", "--now", UNIT_NAME])
        target.path.unlink()
        _must([*target.systemctl, "daemon-reload"])
        # A unit that had failed stays listed as failed (and "not-found") until this.
        _run([*target.systemctl, "reset-failed", UNIT_NAME])
    else:
        done = _run(["launchctl", "bootout", f"gui/{target.uid}/{LABEL}"])
        # 3 (No such process) and 113 (not loaded): it was not running, which is what we want.
        if done.returncode not in (0, 3, 113):
            raise UserError(f"`launchctl bootout gui/{target.uid}/{LABEL}` failed: {_last_line(done)}")
        target.path.unlink()
    kept = f"; its log stays in {target.log_file}" if target.log_file is not None else ""
    return [f"stopped and removed {target.path}{kept}"]


def _systemd_state(text: str) -> dict[str, str]:
    return dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)


def status(target: ServiceTarget) -> dict[str, Any]:
    """Installed or not, enabled, running (with its pid), as the manager reports them (None: unknown);
    for systemd also its state, its restarts and how it last failed."""
    manager_error = None
    if target.manager == "systemd":
        try:
            target = _check_manager(target)
        except UserError as error:
            manager_error = str(error)
    found: dict[str, Any] = {
        "manager": target.manager,
        "system": target.system,
        "path": str(target.path),
        "installed": target.path.exists(),
        "enabled": None,
        "running": None,
        "pid": None,
        "logs": target.logs_hint,
    }
    if target.manager == "systemd":
        if manager_error is not None:
            found["error"] = manager_error
            return found
        state = _unit_state(target)
        if not isinstance(state, dict):
            found["error"] = _last_line(state)
            return found
        found["enabled"] = state.get("UnitFileState") == "enabled"
        found["running"] = _is_running(state)
        found["state"] = f"{state.get('ActiveState')} ({state.get('SubState')})"
        found["restarts"] = int(state.get("NRestarts") or 0)
        found["last_exit"] = _last_exit(state)
        pid = int(state.get("MainPID") or 0)
    else:
        done = _run(["launchctl", "print", f"gui/{target.uid}/{LABEL}"])
        found["enabled"] = done.returncode == 0  # loaded into the session: starts at each login
        found["running"] = bool(re.search(r"^\s*state = running\s*$", done.stdout, re.M))
        match = re.search(r"^\s*pid = (\d+)\s*$", done.stdout, re.M)
        pid = int(match.group(1)) if match else 0
    found["pid"] = pid or None
    return found
