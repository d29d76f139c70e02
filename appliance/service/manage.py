"""Install, remove and inspect the service through the platform's manager: systemd (a user unit, or the
system unit with ``system``) on Linux, a launchd agent of the login session on macOS.

Every failure is a UserError with one readable line; an install that fails half way removes what it
wrote, so a second attempt starts clean.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
# The system unit has ProtectHome=yes: an `appliance` under these is invisible to it.
_HIDDEN_FROM_SYSTEM = ("/home", "/root", "/run/user")


@dataclass(frozen=True)
class ServiceTarget:
    """Where the service file goes and which manager runs it."""

    manager: str  # "systemd" | "launchd"
    system: bool
    path: Path
    log_file: Path | None = None  # launchd only: systemd's go to the journal
    uid: int = 0

    @property
    def systemctl(self) -> list[str]:
        return ["systemctl"] if self.system else ["systemctl", "--user"]

    @property
    def logs_hint(self) -> str:
        """The command that follows the service's logs."""
        if self.manager == "launchd":
            return f"tail -f {self.log_file}"
        return f"journalctl {'' if self.system else '--user '}-u {LABEL} -f"


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
        config_home = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
        return ServiceTarget("systemd", False, config_home / "systemd" / "user" / UNIT_NAME, uid=uid)
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
    lines = [line.strip() for line in (done.stderr or done.stdout or "").splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {done.returncode}"


def _must(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    done = _run(argv)
    if done.returncode != 0:
        raise UserError(f"`{' '.join(argv)}` failed: {_last_line(done)}")
    return done


def _check_manager(target: ServiceTarget) -> None:
    """UserError unless the service manager answers (systemd not PID 1, no user session bus, ...)."""
    if target.manager == "systemd":
        done = _run([*target.systemctl, "show", "--property=Version"])
        if done.returncode != 0:
            scope = "" if target.system else " for this user"
            raise UserError(
                f"systemd is not running{scope} here (`{' '.join(target.systemctl)}`: "
                f"{_last_line(done)}); run `appliance serve` under your own supervisor"
            )
    else:
        _must(["launchctl", "print", f"gui/{target.uid}"])


def _check_system(command: Sequence[str], is_root: bool) -> None:
    if not is_root:
        raise UserError("--system installs into /etc/systemd/system and needs root: run it with sudo")
    if any(command[0] == d or command[0].startswith(d + "/") for d in _HIDDEN_FROM_SYSTEM):
        raise UserError(
            f"the system service cannot run {command[0]}: it runs as {SYSTEM_USER} with home "
            "directories hidden (ProtectHome); install into a venv in /opt/llm-appliance "
            "(docs/INSTALL.md)"
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


def install(
    target: ServiceTarget, command: Sequence[str], environment: Mapping[str, str], *, is_root: bool
) -> list[str]:
    """Write the service file, enable and start it; the lines to tell the user."""
    if target.system:
        _check_system(command, is_root)
    if target.path.exists():
        raise UserError(f"already installed at {target.path}: `appliance service uninstall` first")
    _check_manager(target)
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
    except UserError:
        target.path.unlink()
        if target.manager == "systemd":
            _run([*target.systemctl, "daemon-reload"])
        raise
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
    if not target.path.exists():
        raise UserError(f"not installed (no {target.path})")
    if target.manager == "systemd":
        _check_manager(target)
        _must([*target.systemctl, "disable", "--now", UNIT_NAME])
        target.path.unlink()
        _must([*target.systemctl, "daemon-reload"])
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
    """Installed or not, enabled, running (with its pid), as the manager reports them (None: unknown)."""
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
        done = _run(
            [
                *target.systemctl,
                "show",
                UNIT_NAME,
                "--property=LoadState,UnitFileState,ActiveState,SubState,MainPID",
            ]
        )
        if done.returncode != 0:
            found["error"] = _last_line(done)
            return found
        state = _systemd_state(done.stdout)
        found["enabled"] = state.get("UnitFileState") == "enabled"
        found["running"] = state.get("ActiveState") == "active" and state.get("SubState") == "running"
        pid = int(state.get("MainPID") or 0)
    else:
        done = _run(["launchctl", "print", f"gui/{target.uid}/{LABEL}"])
        found["enabled"] = done.returncode == 0  # loaded into the session: starts at each login
        found["running"] = bool(re.search(r"^\s*state = running\s*$", done.stdout, re.M))
        match = re.search(r"^\s*pid = (\d+)\s*$", done.stdout, re.M)
        pid = int(match.group(1)) if match else 0
    found["pid"] = pid or None
    return found
