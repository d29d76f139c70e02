"""Side-by-side streaming benchmark of OpenAI-compatible servers: llama.cpp's llama-server vs. ours.

Each selected server is started as a subprocess on a free loopback port, polled on GET /health until
it answers 200, warmed up with one request, then sent --requests streaming /v1/chat/completions
requests (temperature 0, exactly --tokens tokens asked for via max_tokens + ignore_eos, and n_predict
for llama-server) at --concurrency. Servers run one after the other, never at the same time.

Run from the repository root:

    . .venv/bin/activate
    python benchmarks/serve_bench.py --model PATH.gguf --llama-server PATH/TO/llama-server \\
        [--servers llama-server,appliance] [--threads 2] [--ctx 4096] [--tokens 128] \\
        [--concurrency 1] [--requests 5] [--prompt short|long] [--json OUT.json] [--log-dir DIR]

Metrics, per server:
  decode tok/s   per request (tokens - 1) / (last token time - first token time); median over requests
  aggregate tok/s all generated tokens / wall time of the measured batch
  TTFT           request sent -> first content chunk
  ITL            gaps between content chunks (one chunk is one token for llama-server)
Generated tokens come from the final usage chunk (stream_options.include_usage); if a server sends
no usage, content chunks are counted instead. Every prompt starts with a unique request number so
no server can reuse a cached prompt prefix. Note that llama-server splits --ctx across its -np
slots: with the long prompt (~2000 tokens) use --ctx >= concurrency * (2100 + tokens).
Only the standard library and httpx are needed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
SHORT_PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
FILLER = (
    "the system reads each block of data from disk and checks its header before passing the "
    "payload to a worker thread which decodes records updates an index and reports progress "
    "to a small monitor that keeps counters for every stage of the pipeline"
)


def long_prompt() -> str:
    """About 2000 tokens (SmolLM2 tokenizer) of deterministic filler text plus a question."""
    rng, vocab = random.Random(1234), FILLER.split()
    sentences = []
    for _ in range(126):
        words = [rng.choice(vocab) for _ in range(rng.randint(10, 18))]
        sentences.append(" ".join(words).capitalize() + ".")
    return "Read these notes:\n\n" + " ".join(sentences) + "\n\nSummarize the notes above in detail."


@dataclass
class ServerSpec:
    name: str
    command: Callable[[argparse.Namespace, int], list[str]]
    env: Callable[[argparse.Namespace, str], dict[str, str]] = lambda args, tmp: {}
    extra_body: Callable[[argparse.Namespace], dict[str, Any]] = lambda args: {}


def llama_server_cmd(a: argparse.Namespace, port: int) -> list[str]:
    flags = f"--host 127.0.0.1 --port {port} -t {a.threads} -tb {a.threads} -c {a.ctx} -np {a.concurrency}"
    return [a.llama_server, "-m", a.model, *flags.split()]


def appliance_cmd(a: argparse.Namespace, port: int) -> list[str]:
    flags = f"--host 127.0.0.1 --port {port} --ctx {a.ctx} --parallel {a.concurrency}"
    return [a.appliance, "serve", a.model, *flags.split()]


def llama_cpp_python_cmd(a: argparse.Namespace, port: int) -> list[str]:
    # Its server runs one request at a time whatever the concurrency (a new request aborts a stream).
    flags = f"--host 127.0.0.1 --port {port} --n_threads {a.threads} --n_threads_batch {a.threads}"
    flags += f" --n_ctx {a.ctx}"
    return [sys.executable, "-m", "llama_cpp.server", "--model", a.model, *flags.split()]


def end_of_text_bias(a: argparse.Namespace) -> dict[str, Any]:
    """Ban the model's end-of-text tokens through logit_bias, for servers without ignore_eos."""
    from models.gguf_header import read_gguf_file

    meta = read_gguf_file(Path(a.model)).metadata
    ids = {meta.get("tokenizer.ggml.eos_token_id"), meta.get("tokenizer.ggml.eot_token_id"), 0}
    return {"logit_bias": {str(i): -100 for i in ids if isinstance(i, int)}}


SERVERS = {
    "llama-server": ServerSpec(
        "llama-server", llama_server_cmd, extra_body=lambda a: {"ignore_eos": True, "n_predict": a.tokens}
    ),
    "appliance": ServerSpec(
        "appliance",
        appliance_cmd,
        env=lambda a, tmp: {"APPLIANCE_MODEL__N_THREADS": str(a.threads), "APPLIANCE_HOME": tmp},
        extra_body=lambda a: {"ignore_eos": True},
    ),
    "llama-cpp-python": ServerSpec("llama-cpp-python", llama_cpp_python_cmd, extra_body=end_of_text_bias),
}
OURS, REFERENCE = "appliance", "llama-server"


