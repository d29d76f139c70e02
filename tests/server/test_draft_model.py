"""A draft model on a real daemon: `[models."drafted"] draft_model` makes the embedded SmolLM2-135M
(Q4_1) draft for its own Q8_0 requantization. Greedy replies, several at once, are the ones without
guesses; the draft's guesses are counted in /metrics and the plan shows it. A draft with another
vocabulary is one readable line from `serve` and `plan`, and a 503 naming why for the model that has
it, while the daemon serves the others."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

from tests import web
from tests.draft_models import embedded, other_tokenizer, requantized
from tests.server.conftest import MODEL_ID, Daemon, free_port, start_daemon, stop_daemon

PROMPTS = ["Write a haiku about rain.", "What is a CPU? One sentence.", "Name three fruits.", "Say hello."]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    made = tmp_path_factory.mktemp("draft-files")
    return {"target": requantized(made), "other": other_tokenizer(made)}


@pytest.fixture(scope="module")
def draft_daemon(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    home = tmp_path_factory.mktemp("draft-home")
    models = home / "data" / "models"
    models.mkdir(parents=True)
    os.link(files["target"], models / "drafted.Q8_0.gguf")
    os.link(files["target"], models / "mismatch.Q8_0.gguf")
    (home / "config.toml").write_text(
        f'[models."drafted"]\ndraft_model = "{embedded()}"\n'
        f'[models."mismatch"]\ndraft_model = "{files["other"]}"\n'
    )
    d = start_daemon(home, "--parallel", "2", "--ctx", "4096")
    yield d
    stop_daemon(d)


def _replies(client: openai.OpenAI, **extra: object) -> list[str]:
    def ask(prompt: str) -> str:
        reply = client.chat.completions.create(
            model="drafted",
            messages=[{"role": "user", "content": prompt}],
            temperature=0,
            max_tokens=60,
            extra_body=extra,
        )
        return reply.choices[0].message.content or ""

    with ThreadPoolExecutor(len(PROMPTS)) as pool:  # two slots: batched, and two waiting
        return list(pool.map(ask, PROMPTS))


def _installed(daemon: Daemon) -> list[dict[str, Any]]:
    models: list[dict[str, Any]] = web.get(f"{daemon.url}/appliance/v1/models", timeout=30).json()["models"]
    return models


def _counter(metrics: str, name: str, source: str) -> float:
    found = re.search(rf'^{name}_total{{model="drafted",source="{source}"}} (\S+)$', metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_greedy_replies_with_the_draft_are_plain_decodings(draft_daemon: Daemon) -> None:
    client = draft_daemon.client(timeout=300)
    drafted = _replies(client)
    plain = _replies(client, **{"speculative.n_max": 0})  # no guesses for these requests
    assert drafted == plain and all(plain)
    metrics = web.get(f"{draft_daemon.url}/metrics", timeout=30).text
    guessed = _counter(metrics, "appliance_draft_tokens", "draft")
    kept = _counter(metrics, "appliance_draft_tokens_accepted", "draft")
    assert guessed > 0 and 0 < kept <= guessed, (guessed, kept)
    assert _counter(metrics, "appliance_draft_tokens", "ngram") == 0  # one source per slot
    installed = {m["id"]: m for m in _installed(draft_daemon)}
    plan = installed["drafted"]["plan"]
    assert plan["draft"]["file"] == str(embedded()) and plan["draft"]["kv_bytes"] > 0
    assert any(r.startswith("draft model ") and "on the CPU" in r for r in plan["reasons"])
    assert installed[MODEL_ID]["plan"]["draft"] is None
    status = web.get(f"{draft_daemon.url}/appliance/v1/status", timeout=30).json()
    loaded = next(m for m in status["models"] if m["id"] == "drafted")
    assert loaded["speculation"]["draft_model"] == str(embedded())
    assert loaded["speculation"]["draft"]["drafted"] == guessed
    steps = loaded["speculation"]["step_ms"]  # what it weighed the guesses against
    assert steps and all(int(size) > 0 and ms > 0 for size, ms in steps.items()), steps
    assert "draft model SmolLM2-135M-Instruct.Q4_1.gguf loaded" in draft_daemon.log()


def test_a_draft_with_another_vocabulary_is_a_503_that_says_why(draft_daemon: Daemon) -> None:
    client = draft_daemon.client(timeout=120)
    ask = [{"role": "user", "content": "Hi"}]
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="mismatch", messages=ask, max_tokens=4)  # type: ignore[arg-type]
    assert refused.value.status_code == 503 and refused.value.code == "model_load_failed"
    message = refused.value.message
    assert "model mismatch is not loaded: draft model" in message
    assert "its tokenizer is bert, the model's gpt2" in message
    installed = {m["id"]: m for m in _installed(draft_daemon)}
    assert "its tokenizer is bert" in installed["mismatch"]["error"]
    reply = client.chat.completions.create(model=MODEL_ID, messages=ask, max_tokens=4)  # type: ignore[arg-type]
    assert reply.choices[0].message.content and draft_daemon.process.poll() is None


def _appliance(home: Path, draft: str, *args: str) -> subprocess.CompletedProcess[str]:
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update({"APPLIANCE_HOME": str(home), "HOME": str(home)})
    if draft:
        env["APPLIANCE_MODEL__DRAFT_MODEL"] = draft
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True,
                          env=env, timeout=120)  # fmt: skip


@pytest.mark.parametrize(
    ("draft", "says"),
    [
        (
            "other",
            "cannot draft for Smollm2 135M 8k Lc100K Mix1 Ep2: its tokenizer is bert, the model's gpt2",
        ),
        ("missing", "no such file or installed model"),
    ],
)
def test_serve_and_plan_refuse_a_bad_draft_in_one_line(
    files: dict[str, Path], tmp_path: Path, draft: str, says: str
) -> None:
    named = str(files["other"]) if draft == "other" else str(tmp_path / "gone.gguf")
    target = str(files["target"])
    for args in (("serve", target, "--port", str(free_port())), ("plan", target, "--no-dry-run")):
        done = _appliance(tmp_path / args[0], named, *args)
        lines = (done.stdout + done.stderr).strip().splitlines()
        assert done.returncode == 1 and "Traceback" not in done.stderr, (args, done.stderr)
        assert lines[-1].startswith(f"appliance: draft model {named}") and says in lines[-1], (args, lines)


def test_plan_counts_the_draft_and_leaves_it_out_where_the_pair_does_not_fit(
    files: dict[str, Path], tmp_path: Path
) -> None:
    target, draft = str(files["target"]), str(embedded())

    def plan(*args: str, with_draft: bool = True) -> dict[str, Any]:
        flags = ("--json", "--no-dry-run", "--parallel", "1", *args)
        done = _appliance(tmp_path, draft if with_draft else "", "plan", target, *flags)
        assert done.returncode == 0, done.stderr
        data: dict[str, Any] = json.loads(done.stdout)
        return data

    alone = plan(with_draft=False)
    paired = plan()
    assert paired["draft"]["file"] == draft and paired["draft"]["kv_bytes"] > 0
    assert paired["memory"]["ram_bytes"] == alone["memory"]["ram_bytes"] + paired["draft"]["ram_bytes"]
    assert paired["n_ctx"] == alone["n_ctx"]
    snug = plan("--max-ram", str(alone["memory"]["ram_bytes"] + (16 << 20)))
    assert snug["draft"] is None and snug["n_ctx"] == alone["n_ctx"] and snug["quant"] == alone["quant"]
    assert any(r.startswith("draft model ") and " left out: it needs " in r for r in snug["reasons"])
