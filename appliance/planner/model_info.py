"""What the planner needs to know about a model, read from its GGUF header alone."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.gguf_header import (
    ArrayInfo,
    GGUFError,
    GGUFHeader,
    merge_split_headers,
    read_gguf_file,
    split_parts,
)

# llama_ftype (llama.h) -> the quantization's usual name.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
    36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0", 41: "Q2_0",
}  # fmt: skip

# Architectures whose sliding-window layers follow a fixed pattern unless the file says otherwise
# (llama.cpp's load_swa_pattern calls): pattern n -> layer il is SWA when il % n < n - 1
# (or, "dense first", when il % n != 0).
SWA_PATTERNS: dict[str, tuple[int, bool]] = {
    "gemma2": (2, False), "gemma3": (6, False), "gemma3n": (5, False), "gemma-embedding": (6, False),
    "cohere2": (4, False), "cohere2moe": (4, True), "llama4": (4, False), "gpt-oss": (2, False),
    "exaone4": (4, False), "exaone-moe": (4, False), "olmo2": (4, False), "plamo3": (8, False),
    "afmoe": (4, False), "smallthinker": (4, True), "modern-bert": (3, True),
}  # fmt: skip

RECURRENT_ARCHS = {"mamba", "mamba2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7"}
# Hybrids whose recurrent layers are listed (attention.recurrent_layers) or every full_attention_interval-th
# layer is attention (llama.cpp's load_arch_hparams of each).
INTERVAL_HYBRIDS = {"qwen3next", "qwen35", "qwen35moe", "qwen4exp", "minimax-01"}

# Weight types with AMX kernels, and the row-length multiple each needs (ggml-cpu/amx).
AMX_ROW_ALIGN = {"Q4_0": 32, "Q4_1": 32, "Q8_0": 32, "Q4_K": 256, "Q5_K": 256, "Q6_K": 256, "IQ4_XS": 256,
                 "F16": 16}  # fmt: skip

_LAYER_TENSOR = re.compile(r"^blk\.(\d+)\.")
INPUT_GROUP, OUTPUT_GROUP = -1, -2  # group_ranges' groups besides the layers
_INPUT_TENSORS = ("token_embd.", "token_embd_norm.", "position_embd.", "token_types.")


class ModelInfoError(GGUFError):
    """The header lacks something the planner needs (an unknown or incomplete architecture)."""


@dataclass(frozen=True)
class ModelInfo:
    """Shapes and sizes of a GGUF model: enough to estimate its memory on any device."""

    path: str
    name: str
    architecture: str
    quant: str
    file_bytes: int
    n_params: int
    n_layer: int
    n_embd: int
    n_ff: int
    n_vocab: int
    n_ctx_train: int
    n_head: tuple[int, ...]  # per layer
    n_head_kv: tuple[int, ...]  # per layer; 0 = no attention (a recurrent layer of a hybrid model)
    head_dim_k: int
    head_dim_v: int
    n_swa: int
    swa_layers: tuple[bool, ...]
    recurrent_state_bytes_per_seq: int  # conv + SSM/WKV state of all recurrent layers (f32)
    is_mla: bool
    layer_bytes: tuple[int, ...]  # weights of each repeating block
    token_embd_bytes: int
    output_bytes: int  # the output projection (0 when tied to the embeddings)
    other_bytes: int  # norms and the rest outside the blocks
    tensor_types: tuple[tuple[str, int], ...]  # ggml type name -> bytes, largest first
    # Matrices the CPU backend may copy into its own buffer: (layer or -1 for the output, type, bytes,
    # whether the shape suits AMX's tiles, file part, offset).
    repackable: tuple[tuple[int, str, int, bool, int, int], ...] = ()
    # Which layers keep a recurrent state and which a KV cache (Falcon-H1's layers: both). Empty: the
    # usual split, n_head_kv == 0 meaning recurrent (for recurrent architectures: every layer).
    recurrent_layers: tuple[bool, ...] = ()
    attention_layers: tuple[bool, ...] = ()
    # Where each group of tensors lies in the files: (file part, group, first byte, end), the group being
    # a repeating layer's index, INPUT_GROUP (token embeddings) or OUTPUT_GROUP (the rest). llama.cpp maps
    # one range per file for the CPU's tensors, so their layout decides what stays resident.
    group_ranges: tuple[tuple[int, int, int, int], ...] = ()
    # The tokenizer, as far as a draft model must share it (llama.cpp's common_speculative_are_compatible):
    # its kind (tokenizer.ggml.model: gpt2, llama, ...), its pre-tokenizer, and the BOS and EOS ids
    # (None where the file names none).
    tokenizer: str = ""
    tokenizer_pre: str = ""
    bos_token: int | None = None
    eos_token: int | None = None

    @property
    def weights_bytes(self) -> int:
        return sum(self.layer_bytes) + self.token_embd_bytes + self.output_bytes + self.other_bytes

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.weights_bytes / max(self.n_params, 1)

    @property
    def has_attention(self) -> bool:
        return any(self.n_head_kv)


def _per_layer(value: Any, n_layer: int, default: int) -> tuple[int, ...]:
    if isinstance(value, list):
        if len(value) != n_layer:
            raise ModelInfoError(f"a per-layer value has {len(value)} entries for {n_layer} layers")
        return tuple(int(v) for v in value)
    if value is None:
        return (default,) * n_layer
    return (int(value),) * n_layer


def _swa_layers(header: GGUFHeader, arch: str, n_layer: int, n_swa: int) -> tuple[bool, ...]:
    if n_swa <= 0:
        return (False,) * n_layer
    pattern = header.arch_value("attention.sliding_window_pattern")
    if isinstance(pattern, list):
        return tuple(bool(v) for v in pattern[:n_layer])
    n_pattern, dense_first = SWA_PATTERNS.get(arch, (0, False))
    if isinstance(pattern, int):
        n_pattern = pattern
    if n_pattern == 0:
        return (True,) * n_layer
    if dense_first:
        return tuple(il % n_pattern != 0 for il in range(n_layer))
    return tuple(il % n_pattern < n_pattern - 1 for il in range(n_layer))


def _layer_kinds(
    header: GGUFHeader, arch: str, n_layer: int, kv: tuple[int, ...], ff: tuple[int, ...]
) -> tuple[tuple[bool, ...], tuple[bool, ...]]:
    """Per layer: keeps a recurrent state, keeps a KV cache; as llama.cpp decides (is_recr_impl in each
    architecture's load_arch_hparams, and the hybrid memory's layer filters in llama-model.cpp)."""
    if arch in RECURRENT_ARCHS:
        return (True,) * n_layer, (False,) * n_layer
    if arch == "falcon-h1":  # attention and an SSM side by side in every layer
        return (True,) * n_layer, (True,) * n_layer
    if arch in INTERVAL_HYBRIDS:
        listed = header.arch_value("attention.recurrent_layers")
        if isinstance(listed, list):
            recurrent = tuple(bool(v) for v in listed[:n_layer])
        else:
            interval = int(header.arch_value("full_attention_interval", 4) or 4)
            recurrent = tuple((il + 1) % interval != 0 for il in range(n_layer))
        return recurrent, tuple(not r for r in recurrent)
    if arch in ("nemotron_h", "nemotron_h_moe"):  # layers with an FFN have neither
        recurrent = tuple(h == 0 and f == 0 for h, f in zip(kv, ff, strict=True))
        return recurrent, tuple(h != 0 and f == 0 for h, f in zip(kv, ff, strict=True))
    return tuple(h == 0 for h in kv), tuple(h != 0 for h in kv)


def _recurrent_state_bytes(header: GGUFHeader, arch: str, n_embd: int, n_recurrent: int) -> int:
    """f32 state per sequence of the recurrent layers: llama.cpp's r and s rows (llama-hparams.cpp,
    n_embd_r and n_embd_s), with its defaults (0) for keys a file lacks."""
    if n_recurrent == 0:
        return 0
    head_size = int(header.arch_value("wkv.head_size", 0) or 0)
    l_cache = int(header.arch_value("shortconv.l_cache", 0) or 0)
    if head_size:  # RWKV: token shifts + wkv state
        per_layer = int(header.arch_value("token_shift_count", 2)) * n_embd + n_embd * head_size
    elif l_cache:  # LFM2's short convolutions
        per_layer = n_embd * (l_cache - 1)
    else:  # Mamba-style conv + SSM state (Mamba 1/2, Jamba, Falcon-H1, gated delta nets)
        d_conv = int(header.arch_value("ssm.conv_kernel", 0) or 0)
        d_inner = int(header.arch_value("ssm.inner_size", 0) or 0)
        d_state = int(header.arch_value("ssm.state_size", 0) or 0)
        n_group = int(header.arch_value("ssm.group_count", 0) or 0)
        per_layer = max(d_conv - 1, 0) * (d_inner + 2 * n_group * d_state) + d_state * d_inner
    return 4 * per_layer * n_recurrent


def _quant_label(header: GGUFHeader, type_bytes: Counter[str]) -> str:
    file_type = header.metadata.get("general.file_type")
    if isinstance(file_type, int) and file_type in FILE_TYPES:
        return FILE_TYPES[file_type]
    return type_bytes.most_common(1)[0][0] if type_bytes else "unknown"


def model_info(header: GGUFHeader, path: Path | str = "", file_bytes: int | None = None) -> ModelInfo:
    """Summarise ``header`` for the planner. Raises ModelInfoError when a needed key is missing."""
    arch = header.architecture

    def need(key: str) -> int:
        value = header.arch_value(key)
        if value is None:
            raise ModelInfoError(f"the {arch} model lacks {arch}.{key}; this architecture is not supported")
        return int(value)

    n_layer = need("block_count")
    n_embd = need("embedding_length")
    n_head = _per_layer(header.arch_value("attention.head_count"), n_layer, 0)
    n_head_kv = _per_layer(header.arch_value("attention.head_count_kv"), n_layer, 0)
    if header.arch_value("attention.head_count_kv") is None:
        n_head_kv = n_head
    first_heads = next((h for h in n_head if h), 1)
    head_dim_k = int(header.arch_value("attention.key_length", n_embd // first_heads))
    head_dim_v = int(header.arch_value("attention.value_length", n_embd // first_heads))
    kv_lora_rank = header.arch_value("attention.kv_lora_rank")
    # llama_hparams::is_mla(): the MLA head sizes are given. Older DeepSeek-2 files (one wkv_b tensor, no
    # key_length_mla) run as ordinary multi-head attention and cache full K and V rows.
    is_mla = kv_lora_rank is not None and bool(header.arch_value("attention.key_length_mla"))
    is_mla = is_mla and bool(header.arch_value("attention.value_length_mla"))
    if is_mla:
        # llama.cpp caches the compressed latent plus the rope part, as one K row, for one "head", and
        # no V (llama-kv-cache.cpp: has_v = !is_mla).
        default_k = int(kv_lora_rank) + int(header.arch_value("rope.dimension_count", 64))
        head_dim_k = int(header.arch_value("attention.key_length", default_k))
        head_dim_v = 0
        n_head_kv = tuple(1 if h else 0 for h in n_head_kv)
    ff = header.arch_value("feed_forward_length", 4 * n_embd)
    n_ff = max(ff) if isinstance(ff, list) else int(ff)
    recurrent, attention = _layer_kinds(header, arch, n_layer, n_head_kv, _per_layer(ff, n_layer, 0))
    vocab = header.arch_value("vocab_size")
    if vocab is None:
        tokens = header.metadata.get("tokenizer.ggml.tokens")
        vocab = len(tokens) if isinstance(tokens, (list, ArrayInfo)) else 0
    n_swa = int(header.arch_value("attention.sliding_window", 0) or 0)

    layer_bytes = [0] * n_layer
    token_embd = output = other = n_params = 0
    type_bytes: Counter[str] = Counter()
    repackable: list[tuple[int, str, int, bool, int, int]] = []
    ranges: dict[tuple[int, int], tuple[int, int]] = {}
    for tensor in header.tensors:
        size = tensor.n_bytes
        n_params += tensor.n_elements
        type_bytes[tensor.type_name] += size
        match = _LAYER_TENSOR.match(tensor.name)
        layer = int(match.group(1)) if match else -1
        group = layer if match and layer < n_layer else OUTPUT_GROUP
        if tensor.name.startswith(_INPUT_TENSORS):
            group = INPUT_GROUP
        start, end = ranges.get((tensor.part, group), (tensor.offset, tensor.offset + size))
        ranges[(tensor.part, group)] = (min(start, tensor.offset), max(end, tensor.offset + size))
        # Repacking wants rows in groups of 8 (ggml-cpu/repack.cpp); token_embd is only read by row.
        if len(tensor.shape) == 2 and tensor.shape[1] % 8 == 0 and tensor.name != "token_embd.weight":
            # AMX (ggml-cpu/amx/amx.cpp, supports_op): rows in tiles of 32, row length a multiple of
            # the type's block.
            block = AMX_ROW_ALIGN.get(tensor.type_name)
            amx = block is not None and tensor.shape[1] % 32 == 0 and tensor.shape[0] % block == 0
            where = (tensor.part, tensor.offset)
            repackable.append((layer if layer < n_layer else -1, tensor.type_name, size, amx, *where))
        if match and layer < n_layer:
            layer_bytes[layer] += size
        elif tensor.name == "token_embd.weight":
            token_embd += size
        elif tensor.name == "output.weight":
            output += size
        else:
            other += size
    return ModelInfo(
        path=str(path),
        name=str(header.metadata.get("general.name") or Path(str(path)).stem),
        architecture=arch,
        quant=_quant_label(header, type_bytes),
        file_bytes=file_bytes if file_bytes is not None else header.file_bytes,
        n_params=n_params,
        n_layer=n_layer,
        n_embd=n_embd,
        n_ff=n_ff,
        n_vocab=int(vocab),
        n_ctx_train=int(header.arch_value("context_length", 2048)),
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim_k=head_dim_k,
        head_dim_v=head_dim_v,
        n_swa=n_swa,
        swa_layers=_swa_layers(header, arch, n_layer, n_swa),
        recurrent_state_bytes_per_seq=_recurrent_state_bytes(header, arch, n_embd, sum(recurrent)),
        recurrent_layers=recurrent,
        attention_layers=attention,
        is_mla=is_mla,
        layer_bytes=tuple(layer_bytes),
        token_embd_bytes=token_embd,
        output_bytes=output,
        other_bytes=other,
        tensor_types=tuple(type_bytes.most_common()),
        repackable=tuple(repackable),
        group_ranges=tuple((part, group, a, b) for (part, group), (a, b) in sorted(ranges.items())),
        tokenizer=str(header.metadata.get("tokenizer.ggml.model", "")),
        tokenizer_pre=str(header.metadata.get("tokenizer.ggml.pre", "")),
        bos_token=_token_id(header.metadata.get("tokenizer.ggml.bos_token_id")),
        eos_token=_token_id(header.metadata.get("tokenizer.ggml.eos_token_id")),
    )


def _token_id(value: Any) -> int | None:
    return int(value) if isinstance(value, int) else None


def read_model_info(path: Path) -> ModelInfo:
    """Read a local GGUF file's header and summarise it (every part's, for a split model's first part)."""
    parts = split_parts(path)
    headers = [read_gguf_file(p) for p in parts]
    header = merge_split_headers(headers) if len(headers) > 1 else headers[0]
    return model_info(header, path, sum(p.stat().st_size for p in parts))
