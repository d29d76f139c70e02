"""Who may use the daemon, checked before any route runs or any body is read: the Host a request names
(a web page reaching the daemon through DNS rebinding names its own host), the web page it comes from
(Origin, and CORS for the pages allowed), its API key, how many requests that key has in flight, and how
large its body is. Clients that are not browsers send no Origin and are not affected by that part.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import psutil
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from appliance.config import Settings
from appliance.errors import ApplianceError, Forbidden, RequestTooLarge, TooManyRequests, Unauthorized
from appliance.keys import accepted_keys
from appliance.remotes.tailscale import fetch_self
from appliance.units import parse_size
from server.errors import error_response
from server.record import record_of

log = logging.getLogger(__name__)

_ADDRESS_REFRESH_S = 5.0  # a laptop changes networks: look its addresses up again, at most this often
_PREFLIGHT_MAX_AGE_S = 600
_ALLOW_METHODS = "GET, POST, DELETE, OPTIONS"
# Headers a browser page may read from a response (besides the CORS-safelisted ones).
_EXPOSE_HEADERS = "X-Appliance-Backend, X-Appliance-Escalation-Reason, Retry-After"


def host_name(header: str) -> str | None:
    """The host of a Host header (``name``, ``name:port``, ``[v6]:port``), lowercase without a trailing
    dot; None when it is not one."""
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        port = value[end + 1 :] if end > 0 else None
        if port is None or (port and not (port.startswith(":") and port[1:].isdigit())):
            return None
        return value[1:end]
    name, _, port = value.partition(":")
    if port and not port.isdigit():
        return None
    return name.rstrip(".") or None


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """Whether a listen address or host name stays on this machine."""
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    ip = _ip(name)
    return ip is not None and ip.is_loopback


class _MachineAddresses:
    """This machine's IP addresses, looked up again when an unknown one is asked for (rate-limited)."""

    def __init__(self) -> None:
        self._addresses: frozenset[str] = frozenset()
        self._checked = 0.0
        self._lock = threading.Lock()

    def __contains__(self, address: str) -> bool:
        if address in self._addresses:
            return True
        with self._lock:
            if time.monotonic() - self._checked < _ADDRESS_REFRESH_S:
                return False
            self._checked = time.monotonic()
            found = set()
            for entries in psutil.net_if_addrs().values():
                for entry in entries:
                    ip = _ip(entry.address)
                    if ip is not None:
                        found.add(str(ip))
            self._addresses = frozenset(found)
        return address in self._addresses


_MACHINE_ADDRESSES = _MachineAddresses()


def machine_names(tailscale_socket: str | None) -> frozenset[str]:
    """The names this machine is known by: its host name (and ``.local``, as mDNS announces it), its
    fully qualified name, and its tailnet name when tailscaled runs."""
    names = {socket.gethostname(), socket.getfqdn()}
    names |= {f"{n.split('.')[0]}.local" for n in list(names) if n}
    if tailscale_socket:
        me = fetch_self(tailscale_socket, timeout_s=1.0)
        if me is not None:
            names |= {me.hostname, me.dns_name, *me.ips}
    return frozenset(n.lower().rstrip(".") for n in names if n)


@dataclass(frozen=True)
class HostAllowlist:
    names: frozenset[str]  # exact host names and addresses
    suffixes: tuple[str, ...] = ()  # ".example.com": that name and its subdomains
    any_host: bool = False

    def allows(self, host: str) -> bool:
        if self.any_host or is_loopback(host) or host in self.names:
            return True
        ip = _ip(host)
        if ip is not None:
            return str(ip) in _MACHINE_ADDRESSES
        return any(host == s[1:] or host.endswith(s) for s in self.suffixes)


@dataclass(frozen=True)
class AccessPolicy:
    """What the guard enforces; rebuilt from the settings at start and on reload."""

    key_digests: tuple[bytes, ...]
    public_paths: frozenset[str]
    hosts: HostAllowlist
    cors_origins: frozenset[str]
    max_body_bytes: int
    max_concurrent_per_key: int
    log_prompts: bool = False

    @property
    def needs_key(self) -> bool:
        return bool(self.key_digests)

    def key_matches(self, given: bytes) -> bool:
        """Whether ``given`` is one of the keys, in time that depends neither on which nor on how much
        of it matches: digests have one length, and every key is compared."""
        digest = hashlib.sha256(given).digest()
        found = False
        for known in self.key_digests:
            found |= hmac.compare_digest(digest, known)
        return found

    def origin_allowed(self, origin: str, scheme: str, host_header: str) -> bool:
        if "*" in self.cors_origins or origin in self.cors_origins:
            return True
        # The same origin as the daemon's own address (a page it served) is no cross-site request.
        return origin == f"{scheme}://{host_header.strip().lower()}"


