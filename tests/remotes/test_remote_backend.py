"""appliance.remotes.backend.RemoteBackend against the real vLLM stand-in: the remote's log-probabilities
come back in the same events as the local engine's (TextDelta.logprobs), for chats and completions, the
same tokens and values as vLLM's own non-streamed answer."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from appliance.backend import ChatParams, CompletionParams, Event, Finished, SamplingParams, TextDelta
from appliance.config import RemoteSettings
from appliance.remotes.backend import RemoteBackend
from appliance.remotes.pool import Remote
from tests import web
from tests.remotes.conftest import REMOTE_MODEL, Standin

ASK = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = SamplingParams(temperature=0)


def _events(standin: Standin, params: ChatParams | CompletionParams) -> list[Event]:
    async def run() -> list[Event]:
        async with httpx.AsyncClient() as client:
            settings = RemoteSettings(name="gpu-box", kind="vllm", base_url=standin.url)
            remote = Remote(settings, base_url=standin.url)
            backend = RemoteBackend(client, remote, "big-model", REMOTE_MODEL)
            stream = await (
                backend.chat(params) if isinstance(params, ChatParams) else backend.complete(params)
            )
            return [event async for event in stream]

    return asyncio.run(run())


def _vllm(standin: Standin, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """vLLM's own answer, not streamed, greedy."""
    body = {"model": REMOTE_MODEL, "temperature": 0, **body}
    response = web.post(f"{standin.url}{path}", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]  # type: ignore[no-any-return]


def test_a_chat_through_the_remote_backend_keeps_the_logprobs(standin: Standin) -> None:
    events = _events(standin, ChatParams(ASK, GREEDY, max_tokens=6, top_logprobs=2))
    deltas = [e for e in events if isinstance(e, TextDelta)]
    logprobs = [lp for delta in deltas for lp in delta.logprobs]
    there = _vllm(standin, "/v1/chat/completions",
                  {"messages": ASK, "max_tokens": 6, "logprobs": True, "top_logprobs": 2})  # fmt: skip
    expected = there["logprobs"]["content"]
    assert logprobs and "".join(d.text for d in deltas) == there["message"]["content"]
    assert [(lp.token, lp.token_bytes) for lp in logprobs] == [
        (e["token"], bytes(e["bytes"])) for e in expected
    ]
    assert [lp.logprob for lp in logprobs] == pytest.approx([e["logprob"] for e in expected], abs=1e-3)
    assert all(len(lp.top) == 2 and lp.top[0][:2] == (lp.token, lp.token_bytes) for lp in logprobs)  # greedy
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.usage.completion_tokens == len(logprobs)

    unasked = _events(standin, ChatParams(ASK, GREEDY, max_tokens=6))
    assert not any(e.logprobs for e in unasked if isinstance(e, TextDelta))


def test_a_completion_through_the_remote_backend_keeps_the_logprobs(standin: Standin) -> None:
    prompt = "The capital of France is"
    events = _events(standin, CompletionParams(prompt, GREEDY, max_tokens=5, top_logprobs=3))
    deltas = [e for e in events if isinstance(e, TextDelta)]
    logprobs = [lp for delta in deltas for lp in delta.logprobs]
    there = _vllm(standin, "/v1/completions", {"prompt": prompt, "max_tokens": 5, "logprobs": 3})
    expected = there["logprobs"]
    assert logprobs and "".join(d.text for d in deltas) == there["text"]
    assert [lp.token for lp in logprobs] == expected["tokens"]
    assert [lp.logprob for lp in logprobs] == pytest.approx(expected["token_logprobs"], abs=1e-3)
    assert [{t: v for t, _, v in lp.top} for lp in logprobs] == [
        pytest.approx(top, abs=1e-3) for top in expected["top_logprobs"]
    ]
