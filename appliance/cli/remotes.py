"""`appliance remotes [--json]`: the remote GPU hosts, from the running daemon (what it sees, with its
breakers and latencies), or probed here and now when no daemon answers."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from appliance.cli.common import local_url, settings, show, shows
from appliance.config import Settings


def _from_daemon(settings: Settings) -> dict[str, Any] | None:
    import client  # httpx: only when asked

    key = settings.server.api_key.get_secret_value() if settings.server.api_key is not None else None
    try:
        with client.SyncDaemonClient(local_url(settings), key, 2.0) as daemon:
            data = daemon.remotes()
    except client.ClientError:  # no daemon, or one that cannot say: probe from here
        return None
    data["from"] = "daemon"
    return data


async def _probe_now(settings: Settings) -> dict[str, Any]:
    from appliance.remotes.pool import RemotePool  # httpx and more: only when probing

    pool = RemotePool(settings)
    try:
        await pool.refresh()
        data = pool.describe()
    finally:
        await pool.close()
    data["from"] = "probe"
    return data


def remotes(settings: Settings) -> dict[str, Any]:
    return _from_daemon(settings) or asyncio.run(_probe_now(settings))


def remotes_text(data: dict[str, Any]) -> str:
    if not data["remotes"]:
        return "no remotes configured: add [[remotes]] to config.toml (see docs/ESCALATION.md)"
    lines = []
    for r in data["remotes"]:
        state = "healthy" if r["healthy"] else "down"
        if r["breaker"] != "closed":
            state += f", breaker {r['breaker']}"
        where = r["address"] or f"no address ({r['unavailable']})"
        peer = r.get("peer") or {}
        if peer.get("relayed"):
            where += " via a relay (slow)"
        lines.append(f"{r['name']}  {r['kind']}  {where}  [{r['found_via']}]  {state}")
        if r.get("error"):
            lines.append(f"    error: {r['error']}")
        for model, length in (r.get("models") or {}).items():
            lines.append(f"    model {model}" + (f" (context {length})" if length else ""))
        load = r.get("load") or {}
        if any(v is not None for v in load.values()):
            usage = load.get("kv_cache_usage")
            lines.append(
                f"    load: {load.get('running')} running, {load.get('waiting')} waiting"
                + (f", KV cache {usage:.0%}" if usage is not None else "")
            )
    ts = data.get("tailscale") or {}
    if ts.get("error"):
        lines.append(f"tailscale: {ts['error']}")
    lines.append(f"(from the {'running daemon' if data['from'] == 'daemon' else 'probe just made'})")
    return "\n".join(lines)


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser,
             budget_flags: argparse.ArgumentParser) -> None:  # fmt: skip
    """Add `remotes`."""
    command = shows(
        commands,
        common,
        "remotes",
        "show the remote GPU hosts: health, load, models",
        "Show the configured remotes (and Tailscale targets) with their health, breaker, load and models, "
        "as the running daemon sees them (or probed now if none runs).",
    )
    command.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print the remotes; the exit status."""
    data = remotes(settings(args))
    show(data, as_json=args.json, text=lambda: remotes_text(data))
    return 0
