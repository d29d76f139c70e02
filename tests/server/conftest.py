"""A real daemon process on a free loopback port, serving the embedded default model."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests import web

MODEL_ID = "smollm2-135m-instruct"
# SmolLM2's end-of-generation tokens (<|endoftext|>, <|im_end|>): banning them makes a generation
# run to max_tokens, for tests that need a long one.
NO_EOS_BIAS = {"0": -100, "2": -100}


@dataclass
class Daemon:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def client(self, api_key: str = "unused", **kwargs: object) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.v1, api_key=api_key, max_retries=0, **kwargs)  # type: ignore[arg-type]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_until(condition: Callable[[], object], timeout: float = 15) -> bool:
    """Poll ``condition`` until it is true or ``timeout`` seconds pass; whether it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Every daemon started and not yet stopped, with the test that started it: what is left at the end of
# the session leaked (a test that forgot stop_daemon) and is stopped then (tests/conftest.py).
RUNNING: dict[int, tuple[Daemon, str]] = {}


def start_daemon(
    home: Path, *args: str, env: dict[str, str] | None = None, port: int | None = None
) -> Daemon:
    port = port or free_port()
    log_path = home / "daemon.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("APPLIANCE_", "HF_"))}
    full_env.update({"APPLIANCE_HOME": str(home), "HF_HOME": str(home / "hf"), "HOME": str(home),
                     "OLLAMA_MODELS": str(home / "ollama"), **(env or {})})  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "appliance", "serve", "--port", str(port), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )
    daemon = Daemon(f"http://127.0.0.1:{port}", process, log_path)
    RUNNING[process.pid] = (daemon, os.environ.get("PYTEST_CURRENT_TEST", "?"))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daemon exited with {process.returncode}:\n{daemon.log()}")
        try:
            if web.get(f"{daemon.url}/health", timeout=2).status_code == 200:
                return daemon
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_daemon(daemon)
    raise RuntimeError(f"daemon did not become healthy:\n{daemon.log()}")


def stop_daemon(daemon: Daemon) -> None:
    RUNNING.pop(daemon.process.pid, None)
    daemon.process.terminate()
    try:
        daemon.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        daemon.process.kill()
        daemon.process.wait()


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("daemon"))
    yield d
    stop_daemon(d)


@pytest.fixture(scope="session")
def client(daemon: Daemon) -> openai.OpenAI:
    return daemon.client()


@pytest.fixture(scope="session")
def offline_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon whose pulls reach nothing: Hugging Face and Ollama's registry are a dead loopback port, so
    tests that send pulls at random (schema fuzzing, bad input) download nothing and touch no network."""
    dead = f"http://127.0.0.1:{free_port()}"
    env = {"HF_ENDPOINT": dead, "APPLIANCE_STORE__OLLAMA_REGISTRY": dead}
    d = start_daemon(tmp_path_factory.mktemp("offline"), env=env)
    yield d
    stop_daemon(d)


def error_shape_ok(path: str, response: httpx.Response) -> bool:
    """Whether an error answer has the error shape of the API ``path`` belongs to: Ollama's on /api/*,
    Anthropic's on /v1/messages, else OpenAI's."""
    error = response.json()
    if path.startswith("/api/"):
        return set(error) == {"error"} and isinstance(error["error"], str) and bool(error["error"])
    if path == "/v1/messages":
        return error.get("type") == "error" and bool(error["error"].get("message"))
    return set(error) == {"error"} and set(error["error"]) == {"message", "type", "param", "code"}
