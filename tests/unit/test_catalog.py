"""models.catalog: which GGUF files in the store are servable, under which names; and durations."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.units import parse_duration
from models.catalog import LocalModel, local_models, store_models


def _gguf(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(16))
    return path


def test_store_names_models_from_their_files_and_tells_quantizations_apart(tmp_path: Path) -> None:
    _gguf(tmp_path / "Llama-3.2-1B-Instruct-Q4_K_M.gguf")
    _gguf(tmp_path / "Llama-3.2-1B-Instruct-Q8_0.gguf")
    _gguf(tmp_path / "phi-2.gguf")
    _gguf(tmp_path / "qwen" / "Qwen2.5-7B-Instruct-Q4_K_M-00001-of-00002.gguf")
    _gguf(tmp_path / "qwen" / "Qwen2.5-7B-Instruct-Q4_K_M-00002-of-00002.gguf")  # found by llama.cpp
    (tmp_path / "notes.gguf").write_text("not a model")
    _gguf(tmp_path / "a" / "b" / "too-deep.gguf")
    found = {m.id: m.path.relative_to(tmp_path).as_posix() for m in store_models(tmp_path)}
    assert found == {
        "llama-3.2-1b-instruct:q4_k_m": "Llama-3.2-1B-Instruct-Q4_K_M.gguf",
        "llama-3.2-1b-instruct:q8_0": "Llama-3.2-1B-Instruct-Q8_0.gguf",
        "phi-2": "phi-2.gguf",
        "qwen2.5-7b-instruct": "qwen/Qwen2.5-7B-Instruct-Q4_K_M-00001-of-00002.gguf",
    }


def test_a_missing_store_is_empty(tmp_path: Path) -> None:
    assert store_models(tmp_path / "nothing-here") == []


def test_the_served_model_comes_first_and_each_file_and_name_once(tmp_path: Path) -> None:
    model = _gguf(tmp_path / "store" / "phi-2.gguf")
    served = LocalModel("my-phi", model, "argument")
    found = local_models(tmp_path / "store", served=served)
    assert found[0] == served
    assert [m for m in found if m.path == model] == [served]  # the same file is not listed again


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h", 3600), ("90", 90), ("0", 0), ("250ms", 0.25), ("-1", None),
     (-1, None), (12, 12), ("1h30m", 5400), ("-5m", None), ("2m0.5s", 120.5)],
)  # fmt: skip
def test_durations(text: str | int, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "5 minutes", "", "1x", "1h30", "--1"])
def test_bad_durations_say_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="examples"):
        parse_duration(text)
