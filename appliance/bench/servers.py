"""Servers started for a benchmark, one after the other on a free loopback port: the appliance itself,
llama.cpp's llama-server, llama-cpp-python's own server. Each is polled until healthy, measured, and
stopped with its whole process group; its log is kept on request."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from appliance.bench.load import Load, LoadError, run_load


@dataclass(frozen=True)
class Setup:
    """What every started server gets: the same file, threads, context and slots (= concurrency)."""

    model: Path
    threads: int
    ctx: int
    llama_server: str | None = None
    startup_timeout_s: float = 300
    log_dir: Path | None = None
    draft: Path | None = None  # the draft model of the *-draft servers


@dataclass(frozen=True)
class ServerSpec:
    name: str
    command: Callable[[Setup, Load, int], list[str]]
    env: Callable[[Setup, str], dict[str, str]] = lambda setup, tmp: {}
    extra_body: Callable[[Setup, Load], dict[str, Any]] = lambda setup, load: {}
    ignore_eos: bool = True


def _appliance(s: Setup, load: Load, port: int) -> list[str]:
    flags = (
        f"--host 127.0.0.1 --port {port} --ctx {s.ctx} --parallel {load.concurrency} --threads {s.threads}"
    )
    return [sys.executable, "-m", "appliance", "serve", str(s.model), *flags.split()]


def _llama_server(s: Setup, load: Load, port: int) -> list[str]:
    assert s.llama_server is not None
    flags = f"--host 127.0.0.1 --port {port} -t {s.threads} -tb {s.threads} -c {s.ctx} -np {load.concurrency}"
    # Weights laid out as the appliance lays them: not repacked where AMX kernels would run (they crash).
    from appliance.engine.runtime import repacks_by_default

    repack = [] if repacks_by_default() else ["--no-repack"]
    return [s.llama_server, "-m", str(s.model), *flags.split(), *repack]


def _llama_server_uncached(s: Setup, load: Load, port: int) -> list[str]:
    # llama-server without its host-memory prompt cache: prefixes live in the slots only.
    return [*_llama_server(s, load, port), "--cache-ram", "0"]


def _llama_server_ngram(s: Setup, load: Load, port: int) -> list[str]:
    # llama-server's speculation by n-gram lookup in the context (its default draft lengths).
    return [*_llama_server(s, load, port), "--spec-type", "ngram-simple"]


def _llama_server_draft(s: Setup, load: Load, port: int) -> list[str]:
    # llama-server with a draft model, at the appliance's defaults (16 tokens at most, p_min 0.75).
    assert s.draft is not None
    draft = [
        "--spec-type",
        "draft-simple",
        "-md",
        str(s.draft),
        "--spec-draft-n-max",
        "16",
        "--spec-draft-p-min",
        "0.75",
    ]
    return [*_llama_server(s, load, port), *draft]


def _draft_env(s: Setup, tmp: str) -> dict[str, str]:
    assert s.draft is not None
    return {"APPLIANCE_HOME": tmp, "APPLIANCE_MODEL__DRAFT_MODEL": str(s.draft)}


def _llama_cpp_python(s: Setup, load: Load, port: int) -> list[str]:
    # Its server runs one request at a time whatever the concurrency (a new request aborts a stream).
    flags = f"--host 127.0.0.1 --port {port} --n_threads {s.threads} --n_threads_batch {s.threads}"
    return [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(s.model),
        *flags.split(),
        "--n_ctx",
        str(s.ctx),
    ]


def _n_predict(s: Setup, load: Load) -> dict[str, Any]:
    """llama-server's own length field beside max_tokens."""
    return {"n_predict": load.tokens}


def _end_of_text_bias(s: Setup, load: Load) -> dict[str, Any]:
    """Ban the model's end-of-text tokens through logit_bias, for a server without ignore_eos."""
    from models.gguf_header import read_gguf_file

    meta = read_gguf_file(s.model).metadata
    ids = {meta.get("tokenizer.ggml.eos_token_id"), meta.get("tokenizer.ggml.eot_token_id"), 0}
    return {"logit_bias": {str(i): -100 for i in ids if isinstance(i, int)}}


