"""Reading remotes: vLLM's /metrics and /v1/models, and tailscaled's status, from recorded real output
(vLLM 0.32 on CPU; the LocalAPI document of ../shared/remote-standin/fake-tailscaled.py, which mirrors
tailscale 1.103's ipnstate structs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.config import RemoteSettings, TailscaleTarget
from appliance.remotes.pool import Remote
from appliance.remotes.probe import Load, Probe, parse_metrics, parse_models
from appliance.remotes.tailscale import parse_status, resolve

FIXTURES = Path(__file__).parents[1] / "fixtures" / "remotes"


def test_vllm_metrics_and_models() -> None:
    load = parse_metrics((FIXTURES / "vllm-0.32-metrics.txt").read_text())
    assert load == Load(running=0.0, waiting=0.0, kv_cache_usage=0.0)
    models = parse_models(json.loads((FIXTURES / "vllm-0.32-models.json").read_text()))
    assert models == {"smollm2-135m-instruct": 2048}


def test_old_vllm_and_sglang_metric_names() -> None:
    old = "vllm:num_requests_running 2\nvllm:num_requests_waiting 3\nvllm:gpu_cache_usage_perc 0.97\n"
    load = parse_metrics(old)
    assert load == Load(2.0, 3.0, 0.97) and load.saturated
    sglang = (
        'sglang:num_running_reqs{tp_rank="0"} 1\n'
        'sglang:num_queue_reqs{tp_rank="0"} 0\n'
        "sglang:token_usage 0.5\n"
    )
    assert parse_metrics(sglang) == Load(1.0, 0.0, 0.5)
    assert not parse_metrics(sglang).saturated


def test_tailscale_peers_and_targets() -> None:
    peers = parse_status(json.loads((FIXTURES / "tailscale-status.json").read_text()))
    by_name = {p.hostname: p for p in peers}
    assert set(by_name) == {"gpu-box", "laptop", "relay-box"}
    gpu = by_name["gpu-box"]
    assert gpu.online and gpu.ipv4 == "100.64.0.2" and gpu.tags == ("tag:gpu",)
    assert gpu.dns_name.endswith(".ts.net")  # the trailing dot is gone
    assert not by_name["laptop"].online
    assert resolve(TailscaleTarget(hostname="GPU-BOX"), peers) is gpu
    assert resolve(TailscaleTarget(hostname=gpu.dns_name), peers) is gpu
    assert resolve(TailscaleTarget(tag="tag:gpu"), peers) is gpu  # online first, then by name
    assert resolve(TailscaleTarget(hostname="nope"), peers) is None
    assert resolve(TailscaleTarget(tag="tag:none"), peers) is None


def test_sglang_is_probed_on_health_generate_with_its_metrics() -> None:
    """A server answering as SGLang does: /health_generate (which really generates, unlike /health),
    /v1/models, and /metrics in its dialect."""
    import asyncio
    import threading
    import time

    import httpx
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, PlainTextResponse

    from appliance.remotes.probe import probe
    from tests.server.conftest import free_port

    app = FastAPI()
    seen: list[str] = []

    @app.get("/health_generate")
    async def health_generate() -> PlainTextResponse:
        seen.append("/health_generate")
        return PlainTextResponse("")

    @app.get("/health")
    async def health() -> JSONResponse:  # the process is up: not proof it can generate
        seen.append("/health")
        return JSONResponse({})

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        card = {"id": "meta-llama/Llama-3.1-8B-Instruct", "object": "model", "owned_by": "sglang",
                "max_model_len": 131072}  # fmt: skip
        return JSONResponse({"object": "list", "data": [card]})

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse((FIXTURES / "sglang-metrics.txt").read_text())

    @app.get("/get_model_info")
    async def model_info() -> JSONResponse:  # SGLang's answer for a generation model
        return JSONResponse({"model_path": "meta-llama/Llama-3.1-8B-Instruct", "is_generation": True,
                             "tokenizer_path": "meta-llama/Llama-3.1-8B-Instruct"})  # fmt: skip

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)

    async def run() -> Probe:
        async with httpx.AsyncClient() as client:
            return await probe(client, f"http://127.0.0.1:{port}", "sglang", {}, 5.0)

    try:
        result = asyncio.run(run())
    finally:
        server.should_exit = True
        thread.join(5)
    assert seen == ["/health_generate"]
    assert result.healthy and result.models == {"meta-llama/Llama-3.1-8B-Instruct": 131072}
    assert result.load == Load(running=3.0, waiting=0.0, kv_cache_usage=0.41)
    assert result.embeds is False  # a generation model


@pytest.mark.parametrize(
    ("kind", "configured", "probed", "embeddings", "token_ids"),
    [
        ("openai", None, None, True, True),  # another appliance embeds with any model
        ("vllm", None, None, False, False),  # vLLM's /v1/models does not say: generation, as usual
        ("vllm", True, None, True, True),
        ("sglang", None, True, True, False),  # /get_model_info said it embeds; SGLang gets text only
        ("sglang", None, False, False, False),
        ("sglang", False, True, False, False),  # the configuration wins over the probe
        ("openai", False, None, False, False),
    ],
)
def test_a_remotes_embedding_capability(
    kind: str, configured: bool | None, probed: bool | None, embeddings: bool, token_ids: bool
) -> None:
    settings = RemoteSettings(name="r", kind=kind, base_url="http://gpu:8000", embeddings=configured)
    remote = Remote(settings, last_probe=Probe(True, embeds=probed))
    capabilities = remote.capabilities
    assert (capabilities.embeddings, capabilities.embed_token_ids) == (embeddings, token_ids)
