"""Corrupt and truncated GGUF files (made from the embedded model): `appliance serve FILE` exits 1 with one
line; such a model in the store, asked for by name, gets a clear 503 in each dialect while the daemon
serves the others; `appliance list` and `plan` say what is broken. llama.cpp itself (this build) refuses
each of these files without crashing, but the header and the file's size are checked before it sees one,
so a corrupt offset is one readable line and not a load retried with smaller contexts."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anthropic
import gguf
import numpy as np
import ollama
import openai
import pytest

from models.embedded import embedded_model_path
from tests import web
from tests.server.conftest import MODEL_ID, Daemon, free_port, start_daemon, stop_daemon

# Each corrupt file, and what the one line about it says.
BROKEN = {
    "garbage": "not a GGUF file",
    "header-cut": "truncated GGUF header",
    "tensor-data-cut": "truncated GGUF file",
    "offset-past-end": "corrupt GGUF file (tensor output_norm.weight is at offset",
    "offset-inside": "corrupt GGUF file (tensor output_norm.weight is at offset 0",
}


def make_broken(source: Path, dest: Path) -> dict[str, Path]:
    """The corrupt variants of ``source`` in ``dest``, plus "noise-weights": a sound header over weights
    overwritten with noise (only loading it can tell)."""
    data = source.read_bytes()
    reader = gguf.GGUFReader(source)
    last = reader.tensors[-1].field  # the last tensor's info: name, dims, type, then its data offset
    offset_at = last.offset + sum(p.nbytes for p in last.parts[:-1])
    assert struct.unpack_from("<Q", data, offset_at)[0] == reader.tensors[-1].data_offset - reader.data_offset
    noise = np.random.default_rng(0).integers(0, 256, len(data) - reader.data_offset, dtype=np.uint8)
    variants = {
        "garbage": bytes(range(256)) * 16,
        "header-cut": data[:1000],
        "tensor-data-cut": data[: len(data) * 2 // 3],
        "offset-past-end": data[:offset_at] + struct.pack("<Q", 4 * len(data)) + data[offset_at + 8 :],
        "offset-inside": data[:offset_at] + struct.pack("<Q", 0) + data[offset_at + 8 :],
        "noise-weights": data[: reader.data_offset] + noise.tobytes(),
    }
    paths = {}
    for name, content in variants.items():
        paths[name] = dest / f"{name}.gguf"
        paths[name].write_bytes(content)
    return paths


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    source = embedded_model_path()
    assert source is not None
    return make_broken(source, tmp_path_factory.mktemp("broken"))


def _appliance(home: Path, *args: str) -> subprocess.Popen[str]:
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update({"APPLIANCE_HOME": str(home), "HOME": str(home)})
    return subprocess.Popen([sys.executable, "-m", "appliance", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip


def test_serve_refuses_each_corrupt_file_with_one_line(broken: dict[str, Path], tmp_path: Path) -> None:
    # Each in its own home: one daemon per state directory.
    running = {name: _appliance(tmp_path / name, "serve", str(broken[name]), "--port", str(free_port()))
               for name in BROKEN}  # fmt: skip
    for name, says in BROKEN.items():
        out, err = running[name].communicate(timeout=120)
        assert running[name].returncode == 1, (name, out, err)
        lines = (out + err).strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("appliance: ") and says in lines[0], (name, lines)
    # Weights of noise pass every check on the file: loading it finds them out (the smoke test).
    noise = _appliance(tmp_path / "noise", "serve", str(broken["noise-weights"]), "--port", str(free_port()))
    out, err = noise.communicate(timeout=120)
    assert noise.returncode == 1 and "Traceback" not in out + err
    assert err.strip().splitlines()[-1].startswith("appliance: smoke test failed: the model computes NaN")


@pytest.fixture(scope="module")
def store_daemon(broken: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    home = tmp_path_factory.mktemp("broken-store")
    models = home / "data" / "models"
    models.mkdir(parents=True)
    for name in ("header-cut", "tensor-data-cut", "offset-inside", "noise-weights"):
        os.link(broken[name], models / broken[name].name)
    d = start_daemon(home, "--parallel", "1", "--ctx", "1024")
    yield d
    stop_daemon(d)


def test_a_corrupt_model_asked_for_by_name_gets_a_503_and_the_others_serve(store_daemon: Daemon) -> None:
    client = store_daemon.client()
    ask = [{"role": "user", "content": "Hi"}]
    refusals = {"header-cut": "truncated GGUF header", "tensor-data-cut": "truncated GGUF file",
                "offset-inside": "corrupt GGUF file", "noise-weights": "smoke test failed"}  # fmt: skip
    for name, says in refusals.items():
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(model=name, messages=ask, max_tokens=4)  # type: ignore[arg-type]
        assert refused.value.status_code == 503 and refused.value.code == "model_load_failed"
        assert says in refused.value.message and name in refused.value.message
        # The default model answers in between: nothing of the failure stays behind.
        reply = client.chat.completions.create(model=MODEL_ID, messages=ask, max_tokens=4)  # type: ignore[arg-type]
        assert reply.choices[0].message.content
    with pytest.raises(ollama.ResponseError) as plain:
        ollama.Client(host=store_daemon.url, timeout=60).chat("tensor-data-cut", messages=ask)
    assert plain.value.status_code == 503 and "truncated GGUF file" in plain.value.error
    claude = anthropic.Anthropic(base_url=store_daemon.url, api_key="unused", max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as message:
        claude.messages.create(model="header-cut", max_tokens=4, messages=ask)  # type: ignore[arg-type]
    assert message.value.status_code == 503 and "truncated GGUF header" in str(message.value.body)
    listed = {m["id"]: m for m in web.get(f"{store_daemon.v1}/models", timeout=30).json()["data"]}
    assert "truncated GGUF header" in listed["header-cut"]["meta"]["error"]
    assert listed[MODEL_ID]["loaded"] and store_daemon.process.poll() is None


def test_list_and_plan_say_what_is_broken(broken: dict[str, Path], tmp_path: Path) -> None:
    models = tmp_path / "data" / "models"
    models.mkdir(parents=True)
    for name in ("header-cut", "offset-past-end"):
        os.link(broken[name], models / broken[name].name)
    out, err = _appliance(tmp_path, "list", "--json").communicate(timeout=120)
    entries = {e["name"]: e for e in json.loads(out)}
    assert "truncated GGUF header" in entries["header-cut"]["error"]
    assert "corrupt GGUF file" in entries["offset-past-end"]["error"]
    assert entries[MODEL_ID]["error"] is None and entries[MODEL_ID]["fits"] == "full"
    text, _ = _appliance(tmp_path, "list").communicate(timeout=120)
    row = next(line for line in text.splitlines() if line.startswith("header-cut "))
    assert "broken" in row.split()
    assert any(line.startswith("header-cut is broken: ") for line in text.splitlines())
    planned = _appliance(tmp_path, "plan", "offset-past-end")
    out, err = planned.communicate(timeout=120)
    assert planned.returncode == 1 and len(err.strip().splitlines()) == 1
    assert "corrupt GGUF file" in err and "Traceback" not in err
