"""Real GGUF files for the draft-model tests, made from the embedded default model (SmolLM2-135M, Q4_1):
a larger quantization of it to serve (its draft then guesses almost every token right), and two copies
whose vocabulary another model's would be: another tokenizer kind in the header, or one token's text
changed (only the loaded vocabularies tell)."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf

from models.embedded import embedded_model_path
from tests.benchmark_scripts import load_script


def embedded() -> Path:
    path = embedded_model_path()
    assert path is not None, "the [default-model] extra is needed"
    return path


def requantized(dest: Path, quant: str = "Q8_0") -> Path:
    """The embedded model requantized by llama.cpp's quantizer (llama-quantize --allow-requantize)."""
    path = dest / f"SmolLM2-135M-Instruct.{quant}.gguf"
    if not path.exists():
        load_script("make_models").quantize(embedded(), path, quant, 2, requantize=True)
    return path


def _patched(source: Path, dest: Path, old: bytes, new: bytes) -> Path:
    data = source.read_bytes()
    assert len(old) == len(new) and data.count(old) == 1, (old, data.count(old))
    dest.write_bytes(data.replace(old, new))
    return dest


def other_tokenizer(dest: Path) -> Path:
    """The embedded model with its tokenizer's kind (tokenizer.ggml.model) "gpt2" written "bert", as a
    model of another family would have: the header tells it apart."""
    key = b"tokenizer.ggml.model"
    value = struct.pack("<Q", len(key)) + key + struct.pack("<IQ", 8, 4)
    return _patched(embedded(), dest / "other-tokenizer.gguf", value + b"gpt2", value + b"bert")


def renamed_token(dest: Path, token: int = 1000) -> tuple[Path, str]:
    """The embedded model with the text of ``token`` changed (same length): the header is the same,
    the vocabularies differ. Returns the file and the token's original text."""
    source = embedded()
    field = gguf.GGUFReader(source).fields["tokenizer.ggml.tokens"]
    text = bytes(field.parts[field.data[token]])
    changed = text[:-1] + (b"Q" if text[-1:] != b"Q" else b"Z")
    size = struct.pack("<Q", len(text))
    return _patched(source, dest / "renamed-token.gguf", size + text, size + changed), text.decode()
