"""The `appliance` command line: one module per command, each with its parser (`register`) and handler
(`run`, set as the parser's default); this module only assembles them. Exit 0 ok, 1 user error (one line
on stderr), 2 usage error."""

from __future__ import annotations

import argparse
import sys

from appliance import __version__
from appliance.cli import (
    bench,
    chat,
    config,
    eval,
    hw,
    keys,
    plan,
    pull,
    remotes,
    serve,
    service,
    store,
    tui,
)
from appliance.cli.common import budgets_parser, common_parser
from appliance.errors import UserError

# In `appliance --help`'s order.
COMMANDS = (serve, plan, hw, remotes, pull, store, tui, chat, eval, bench, keys, service, config)


def parser() -> argparse.ArgumentParser:
    """The whole command line."""
    top = argparse.ArgumentParser(prog="appliance", description="A local LLM appliance on llama.cpp.")
    top.add_argument("--version", action="version", version=f"llm-appliance {__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common, budgets = common_parser(), budgets_parser()
    for command in COMMANDS:
        command.register(commands, common, budgets)
    return top


def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv`` (default: the process's arguments); the exit status."""
    args = parser().parse_args(argv)
    try:
        status: int = args.run(args)
        return status
    except UserError as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
