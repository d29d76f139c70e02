"""How long the daemon takes to stop and to reload: the figures of docs/RELIABILITY.md.

Each run starts `appliance serve` (the embedded model unless MODEL is given) on a fresh APPLIANCE_HOME
and measures, from the signal to the process's exit as its parent sees it:

- idle: SIGTERM with nothing in flight;
- drain: SIGTERM while one stream of --tokens tokens is under way; the drain lets it finish, so what the
  shutdown adds is the exit after the stream's last byte (`exit_after_last_byte_s`);
- bound: SIGTERM while a stream too long to finish runs, with `server.shutdown_timeout_s` = --bound-s;
  the stream is cut with finish_reason "length" at the bound;
- reload: `POST /appliance/v1/reload` (what SIGHUP runs), answered.

    python benchmarks/shutdown_bench.py [MODEL] [--runs 3] [--threads 1] [--tokens 64] [--bound-s 2]
                                        [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

NO_EOS = {"0": -100, "2": -100}  # SmolLM2's end-of-generation tokens: a stream runs to max_tokens
LONG_TOKENS = 1500  # a stream far longer than the bound


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    def __init__(self, args: argparse.Namespace, bound_s: float | None = None) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="shutdown-bench-"))
        self.url = f"http://127.0.0.1:{_port()}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
        env["APPLIANCE_HOME"] = str(self.home)
        if bound_s is not None:
            env["APPLIANCE_SERVER__SHUTDOWN_TIMEOUT_S"] = str(bound_s)
        port = self.url.rsplit(":", 1)[1]
        command = [sys.executable, "-m", "appliance", "serve", *([args.model] if args.model else []),
                   "--port", port, "--parallel", "1", "--threads", str(args.threads)]  # fmt: skip
        quiet = subprocess.DEVNULL
        self.process = subprocess.Popen(command, env=env, stdout=quiet, stderr=quiet)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise SystemExit("the daemon did not start")

    def stop(self, sig: int = signal.SIGTERM) -> float:
        """Seconds from ``sig`` to the exit; the exit status must be 0."""
        started = time.monotonic()
        self.process.send_signal(sig)
        code = self.process.wait(timeout=600)
        if code != 0:
            raise SystemExit(f"the daemon exited with {code}")
        return time.monotonic() - started


def _stream(url: str, tokens: int, generating: threading.Event, out: dict[str, Any]) -> None:
    body = {"messages": [{"role": "user", "content": "Go on."}], "max_tokens": tokens, "stream": True,
            "logit_bias": NO_EOS, "stream_options": {"include_usage": True}}  # fmt: skip
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as response:
        for line in response.iter_lines():
            if '"content":"' in line and '"content":""' not in line:
                generating.set()
            if line.startswith("data: {") and '"usage":{' in line:
                out["completion_tokens"] = json.loads(line[6:])["usage"]["completion_tokens"]
            if line == "data: [DONE]":
                out["done_at"] = time.monotonic()


def _with_stream(daemon: Daemon, tokens: int) -> dict[str, Any]:
    generating, out = threading.Event(), {}
    reader = threading.Thread(target=_stream, args=(daemon.url, tokens, generating, out), daemon=True)
    reader.start()
    generating.wait(300)
    signalled = time.monotonic()
    out["exit_s"] = daemon.stop()
    reader.join(60)
    out["stream_end_s"] = out["done_at"] - signalled
    out["exit_after_last_byte_s"] = out["exit_s"] - out["stream_end_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="a .gguf or installed name (default: the embedded model)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=64, help="the stream in flight during the drain")
    parser.add_argument("--bound-s", type=float, default=2.0, help="server.shutdown_timeout_s for the cut")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    names = ("idle_exit_s", "ctrl_c_idle_exit_s", "drain_exit_s", "drain_exit_after_last_byte_s",
             "bound_exit_s", "reload_s")  # fmt: skip
    runs: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.runs):
        daemon = Daemon(args)
        started = time.monotonic()
        httpx.post(f"{daemon.url}/appliance/v1/reload", timeout=30).raise_for_status()
        runs["reload_s"].append(time.monotonic() - started)
        runs["idle_exit_s"].append(daemon.stop())
        runs["ctrl_c_idle_exit_s"].append(Daemon(args).stop(signal.SIGINT))
        drained = _with_stream(Daemon(args), args.tokens)
        assert drained["completion_tokens"] == args.tokens, drained  # the drain let it finish
        runs["drain_exit_s"].append(drained["exit_s"])
        runs["drain_exit_after_last_byte_s"].append(drained["exit_after_last_byte_s"])
        cut = _with_stream(Daemon(args, bound_s=args.bound_s), LONG_TOKENS)
        assert cut["completion_tokens"] < LONG_TOKENS, cut  # cut at the bound
        runs["bound_exit_s"].append(cut["exit_s"])
    figures = {
        k: {"median": round(statistics.median(v), 3), "max": round(max(v), 3)} for k, v in runs.items()
    }
    result = {"runs": args.runs, "threads": args.threads, "tokens": args.tokens, "bound_s": args.bound_s,
              "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2), **figures}  # fmt: skip
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