def build_policy(settings: Settings, own_names: Iterable[str] = ()) -> AccessPolicy:
    """The policy the settings ask for; ``own_names`` are this machine's names (machine_names)."""
    server = settings.server
    names = {n.lower().rstrip(".") for n in own_names}
    suffixes = []
    for entry in server.allowed_hosts:
        entry = entry.strip().lower().rstrip(".")
        if entry.startswith("."):
            suffixes.append(entry)
        elif entry and entry != "*":
            names.add(host_name(entry) or entry)
    if not is_loopback(server.host) and server.host not in ("0.0.0.0", "::", ""):
        names.add(server.host.strip("[]").lower())
    return AccessPolicy(
        key_digests=tuple(hashlib.sha256(k.encode()).digest() for k in accepted_keys(settings)),
        public_paths=frozenset(server.public_paths),
        hosts=HostAllowlist(frozenset(names), tuple(suffixes), any_host="*" in server.allowed_hosts),
        cors_origins=frozenset(server.cors_origins),
        max_body_bytes=parse_size(server.max_body_size),
        max_concurrent_per_key=server.max_concurrent_per_key,
        log_prompts=server.log_prompts,
    )


@dataclass
class Access:
    """The policy in force and the requests each key has in flight. ``reload`` replaces the policy."""

    policy: AccessPolicy
    own_names: frozenset[str] = frozenset()  # machine_names(), as last looked up
    in_flight: Counter[bytes] = field(default_factory=Counter)
    _generation: int = 0

    @classmethod
    def start(cls, settings: Settings) -> Access:
        """The policy at start (looking this machine's names up, which may take a second)."""
        names = machine_names(settings.tailscale.socket)
        return cls(build_policy(settings, names), names)

    def reload(self, settings: Settings) -> None:
        """The new settings' keys, hosts, origins and limits at once; this machine's names looked up
        again in a thread (a DNS or tailscaled lookup must not stall the event loop), then applied."""
        self.policy = build_policy(settings, self.own_names)
        self._generation += 1
        generation = self._generation

        def look_up() -> None:
            names = machine_names(settings.tailscale.socket)
            if generation == self._generation and names != self.own_names:  # no newer reload meanwhile
                self.own_names = names
                self.policy = build_policy(settings, names)

        threading.Thread(target=look_up, name="host names", daemon=True).start()


def exposure_problem(settings: Settings, keys: list[str]) -> str | None:
    """Why the daemon must not start as configured (a non-loopback address with no key), or None. With
    ``insecure_no_auth`` it starts, and the reason is logged as a warning instead."""
    server = settings.server
    if keys or is_loopback(server.host):
        return None
    problem = (
        f"refusing to listen on {server.host} without an API key: anyone who can reach port {server.port} "
        "could use every route, pulls and deletes included. Create a key with `appliance key new` "
        "(clients send it as `Authorization: Bearer KEY`), or pass --insecure-no-auth"
    )
    if server.insecure_no_auth:
        log.warning(
            "serving %s without an API key (--insecure-no-auth): anyone who can reach port %d may use "
            "every route, pulls and deletes included",
            server.host,
            server.port,
        )
        return None
    return problem


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _given_key(scope: Scope) -> bytes:
    """The key a client sent: ``Authorization: Bearer KEY`` (OpenAI, Ollama) or ``x-api-key`` (Anthropic)."""
    auth = (_header(scope, b"authorization") or "").encode("latin-1")
    if auth[:7].lower() == b"bearer ":
        return auth[7:].strip()
    return (_header(scope, b"x-api-key") or "").strip().encode("latin-1")


