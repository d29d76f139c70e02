"""The `appliance` command line. Exit 0 ok, 1 user error (one line on stderr), 2 usage error."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from appliance import __version__
from appliance.config import Settings, load_settings, masked

log = logging.getLogger("appliance")


class UserError(Exception):
    """A problem the user can fix; printed as one line, exit status 1."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description="A local LLM appliance on llama.cpp.")
    parser.add_argument("--version", action="version", version=f"llm-appliance {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a nested command's own --config must not reset one given before it (`config --config F show`).
    common.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="config file (default: config.toml in the config dir)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", parents=[common], help="start the daemon", description="Start the OpenAI-compatible daemon."
    )
    serve.add_argument("model", nargs="?", metavar="MODEL", help="a .gguf file (default: the embedded model)")
    serve.add_argument("--alias", help="model id clients use (default: derived from the file name)")
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default 11435)")
    serve.add_argument("--ctx", type=int, help="context length in tokens (default 4096, capped by the model)")
    serve.add_argument("--parallel", type=int, help="sequences served at once")
    serve.add_argument("--api-key", help="require this key from clients")
    serve.add_argument("--max-queue", type=int, help="requests that may wait at once (default 64)")
    serve.add_argument("--threads", type=int, help="generation threads (default: physical cores)")

    config = commands.add_parser("config", parents=[common], help="inspect the configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    config_commands.add_parser(
        "show", parents=[common], help="print the merged configuration (secrets masked)"
    )
    return parser


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    try:
        return load_settings(getattr(args, "config", None), **overrides)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserError(f"invalid setting {where}: {first['msg']}") from None
    except ValueError as exc:  # a TOML syntax error
        raise UserError(f"cannot read the configuration: {exc}") from None


def _cmd_config_show(args: argparse.Namespace) -> int:
    print(json.dumps(masked(_settings(args)), indent=2))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    # The CLI is the composition root: the only place the core reaches the server layer, lazily, so
    # importing `appliance` never loads FastAPI.
    from server.daemon import run_daemon

    settings = _settings(
        args,
        server={"host": args.host, "port": args.port, "api_key": args.api_key, "max_queue": args.max_queue},
        model={
            "alias": args.alias,
            "n_ctx": args.ctx,
            "n_parallel": args.parallel,
            "n_threads": args.threads,
        },
    )
    return run_daemon(settings, args.model)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _cmd_serve(args)
        if args.command == "config":
            return _cmd_config_show(args)
    except UserError as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
