"""Reading remotes: vLLM's /metrics and /v1/models, and tailscaled's status, from recorded real output
(vLLM 0.32 on CPU; the LocalAPI document of ../shared/remote-standin/fake-tailscaled.py, which mirrors
tailscale 1.103's ipnstate structs)."""

from __future__ import annotations

import json
from pathlib import Path

from appliance.config import TailscaleTarget
from appliance.remotes.probe import Load, parse_metrics, parse_models
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
