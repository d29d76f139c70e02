"""`appliance config show`: the merged configuration, secrets masked."""

from __future__ import annotations

import argparse

from appliance.cli.common import settings, to_json
from appliance.config import masked


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser,
             budget_flags: argparse.ArgumentParser) -> None:  # fmt: skip
    """Add `config show`."""
    config = commands.add_parser("config", parents=[common], help="inspect the configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    config_commands.add_parser(
        "show", parents=[common], help="print the merged configuration (secrets masked)"
    )
    config.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print the configuration as JSON; the exit status."""
    print(to_json(masked(settings(args))))
    return 0
