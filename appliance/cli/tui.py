"""`appliance tui [--url URL]`: the terminal UI, attached to a running daemon."""

from __future__ import annotations

import argparse

from appliance.cli.common import daemon


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser,
             budget_flags: argparse.ArgumentParser) -> None:  # fmt: skip
    """Add `tui`."""
    tui = commands.add_parser(
        "tui",
        parents=[common],
        help="the terminal UI, attached to a running daemon",
        description="Dashboard, models (load/unload) and remotes of a running daemon, over its HTTP API.",
    )
    tui.add_argument("--url", help="daemon URL (default: this machine's configured host and port)")
    tui.add_argument("--api-key", help="the daemon's API key, if it needs one")
    tui.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the TUI until it is left; the exit status."""
    url, key = daemon(args)
    # The composition root may reach the UI layer, lazily: importing `appliance` never loads Textual.
    from tui.app import ApplianceApp

    ApplianceApp(url, key).run()
    return 0
