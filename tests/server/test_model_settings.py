"""`[models."ID"]` in config.toml on a real daemon: every dialect reaches the model by an alias (and answers
with the name asked), the model's sampling defaults and system prompt apply unless the request gives its
own, its own context and slots are planned, and a reload changes the aliases without a restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import ollama
import pytest

from tests import web
from tests.server.conftest import MODEL_ID, Daemon, start_daemon, stop_daemon

SYSTEM = (
    "You are Captain Ledger, the ship's quartermaster. Answer every question as a pirate would, "
    "counting coins and naming the ship's cargo as you go."
)


def _config(aliases: list[str]) -> str:
    names = ", ".join(f'"{a}"' for a in aliases)
    return (
        f'[models."{MODEL_ID}"]\naliases = [{names}]\ntemperature = 0\nsystem = "{SYSTEM}"\n'
        "n_ctx = 2048\nn_parallel = 2\n"
    )


ALIASES = ["gpt-4o-mini", "claude-3-5-haiku-latest", "llama3.2"]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("permodel")
    (home / "config.toml").write_text(_config(ALIASES))
    return home


@pytest.fixture(scope="module")
def daemon(home: Path) -> Iterator[Daemon]:
    d = start_daemon(home)
    yield d
    stop_daemon(d)


def _ask(daemon: Daemon, model: str, *, system: str | None = None, **extra: object) -> tuple[str, int, str]:
    messages = [{"role": "user", "content": "Name three colours."}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    create = daemon.client().chat.completions.create
    reply = create(model=model, messages=messages, max_tokens=24, **extra)  # type: ignore[call-overload]
    assert reply.usage is not None
    return reply.choices[0].message.content or "", reply.usage.prompt_tokens, reply.model


def test_openai_chat_by_alias_names_the_alias(daemon: Daemon) -> None:
    text, _, model = _ask(daemon, "gpt-4o-mini")
    assert text and model == "gpt-4o-mini"
    _, _, model = _ask(daemon, MODEL_ID)
    assert model == MODEL_ID
    stream = daemon.client().chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, stream=True
    )
    assert {chunk.model for chunk in stream} == {"gpt-4o-mini"}


def test_openai_completions_and_embeddings_by_alias(daemon: Daemon) -> None:
    client = daemon.client()
    completion = client.completions.create(model="gpt-4o-mini", prompt="Once upon a time", max_tokens=4)
    assert completion.model == "gpt-4o-mini" and completion.choices[0].text
    embedded = client.embeddings.create(model="gpt-4o-mini", input="hello")
    assert embedded.model == "gpt-4o-mini" and len(embedded.data[0].embedding) > 0


def test_unknown_name_is_still_404(daemon: Daemon) -> None:
    response = web.post(f"{daemon.v1}/chat/completions",
                        json={"model": "gpt-5", "messages": [{"role": "user", "content": "Hi"}]})  # fmt: skip
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


def test_ollama_by_alias(daemon: Daemon) -> None:
    client = ollama.Client(host=daemon.url, timeout=120)
    chat = client.chat(
        model="llama3.2", messages=[{"role": "user", "content": "Hi"}], options={"num_predict": 4}
    )
    assert chat.model == "llama3.2" and chat.message.content
    generated = client.generate(model="llama3.2", prompt="Hi", options={"num_predict": 4})
    assert generated.model == "llama3.2" and generated.response
    embedded = client.embed(model="llama3.2", input="hello")
    assert embedded.model == "llama3.2" and len(embedded.embeddings[0]) > 0
    shown = client.show("llama3.2")
    assert shown.modelinfo is not None and shown.modelinfo["general.architecture"] == "llama"


def test_anthropic_by_alias(daemon: Daemon) -> None:
    client = anthropic.Anthropic(base_url=daemon.url, api_key="unused", max_retries=0)
    message = client.messages.create(
        model="claude-3-5-haiku-latest", max_tokens=4, messages=[{"role": "user", "content": "Hi"}]
    )
    assert message.model == "claude-3-5-haiku-latest" and message.content


def test_models_list_each_model_once_with_its_aliases(daemon: Daemon) -> None:
    cards = web.get(f"{daemon.v1}/models").json()["data"]
    ids = [card["id"] for card in cards]
    assert ids.count(MODEL_ID) == 1 and not set(ALIASES) & set(ids)
    assert next(card for card in cards if card["id"] == MODEL_ID)["aliases"] == ALIASES
    one = web.get(f"{daemon.v1}/models/gpt-4o-mini").json()
    assert one["id"] == MODEL_ID


def test_the_models_temperature_default_applies_and_the_requests_own_wins(daemon: Daemon) -> None:
    greedy = {_ask(daemon, "gpt-4o-mini")[0] for _ in range(3)}
    assert len(greedy) == 1  # temperature 0 from the config: the same reply every time
    hot = {_ask(daemon, "gpt-4o-mini", temperature=2.0, seed=seed)[0] for seed in (1, 2, 3)}
    assert hot - greedy  # the request's temperature won


def test_the_system_prompt_is_added_only_to_a_chat_without_one(daemon: Daemon) -> None:
    _, configured, _ = _ask(daemon, MODEL_ID)
    _, same_given, _ = _ask(daemon, MODEL_ID, system=SYSTEM)
    _, short_given, _ = _ask(daemon, MODEL_ID, system="Be brief.")
    assert configured == same_given  # the configured prompt was rendered as the chat's system message
    assert configured > short_given + 20  # and a chat's own system message replaces it


def test_load_and_unload_by_alias(daemon: Daemon) -> None:
    unloaded = web.post(f"{daemon.url}/appliance/v1/models/gpt-4o-mini/unload", timeout=60).json()
    assert unloaded == {"model": MODEL_ID, "unloaded": True}
    loaded = web.post(f"{daemon.url}/appliance/v1/models/llama3.2/load", json={}, timeout=120)
    assert loaded.status_code == 200 and loaded.json()["model"]["id"] == MODEL_ID
    plan = loaded.json()["model"]["plan"]
    assert (plan["n_ctx"], plan["n_parallel"]) == (2048, 2)  # the model's own context and slots


def test_reload_changes_the_aliases(daemon: Daemon, home: Path) -> None:
    (home / "config.toml").write_text(_config(["gpt-4.1-nano"]))
    answer = web.post(f"{daemon.url}/appliance/v1/reload").json()
    assert "models" in answer["applied"]
    assert _ask(daemon, "gpt-4.1-nano")[2] == "gpt-4.1-nano"
    hi = [{"role": "user", "content": "Hi"}]
    gone = web.post(f"{daemon.v1}/chat/completions", json={"model": "gpt-4o-mini", "messages": hi})
    assert gone.status_code == 404
