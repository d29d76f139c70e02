"""`appliance key new|list`: the API keys clients use to reach the daemon."""

from __future__ import annotations

import argparse
import json
import sys

from appliance.config import Settings
from appliance.keys import keys_file, new_key, read_keys_file


def run_key_command(args: argparse.Namespace, settings: Settings) -> int:
    """Make a key (printed on stdout, where it went on stderr) or list the keys, masked.
    KeyFileError when the keys file cannot be read or written."""
    path = keys_file(settings)
    if args.key_command == "new":
        key = new_key(path, args.name.strip())
        if args.json:
            print(json.dumps({"key": key.key, "name": key.name, "file": str(path)}))
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
        print(json.dumps(listed, indent=2))
    elif not listed:
        print(
            f"no API keys: the daemon serves loopback without one. Make one with `appliance key new` ({path})"
        )
    else:
        for entry in listed:
            print(f"{entry['key']:<18} {entry['name'] or '-':<20} {entry['source']}")
    return 0
