"""A tiny Qwen3-reranker-shaped GGUF: the qwen3 architecture with rank pooling (``qwen3.pooling_type``
4), a two-label classification head (``cls.output.weight``, "yes" and "no", as llama.cpp's converter
writes Qwen3-Reranker's), the converter's ``rerank`` prompt, random weights and SmolLM2's real tokenizer.
llama.cpp loads it as a reranker: its scores are a softmax over the two labels, random but fixed by the
weights."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from tests.benchmark_scripts import load_script

# llama.cpp's converter writes this for Qwen3-Reranker (conversion/qwen.py).
RERANK_TEMPLATE = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n<Instruct>: Given a web search query, retrieve relevant passages that answer the "
    "query\n<Query>: {query}\n<Document>: {document}<|im_end|>\n"
    "<|im_start|>assistant\n<think>\n\n</think>\n\n"
)
N_EMBD, N_LAYER, N_HEAD, N_HEAD_KV, N_FF = 64, 2, 4, 2, 128


def write_reranker(path: Path, tokenizer_source: Path, seed: int = 0) -> Path:
    """Write the reranker to ``path`` (F16 weights, F32 norms: a few MB) and return ``path``."""
    make_models = load_script("make_models")
    head_dim = N_EMBD // N_HEAD
    writer = gguf.GGUFWriter(path, arch="qwen3")
    writer.add_name("synthetic-reranker")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    n_vocab = make_models.copy_tokenizer(tokenizer_source, writer)
    writer.add_chat_template([{"name": "rerank", "template": RERANK_TEMPLATE}])
    writer.add_vocab_size(n_vocab)
    writer.add_context_length(8192)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_rope_freq_base(1000000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_pooling_type(gguf.PoolingType.RANK)
    writer.add_classifier_output_labels(["yes", "no"])
    q_dim, kv_dim = N_HEAD * head_dim, N_HEAD_KV * head_dim
    shapes: list[tuple[str, tuple[int, ...]]] = [
        ("token_embd.weight", (n_vocab, N_EMBD)),
        ("output_norm.weight", (N_EMBD,)),
        ("cls.output.weight", (2, N_EMBD)),
    ]
    for i in range(N_LAYER):
        shapes += [
            (f"blk.{i}.attn_norm.weight", (N_EMBD,)),
            (f"blk.{i}.attn_q.weight", (q_dim, N_EMBD)),
            (f"blk.{i}.attn_k.weight", (kv_dim, N_EMBD)),
            (f"blk.{i}.attn_v.weight", (kv_dim, N_EMBD)),
            (f"blk.{i}.attn_output.weight", (N_EMBD, q_dim)),
            (f"blk.{i}.attn_q_norm.weight", (head_dim,)),
            (f"blk.{i}.attn_k_norm.weight", (head_dim,)),
            (f"blk.{i}.ffn_norm.weight", (N_EMBD,)),
            (f"blk.{i}.ffn_gate.weight", (N_FF, N_EMBD)),
            (f"blk.{i}.ffn_down.weight", (N_EMBD, N_FF)),
            (f"blk.{i}.ffn_up.weight", (N_FF, N_EMBD)),
        ]
    rng = np.random.default_rng(seed)
    for name, dims in shapes:
        tensor = make_models.random_tensor(rng, dims)
        if name == "cls.output.weight":
            tensor = tensor * 5  # small weights would score every document about 0.5
        writer.add_tensor(name, tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
