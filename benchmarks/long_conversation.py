"""TTFT of a conversation as it grows to ~8k tokens, with another conversation taking the one slot
between its turns: with a prompt cache beside the slots each turn reads only what is new, so its TTFT
should not grow with the history.

    python benchmarks/long_conversation.py --llama-server PATH [--servers llama-server,appliance]
        [--turns 14] [--threads 2] [--json OUT.json]

Each server (one slot, 8192 tokens, the embedded model) gets the same turns: ~500 new tokens of notes
and a question, 32 tokens of reply, then one short unrelated chat that takes the slot. Printed: the
history's length and the TTFT of each turn.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import client
from appliance.bench.load import Load, long_prompt, one_request, served_model
from appliance.bench.servers import SERVERS, Setup, free_port, stop, wait_healthy
from models.embedded import embedded_model_path


async def conversation(base: str, turns: int) -> list[tuple[int, float]]:
    """(prompt tokens, TTFT ms) of each turn of the growing conversation."""
    server = client.AsyncDaemonClient(base, None, timeout_s=600, stream_read_timeout_s=600)
    notes = long_prompt().split(". ")
    chunk = max(1, len(notes) // 4)  # about 500 tokens of the ~2,000-token text

    model = await served_model(server)

    def body(messages: list[dict[str, str]]) -> dict[str, Any]:
        return {"model": model, "messages": messages, "max_tokens": 32, "temperature": 0, "ignore_eos": True,
                "n_predict": 32, "stream_options": {"include_usage": True}}  # fmt: skip

    history: list[dict[str, str]] = [{"role": "system", "content": "You keep notes for the user."}]
    rows = []
    try:
        for turn in range(turns):
            part = ". ".join(notes[(turn * chunk) % len(notes) :][:chunk])
            history.append({"role": "user", "content": f"Note {turn}: {part}. What changed?"})
            for _ in range(3):  # llama-server here drops a request now and then (connection closed)
                result = await one_request(server, body(history))
                if result.ok:
                    break
            else:  # past the context (the history outgrew it) or a server fault: the rows so far
                print(f"turn {turn} failed: {result.error}", file=sys.stderr)
                break
            rows.append((result.prompt_tokens or 0, (result.chunk_times[0] - result.start) * 1000))
            history.append({"role": "assistant", "content": result.text})
            other = [{"role": "user", "content": f"Unrelated question {turn}: name a colour."}]
            await one_request(server, body(other))  # takes the one slot
    finally:
        await server.close()
    return rows


def run_server(name: str, setup: Setup, turns: int) -> list[tuple[int, float]]:
    spec, load = SERVERS[name], Load(concurrency=1)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, **spec.env(setup, tmp)}
        with open(Path(tmp) / "log", "wb") as log:
            proc = subprocess.Popen(spec.command(setup, load, port), stdout=log, stderr=log, env=env,
                                    start_new_session=True)  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            asyncio.run(wait_healthy(proc, base, 300))
            return asyncio.run(conversation(base, turns))
        finally:
            stop(proc)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--llama-server", help="llama-server binary")
    p.add_argument("--servers", default="llama-server,appliance")
    p.add_argument("--turns", type=int, default=14)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    model = embedded_model_path()
    assert model is not None, "the [default-model] extra is needed"
    setup = Setup(model, a.threads, 8192, a.llama_server)
    results = {name: run_server(name, setup, a.turns) for name in a.servers.split(",")}
    names = list(results)
    print("| turn | " + " | ".join(f"{n} prompt tokens | {n} TTFT (ms)" for n in names) + " |")
    print("|---" * (1 + 2 * len(names)) + "|")
    for turn in range(min(len(rows) for rows in results.values())):
        cells = [f"{results[n][turn][0]} | {results[n][turn][1]:.0f}" for n in names]
        print(f"| {turn} | " + " | ".join(cells) + " |")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
