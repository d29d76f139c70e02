"""The daemon's HTTP API, asynchronously (the TUI) and synchronously (the command line). Both share the
routes, the key header, the SSE and NDJSON framing and the error mapping below; each method is a line or
two over them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from client.errors import DaemonUnreachable, NotADaemon, error_reply, from_body

STATUS = "/appliance/v1/status"
MODELS = "/appliance/v1/models"
REMOTES = "/appliance/v1/remotes"
LOGS = "/appliance/v1/logs"
PULL = "/appliance/v1/models/pull"
CHAT = "/v1/chat/completions"
OPENAI_MODELS = "/v1/models"


def _model(name: str, action: str = "") -> str:
    return f"{MODELS}/{name}" + (f"/{action}" if action else "")


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def chat_body(messages: list[dict[str, str]], model: str | None = None, **params: Any) -> dict[str, Any]:
    """A streaming chat request; parameters that are None are left to the daemon."""
    body: dict[str, Any] = {"messages": messages, "stream": True}
    if model:
        body["model"] = model
    body.update({k: v for k, v in params.items() if v is not None})
    return body


def sse_chunk(line: str) -> dict[str, Any] | None:
    """One SSE line's JSON chunk; None for other lines and the closing ``[DONE]``. An error event (the
    reply failed after the stream began) raises ErrorReply."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if data == "[DONE]":
        return None
    chunk = json.loads(data)
    if isinstance(chunk, dict) and "error" in chunk:
        raise error_reply(chunk["error"], None, "the stream failed")
    return chunk if isinstance(chunk, dict) else None


def delta_text(chunk: dict[str, Any]) -> str:
    """The text a chat completion chunk adds."""
    return "".join((c.get("delta") or {}).get("content") or "" for c in chunk.get("choices") or [])


def _timeout(timeout_s: float | None) -> httpx.Timeout:
    """``timeout_s`` for each read, and for connecting at most 10 s."""
    return httpx.Timeout(10 if timeout_s is None else min(10, timeout_s), read=timeout_s)


