"""`appliance serve [MODEL]`: start the daemon."""

from __future__ import annotations

import argparse

from appliance.cli.common import budgets, gpus, settings
from appliance.config import Settings


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser,
             budget_flags: argparse.ArgumentParser) -> None:  # fmt: skip
    """Add `serve` and its flags."""
    serve = commands.add_parser(
        "serve", parents=[common], help="start the daemon", description="Start the OpenAI-compatible daemon."
    )
    serve.add_argument("model", nargs="?", metavar="MODEL", help="a .gguf file (default: the embedded model)")
    serve.add_argument("--alias", help="model id clients use (default: derived from the file name)")
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default 11435)")
    serve.add_argument(
        "--ctx",
        type=int,
        help="KV cache tokens, shared by the slots (default: 4096 per slot, capped by the model)",
    )
    serve.add_argument("--parallel", type=int, help="requests generated at once (default 1)")
    serve.add_argument("--api-key", help="require this key from clients (also: appliance key new)")
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        default=None,
        help="serve a non-loopback --host without any API key (everyone who reaches the port may use it)",
    )
    serve.add_argument("--max-queue", type=int, help="requests that may wait at once (default 64)")
    serve.add_argument("--threads", type=int, help="generation threads (default: physical cores)")
    serve.add_argument(
        "--no-preload",
        dest="preload",
        action="store_false",
        default=None,
        help="start with no model loaded: load it on its first request, unload it after model.keep_alive",
    )
    # After the serve-only flags, as parents would put them first and change `serve --help`.
    for action in budget_flags._actions:
        serve._add_action(action)
    serve.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Serve until stopped; the exit status."""
    # llama.cpp (and its GPU backend's C++ runtime) is loaded and initialised before the web stack: on
    # the lent H100, with the CUDA libraries loaded after FastAPI/uvicorn's, the first model load
    # crashed in the tokenizer's std::regex locale code; loaded first, it works.
    from appliance.engine.runtime import system_info

    system_info()
    # The CLI is the composition root: the only place the core reaches the server layer, lazily, so
    # importing `appliance` never loads FastAPI.
    from server.daemon import run_daemon

    def load() -> Settings:  # again on SIGHUP: the flags still win over the file and the environment
        return settings(
            args,
            server={
                "host": args.host,
                "port": args.port,
                "api_key": args.api_key,
                "max_queue": args.max_queue,
                "insecure_no_auth": args.insecure_no_auth,
            },
            model={
                "alias": args.alias,
                "n_ctx": args.ctx,
                "n_parallel": args.parallel,
                "n_threads": args.threads,
                "gpus": gpus(args),
                "preload": args.preload,
            },
            planner=budgets(args),
        )

    return run_daemon(load(), args.model, load)
