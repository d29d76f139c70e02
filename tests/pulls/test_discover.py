"""Models other tools downloaded: a Hugging Face cache written by huggingface_hub itself (from the fake
Hub), an Ollama store laid out as Ollama lays it out (manifests/<registry>/<ns>/<name>/<tag>, blobs
named sha256-<hex>), and an LM Studio folder (<publisher>/<repo>/<file>.gguf)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from huggingface_hub import hf_hub_download

from models.discover import discover
from tests import web
from tests.pulls.conftest import Files, run_cli
from tests.pulls.fakehub import COMMIT, FakeHub
from tests.server.conftest import start_daemon, stop_daemon


def _other_tools(home: Path, hub: FakeHub, files: Files) -> None:
    hf_hub_download("acme/Tiny-GGUF", "Tiny-Q4_K_M.gguf", cache_dir=home / "hf" / "hub", endpoint=hub.url)
    ollama = home / "ollama"
    manifest = ollama / "manifests" / "registry.ollama.ai" / "library" / "smollm2" / "135m"
    manifest.parent.mkdir(parents=True)
    manifest.write_bytes(hub.ollama["library/smollm2:135m"].manifest)
    (ollama / "blobs").mkdir()
    shutil.copyfile(files.smollm2, ollama / "blobs" / f"sha256-{hub.sha(files.smollm2)}")
    lmstudio = home / ".lmstudio" / "models" / "acme" / "Tiny-GGUF"
    lmstudio.mkdir(parents=True)
    shutil.copyfile(files.tiny["Q8_0"], lmstudio / "Tiny-Q8_0.gguf")
    shutil.copyfile(files.tiny["Q8_0"], lmstudio / "mmproj-Tiny-F16.gguf")  # a projector: not a model


def test_discovery_finds_each_tool_s_models_with_their_origins(
    hub: FakeHub, files: Files, tmp_path: Path
) -> None:
    _other_tools(tmp_path, hub, files)
    found = {m.name: m for m in discover(hf_cache=tmp_path / "hf" / "hub", ollama_dirs=[tmp_path / "ollama"],
                                         lmstudio_dirs=[tmp_path / ".lmstudio" / "models"])}  # fmt: skip
    assert set(found) == {"tiny:q4_k_m", "smollm2:135m", "tiny:q8_0"}
    hf = found["tiny:q4_k_m"]
    assert (hf.source, hf.origin) == ("huggingface-cache", f"acme/Tiny-GGUF@{COMMIT}")
    assert hf.sha256 == hub.sha(files.tiny["Q4_K_M"]) and hf.quant == "Q4_K_M"
    ollama = found["smollm2:135m"]
    assert ollama.source == "ollama" and ollama.origin == "registry.ollama.ai/library/smollm2:135m"
    assert ollama.sha256 == hub.sha(files.smollm2)
    assert found["tiny:q8_0"].source == "lm-studio" and found["tiny:q8_0"].sha256 is None
    assert discover(hf_cache=tmp_path / "none", ollama_dirs=[tmp_path / "none"], lmstudio_dirs=[]) == []


def test_external_models_are_listed_served_and_never_removed(
    hub: FakeHub, files: Files, tmp_path: Path
) -> None:
    _other_tools(tmp_path, hub, files)
    listed = run_cli(tmp_path, hub, "list", "--json")
    entries = {e["name"]: e for e in json.loads(listed.stdout)}
    assert entries["smollm2:135m"]["external"] is True and entries["smollm2:135m"]["kind"] == "ollama"
    assert entries["tiny:q4_k_m"]["source"] == f"acme/Tiny-GGUF@{COMMIT}"
    refused = run_cli(tmp_path, hub, "rm", "smollm2:135m", "-y")
    assert refused.returncode == 1 and "belongs to ollama" in refused.stderr
    daemon = start_daemon(tmp_path, "--parallel", "1", "--ctx", "2048")
    try:
        body = {"model": "smollm2:135m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        reply = web.post(f"{daemon.v1}/chat/completions", json=body, timeout=60)
        assert reply.status_code == 200 and reply.json()["model"] == "smollm2:135m"
        off = web.delete(f"{daemon.url}/appliance/v1/models/smollm2:135m", timeout=30)
        assert off.status_code == 400
    finally:
        stop_daemon(daemon)
    assert (tmp_path / "ollama" / "blobs" / f"sha256-{hub.sha(files.smollm2)}").is_file()
