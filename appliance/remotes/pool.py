"""The configured remotes and their state, kept fresh in the background: addresses (from the config or
resolved on the tailnet), health, served models with their context, load, breaker, recent latency."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import httpx

from appliance.backend import Capabilities
from appliance.config import RemoteSettings, Settings
from appliance.remotes.breaker import Breaker
from appliance.remotes.probe import Probe, probe
from appliance.remotes.tailscale import Peer, TailscaleUnavailable, fetch_peers, resolve
from appliance.routing import RemoteOption

log = logging.getLogger(__name__)


@dataclass
class Remote:
    settings: RemoteSettings
    base_url: str | None = None
    unavailable: str | None = None  # why there is no address (Tailscale down, peer unknown or offline)
    peer: Peer | None = None
    last_probe: Probe | None = None
    breaker: Breaker = field(default_factory=Breaker)
    ttft_s: deque[float] = field(default_factory=lambda: deque(maxlen=20))
    down_reason: str | None = None  # why it was last found down
    _down: asyncio.Event | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.breaker.on_open = lambda: self.went_down("its circuit breaker opened after repeated failures")

    def down_signal(self) -> asyncio.Event:
        """An event set when this remote is next found down: a failed probe, its tailnet peer gone, its
        breaker opening. A request waiting for the remote's first byte gives up then (and fails over)
        instead of at its first-byte timeout."""
        if self._down is None:
            self._down = asyncio.Event()
        return self._down

    def went_down(self, reason: str) -> None:
        """Tell the requests waiting on this remote that it is down; later ones wait on a new signal."""
        self.down_reason = reason
        if self._down is not None:
            self._down.set()
            self._down = None

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def found_via(self) -> str:
        return "tailscale" if self.settings.tailscale is not None else "config"

    @property
    def healthy(self) -> bool:
        return self.base_url is not None and self.last_probe is not None and self.last_probe.healthy

    @property
    def usable(self) -> bool:
        return self.healthy and self.breaker.allows()

    @property
    def capabilities(self) -> Capabilities:
        """What this remote can serve. Embeddings: as configured; else as the probe found (SGLang says
        whether its model generates or embeds); else by kind: vLLM and SGLang serve one task per model and
        are usually escalated to for generation, another appliance (kind "openai") embeds with any model.
        Token ids as embedding input are sent as they are to the kinds known to take them (vLLM, another
        appliance); SGLang gets text only."""
        embeddings = self.settings.embeddings
        if embeddings is None and self.last_probe is not None:
            embeddings = self.last_probe.embeds
        if embeddings is None:
            embeddings = self.settings.kind == "openai"
        token_ids = embeddings and self.settings.kind in ("openai", "vllm")
        # Log-probabilities: all three kinds give them in OpenAI's shapes (appliance.remotes.backend).
        # A GBNF grammar in llama-server's field: read by another appliance (or llama-server) only; vLLM
        # and SGLang take grammars in fields of their own, with other dialects of GBNF.
        return Capabilities(
            embeddings=embeddings,
            embed_token_ids=token_ids,
            logprobs=True,
            grammar=self.settings.kind == "openai",
            vision=self.settings.vision,
        )

    def headers(self) -> dict[str, str]:
        key = self.settings.api_key()
        return {"Authorization": f"Bearer {key.get_secret_value()}"} if key is not None else {}

    def remote_model(self, local_name: str) -> str | None:
        """The remote's name for ``local_name`` if it serves it (through the alias map or as is)."""
        if self.last_probe is None:
            return None
        name = self.settings.models.get(local_name, local_name)
        if name in self.last_probe.models:
            return name
        # A bare name matches a tag-less remote name ("model:q4_k_m" locally, "model" there).
        bare = local_name.partition(":")[0]
        return bare if bare in self.last_probe.models and bare not in self.settings.models else None

    def option(self, local_name: str, need: str | None = None) -> RemoteOption | None:
        """This remote as a place for ``local_name``, if usable, serving it, and able to do ``need`` (a
        Capabilities field, such as "embeddings")."""
        able = need is None or bool(getattr(self.capabilities, need))
        model = self.remote_model(local_name) if self.usable and able else None
        if model is None or self.last_probe is None:
            return None
        probed = self.last_probe
        return RemoteOption(self.name, model, probed.models.get(model), probed.load.saturated)

    def describe(self) -> dict[str, Any]:
        p = self.last_probe
        ttfts = sorted(self.ttft_s)
        latency = p.latency_s if p is not None else None
        return {
            "name": self.name,
            "kind": self.settings.kind,
            "address": self.base_url,
            "found_via": self.found_via,
            "peer": self.peer.to_json() if self.peer is not None else None,
            "unavailable": self.unavailable,
            "healthy": self.healthy,
            "error": p.error if p is not None else None,
            "breaker": self.breaker.state,
            "breaker_retry_in_s": self.breaker.retry_in_s(),
            "models": p.models if p is not None else {},
            "load": p.load.to_json() if p is not None else None,
            "probe_latency_ms": round(1000 * latency) if latency is not None else None,
            "ttft_p50_ms": round(1000 * ttfts[len(ttfts) // 2]) if ttfts else None,
            "checked_at": int(p.at) if p is not None else None,
        }


class RemotePool:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.remotes = [Remote(r) for r in settings.remotes]
        self.peers: list[Peer] = []
        self.tailscale_error: str | None = None
        self.client = httpx.AsyncClient(follow_redirects=False)
        # Probes open a new connection each time: a kept-alive one would hide a peer that silently went
        # away until its read timed out, where a new one fails within the connect timeout.
        self._probe_client = httpx.AsyncClient(
            follow_redirects=False, limits=httpx.Limits(max_keepalive_connections=0)
        )
        self._task: asyncio.Task[None] | None = None

    def get(self, name: str) -> Remote | None:
        return next((r for r in self.remotes if r.name == name), None)

    def options(self, local_name: str, need: str | None = None) -> list[RemoteOption]:
        """Usable remotes serving ``local_name`` (and able to do ``need``), in configuration order."""
        return [o for r in self.remotes if (o := r.option(local_name, need)) is not None]

    async def start(self) -> None:
        if self.remotes:
            self._task = asyncio.create_task(self._loop())

    def reconfigure(self, settings: Settings) -> None:
        """Settings reloaded (SIGHUP): remotes added, removed or changed, and routing, take effect now. An
        unchanged remote keeps its state (probe, breaker, latency); a changed one starts afresh. Requests
        already forwarded keep the remote they hold and the shared client, so none is dropped."""
        kept = {r.name: r for r in self.remotes}
        self.settings = settings
        self.remotes = [
            kept[r.name] if r.name in kept and kept[r.name].settings == r else Remote(r)
            for r in settings.remotes
        ]
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self.remotes:  # probe now, not a probe interval later, so new remotes serve at once
            self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.client.aclose()
        await self._probe_client.aclose()

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # never let the poller die
                log.exception("refreshing remotes failed")
            await asyncio.sleep(self.settings.routing.probe_interval_s)

    async def refresh(self) -> None:
        """Resolve Tailscale targets, then probe every remote with an address, all at once."""
        if any(r.settings.tailscale is not None for r in self.remotes):
            try:
                self.peers = await asyncio.to_thread(fetch_peers, self.settings.tailscale.socket)
                self.tailscale_error = None
            except TailscaleUnavailable as exc:
                self.peers, self.tailscale_error = [], str(exc)
        for remote in self.remotes:
            self._address(remote)
        await asyncio.gather(*(self._probe(r) for r in self.remotes if r.base_url is not None))

    def _address(self, remote: Remote) -> None:
        target = remote.settings.tailscale
        if target is None:
            remote.base_url = (remote.settings.base_url or "").rstrip("/")
            return
        if self.tailscale_error is not None:
            remote.base_url, remote.peer, remote.unavailable = None, None, self.tailscale_error
            return
        peer = resolve(target, self.peers)
        remote.peer = peer
        what = target.hostname or target.tag
        if peer is None or peer.ipv4 is None:
            remote.base_url, remote.unavailable = None, f"no tailnet peer matches {what}"
        elif not peer.online:
            remote.base_url, remote.unavailable = None, f"tailnet peer {peer.hostname} is offline"
        else:
            remote.base_url, remote.unavailable = f"{target.scheme}://{peer.ipv4}:{target.port}", None
        if remote.base_url is None:
            remote.last_probe = None
            remote.went_down(remote.unavailable or "it has no address")

    async def _probe(self, remote: Remote) -> None:
        assert remote.base_url is not None
        connect_s = remote.settings.timeouts.connect_s
        # A peer that silently went away fails the connection within connect_s; one that hangs, the read.
        timeout = httpx.Timeout(connect_s + 5.0, connect=connect_s)
        result = await probe(
            self._probe_client, remote.base_url, remote.settings.kind, remote.headers(), timeout
        )
        was = remote.healthy
        remote.last_probe = result
        if result.healthy:
            if remote.breaker.state != "open":
                remote.breaker.success()
        else:
            remote.breaker.failure()
            remote.went_down(f"its probe failed ({result.error})")
        if was != remote.healthy:
            log.info("remote %s is %s%s", remote.name, "healthy" if remote.healthy else "down",
                     f" ({result.error})" if result.error else "")  # fmt: skip

    def describe(self) -> dict[str, Any]:
        return {
            "remotes": [r.describe() for r in self.remotes],
            "tailscale": {
                "socket": self.settings.tailscale.socket,
                "error": self.tailscale_error,
                "peers": [p.to_json() for p in self.peers],
            },
            "checked_every_s": self.settings.routing.probe_interval_s,
            "at": time.time(),
        }
