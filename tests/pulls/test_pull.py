"""`appliance pull`, `plan`, `list` and the daemon's pull API against the fake Hub and registry."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import ollama
import pytest

from appliance.config import Settings
from appliance.hardware.detect import detect_hardware
from appliance.planner.model_info import read_model_info
from appliance.planning import choose_plan
from models.store import Store
from tests import web
from tests.pulls.conftest import Files, run_cli, settled
from tests.pulls.fakehub import COMMIT, FakeHub
from tests.server.conftest import start_daemon, stop_daemon, wait_until


def _least_ram(path: Path) -> int:
    """What the model needs at its smallest useful plan (one slot of 4096 tokens)."""
    settings = Settings(model={"n_parallel": 1, "n_ctx": 4096})
    return choose_plan([read_model_info(path)], detect_hardware(), settings).memory.ram_bytes


def test_pull_chooses_the_best_quantization_that_fits_the_budget(
    hub: FakeHub, files: Files, tmp_path: Path
) -> None:
    big = run_cli(tmp_path / "big", hub, "pull", "acme/Tiny-GGUF", "--json")
    assert big.returncode == 0, big.stderr
    manifest = json.loads(big.stdout)
    assert (manifest["name"], manifest["tag"], manifest["quant"]) == ("tiny", "q8_0", "Q8_0")
    assert manifest["source"] == {"kind": "huggingface", "repo": "acme/Tiny-GGUF", "revision": COMMIT,
                                  "files": ["Tiny-Q8_0.gguf"]}  # fmt: skip
    assert manifest["files"][0]["sha256"] == hub.sha(files.tiny["Q8_0"])
    assert "Q8_0" in big.stderr and "fits" in big.stderr  # the choice and why
    # A budget between what Q8_0 and Q4_K_M need: Q4_K_M, said before downloading a byte of Q8_0.
    q8, q4 = _least_ram(files.tiny["Q8_0"]), _least_ram(files.tiny["Q4_K_M"])
    cap = q4 + (q8 - q4) // 4
    small = run_cli(tmp_path / "small", hub, "pull", "acme/Tiny-GGUF", "--max-ram", str(cap), "--json")
    assert small.returncode == 0, small.stderr
    assert json.loads(small.stdout)["quant"] == "Q4_K_M"
    stored = Store(tmp_path / "small" / "data" / "models")
    assert [m.ref for m in stored.manifests()] == ["tiny:q4_k_m"]


def test_pull_a_named_quant_and_the_errors_users_see(hub: FakeHub, tmp_path: Path) -> None:
    named = run_cli(tmp_path, hub, "pull", "acme/Tiny-GGUF:Q2_K")
    assert named.returncode == 0, named.stderr
    assert "tiny:q2_k: ready" in named.stdout
    for ref, line in [
        ("acme/Tiny-GGUF:Q5_K_M", "acme/Tiny-GGUF has no Q5_K_M file (has: Q2_K, Q4_K_M, Q8_0)"),
        ("acme/Nope", "repo acme/Nope not found"),
        ("acme/Docs-Only", "acme/Docs-Only has no GGUF files"),
        ("acme/Private-GGUF", "private repos need HF_TOKEN"),
        ("ollama:smollm2:9z", "ollama model smollm2:9z not found"),
    ]:
        result = run_cli(tmp_path, hub, "pull", ref)
        assert result.returncode == 1, (ref, result.stdout)
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("appliance: ") and line in last, (ref, last)
        assert "Traceback" not in result.stderr
    private = run_cli(tmp_path, hub, "pull", "acme/Private-GGUF", env={"HF_TOKEN": "hf_test_token_123"})
    assert private.returncode == 0, private.stderr


def test_too_big_for_the_budget_is_refused_unless_named(hub: FakeHub, tmp_path: Path) -> None:
    refused = run_cli(tmp_path, hub, "pull", "acme/Tiny-GGUF", "--max-ram", "5MiB")
    assert refused.returncode == 1 and "no quantization of acme/Tiny-GGUF fits" in refused.stderr
    assert not (tmp_path / "data" / "models" / "files").exists()
    named = run_cli(tmp_path, hub, "pull", "acme/Tiny-GGUF:Q2_K", "--max-ram", "5MiB")
    assert named.returncode == 0 and "warning: acme/tiny-gguf:q2_k will not fit" in named.stderr.lower()


def test_a_killed_pull_resumes_where_it_stopped(hub: FakeHub, files: Files, tmp_path: Path) -> None:
    hub.knobs.bytes_per_s = 40e6  # about 2.5 s for the 98 MB file
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APPLIANCE_", "HF_"))}
    env.update({"APPLIANCE_HOME": str(tmp_path), "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf")})
    ref = "acme/SmolLM2-135M-Instruct-GGUF"
    process = subprocess.Popen([sys.executable, "-m", "appliance", "pull", ref], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    partial = tmp_path / "data" / "models" / ".partial"
    assert wait_until(lambda: any(p.stat().st_size > 20 << 20 for p in partial.glob("*.part")), 60)
    process.send_signal(signal.SIGKILL)
    process.wait()
    kept = next(partial.glob("*.part")).stat().st_size
    assert not list((tmp_path / "data" / "models").glob("manifests/**/*.json"))  # nothing half-done visible
    hub.knobs.bytes_per_s = None
    served_before = settled(lambda: hub.knobs.served[files.smollm2.name])
    again = run_cli(tmp_path, hub, "pull", ref, "--json")
    assert again.returncode == 0, again.stderr
    rest = files.smollm2.stat().st_size - kept
    assert hub.knobs.served[files.smollm2.name] - served_before < rest + (8 << 20)
    manifest = json.loads(again.stdout)
    assert manifest["files"][0]["sha256"] == hub.sha(files.smollm2)


def test_pull_ollama_and_list_it(hub: FakeHub, files: Files, tmp_path: Path) -> None:
    pulled = run_cli(tmp_path, hub, "pull", "ollama:smollm2:135m", "--json")
    assert pulled.returncode == 0, pulled.stderr
    manifest = json.loads(pulled.stdout)
    assert (manifest["name"], manifest["tag"], manifest["quant"]) == ("smollm2", "135m", "Q4_1")
    assert manifest["source"]["kind"] == "ollama" and manifest["source"]["name"] == "library/smollm2:135m"
    assert manifest["extra"]["ollama_params"] == {"stop": ["<|im_start|>", "<|im_end|>"]}
    listed = run_cli(tmp_path, hub, "list", "--json")
    entries = {e["name"]: e for e in json.loads(listed.stdout)}
    assert entries["smollm2:135m"]["sha256"] == hub.sha(files.smollm2)
    assert entries["smollm2:135m"]["fits"] == "full"


def test_plan_reads_a_hub_repo_without_downloading_it(hub: FakeHub, files: Files, tmp_path: Path) -> None:
    planned = run_cli(tmp_path, hub, "plan", "acme/Tiny-GGUF", "--json")
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    assert plan["quant"] == "Q8_0" and plan["fits"] and len(plan["alternatives"]) >= 2
    assert sum(hub.knobs.served.values()) < 3 * (4 << 20)  # headers only


def test_a_split_model_is_pulled_whole_and_planned_from_all_its_parts(
    hub: FakeHub, files: Files, tmp_path: Path
) -> None:
    pulled = run_cli(tmp_path, hub, "pull", "acme/Split-GGUF", "--json")
    assert pulled.returncode == 0, pulled.stderr
    manifest = json.loads(pulled.stdout)
    assert [f["path"].rsplit("/", 1)[1] for f in manifest["files"]] == [p.name for p in files.split]
    first = tmp_path / "data" / "models" / "files" / manifest["files"][0]["path"]
    info = read_model_info(first)
    assert info.file_bytes == sum(p.stat().st_size for p in files.split)
    assert info.n_layer == 2 and info.weights_bytes > 0


def test_the_daemon_pulls_with_streamed_progress_and_serves_the_result(hub: FakeHub, tmp_path: Path) -> None:
    env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf")}
    daemon = start_daemon(tmp_path, "--parallel", "1", "--ctx", "2048", env=env)
    try:
        events = []
        url = f"{daemon.url}/appliance/v1/models/pull"
        body = {"model": "acme/SmolLM2-135M-Instruct-GGUF"}
        with web.stream("POST", url, json=body, timeout=120) as response:
            assert response.status_code == 200
            events = [json.loads(line) for line in response.iter_lines() if line]
        statuses = [e["status"] for e in events]
        assert statuses[0] == "resolving" and "chosen" in statuses and statuses[-1] == "success"
        progress = [e for e in events if e["status"] == "downloading"]
        assert progress and progress[-1]["completed"] == progress[-1]["total"]
        name = events[-1]["manifest"]["name"] + ":" + events[-1]["manifest"]["tag"]
        assert name == "smollm2-135m-instruct:q4_1"
        ids = [m["id"] for m in web.get(f"{daemon.v1}/models", timeout=10).json()["data"]]
        assert name in ids
        body = {"model": name, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        chat = web.post(f"{daemon.v1}/chat/completions", json=body, timeout=60)
        assert chat.status_code == 200 and chat.json()["model"] == name
        pulls = web.get(f"{daemon.url}/appliance/v1/models/pulls", timeout=10).json()["pulls"]
        assert pulls[0]["state"] == "done"
        assert _failed_pull(daemon.url, "acme/Nope") == (404, 404)  # no such repo
        assert _failed_pull(daemon.url, "acme/Tiny-GGUF:Q5_K_M") == (404, 404)  # nor such a quantization
        hub.knobs.file_status["Tiny-Q2_K.gguf"] = 404  # listed, but the Hub answers EntryNotFound
        assert _failed_pull(daemon.url, "acme/Tiny-GGUF:Q2_K") == (404, 404)
        hub.knobs.file_status["Tiny-Q2_K.gguf"] = 503  # a failing Hub is not a missing model
        assert _failed_pull(daemon.url, "acme/Tiny-GGUF:Q2_K") == (400, 400)
        with web.stream("POST", url, json={"model": "acme/Nope"}, timeout=30) as response:
            last = [json.loads(line) for line in response.iter_lines() if line][-1]
        assert last["status"] == "error" and last["kind"] == "not_found" and "not found" in last["error"]
        removed = web.delete(f"{daemon.url}/appliance/v1/models/{name}", timeout=30)
        assert removed.status_code == 200
        ids = [m["id"] for m in web.get(f"{daemon.v1}/models", timeout=10).json()["data"]]
        assert name not in ids
    finally:
        stop_daemon(daemon)


def _failed_pull(daemon_url: str, ref: str) -> tuple[int, int]:
    """The statuses /appliance/v1/models/pull and Ollama's /api/pull answer for a failing pull of the
    Hugging Face repo ``ref``, each with its message in its dialect's error shape."""
    ours = web.post(f"{daemon_url}/appliance/v1/models/pull", json={"model": ref, "stream": False},
                      timeout=60)  # fmt: skip
    theirs = web.post(f"{daemon_url}/api/pull", json={"model": f"hf.co/{ref}", "stream": False}, timeout=60)
    assert ours.json()["error"]["message"] and ours.json()["error"]["param"] == "model", ours.text
    assert isinstance(theirs.json()["error"], str) and theirs.json()["error"], theirs.text
    return ours.status_code, theirs.status_code