@dataclass
class Result:
    ok: bool = False
    error: str = ""
    start: float = 0.0
    chunk_times: list[float] = field(default_factory=list)
    tokens: int = 0
    prompt_tokens: int | None = None


def say(name: str, msg: str) -> None:
    print(f"[{name}] {msg}", file=sys.stderr, flush=True)


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
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float | None:
    """Percentile with linear interpolation; None for no data."""
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


async def wait_healthy(proc: subprocess.Popen, base: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with code {proc.returncode} before becoming healthy")
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
    raise RuntimeError(f"/health did not return 200 within {timeout:.0f}s")


async def one_request(client: httpx.AsyncClient, base: str, body: dict[str, Any]) -> Result:
    r = Result(start=time.perf_counter())
    try:
        async with client.stream("POST", f"{base}/v1/chat/completions", json=body) as resp:
            if resp.status_code != 200:
                r.error = f"HTTP {resp.status_code}: {(await resp.aread()).decode(errors='replace')[:200]}"
                return r
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    r.error = str(chunk["error"])[:200]
                    return r
                for choice in chunk.get("choices") or []:
                    if (choice.get("delta") or {}).get("content"):
                        r.chunk_times.append(time.perf_counter())
                if usage := chunk.get("usage"):
                    r.tokens = usage.get("completion_tokens", 0)
                    r.prompt_tokens = usage.get("prompt_tokens")
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        r.error = f"{type(exc).__name__}: {exc}"
        return r
    r.tokens = r.tokens or len(r.chunk_times)
    r.ok = bool(r.chunk_times)
    if not r.ok:
        r.error = "no content received"
    return r


def summarize(results: list[Result], wall: float) -> dict[str, Any]:
    good = [r for r in results if r.ok]
    decode = [
        (r.tokens - 1) / (r.chunk_times[-1] - r.chunk_times[0])
        for r in good
        if r.tokens > 1 and r.chunk_times[-1] > r.chunk_times[0]
    ]
    ttft = [(r.chunk_times[0] - r.start) * 1000 for r in good]
    itl = [(b - a) * 1000 for r in good for a, b in zip(r.chunk_times[:-1], r.chunk_times[1:], strict=True)]
    tokens = sum(r.tokens for r in good)
    return {
        "requests": len(results),
        "errors": len(results) - len(good),
        "error_samples": sorted({r.error for r in results if not r.ok})[:3],
        "prompt_tokens": good[0].prompt_tokens if good else None,
        "generated_tokens": tokens,
        "content_chunks": sum(len(r.chunk_times) for r in good),
        "min_tokens_per_request": min((r.tokens for r in good), default=0),
        "decode_tok_s": pct(decode, 50),
        "aggregate_tok_s": tokens / wall if wall > 0 else None,
        "ttft_ms_p50": pct(ttft, 50),
        "ttft_ms_p95": pct(ttft, 95),
        "itl_ms_p50": pct(itl, 50),
        "itl_ms_p95": pct(itl, 95),
        "wall_s": wall,
    }


async def bench_server(spec: ServerSpec, args: argparse.Namespace, prompt: str) -> dict[str, Any]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix=f"bench-{spec.name}-") as tmp:
        log_path = Path(tmp) / "server.log"
        cmd = spec.command(args, port)
        env = {**os.environ, **spec.env(args, tmp)}
        load = cpu_busy()
        busy = " - WARNING: machine busy, timings will be noisy" if load and load > 0.2 else ""
        say(spec.name, f"starting (CPU {0 if load is None else load:.0%} busy{busy}): {' '.join(cmd)}")
        proc = None
        try:
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, start_new_session=True)
            t0 = time.perf_counter()
            await wait_healthy(proc, base, args.startup_timeout)
            say(spec.name, f"healthy after {time.perf_counter() - t0:.1f}s")
            async with httpx.AsyncClient(timeout=httpx.Timeout(args.request_timeout)) as client:
                try:
                    model_id = (await client.get(f"{base}/v1/models")).json()["data"][0]["id"]
                except (httpx.HTTPError, ValueError, KeyError, IndexError):
                    model_id = Path(args.model).stem

                def body(i: int) -> dict[str, Any]:
                    return {
                        "model": model_id,
                        "temperature": 0,
                        "max_tokens": args.tokens,
                        "stream": True,
                        "stream_options": {"include_usage": True},
                        "messages": [{"role": "user", "content": f"Request {i}. {prompt}"}],
                        **spec.extra_body(args),
                    }

                warm = await one_request(client, base, body(0))
                if not warm.ok:
                    raise RuntimeError(f"warm-up request failed: {warm.error}")
                sem = asyncio.Semaphore(args.concurrency)

                async def limited(i: int) -> Result:
                    async with sem:
                        return await one_request(client, base, body(i))

                t_start = time.perf_counter()
                results = await asyncio.gather(*(limited(i) for i in range(1, args.requests + 1)))
                summary = summarize(list(results), time.perf_counter() - t_start)
            say(spec.name, f"done: {summary['generated_tokens']} tokens, {summary['errors']} errors")
            return {"command": cmd, "cpu_busy_before": load, **summary}
        except Exception as exc:
            tail = log_path.read_text(errors="replace")[-1500:] if log_path.exists() else ""
            say(spec.name, f"FAILED: {exc}\n--- server log tail ---\n{tail}")
            return {"command": cmd, "failed": str(exc), "log_tail": tail}
        finally:
            stop(proc)
            if args.log_dir and log_path.exists():
                Path(args.log_dir).mkdir(parents=True, exist_ok=True)
                label = f"{spec.name}-{Path(args.model).stem}-{args.prompt}-{args.tokens}-c{args.concurrency}"
                shutil.copy(log_path, Path(args.log_dir) / f"{label}.log")


