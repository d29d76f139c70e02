"""Where golden-set replies come from: a running daemon over its OpenAI API, or the model loaded here.

Both generate greedily (temperature 0, seed 0) with the case's token limit and JSON format, through the
same engine, chat template and grammar the daemon serves with; so a golden set run here and one run
against a daemon serving the same file give the same replies.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from appliance.backend import ChatParams, TextDelta
from appliance.cli_chat import error_line
from appliance.engine.params import LoadOptions, SamplingParams
from appliance.errors import ApplianceError
from appliance.evaluation.golden import Case

GREEDY = SamplingParams(temperature=0.0, seed=0)


class EvalError(Exception):
    """The evaluation cannot go on (no daemon, a model that does not load): one readable line."""


class CaseError(Exception):
    """One case could not be answered (its prompt overflows the context, say): that case fails."""


class DaemonReplies:
    """Replies from the daemon at ``url``, for the model it serves as ``model``."""

    def __init__(self, url: str, model: str, api_key: str | None = None, timeout_s: float = 600) -> None:
        self.url = url.rstrip("/")
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(10, read=timeout_s))

    def __enter__(self) -> DaemonReplies:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def reply(self, case: Case) -> str:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": case.chat(),
            "max_tokens": case.max_tokens,
            "temperature": 0,
            "seed": 0,
        }
        schema = case.json_schema()
        if case.format == "json":
            body["response_format"] = {"type": "json_object"}
        elif schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": schema},
            }
        try:
            response = self._client.post(f"{self.url}/v1/chat/completions", json=body)
        except httpx.ConnectError:
            raise EvalError(f"no daemon answers at {self.url}: start one with `appliance serve`") from None
        except httpx.HTTPError as exc:
            raise EvalError(f"{self.url}: {type(exc).__name__}") from None
        if response.status_code in (401, 404) or response.status_code >= 500:
            raise EvalError(error_line(response))  # the same for every case: stop at the first
        if response.status_code != 200:
            raise CaseError(error_line(response))
        message = response.json()["choices"][0]["message"]
        return str(message.get("content") or "")


class LocalReplies:
    """Replies from ``path`` loaded in this process with ``options`` (and ``fallbacks`` tried in turn if
    the load fails for memory), as the daemon's engine serves it; freed on exit."""

    def __init__(self, path: Path, model_id: str, options: LoadOptions, fallbacks: list[LoadOptions]) -> None:
        from appliance.engine.local import LocalLlamaBackend  # loads llama.cpp

        self._loop = asyncio.new_event_loop()
        self._backend = LocalLlamaBackend(path, model_id, options, fallbacks=fallbacks)

    def __enter__(self) -> LocalReplies:
        from appliance.engine.local import ModelState

        backend = self._backend
        backend.start()
        while backend.state is ModelState.LOADING:
            time.sleep(0.05)
        if backend.state is not ModelState.READY:
            self.__exit__(None, None, None)
            raise EvalError(f"{backend.path.name} does not load: {backend.error}")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._backend.close()
        self._loop.close()

    @property
    def options(self) -> LoadOptions:
        """What the model was loaded with (a fallback's, if the plan's did not load)."""
        return self._backend.options

    def reply(self, case: Case) -> str:
        params = ChatParams(
            messages=case.chat(), sampling=GREEDY, max_tokens=case.max_tokens, json_schema=case.json_schema()
        )
        try:
            return self._loop.run_until_complete(self._reply(params))
        except ApplianceError as exc:
            raise CaseError(exc.message) from None

    async def _reply(self, params: ChatParams) -> str:
        stream = await self._backend.chat(params)
        return "".join([event.text async for event in stream if isinstance(event, TextDelta)])
