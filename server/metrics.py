"""Prometheus metrics (`GET /metrics`) and the one-line-per-request log.

Per-request figures are recorded by wrapping a generation's event stream; the state of each model
(queue, slots, load) is read when scraped. Every app gets its own CollectorRegistry: no globals.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from appliance.backend import Event, Finished, TextDelta
from appliance.hardware.nvidia import detect_nvidia
from appliance.loaded import Loaded, gpu_memory
from appliance.manager import ModelManager
from appliance.remotes.pool import RemotePool
from server.record import RequestRecord, record_of

request_log = logging.getLogger("appliance.requests")
RECENT_REQUESTS = 200  # request log lines kept for the TUI's Logs screen

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)
# Label values must stay few: any other /v1 path (a typo, a scanner) is counted as "other".
_ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/messages", "/api/chat",
              "/api/generate", "/api/embed", "/api/embeddings")  # fmt: skip


def _endpoint(path: str) -> str:
    if path in _ENDPOINTS:
        return path
    if path == "/v1/models" or path.startswith("/v1/models/"):
        return "/v1/models"
    return "other"


class _ModelsCollector(Collector):
    """Queue, slots, KV cache and load state of every loaded model, and loads and unloads so far, read
    at scrape time."""

    def __init__(self, models: ModelManager) -> None:
        self._models = models

    def collect(self) -> Iterable[Metric]:
        gauges = {
            "queue": GaugeMetricFamily(
                "appliance_queue_length", "Requests waiting for a slot", labels=["model"]
            ),
            "busy": GaugeMetricFamily("appliance_slots_busy", "Slots generating", labels=["model"]),
            "total": GaugeMetricFamily("appliance_slots_total", "Parallel slots", labels=["model"]),
            "kv": GaugeMetricFamily(
                "appliance_kv_cache_usage_ratio", "Share of KV cache cells in use (kept prefixes too)",
                labels=["model"],
            ),
            "cache": GaugeMetricFamily(
                "appliance_prompt_cache_bytes", "Host memory holding prefixes that left their slot",
                labels=["model"],
            ),
            "ready": GaugeMetricFamily("appliance_model_ready", "1 when the model serves", labels=["model"]),
            "load": GaugeMetricFamily("appliance_model_load_seconds", "Time the load took", labels=["model"]),
        }  # fmt: skip
        cache_hits = CounterMetricFamily(
            "appliance_prompt_cache_hits", "Requests that found their prefix in host memory", labels=["model"]
        )
        drafted = CounterMetricFamily(
            "appliance_draft_tokens", "Tokens guessed by speculative decoding, by source (ngram: prompt "
            "lookup, draft: the draft model)", labels=["model", "source"],
        )  # fmt: skip
        accepted = CounterMetricFamily(
            "appliance_draft_tokens_accepted", "Guessed tokens that sampling kept, by source",
            labels=["model", "source"],
        )  # fmt: skip
        for backend in self._models:
            name = [backend.model_id]
            gauges["queue"].add_metric(name, backend.queue_depth)
            gauges["busy"].add_metric(name, backend.slots_busy)
            gauges["total"].add_metric(name, backend.slots_total)
            gauges["kv"].add_metric(name, backend.kv_cache_usage)
            held, _, hits = backend.prompt_cache
            gauges["cache"].add_metric(name, held)
            cache_hits.add_metric(name, hits)
            for source, (guessed, kept) in backend.speculated.items():
                drafted.add_metric([backend.model_id, source], guessed)
                accepted.add_metric([backend.model_id, source], kept)
            gauges["ready"].add_metric(name, 1 if backend.state.value == "ready" else 0)
            if backend.load_seconds is not None:
                gauges["load"].add_metric(name, backend.load_seconds)
        yield from gauges.values()
        yield cache_hits
        yield drafted
        yield accepted
        loaded = GaugeMetricFamily("appliance_models_loaded", "Models loaded (or loading)")
        loaded.add_metric([], len(self._models.loaded()))
        yield loaded
        loads = CounterMetricFamily(
            "appliance_model_loads", "Model loads by result", labels=["model", "result"]
        )
        for (model, result), count in list(self._models.loads.items()):
            loads.add_metric([model, result], count)
        yield loads
        unloads = CounterMetricFamily(
            "appliance_model_unloads", "Model unloads by reason (idle, memory, request, failed)",
            labels=["model", "reason"],
        )  # fmt: skip
        for (model, reason), count in list(self._models.unloads.items()):
            unloads.add_metric([model, reason], count)
        yield unloads
        fits = CounterMetricFamily(
            "appliance_fit_decisions", "The planner's verdict on each model load: full (all on the GPU, "
            "or a machine without one), partial (split between GPU and CPU), no (refused: too large)",
            labels=["model", "fit"],
        )  # fmt: skip
        for (model, fit), count in list(self._models.fit_decisions.items()):
            fits.add_metric([model, fit], count)
        yield fits
        yield from gpu_memory_metrics(self._models.loaded())


def gpu_memory_metrics(entries: list[Loaded]) -> Iterable[Metric]:
    """GPU memory per GPU: the planner's budget, and what each loaded model's plan holds there."""
    budget = GaugeMetricFamily(
        "appliance_gpu_memory_budget_bytes", "GPU memory the planner may use, per GPU", labels=["gpu", "name"]
    )
    planned = GaugeMetricFamily(
        "appliance_gpu_memory_planned_bytes", "GPU memory a loaded model's plan holds, per GPU",
        labels=["gpu", "model"],
    )  # fmt: skip
    if entries:
        for gpu in gpu_memory(entries[0].plan.budget, []):
            budget.add_metric([str(gpu["index"]), gpu["name"]], gpu["budget_bytes"])
        for entry in entries:
            for gpu in gpu_memory(entries[0].plan.budget, [entry]):
                if gpu["models_bytes"]:
                    planned.add_metric([str(gpu["index"]), entry.model.id], gpu["models_bytes"])
    yield from (budget, planned)


class _RemotesCollector(Collector):
    """Each remote's health, breaker and load, read at scrape time."""

    def __init__(self, remotes: RemotePool) -> None:
        self._remotes = remotes

    def collect(self) -> Iterable[Metric]:
        healthy = GaugeMetricFamily("appliance_remote_healthy", "1 when the remote answers its probes",
                                    labels=["remote"])  # fmt: skip
        usable = GaugeMetricFamily("appliance_remote_usable", "1 when healthy and its breaker is not open",
                                   labels=["remote"])  # fmt: skip
        running = GaugeMetricFamily("appliance_remote_requests_running", "Requests running on the remote",
                                    labels=["remote"])  # fmt: skip
        waiting = GaugeMetricFamily("appliance_remote_requests_waiting", "Requests queued on the remote",
                                    labels=["remote"])  # fmt: skip
        for remote in self._remotes.remotes:
            healthy.add_metric([remote.name], 1 if remote.healthy else 0)
            usable.add_metric([remote.name], 1 if remote.usable else 0)
            load = remote.last_probe.load if remote.last_probe is not None else None
            if load is not None and load.running is not None:
                running.add_metric([remote.name], load.running)
            if load is not None and load.waiting is not None:
                waiting.add_metric([remote.name], load.waiting)
        yield from (healthy, usable, running, waiting)


