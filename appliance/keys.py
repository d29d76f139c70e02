"""API keys: the ones the daemon accepts (settings, the environment and a keys file) and new ones.

The keys file holds one key per line; `#` starts a comment, which `appliance key new` uses to name each
key. It is written owner-only (0600): whoever reads it can use the daemon.
"""

from __future__ import annotations

import datetime
import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from appliance.config import Settings

log = logging.getLogger(__name__)

KEY_PREFIX = "sk-appl-"  # recognisable in a leaked config or a secret scanner's report


class KeyFileError(Exception):
    """The keys file cannot be read or written; one line why."""


@dataclass(frozen=True)
class NamedKey:
    key: str
    name: str  # from the comment line above it; "" when none

    @property
    def masked(self) -> str:
        """Enough of the key to tell keys apart, not to use one."""
        return f"{self.key[: len(KEY_PREFIX) + 4]}…{self.key[-2:]}" if len(self.key) > 16 else "…"


def keys_file(settings: Settings) -> Path:
    """The keys file: ``server.api_keys_file``, else ``api-keys`` in the config directory."""
    configured = settings.server.api_keys_file
    return configured.expanduser() if configured is not None else settings.dirs.api_keys_file


def read_keys_file(path: Path) -> list[NamedKey]:
    """The keys in ``path`` (none when it does not exist). Warns when others may read it."""
    try:
        text = path.read_text()
        mode = path.stat().st_mode
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise KeyFileError(f"cannot read the API keys file {path}: {exc.strerror}") from None
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the API keys file %s can be read by other users; chmod 600 it", path)
    keys, name = [], ""
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            label = line.lstrip("#").strip()
            name = "" if label.startswith("created ") else label.split(", created ")[0]
            continue
        keys.append(NamedKey(line.split()[0], name))
        name = ""
    return keys


def accepted_keys(settings: Settings) -> list[str]:
    """Every key a client may use: ``server.api_key``, ``server.api_keys`` and the keys file's."""
    keys = [settings.server.api_key, *settings.server.api_keys]
    found = [k.get_secret_value() for k in keys if k is not None and k.get_secret_value()]
    found += [k.key for k in read_keys_file(keys_file(settings))]
    return list(dict.fromkeys(found))


def new_key(path: Path, name: str = "") -> NamedKey:
    """Make a key, append it (under a comment naming it) to ``path``, owner-only; the key."""
    key = NamedKey(KEY_PREFIX + secrets.token_urlsafe(32), name)
    created = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    label = f"# {name}, created {created}" if name else f"# created {created}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as f:
            f.write(f"{label}\n{key.key}\n")
        path.chmod(0o600)
    except OSError as exc:
        raise KeyFileError(f"cannot write the API keys file {path}: {exc.strerror}") from None
    return key
