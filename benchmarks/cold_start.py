"""Cold start to first token: `appliance serve` started on the embedded model (or MODEL), until /health
answers and until the first streamed word of a chat, and the daemon's RSS with the model loaded.

    python benchmarks/cold_start.py [MODEL] [--runs 3] [--port 11660]

Each run starts a fresh daemon with an empty APPLIANCE_HOME (the model file stays in the page cache
after the first run: the later runs are the warm-cache figure a restarted service sees).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import httpx
import psutil


def one_run(model: str | None, port: int) -> tuple[float, float, float]:
    """Seconds to healthy, seconds to the first word, RSS in MiB with the model loaded."""
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "APPLIANCE_HOME": home}
        command = [
            sys.executable,
            "-m",
            "appliance",
            "serve",
            "--port",
            str(port),
            *([model] if model else []),
        ]
        started = time.perf_counter()
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"the daemon exited with {proc.returncode}")
                try:
                    if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)
            healthy = time.perf_counter() - started
            body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "stream": True}
            with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=120) as response:
                for line in response.iter_lines():
                    if '"content":"' in line and '"content":""' not in line:
                        break
            first = time.perf_counter() - started
            rss = psutil.Process(proc.pid).memory_info().rss / 2**20
            return healthy, first, rss
        finally:
            proc.terminate()
            proc.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="a .gguf (default: the embedded model)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--port", type=int, default=11660)
    args = parser.parse_args()
    for run in range(args.runs):
        healthy, first, rss = one_run(args.model, args.port)
        print(f"run {run + 1}: healthy {healthy:.2f} s, first word {first:.2f} s, RSS {rss:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