class GpuCollector(Collector):
    """Each NVIDIA GPU's memory as NVML reports it at scrape time (beside what the plans predict: see
    gpu_memory_metrics). ``nvml`` stands in for the pynvml module in tests."""

    def __init__(self, nvml: Any | None = None) -> None:
        self._nvml = nvml

    def collect(self) -> Iterable[Metric]:
        total = GaugeMetricFamily(
            "appliance_gpu_memory_total_bytes", "GPU memory, per GPU (NVML)", labels=["gpu", "name"]
        )
        free = GaugeMetricFamily(
            "appliance_gpu_memory_free_bytes", "Free GPU memory now, per GPU (NVML)", labels=["gpu", "name"]
        )
        for gpu in detect_nvidia(self._nvml):
            total.add_metric([str(gpu.index), gpu.name], gpu.total_bytes)
            free.add_metric([str(gpu.index), gpu.name], gpu.free_bytes)
        yield from (total, free)


class Metrics:
    def __init__(self, models: ModelManager, remotes: RemotePool | None = None) -> None:
        self.registry = CollectorRegistry()
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_REQUESTS)
        r = self.registry
        self.requests = Counter(
            "appliance_requests", "Requests by endpoint, model, backend and status",
            ["endpoint", "model", "backend", "status"], registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            "appliance_time_to_first_token_seconds", "From arrival to the first generated text",
            ["model", "backend"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.itl = Histogram(
            "appliance_inter_token_latency_seconds", "Between two streamed pieces of text",
            ["model", "backend"], buckets=_ITL_BUCKETS, registry=r,
        )  # fmt: skip
        self.prompt_tokens = Counter("appliance_prompt_tokens", "Prompt tokens", ["model"], registry=r)
        self.cached_tokens = Counter(
            "appliance_cached_prompt_tokens", "Prompt tokens reused from the KV cache", ["model"], registry=r
        )
        self.generation_tokens = Counter(
            "appliance_generation_tokens", "Generated tokens", ["model"], registry=r
        )
        self.tokens_per_second = Gauge(
            "appliance_tokens_per_second", "Generation speed of the last request", ["model"], registry=r
        )
        self.escalations = Counter(
            "appliance_escalations", "Requests sent to a remote, by reason and remote", ["reason", "remote"],
            registry=r,
        )  # fmt: skip
        r.register(_ModelsCollector(models))
        r.register(GpuCollector())
        if remotes is not None:
            r.register(_RemotesCollector(remotes))

    def count_embeddings(self, record: RequestRecord, prompt_tokens: int) -> None:
        """An embedding request served (here or by the remote ``record`` names): its tokens and line."""
        record.kind = "embedding"
        record.prompt_tokens = prompt_tokens
        record.status = "ok"
        self.finish(record)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def observe(self, events: AsyncIterator[Event], record: RequestRecord) -> AsyncIterator[Event]:
        """Pass ``events`` through, recording TTFT, inter-token latency and tokens in ``record`` (which
        names who serves it), and its log line when the stream ends."""
        record.kind = "generation"
        labels = (record.model, record.backend)
        itl = None  # the labelled histogram, looked up once: this runs for every token
        # Only with server.log_prompts (the guard then keeps the request's text): the reply's text too.
        reply: list[str] | None = [] if record.request_text is not None else None
        try:
            async for event in events:
                now = time.monotonic()
                if isinstance(event, TextDelta) and event.text and reply is not None:
                    reply.append(event.text)
                if _is_output(event, record):
                    if record.first_token_s is None:
                        record.first_token_s = now
                        self.ttft.labels(*labels).observe(now - record.started_s)
                    elif record.last_token_s is not None:
                        if itl is None:
                            itl = self.itl.labels(*labels)
                        itl.observe(now - record.last_token_s)
                    record.last_token_s = now
                if isinstance(event, Finished):
                    if reply is not None:
                        reply.extend(f"{call.name}({call.arguments})" for call in event.tool_calls)
                    usage = event.usage
                    record.prompt_tokens = usage.prompt_tokens
                    record.generated_tokens = usage.completion_tokens
                    record.cached_tokens = usage.cached_tokens
                yield event
            record.status = "ok"
        except (GeneratorExit, asyncio.CancelledError):
            record.status = "cancelled"  # the client went away
            raise
        finally:
            if record.status == "error":
                record.stream_failed = True
            if reply is not None:
                record.reply_text = "".join(reply)
            if record.generated_tokens is None:  # ended before its usage: nothing counted
                record.prompt_tokens = record.generated_tokens = 0
            self.finish(record)

    def finish(self, record: RequestRecord) -> None:
        """The end of a served request: its tokens counted and its line logged, once."""
        if record.logged:
            return
        model = record.model
        if record.prompt_tokens:
            self.prompt_tokens.labels(model).inc(record.prompt_tokens)
        if record.cached_tokens:
            self.cached_tokens.labels(model).inc(record.cached_tokens)
        if record.generated_tokens:
            self.generation_tokens.labels(model).inc(record.generated_tokens)
        speed = record.tokens_per_s
        if speed is not None:
            self.tokens_per_second.labels(model).set(speed)
        self.log(record)

    def log(self, record: RequestRecord) -> None:
        """Log ``record``'s line and keep it for `GET /appliance/v1/logs`."""
        record.logged = True
        fields = record.fields()
        self.recent.append({"time": round(time.time(), 3), **fields})
        request_log.info(" ".join(f"{k}={v}" for k, v in fields.items()), extra=fields)


def _is_output(event: Event, record: RequestRecord) -> bool:
    """Whether ``event`` brings generated output to the client (the answer's text, the model's thinking,
    a piece of a tool call): the first such event is the first token. Calls a backend gives only whole,
    with the end, are the first output when nothing came before them."""
    if isinstance(event, TextDelta):
        return bool(event.text or event.reasoning)
    if isinstance(event, Finished):
        return bool(event.tool_calls) and record.first_token_s is None
    return True  # a ToolCallDelta


class RequestCounter:
    """Counts every /v1 request by endpoint and final status; a stream failing after its 200 is "error"."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(("/v1/", "/api/")):
            await self.app(scope, receive, send)
            return
        record = record_of(scope)
        status = "500"

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        except asyncio.CancelledError:  # cut by a shutdown's drain: the drain guard answers for it
            status = "cancelled" if status in ("500", "200") else status
            raise
        finally:
            # Only a stream that already sent its 200 fails as "error"; otherwise the status says it.
            if record.stream_failed and status == "200":
                status = "error"
            elif record.client_gone and status == "500":
                status = "499"  # the client left before its answer (server.disconnects), as nginx says
            self.metrics.requests.labels(_endpoint(path), record.model, record.backend, status).inc()
            if path in _ENDPOINTS and not record.logged:  # refused before it was served: say so too
                record.status = "ok" if status == "200" else status
                self.metrics.log(record)
