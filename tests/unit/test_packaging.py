"""The service units are valid systemd units that start `appliance serve` (systemd-analyze verify, with
ExecStart pointed at this environment's `appliance`, since it checks the command exists)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = sorted((Path(__file__).resolve().parents[2] / "packaging" / "systemd").glob("*.service"))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_units_verify(unit: Path, tmp_path: Path) -> None:
    appliance = Path(sys.executable).with_name("appliance")
    assert appliance.exists()
    lines = unit.read_text().splitlines()
    (start,) = [line for line in lines if line.startswith("ExecStart=")]
    assert start.endswith("/appliance serve")
    copy = tmp_path / unit.name
    copy.write_text(
        "\n".join(f"ExecStart={appliance} serve" if line == start else line for line in lines) + "\n"
    )
    done = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr
