"""The header-only GGUF reader, checked against the gguf package's full reader on real files."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from models.embedded import embedded_model_path
from models.gguf_header import ArrayInfo, GGUFError, read_gguf_file


@pytest.fixture(scope="module")
def model_path() -> Path:
    path = embedded_model_path()
    assert path is not None
    return path


def test_matches_the_gguf_package(model_path: Path) -> None:
    header = read_gguf_file(model_path)
    reference = gguf.GGUFReader(model_path)
    assert header.data_offset == reference.data_offset
    assert [t.name for t in header.tensors] == [t.name for t in reference.tensors]
    for ours, theirs in zip(header.tensors, reference.tensors, strict=True):
        assert ours.shape == tuple(int(d) for d in theirs.shape)
        assert ours.ggml_type == int(theirs.tensor_type)
        assert ours.n_bytes == theirs.n_bytes
        assert header.data_offset + ours.offset == theirs.data_offset
    for key, field in reference.fields.items():
        if key.startswith("GGUF."):
            continue
        value = header.metadata[key]
        if isinstance(value, ArrayInfo):
            assert value.length == len(field.data)
        elif isinstance(value, str):
            assert value == field.contents()
        elif isinstance(value, float):
            assert np.isclose(value, field.contents())
        else:
            assert value == field.contents(), key
    assert header.architecture == "llama"
    assert header.arch_value("block_count") == 30
    assert header.file_bytes == model_path.stat().st_size


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "truncated"),
        (b"GGML" + b"\0" * 20, "not a GGUF file"),
        (b"GGUF\x07\0\0\0" + b"\0" * 16, "unsupported GGUF version 7"),
        (b"GGUF\x03\0\0\0", "truncated"),
        (b"GGUF\x03\0\0\0" + (1).to_bytes(8, "little") + (0).to_bytes(8, "little"), "truncated"),
    ],
)
def test_bad_files(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(GGUFError, match=message):
        read_gguf_file(_write(tmp_path, "bad.gguf", data))


def test_truncated_weights_are_detected(tmp_path: Path, model_path: Path) -> None:
    data = model_path.read_bytes()
    cut = _write(tmp_path, "cut.gguf", data[: len(data) // 2])
    with pytest.raises(GGUFError, match="truncated GGUF file"):
        read_gguf_file(cut)
    header_only = _write(tmp_path, "head.gguf", data[:1000])
    with pytest.raises(GGUFError, match="truncated"):
        read_gguf_file(header_only)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GGUFError, match="cannot read"):
        read_gguf_file(tmp_path / "absent.gguf")


def test_written_file_round_trip(tmp_path: Path) -> None:
    """A file written by the gguf package, with every value type and a per-layer array."""
    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(2)
    writer.add_uint8("t.u8", 7)
    writer.add_int16("t.i16", -3)
    writer.add_float64("t.f64", 0.25)
    writer.add_bool("t.bool", True)
    writer.add_array("llama.attention.head_count_kv", [4, 0])
    writer.add_array("t.big", list(range(5000)))
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((8, 32), dtype=np.float32))
    writer.add_tensor("token_embd.weight", np.zeros((16, 32), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    header = read_gguf_file(path)
    assert header.metadata["t.u8"] == 7 and header.metadata["t.i16"] == -3
    assert header.metadata["t.f64"] == 0.25 and header.metadata["t.bool"] is True
    assert header.metadata["llama.attention.head_count_kv"] == [4, 0]
    big = header.metadata["t.big"]
    assert isinstance(big, ArrayInfo) and big.length == 5000
    shapes = {t.name: (t.shape, t.type_name, t.n_bytes) for t in header.tensors}
    assert shapes["blk.0.attn_q.weight"] == ((32, 8), "F32", 8 * 32 * 4)
    assert shapes["token_embd.weight"] == ((32, 16), "F16", 16 * 32 * 2)
