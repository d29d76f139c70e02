"""Side-by-side streaming benchmark of llama.cpp's llama-server and ours: `appliance bench`, with the
flags the commands recorded in docs/BENCHMARKS.md use (llama-server first, then the appliance).

    python benchmarks/serve_bench.py --model PATH.gguf --llama-server PATH/TO/llama-server \\
        [--servers llama-server,appliance] [--threads 2] [--ctx 4096] [--tokens 128] \\
        [--concurrency 1] [--requests 5] [--prompt short|long|edit|chat|agent] [--json OUT.json] \\
        [--log-dir DIR]

is `appliance bench PATH.gguf --servers llama-server,appliance --out OUT.json ...`; what is measured and
how is in appliance/bench/load.py. Servers run one after the other, never at the same time. llama-server
splits --ctx across its -np slots: with the long prompt (~2000 tokens) use --ctx >= concurrency * (2100 +
tokens).
"""

from __future__ import annotations

import argparse
import sys

from appliance.bench.load import PROMPTS, WORKLOADS
from appliance.cli import main as appliance


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="GGUF model file served by every server")
    p.add_argument("--llama-server", help="llama-server binary (default: on PATH)")
    p.add_argument("--servers", default="llama-server,appliance", help="comma list, run in this order")
    p.add_argument("--threads", default="2")
    p.add_argument("--ctx", default="4096")
    p.add_argument("--tokens", default="128", help="tokens generated per request")
    p.add_argument("--concurrency", default="1")
    p.add_argument("--requests", default="5", help="measured requests per server")
    p.add_argument("--prompt", choices=[*PROMPTS, *WORKLOADS], default="short")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--log-dir", help="keep each server's log in this directory")
    p.add_argument("--startup-timeout", default="300")
    p.add_argument("--request-timeout", default="600")
    a = p.parse_args(argv)
    args = [
        "bench", a.model, "--servers", a.servers, "--threads", a.threads, "--ctx", a.ctx,
        "--tokens", a.tokens, "--concurrency", a.concurrency, "--requests", a.requests, "--prompt", a.prompt,
        "--startup-timeout", a.startup_timeout, "--request-timeout", a.request_timeout,
    ]  # fmt: skip
    for flag, value in (("--llama-server", a.llama_server), ("--out", a.json), ("--log-dir", a.log_dir)):
        if value:
            args += [flag, value]
    return appliance(args)


if __name__ == "__main__":
    sys.exit(main())
