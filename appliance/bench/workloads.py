"""Workloads whose requests share prefixes, as agents' and chats' do (`appliance bench --prompt ...`):

- ``agent``: one long system prompt (an agent's rules and the tools it may call, ~1,500 tokens) sent again
  with every task, ``concurrency`` tasks at a time: the prefix a server should keep warm in every slot.
- ``chat``: twice as many conversations as slots, each turn its whole history (with the server's own
  replies) and a new question, turns taken round robin. Each conversation's slot serves another between
  its turns, so its history is found again only through a prompt cache kept beside the slots
  (llama-server's ``--cache-ram``, the appliance's ``model.prompt_cache``); without one, every turn reads
  its history again and TTFT grows with it.

One warm-up request of its own first; then ``requests`` measured ones.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import client
from appliance.bench.load import Load, Result, check_warm_up, one_request

Messages = list[dict[str, str]]

_TOOLS = [
    ("read_file", "Read a file of the repository", {"path": "the file's path from the repository root"}),
    ("write_file", "Replace a file's content", {"path": "the file's path", "content": "the new content"}),
    ("search_code", "Search the repository for a regular expression",
     {"pattern": "a Python regular expression", "glob": "which files, e.g. src/**/*.py"}),
    ("run_tests", "Run the test suite or part of it", {"selector": "a pytest node id or directory"}),
    ("run_command", "Run a shell command in the repository", {"command": "the command line"}),
    ("list_directory", "List a directory", {"path": "the directory"}),
    ("git_diff", "Show the working tree's changes", {"paths": "files to limit the diff to"}),
    ("git_commit", "Commit the staged changes", {"message": "the commit message"}),
    ("open_issue", "Read an issue of the tracker", {"number": "the issue's number"}),
    ("web_search", "Search the documentation of a library", {"library": "its name", "query": "what to find"}),
    ("ask_user", "Ask the user a question and wait", {"question": "one clear question"}),
    ("finish", "End the task with a summary", {"summary": "what was done and what is left"}),
]  # fmt: skip

_RULES = [
    "Read the code you change before you change it, and keep each change small.",
    "Run the tests that cover a change before you say it works; say which ones you ran.",
    "Never invent a file's content: read it with read_file first.",
    "Prefer search_code over reading whole directories when you look for a name.",
    "When a command fails, read its output and fix the cause instead of retrying the same command.",
    "Ask the user only when the task cannot go on without an answer, one question at a time.",
    "Keep the house style of the repository: its naming, its formatting and its test layout.",
    "Write commit messages that say what changed and why, in the imperative mood.",
]

_TASKS = [
    "Rename the helper parse_size to parse_bytes everywhere.",
    "Find why test_config fails on Windows paths and fix it.",
    "Add a --verbose flag to the command line that logs each step.",
    "Update the changelog for the last three commits.",
    "Make the download resume after a dropped connection.",
    "Explain what the scheduler does when two requests arrive at once.",
]

_QUESTIONS = [
    "What should I pack for a week of hiking in the mountains?",
    "Which of those things matter most if it rains?",
    "How do I keep my feet dry on a long walk?",
    "What do I eat for breakfast on the trail?",
    "How heavy should my pack be at most?",
    "What do I do if I get lost?",
]


def agent_system_prompt() -> str:
    """An agent's rules and tools, about 1,500 tokens, the same every time."""

    def schema(params: dict[str, str]) -> dict[str, Any]:
        properties = {k: {"type": "string", "description": v} for k, v in params.items()}
        return {"type": "object", "properties": properties, "required": list(params)}

    tools = [
        {"type": "function", "function": {"name": name, "description": text, "parameters": schema(params)}}
        for name, text, params in _TOOLS
    ]
    rules = "\n".join(f"{i}. {rule}" for i, rule in enumerate(_RULES * 2, start=1))
    return (
        "You are a coding agent working in a software repository on behalf of its maintainers.\n\n"
        f"Rules:\n{rules}\n\nTools (call one by answering with a JSON object naming it and its "
        f"arguments):\n{json.dumps(tools, indent=1)}"
    )


async def run_workload(
    server: client.AsyncDaemonClient, load: Load, body: Callable[[Messages], dict[str, Any]]
) -> tuple[list[Result], float]:
    """The measured requests of ``load``'s workload (``body`` makes a request of messages), and the wall
    time they took."""
    warm = await one_request(server, body([{"role": "user", "content": "Say hello."}]))
    check_warm_up(warm, server.url)
    gate = asyncio.Semaphore(load.concurrency)

    async def limited(messages: Messages) -> Result:
        async with gate:
            return await one_request(server, body(messages))

    started = time.perf_counter()
    if load.prompt == "agent":
        system = {"role": "system", "content": agent_system_prompt()}
        asks = [[system, {"role": "user", "content": f"Task {i}: {_TASKS[i % len(_TASKS)]}"}]
                for i in range(load.requests)]  # fmt: skip
        results = list(await asyncio.gather(*(limited(messages) for messages in asks)))
        return results, time.perf_counter() - started
    histories: list[Messages] = [
        [{"role": "system", "content": f"You are a helpful assistant. This is conversation {c}."}]
        for c in range(2 * load.concurrency)
    ]
    results = []
    turn = 0
    while len(results) < load.requests:
        round_ = histories[: load.requests - len(results)]
        question = _QUESTIONS[turn % len(_QUESTIONS)]
        asks = [[*history, {"role": "user", "content": question}] for history in round_]
        replies = await asyncio.gather(*(limited(messages) for messages in asks))
        for history, ask, reply in zip(round_, asks, replies, strict=True):
            history[:] = [*ask, {"role": "assistant", "content": reply.text}]
        results.extend(replies)
        turn += 1
    return results, time.perf_counter() - started
