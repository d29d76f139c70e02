"""Where golden-set replies come from: a running daemon over its OpenAI API, or the model loaded here.

Both generate greedily (temperature 0, seed 0) with the case's token limit and JSON format, through the
same engine, chat template and grammar the daemon serves with; so a golden set run here and one run
against a daemon serving the same file give the same replies.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import client
from appliance.backend import ChatParams, Finished, TextDelta
from appliance.engine.params import LoadOptions, SamplingParams
from appliance.errors import ApplianceError
from appliance.evaluation import CaseError, EvalError
from appliance.evaluation.golden import Case

GREEDY = SamplingParams(temperature=0.0, seed=0)


@dataclass
class Answer:
    """A whole reply as the probe reads it: the text, the thinking kept apart, and the tool calls as
    (name, arguments JSON text)."""

    content: str = ""
    reasoning: str = ""
    calls: list[tuple[str, str]] = field(default_factory=list)


def _response_format(schema: dict[str, Any] | None) -> dict[str, Any]:
    return {} if schema is None else {
        "response_format": {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}}
    }  # fmt: skip


class DaemonReplies:
    """Replies from the daemon at ``url``, for the model it serves as ``model``."""

    def __init__(self, url: str, model: str, api_key: str | None = None, timeout_s: float = 600) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self._daemon = client.SyncDaemonClient(self.url, api_key, timeout_s)

    def __enter__(self) -> DaemonReplies:
        return self

    def __exit__(self, *exc: object) -> None:
        self._daemon.close()

    def card(self) -> dict[str, Any]:
        """The model's card as the daemon describes it."""
        try:
            return self._daemon.model_card(self.model)
        except client.DaemonUnreachable as exc:
            raise EvalError(exc.hint) from None
        except client.ClientError as exc:
            raise EvalError(str(exc)) from None

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
        message = self._message(body)
        return str(message.get("content") or "")

    def _message(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            answer = self._daemon.chat(body)
        except client.DaemonUnreachable as exc:
            raise EvalError(exc.hint) from None
        except client.ErrorReply as exc:
            status = exc.status or 500
            if status in (401, 404) or status >= 500:
                raise EvalError(str(exc)) from None  # the same for every case: stop at the first
            raise CaseError(str(exc)) from None
        except client.ClientError as exc:
            raise EvalError(str(exc)) from None
        message: dict[str, Any] = answer["choices"][0]["message"]
        return message

    def answer(
        self,
        messages: list[dict[str, Any]],
        max_tokens: int,
        tools: list[dict[str, Any]] | None = None,
        schema: dict[str, Any] | None = None,
    ) -> Answer:
        """The whole reply to ``messages`` (greedy), with ``tools`` under tool_choice auto or held to
        ``schema``."""
        body: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": max_tokens,
                                "temperature": 0, "seed": 0, **_response_format(schema)}  # fmt: skip
        if tools:
            body.update(tools=tools, tool_choice="auto")
        message = self._message(body)
        calls = [(str(c["function"]["name"]), str(c["function"]["arguments"]))
                 for c in message.get("tool_calls") or []]  # fmt: skip
        return Answer(str(message.get("content") or ""), str(message.get("reasoning_content") or ""), calls)


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

    def answer(
        self,
        messages: list[dict[str, Any]],
        max_tokens: int,
        tools: list[dict[str, Any]] | None = None,
        schema: dict[str, Any] | None = None,
    ) -> Answer:
        """As DaemonReplies.answer, from the model loaded here."""
        params = ChatParams(messages=messages, sampling=GREEDY, max_tokens=max_tokens, json_schema=schema,
                            tools=tools or [], tool_choice="auto" if tools else None)  # fmt: skip
        try:
            return self._loop.run_until_complete(self._answer(params))
        except ApplianceError as exc:
            raise CaseError(exc.message) from None

    async def _answer(self, params: ChatParams) -> Answer:
        answer = Answer()
        async for event in await self._backend.chat(params):
            if isinstance(event, TextDelta):
                answer.content += event.text
                answer.reasoning += event.reasoning
            elif isinstance(event, Finished):
                answer.calls = [(call.name, call.arguments) for call in event.tool_calls]
        return answer

    async def _reply(self, params: ChatParams) -> str:
        stream = await self._backend.chat(params)
        return "".join([event.text async for event in stream if isinstance(event, TextDelta)])
