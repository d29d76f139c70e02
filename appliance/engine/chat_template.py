"""Render chat messages to a prompt with the model's own Jinja chat template (from GGUF metadata).

The environment matches what Hugging Face's ``apply_chat_template`` offers templates (a sandbox,
``raise_exception``, ``strftime_now``, a ``tojson`` that keeps non-ASCII text), since templates are
written against it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from appliance.errors import InvalidRequest

# Used when a GGUF carries no template: ChatML, which most small instruct models understand.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class TemplateError(InvalidRequest):
    """The messages cannot be rendered by this model's template."""


def _raise_exception(message: str) -> None:
    raise TemplateError(f"the model's chat template rejected the messages: {message}", param="messages")


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    # Jinja's map and select give generators (llama.cpp's R1 template writes
    # ``tools | map(attribute='function') | tojson``): they are written as lists.
    return json.dumps(value, ensure_ascii=False, indent=indent, default=_as_list)


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
    return list(value)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=8)
def _compile(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(source)


class ChatTemplate:
    """A compiled chat template with the special tokens it refers to."""

    def __init__(self, source: str | None, *, bos_token: str, eos_token: str) -> None:
        self.source = source or CHATML_TEMPLATE
        self.is_fallback = not source
        self.bos_token = bos_token
        self.eos_token = eos_token
        try:
            self._template = _compile(self.source)
        except jinja2.TemplateError as exc:
            raise ValueError(f"the model's chat template does not compile: {exc}") from exc

    def render(
        self,
        messages: list[dict[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
        variables: Mapping[str, Any] | None = None,
    ) -> str:
        """The prompt text for ``messages``, ending with the assistant's turn opening. ``variables``: more
        for the template (a request's ``chat_template_kwargs``, e.g. ``enable_thinking``);
        they never replace the ones named here."""
        try:
            return self._template.render(
                {
                    **(variables or {}),
                    "messages": messages,
                    "tools": tools,
                    "add_generation_prompt": add_generation_prompt,
                    "bos_token": self.bos_token,
                    "eos_token": self.eos_token,
                }
            )
        except TemplateError:
            raise
        except jinja2.TemplateError as exc:
            raise TemplateError(f"the model's chat template failed: {exc}", param="messages") from exc
        except (TypeError, KeyError, AttributeError) as exc:
            raise TemplateError(
                f"the model's chat template cannot render these messages: {exc}", param="messages"
            ) from exc
