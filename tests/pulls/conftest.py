"""Real GGUF files served by a local fake Hub/registry (tests/pulls/fakehub.py): the embedded default
model, tiny synthetic llama models quantized three ways by llama.cpp, and a split model."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import gguf
import numpy as np
import pytest

from models.embedded import embedded_model_path
from tests.benchmark_scripts import load_script
from tests.pulls.fakehub import FakeHub, serve

TINY_QUANTS = ("Q8_0", "Q4_K_M", "Q2_K")
TOKEN = "hf_test_token_123"
# Ollama library's smollm2 template (ollama.com/library/smollm2, template layer) and params layer.
OLLAMA_TEMPLATE = (
    "{{- if .Messages }}{{- range $i, $_ := .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
    "{{ end }}<|im_start|>assistant\n{{ else }}{{ .Prompt }}{{ end }}"
)
OLLAMA_PARAMS = {"stop": ["<|im_start|>", "<|im_end|>"]}


@dataclass
class Files:
    smollm2: Path
    tiny: dict[str, Path]  # quant -> file
    split: list[Path]


def _write_split(mm: ModuleType, dest_dir: Path, tokenizer: Path, shape: object) -> list[Path]:
    """A tiny F16 model written as 3 split parts by gguf-py's writer (the format llama.cpp's gguf-split
    writes: split.no / split.count / split.tensors.count in every part)."""
    base = dest_dir / "tiny-split-F16.gguf"
    n_vocab = next(len(v) for k, v, *_ in mm.tokenizer_keys(tokenizer) if k == "tokenizer.ggml.tokens")
    tensors = mm.tensor_shapes(shape, n_vocab)
    writer = gguf.GGUFWriter(base, arch="llama", split_max_tensors=(len(tensors) + 2) // 3)
    writer.add_name("tiny-split")
    writer.add_file_type(1)
    mm.copy_tokenizer(tokenizer, writer)
    writer.add_vocab_size(n_vocab)
    writer.add_context_length(shape.context_length)  # type: ignore[attr-defined]
    writer.add_embedding_length(shape.n_embd)  # type: ignore[attr-defined]
    writer.add_block_count(shape.n_layer)  # type: ignore[attr-defined]
    writer.add_feed_forward_length(shape.n_ff)  # type: ignore[attr-defined]
    writer.add_head_count(shape.n_head)  # type: ignore[attr-defined]
    writer.add_head_count_kv(shape.n_head_kv)  # type: ignore[attr-defined]
    writer.add_rope_dimension_count(shape.head_dim)  # type: ignore[attr-defined]
    writer.add_layer_norm_rms_eps(1e-5)
    rng = np.random.default_rng(1)
    for name, dims in tensors:
        writer.add_tensor(name, mm.random_tensor(rng, dims))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return sorted(dest_dir.glob("tiny-split-F16-*-of-*.gguf"))


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    smollm2 = embedded_model_path()
    assert smollm2 is not None, "the [default-model] extra is needed"
    out = tmp_path_factory.mktemp("hubfiles")
    mm = load_script("make_models")
    shape = mm.Shape(n_embd=256, n_layer=2, n_head=4, n_head_kv=2, n_ff=512, context_length=8192)
    f16 = out / "tiny-F16.gguf"
    mm.write_f16(f16, "tiny", shape, smollm2, seed=0)
    tiny = {}
    for quant in TINY_QUANTS:
        tiny[quant] = out / f"Tiny-{quant}.gguf"
        mm.quantize(f16, tiny[quant], quant, 2)
    split_dir = out / "split"
    split_dir.mkdir()
    return Files(smollm2, tiny, _write_split(mm, split_dir, smollm2, shape))


@pytest.fixture
def hub(files: Files, tmp_path: Path) -> Iterator[FakeHub]:
    fake = FakeHub()
    readme = tmp_path / "README.md"
    readme.write_text("# a model card\n")
    mmproj = tmp_path / "mmproj-model-f16.gguf"
    shutil.copyfile(files.tiny["Q8_0"], mmproj)
    tiny = {f"Tiny-{q}.gguf": p for q, p in files.tiny.items()}
    fake.add_repo("acme/Tiny-GGUF", {**tiny, "mmproj-model-f16.gguf": mmproj, "README.md": readme})
    fake.add_repo("acme/SmolLM2-135M-Instruct-GGUF", {"SmolLM2-135M-Instruct-Q4_1.gguf": files.smollm2})
    fake.add_repo("acme/Split-GGUF", {p.name: p for p in files.split})
    fake.add_repo("acme/Private-GGUF", {"Tiny-Q4_K_M.gguf": files.tiny["Q4_K_M"]}, private_token=TOKEN)
    fake.add_repo("acme/Docs-Only", {"README.md": readme})
    fake.add_ollama("library/smollm2:135m", files.smollm2, OLLAMA_TEMPLATE, OLLAMA_PARAMS, "Apache-2.0")
    yield from serve(fake)


def cli_env(home: Path, hub: FakeHub) -> dict[str, str]:
    """The environment of an ``appliance`` process with its state in ``home``, talking to the fake hub."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("APPLIANCE_", "HF_"))}
    full.update({"APPLIANCE_HOME": str(home), "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_TELEMETRY": "1",
                 "HF_HOME": str(home / "hf"), "APPLIANCE_STORE__OLLAMA_REGISTRY": hub.url, "HOME": str(home),
                 "OLLAMA_MODELS": str(home / "ollama")})  # fmt: skip
    return full


def run_cli(home: Path, hub: FakeHub, *args: str, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``appliance ARGS`` with its state in ``home``, talking to the fake hub."""
    full = cli_env(home, hub)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True,
                          env=full, timeout=timeout)  # fmt: skip


def settled(read: Callable[[], int], quiet_s: float = 0.5, timeout_s: float = 20) -> int:
    """``read()`` once it has stopped changing for ``quiet_s`` (the hub's server may go on writing a dead
    connection's remaining bytes into a closed socket for a moment: count bytes served from then)."""
    last, deadline = read(), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = read()
        if now == last:
            return now
        last = now
    return last


@contextlib.contextmanager
def tmpfs(mount: Path, size_mib: int) -> Iterator[Path]:
    """A real filesystem of ``size_mib`` at ``mount`` (tmpfs) while the block runs; skips without root."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 32 MiB filesystem (tmpfs; needs root, as the remote tests do)."""
    with tmpfs(tmp_path / "small", 32) as mount:
        yield mount
