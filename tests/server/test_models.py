"""Several models: on-demand loads, keep-alive (Ollama's `keep_alive` too), least-recently-used
eviction under the memory budget, and the load/unload API. The second model is a copy of the default
one under another name in the store."""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from models.embedded import embedded_model_path
from tests import web
from tests.benchmark_scripts import load_script
from tests.server.conftest import MODEL_ID, NO_EOS_BIAS, Daemon, start_daemon, stop_daemon, wait_until

SECOND = "second-model"
# The default model's plan takes about 0.48 GiB (4 slots of 4096 tokens): two do not fit in 800 MiB.
MAX_RAM = "800MiB"
KEEP_ALIVE_S = 2


def _store_with_second_model(home: Path) -> None:
    source = embedded_model_path()
    assert source is not None, "the [default-model] extra is needed"
    store = home / "data" / "models"
    store.mkdir(parents=True)
    shutil.copyfile(source, store / f"{SECOND}.Q4_1.gguf")


@pytest.fixture(scope="module")
def models_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    home = tmp_path_factory.mktemp("models")
    _store_with_second_model(home)
    d = start_daemon(home, "--max-ram", MAX_RAM, env={"APPLIANCE_MODEL__KEEP_ALIVE": f"{KEEP_ALIVE_S}s"})
    yield d
    stop_daemon(d)


def _post(daemon: Daemon, path: str, **kwargs: Any) -> httpx.Response:
    return web.post(f"{daemon.url}{path}", timeout=120, **kwargs)


def _chat(daemon: Daemon, model: str, max_tokens: int = 8, **kwargs: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": max_tokens,
            "temperature": 0}  # fmt: skip
    return web.post(f"{daemon.v1}/chat/completions", json=body, timeout=120, **kwargs)


def _status(daemon: Daemon) -> dict[str, Any]:
    return web.get(f"{daemon.url}/appliance/v1/status", timeout=10).json()  # type: ignore[no-any-return]


def _loaded(daemon: Daemon) -> list[str]:
    return [m["id"] for m in _status(daemon)["models"]]


def _metric(daemon: Daemon, line_start: str) -> float:
    for line in web.get(f"{daemon.url}/metrics", timeout=10).text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _only_default_loaded(daemon: Daemon) -> None:
    _post(daemon, f"/appliance/v1/models/{SECOND}/unload")
    assert _post(daemon, f"/appliance/v1/models/{MODEL_ID}/load").status_code == 200
    assert _loaded(daemon) == [MODEL_ID]


def test_v1_models_lists_installed_models_and_which_are_loaded(models_daemon: Daemon) -> None:
    _only_default_loaded(models_daemon)
    data = web.get(f"{models_daemon.v1}/models", timeout=10).json()["data"]
    cards = {card["id"]: card for card in data}
    assert set(cards) == {MODEL_ID, SECOND}
    assert cards[MODEL_ID]["loaded"] is True and cards[MODEL_ID]["meta"]["default"] is True
    assert cards[SECOND]["loaded"] is False and cards[SECOND]["state"] == "unloaded"
    assert cards[SECOND]["meta"]["source"] == "store"
    installed = web.get(f"{models_daemon.url}/appliance/v1/models", timeout=10).json()["models"]
    plans = {m["id"]: m["plan"] for m in installed}
    assert plans[SECOND]["fits"] is True and plans[SECOND]["quant"] == "Q4_1"


def test_a_request_loads_its_model_and_the_least_recently_used_idle_one_makes_room(
    models_daemon: Daemon,
) -> None:
    _only_default_loaded(models_daemon)
    evicted = f'appliance_model_unloads_total{{model="{MODEL_ID}",reason="memory"}}'
    evicted_before = _metric(models_daemon, evicted)
    response = _chat(models_daemon, SECOND)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == SECOND
    status = _status(models_daemon)
    assert [m["id"] for m in status["models"]] == [SECOND]  # both would pass the 800 MiB cap
    assert 0 < status["memory"]["models_ram_bytes"] <= status["memory"]["budget_ram_bytes"]
    assert _metric(models_daemon, evicted) == evicted_before + 1
    # A request naming no model goes to the default one, which comes back in the same way.
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    back = web.post(f"{models_daemon.v1}/chat/completions", json=body, timeout=120)
    assert back.status_code == 200 and back.json()["model"] == MODEL_ID
    assert _loaded(models_daemon) == [MODEL_ID]


