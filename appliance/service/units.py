"""The service files, rendered from the templates in packaging/ (one source of truth: the units shipped
for hand installs are the ones `appliance service install` fills in). Pure functions over text."""

from __future__ import annotations

import os
import plistlib
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

LABEL = "llm-appliance"
UNIT_NAME = "llm-appliance.service"
USER_TEMPLATE = "systemd/llm-appliance.service"
SYSTEM_TEMPLATE = "systemd/llm-appliance-system.service"
LAUNCHD_TEMPLATE = "launchd/llm-appliance.plist"
# Variables carried into the service besides APPLIANCE_*: where the state dirs are (a service manager
# starts with none of the login shell's) and the Hub's endpoint and token for pulls through the daemon.
CARRIED = ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME", "HF_ENDPOINT", "HF_TOKEN")
HEADER = "# Written by `appliance service install`; `appliance service uninstall` removes it."


def template_dirs() -> list[Path]:
    """Where the templates are: packaging/ of a source checkout, else the wheel's data files."""
    return [Path(__file__).resolve().parents[2] / "packaging", Path(sys.prefix) / "share" / LABEL]


def read_template(name: str) -> str:
    """The text of template ``name`` (e.g. ``systemd/llm-appliance.service``); FileNotFoundError if none."""
    for directory in template_dirs():
        if (directory / name).is_file():
            return (directory / name).read_text()
    raise FileNotFoundError(f"service template {name} not found in {', '.join(map(str, template_dirs()))}")


def appliance_command() -> list[str]:
    """This environment's `appliance`: the script beside the running Python (its venv), else ``-m``."""
    script = Path(sys.executable).with_name("appliance")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "appliance"]


def service_environment(environ: Mapping[str, str], *, system: bool) -> dict[str, str]:
    """What the user configured in ``environ`` that the service must see: APPLIANCE_* and, for a user
    service, the XDG dirs and the Hub's variables (a system service has its own home)."""
    carried = () if system else CARRIED
    return {k: v for k, v in sorted(environ.items()) if k.startswith("APPLIANCE_") or k in carried}


def _systemd_word(word: str) -> str:
    """One ExecStart argument: % and $ escaped (specifiers, variables), quoted when it has spaces."""
    word = word.replace("%", "%%").replace("$", "$$")
    if any(c.isspace() or c in "\"'\\;" for c in word):
        return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return word


def _systemd_assignment(key: str, value: str) -> str:
    value = value.replace("%", "%%").replace("\\", "\\\\").replace('"', '\\"')
    return f'Environment="{key}={value}"'


def render_systemd(template: str, command: Sequence[str], environment: Mapping[str, str]) -> str:
    """The unit: ``template`` with its install notes replaced by a header, ExecStart running
    ``command`` and an Environment= line per variable (replacing the template's for the same name)."""
    lines = template.splitlines()
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    out = [HEADER]
    for line in lines:
        if line.startswith("Environment="):
            key = line.removeprefix("Environment=").strip('"').partition("=")[0]
            if key in environment:
                continue
        if line.startswith("ExecStart="):
            out += [_systemd_assignment(k, v) for k, v in environment.items()]
            line = "ExecStart=" + " ".join(_systemd_word(w) for w in command)
        out.append(line)
    return "\n".join(out) + "\n"


def render_launchd(
    template: bytes, command: Sequence[str], environment: Mapping[str, str], log_file: Path
) -> bytes:
    """The agent's plist: ``template`` running ``command`` with ``environment``, its output appended
    to ``log_file``."""
    agent = plistlib.loads(template)
    agent["ProgramArguments"] = list(command)
    agent["EnvironmentVariables"] = dict(environment)
    agent["StandardOutPath"] = agent["StandardErrorPath"] = str(log_file)
    return plistlib.dumps(agent)


def serve_command(config_file: Path | None) -> list[str]:
    """`appliance serve`, with the config file pinned where there is one (the service starts elsewhere)."""
    command = [*appliance_command(), "serve"]
    return [*command, "--config", os.path.abspath(config_file)] if config_file is not None else command
