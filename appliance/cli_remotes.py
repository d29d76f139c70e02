"""`appliance remotes [--json]`: the remote GPU hosts, from the running daemon (what it sees, with its
breakers and latencies), or probed here and now when no daemon answers."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from appliance.config import Settings
from appliance.remotes.pool import RemotePool


def _from_daemon(settings: Settings) -> dict[str, Any] | None:
    host = settings.server.host if settings.server.host not in ("0.0.0.0", "::") else "127.0.0.1"
    key = settings.server.api_key
    headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key is not None else {}
    try:
        response = httpx.get(f"http://{host}:{settings.server.port}/appliance/v1/remotes", headers=headers,
                             timeout=2.0)  # fmt: skip
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    data: dict[str, Any] = response.json()
    data["from"] = "daemon"
    return data


async def _probe_now(settings: Settings) -> dict[str, Any]:
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
