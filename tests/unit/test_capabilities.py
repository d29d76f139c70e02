"""Declared capabilities from real GGUF headers: the embedded model's own, and copies of its metadata
rewritten with the gguf package's writer (another template, FIM token ids, an encoder architecture).
The copies keep the header and drop the weights: capabilities are read from the header alone, so a
copy stays a few kilobytes (and gguf-new-metadata's full reader, 13 s on this model under load, is not
needed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gguf
import pytest

from appliance.backend import Capabilities
from appliance.capabilities import VISION_UNSUPPORTED, declared_capabilities, serving_capabilities
from models.embedded import embedded_model_path
from models.gguf_header import ArrayInfo, GGUFError, read_gguf_file

TEMPLATES = Path(__file__).parent.parent / "fixtures" / "templates"


def header_copy(dest: Path, *, arch: str = "llama", remove: tuple[str, ...] = (), **new: Any) -> Path:
    """The embedded model's metadata with ``new`` keys set (dots written as double underscores) and
    ``remove`` dropped, written by the gguf package's writer without the weights (and without the
    tokenizer's long arrays: capabilities never read them)."""
    source = embedded_model_path()
    assert source is not None, "the [default-model] extra is needed"
    kept = read_gguf_file(source).metadata.items()
    metadata = {
        k: v for k, v in kept if not isinstance(v, ArrayInfo) and k not in (*remove, "general.architecture")
    }
    metadata.update({key.replace("__", "."): value for key, value in new.items()})
    writer = gguf.GGUFWriter(dest, arch=arch)
    for key, value in metadata.items():
        sub_type = _value_type(value[0]) if isinstance(value, list) else None
        writer.add_key_value(key, value, _value_type(value), sub_type=sub_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    with dest.open("ab") as f:  # the data section starts at the next alignment, as in a real file
        f.truncate(-(-f.tell() // 32) * 32)
    return dest


def _value_type(value: Any) -> gguf.GGUFValueType:
    if isinstance(value, list):
        return gguf.GGUFValueType.ARRAY
    return gguf.GGUFValueType.get_type(value)


def test_the_embedded_model_chats_with_generic_tools_and_embeds() -> None:
    path = embedded_model_path()
    assert path is not None
    caps = declared_capabilities(path)
    assert caps.names() == ["completion", "tools", "embedding"]
    assert (caps.chat, caps.template, caps.tool_format) == (True, "gguf", "generic")
    assert not caps.thinking and not caps.insert and not caps.embedding_only and caps.vision is None
    assert caps.short() == "chat tools:generic"


def test_a_qwen3_template_with_fim_tokens_is_hermes_thinking_and_insert(tmp_path: Path) -> None:
    qwen3 = (TEMPLATES / "Qwen-Qwen3-0.6B.jinja").read_text()
    path = header_copy(
        tmp_path / "qwen3-like.gguf",
        tokenizer__chat_template=qwen3,
        tokenizer__ggml__fim_pre_token_id=1,
        tokenizer__ggml__fim_suf_token_id=2,
        tokenizer__ggml__fim_mid_token_id=3,
    )
    caps = declared_capabilities(path)
    assert caps.names() == ["completion", "tools", "insert", "embedding", "thinking"]
    assert caps.tool_format == "hermes" and caps.template == "gguf"
    assert caps.short() == "chat tools:hermes think insert"


def test_two_of_three_fim_tokens_is_no_insert(tmp_path: Path) -> None:
    path = header_copy(tmp_path / "half-fim.gguf", tokenizer__ggml__fim_pre_token_id=1,
                       tokenizer__ggml__fim_suf_token_id=2)  # fmt: skip
    assert not declared_capabilities(path).insert


def test_a_file_without_a_template_chats_through_the_chatml_fallback(tmp_path: Path) -> None:
    path = header_copy(tmp_path / "bare.gguf", remove=("tokenizer.chat_template",))
    caps = declared_capabilities(path)
    assert (caps.chat, caps.template, caps.tool_format, caps.thinking) == (True, "chatml", "generic", False)


def test_a_configured_template_file_replaces_the_models_own(tmp_path: Path) -> None:
    path = embedded_model_path()
    assert path is not None
    caps = declared_capabilities(path, TEMPLATES / "Qwen-QwQ-32B.jinja")
    assert caps.template == "file" and caps.tool_format == "hermes" and caps.thinking


@pytest.mark.parametrize(("arch", "pooling"), [("bert", None), ("nomic-bert", 1), ("qwen3", 3)])
def test_encoders_and_pooled_models_only_embed(tmp_path: Path, arch: str, pooling: int | None) -> None:
    extra = {f"{arch}__pooling_type": pooling} if pooling is not None else {}
    path = header_copy(tmp_path / f"{arch}.gguf", arch=arch, **extra)
    caps = declared_capabilities(path)
    assert caps.names() == ["embedding"] and caps.embedding_only
    assert not caps.chat and caps.tool_format is None and caps.template is None
    assert caps.pooling == {None: None, 1: "mean", 3: "last"}[pooling]
    assert caps.short() == "embed only"


def test_rank_pooling_makes_a_reranker_that_neither_chats_nor_embeds(tmp_path: Path) -> None:
    path = header_copy(tmp_path / "reranker.gguf", arch="qwen3", qwen3__pooling_type=4)
    caps = declared_capabilities(path)
    assert caps.rerank and caps.pooling == "rank" and caps.names() == [] and caps.short() == "rerank only"
    assert caps.to_json()["rerank"] is True
    serving = serving_capabilities(path, Capabilities(infill=True))
    assert not (serving.chat or serving.completions or serving.embeddings or serving.infill)


def test_a_projector_beside_the_model_is_found_but_not_claimed(tmp_path: Path) -> None:
    path = header_copy(tmp_path / "model.gguf")
    assert declared_capabilities(path).vision is None
    header_copy(tmp_path / "mmproj-model-f16.gguf", arch="clip")
    # The answer is cached per file as it is: touching the model makes it look again.
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    caps = declared_capabilities(path)
    assert caps.vision == VISION_UNSUPPORTED and "vision" not in caps.names()
    assert caps.short() == "chat tools:generic vision?"


def test_a_changed_file_is_read_again(tmp_path: Path) -> None:
    path = header_copy(tmp_path / "m.gguf")
    assert not declared_capabilities(path).thinking
    header_copy(path.with_name("m2.gguf"), tokenizer__chat_template="{{ '<think>' }}").replace(path)
    assert declared_capabilities(path).thinking


def test_a_broken_file_is_a_gguf_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\0\0\0")
    with pytest.raises(GGUFError):
        declared_capabilities(bad)
    with pytest.raises(GGUFError):
        declared_capabilities(tmp_path / "missing.gguf")


def test_the_router_counts_on_what_the_file_declares(tmp_path: Path) -> None:
    base = Capabilities()
    chat_model = serving_capabilities(embedded_model_path(), base)
    assert chat_model.chat and chat_model.tools and not chat_model.reasoning and not chat_model.vision
    thinker = serving_capabilities(header_copy(tmp_path / "t.gguf", tokenizer__chat_template="<think>"), base)
    assert thinker.reasoning
    encoder = serving_capabilities(header_copy(tmp_path / "bert.gguf", arch="bert"), base)
    assert not encoder.chat and not encoder.completions and not encoder.tools and encoder.embeddings
    assert serving_capabilities(tmp_path / "missing.gguf", base) == base  # loading it will say why
