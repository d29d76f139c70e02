"""`appliance chat [MODEL] [--url URL]`: a chat with the running daemon in the terminal.

Interactive when stdin is a terminal: type, Enter, the reply streams in; `/clear` forgets the
conversation, `/bye` (or Ctrl-D) leaves, Ctrl-C stops a reply mid-way and keeps what came. For scripts,
stdin is read whole as one message and the reply goes to stdout. It speaks the daemon's OpenAI API, so
`MODEL` can be anything the daemon serves: an installed name, or `REMOTE/NAME` on a remote.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TextIO

from appliance.cli.common import daemon
from appliance.errors import UserError

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

    def reply(self, text: str) -> Iterator[str]:
        """Send ``text`` and yield the answer as it streams; it joins the history when it ends (or is
        stopped: what came is kept)."""
        # The daemon's client (httpx): imported when a chat starts, so the command line starts light.
        import client

        self.history.append({"role": "user", "content": text})
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + self.history
        parts: list[str] = []
        try:
            with client.SyncDaemonClient(self.url, self.api_key, timeout_s=None) as daemon:
                stream = daemon.chat_stream(
                    self.model, messages, max_tokens=self.max_tokens, temperature=self.temperature
                )
                for piece in stream:
                    parts.append(piece)
                    yield piece
        except client.ClientError as exc:
            self.history.pop()
            line = exc.hint if isinstance(exc, client.DaemonUnreachable) else str(exc)
            raise (ContextFull if isinstance(exc, client.ContextFull) else ChatError)(line) from None
        finally:
            if parts:
                self.history.append({"role": "assistant", "content": "".join(parts)})


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


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser,
             budget_flags: argparse.ArgumentParser) -> None:  # fmt: skip
    """Add `chat`."""
    chat = commands.add_parser(
        "chat",
        parents=[common],
        help="chat with the running daemon in the terminal",
        description="Chat with a model the running daemon serves. On a terminal: type, Enter; /clear "
        "forgets, /bye or Ctrl-D leaves, Ctrl-C stops a reply. Piped: stdin is one message, the reply "
        "goes to stdout.",
    )
    chat.add_argument("model", nargs="?", help="a model the daemon serves (default: its default model)")
    chat.add_argument("--url", help="daemon URL (default: this machine's configured host and port)")
    chat.add_argument("--api-key", help="the daemon's API key, if it needs one")
    chat.add_argument("--system", help="a system prompt")
    chat.add_argument("--max-tokens", type=int, help="at most this many tokens a reply")
    chat.add_argument("--temperature", type=float, help="sampling temperature (default: the daemon's)")
    chat.set_defaults(run=run_command)


def run_command(args: argparse.Namespace) -> int:
    """Chat; the exit status."""
    url, key = daemon(args)
    if args.max_tokens is not None and args.max_tokens < 1:
        raise UserError("--max-tokens must be at least 1")
    chat = Chat(url, args.model, key, args.system, args.max_tokens, args.temperature)
    try:
        return run(chat)
    except ChatError as exc:
        raise UserError(str(exc)) from None