def test_a_client_that_will_not_wait_gets_503_while_its_model_loads(models_daemon: Daemon) -> None:
    _only_default_loaded(models_daemon)
    response = _chat(models_daemon, SECOND, headers={"X-Appliance-Wait-For-Load": "false"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_loading"
    # The load it started goes on without it.
    assert wait_until(lambda: SECOND in _loaded(models_daemon))
    assert _chat(models_daemon, SECOND).status_code == 200


def test_a_model_loaded_on_demand_unloads_after_its_keep_alive(models_daemon: Daemon) -> None:
    _only_default_loaded(models_daemon)
    assert _chat(models_daemon, SECOND).status_code == 200
    loaded = {m["id"]: m for m in _status(models_daemon)["models"]}
    assert loaded[SECOND]["keep_alive_s"] == KEEP_ALIVE_S
    started = time.monotonic()
    assert wait_until(lambda: SECOND not in _loaded(models_daemon))
    assert time.monotonic() - started >= KEEP_ALIVE_S - 1
    assert _metric(models_daemon, f'appliance_model_unloads_total{{model="{SECOND}",reason="idle"}}') >= 1
    # The model serve started with has no keep-alive: it stays.
    default = _post(models_daemon, f"/appliance/v1/models/{MODEL_ID}/load").json()["model"]
    assert default["keep_alive_s"] is None
    time.sleep(KEEP_ALIVE_S + 1.5)
    assert _loaded(models_daemon) == [MODEL_ID]


def _stream_default(
    daemon: Daemon, max_tokens: int, first_token: concurrent.futures.Future[float]
) -> tuple[str | None, int, float]:
    """A story from the default model, streamed to ``max_tokens`` (end-of-text banned): its finish
    reason, its token count and when it ended; ``first_token`` is set when its first chunk comes."""
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Tell a story."}],
            "max_tokens": max_tokens, "temperature": 0, "stream": True, "logit_bias": NO_EOS_BIAS,
            "stream_options": {"include_usage": True}}  # fmt: skip
    finish, tokens = None, 0
    with web.stream("POST", f"{daemon.v1}/chat/completions", json=body, timeout=120) as r:
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if not first_token.done():
                first_token.set_result(time.monotonic())
            if chunk["choices"] and chunk["choices"][0]["finish_reason"]:
                finish = chunk["choices"][0]["finish_reason"]
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return finish, tokens, time.monotonic()


def test_a_busy_model_is_not_unloaded_the_new_one_waits_for_it(models_daemon: Daemon) -> None:
    _only_default_loaded(models_daemon)
    first_token = concurrent.futures.Future[float]()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        streaming = pool.submit(_stream_default, models_daemon, 200, first_token)
        first_token.result(timeout=60)
        other = pool.submit(lambda: (_chat(models_daemon, SECOND), time.monotonic()))
        finish, tokens, stream_ended = streaming.result(timeout=120)
        response, answered = other.result(timeout=120)
    assert (finish, tokens) == ("length", 200)  # never cut short to make room
    assert response.status_code == 200, response.text
    assert answered > stream_ended  # loaded only once the default model was done and unloaded
    assert _loaded(models_daemon) == [SECOND]


def test_load_and_unload_endpoints(models_daemon: Daemon) -> None:
    _only_default_loaded(models_daemon)
    loaded = _post(models_daemon, f"/appliance/v1/models/{SECOND}/load", json={"keep_alive": -1})
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["model"]["state"] == "ready"
    assert loaded.json()["model"]["keep_alive_s"] is None
    time.sleep(KEEP_ALIVE_S + 1.5)
    assert SECOND in _loaded(models_daemon)  # keep-alive -1: stays
    assert _post(models_daemon, f"/appliance/v1/models/{SECOND}/unload").json() == {
        "model": SECOND, "unloaded": True,
    }  # fmt: skip
    assert _post(models_daemon, f"/appliance/v1/models/{SECOND}/unload").json()["unloaded"] is False
    missing = _post(models_daemon, "/appliance/v1/models/no-such-model/load")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"
    assert SECOND in missing.json()["error"]["message"]  # names what is installed
    bad = _post(models_daemon, f"/appliance/v1/models/{SECOND}/load", json={"keep_alive": "soon"})
    assert bad.status_code == 400 and "keep_alive" in bad.json()["error"]["message"]


def test_serve_takes_a_store_name(tmp_path: Path) -> None:
    _store_with_second_model(tmp_path)
    daemon = start_daemon(tmp_path, SECOND, "--parallel", "1", "--ctx", "2048")
    try:
        data = web.get(f"{daemon.v1}/models", timeout=10).json()["data"]
        default = next(card for card in data if card["meta"]["default"])
        assert default["id"] == SECOND and default["loaded"] is True
    finally:
        stop_daemon(daemon)


def _broken_copy(dest: Path) -> None:
    """The default model with its final norm's weights set to NaN: it loads, but computes NaN logits."""
    import numpy as np

    from models.gguf_header import read_gguf_file

    source = embedded_model_path()
    assert source is not None
    shutil.copyfile(source, dest)
    header = read_gguf_file(dest)
    norm = next(t for t in header.tensors if t.name == "output_norm.weight")
    assert norm.type_name == "F32"
    with dest.open("r+b") as f:
        f.seek(header.data_offset + norm.offset)
        f.write(np.full(norm.n_elements, np.nan, dtype="<f4").tobytes())


def test_a_model_that_fails_its_smoke_test_is_reported_not_served(tmp_path: Path) -> None:
    # The store is read at start: this model comes through serve's argument in its own daemon.
    broken = tmp_path / "broken-model.Q4_1.gguf"
    _broken_copy(broken)
    result = subprocess.run(
        [sys.executable, "-m", "appliance", "serve", str(broken), "--port", "0", "--parallel", "1"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "APPLIANCE_HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("appliance: ") and "smoke test failed" in last and "NaN" in last
    assert "Traceback" not in result.stderr


def test_an_installed_model_that_fails_its_smoke_test_answers_503_and_is_not_kept(tmp_path: Path) -> None:
    (tmp_path / "data" / "models").mkdir(parents=True)
    _broken_copy(tmp_path / "data" / "models" / "broken-model.Q4_1.gguf")
    daemon = start_daemon(tmp_path, "--parallel", "1", "--ctx", "2048")
    try:
        response = _chat(daemon, "broken-model")
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "model_load_failed" and "NaN" in error["message"]
        assert _loaded(daemon) == [MODEL_ID]
        assert web.get(f"{daemon.url}/health", timeout=10).status_code == 200
        assert _metric(daemon, 'appliance_model_loads_total{model="broken-model",result="failed"}') == 1
    finally:
        stop_daemon(daemon)


def test_an_installed_model_too_large_for_the_budget_is_refused_before_loading(tmp_path: Path) -> None:
    # Llama 3.1 8B's shape in F16 (14.8 GB), its weights a hole in the file: the planner reads only the
    # header, so the file needs no disk, and nothing may ever load it.
    models = tmp_path / "data" / "models"
    models.mkdir(parents=True)
    make_models = load_script("make_models")
    tokenizer = embedded_model_path()
    assert tokenizer is not None
    huge = models / "huge-model.F16.gguf"
    make_models.write_f16(huge, "8b", make_models.SHAPES["8b"], tokenizer, seed=0, sparse=True)
    assert huge.stat().st_size > 13 << 30 and huge.stat().st_blocks * 512 < 16 << 20
    daemon = start_daemon(tmp_path, "--parallel", "1", "--ctx", "2048", "--max-ram", MAX_RAM)
    try:
        response = _chat(daemon, "huge-model")
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "model_too_large"
        assert "huge-model does not fit this machine" in error["message"] and "GiB" in error["message"]
        assert _loaded(daemon) == [MODEL_ID]
        assert _metric(daemon, f'appliance_fit_decisions_total{{fit="full",model="{MODEL_ID}"}}') == 1
        assert _metric(daemon, 'appliance_fit_decisions_total{fit="no",model="huge-model"}') == 1
        assert _metric(daemon, 'appliance_model_loads_total{model="huge-model"') == 0
        listed = {card["id"]: card for card in web.get(f"{daemon.v1}/models", timeout=10).json()["data"]}
        assert listed["huge-model"]["loaded"] is False
    finally:
        stop_daemon(daemon)


def _expiries(daemon: Daemon) -> dict[str, datetime]:
    """/api/ps: when each loaded model unloads if no request comes."""
    models = web.get(f"{daemon.url}/api/ps", timeout=10).json()["models"]
    return {m["model"]: datetime.fromisoformat(m["expires_at"]) for m in models}


def _ollama(daemon: Daemon, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = _post(daemon, path, json={"stream": False, **body})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _said(model: str, **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "Say hi."}],
            "options": {"num_predict": 3, "temperature": 0}, **fields}  # fmt: skip


def test_ollama_keep_alive_says_when_a_model_unloads(models_daemon: Daemon) -> None:
    _only_default_loaded(models_daemon)
    # The ollama client's preload (no messages): the model loads, nothing is generated.
    loaded = _ollama(models_daemon, "/api/chat", {"model": SECOND, "messages": [], "keep_alive": "1h"})
    assert (loaded["done"], loaded["done_reason"], loaded["message"]["content"]) == (True, "load", "")
    left_s = (_expiries(models_daemon)[SECOND] - datetime.now(timezone.utc)).total_seconds()
    assert 3500 < left_s <= 3600
    _ollama(models_daemon, "/api/chat", _said(SECOND, keep_alive=-1))  # negative: until memory is needed
    assert _expiries(models_daemon)[SECOND].year == 9999
    unloaded = f'appliance_model_unloads_total{{model="{SECOND}",reason="idle"}}'
    before = _metric(models_daemon, unloaded)
    assert _ollama(models_daemon, "/api/chat", _said(SECOND, keep_alive=0))["done"]
    assert wait_until(lambda: SECOND not in _expiries(models_daemon), timeout=10)  # 0: once it is done
    # Counted once the unload is over (/api/ps stops listing it as soon as the unload starts).
    assert wait_until(lambda: _metric(models_daemon, unloaded) == before + 1, timeout=10)
    assert _ollama(models_daemon, "/api/embed", {"model": SECOND, "input": "hi", "keep_alive": "0s"})
    assert wait_until(lambda: SECOND not in _expiries(models_daemon), timeout=10)
    # An empty prompt with keep_alive 0 unloads before it answers; without, the default model comes back
    # as it was: loaded until its memory is needed.
    _post(models_daemon, f"/appliance/v1/models/{MODEL_ID}/load")
    gone = _ollama(models_daemon, "/api/generate", {"model": MODEL_ID, "prompt": "", "keep_alive": 0})
    assert (gone["done_reason"], gone["response"]) == ("unload", "") and _expiries(models_daemon) == {}
    assert _ollama(models_daemon, "/api/generate", {"model": MODEL_ID})["done_reason"] == "load"
    assert _expiries(models_daemon)[MODEL_ID].year == 9999
    bad = _post(models_daemon, "/api/chat", json=_said(MODEL_ID, keep_alive="soon"))
    assert bad.status_code == 400 and "keep_alive" in bad.json()["error"]


def test_keep_alive_0_waits_for_the_requests_the_model_serves(models_daemon: Daemon) -> None:
    _only_default_loaded(models_daemon)
    first_token = concurrent.futures.Future[float]()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        streaming = pool.submit(_stream_default, models_daemon, 40, first_token)
        first_token.result(timeout=60)
        assert _ollama(models_daemon, "/api/chat", _said(MODEL_ID, keep_alive=0))["done"]
        assert streaming.result(timeout=120)[:2] == ("length", 40)  # not cut short by the unload
    assert wait_until(lambda: MODEL_ID not in _expiries(models_daemon), timeout=10)


def test_any_dialects_request_keeps_a_model_warm(models_daemon: Daemon) -> None:
    _only_default_loaded(models_daemon)
    _ollama(models_daemon, "/api/generate", {"model": SECOND, "keep_alive": "30s"})
    first = _expiries(models_daemon)[SECOND]
    time.sleep(1.2)
    assert _chat(models_daemon, SECOND).status_code == 200  # OpenAI's: the expiry moves on
    assert (_expiries(models_daemon)[SECOND] - first).total_seconds() >= 1
    loaded = {m["id"]: m for m in _status(models_daemon)["models"]}
    assert loaded[SECOND]["keep_alive_s"] == 30  # the keep-alive an Ollama request set stays


def test_without_preload_the_daemon_starts_empty_and_loads_on_the_first_request(tmp_path: Path) -> None:
    """`serve --no-preload` (Ollama's way): healthy with no model loaded, the first request loads the
    model serve names, and it unloads after model.keep_alive like any model loaded on demand."""
    daemon = start_daemon(tmp_path, "--no-preload", env={"APPLIANCE_MODEL__KEEP_ALIVE": f"{KEEP_ALIVE_S}s"})
    try:
        assert _loaded(daemon) == []
        assert web.get(f"{daemon.url}/health").json()["status"] == "ok"
        installed = web.get(f"{daemon.url}/appliance/v1/models").json()["models"]
        assert [(m["id"], m["default"], m["loaded"]) for m in installed] == [(MODEL_ID, True, False)]
        assert _chat(daemon, MODEL_ID).status_code == 200
        assert _status(daemon)["models"][0]["keep_alive_s"] == KEEP_ALIVE_S
        assert wait_until(lambda: _loaded(daemon) == [], 30)
        assert "loading smollm2-135m-instruct" in daemon.log() and "(idle)" in daemon.log()
    finally:
        stop_daemon(daemon)
