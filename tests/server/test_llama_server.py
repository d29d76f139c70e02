"""llama-server's own endpoints and fill-in-the-middle, on real daemons with the official clients.

One daemon for this module serves a copy of the default model given FIM tokens on spare special tokens
(gguf-new-metadata --special-token-by-id, as a user would) and a tiny synthetic reranker
(tests/synthetic_reranker.py). Every middle is checked against the same prompt sent as token ids to
/v1/completions: greedy, the two answers are equal only if the prompt was assembled as llama-server
assembles it. The default model (no FIM tokens, not a reranker) is asked on the session daemon."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import ollama
import openai
import pytest

from models.embedded import embedded_model_path
from tests import web
from tests.server.conftest import MODEL_ID, Daemon, error_shape_ok, start_daemon, stop_daemon
from tests.synthetic_reranker import write_reranker

FIM_MODEL, RERANKER = "smollm2-fim", "tiny-reranker"
# SmolLM2's spare special tokens: <jupyter_start>, <jupyter_text>, <jupyter_code>; <reponame>, <file_sep>.
PRE, SUF, MID, REP, SEP = 11, 12, 13, 4, 5
PREFIX, SUFFIX = "def add(a, b):\n    ", "\n\nprint(add(1, 2))\n"
GREEDY = {"temperature": 0, "max_tokens": 4}


@pytest.fixture(scope="module")
def fim_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    source = embedded_model_path()
    assert source is not None, "the [default-model] extra is needed"
    home = tmp_path_factory.mktemp("fim")
    store = home / "data" / "models"
    store.mkdir(parents=True)
    ids = [arg for name, token in (("fim_pre", PRE), ("fim_suf", SUF), ("fim_mid", MID), ("fim_rep", REP),
                                   ("fim_sep", SEP))
           for arg in ("--special-token-by-id", name, str(token))]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "gguf.scripts.gguf_new_metadata", *ids, "--force",
                           str(source), str(store / f"{FIM_MODEL}.gguf")],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    write_reranker(store / f"{RERANKER}.gguf", source)
    daemon = start_daemon(home, FIM_MODEL, "--parallel", "1", "--ctx", "2048")
    yield daemon
    stop_daemon(daemon)


def _tokens(daemon: Daemon, text: str, model: str = FIM_MODEL) -> list[int]:
    answer = web.post(
        f"{daemon.url}/tokenize", json={"model": model, "content": text, "parse_special": False}
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["tokens"]  # type: ignore[no-any-return]


def _expected(daemon: Daemon, prefix: str, suffix: str, files: tuple[tuple[str, str], ...] = ()) -> list[int]:
    """The FIM prompt llama-server builds for a model with FIM_REP and FIM_SEP (within its budgets)."""
    extra = [REP, *_tokens(daemon, "myproject\n")]
    for name, text in files:
        extra += [SEP, *_tokens(daemon, name + "\n"), *_tokens(daemon, text)]
    extra += [SEP, *_tokens(daemon, "filename\n")]
    return [*extra, PRE, *_tokens(daemon, prefix), SUF, *_tokens(daemon, suffix), MID]


def _greedy_text(daemon: Daemon, prompt: list[int]) -> str:
    """What the model writes after ``prompt`` (token ids) at temperature 0."""
    completion = daemon.client().completions.create(model=FIM_MODEL, prompt=prompt, **GREEDY)  # type: ignore[arg-type]
    return completion.choices[0].text


def test_suffix_through_the_openai_and_ollama_clients(fim_daemon: Daemon) -> None:
    expected = _expected(fim_daemon, PREFIX, SUFFIX)
    middle = fim_daemon.client().completions.create(model=FIM_MODEL, prompt=PREFIX, suffix=SUFFIX, **GREEDY)  # type: ignore[call-overload]
    assert middle.usage.prompt_tokens == len(expected)
    assert middle.choices[0].text  # greedy, this model writes something: the comparisons below compare text
    assert middle.choices[0].text == _greedy_text(fim_daemon, expected)
    # The ollama client's generate with a suffix: the FIM tokens frame it, no template (raw or not).
    answer = ollama.Client(host=fim_daemon.url).generate(
        model=FIM_MODEL, prompt=PREFIX, suffix=SUFFIX, options={"temperature": 0, "num_predict": 4}
    )
    assert answer.prompt_eval_count == len(expected)
    assert answer.response == middle.choices[0].text


def test_infill_with_repository_files_whole_and_streamed(fim_daemon: Daemon) -> None:
    files = (("util.py", "def sub(a, b):\n    return a - b\n"), ("main.py", "import util\n"))
    body = {"model": FIM_MODEL, "input_prefix": PREFIX, "input_suffix": SUFFIX, "n_predict": 4,
            "temperature": 0, "input_extra": [{"filename": n, "text": t} for n, t in files]}  # fmt: skip
    expected = _expected(fim_daemon, PREFIX, SUFFIX, files)
    whole = web.post(f"{fim_daemon.url}/infill", json=body, timeout=120)
    assert whole.status_code == 200, whole.text
    answer = whole.json()
    assert answer["tokens_evaluated"] == len(expected) and answer["stop"] is True
    assert answer["content"] == _greedy_text(fim_daemon, expected)
    assert answer["tokens_predicted"] <= 4 and answer["model"] == FIM_MODEL

    with web.stream(
        "POST", f"{fim_daemon.url}/infill", json={**body, "stream": True}, timeout=120
    ) as streamed:
        assert streamed.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in streamed.iter_lines() if line.startswith("data: ")]
    assert all(not e["stop"] for e in events[:-1]) and events[-1]["stop"] is True  # no [DONE]: its last
    assert "".join(e["content"] for e in events) == answer["content"]
    assert events[-1]["tokens_evaluated"] == len(expected)


def test_a_reranker_scores_each_document_deterministically_best_first(fim_daemon: Daemon) -> None:
    documents = ["hi", "The giant panda is a bear species endemic to China.", "pandas is a Python library",
                 "it is a bear"]  # fmt: skip

    def rerank(path: str, **fields: Any) -> dict[str, Any]:
        answer = web.post(f"{fim_daemon.url}{path}", timeout=120,
                          json={"model": RERANKER, "query": "What is a panda?", **fields})  # fmt: skip
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]

    ranked = rerank("/v1/rerank", documents=documents)
    results = ranked["results"]
    assert sorted(r["index"] for r in results) == [0, 1, 2, 3]
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == 4
    assert ranked["usage"]["prompt_tokens"] > 0 and "document" not in results[0]
    score_of = {r["index"]: r["relevance_score"] for r in results}
    # Cohere's document objects, another order, the other path: each text keeps its score.
    again = rerank("/rerank", documents=[{"text": d} for d in reversed(documents)], top_n=2,
                   return_documents=True)  # fmt: skip
    assert [r["document"]["text"] for r in again["results"]] == [documents[r["index"]] for r in results[:2]]
    assert [r["relevance_score"] for r in again["results"]] == [score_of[r["index"]] for r in results[:2]]

    refused = web.post(
        f"{fim_daemon.url}/v1/rerank", json={"model": FIM_MODEL, "query": "q", "documents": ["d"]}
    )
    assert refused.status_code == 400 and "is not a reranker" in refused.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError, match="is a reranker"):
        fim_daemon.client().chat.completions.create(
            model=RERANKER, messages=[{"role": "user", "content": "hi"}]
        )


# -- on the session daemon: the default model, which has no FIM tokens and is no reranker ---------------


def test_a_model_without_fim_tokens_is_a_clear_400_in_each_dialect(daemon: Daemon) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        daemon.client().completions.create(model=MODEL_ID, prompt=PREFIX, suffix=SUFFIX, max_tokens=4)
    message = raised.value.body["message"]  # type: ignore[index]
    assert MODEL_ID in message and "fim_pre, fim_suf, fim_mid" in message
    with pytest.raises(ollama.ResponseError) as refused:
        ollama.Client(host=daemon.url).generate(model=MODEL_ID, prompt=PREFIX, suffix=SUFFIX)
    assert refused.value.status_code == 400 and MODEL_ID in refused.value.error
    infill = web.post(f"{daemon.url}/infill", json={"input_prefix": PREFIX, "input_suffix": SUFFIX})
    assert infill.status_code == 400 and error_shape_ok("/infill", infill)
    assert "cannot fill in the middle" in infill.json()["error"]["message"]


def test_tokenize_and_detokenize_round_trip(daemon: Daemon) -> None:
    text = "Grüße, 世界! <|im_end|>"
    tokens = web.post(f"{daemon.url}/tokenize", json={"content": text}).json()["tokens"]
    assert 2 in tokens  # <|im_end|> parsed as its special token, llama-server's default
    assert web.post(f"{daemon.url}/detokenize", json={"tokens": tokens}).json() == {"content": text}
    plain = web.post(f"{daemon.url}/tokenize", json={"content": text, "parse_special": False}).json()[
        "tokens"
    ]
    assert 2 not in plain and len(plain) > len(tokens)
    pieces = web.post(f"{daemon.url}/tokenize", json={"content": text, "with_pieces": True}).json()["tokens"]
    assert [p["id"] for p in pieces] == tokens
    # A piece is text when it is whole UTF-8, else its bytes (a character split across tokens).
    joined = b"".join(
        p["piece"].encode() if isinstance(p["piece"], str) else bytes(p["piece"]) for p in pieces
    )
    assert joined.decode() == text
    mixed = web.post(f"{daemon.url}/tokenize", json={"content": ["Hi", 2, " there"]}).json()["tokens"]
    assert mixed[len(mixed) - len(_tokens(daemon, " there", MODEL_ID)) - 1] == 2


@pytest.mark.parametrize(
    ("path", "body"),
    [("/detokenize", {"tokens": [49152]}), ("/detokenize", {"tokens": [-1]}),
     ("/detokenize", {"tokens": [2**40]}), ("/detokenize", {"tokens": ["a"]}),
     ("/detokenize", {"tokens": "1 2"}), ("/tokenize", {"content": [1, 99999999]}),
     ("/tokenize", {"content": 5}), ("/tokenize", {}), ("/tokenize", {"content": "a", "with_pieces": "yes"}),
     ("/apply-template", {"messages": []}), ("/infill", {"input_prefix": "a"}),
     ("/v1/rerank", {"query": "q", "documents": []}), ("/v1/rerank", {"query": "q", "documents": ["d"]})],
)  # fmt: skip
def test_bad_input_is_a_400_in_openais_shape(daemon: Daemon, path: str, body: dict[str, Any]) -> None:
    answer = web.post(f"{daemon.url}{path}", json=body)
    assert answer.status_code == 400, answer.text
    assert error_shape_ok(path, answer)
    assert web.get(f"{daemon.url}/health").status_code == 200  # llama.cpp read no id out of range


def test_apply_template_renders_what_a_chat_would(daemon: Daemon) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]  # fmt: skip
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    for extra in ({}, {"tools": tools}):
        body = {"model": MODEL_ID, "messages": messages, **extra}
        prompt = web.post(f"{daemon.url}/apply-template", json=body).json()["prompt"]
        assert prompt.endswith("<|im_start|>assistant\n") and "Weather in Paris?" in prompt
        assert ("get_weather" in prompt) == bool(extra)
        chat = web.post(f"{daemon.v1}/chat/completions", json={**body, "max_tokens": 1}, timeout=120).json()
        counted = web.post(f"{daemon.url}/tokenize", json={"content": prompt, "add_special": True}).json()
        assert chat["usage"]["prompt_tokens"] == len(counted["tokens"])
