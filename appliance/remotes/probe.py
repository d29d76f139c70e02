"""One look at a remote server: is it up, what does it serve (with each model's context), how loaded is
it. Reads vLLM's and SGLang's Prometheus metrics, old and new names."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

# Gauges by meaning; vLLM renamed gpu_cache_usage_perc to kv_cache_usage_perc (both are 0..1 fractions).
_RUNNING = ("vllm:num_requests_running", "sglang:num_running_reqs")
_WAITING = ("vllm:num_requests_waiting", "sglang:num_queue_reqs")
_KV = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage")


@dataclass(frozen=True)
class Load:
    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None  # 0..1

    @property
    def saturated(self) -> bool:
        """Requests queue there, or its KV cache is all but full."""
        return bool(self.waiting) or (self.kv_cache_usage or 0.0) >= 0.95

    def to_json(self) -> dict[str, Any]:
        return {"running": self.running, "waiting": self.waiting, "kv_cache_usage": self.kv_cache_usage}


@dataclass(frozen=True)
class Probe:
    healthy: bool
    error: str | None = None
    models: dict[str, int | None] = field(default_factory=dict)  # served name -> max_model_len
    load: Load = Load()
    latency_s: float | None = None
    at: float = field(default_factory=time.time)
    embeds: bool | None = None  # whether its model embeds, where the remote says (SGLang); None: unsaid


def parse_metrics(text: str) -> Load:
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in _RUNNING + _WAITING + _KV:
                values[sample.name] = values.get(sample.name, 0.0) + sample.value

    def first(names: tuple[str, ...]) -> float | None:
        return next((values[n] for n in names if n in values), None)

    return Load(first(_RUNNING), first(_WAITING), first(_KV))


def parse_models(body: dict[str, Any]) -> dict[str, int | None]:
    models: dict[str, int | None] = {}
    for item in body.get("data") or []:
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            length = item.get("max_model_len")
            models[item["id"]] = int(length) if isinstance(length, int) else None
    return models


async def probe(
    client: httpx.AsyncClient,
    base_url: str,
    kind: str,
    headers: dict[str, str],
    timeout: float | httpx.Timeout,
) -> Probe:
    """Health (SGLang: /health_generate, which really generates), /v1/models and /metrics."""
    started = time.monotonic()
    health_path = "/health_generate" if kind == "sglang" else "/health"
    if kind == "openai":  # any OpenAI-compatible server: /v1/models is the readiness check
        health_path = "/v1/models"
    try:
        health = await client.get(base_url + health_path, headers=headers, timeout=timeout)
        latency = time.monotonic() - started
        if health.status_code != 200:
            return Probe(False, f"{health_path} answered {health.status_code}", latency_s=latency)
        listed = await client.get(base_url + "/v1/models", headers=headers, timeout=timeout)
        if listed.status_code != 200:
            return Probe(False, f"/v1/models answered {listed.status_code}", latency_s=latency)
        models = parse_models(listed.json())
        load = Load()
        if kind in ("vllm", "sglang"):
            metrics = await client.get(base_url + "/metrics", timeout=timeout)
            if metrics.status_code == 200:
                load = parse_metrics(metrics.text)
        embeds = await _sglang_embeds(client, base_url, headers, timeout) if kind == "sglang" else None
    except httpx.HTTPError as exc:
        return Probe(False, f"{type(exc).__name__}: {exc}".rstrip(": "))
    except ValueError as exc:
        return Probe(False, f"unreadable answer: {exc}")
    return Probe(True, models=models, load=load, latency_s=latency, embeds=embeds)


async def _sglang_embeds(
    client: httpx.AsyncClient, base_url: str, headers: dict[str, str], timeout: float | httpx.Timeout
) -> bool | None:
    """Whether SGLang's one model is an embedding model: /get_model_info's ``is_generation`` (false for
    a model started with --is-embedding). None when it does not say: the remote is healthy either way."""
    info = await client.get(base_url + "/get_model_info", headers=headers, timeout=timeout)
    if info.status_code != 200:
        return None
    data = info.json()
    generation = data.get("is_generation") if isinstance(data, dict) else None
    return not generation if isinstance(generation, bool) else None
