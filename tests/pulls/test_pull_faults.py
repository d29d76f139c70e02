"""Pulls under faults: the disk filling up in the middle (another program takes the space the pull checked
for at its start), by the CLI and through the daemon's API, and the daemon SIGKILLed in the middle of an
API pull then started again. Nothing half done is ever listed or served; what was downloaded is kept and
the pull resumes from it, verified by sha256."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from models.store import Manifest, Store, StoredFile, StoreError, now_iso
from tests import web
from tests.pulls.conftest import Files, cli_env, run_cli, settled, tmpfs
from tests.pulls.fakehub import FakeHub
from tests.server.conftest import start_daemon, stop_daemon, wait_until

REF = "acme/SmolLM2-135M-Instruct-GGUF"
PULLED = "smollm2-135m-instruct:q4_1"
# A store that has room for the 94 MiB file and the pull's 256 MiB margin when the pull starts.
DISK_MIB = 400


def _fill(directory: Path) -> Path:
    """Take every free byte of ``directory``'s filesystem, as another program writing there would."""
    filler = directory / "filler"
    block = b"\0" * (1 << 20)
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def _partial(store: Path) -> int:
    """Bytes of the pull in progress."""
    return sum(p.stat().st_size for p in (store / ".partial").glob("*.part"))


def _manifests(store: Path) -> list[Path]:
    return list(store.glob("manifests/**/*.json"))


def test_a_disk_filling_up_mid_pull_is_one_line_and_the_pull_resumes(
    hub: FakeHub, files: Files, tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "data", DISK_MIB) as data:
        store = data / "models"
        hub.knobs.bytes_per_s = 20e6
        command = [sys.executable, "-m", "appliance", "pull", REF]
        pulling = subprocess.Popen(command, env=cli_env(tmp_path, hub), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)  # fmt: skip
        assert wait_until(lambda: _partial(store) > 10 << 20, 60)
        filler = _fill(data)
        _, err = pulling.communicate(timeout=120)
        assert pulling.returncode == 1 and "Traceback" not in err
        last = err.strip().splitlines()[-1]
        assert last.startswith("appliance: the disk filled up while downloading"), last
        assert f"kept in {store / '.partial'} to resume" in last and last.endswith("run again to resume")
        kept = _partial(store)
        assert kept > 10 << 20 and not _manifests(store)  # kept for the resume, and nothing half done shown
        listed = run_cli(tmp_path, hub, "list", "--json")
        assert PULLED not in [e["name"] for e in json.loads(listed.stdout)]
        # Room for the rest of the file and the pull's margin, not for the whole file again: a resumed
        # pull asks only for what it still needs.
        filler.unlink()
        rest = files.smollm2.stat().st_size - kept
        spare = shutil.disk_usage(data).free - (rest + (256 << 20) + (4 << 20))
        assert spare > 0
        with filler.open("wb") as f:
            for start in range(0, spare, 1 << 20):
                f.write(b"\0" * min(1 << 20, spare - start))
        hub.knobs.bytes_per_s = None
        served_before = settled(lambda: hub.knobs.served[files.smollm2.name])
        again = run_cli(tmp_path, hub, "pull", REF, "--json")
        assert again.returncode == 0, again.stderr
        assert hub.knobs.served[files.smollm2.name] - served_before < rest + (8 << 20)  # resumed
        assert json.loads(again.stdout)["files"][0]["sha256"] == hub.sha(files.smollm2)
        assert _partial(store) == 0


def _pull_events(daemon_url: str, events: list[dict[str, Any]]) -> None:
    body = {"model": REF}
    with web.stream("POST", f"{daemon_url}/appliance/v1/models/pull", json=body, timeout=120) as response:
        events.extend(json.loads(line) for line in response.iter_lines() if line)


