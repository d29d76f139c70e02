"""`appliance chat [MODEL] [--url URL]`: a chat with the running daemon in the terminal.

Interactive when stdin is a terminal: type, Enter, the reply streams in; `/clear` forgets the
conversation, `/bye` (or Ctrl-D) leaves, Ctrl-C stops a reply mid-way and keeps what came. For scripts,
stdin is read whole as one message and the reply goes to stdout. It speaks the daemon's OpenAI API, so
`MODEL` can be anything the daemon serves: an installed name, or `REMOTE/NAME` on a remote.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx

HELP = "/clear forgets the conversation, /bye or Ctrl-D leaves, Ctrl-C stops a reply."


class ChatError(Exception):
    """The daemon could not answer: one readable line."""


class ContextFull(ChatError):
    """The conversation no longer fits the model's context."""


@dataclass
class Chat:
    url: str
    model: str | None = None
    api_key: str | None = None
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    history: list[dict[str, str]] = field(default_factory=list)

    def _body(self) -> dict[str, Any]:
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + self.history
        body: dict[str, Any] = {"messages": messages, "stream": True}
        for key, value in (("model", self.model), ("max_tokens", self.max_tokens),
                           ("temperature", self.temperature)):  # fmt: skip
            if value is not None:
                body[key] = value
        return body

    def reply(self, text: str) -> Iterator[str]:
        """Send ``text`` and yield the answer as it streams; it joins the history when it ends (or is
        stopped: what came is kept)."""
        self.history.append({"role": "user", "content": text})
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        parts: list[str] = []
        try:
            with httpx.stream("POST", f"{self.url.rstrip('/')}/v1/chat/completions", json=self._body(),
                              headers=headers, timeout=httpx.Timeout(10, read=None)) as response:  # fmt: skip
                if response.status_code != 200:
                    response.read()
                    full = _error_code(response) == "context_length_exceeded"
                    raise (ContextFull if full else ChatError)(error_line(response))
                for line in response.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        raise ChatError(chunk["error"].get("message", "the reply failed"))
                    for choice in chunk.get("choices") or []:
                        piece = (choice.get("delta") or {}).get("content")
                        if piece:
                            parts.append(piece)
                            yield piece
        except httpx.ConnectError:
            self.history.pop()
            raise ChatError(f"no daemon answers at {self.url}: start one with `appliance serve`") from None
        except httpx.HTTPError as exc:
            self.history.pop()
            raise ChatError(f"{self.url}: {type(exc).__name__}") from None
        except ChatError:
            self.history.pop()
            raise
        finally:
            if parts:
                self.history.append({"role": "assistant", "content": "".join(parts)})


def _error_code(response: httpx.Response) -> str | None:
    try:
        code = response.json().get("error", {}).get("code")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, str) else None


def error_line(response: httpx.Response) -> str:
    try:
        message = response.json().get("error", {}).get("message")
    except ValueError:
        message = None
    return message or f"the daemon answered {response.status_code}"


def run(chat: Chat, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    """The chat loop (interactive on a terminal, one message otherwise); the exit status."""
    if not stdin.isatty():
        text = stdin.read().strip()
        if not text:
            raise ChatError("nothing to say: stdin was empty")
        for piece in chat.reply(text):
            stdout.write(piece)
            stdout.flush()
        stdout.write("\n")
        return 0
    print(f"chatting with {chat.model or 'the default model'} at {chat.url}. {HELP}", file=stdout)
    while True:
        try:
            text = input(">>> ").strip()
        except EOFError:
            print(file=stdout)
            return 0
        if not text:
            continue
        if text in ("/bye", "/exit", "/quit"):
            return 0
        if text == "/clear":
            chat.history.clear()
            print("(conversation cleared)", file=stdout)
            continue
        if text.startswith("/"):
            print(HELP, file=stdout)
            continue
        try:
            for piece in chat.reply(text):
                stdout.write(piece)
                stdout.flush()
        except KeyboardInterrupt:
            stdout.write(" (stopped)")
        except ContextFull as exc:
            print(f"error: {exc}; /clear starts a new conversation", file=stdout)
            continue
        except ChatError as exc:
            print(f"error: {exc}", file=stdout)
            continue
        stdout.write("\n")
