"""The arm64 smoke test, packaging/arm64_qemu_smoke.sh: llm-appliance installed into an arm64 Debian
and one chat completion from it, under qemu-user emulation. Opt-in (APPLIANCE_QEMU_SMOKE=1): it takes
20-30 minutes on 2 cores, needs root, binfmt_misc, apt and PyPI, and installs host packages.

    sudo APPLIANCE_QEMU_SMOKE=1 pytest tests/integration/test_arm64_qemu_smoke.py -s

Without it, only the script's syntax is checked."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "packaging" / "arm64_qemu_smoke.sh"
ENABLED = os.environ.get("APPLIANCE_QEMU_SMOKE") == "1"


def test_script_parses() -> None:
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(not ENABLED, reason="opt-in: APPLIANCE_QEMU_SMOKE=1 (slow, needs root and binfmt_misc)")
def test_arm64_install_and_one_completion_under_qemu() -> None:
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=3600)
    print(done.stdout)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "# all checks passed" in done.stdout