class Guard:
    """The ASGI middleware that enforces the Access policy on every HTTP request."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = self.access.policy
        path = scope["path"]

        async def refuse(exc: ApplianceError, headers: dict[str, str] | None = None) -> None:
            await error_response(path, exc, headers)(scope, receive, send)

        host_header = _header(scope, b"host") or ""
        host = host_name(host_header) if host_header else None
        if host_header and (host is None or not policy.hosts.allows(host)):
            log.warning("refused a request for host %r (not in server.allowed_hosts)", host_header[:100])
            await refuse(
                Forbidden(
                    f"this daemon does not answer to the host name {host_header[:100]!r}; "
                    "if it is yours, add it to server.allowed_hosts",
                    code="host_not_allowed",
                )
            )
            return

        origin = _header(scope, b"origin")
        if origin is not None:
            origin = origin.strip().lower()
            if not policy.origin_allowed(origin, scope.get("scheme", "http"), host_header):
                log.warning("refused a request from the web page origin %r (not in server.cors_origins)",
                            origin[:100])  # fmt: skip
                await refuse(
                    Forbidden(
                        f"requests from web pages at {origin[:100]} are refused; to let that "
                        "page in, add it to server.cors_origins",
                        code="origin_not_allowed",
                    )
                )
                return
            cors = _cors_headers(origin, policy)
            if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method"):
                await _preflight(scope, receive, send, cors)
                return
            send = _with_headers(send, cors)

        if path in policy.public_paths or not policy.needs_key:
            await self._limited_body(scope, receive, send, policy)
            return
        given = _given_key(scope)
        if not policy.key_matches(given):
            message = "missing API key" if not given else "incorrect API key"
            await refuse(Unauthorized(message), {"WWW-Authenticate": "Bearer"})
            return
        slot = hashlib.sha256(given).digest()
        if self.access.in_flight[slot] >= policy.max_concurrent_per_key:
            await refuse(
                TooManyRequests(
                    f"this API key already has {policy.max_concurrent_per_key} requests in flight "
                    "(server.max_concurrent_per_key); retry when one ends",
                    retry_after_s=1,
                )
            )
            return
        self.access.in_flight[slot] += 1
        try:
            await self._limited_body(scope, receive, send, policy)
        finally:
            self.access.in_flight[slot] -= 1
            if self.access.in_flight[slot] <= 0:
                del self.access.in_flight[slot]

    async def _limited_body(self, scope: Scope, receive: Receive, send: Send, policy: AccessPolicy) -> None:
        """Run the app with the body capped at ``max_body_bytes``: a declared length over it is refused
        before reading; a body that grows past it while read fails the read with 413."""
        limit = policy.max_body_bytes
        too_large = RequestTooLarge(
            f"the request body is larger than this daemon accepts ({limit} bytes; server.max_body_size)"
        )
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await error_response(scope["path"], too_large)(scope, receive, send)
            return
        received = 0
        body_parts: list[bytes] | None = [] if policy.log_prompts else None

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > limit:
                    raise too_large
                if body_parts is not None:
                    body_parts.append(chunk)
                    if not message.get("more_body"):
                        text = b"".join(body_parts).decode("utf-8", "replace")
                        record_of(scope).request_text = text
            return message

        started = False

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except RequestTooLarge as exc:  # read outside a route's error handling
            if started:
                raise
            await error_response(scope["path"], exc)(scope, receive, send)


def _cors_headers(origin: str, policy: AccessPolicy) -> dict[str, str]:
    # An origin allowed by "*" gets "*" back: no credentials are ever allowed, so a wildcard cannot
    # carry a user's cookies; an origin named gets exactly itself back.
    allow = "*" if "*" in policy.cors_origins and origin not in policy.cors_origins else origin
    return {"Access-Control-Allow-Origin": allow, "Vary": "Origin",
            "Access-Control-Expose-Headers": _EXPOSE_HEADERS}  # fmt: skip


async def _preflight(scope: Scope, receive: Receive, send: Send, cors: dict[str, str]) -> None:
    asked = _header(scope, b"access-control-request-headers") or ""
    headers = {**cors, "Access-Control-Allow-Methods": _ALLOW_METHODS,
               "Access-Control-Max-Age": str(_PREFLIGHT_MAX_AGE_S)}  # fmt: skip
    if asked.strip():
        headers["Access-Control-Allow-Headers"] = asked.strip()
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": 204, "headers": raw})
    await send({"type": "http.response.body", "body": b""})


def _with_headers(send: Send, headers: dict[str, str]) -> Send:
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), *raw]
        await send(message)

    return send_with_headers
