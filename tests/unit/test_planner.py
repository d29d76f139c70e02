"""The planner, table-tested over recorded machines and synthetic model headers."""

from __future__ import annotations

from dataclasses import replace
from functools import cache

import pytest
from gguf import GGMLQuantizationType as T

from appliance.planner.memory import (
    KV_TYPE_BYTES,
    LoadSettings,
    cpu_mapped_bytes,
    cpu_weight_copies,
    estimate,
    gpu_host_compute_bytes,
    kv_layer_bytes,
)
from appliance.planner.model_info import ModelInfo, model_info
from appliance.planner.plan import GIB, Plan, PlanRequest, plan, plan_auto_parallel
from models.gguf_header import GGUFHeader, TensorInfo, merge_split_headers
from tests.hardware_profiles import profile

MIB = 1 << 20

# Per quantization, as llama-quantize assigns them: the type of most matrices, of ffn_down/attn_v, of
# token_embd, of output; and the llama_ftype.
QUANTS = {
    "Q8_0": (T.Q8_0, T.Q8_0, T.Q8_0, T.Q8_0, 7),
    "Q6_K": (T.Q6_K, T.Q6_K, T.Q6_K, T.Q6_K, 18),
    "Q4_K_M": (T.Q4_K, T.Q6_K, T.Q4_K, T.Q6_K, 15),
    "Q3_K_M": (T.Q3_K, T.Q4_K, T.Q3_K, T.Q6_K, 12),
    "Q2_K": (T.Q2_K, T.Q3_K, T.Q2_K, T.Q6_K, 10),
}
SHAPES = {  # n_layer, n_embd, n_ff, n_head, n_head_kv, vocab, trained context
    "1b": (16, 2048, 8192, 32, 8, 128256, 131072),
    "3b": (28, 3072, 8192, 24, 8, 128256, 131072),  # Llama 3.2 3B's shape
    "8b": (32, 4096, 14336, 32, 8, 128256, 131072),
    "70b": (80, 8192, 28672, 64, 8, 128256, 131072),
}


