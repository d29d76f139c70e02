"""`appliance key new|list`: the API keys clients use to reach the daemon."""

from __future__ import annotations

import argparse
import sys

from appliance.cli.common import settings, table, to_json
from appliance.config import Settings
from appliance.errors import UserError
from appliance.keys import KeyFileError, keys_file, new_key, read_keys_file


def run_key_command(args: argparse.Namespace, settings: Settings) -> int:
    """Make a key (printed on stdout, where it went on stderr) or list the keys, masked.
    KeyFileError when the keys file cannot be read or written."""
    path = keys_file(settings)
    if args.key_command == "new":
        key = new_key(path, args.name.strip())
        if args.json:
            print(to_json({"key": key.key, "name": key.name, "file": str(path)}))
        else:
            print(key.key)
            print(
                f"added to {path}; a running daemon accepts it after `kill -HUP` or a restart. "
                "Clients send it as `Authorization: Bearer KEY` (Anthropic's SDKs: x-api-key).",
                file=sys.stderr,
            )
        return 0
    listed = [{"source": str(path), "name": k.name, "key": k.masked} for k in read_keys_file(path)]
    configured = [settings.server.api_key, *settings.server.api_keys]
    listed += [{"source": "settings", "name": "", "key": "**********"} for k in configured if k is not None]
    if args.json:
        print(to_json(listed))
    elif not listed:
        print(
            f"no API keys: the daemon serves loopback without one. Make one with `appliance key new` ({path})"
        )
    else:
        rows = [(entry["key"], entry["name"] or "-", entry["source"]) for entry in listed]
        print("\n".join(table(rows)))
    return 0


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser,
             budget_flags: argparse.ArgumentParser) -> None:  # fmt: skip
    """Add `key new` and `key list`."""
    key = commands.add_parser("key", parents=[common], help="make and list the daemon's API keys")
    key_commands = key.add_subparsers(dest="key_command", required=True, metavar="ACTION")
    key_new = key_commands.add_parser(
        "new",
        parents=[common],
        help="make a new API key and add it to the keys file",
        description="Make a new API key, add it to the keys file (server.api_keys_file, default api-keys "
        "in the config directory, owner-only) and print it. A running daemon accepts it after SIGHUP or "
        "a restart.",
    )
    key_new.add_argument("--name", default="", help="a name for the key, e.g. the client that uses it")
    key_new.add_argument("--json", action="store_true", help="print the key and the file as JSON")
    key_list = key_commands.add_parser(
        "list", parents=[common], help="list the keys the daemon accepts (masked)"
    )
    key_list.add_argument("--json", action="store_true", help="print as JSON")
    key.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """`key new` or `key list`; the exit status."""
    try:
        return run_key_command(args, settings(args))
    except KeyFileError as exc:
        raise UserError(str(exc)) from None