def _json(url: str, response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise from_body(url, response.status_code, response.content)
    try:
        return response.json()
    except ValueError:
        raise NotADaemon(url, response.status_code) from None


class _Base:
    def __init__(self, url: str, api_key: str | None) -> None:
        self.url = url.rstrip("/")
        self.headers = _headers(api_key)

    def _unreachable(self, exc: Exception) -> DaemonUnreachable:
        return DaemonUnreachable(self.url, exc)


class AsyncDaemonClient(_Base):
    """The daemon at ``url`` (or any OpenAI-compatible server, for the OpenAI routes), asynchronously;
    every failure is a :class:`ClientError`. ``timeout_s`` bounds connecting and each read of the
    requests that are not streams."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
        stream_read_timeout_s: float | None = None,
    ) -> None:
        super().__init__(url, api_key)
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=self.headers, timeout=_timeout(timeout_s), transport=transport
        )
        self._stream_timeout = httpx.Timeout(10, read=stream_read_timeout_s)

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        return _json(self.url, response)

    async def status(self) -> dict[str, Any]:
        """GET /appliance/v1/status: hardware, loaded models, queue."""
        result: dict[str, Any] = await self._request("GET", STATUS)
        return result

    async def models(self) -> list[dict[str, Any]]:
        """The installed models with their state."""
        result: list[dict[str, Any]] = (await self._request("GET", MODELS))["models"]
        return result

    async def remotes(self) -> dict[str, Any]:
        """The remotes as the daemon sees them."""
        result: dict[str, Any] = await self._request("GET", REMOTES)
        return result

    async def logs(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest requests."""
        result: list[dict[str, Any]] = (await self._request("GET", LOGS, params={"limit": limit}))["requests"]
        return result

    async def load(self, name: str) -> None:
        """Load an installed model (and wait until it is ready)."""
        await self._request("POST", _model(name, "load"), timeout=600)

    async def unload(self, name: str) -> None:
        """Unload a model."""
        await self._request("POST", _model(name, "unload"), timeout=600)

    async def remove(self, name: str) -> None:
        """Remove a model from the daemon's store."""
        await self._request("DELETE", _model(name), timeout=60)

    async def _lines(self, path: str, body: dict[str, Any]) -> AsyncIterator[str]:
        try:
            async with self._http.stream("POST", path, json=body, timeout=self._stream_timeout) as response:
                if response.status_code != 200:
                    raise from_body(self.url, response.status_code, await response.aread())
                async for line in response.aiter_lines():
                    yield line
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None

    async def openai_models(self) -> list[str]:
        """The model ids GET /v1/models lists (any OpenAI-compatible server answers it)."""
        data = await self._request("GET", OPENAI_MODELS)
        try:
            return [str(m["id"]) for m in data["data"]]
        except (KeyError, TypeError):
            raise NotADaemon(self.url, 200) from None

    async def chat_chunks(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """A streamed chat completion's chunks as they arrive (``body`` as OpenAI's, ``stream`` set)."""
        try:
            async for line in self._lines(CHAT, {**body, "stream": True}):
                chunk = sse_chunk(line)
                if chunk is not None:
                    yield chunk
        except ValueError:  # a line that is not JSON: not an OpenAI stream
            raise NotADaemon(self.url, 200) from None

    async def chat_stream(
        self, model: str | None, messages: list[dict[str, str]], **params: Any
    ) -> AsyncIterator[str]:
        """The reply's text as it streams (OpenAI chat completions over SSE)."""
        async for chunk in self.chat_chunks(chat_body(messages, model, **params)):
            if text := delta_text(chunk):
                yield text

    async def pull_stream(self, ref: str) -> AsyncIterator[dict[str, Any]]:
        """The daemon's pull progress events (NDJSON); the pull goes on if we stop reading."""
        async for line in self._lines(PULL, {"model": ref}):
            if line.strip():
                yield json.loads(line)

    async def close(self) -> None:
        """Close the connections."""
        await self._http.aclose()


class SyncDaemonClient(_Base):
    """The daemon at ``url``, for the command line; every failure is a :class:`ClientError`.
    ``timeout_s`` bounds connecting and each read."""

    def __init__(self, url: str, api_key: str | None = None, timeout_s: float | None = 600) -> None:
        super().__init__(url, api_key)
        self._http = httpx.Client(
            base_url=self.url,
            headers=self.headers,
            timeout=_timeout(timeout_s),
        )

    def __enter__(self) -> SyncDaemonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        return _json(self.url, response)

    def remotes(self) -> dict[str, Any]:
        """The remotes as the daemon sees them."""
        result: dict[str, Any] = self._request("GET", REMOTES)
        return result

    def model_card(self, model: str) -> dict[str, Any]:
        """GET /v1/models/MODEL: the model's card (with our ``meta``: its file, capabilities, results)."""
        result: dict[str, Any] = self._request("GET", f"{OPENAI_MODELS}/{model}")
        return result

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """One chat completion, not streamed (``body`` as OpenAI's)."""
        result: dict[str, Any] = self._request("POST", CHAT, json={**body, "stream": False})
        return result

    def chat_stream(self, model: str | None, messages: list[dict[str, str]], **params: Any) -> Iterator[str]:
        """The reply's text as it streams."""
        try:
            with self._http.stream("POST", CHAT, json=chat_body(messages, model, **params)) as response:
                if response.status_code != 200:
                    raise from_body(self.url, response.status_code, response.read())
                for line in response.iter_lines():
                    chunk = sse_chunk(line)
                    if chunk is not None and (text := delta_text(chunk)):
                        yield text
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        except ValueError:  # a line that is not JSON: not our daemon's stream
            raise NotADaemon(self.url, 200) from None

    def close(self) -> None:
        """Close the connections."""
        self._http.close()