def stop(proc: subprocess.Popen | None) -> None:
    """Stop the server's whole process group: SIGTERM, then SIGKILL after 15 s."""
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


ROWS = [
    ("decode tok/s (per stream, p50)", "decode_tok_s", ".1f"),
    ("aggregate tok/s", "aggregate_tok_s", ".1f"),
    ("TTFT p50 (ms)", "ttft_ms_p50", ".0f"),
    ("TTFT p95 (ms)", "ttft_ms_p95", ".0f"),
    ("ITL p50 (ms)", "itl_ms_p50", ".1f"),
    ("ITL p95 (ms)", "itl_ms_p95", ".1f"),
    ("prompt tokens", "prompt_tokens", "d"),
    ("generated tokens (total)", "generated_tokens", "d"),
    ("min tokens per request", "min_tokens_per_request", "d"),
    ("content chunks", "content_chunks", "d"),
    ("errors", "errors", "d"),
]


def table(results: dict[str, dict[str, Any]]) -> str:
    names = list(results)
    ratio = OURS in results and REFERENCE in results
    head = ["metric", *names] + (["ours / llama-server"] if ratio else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, key, fmt in ROWS:
        vals = [results[n].get(key) for n in names]
        cells = [label] + [
            "FAILED" if "failed" in results[n] else "-" if v is None else format(v, fmt)
            for n, v in zip(names, vals, strict=True)
        ]
        if ratio:
            o, r = results[OURS].get(key), results[REFERENCE].get(key)
            cells.append(f"{o / r:.2f}x" if o is not None and r else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="GGUF model file served by every server")
    p.add_argument("--llama-server", default=shutil.which("llama-server"), help="llama-server binary")
    p.add_argument("--appliance", default=str(REPO / ".venv/bin/appliance"), help="our `appliance` CLI")
    p.add_argument("--servers", default="llama-server,appliance", help="comma list: " + ",".join(SERVERS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ctx", type=int, default=4096)
    p.add_argument("--tokens", type=int, default=128, help="tokens generated per request")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--requests", type=int, default=5, help="measured requests per server")
    p.add_argument("--prompt", choices=["short", "long"], default="short")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--log-dir", help="keep each server's log in this directory")
    p.add_argument("--startup-timeout", type=float, default=300)
    p.add_argument("--request-timeout", type=float, default=600)
    args = p.parse_args()

    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    if unknown := [n for n in names if n not in SERVERS]:
        p.error(f"unknown server(s) {unknown}; choose from {list(SERVERS)}")
    if "llama-server" in names and not args.llama_server:
        p.error("--llama-server is required (no llama-server on PATH)")
    args.model = str(Path(args.model).resolve())
    prompt = SHORT_PROMPT if args.prompt == "short" else long_prompt()

    results = {n: asyncio.run(bench_server(SERVERS[n], args, prompt)) for n in names}
    config = {
        k: getattr(args, k)
        for k in ("model", "threads", "ctx", "tokens", "concurrency", "requests", "prompt")
    }
    print(
        f"\nmodel={Path(args.model).name} threads={args.threads} ctx={args.ctx} tokens={args.tokens} "
        f"concurrency={args.concurrency} requests={args.requests} prompt={args.prompt}\n"
    )
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps({"config": config, "results": results}, indent=2) + "\n")
    return 1 if any("failed" in r or r.get("errors") for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
