"""Raw completions and embeddings against the real daemon."""

from __future__ import annotations

import base64
import math

import numpy as np
import openai

from tests import web
from tests.server.conftest import MODEL_ID, NO_EOS_BIAS, Daemon

N_EMBD = 576  # SmolLM2-135M's hidden size


def test_completion(client: openai.OpenAI) -> None:
    reply = client.completions.create(
        model=MODEL_ID,
        prompt="The capital of France is",
        max_tokens=6,
        temperature=0,
        extra_body={"logit_bias": NO_EOS_BIAS},
    )
    assert reply.object == "text_completion"
    assert reply.choices[0].text and reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 6
    assert reply.usage.prompt_tokens == 5


def test_a_raw_prompt_written_in_the_chat_format_reads_its_special_tokens(client: openai.OpenAI) -> None:
    """As llama-server and Ollama (raw) do: a client that writes the template itself (Continue's own FIM
    prompt, scripts) gets `<|im_end|>` as the special token, not as seven tokens of text."""
    prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    reply = client.completions.create(model=MODEL_ID, prompt=prompt, max_tokens=8, temperature=0)
    assert reply.usage is not None and reply.usage.prompt_tokens == 16
    assert "Paris" in reply.choices[0].text


def test_completion_echo_and_logprobs(client: openai.OpenAI) -> None:
    prompt = "The capital of France is"
    reply = client.completions.create(
        model=MODEL_ID,
        prompt=prompt,
        max_tokens=4,
        temperature=0,
        echo=True,
        logprobs=2,
        extra_body={"logit_bias": NO_EOS_BIAS},
    )
    choice = reply.choices[0]
    assert choice.text.startswith(prompt)
    assert choice.logprobs is not None
    assert len(choice.logprobs.tokens or []) == 4
    assert all(len(top) == 2 for top in choice.logprobs.top_logprobs or [])
    generated = "".join(choice.logprobs.tokens or [])
    assert choice.text == prompt + generated


def test_completion_from_token_ids(client: openai.OpenAI) -> None:
    by_text = client.completions.create(model=MODEL_ID, prompt="Hello", max_tokens=3, temperature=0)
    tokens = [1, 19556]  # not checked against the vocabulary: any valid ids must work
    by_ids = client.completions.create(model=MODEL_ID, prompt=tokens, max_tokens=3, temperature=0)
    assert by_text.choices[0].text is not None and by_ids.usage is not None
    assert by_ids.usage.prompt_tokens == 2


def test_embeddings_are_normalised(client: openai.OpenAI) -> None:
    # The openai client asks for base64 and decodes it when no format is given; ask for floats too.
    for extra in ({}, {"encoding_format": "float"}):
        result = client.embeddings.create(
            model=MODEL_ID,
            input=["The sea is blue.", "Cats purr."],
            **extra,  # type: ignore[arg-type]
        )
        assert [d.index for d in result.data] == [0, 1]
        for item in result.data:
            assert len(item.embedding) == N_EMBD
            assert math.isclose(math.sqrt(sum(x * x for x in item.embedding)), 1.0, rel_tol=1e-4)
        assert result.usage.prompt_tokens == result.usage.total_tokens > 4


def test_embeddings_base64_is_little_endian_float32(daemon: Daemon) -> None:
    body = {"input": "The sea is blue."}
    floats = web.post(f"{daemon.v1}/embeddings", json=body).json()["data"][0]["embedding"]
    packed = web.post(f"{daemon.v1}/embeddings", json={**body, "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, floats, atol=1e-6)


def test_embeddings_are_meaningful(client: openai.OpenAI) -> None:
    vectors = [
        d.embedding
        for d in client.embeddings.create(
            model=MODEL_ID, input=["I love my dog.", "I adore my puppy.", "Quarterly tax filing deadlines."]
        ).data
    ]

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])


def test_embedding_single_string_and_tokens(daemon: Daemon) -> None:
    one = web.post(f"{daemon.v1}/embeddings", json={"input": "hello"}).json()
    assert len(one["data"]) == 1 and len(one["data"][0]["embedding"]) == N_EMBD
    ids = web.post(f"{daemon.v1}/embeddings", json={"input": [1, 2, 3]}).json()
    assert ids["usage"]["prompt_tokens"] == 3


def test_chat_still_works_after_embeddings(client: openai.OpenAI) -> None:
    before = client.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=8, temperature=0
    )
    client.embeddings.create(model=MODEL_ID, input="something else entirely")
    after = client.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=8, temperature=0
    )
    assert before.choices[0].message.content == after.choices[0].message.content
