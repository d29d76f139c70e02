"""The planner's KV figures for the caches that are not plain K and V rows, against llama.cpp's own
(its dry run, which allocates nothing): Mamba's recurrent state (per sequence, whatever the context),
DeepSeek-2 with MLA (one latent K row per token, no V) and without it (older files: full K and V)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from appliance.cli_plan import make_plan
from appliance.config import Settings
from models.embedded import embedded_model_path

ROOT = Path(__file__).resolve().parents[2]
MIB = 1 << 20


@pytest.fixture(scope="module")
def arch_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    spec = importlib.util.spec_from_file_location(
        "make_arch_models", ROOT / "benchmarks" / "make_arch_models.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_arch_models"] = module
    spec.loader.exec_module(module)
    tokenizer = embedded_model_path()
    assert tokenizer is not None
    out = tmp_path_factory.mktemp("arch")
    paths = {
        "mamba": out / "tiny-mamba.gguf",
        "mla": out / "tiny-ds-mla.gguf",
        "mha": out / "tiny-ds-mha.gguf",
    }
    module.write_mamba(paths["mamba"], tokenizer)
    module.write_deepseek2(paths["mla"], tokenizer, mla=True)
    module.write_deepseek2(paths["mha"], tokenizer, mla=False)
    return paths


# Expected bytes from llama.cpp's formulas (src/llama-hparams.cpp n_embd_r / n_embd_s for Mamba; MLA's
# K row is kv_lora_rank + n_rot and has_v = !is_mla in src/llama-kv-cache.cpp).
MAMBA_PER_SEQ = (
    2 * 4 * ((4 - 1) * 1024 + 16 * 1024)
)  # 2 layers, f32: conv (d_conv-1)*d_inner + ssm d_state*d_inner
MLA = 2 * 8192 * (64 + 32) * 2  # layers * cells * (kv_lora_rank + rope) * f16
MHA = 2 * 8192 * 4 * (64 + 64) * 2  # layers * cells * heads * (key_length + value_length) * f16


@pytest.mark.parametrize(
    ("name", "parallel", "expected"),
    [("mamba", 1, MAMBA_PER_SEQ), ("mamba", 4, 4 * MAMBA_PER_SEQ), ("mla", 1, MLA), ("mla", 4, MLA),
     ("mha", 1, MHA)],
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