def test_ollama_clients_pull_and_delete_through_the_daemon(hub: FakeHub, tmp_path: Path) -> None:
    """Ollama's /api/pull and /api/delete, driven by the official client: the model comes from the
    (fake) Ollama registry into the store, with Ollama's progress lines, then serves and is deleted."""
    env = {
        "APPLIANCE_STORE__OLLAMA_REGISTRY": hub.url,
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "hf"),
    }
    daemon = start_daemon(tmp_path, "--parallel", "1", "--ctx", "2048", env=env)
    try:
        assert web.get(f"{daemon.url}/", timeout=10).text == "llm-appliance is running"
        client = ollama.Client(host=daemon.url, timeout=120)
        progress = list(client.pull("smollm2:135m", stream=True))
        assert progress[-1].status == "success"
        moving = [p for p in progress if p.status and p.status.startswith("pulling ") and p.total]
        assert moving and moving[-1].completed == moving[-1].total
        assert "smollm2:135m" in [m.model for m in client.list().models]
        answer = client.chat("smollm2:135m", messages=[{"role": "user", "content": "Hi"}],
                             options={"num_predict": 4}, stream=False)  # fmt: skip
        assert answer.done and answer.eval_count
        with pytest.raises(ollama.ResponseError) as missing:
            client.pull("no-such-model:1b", stream=False)
        assert missing.value.status_code == 404
        client.delete("smollm2:135m")
        assert "smollm2:135m" not in [m.model for m in client.list().models]
        with pytest.raises(ollama.ResponseError) as gone:
            client.delete("smollm2:135m")
        assert gone.value.status_code == 404
    finally:
        stop_daemon(daemon)


def test_an_ollama_manifest_whose_digest_is_a_path_is_refused(
    hub: FakeHub, files: Files, tmp_path: Path
) -> None:
    entry = hub.ollama["library/smollm2:135m"]
    manifest = json.loads(entry.manifest)
    good = manifest["layers"][0]["digest"]
    manifest["layers"][0]["digest"] = "sha256:../../../escape"
    hub.ollama["library/evil:latest"] = type(entry)(json.dumps(manifest).encode(), {**entry.blobs,
                                                    "sha256:../../../escape": files.smollm2})  # fmt: skip
    result = run_cli(tmp_path, hub, "pull", "ollama:evil")
    assert result.returncode == 1
    assert "bad layer in manifest" in result.stderr.strip().splitlines()[-1]
    assert not list(tmp_path.rglob("escape*")) and good