SERVERS = {
    "appliance": ServerSpec("appliance", _appliance, env=lambda s, tmp: {"APPLIANCE_HOME": tmp}),
    # The appliance without its host-memory prompt cache (model.prompt_cache 0): prefixes in the slots only.
    "appliance-uncached": ServerSpec(
        "appliance-uncached",
        _appliance,
        env=lambda s, tmp: {"APPLIANCE_HOME": tmp, "APPLIANCE_MODEL__PROMPT_CACHE": "0"},
    ),
    # The appliance without speculative decoding (model.draft_max 0), to measure what it gains.
    "appliance-plain": ServerSpec(
        "appliance-plain",
        _appliance,
        env=lambda s, tmp: {"APPLIANCE_HOME": tmp, "APPLIANCE_MODEL__DRAFT_MAX": "0"},
    ),
    # The appliance with a draft model (bench --draft FILE).
    "appliance-draft": ServerSpec("appliance-draft", _appliance, env=_draft_env),
    "llama-server": ServerSpec("llama-server", _llama_server, extra_body=_n_predict),
    "llama-server-uncached": ServerSpec(
        "llama-server-uncached", _llama_server_uncached, extra_body=_n_predict
    ),
    "llama-server-ngram": ServerSpec("llama-server-ngram", _llama_server_ngram, extra_body=_n_predict),
    "llama-server-draft": ServerSpec("llama-server-draft", _llama_server_draft, extra_body=_n_predict),
    "llama-cpp-python": ServerSpec(
        "llama-cpp-python", _llama_cpp_python, extra_body=_end_of_text_bias, ignore_eos=False
    ),
}
OURS, REFERENCE = "appliance", "llama-server"


def say(name: str, message: str) -> None:
    print(f"[{name}] {message}", file=sys.stderr, flush=True)


def cpu_busy(seconds: float = 1.0) -> float | None:
    """Fraction of all CPUs busy over a short window (Linux /proc/stat), to flag a noisy machine."""

    def snap() -> tuple[int, int]:
        vals = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(vals), vals[3] + vals[4]  # total, idle + iowait

    try:
        t0, i0 = snap()
        time.sleep(seconds)
        t1, i1 = snap()
    except (OSError, ValueError, IndexError):
        return None
    return 1 - (i1 - i0) / max(t1 - t0, 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_healthy(proc: subprocess.Popen[bytes], base: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise LoadError(f"the server exited with code {proc.returncode} before it was healthy")
            try:
                # llama-cpp-python's server has no /health (404): its model list answering means ready.
                health = (await client.get(f"{base}/health")).status_code
                if health == 200 or (
                    health == 404 and (await client.get(f"{base}/v1/models")).status_code == 200
                ):
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.25)
    raise LoadError(f"/health did not answer 200 within {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    """Stop the server's whole process group: SIGTERM, then SIGKILL after 15 s."""
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


async def engine_state(base: str) -> dict[str, Any]:
    """The appliance's own account of the run (its status's speculation and prompt cache, per model):
    what it guessed and kept, and the step times it weighed guesses with. Nothing from other servers."""
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(f"{base}/appliance/v1/status")
        models = response.json()["models"] if response.status_code == 200 else []
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return {}
    keys = ("speculation", "prompt_cache")
    return {"engine": [{"id": m.get("id"), **{k: m[k] for k in keys if k in m}} for m in models]}


async def bench_server(spec: ServerSpec, setup: Setup, load: Load) -> dict[str, Any]:
    """Start ``spec``'s server, measure ``load`` on it, stop it. A failure is a result with ``failed``
    and the tail of the server's log, so the other servers still run."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix=f"bench-{spec.name}-") as tmp:
        log_path = Path(tmp) / "server.log"
        cmd = spec.command(setup, load, port)
        env = {**os.environ, **spec.env(setup, tmp)}
        busy = cpu_busy()
        warning = " - WARNING: machine busy, timings will be noisy" if busy and busy > 0.2 else ""
        say(spec.name, f"starting (CPU {0 if busy is None else busy:.0%} busy{warning}): {' '.join(cmd)}")
        proc = None
        try:
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, start_new_session=True)
            t0 = time.perf_counter()
            await wait_healthy(proc, base, setup.startup_timeout_s)
            say(spec.name, f"healthy after {time.perf_counter() - t0:.1f} s")
            summary = await run_load(
                base, load, extra_body=spec.extra_body(setup, load), ignore_eos=spec.ignore_eos
            )
            say(spec.name, f"done: {summary['generated_tokens']} tokens, {summary['errors']} errors")
            return {"command": cmd, "cpu_busy_before": busy, **summary, **await engine_state(base)}
        except (LoadError, OSError) as exc:
            tail = log_path.read_text(errors="replace")[-1500:] if log_path.exists() else ""
            say(spec.name, f"FAILED: {exc}\n--- server log tail ---\n{tail}")
            return {"command": cmd, "failed": str(exc), "log_tail": tail}
        finally:
            stop(proc)
            if setup.log_dir and log_path.exists():
                setup.log_dir.mkdir(parents=True, exist_ok=True)
                label = f"{spec.name}-{setup.model.stem}-{load.prompt}-{load.tokens}-c{load.concurrency}"
                shutil.copy(log_path, setup.log_dir / f"{label}.log")
