"""A draft model in the plan (appliance.planner.draft): its weights and KV cache counted beside the
model's, where it goes, and left out with a reason where the pair does not fit; whether it can draft
for the model at all (the tokenizer as the header describes it)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from appliance.planner.draft import draft_mismatch, with_draft
from appliance.planner.memory import GPU_RUNTIME_BYTES, estimate
from appliance.planner.model_info import ModelInfo
from appliance.planner.plan import PlanRequest, plan
from tests.hardware_profiles import profile
from tests.unit.test_planner import llama

GPT2 = {"tokenizer": "gpt2", "tokenizer_pre": "llama-bpe", "bos_token": 128000, "eos_token": 128009}


def model(size: str, quant: str) -> ModelInfo:
    return replace(llama(size, quant), **GPT2)  # type: ignore[arg-type]


def test_on_a_gpu_the_draft_goes_beside_the_model_and_shares_its_runtime() -> None:
    target, draft = model("8b", "Q8_0"), model("1b", "Q8_0")
    alone = plan([target], profile("rtx4090-box"))
    paired = with_draft(alone, draft)
    assert paired.fits and paired.draft is not None
    assert paired.settings == alone.settings  # the model keeps its plan
    d = paired.draft
    assert d.settings.n_gpu_layers == -1 and d.settings.gpu_backend == "cuda"
    assert (d.settings.n_ctx, d.settings.n_parallel, d.settings.kv_type) == (4096, 1, "f16")
    # Its weights and KV cache on the GPU, without a second CUDA context.
    own = estimate(draft, d.settings)
    assert d.memory.vram_bytes == own.vram_bytes - GPU_RUNTIME_BYTES["cuda"]
    assert paired.memory.vram_bytes == alone.memory.vram_bytes + d.memory.vram_bytes
    assert paired.memory.devices[0].vram_bytes == paired.memory.vram_bytes
    assert paired.reasons[0] == alone.reasons[0]
    assert paired.reasons[1].startswith("draft model Llama 1b (Q8_0) on the GPU:")
    assert "KV cache" in paired.reasons[1] and "1 slot of 4096 tokens" in paired.reasons[1]
    assert paired.to_json()["draft"]["n_gpu_layers"] == -1


def test_on_a_cpu_the_draft_counts_in_ram_with_one_cache_per_slot() -> None:
    target, draft = model("1b", "Q8_0"), model("1b", "Q2_K")
    alone = plan([target], profile("rpi5-8gb"), PlanRequest(n_parallel=2))
    paired = with_draft(alone, draft)
    assert paired.draft is not None and paired.draft.settings.gpu_backend is None
    assert paired.draft.settings.n_parallel == 2 and paired.draft.settings.n_ctx == alone.settings.n_ctx
    assert paired.memory.ram_bytes == alone.memory.ram_bytes + paired.draft.memory.ram_bytes
    assert paired.draft.memory.kv_bytes == estimate(draft, paired.draft.settings).kv_bytes > 0
    assert "on the CPU" in paired.reasons[1] and "2 slots of 4096 tokens" in paired.reasons[1]


def test_a_draft_that_does_not_fit_beside_the_model_is_left_out_not_the_model_shrunk() -> None:
    target, draft = model("1b", "Q8_0"), model("3b", "Q8_0")
    laptop = profile("laptop-8gb")
    alone = plan([target], laptop)
    snug = plan([target], laptop, PlanRequest(max_ram_bytes=alone.memory.ram_bytes + (64 << 20)))
    assert snug.fits and snug.settings == alone.settings
    dropped = with_draft(snug, draft)
    assert dropped.draft is None and dropped.fits
    assert (dropped.settings, dropped.memory) == (snug.settings, snug.memory)
    assert dropped.reasons[1].startswith("draft model Llama 3b left out: it needs")
    assert dropped.to_json()["draft"] is None


def test_the_draft_stays_off_a_gpu_the_model_only_shares() -> None:
    """A model split between GPU and CPU has no room to spare on the GPU: the draft goes to the CPU."""
    target, draft = model("70b", "Q8_0"), model("1b", "Q8_0")
    split = plan([target], profile("rtx4090-box"))
    assert split.settings.n_gpu_layers > 0
    paired = with_draft(split, draft)
    assert paired.draft is not None and paired.draft.settings.gpu_backend is None
    assert paired.memory.vram_bytes == split.memory.vram_bytes


def test_the_draft_gpu_layers_setting_is_kept() -> None:
    target, draft = model("8b", "Q8_0"), model("1b", "Q8_0")
    paired = with_draft(plan([target], profile("rtx4090-box")), draft, n_gpu_layers=0)
    assert paired.draft is not None and paired.draft.memory.vram_bytes == 0


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({}, None),
        ({"tokenizer": "llama"}, "its tokenizer is llama, the model's gpt2"),
        ({"tokenizer_pre": "qwen2"}, "its pre-tokenizer is qwen2, the model's llama-bpe"),
        ({"n_vocab": 128256 - 200}, "its vocabulary has 128056 tokens, the model's 128256"),
        ({"n_vocab": 128256 + 100}, None),  # llama.cpp allows 128 more or fewer (added tokens)
        ({"bos_token": 1}, "its BOS token is 1, the model's 128000"),
        ({"eos_token": 2}, "its EOS token is 2, the model's 128009"),
    ],
)
def test_a_draft_must_share_the_tokenizer(change: dict[str, object], says: str | None) -> None:
    target = model("8b", "Q8_0")
    assert draft_mismatch(target, replace(model("1b", "Q8_0"), **change)) == says  # type: ignore[arg-type]
