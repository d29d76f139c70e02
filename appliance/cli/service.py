"""`appliance service install|uninstall|status [--system]`: run the daemon at login (a systemd user unit,
a launchd agent on macOS) or at boot (`--system`: the system unit, as its own user)."""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

from appliance.cli.common import settings, show
from appliance.service.manage import install, service_target, status, uninstall
from appliance.service.units import serve_command, service_environment


def register(
    commands: argparse._SubParsersAction,
    common: argparse.ArgumentParser,
    budget_flags: argparse.ArgumentParser,
) -> None:
    """Add `service install`, `service uninstall` and `service status`."""
    service = commands.add_parser(
        "service", parents=[common], help="run the daemon as a service (systemd, launchd)"
    )
    actions = service.add_subparsers(dest="service_command", required=True, metavar="ACTION")
    scope = argparse.ArgumentParser(add_help=False)
    scope.add_argument(
        "--system",
        action="store_true",
        help="the system unit (Linux, needs root): starts at boot as user llm-appliance",
    )
    actions.add_parser(
        "install",
        parents=[common, scope],
        help="install, enable and start the service",
        description="Write a systemd user unit (Linux; --system: the system unit) or a launchd agent "
        "(macOS) running this environment's `appliance serve`, with the APPLIANCE_* variables set now "
        "and the config file, restarted if it fails; enable and start it, and say how to follow its logs.",
    )
    actions.add_parser("uninstall", parents=[common, scope], help="stop the service and remove it")
    state = actions.add_parser(
        "status", parents=[common, scope], help="whether the service is installed, enabled and running"
    )
    state.add_argument("--json", action="store_true", help="print as JSON")
    service.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """The service action; the exit status."""
    loaded = settings(args)  # a broken config is reported before anything is written
    target = service_target(
        platform.system(),
        system=args.system,
        home=Path.home(),
        environ=os.environ,
        uid=os.getuid() if hasattr(os, "getuid") else 0,  # no uids on Windows, which is refused anyway
        logs_dir=loaded.dirs.logs,
    )
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if args.service_command == "install":
        config_file = getattr(args, "config", None)
        if config_file is None and loaded.dirs.config_file.is_file() and not args.system:
            config_file = loaded.dirs.config_file
        command = serve_command(config_file)
        lines = install(target, command, service_environment(os.environ, system=args.system), is_root=is_root)
    elif args.service_command == "uninstall":
        lines = uninstall(target, is_root=is_root)
    else:
        found = status(target)
        show(found, as_json=args.json, text=lambda: "\n".join(_status_lines(found)))
        return 0
    print("\n".join(lines))
    return 0


def _status_lines(found: dict[str, object]) -> list[str]:
    def word(value: object) -> str:
        return "unknown" if value is None else "yes" if value else "no"

    details = [f"pid {found['pid']}"] if found["pid"] else []
    if found.get("state") and not found["running"]:
        details.append(str(found["state"]))  # systemd's, e.g. "activating (auto-restart)"
    if found.get("last_exit"):
        details.append(f"last exit {found['last_exit']}")
    if found.get("restarts"):
        details.append(f"{found['restarts']} restart{'' if found['restarts'] == 1 else 's'}")
    running = word(found["running"]) + (f" ({'; '.join(details)})" if details else "")
    lines = [
        f"installed  {word(found['installed'])} ({found['path']})",
        f"enabled    {word(found['enabled'])}",
        f"running    {running}",
    ]
    if "error" in found:
        lines.append(f"           ({found['manager']}: {found['error']})")
    if found["installed"]:
        lines.append(f"logs       {found['logs']}")
    return lines
