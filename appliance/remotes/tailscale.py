"""Peers of this machine's tailnet, from the local tailscaled's LocalAPI (no `tailscale` binary needed).

tailscaled answers HTTP on a unix socket and only for ``Host: local-tailscaled.sock``. ``Online`` means
the peer is connected to the control plane, not that it is reachable; a peer with no direct address
(``CurAddr`` empty) and a DERP ``Relay`` is reached through a relay, which is slow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from appliance.config import TailscaleTarget

_STATUS_URL = "http://local-tailscaled.sock/localapi/v0/status"


class TailscaleUnavailable(Exception):
    """tailscaled cannot be asked (no socket, not running, an error); one line why."""


@dataclass(frozen=True)
class Peer:
    hostname: str
    dns_name: str  # FQDN without the trailing dot
    ips: tuple[str, ...]
    online: bool
    tags: tuple[str, ...]
    relay: str  # DERP region, "" when none
    direct: bool  # a direct path is in use (CurAddr set)
    os: str

    @property
    def ipv4(self) -> str | None:
        return next((ip for ip in self.ips if ":" not in ip), None)

    @property
    def relayed(self) -> bool:
        return self.online and not self.direct and bool(self.relay)

    def to_json(self) -> dict[str, Any]:
        return {
            "hostname": self.hostname, "dns_name": self.dns_name, "ips": list(self.ips),
            "online": self.online, "tags": list(self.tags), "relayed": self.relayed, "os": self.os,
        }  # fmt: skip


def _peer(raw: dict[str, Any]) -> Peer:
    return Peer(
        hostname=str(raw.get("HostName", "")),
        dns_name=str(raw.get("DNSName", "")).rstrip("."),
        ips=tuple(raw.get("TailscaleIPs") or ()),
        online=bool(raw.get("Online")),
        tags=tuple(raw.get("Tags") or ()),
        relay=str(raw.get("Relay", "")),
        direct=bool(raw.get("CurAddr")),
        os=str(raw.get("OS", "")),
    )


def parse_status(status: dict[str, Any]) -> list[Peer]:
    """Peers from a LocalAPI status document (``tailscale status --json``)."""
    peers = [_peer(raw) for raw in (status.get("Peer") or {}).values()]
    return sorted(peers, key=lambda p: p.hostname)


def _status(socket_path: str, timeout_s: float, *, peers: bool = True) -> dict[str, Any]:
    transport = httpx.HTTPTransport(uds=socket_path)
    try:
        with httpx.Client(transport=transport, timeout=timeout_s) as client:
            response = client.get(_STATUS_URL, params=None if peers else {"peers": "false"})
    except httpx.HTTPError as exc:
        raise TailscaleUnavailable(f"tailscaled is not answering on {socket_path} ({exc})") from None
    if response.status_code != 200:
        detail = response.text.strip()[:200]
        raise TailscaleUnavailable(f"tailscaled answered {response.status_code}: {detail}")
    try:
        status = response.json()
    except ValueError as exc:
        raise TailscaleUnavailable(f"tailscaled's status is not readable: {exc}") from None
    if not isinstance(status, dict):
        raise TailscaleUnavailable("tailscaled's status is not readable: not an object")
    return status


def fetch_peers(socket_path: str, timeout_s: float = 2.0) -> list[Peer]:
    """The tailnet's peers; TailscaleUnavailable when tailscaled cannot be asked."""
    status = _status(socket_path, timeout_s)
    try:
        return parse_status(status)
    except (ValueError, AttributeError) as exc:
        raise TailscaleUnavailable(f"tailscaled's status is not readable: {exc}") from None


def fetch_self(socket_path: str, timeout_s: float = 2.0) -> Peer | None:
    """This machine as the tailnet knows it (its MagicDNS name and addresses); None when tailscaled
    cannot be asked or is not logged in."""
    try:
        found = _status(socket_path, timeout_s, peers=False).get("Self")
    except TailscaleUnavailable:
        return None
    return _peer(found) if isinstance(found, dict) else None


def resolve(target: TailscaleTarget, peers: list[Peer]) -> Peer | None:
    """The peer a target names: by host name (or the first label of its DNS name), else the first online
    peer carrying the tag (a direct path preferred over a relayed one). None when no peer matches."""
    if target.hostname is not None:
        wanted = target.hostname.lower()
        for peer in peers:
            if wanted in (peer.hostname.lower(), peer.dns_name.lower(), peer.dns_name.split(".")[0].lower()):
                return peer
        return None
    tagged = [p for p in peers if target.tag in p.tags]
    tagged.sort(key=lambda p: (not p.online, p.relayed, p.hostname))
    return tagged[0] if tagged else None
