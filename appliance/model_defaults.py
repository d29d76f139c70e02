"""A model's configured defaults (`[models."ID"]`) merged into a request: every dialect's sampling and
every request's other defaults (system prompt, stop, context, MESSAGE turns, reasoning) go through
here, so a request's own value wins the same way everywhere."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, cast

from appliance.backend import ChatParams, CompletionParams, Effort, Reasoning, SamplingParams
from appliance.config import PerModelSettings

SAMPLING_DEFAULTS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed")
"""The sampling settings a model's configuration may give defaults for."""


def sampling(asked: Mapping[str, Any], defaults: PerModelSettings) -> SamplingParams:
    """The sampling of a request: its own values (``asked``, None where it gave none) over the model's
    configured defaults, over llama-server's."""
    values = {name: value for name in SAMPLING_DEFAULTS if (value := getattr(defaults, name)) is not None}
    values.update({name: value for name, value in asked.items() if value is not None})
    return SamplingParams(**values)


def applied(
    params: ChatParams | CompletionParams, defaults: PerModelSettings
) -> ChatParams | CompletionParams:
    """``params`` with the model's configured defaults where the request gave none: stop sequences and
    the context of one request (``num_ctx``) for every request; for a chat, its system prompt first
    (unless the chat has one), the configured MESSAGE turns after the system messages, and the
    reasoning switch."""
    changes: dict[str, Any] = {}
    if not params.stop and defaults.stop:
        changes["stop"] = tuple(defaults.stop)
    if params.context_tokens is None and defaults.num_ctx is not None:
        changes["context_tokens"] = defaults.num_ctx
    if isinstance(params, ChatParams):
        messages = params.messages
        if defaults.system is not None and not any(
            message.get("role") in ("system", "developer") for message in messages
        ):
            messages = [{"role": "system", "content": defaults.system}, *messages]
        if defaults.messages:
            lead = next((i for i, m in enumerate(messages) if m.get("role") not in ("system", "developer")),
                        len(messages))  # fmt: skip
            turns = [message.model_dump() for message in defaults.messages]
            messages = [*messages[:lead], *turns, *messages[lead:]]
        if messages is not params.messages:
            changes["messages"] = messages
        if params.reasoning == Reasoning() and defaults.reasoning is not None:
            changes["reasoning"] = reasoning(defaults.reasoning)
    return dataclasses.replace(params, **changes) if changes else params


def reasoning(setting: bool | str) -> Reasoning:
    """A model's configured ``reasoning`` (on, off, or how hard) as the seam's Reasoning."""
    if isinstance(setting, bool):
        return Reasoning(enabled=setting)
    return Reasoning(enabled=True, effort=cast(Effort, setting))