@cache
def llama(size: str, quant: str, order: str = "numeric") -> ModelInfo:
    """A Llama-3-shaped model header (no weights), as a GGUF file of that shape would have. Tensors lie
    in the file in llama.cpp's converter order (layer by layer) or, with ``order="lexicographic"``, in
    name order as other converters write them (blk.0, blk.1, blk.10, ..., token_embd)."""
    n_layer, n_embd, n_ff, n_head, n_head_kv, vocab, ctx = SHAPES[size]
    main, strong, embd, output, ftype = QUANTS[quant]
    kv = n_embd // n_head * n_head_kv
    tensors = [
        TensorInfo("token_embd.weight", (n_embd, vocab), embd, 0),
        TensorInfo("output_norm.weight", (n_embd,), T.F32, 0),
        TensorInfo("output.weight", (n_embd, vocab), output, 0),
    ]
    for il in range(n_layer):
        for name, shape, kind in (
            ("attn_norm", (n_embd,), T.F32),
            ("attn_q", (n_embd, n_embd), main),
            ("attn_k", (n_embd, kv), main),
            ("attn_v", (n_embd, kv), strong),
            ("attn_output", (n_embd, n_embd), main),
            ("ffn_norm", (n_embd,), T.F32),
            ("ffn_gate", (n_embd, n_ff), main),
            ("ffn_up", (n_embd, n_ff), main),
            ("ffn_down", (n_ff, n_embd), strong),
        ):
            tensors.append(TensorInfo(f"blk.{il}.{name}.weight", shape, kind, 0))
    if order == "lexicographic":
        tensors.sort(key=lambda t: t.name)
    offset = 0
    for i, t in enumerate(tensors):
        tensors[i] = replace(t, offset=offset)
        offset += -(-t.n_bytes // 32) * 32  # GGUF's default alignment
    metadata = {
        "general.architecture": "llama",
        "general.name": f"Llama {size}",
        "general.file_type": ftype,
        "llama.block_count": n_layer,
        "llama.embedding_length": n_embd,
        "llama.feed_forward_length": n_ff,
        "llama.attention.head_count": n_head,
        "llama.attention.head_count_kv": n_head_kv,
        "llama.context_length": ctx,
        "llama.vocab_size": vocab,
    }
    return model_info(GGUFHeader(3, metadata, tuple(tensors), 0), f"llama-{size}.{quant}.gguf")


def all_quants(size: str) -> list[ModelInfo]:
    return [llama(size, q) for q in QUANTS]


def test_model_info_sizes() -> None:
    m = llama("8b", "Q8_0")
    assert m.n_layer == 32 and m.n_vocab == 128256 and m.head_dim_k == 128
    assert 7.9e9 < m.n_params < 8.1e9
    assert 8.4 < m.bits_per_weight < 8.6  # Q8_0 is 8.5 bits per weight
    assert 4.5 < llama("8b", "Q4_K_M").bits_per_weight < 5.3
    assert m.quant == "Q8_0"


def test_kv_cache_matches_reference_points() -> None:
    # Llama-3.1-8B: 128 KiB per token at f16, 512 MiB at 4096 (notes/llama-memory.md).
    settings = LoadSettings(n_ctx=4096)
    assert sum(kv_layer_bytes(llama("8b", "Q8_0"), settings)) == 512 * MIB
    q8 = sum(kv_layer_bytes(llama("8b", "Q8_0"), replace(settings, kv_type="q8_0")))
    assert q8 == 512 * MIB * 34 // 64
    # Context padding to 256 cells.
    assert sum(kv_layer_bytes(llama("8b", "Q8_0"), LoadSettings(n_ctx=4000))) == 512 * MIB


def test_sliding_window_layers_hold_only_the_window() -> None:
    base = llama("1b", "Q8_0")
    gemma_like = replace(
        base, architecture="gemma3", n_swa=512, swa_layers=tuple(il % 6 < 5 for il in range(16))
    )
    settings = LoadSettings(n_ctx=32768)
    full = sum(kv_layer_bytes(base, settings))
    windowed = sum(kv_layer_bytes(gemma_like, settings))
    per_cell_layer = full // (32768 * 16)
    # Layers 5 and 11 are global and keep 32768 cells; 14 windowed ones keep pad(512 + 512, 256).
    assert windowed == per_cell_layer * (2 * 32768 + 14 * 1024)


def test_offload_puts_output_and_last_layers_on_the_gpu() -> None:
    m = llama("8b", "Q4_K_M")
    none = estimate(m, LoadSettings(n_ctx=4096, gpu_backend="cuda", n_gpu_layers=0))
    assert none.weights_gpu == 0 and none.vram_bytes == 0
    output_only = estimate(m, LoadSettings(n_ctx=4096, gpu_backend="cuda", n_gpu_layers=1))
    assert output_only.weights_gpu == m.output_bytes + m.other_bytes
    half = estimate(m, LoadSettings(n_ctx=4096, gpu_backend="cuda", n_gpu_layers=17))
    assert half.weights_gpu == m.output_bytes + m.other_bytes + sum(m.layer_bytes[16:])
    assert half.kv_gpu == half.kv_host
    full = estimate(m, LoadSettings(n_ctx=4096, gpu_backend="cuda", n_gpu_layers=-1))
    assert full.weights_host == m.token_embd_bytes  # token_embd stays on the host
    assert full.kv_host == 0 and full.kv_gpu == 512 * MIB


def test_a_split_keeps_mapped_the_file_range_of_the_cpus_tensors() -> None:
    """llama.cpp maps one range per file for the CPU's tensors and unmaps the rest after loading; GPU
    tensors inside the range were read through it, so stay resident (measured on an H100 with
    SmolLM2, whose file is in name order: docs/BENCHMARKS.md)."""
    settings = LoadSettings(n_ctx=8192, gpu_backend="cuda", n_gpu_layers=17)
    ordered = estimate(llama("8b", "Q4_K_M"), settings)
    by_name = estimate(llama("8b", "Q4_K_M", "lexicographic"), settings)
    assert ordered.weights_host == by_name.weights_host and ordered.kv_host == by_name.kv_host
    # In layer order the CPU's layers and token_embd are one stretch: loading (the whole file) is the peak.
    m = llama("8b", "Q4_K_M")
    loading = m.file_bytes + estimate(m, LoadSettings(n_ctx=8192)).runtime_host + 98 * MIB
    assert ordered.ram_bytes == loading
    # In name order token_embd comes after blk.9: the CPU's range spans about the whole file, and serving
    # (that range, the CPU's KV cache and the runtime) is the peak.
    assert by_name.ram_bytes > loading
    stretch = by_name.ram_bytes - (by_name.kv_host + by_name.compute_host + by_name.runtime_host)
    assert m.file_bytes * 0.99 < stretch <= m.file_bytes
    assert by_name.ram_required_bytes == ordered.ram_required_bytes  # the extra pages are file cache
    assert by_name.vram_bytes == ordered.vram_bytes


def test_amx_copies_matrices_in_its_packed_layout_and_they_leave_the_mapped_range() -> None:
    """On a Xeon with AMX, llama.cpp copies Q8_0 matrices into AMX's buffer with 4 more bytes a block
    (ggml-cpu/amx/mmq.cpp); the file keeps mapped only the range of the tensors left in it. Checked on
    an H100 host's Xeon to the KiB of llama.cpp's AMX and CPU_Mapped figures (docs/BENCHMARKS.md)."""
    m = llama("8b", "Q8_0")
    eligible = sum(size for _l, _t, size, amx, _p, _s in m.repackable if amx)
    assert eligible == sum(m.layer_bytes) - sum(4 * 4096 for _ in range(2 * 32)) + m.output_bytes
    amx = LoadSettings(n_ctx=4096, cpu_amx=True)
    copies, mapped = cpu_weight_copies(m, amx)
    assert copies == eligible + eligible // 34 * 4
    # The output (third in the file) stays inside the range; the last layer's matrices after its last
    # norm (ffn_gate, ffn_up, ffn_down) are cut off the end.
    last = sum(size for layer, _t, size, _a, _p, _s in m.repackable if layer == 31 and _t != "F32")
    assert m.file_bytes - last - 1024 < mapped < m.file_bytes
    # Without AMX, this CPU repacks no Q8_0: no copies, the whole file mapped.
    assert cpu_weight_copies(m, LoadSettings(n_ctx=4096, cpu_repack_types=frozenset({"Q4_K"}))) == (
        0, m.file_bytes,
    )  # fmt: skip
    with_amx, without = estimate(m, amx), estimate(m, LoadSettings(n_ctx=4096))
    assert with_amx.ram_required_bytes == without.ram_required_bytes  # the copies' file pages reclaim
    assert with_amx.ram_bytes > without.ram_bytes + copies * 0.8


def test_each_file_of_a_split_model_has_its_own_mapped_range() -> None:
    """Offsets are per file: the CPU's range is measured in each part, never across parts."""
    whole = llama("8b", "Q4_K_M")
    header = GGUFHeader(3, {}, (), 0)
    tensors = [
        TensorInfo("token_embd.weight", (16, 16), T.F32, 0),
        TensorInfo("blk.0.attn_q.weight", (16, 16), T.F32, 1024),
        TensorInfo("blk.1.attn_q.weight", (16, 16), T.F32, 0),
        TensorInfo("output.weight", (16, 16), T.F32, 1024),
    ]
    parts = [replace(header, tensors=tuple(tensors[:2])), replace(header, tensors=tuple(tensors[2:]))]
    merged = merge_split_headers(parts)
    assert [t.part for t in merged.tensors] == [0, 0, 1, 1]
    m = replace(whole, n_layer=2, group_ranges=model_info(replace(merged, metadata=METADATA_2)).group_ranges)
    # Layer 0 and token_embd on the CPU (part 0: bytes 0..2048); layer 1 and the output on the GPU.
    assert cpu_mapped_bytes(m, first_gpu_layer=1, output_on_gpu=True) == 2048
    # Everything on the CPU: part 0's 2048 bytes and part 1's 2048, not one range over both.
    assert cpu_mapped_bytes(m, first_gpu_layer=2, output_on_gpu=False) == 4096


METADATA_2 = {
    "general.architecture": "llama", "llama.block_count": 2, "llama.embedding_length": 16,
    "llama.attention.head_count": 1, "llama.vocab_size": 16,
}  # fmt: skip


@pytest.mark.parametrize(
    ("n_embd", "n_vocab", "n_ctx", "recorded"),
    [  # llama.cpp's "CUDA_Host compute buffer size", in bytes (H100 runs, flash attention on)
        (576, 49152, 2048, 4466933),  # SmolLM2-135M
        (3072, 49152, 4096, 16787701),  # synthetic 3B
        (3072, 49152, 16384, 29370613),
        (3072, 49152, 65536, 79702261),
        (4096, 49152, 4096, 20982005),  # synthetic 8B
        (2048, 49152, 8192, 16787701),  # synthetic "mid"
    ],
)
def test_the_gpus_pinned_host_compute_buffer_matches_llama_cpp(
    n_embd: int, n_vocab: int, n_ctx: int, recorded: int
) -> None:
    m = replace(llama("1b", "Q8_0"), n_embd=n_embd, n_vocab=n_vocab)
    predicted = gpu_host_compute_bytes(m, LoadSettings(n_ctx=n_ctx, gpu_backend="cuda", n_gpu_layers=-1))
    compute = predicted - 4 * n_vocab  # the rest is llama.cpp's separate output buffer
    assert abs(compute - recorded) < 16 * 1024


def _check(chosen: Plan, quant: str, where: str, n_ctx: int, kv: str = "f16") -> None:
    assert chosen.fits, chosen.reasons
    assert (chosen.model.quant, chosen.settings.n_ctx, chosen.settings.kv_type) == (quant, n_ctx, kv), (
        chosen.reasons
    )
    gpu_layers = chosen.settings.n_gpu_layers if chosen.settings.gpu_backend else 0
    placement = "gpu" if gpu_layers < 0 else "cpu" if gpu_layers == 0 else "split"
    assert placement == where, chosen.reasons
    assert chosen.memory.ram_required_bytes <= chosen.budget.ram_bytes
    assert chosen.memory.vram_bytes <= chosen.budget.vram_bytes or chosen.settings.unified_memory


# machine, model size, expected quant, where, context, KV type
TABLE = [
    ("rtx4090-box", "8b", "Q8_0", "gpu", 4096, "f16"),
    ("rtx4090-box", "1b", "Q8_0", "gpu", 4096, "f16"),
    # Even Q2_K (26 GiB) exceeds 24 GiB: no quant fits the GPU whole, so keep quality and split.
    ("rtx4090-box", "70b", "Q8_0", "split", 4096, "f16"),
    ("h100-device", "70b", "Q8_0", "cpu", 4096, "f16"),  # recorded with a CPU-only llama.cpp build
    ("laptop-8gb", "1b", "Q8_0", "cpu", 4096, "f16"),
    ("m2-16gb", "8b", "Q3_K_M", "gpu", 4096, "f16"),  # 6.5 GiB available of 16 (unified memory)
    ("m2-16gb", "1b", "Q8_0", "gpu", 4096, "f16"),
    # ARM repacks Q4_K and Q6_K matrices: RSS holds them twice (file pages and the copy), but the
    # file pages are reclaimable, so Q4_K_M fits the budget.
    ("rpi5-8gb", "8b", "Q4_K_M", "cpu", 4096, "f16"),
    ("rpi5-8gb", "1b", "Q8_0", "cpu", 4096, "f16"),
    ("container-2gb", "1b", "Q6_K", "cpu", 4096, "f16"),  # Q8_0 needs 1.57 GiB of a 1.45 GiB budget
]


@pytest.mark.parametrize(("machine", "size", "quant", "where", "n_ctx", "kv"), TABLE)
def test_plan_table(machine: str, size: str, quant: str, where: str, n_ctx: int, kv: str) -> None:
    chosen = plan(all_quants(size), profile(machine))
    _check(chosen, quant, where, n_ctx, kv)
    assert len(chosen.alternatives) == len(QUANTS)
    assert chosen.reasons[0].startswith(quant)


@pytest.mark.parametrize("machine", ["container-2gb", "laptop-8gb"])
def test_too_big(machine: str) -> None:
    chosen = plan(all_quants("8b"), profile(machine))
    assert not chosen.fits
    assert chosen.reasons[0].startswith("does not fit: the smallest option (Q2_K")
    assert all(not option.fits for option in chosen.alternatives)


def test_container_budget_comes_from_its_limit() -> None:
    chosen = plan([llama("1b", "Q8_0")], profile("container-2gb"))
    assert chosen.budget.ram_bytes < 2 * GIB
    assert any("container memory limit 2.00 GiB" in r for r in chosen.reasons)


def test_quality_floor_is_stated() -> None:
    chosen = plan(all_quants("8b"), profile("rpi5-8gb"), PlanRequest(max_ram_bytes=4 * GIB))
    assert chosen.fits and chosen.model.quant == "Q2_K"
    assert any("below the quality floor" in r for r in chosen.reasons)
    above = plan(all_quants("8b"), profile("rpi5-8gb"))
    assert not any("quality floor" in r for r in above.reasons)


def test_kv_is_quantized_before_quality_drops() -> None:
    laptop = profile("laptop-8gb")
    better, worse = llama("1b", "Q8_0"), llama("1b", "Q4_K_M")
    base = plan([better], laptop).settings
    need_q8_kv = estimate(better, replace(base, kv_type="q8_0")).ram_bytes
    chosen = plan([worse, better], laptop, PlanRequest(max_ram_bytes=need_q8_kv))
    assert (chosen.model.quant, chosen.settings.kv_type, chosen.settings.n_ctx) == ("Q8_0", "q8_0", 4096)


def test_explicit_caps_are_respected_without_margin() -> None:
    box = profile("rtx4090-box")
    capped = plan(all_quants("8b"), box, PlanRequest(max_vram_bytes=6 * GIB))
    assert capped.fits
    assert capped.memory.vram_bytes <= 6 * GIB
    assert capped.budget.vram_bytes == 6 * GIB
    assert any("--max-vram" in r for r in capped.reasons)
    ram_capped = plan(all_quants("1b"), profile("rpi5-8gb"), PlanRequest(max_ram_bytes=1 * GIB))
    assert ram_capped.memory.ram_bytes <= 1 * GIB and ram_capped.budget.ram_bytes == 1 * GIB


def test_kv_quantized_then_context_shrinks_only_when_not_requested() -> None:
    laptop, model = profile("laptop-8gb"), llama("1b", "Q8_0")
    base = plan([model], laptop).settings

    def need(n_ctx: int, kv: str) -> int:
        return estimate(model, replace(base, n_ctx=n_ctx, kv_type=kv)).ram_bytes

    # First q8_0 KV at the useful context...
    chosen = plan([model], laptop, PlanRequest(max_ram_bytes=need(4096, "q8_0")))
    assert (chosen.settings.n_ctx, chosen.settings.kv_type) == (4096, "q8_0")
    assert any("KV cache quantized to q8_0" in r for r in chosen.reasons)
    # ...then a shorter context, said so.
    chosen = plan([model], laptop, PlanRequest(max_ram_bytes=need(2048, "f16")))
    assert (chosen.settings.n_ctx, chosen.settings.kv_type) == (2048, "f16")
    assert any("context reduced to 2048" in r for r in chosen.reasons)
    fixed = plan([model], laptop, PlanRequest(max_ram_bytes=need(2048, "f16"), n_ctx=4096))
    assert not fixed.fits and fixed.settings.n_ctx == 4096


def test_context_beyond_training_is_refused() -> None:
    chosen = plan([llama("1b", "Q8_0")], profile("rtx4090-box"), PlanRequest(n_ctx=200_000))
    assert not chosen.fits
    assert "exceeds what Llama 1b was trained for (131072)" in chosen.reasons[0]


def test_requested_gpu_layers_are_kept() -> None:
    chosen = plan([llama("8b", "Q4_K_M")], profile("rtx4090-box"), PlanRequest(n_gpu_layers=10))
    assert chosen.fits and chosen.settings.n_gpu_layers == 10
    cpu = plan([llama("8b", "Q4_K_M")], profile("rtx4090-box"), PlanRequest(n_gpu_layers=0))
    assert cpu.settings.gpu_backend is None and cpu.memory.vram_bytes == 0


def test_plan_json_has_the_documented_fields() -> None:
    data = plan(all_quants("8b"), profile("rtx4090-box")).to_json()
    assert set(data) >= {
        "model", "file", "quant", "n_ctx", "n_batch", "n_ubatch", "n_parallel", "n_gpu_layers", "n_layers",
        "flash_attn", "kv_type", "memory", "budget", "fits", "reasons", "alternatives",
    }  # fmt: skip
    assert set(data["memory"]) == {"weights_bytes", "kv_bytes", "compute_bytes", "ram_bytes", "vram_bytes"}
    assert set(data["budget"]) == {"ram_bytes", "vram_bytes"}
    for alternative in data["alternatives"]:
        assert {"quant", "n_ctx", "n_gpu_layers", "ram_bytes", "vram_bytes", "fits"} <= set(alternative)


def test_parallel_slots_when_memory_allows() -> None:
    roomy = plan_auto_parallel([llama("1b", "Q8_0")], profile("rtx4090-box"))
    assert roomy.settings.n_parallel == 4 and roomy.settings.n_ctx == 4 * 4096
    assert any("4 parallel slots" in r for r in roomy.reasons)
    # On the CPU: room for one more slot's KV (and its logits) only, so 2 slots; no room at all, so 1.
    laptop = profile("laptop-8gb")
    one = plan([llama("1b", "Q8_0")], laptop).memory
    room_for_two = PlanRequest(max_ram_bytes=one.ram_bytes + one.kv_bytes + 8 * MIB)
    assert plan_auto_parallel([llama("1b", "Q8_0")], laptop, room_for_two).settings.n_parallel == 2
    single = plan_auto_parallel([llama("1b", "Q8_0")], laptop, PlanRequest(max_ram_bytes=one.ram_bytes))
    assert single.settings.n_parallel == 1 and single.settings.n_ctx == 4096
    # An explicit context is the total: it is not split further.
    fixed = plan_auto_parallel([llama("1b", "Q8_0")], profile("rtx4090-box"), PlanRequest(n_ctx=8192))
    assert fixed.settings.n_parallel == 1


@pytest.mark.parametrize("kv", ["f16", "q8_0", "q4_0"])
def test_a_configured_kv_type_is_planned_and_counted(kv: str) -> None:
    chosen = plan([llama("1b", "Q8_0")], profile("laptop-8gb"), PlanRequest(kv_type=kv))
    assert chosen.fits and chosen.settings.kv_type == kv
    assert f"KV cache {kv} (configured)" in chosen.reasons
    assert chosen.memory.kv_bytes == sum(kv_layer_bytes(chosen.model, chosen.settings))
    f16 = plan([llama("1b", "Q8_0")], profile("laptop-8gb"))
    assert chosen.memory.kv_bytes == pytest.approx(f16.memory.kv_bytes * KV_TYPE_BYTES[kv] / 2, rel=0.01)


def test_a_configured_kv_type_is_not_quantized_further_and_a_quantized_one_needs_flash_attention() -> None:
    model = llama("1b", "Q8_0")
    f16_kv_bytes = plan([model], profile("laptop-8gb")).memory.kv_bytes
    tight = PlanRequest(
        kv_type="f16", max_ram_bytes=plan([model], profile("laptop-8gb")).memory.ram_bytes - f16_kv_bytes // 4
    )
    chosen = plan([model], profile("laptop-8gb"), tight)
    assert chosen.settings.kv_type == "f16"  # the context shrank instead
    refused = plan([model], profile("laptop-8gb"), PlanRequest(kv_type="q4_0", flash_attn="off"))
    assert not refused.fits and "needs flash attention" in refused.reasons[0]
