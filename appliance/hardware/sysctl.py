"""macOS's ``sysctl``: the one way to read RAM size, chip name and CPU features there without PyObjC."""

from __future__ import annotations

import logging
import subprocess
import sys

log = logging.getLogger(__name__)


def read_sysctl(name: str) -> str | None:
    """The value of sysctl key ``name`` (``sysctl -n``), or None where it is absent or not on macOS."""
    if sys.platform != "darwin":
        return None
    try:
        result = subprocess.run(
            ["/usr/sbin/sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("sysctl %s failed: %s", name, exc, extra={"sysctl_key": name})
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip()
