"""Golden sets: prompts with what a good reply must (and must not) contain, one JSON object a line.

    {"id": "capital", "prompt": "What is the capital of France?", "expect": {"contains": "Paris"}}

A case gives ``prompt`` (one user message, with an optional ``system``) or ``messages`` (OpenAI's
shape); optionally ``max_tokens`` (default 128) and ``format`` (``"json"``, or a JSON schema the reply
is held to, as Ollama's ``format``). ``expect`` holds the checks, all of which must pass:
``contains`` (a string or a list: every one), ``any_of`` (at least one), ``not_contains``, ``regex``
(searched), ``equals`` (the whole reply, trimmed), ``json`` (``true``: the reply parses as JSON; an
object: it parses and holds these keys with these values). Text checks ignore case unless
``case_sensitive`` is true. Replies are generated greedily (temperature 0), so a run is repeatable.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_MAX_TOKENS = 128


class GoldenError(Exception):
    """A golden file that cannot be read: one readable line naming the file and line."""


def _strings(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


class Expect(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    contains: str | list[str] = Field(default_factory=list)
    any_of: list[str] = Field(default_factory=list)
    not_contains: str | list[str] = Field(default_factory=list)
    regex: str | None = None
    equals: str | None = None
    json_: bool | dict[str, Any] | None = Field(default=None, alias="json")
    case_sensitive: bool = False

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _something(self) -> Expect:
        if not (self.contains or self.any_of or self.not_contains or self.regex is not None
                or self.equals is not None or self.json_):  # fmt: skip
            raise ValueError("expect names no check")
        return self

    def failure(self, reply: str) -> str | None:
        """Why ``reply`` fails these checks; None when it passes them all."""
        fold = (lambda s: s) if self.case_sensitive else str.casefold
        text = fold(reply)
        for needle in _strings(self.contains):
            if fold(needle) not in text:
                return f"{needle!r} missing"
        if self.any_of and not any(fold(n) in text for n in self.any_of):
            return f"none of {', '.join(repr(n) for n in self.any_of)}"
        for needle in _strings(self.not_contains):
            if fold(needle) in text:
                return f"{needle!r} present"
        flags = 0 if self.case_sensitive else re.IGNORECASE
        if self.regex is not None and not re.search(self.regex, reply, flags):
            return f"no match for /{self.regex}/"
        if self.equals is not None and fold(reply.strip()) != fold(self.equals.strip()):
            return f"not {self.equals!r}"
        if self.json_:
            try:
                value = json.loads(reply)
            except ValueError:
                return "not JSON"
            if isinstance(self.json_, dict):
                if not isinstance(value, dict):
                    return "not a JSON object"
                for key, wanted in self.json_.items():
                    if key not in value:
                        return f"JSON lacks {key!r}"
                    if value[key] != wanted:
                        return f"JSON {key!r} is {value[key]!r}, not {wanted!r}"
        return None


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = None
    prompt: str | None = None
    system: str | None = None
    messages: list[dict[str, Any]] | None = None
    max_tokens: int = Field(default=DEFAULT_MAX_TOKENS, ge=1, le=8192)
    format: Literal["json"] | dict[str, Any] | None = None
    expect: Expect

    @model_validator(mode="after")
    def _one_prompt(self) -> Case:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give either prompt or messages")
        if self.messages is not None and not self.messages:
            raise ValueError("messages is empty")
        if self.system is not None and self.messages is not None:
            raise ValueError("system goes with prompt; put it in messages instead")
        return self

    def chat(self) -> list[dict[str, Any]]:
        if self.messages is not None:
            return self.messages
        system = [{"role": "system", "content": self.system}] if self.system is not None else []
        return [*system, {"role": "user", "content": self.prompt}]

    def json_schema(self) -> dict[str, Any] | None:
        """The schema the reply is held to: any object for ``"json"``, the given schema, or None."""
        if self.format == "json":
            return {"type": "object"}
        return self.format


@dataclass(frozen=True)
class Outcome:
    case: str
    passed: bool
    reply: str
    why: str | None  # why it failed

    def to_json(self) -> dict[str, Any]:
        return {"id": self.case, "passed": self.passed, "reply": self.reply, "why": self.why}


def builtin_golden() -> Path:
    """The golden set shipped with the appliance: short questions and instructions a chat model
    should get right (facts, arithmetic, format following, JSON)."""
    return Path(str(resources.files("appliance.evaluation") / "golden.jsonl"))


def load_golden(path: Path) -> list[tuple[str, Case]]:
    """The cases of a golden file with their ids (``line N`` where a case has none)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise GoldenError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise GoldenError(f"{path} is not UTF-8 text") from None
    cases: list[tuple[str, Case]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("//"):
            continue
        try:
            case = Case.model_validate_json(line)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            raise GoldenError(f"{path} line {number}: {where + ': ' if where else ''}{message}") from None
        cases.append((case.id or f"line {number}", case))
    if not cases:
        raise GoldenError(f"{path} holds no cases")
    ids = [case_id for case_id, _ in cases]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        raise GoldenError(f"{path}: case id {duplicated[0]!r} is used twice")
    return cases


def judge(case_id: str, case: Case, reply: str) -> Outcome:
    why = case.expect.failure(reply)
    return Outcome(case_id, why is None, reply, why)