def test_the_daemon_says_the_disk_filled_up_on_its_pull_stream(hub: FakeHub, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "data", DISK_MIB) as data:
        store = data / "models"
        env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf")}
        daemon = start_daemon(tmp_path, "--parallel", "1", "--ctx", "1024", env=env)
        try:
            hub.knobs.bytes_per_s = 20e6
            events: list[dict[str, Any]] = []
            follower = threading.Thread(target=_pull_events, args=(daemon.url, events))
            follower.start()
            assert wait_until(lambda: _partial(store) > 10 << 20, 60)
            _fill(data)
            follower.join(120)
            assert events[-1]["status"] == "error", events[-3:]
            assert events[-1]["error"].startswith("the disk filled up while downloading")
            assert not _manifests(store)
            ids = [m["id"] for m in web.get(f"{daemon.v1}/models", timeout=30).json()["data"]]
            assert PULLED not in ids
            body = {"model": PULLED, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
            missing = web.post(f"{daemon.v1}/chat/completions", json=body, timeout=60)
            assert missing.status_code == 404
            pulls = web.get(f"{daemon.url}/appliance/v1/models/pulls", timeout=10).json()["pulls"]
            assert pulls[0]["state"] == "failed"
        finally:
            stop_daemon(daemon)


def test_a_daemon_killed_mid_pull_resumes_the_pull_after_a_restart(
    hub: FakeHub, files: Files, tmp_path: Path
) -> None:
    env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf")}
    store = tmp_path / "data" / "models"
    daemon = start_daemon(tmp_path, "--parallel", "1", "--ctx", "1024", env=env)
    try:
        hub.knobs.bytes_per_s = 40e6
        url = f"{daemon.url}/appliance/v1/models/pull"
        with web.stream("POST", url, json={"model": REF}, timeout=60) as response:
            next(response.iter_lines())  # the pull has started; it runs on without this client
        assert wait_until(lambda: _partial(store) > 20 << 20, 60)
        daemon.process.kill()
        daemon.process.wait()
    finally:
        stop_daemon(daemon)
    kept = _partial(store)
    assert kept > 20 << 20 and not _manifests(store)
    hub.knobs.bytes_per_s = None
    served_before = settled(lambda: hub.knobs.served[files.smollm2.name])
    daemon = start_daemon(tmp_path, "--parallel", "1", "--ctx", "1024", env=env)
    try:
        assert PULLED not in [m["id"] for m in web.get(f"{daemon.v1}/models", timeout=30).json()["data"]]
        url = f"{daemon.url}/appliance/v1/models/pull"
        done = web.post(url, json={"model": REF, "stream": False}, timeout=120)
        assert done.status_code == 200 and done.json()["status"] == "success", done.text
        assert done.json()["manifest"]["files"][0]["sha256"] == hub.sha(files.smollm2)
        rest = files.smollm2.stat().st_size - kept
        assert hub.knobs.served[files.smollm2.name] - served_before < rest + (8 << 20)  # resumed
        body = {"model": PULLED, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        chat = web.post(f"{daemon.v1}/chat/completions", json=body, timeout=60)
        assert chat.status_code == 200 and chat.json()["model"] == PULLED
    finally:
        stop_daemon(daemon)


def test_a_manifest_that_cannot_be_written_leaves_nothing_half_written(small_disk: Path) -> None:
    """The last step of a pull, recording the model, on a disk that has just filled up."""
    store = Store(small_disk / "models")
    weights = store.files_dir / "m" / "m.gguf"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"GGUF" + bytes(1000))
    manifest = Manifest(
        "m", "q4_0", "Q4_0", (StoredFile("m/m.gguf", 1004, None),), {"kind": "file"}, now_iso()
    )
    (store.manifests_dir / "m").mkdir(parents=True)
    _fill(small_disk)
    with pytest.raises(StoreError, match=r"cannot record m:q4_0 in .*: No space left on device"):
        store.add(manifest)
    assert not [p for p in store.manifests_dir.rglob("*") if p.is_file()] and store.manifests() == []
