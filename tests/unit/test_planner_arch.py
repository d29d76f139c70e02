"""The planner's KV figures for the caches that are not plain K and V rows, against llama.cpp's own
(its dry run, which allocates nothing): Mamba's recurrent state (per sequence, whatever the context),
DeepSeek-2 with MLA (one latent K row per token, no V) and without it (older files: full K and V), and
hybrids whose layers hold one or the other (Jamba by head_count_kv, Qwen3.5 by attention interval)."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.cli.plan import make_plan
from appliance.config import Settings
from models.embedded import embedded_model_path
from tests.benchmark_scripts import load_script

MIB = 1 << 20


@pytest.fixture(scope="module")
def arch_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    module = load_script("make_arch_models")
    tokenizer = embedded_model_path()
    assert tokenizer is not None
    out = tmp_path_factory.mktemp("arch")
    paths = {
        "mamba": out / "tiny-mamba.gguf",
        "mla": out / "tiny-ds-mla.gguf",
        "mha": out / "tiny-ds-mha.gguf",
        "jamba": out / "tiny-jamba.gguf",
        "qwen35": out / "tiny-qwen35.gguf",
    }
    module.write_mamba(paths["mamba"], tokenizer)
    module.write_deepseek2(paths["mla"], tokenizer, mla=True)
    module.write_deepseek2(paths["mha"], tokenizer, mla=False)
    module.write_jamba(paths["jamba"], tokenizer)
    module.write_qwen35(paths["qwen35"], tokenizer)
    return paths


# Expected bytes from llama.cpp's formulas (src/llama-hparams.cpp n_embd_r / n_embd_s for Mamba; MLA's
# K row is kv_lora_rank + n_rot and has_v = !is_mla in src/llama-kv-cache.cpp).
MAMBA_PER_SEQ = (
    2 * 4 * ((4 - 1) * 1024 + 16 * 1024)
)  # 2 layers, f32: conv (d_conv-1)*d_inner + ssm d_state*d_inner
MLA = 2 * 8192 * (64 + 32) * 2  # layers * cells * (kv_lora_rank + rope) * f16
MHA = 2 * 8192 * 4 * (64 + 64) * 2  # layers * cells * heads * (key_length + value_length) * f16
# Hybrids: K and V rows in the attention layers only, a recurrent state in the others.
ATTENTION_2 = 2 * 8192 * 2 * (64 + 64) * 2  # 2 attention layers, 2 KV heads of 64
JAMBA_STATE = 2 * 4 * ((4 - 1) * 512 + 16 * 512)  # 2 Mamba layers: conv + SSM state
# Qwen3.5: 6 gated-delta-net layers (attention is layers 3 and 7): conv over q, k, v and a d_state x
# d_inner state.
QWEN35_STATE = 6 * 4 * ((4 - 1) * (128 + 2 * 2 * 32) + 32 * 128)


@pytest.mark.parametrize(
    ("name", "parallel", "expected"),
    [("mamba", 1, MAMBA_PER_SEQ), ("mamba", 4, 4 * MAMBA_PER_SEQ), ("mla", 1, MLA), ("mla", 4, MLA),
     ("mha", 1, MHA), ("jamba", 1, ATTENTION_2 + JAMBA_STATE), ("jamba", 4, ATTENTION_2 + 4 * JAMBA_STATE),
     ("qwen35", 1, ATTENTION_2 + QWEN35_STATE), ("qwen35", 4, ATTENTION_2 + 4 * QWEN35_STATE)],
)  # fmt: skip
def test_kv_bytes_match_llama_cpp(
    arch_models: dict[str, Path], name: str, parallel: int, expected: int
) -> None:
    settings = Settings(model={"n_ctx": 8192, "n_parallel": parallel})
    plan, figures = make_plan(settings, str(arch_models[name]))
    assert plan.memory.kv_bytes == expected
    assert figures is not None
    # llama.cpp logs sizes in MiB with two decimals.
    assert abs(figures["kv_bytes"] - expected) <= 0.006 * MIB


def _kinds(arch: str, **keys: object) -> tuple[tuple[bool, ...], tuple[bool, ...]]:
    from appliance.planner.model_info import model_info
    from models.gguf_header import GGUFHeader

    metadata = {"general.architecture": arch, f"{arch}.block_count": 4, f"{arch}.embedding_length": 64,
                **{f"{arch}.{k}": v for k, v in keys.items()}}  # fmt: skip
    m = model_info(GGUFHeader(3, metadata, (), 0))
    return m.recurrent_layers, m.attention_layers


def test_which_layers_of_a_hybrid_keep_state_and_which_keep_kv() -> None:
    """As each architecture's load_arch_hparams and the hybrid memory's filters decide in llama.cpp."""
    T, F = True, False
    # Falcon-H1 runs attention and an SSM side by side in every layer.
    assert _kinds("falcon-h1", **{"attention.head_count": 4}) == ((T, T, T, T), (T, T, T, T))
    # Qwen3-Next and Qwen3.5: a list when the file has one, else attention every interval-th layer.
    assert _kinds("qwen3next", **{"attention.head_count": 4, "full_attention_interval": 2}) == (
        (T, F, T, F), (F, T, F, T),
    )  # fmt: skip
    listed = {"attention.head_count": 4, "attention.recurrent_layers": [True, True, False, False]}
    assert _kinds("qwen35", **listed) == ((T, T, F, F), (F, F, T, T))
    # Nemotron-H: Mamba layers have neither heads nor an FFN; FFN layers keep nothing.
    nemotron = {"attention.head_count": 4, "attention.head_count_kv": [0, 2, 0, 0],
                "feed_forward_length": [0, 0, 128, 0]}  # fmt: skip
    assert _kinds("nemotron_h", **nemotron) == ((T, F, F, T), (F, T, F, F))
