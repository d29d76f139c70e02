"""A bounded soak on loopback: N clients send a seeded mix of requests in every dialect to one daemon for a
while, and every answer is checked. Reports what was sent, answered, refused with a documented 429 (and
retried after its Retry-After), and failed, and the daemon's RSS over the run (growth after warm-up).

    python benchmarks/soak.py [--clients 16] [--duration 300] [--warmup 60] [--json OUT] [--url URL --pid PID]

Without --url it starts `appliance serve` on the embedded default model in a fresh APPLIANCE_HOME on a free
loopback port, and stops it at the end. Exit status 1 when any request failed or RSS grew 5% or more.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

MODEL = "smollm2-135m-instruct"
PROMPTS = ["Say hello.", "Name three colours.", "What is 2+2?", "Write a haiku about rain.",
           "List the days of the week.", "Explain a cache in one sentence."]  # fmt: skip


@dataclass
class Report:
    clients: int
    duration_s: float
    warmup_s: float
    sent: int = 0
    ok: int = 0
    queue_full_429: int = 0
    failed: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)  # the first few, for the reader
    rss_start_bytes: int = 0  # when warm-up ends
    rss_end_bytes: int = 0  # the highest in the last tenth of the run
    rss_max_bytes: int = 0
    latency_p50_s: float = 0.0
    latency_p99_s: float = 0.0
    latency_p99_by_kind_s: dict[str, float] = field(default_factory=dict)

    @property
    def rss_growth(self) -> float:
        return self.rss_end_bytes / self.rss_start_bytes - 1 if self.rss_start_bytes else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "rss_growth": round(self.rss_growth, 4)}


class Failed(Exception):
    """An answer that is not what the API promises."""


def _sse_data(response: httpx.Response) -> list[str]:
    return [line[6:] for line in response.iter_lines() if line.startswith("data: ")]


def _chat_stream(client: httpx.Client, rng: random.Random) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": rng.choice(PROMPTS)}], "stream": True,
            "max_tokens": rng.randint(8, 48), "stream_options": {"include_usage": True}}  # fmt: skip
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            response.read()
            return response
        data = _sse_data(response)
    if data[-1] != "[DONE]" or not any('"finish_reason":"' in d.replace(" ", "") for d in data):
        raise Failed(f"chat stream ended without a finish_reason and [DONE]: {data[-2:]}")
    if any('"error"' in d for d in data):
        raise Failed(f"chat stream carried an error: {[d for d in data if 'error' in d][:1]}")
    return response


def _chat(client: httpx.Client, rng: random.Random) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "system", "content": "Be brief."},
                                         {"role": "user", "content": rng.choice(PROMPTS)}],
            "max_tokens": rng.randint(8, 48), "temperature": rng.choice([0, 0.7])}  # fmt: skip
    response = client.post("/v1/chat/completions", json=body)
    if response.status_code == 200 and not response.json()["choices"][0]["finish_reason"]:
        raise Failed("chat completion without a finish_reason")
    return response


def _completion(client: httpx.Client, rng: random.Random) -> httpx.Response:
    body = {"model": MODEL, "prompt": rng.choice(PROMPTS), "max_tokens": rng.randint(4, 32)}
    return client.post("/v1/completions", json=body)


def _embedding(client: httpx.Client, rng: random.Random) -> httpx.Response:
    response = client.post("/v1/embeddings", json={"model": MODEL, "input": rng.sample(PROMPTS, 2)})
    if response.status_code == 200 and len(response.json()["data"]) != 2:
        raise Failed("embeddings: not one vector per input")
    return response


def _ollama_chat(client: httpx.Client, rng: random.Random) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
            "options": {"num_predict": rng.randint(8, 32)}}  # fmt: skip
    with client.stream("POST", "/api/chat", json=body) as response:
        if response.status_code != 200:
            response.read()
            return response
        lines = [json.loads(line) for line in response.iter_lines() if line.strip()]
    if not lines or not lines[-1].get("done") or any("error" in line for line in lines):
        raise Failed(f"ollama stream did not end with done: {lines[-1:]}")
    return response


def _anthropic(client: httpx.Client, rng: random.Random) -> httpx.Response:
    body = {"model": MODEL, "max_tokens": rng.randint(8, 32), "messages": [{"role": "user",
            "content": rng.choice(PROMPTS)}]}  # fmt: skip
    response = client.post("/v1/messages", json=body)
    if response.status_code == 200 and response.json().get("type") != "message":
        raise Failed("anthropic: not a message")
    return response


KINDS: dict[str, Callable[[httpx.Client, random.Random], httpx.Response]] = {
    "chat_stream": _chat_stream, "chat": _chat, "completion": _completion, "embedding": _embedding,
    "ollama_chat": _ollama_chat, "anthropic": _anthropic,
}  # fmt: skip


def soak(url: str, pid: int, *, clients: int, duration_s: float, warmup_s: float, seed: int = 0,
         api_key: str | None = None) -> Report:  # fmt: skip
    """Run the soak against the daemon at ``url`` (process ``pid``) and report."""
    report = Report(clients, duration_s, warmup_s)
    lock = threading.Lock()
    latencies: list[tuple[str, float]] = []
    kinds: Counter[str] = Counter()
    started = time.monotonic()
    deadline = started + duration_s
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    process = psutil.Process(pid)
    rss: list[tuple[float, int]] = []

    def sample() -> None:
        while time.monotonic() < deadline:
            rss.append((time.monotonic() - started, process.memory_info().rss))
            time.sleep(1.0)

    def client_loop(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
            while time.monotonic() < deadline:
                kind = rng.choice(list(KINDS))
                sent = time.monotonic()
                outcome, detail, wait_s = "ok", "", 0.0
                try:
                    response = KINDS[kind](client, rng)
                    if response.status_code == 429 and response.headers.get("retry-after"):
                        outcome, wait_s = "429", float(response.headers["retry-after"])
                    elif response.status_code != 200:
                        outcome, detail = "failed", f"{kind}: {response.status_code} {response.text[:200]}"
                except (Failed, httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
                    outcome, detail = "failed", f"{kind}: {type(exc).__name__}: {exc}"[:300]
                with lock:
                    report.sent += 1
                    kinds[kind] += 1
                    if outcome == "ok":
                        report.ok += 1
                        latencies.append((kind, time.monotonic() - sent))
                    elif outcome == "429":
                        report.queue_full_429 += 1
                    else:
                        report.failed += 1
                        if len(report.failures) < 10:
                            report.failures.append(detail)
                if wait_s:
                    time.sleep(wait_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sampler.join(5)
    report.by_kind = dict(kinds)
    after = [(t, b) for t, b in rss if t >= warmup_s]
    if after:
        report.rss_start_bytes = after[0][1]
        report.rss_end_bytes = max([b for t, b in after if t >= duration_s * 0.9] or [after[-1][1]])
        report.rss_max_bytes = max(b for _, b in rss)
    if latencies:
        report.latency_p50_s = round(statistics.median(s for _, s in latencies), 3)
        report.latency_p99_s = _p99([s for _, s in latencies])
        report.latency_p99_by_kind_s = {k: _p99([s for kind, s in latencies if kind == k]) for k in kinds}
    return report


def _p99(values: list[float]) -> float:
    ordered = sorted(values) or [0.0]
    return round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_daemon(home: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    """`appliance serve` on a free loopback port with its state in ``home``; (process, url) once healthy."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env["APPLIANCE_HOME"] = str(home)
    log = (home / "daemon.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "appliance", "serve", "--port", str(port), *args],
                               stdout=log, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if process.poll() is not None:
            raise RuntimeError(f"the daemon exited: {(home / 'daemon.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("the daemon did not become healthy")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=300, help="seconds (default 300)")
    parser.add_argument("--warmup", type=float, default=60, help="seconds before RSS is the baseline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--url", help="a running daemon (with --pid) instead of starting one")
    parser.add_argument("--pid", type=int, help="the running daemon's process id, for its RSS")
    parser.add_argument("--api-key")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    process = None
    with tempfile.TemporaryDirectory() as home:
        if args.url:
            if args.pid is None:
                parser.error("--url needs --pid")
            url, pid = args.url.rstrip("/"), args.pid
        else:
            process, url = start_daemon(Path(home))
            pid = process.pid
        try:
            report = soak(url, pid, clients=args.clients, duration_s=args.duration, warmup_s=args.warmup,
                          seed=args.seed, api_key=args.api_key)  # fmt: skip
        finally:
            if process is not None:
                process.terminate()
                process.wait(60)
    data = report.to_json()
    print(json.dumps(data, indent=2))
    if args.json:
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    return 1 if report.failed or report.rss_growth >= 0.05 else 0


if __name__ == "__main__":
    sys.exit(main())
