"""Ollama's /api/create and /api/copy on a real daemon, through the official `ollama` client: a derived
model over the default model's file, with its own system prompt, parameters and MESSAGE turns, served in
the Ollama and OpenAI dialects, listed, shown, copied and deleted (never the base's file), kept over a
restart; and `options.num_ctx`, bounded by one slot or granted by a reload when the planner says it fits.

One daemon for the module (two slots of 512 tokens), started once more for the restart at the end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import ollama
import pytest

from tests import web
from tests.server.conftest import MODEL_ID, NO_EOS_BIAS, Daemon, start_daemon, stop_daemon

PIRATE = "You are Captain Ledger, a pirate quartermaster. Count coins in every answer."
QUESTION = [{"role": "user", "content": "Name three colours."}]
TURNS = [{"role": "user", "content": "Ahoy!"}, {"role": "assistant", "content": "Arr, ahoy."}]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("create")
    (home / "config.toml").write_text(f'[models."{MODEL_ID}"]\nkv_type = "q8_0"\n')
    return home


@pytest.fixture(scope="module")
def daemon(home: Path) -> Iterator[Daemon]:
    d = start_daemon(home, "--ctx", "1024", "--parallel", "2")
    yield d
    stop_daemon(d)


@pytest.fixture(scope="module")
def client(daemon: Daemon) -> ollama.Client:
    return ollama.Client(host=daemon.url, timeout=300)


@pytest.fixture(scope="module")
def pirate(client: ollama.Client) -> str:
    """A derived model made the newer way (JSON fields), with a MESSAGE turn."""
    done = client.create(
        model="pirate",
        from_=MODEL_ID,
        system=PIRATE,
        parameters={"temperature": 0, "num_ctx": 256},
        messages=TURNS,
    )
    assert done.status == "success"
    return "pirate"


def _show(daemon: Daemon, name: str) -> dict[str, object]:
    answer = web.post(f"{daemon.url}/api/show", json={"model": name})
    assert answer.status_code == 200, answer.text
    shown: dict[str, object] = answer.json()
    return shown


def _chat(client: ollama.Client, model: str, **options: object) -> ollama.ChatResponse:
    return client.chat(model=model, messages=QUESTION, options={"num_predict": 8, **options})


def test_create_streams_statuses_and_the_model_is_listed_everywhere(
    daemon: Daemon, client: ollama.Client, pirate: str
) -> None:
    statuses = [p.status for p in client.create(model="plain", from_=MODEL_ID, stream=True)]
    assert statuses[-1] == "success" and len(statuses) > 1
    tags = {m.model: m for m in client.list().models}
    assert {"pirate", "plain", MODEL_ID} <= set(tags)
    assert tags["pirate"].details is not None and tags["pirate"].details.parent_model == MODEL_ID
    assert tags["pirate"].size == tags[MODEL_ID].size  # the base's file, not a copy
    cards = {card["id"]: card for card in web.get(f"{daemon.v1}/models").json()["data"]}
    assert cards["pirate"]["meta"]["derived_from"] == MODEL_ID
    assert web.get(f"{daemon.v1}/models/pirate").json()["id"] == "pirate"
    files = [p for p in (daemon.log_path.parent / "data").rglob("*") if p.suffix == ".gguf"]
    assert files == []  # nothing copied into the state directory


def test_the_models_configured_kv_type_is_planned_and_loaded(daemon: Daemon) -> None:
    loaded = web.get(f"{daemon.url}/appliance/v1/status").json()["models"]
    assert [m["plan"]["kv_type"] for m in loaded if m["id"] == MODEL_ID] == ["q8_0"]


def test_its_settings_apply_in_the_ollama_and_openai_dialects(
    daemon: Daemon, client: ollama.Client, pirate: str
) -> None:
    derived = _chat(client, pirate)
    assert derived.model == pirate and derived.message.content
    # The base model given the system prompt and the MESSAGE turns by hand: the same prompt, the same reply.
    by_hand = client.chat(model=MODEL_ID, messages=[{"role": "system", "content": PIRATE}, *TURNS, *QUESTION],
                          options={"num_predict": 8, "temperature": 0})  # fmt: skip
    assert derived.prompt_eval_count == by_hand.prompt_eval_count
    assert derived.message.content == by_hand.message.content
    reply = daemon.client().chat.completions.create(model=pirate, messages=QUESTION, max_tokens=8)  # type: ignore[arg-type]
    assert reply.model == pirate and reply.usage is not None
    assert reply.usage.prompt_tokens == derived.prompt_eval_count  # the same prompt, in either dialect
    assert reply.choices[0].message.content == derived.message.content  # temperature 0 in both
    own = client.chat(model=pirate, messages=[{"role": "system", "content": "Be brief."}, *QUESTION],
                      options={"num_predict": 1})  # fmt: skip
    assert (own.prompt_eval_count or 0) < (derived.prompt_eval_count or 0)  # a chat's own system wins


def test_a_modelfile_with_stop_and_triple_quotes(client: ollama.Client, daemon: Daemon) -> None:
    system = "Answer plainly.\nNo pirates."
    plain = client.create(model="stopper-plain", from_=MODEL_ID, system=system, parameters={"temperature": 0})
    assert plain.status == "success"
    full = _chat(client, "stopper-plain").message.content or ""
    words = full.replace('"', " ").split()
    assert len(words) > 2
    stop = words[2]
    modelfile = (
        f'FROM {MODEL_ID}\n# a comment\nSYSTEM """{system}"""\n'
        f"PARAMETER temperature 0\nPARAMETER stop {stop}\n"
    )
    answer = web.post(f"{daemon.url}/api/create", json={"model": "stopper", "modelfile": modelfile,
                                                         "stream": False})  # fmt: skip
    assert answer.status_code == 200 and answer.json() == {"status": "success"}
    shown = client.show("stopper")
    assert _show(daemon, "stopper")["system"] == system and f"stop {stop}" in (shown.modelfile or "")
    assert shown.parameters is not None and "temperature" in shown.parameters
    cut = _chat(client, "stopper").message.content or ""
    assert stop not in cut and full.startswith(cut.rstrip())  # the same reply, up to the stop


def test_show_copy_and_delete(client: ollama.Client, daemon: Daemon, pirate: str) -> None:
    shown = client.show(pirate)
    assert _show(daemon, pirate)["system"] == PIRATE
    assert shown.parameters is not None and "num_ctx" in shown.parameters
    assert shown.modelfile is not None and shown.modelfile.count("MESSAGE") == 2
    assert f"FROM {MODEL_ID}" in shown.modelfile
    assert client.copy(pirate, "pirate-copy").status == "success"
    assert _show(daemon, "pirate-copy")["system"] == PIRATE  # the source's settings came along
    assert client.copy(MODEL_ID, "smol").status == "success"
    assert _chat(client, "smol").model == "smol"
    client.delete("smol")
    client.delete("pirate-copy")
    names = {m.model for m in client.list().models}
    assert "smol" not in names and "pirate-copy" not in names and MODEL_ID in names and pirate in names
    assert _chat(client, MODEL_ID).message.content  # the base was not touched


def test_bad_creates_are_ollamas_errors(client: ollama.Client, daemon: Daemon) -> None:
    def create(**body: object) -> tuple[int, str]:
        answer = web.post(f"{daemon.url}/api/create", json={"model": "bad", "stream": False, **body})
        return answer.status_code, answer.json()["error"]

    with pytest.raises(ollama.ResponseError) as missing:
        client.create(model="bad", from_="no-such-model")
    assert missing.value.status_code == 404 and "no-such-model" in missing.value.error
    status, error = create(**{"from": MODEL_ID, "parameters": {"mirostat": 1, "num_gpu": 9}})
    assert status == 400 and "mirostat" in error and "num_gpu" in error
    status, error = create(modelfile=f"FROM {MODEL_ID}\nTEMPLATE {{{{ .Prompt }}}}\n")
    assert status == 400 and "Go template" in error and "SYSTEM" in error
    status, error = create(modelfile="FROM x\nBOGUS line\n")
    assert status == 400 and "line 2" in error
    status, error = create(**{"from": MODEL_ID, "quantize": "q4_K_M"})
    assert status == 400 and "quantize" in error
    status, error = create(**{"from": MODEL_ID, "model": MODEL_ID})
    assert status == 400 and "installed" in error
    status, error = create(**{"from": MODEL_ID, "parameters": {"temperature": "hot"}})
    assert status == 400 and "temperature" in error
    copied = web.post(f"{daemon.url}/api/copy", json={"source": "no-such-model", "destination": "x"})
    assert copied.status_code == 404 and "no-such-model" in copied.json()["error"]
    assert "bad" not in {m.model for m in client.list().models}


def test_num_ctx_bounds_a_request_within_one_slot(client: ollama.Client, daemon: Daemon, pirate: str) -> None:
    long_question = [{"role": "user", "content": "Tell me about the sea. " * 40}]
    with pytest.raises(ollama.ResponseError) as small:
        client.chat(model=MODEL_ID, messages=long_question, options={"num_ctx": 100, "num_predict": 4})
    assert small.value.status_code == 400 and "num_ctx" in small.value.error and "100" in small.value.error
    with pytest.raises(ollama.ResponseError) as derived:  # the derived model's own num_ctx 256
        client.chat(model=pirate, messages=[{"role": "user", "content": "Sail on. " * 100}])
    assert derived.value.status_code == 400 and "num_ctx" in derived.value.error
    # A derived model's num_ctx bounds its requests in the OpenAI dialect too: with the end of text
    # banned, the reply runs until prompt and reply fill exactly that context.
    assert client.create(model="short", from_=MODEL_ID, parameters={"num_ctx": 64}).status == "success"
    reply = daemon.client().chat.completions.create(model="short", messages=QUESTION, logit_bias=NO_EOS_BIAS)  # type: ignore[arg-type]
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.total_tokens == 64


def test_a_larger_num_ctx_reloads_the_model_when_it_fits(client: ollama.Client, daemon: Daemon) -> None:
    assert {m.model: m for m in client.ps().models}[MODEL_ID].context_length == 512  # one slot's
    with pytest.raises(ollama.ResponseError) as huge:
        _chat(client, MODEL_ID, num_ctx=1_000_000)
    assert huge.value.status_code == 400 and "largest context" in huge.value.error
    long_prompt = "Tell me about the sea. " * 100  # ~600 tokens: more than a slot of 512 holds
    with pytest.raises(ollama.ResponseError):
        client.generate(model=MODEL_ID, prompt=long_prompt, options={"num_predict": 4})
    answer = client.generate(model=MODEL_ID, prompt=long_prompt, options={"num_predict": 1, "num_ctx": 1024})
    assert answer.done and (answer.prompt_eval_count or 0) > 512
    assert {m.model: m for m in client.ps().models}[MODEL_ID].context_length == 1024
    assert "context" in daemon.log()


def test_derived_models_survive_a_restart(daemon: Daemon, home: Path, pirate: str) -> None:
    stop_daemon(daemon)
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    listed = subprocess.run([sys.executable, "-m", "appliance", "list", "--json"], capture_output=True,
                            env={**env, "APPLIANCE_HOME": str(home)}, check=True, timeout=120)  # fmt: skip
    derived = {e["name"]: e for e in json.loads(listed.stdout)}[pirate]
    assert (derived["kind"], derived["source"]) == ("derived", f"from {MODEL_ID}")
    again = start_daemon(home, "--ctx", "1024", "--parallel", "2")
    try:
        client = ollama.Client(host=again.url, timeout=300)
        assert pirate in {m.model for m in client.list().models}
        assert _show(again, pirate)["system"] == PIRATE
        assert _chat(client, pirate).model == pirate
    finally:
        stop_daemon(again)
