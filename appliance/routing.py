"""Where a request goes: this machine or a remote GPU host. A pure function over what is known of each,
so every decision is testable and comes with its reason (INTERFACES.md: explicit, capability, context,
load); ``fallbacks`` are where to go, in order, if the chosen backend fails before answering."""

from __future__ import annotations

from dataclasses import dataclass

LOCAL = "local"


class NoRoute(Exception):
    """A request that names a remote that cannot take it; one line why."""


@dataclass(frozen=True)
class LocalOption:
    installed: bool  # the model is installed here
    fits: bool  # ... and the planner says it fits this machine
    n_ctx: int | None  # tokens one request may hold here (prompt + generation)
    predicted_wait_s: float  # until a local slot would start it
    lacks: str | None = None  # what the request needs that the model here cannot do ("read images")


@dataclass(frozen=True)
class RemoteOption:
    name: str
    model: str  # the remote's name for the requested model
    max_model_len: int | None
    saturated: bool  # requests queue there or its KV cache is full


@dataclass(frozen=True)
class Decision:
    target: str  # LOCAL or a remote's name
    reason: str | None  # explicit | capability | context | load; None for local
    why: str
    remote_model: str | None = None
    fallbacks: tuple[str, ...] = ()  # remote names or LOCAL, tried in order before the first byte


def route(
    *,
    local: LocalOption,
    remotes: list[RemoteOption],
    explicit: str | None = None,
    header: str | None = None,
    policy: str = "auto",
    needed_tokens: int | None = None,
    max_queue_wait_s: float = 10.0,
) -> Decision:
    """``remotes`` are the healthy remotes serving the model, in configuration order. ``explicit`` is the
    remote a model name like ``gpu-box/NAME`` asks for; ``header`` is X-Escalate (always|never);
    ``policy`` the model's routing setting (auto|never|always)."""
    local_ok = local.installed and local.fits and local.lacks is None
    if explicit is not None:
        chosen = next((r for r in remotes if r.name == explicit), None)
        if chosen is None:
            raise NoRoute(f"remote {explicit} is down or does not serve this model")
        return Decision(explicit, "explicit", f"the request named remote {explicit}", chosen.model)

    def to(remote: RemoteOption, reason: str, why: str, others: list[RemoteOption]) -> Decision:
        rest = tuple(r.name for r in others if r.name != remote.name)
        return Decision(remote.name, reason, why, remote.model, rest + ((LOCAL,) if local_ok else ()))

    if header == "never" or policy == "never":
        return Decision(LOCAL, None, "escalation is off for this request" if header == "never" else
                        "escalation is off for this model")  # fmt: skip
    if header == "always" or policy == "always":
        if remotes:
            return to(remotes[0], "explicit", "escalation was asked for", remotes)
        return Decision(LOCAL, None, "escalation was asked for, but no remote serving this model is healthy")
    if not local_ok:
        if remotes:
            what = "does not fit this machine" if local.installed else "is not installed here"
            if local.installed and local.fits:
                what = f"cannot {local.lacks} here"
            return to(remotes[0], "capability", f"the model {what}", remotes)
        return Decision(LOCAL, None, "no healthy remote serves this model")
    if needed_tokens is not None and local.n_ctx is not None and needed_tokens > local.n_ctx:
        roomy = [r for r in remotes if r.max_model_len is None or r.max_model_len >= needed_tokens]
        if roomy:
            why = f"{needed_tokens} tokens exceed this machine's {local.n_ctx}-token context"
            return to(roomy[0], "context", why, roomy)
    if local.predicted_wait_s > max_queue_wait_s:
        idle = [r for r in remotes if not r.saturated]
        if idle:
            return to(idle[0], "load",
                      f"a local slot is about {local.predicted_wait_s:.0f} s away "
                      f"(budget {max_queue_wait_s:g} s)", idle)  # fmt: skip
    return Decision(LOCAL, None, "served here")
