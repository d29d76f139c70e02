"""What every command shares: the parent parsers of common flags, settings as a one-line error, how a
command finds the daemon (its URL and API key), and how it prints what it shows (JSON or a table)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from appliance.config import Settings, load_settings
from appliance.errors import UserError


def common_parser() -> argparse.ArgumentParser:
    """--config, which every command takes."""
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a nested command's own --config must not reset one given before it (`config --config F show`).
    common.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="config file (default: config.toml in the config dir)",
    )
    return common


def budgets_parser() -> argparse.ArgumentParser:
    """--max-ram and --max-vram, for the commands that plan a model."""
    budgets = argparse.ArgumentParser(add_help=False)
    budgets.add_argument("--max-ram", metavar="SIZE", help="cap the RAM a model may use, e.g. 6GiB")
    budgets.add_argument("--max-vram", metavar="SIZE", help="cap the GPU memory a model may use, e.g. 20GiB")
    budgets.add_argument(
        "--gpus",
        metavar="LIST",
        type=gpu_list,
        help="GPUs a model may use, by appliance hw's indices, e.g. 0,1 (default: every one)",
    )
    return budgets


def gpu_list(text: str) -> list[int]:
    """--gpus' value: comma-separated GPU indices."""
    try:
        indices = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of GPU indices: {text!r} (e.g. 0,1)") from None
    if any(i < 0 for i in indices) or len(set(indices)) != len(indices):
        raise argparse.ArgumentTypeError(f"GPU indices must be distinct and not negative: {text!r}")
    return indices


def shows(
    commands: argparse._SubParsersAction, common: argparse.ArgumentParser, name: str, help_text: str,
    description: str,
) -> argparse.ArgumentParser:  # fmt: skip
    """A command that prints data, as text or with --json."""
    command: argparse.ArgumentParser = commands.add_parser(
        name, parents=[common], help=help_text, description=description
    )
    command.add_argument("--json", action="store_true", help="print as JSON")
    return command


def to_json(data: Any) -> str:
    """``data`` as every command's --json prints it: indented by two, keys in their order."""
    return json.dumps(data, indent=2)


def show(data: Any, *, as_json: bool, text: Callable[[], str]) -> None:
    """Print what a command shows: ``data`` as JSON with --json, else the text ``text`` writes (only then
    called)."""
    print(to_json(data) if as_json else text())


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """``rows`` (a header, if any, is the first) as lines, each column as wide as its widest cell and
    two spaces from the next; no trailing spaces."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows]  # fmt: skip


def settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    """The settings for this command (``overrides`` from its flags); UserError when they are broken."""
    try:
        return load_settings(getattr(args, "config", None), **overrides)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise UserError(f"invalid setting {where}: {message}") from None
    except ValueError as exc:  # a TOML syntax error
        raise UserError(f"cannot read the configuration: {exc}") from None


def budgets(args: argparse.Namespace) -> dict[str, Any]:
    """The planner overrides --max-ram and --max-vram give."""
    return {"max_ram": args.max_ram, "max_vram": args.max_vram}


def gpus(args: argparse.Namespace) -> list[int] | None:
    """The model.gpus override --gpus gives."""
    return getattr(args, "gpus", None)


def base_url(url: str | None) -> str | None:
    """A server's root URL, also when given as the OpenAI base URL (``http://host:port/v1``)."""
    return url.rstrip("/").removesuffix("/v1") if url else url


def api_key(args: argparse.Namespace, settings: Settings) -> str | None:
    """The daemon's API key: as given, else the first this machine's daemon accepts."""
    from appliance.keys import KeyFileError, accepted_keys

    if args.api_key:
        return str(args.api_key)
    try:
        keys = accepted_keys(settings)
    except KeyFileError as exc:
        raise UserError(str(exc)) from None
    return keys[0] if keys else None


def local_url(settings: Settings) -> str:
    """This machine's daemon as configured (a wildcard listen address is reached over loopback)."""
    server = settings.server
    host = server.host if server.host not in ("0.0.0.0", "::") else "127.0.0.1"
    return f"http://{host}:{server.port}"


def daemon(args: argparse.Namespace) -> tuple[str, str | None]:
    """The daemon's URL and API key: as given, else this machine's configured host, port and key."""
    loaded = settings(args)
    return base_url(args.url) or local_url(loaded), api_key(args, loaded)
