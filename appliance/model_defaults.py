"""A model's configured defaults (`[models."ID"]`) merged into a request: every dialect's sampling and
every chat's system prompt go through here, so a request's own value wins the same way everywhere."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from appliance.backend import ChatParams, CompletionParams, SamplingParams
from appliance.config import PerModelSettings

SAMPLING_DEFAULTS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed")
"""The sampling settings a model's configuration may give defaults for."""


def sampling(asked: Mapping[str, Any], defaults: PerModelSettings) -> SamplingParams:
    """The sampling of a request: its own values (``asked``, None where it gave none) over the model's
    configured defaults, over llama-server's."""
    values = {name: value for name in SAMPLING_DEFAULTS if (value := getattr(defaults, name)) is not None}
    values.update({name: value for name, value in asked.items() if value is not None})
    return SamplingParams(**values)


def with_system(
    params: ChatParams | CompletionParams, defaults: PerModelSettings
) -> ChatParams | CompletionParams:
    """A chat with the model's configured system prompt first, when it has no system message of its own
    (a raw completion has no messages: it stays as it is)."""
    if not isinstance(params, ChatParams) or defaults.system is None:
        return params
    if any(message.get("role") in ("system", "developer") for message in params.messages):
        return params
    system = {"role": "system", "content": defaults.system}
    return dataclasses.replace(params, messages=[system, *params.messages])
