"""The TUI's only way to the daemon: its HTTP API (what the TUI shows, a script can get too)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx


class DaemonUnreachable(Exception):
    """The daemon is not answering; one line why."""


class ContextFull(RuntimeError):
    """The conversation no longer fits the model's context (OpenAI's ``context_length_exceeded``)."""


def _chat_error(error: Any, fallback: str) -> RuntimeError:
    if not isinstance(error, dict):
        return RuntimeError(fallback)
    kind = ContextFull if error.get("code") == "context_length_exceeded" else RuntimeError
    return kind(error.get("message", fallback))


class DaemonClient:
    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=timeout_s, transport=transport
        )

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise DaemonUnreachable(f"{self.url}: {type(exc).__name__}") from None
        if response.status_code == 401:
            raise DaemonUnreachable(f"{self.url}: the API key is missing or wrong (--api-key)")
        try:
            data = response.json()
        except ValueError:
            raise DaemonUnreachable(
                f"{self.url}: not an appliance daemon (answered {response.status_code})"
            ) from None
        if response.status_code >= 400:
            error = data.get("error") if isinstance(data, dict) else None
            message = error.get("message") if isinstance(error, dict) else str(data)
            raise RuntimeError(message)
        return data

    async def status(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("GET", "/appliance/v1/status")
        return result

    async def models(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = (await self._request("GET", "/appliance/v1/models"))["models"]
        return result

    async def remotes(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("GET", "/appliance/v1/remotes")
        return result

    async def logs(self, limit: int = 100) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = (await self._request("GET", f"/appliance/v1/logs?limit={limit}"))[
            "requests"
        ]
        return result

    async def load(self, name: str) -> None:
        await self._request("POST", f"/appliance/v1/models/{name}/load", timeout=600)

    async def unload(self, name: str) -> None:
        await self._request("POST", f"/appliance/v1/models/{name}/unload", timeout=600)

    async def chat_stream(self, model: str | None, messages: list[dict[str, str]]) -> AsyncIterator[str]:
        """The reply's text as it streams (OpenAI chat completions over SSE)."""
        body: dict[str, Any] = {"messages": messages, "stream": True}
        if model:
            body["model"] = model
        try:
            async with self._http.stream("POST", "/v1/chat/completions", json=body, timeout=None) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise _chat_error(response.json().get("error", {}), response.text)
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if "error" in chunk:  # a failure after the stream began
                        raise _chat_error(chunk["error"], "the stream failed")
                    for choice in chunk.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            yield text
        except httpx.HTTPError as exc:
            raise DaemonUnreachable(f"{self.url}: {type(exc).__name__}") from None

    async def pull_stream(self, ref: str) -> AsyncIterator[dict[str, Any]]:
        """The daemon's pull progress events (NDJSON); the pull goes on if we stop reading."""
        try:
            async with self._http.stream(
                "POST", "/appliance/v1/models/pull", json={"model": ref}, timeout=None
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise RuntimeError(response.json().get("error", {}).get("message", response.text))
                async for line in response.aiter_lines():
                    if line.strip():
                        yield json.loads(line)
        except httpx.HTTPError as exc:
            raise DaemonUnreachable(f"{self.url}: {type(exc).__name__}") from None

    async def remove(self, name: str) -> None:
        await self._request("DELETE", f"/appliance/v1/models/{name}", timeout=60)

    async def close(self) -> None:
        await self._http.aclose()
