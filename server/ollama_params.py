"""Ollama's request fields in the core's terms: options to sampling, messages and images to the seam's,
``think`` to a Reasoning, ``keep_alive`` to seconds. Every field an Ollama client sends is honoured here,
refused with a 400, or named in a warning: none is dropped without a word."""

from __future__ import annotations

import json
import logging
from typing import Any, cast

from appliance import model_defaults
from appliance.backend import Effort, Reasoning, SamplingParams
from appliance.config import PerModelSettings
from appliance.errors import InvalidRequest
from appliance.manager import FOREVER, ModelManager
from appliance.units import parse_duration
from server.compat_schemas import OllamaMessage, OllamaOptions
from server.schemas import Tool

log = logging.getLogger(__name__)

_SAMPLING_OPTIONS = {
    "temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "min_p": "min_p",
    "repeat_penalty": "repeat_penalty", "repeat_last_n": "repeat_last_n", "seed": "seed",
    "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
}  # fmt: skip
# Ollama's options that size or place a model at load time: here the planner decides those (a model's
# `[models."ID"]` settings, docs/CONFIG.md), so a request's are named in a warning.
_LOAD_OPTIONS = frozenset({
    "num_gpu", "main_gpu", "num_thread", "num_batch", "numa", "low_vram", "f16_kv", "use_mmap",
    "use_mlock", "vocab_only", "logits_all", "embedding_only",
})  # fmt: skip
_FOREVER_S = 100 * 365 * 86400.0  # past any machine's uptime: as good as -1


def options(
    given: OllamaOptions | None, defaults: PerModelSettings, path: str
) -> tuple[SamplingParams, int | None, tuple[str, ...], int | None]:
    """Sampling, max tokens, stop strings and num_ctx from a request's ``options``; options this engine
    does not have (mirostat, tfs_z, typical_p, ...) or that are the planner's (num_gpu, num_thread, ...)
    are named in one warning."""
    given = given or OllamaOptions()
    unhonoured = sorted(given.model_extra or {})
    if unhonoured:
        load = [name for name in unhonoured if name in _LOAD_OPTIONS]
        other = [name for name in unhonoured if name not in _LOAD_OPTIONS]
        why = [f"{', '.join(load)} (load settings: the planner's)"] if load else []
        why += [f"{', '.join(other)} (not in this engine's sampler)"] if other else []
        log.warning("%s: ignoring options %s", path, "; ".join(why), extra={"ignored_options": unhonoured})
    sampling = model_defaults.sampling(
        {f: getattr(given, key) for key, f in _SAMPLING_OPTIONS.items()}, defaults
    )
    predict = given.num_predict
    max_tokens = None if predict is None or predict < 0 else predict
    stop = given.stop or ()
    return sampling, max_tokens, (stop,) if isinstance(stop, str) else tuple(stop), given.num_ctx


def keep_alive(value: str | float | None) -> float | None:
    """A request's ``keep_alive`` in seconds for ModelManager.use: None when it gave none, FOREVER for a
    negative one (or one past any uptime), 0 to unload once the request is done. 400 when unreadable."""
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except (ValueError, OverflowError) as exc:
        raise InvalidRequest(f"keep_alive: {exc}", param="keep_alive") from None
    return FOREVER if seconds is None or seconds > _FOREVER_S else seconds


def check_think(manager: ModelManager, name: str, think: bool | str | None) -> None:
    """A 400 as Ollama's for thinking asked of a local model that cannot think (its template has no
    thinking format: appliance.capabilities)."""
    if think in (None, False):
        return
    model = manager.resolve(name)
    if not manager.capabilities(model.id).reasoning:
        raise InvalidRequest(f'"{name}" does not support thinking', param="think")


def refuse_unhonoured(fields: dict[str, Any], path: str) -> None:
    """Top-level fields an Ollama client may send that nothing here can honour: a 400 for those whose
    absence changes the answer (a Go template, an earlier generation's context), a warning for the
    rest (image generation's sizes)."""
    if fields.get("template"):
        raise InvalidRequest(
            "template (a Go template) is not run here: the model's own chat template is used; send the "
            "prompt with raw=true to format it yourself",
            param="template",
        )
    if fields.get("context"):
        raise InvalidRequest(
            "context (an earlier /api/generate's tokens) is not kept here: send the conversation to "
            "/api/chat, or the whole prompt",
            param="context",
        )
    ignored = sorted(name for name in ("width", "height", "steps") if fields.get(name) is not None)
    if ignored:
        log.warning("%s: ignoring %s (image generation is not served)", path, ", ".join(ignored))


def tools(given: list[Tool] | None) -> list[dict[str, Any]]:
    return [tool.model_dump(exclude_none=True) for tool in given or []]


def json_format(fmt: str | dict[str, Any] | None) -> dict[str, Any] | None:
    if not fmt:
        return None
    return fmt if isinstance(fmt, dict) else {"type": "object"}  # "json"


def think(value: bool | str | None) -> Reasoning:
    """Ollama's ``think``: true or false, or how hard ("low", "medium", "high", as gpt-oss takes it)."""
    if value is None:
        return Reasoning()
    if isinstance(value, bool):
        return Reasoning(enabled=value)
    return Reasoning(enabled=True, effort=cast(Effort, value))


def top_logprobs(logprobs: bool | None, top: int | None) -> int | None:
    """ChatParams.top_logprobs from Ollama's ``logprobs`` and ``top_logprobs`` (at most 20, as Ollama)."""
    if top is not None and not 0 <= top <= 20:
        raise InvalidRequest("top_logprobs must be between 0 and 20", param="top_logprobs")
    if not logprobs:
        if top:
            raise InvalidRequest("top_logprobs needs logprobs: true", param="top_logprobs")
        return None
    return top or 0


def content(text: str | None, images: list[str] | None) -> str | list[dict[str, Any]]:
    """A message's content on the seam: its text, and its images (Ollama sends them base64-encoded, of
    any format) as data-URL image parts."""
    if not images:
        return text or ""
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    # The format is not said; image readers sniff it from the bytes, whatever the URL's type says.
    parts += [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}} for image in images
    ]
    return parts


def messages(given: list[OllamaMessage]) -> list[dict[str, Any]]:
    out = []
    for index, message in enumerate(given):
        item: dict[str, Any] = {"role": message.role, "content": content(message.content, message.images)}
        if message.tool_calls:
            item["tool_calls"] = [
                {"id": f"call_{index}_{i}", "type": "function",
                 "function": {"name": c.function.name, "arguments": json.dumps(c.function.arguments or {})}}
                for i, c in enumerate(message.tool_calls)
            ]  # fmt: skip
        if message.tool_name:
            item["name"] = message.tool_name
        if message.thinking and message.role == "assistant":  # a previous turn's thinking
            item["reasoning_content"] = message.thinking
        out.append(item)
    return out
