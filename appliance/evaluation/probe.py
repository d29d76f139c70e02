"""The capability probe (`appliance eval MODEL --probe`): does the model really do what its file
declares? A fixed, short set of prompts, answered greedily:

- tools: each prompt offers the same three tools under tool_choice auto and needs one of them; it
  passes when the reply calls the right tool with arguments valid for its schema;
- json: each prompt holds the reply to a JSON schema; it passes when the reply parses and is valid;
- thinking (only for a model that declares it): it passes when the reply came back as thinking and an
  answer, apart, with no thinking tag left in the answer.

Few prompts and small token limits keep it cheap (sampling under a grammar is slow on CPU): it
runs in the test suite on the 135M default model.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from appliance.evaluation import CaseError
from appliance.evaluation.replies import Answer


class Answers(Protocol):
    def answer(
        self,
        messages: list[dict[str, Any]],
        max_tokens: int,
        tools: list[dict[str, Any]] | None = None,
        schema: dict[str, Any] | None = None,
    ) -> Answer: ...


def _tool(name: str, description: str, properties: dict[str, str], required: list[str]) -> dict[str, Any]:
    schema = {"type": "object", "properties": {k: {"type": v} for k, v in properties.items()},
              "required": required}  # fmt: skip
    return {"type": "function", "function": {"name": name, "description": description, "parameters": schema}}


TOOLS = [
    _tool("get_weather", "The current weather in a city", {"city": "string"}, ["city"]),
    _tool("add_numbers", "The sum of two numbers", {"a": "number", "b": "number"}, ["a", "b"]),
    _tool("send_email", "Send an email", {"to": "string", "subject": "string", "body": "string"},
          ["to", "subject"]),
]  # fmt: skip
TOOL_PROMPTS = [
    ("What is the weather in Paris right now?", "get_weather"),
    ("Add 17 and 25 for me.", "add_numbers"),
    ("Send an email to bob@example.com with the subject 'Lunch'.", "send_email"),
]
JSON_PROMPTS = [
    ("Describe a person named Alice who is 30 years old.",
     {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
      "required": ["name", "age"]}),
    ("Name the capital of Italy and its country.",
     {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
      "required": ["city", "country"]}),
]  # fmt: skip
THINKING_PROMPTS = ["What is 12 times 13?", "Which is larger, 9.11 or 9.9?"]
# Room for one call or one small object; a thinking model needs more to think and then answer.
TOOL_MAX_TOKENS, JSON_MAX_TOKENS, THINKING_MAX_TOKENS = 64, 48, 512

_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}


def schema_errors(value: Any, schema: dict[str, Any]) -> list[str]:
    """Why ``value`` does not fit ``schema`` (the subset the probe's schemas use: type, properties,
    required, items); empty when it fits."""
    kind = schema.get("type")
    if kind is not None and not _TYPES[kind](value):
        return [f"{json.dumps(value)[:40]} is not {kind}"]
    errors = []
    if isinstance(value, dict):
        errors += [f"{key} missing" for key in schema.get("required", []) if key not in value]
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                errors += schema_errors(value[key], sub)
    if isinstance(value, list) and "items" in schema:
        for item in value:
            errors += schema_errors(item, schema["items"])
    return errors


@dataclass
class ProbeResult:
    """Counts per probe, and why each failure failed."""

    tools: list[bool] = field(default_factory=list)
    json: list[bool] = field(default_factory=list)
    thinking: list[bool] | None = None  # None: the model does not declare thinking
    failures: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        def counts(passed: list[bool]) -> dict[str, int]:
            return {"passed": sum(passed), "total": len(passed)}

        data: dict[str, Any] = {"tools": counts(self.tools), "json": counts(self.json)}
        if self.thinking is not None:
            data["thinking"] = counts(self.thinking)
        data["failures"] = self.failures
        return data


def _check_call(answer: Answer, expected: str) -> str | None:
    if not answer.calls:
        return f"no tool call (text {answer.content[:40]!r})"
    name, arguments = answer.calls[0]
    if name != expected:
        return f"called {name}, not {expected}"
    try:
        args = json.loads(arguments)
    except ValueError:
        return f"arguments are not JSON: {arguments[:40]!r}"
    schema = next(t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == name)
    errors = schema_errors(args, schema)
    return f"arguments: {'; '.join(errors)}" if errors else None


def _check_json(answer: Answer, schema: dict[str, Any]) -> str | None:
    try:
        value = json.loads(answer.content)
    except ValueError:
        return f"not JSON: {answer.content[:40]!r}"
    errors = schema_errors(value, schema)
    return "; ".join(errors) if errors else None


def _check_thinking(answer: Answer) -> str | None:
    if not answer.reasoning.strip():
        return "no thinking came back apart"
    if not answer.content.strip():
        return "thinking but no answer"
    if "<think>" in answer.content or "</think>" in answer.content:
        return "a thinking tag left in the answer"
    return None


def run_probe(answers: Answers, *, thinking: bool) -> ProbeResult:
    """Ask every probe prompt of ``answers`` (the thinking ones only when the model declares it)."""
    result = ProbeResult(thinking=[] if thinking else None)

    def ask(kind: str, passed: list[bool], check: Callable[[Answer], str | None], *args: Any) -> None:
        try:
            why = check(answers.answer(*args))
        except CaseError as exc:
            why = f"error: {exc}"
        passed.append(why is None)
        if why is not None:
            result.failures.append(f"{kind} {len(passed)}: {why}")

    for prompt, tool in TOOL_PROMPTS:
        ask("tools", result.tools, functools.partial(_check_call, expected=tool), _user(prompt),
            TOOL_MAX_TOKENS, TOOLS)  # fmt: skip
    for prompt, schema in JSON_PROMPTS:
        ask("json", result.json, functools.partial(_check_json, schema=schema), _user(prompt),
            JSON_MAX_TOKENS, None, schema)  # fmt: skip
    if result.thinking is not None:
        for prompt in THINKING_PROMPTS:
            ask("thinking", result.thinking, _check_thinking, _user(prompt), THINKING_MAX_TOKENS)
    return result


def _user(prompt: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": prompt}]
