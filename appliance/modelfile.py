"""Ollama's Modelfile: read as Ollama's own parser reads it (parser/parser.go), written back as `ollama
show --modelfile` writes it. Pure text in, plain data out.

A line is ``INSTRUCTION value`` (the instruction in any case, ``#`` starts a comment line). A value is
the rest of the line, or a ``"quoted"`` or ``\"\"\"triple-quoted\"\"\"`` string that may run over several
lines (no escapes: a quote inside needs the triple quotes). ``PARAMETER name value`` and ``MESSAGE role
content`` take a name first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from appliance.errors import InvalidRequest

INSTRUCTIONS = (
    "from", "license", "template", "system", "adapter", "draft", "renderer", "parser", "parameter",
    "message", "requires",
)  # fmt: skip
"""What Ollama's parser accepts (the create route refuses those it cannot carry out, by name)."""

ROLES = ("system", "user", "assistant")


class ModelfileError(InvalidRequest):
    """A Modelfile Ollama's parser would refuse too; the message names the line."""


@dataclass(frozen=True)
class Command:
    """One instruction: ``name`` is lowercase (``model`` for FROM, the parameter's own name for
    PARAMETER, ``message`` with ``role``), ``value`` as unquoted."""

    name: str
    value: str
    role: str = ""


@dataclass
class Modelfile:
    commands: list[Command] = field(default_factory=list)

    def request(self) -> dict[str, Any]:
        """The JSON form of /api/create these lines stand for (as Ollama's client turns a Modelfile into
        a request): ``from``, ``system``, ``template``, ``license`` (a list), ``messages``, ``parameters``
        (values as text; ``stop`` a list, one item per line), and any other instruction by its name."""
        out: dict[str, Any] = {}
        parameters: dict[str, Any] = {}
        for command in self.commands:
            if command.name == "model":
                out["from"] = command.value
            elif command.name == "license":
                out.setdefault("license", []).append(command.value)
            elif command.name == "message":
                out.setdefault("messages", []).append({"role": command.role, "content": command.value})
            elif command.name in INSTRUCTIONS:
                out[command.name] = command.value
            elif command.name == "stop":
                parameters.setdefault("stop", []).append(command.value)
            else:
                parameters[command.name] = command.value
        if parameters:
            out["parameters"] = parameters
        return out


def _unquote(text: str) -> str | None:
    """The value ``text`` (stripped) stands for, or None while a quote is still open."""
    if text.startswith('"""'):
        return text[3:-3] if len(text) >= 6 and text.endswith('"""') else None
    if text.startswith('"'):
        return text[1:-1] if len(text) >= 2 and text.endswith('"') else None
    return text


def parse(text: str) -> Modelfile:
    """The commands of a Modelfile. Raises ModelfileError for an unknown instruction, a MESSAGE role
    other than system, user or assistant, a quote left open, or no FROM line."""
    commands: list[Command] = []
    lines = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    number = 0
    while number < len(lines):
        line = lines[number].lstrip(" \t")
        number += 1
        if not line or line.startswith("#"):
            continue
        instruction, separator, rest = _word(line)
        if not instruction.isalpha() or instruction.lower() not in INSTRUCTIONS:
            raise ModelfileError(
                f"Modelfile line {number}: unknown instruction {instruction!r} (one of "
                f"{', '.join(i.upper() for i in INSTRUCTIONS)})",
                param="modelfile",
            )
        if not separator:
            raise ModelfileError(f"Modelfile line {number}: {instruction} needs a value", param="modelfile")
        name, role = instruction.lower(), ""
        if name == "from":
            name = "model"
        elif name == "parameter":
            name, _, rest = _word(rest)
            if not name or not all(c.isalnum() or c == "_" for c in name):
                raise ModelfileError(f"Modelfile line {number}: PARAMETER needs a name", param="modelfile")
        elif name == "message":
            role, _, rest = _word(rest)
            if role not in ROLES:
                raise ModelfileError(
                    f"Modelfile line {number}: a MESSAGE role must be one of {', '.join(ROLES)}, "
                    f"not {role!r}",
                    param="modelfile",
                )
        first = number
        value = _unquote(rest.strip())
        while value is None:  # a quoted value runs on over the next lines, newlines kept
            if number >= len(lines):
                raise ModelfileError(
                    f"Modelfile line {first}: a quoted value is never closed", param="modelfile"
                )
            rest += "\n" + lines[number]
            number += 1
            value = _unquote(rest.strip())
        commands.append(Command(name, value, role))
    if not any(c.name == "model" for c in commands):
        raise ModelfileError("the Modelfile has no FROM line", param="modelfile")
    return Modelfile(commands)


def _word(text: str) -> tuple[str, str, str]:
    """The first word of ``text`` (up to a space or tab), the separator, and the rest."""
    for index, char in enumerate(text):
        if char in " \t":
            return text[:index], char, text[index + 1 :]
    return text, "", ""


def quote(value: str) -> str:
    """``value`` as Ollama writes it in a Modelfile: quoted when it has a newline or spaces at an end,
    triple-quoted when it also holds a quote."""
    if "\n" in value or value.startswith(" ") or value.endswith(" "):
        return f'"""{value}"""' if '"' in value else f'"{value}"'
    return value


def render(
    base: str,
    *,
    system: str | None = None,
    parameters: Sequence[tuple[str, Any]] = (),
    messages: Sequence[tuple[str, str]] = (),
    license_texts: Sequence[str] = (),
) -> str:
    """The Modelfile of a model derived from ``base`` with these settings, as `ollama show
    --modelfile` writes one."""
    lines = ['# Modelfile generated by "ollama show"', f"FROM {base}"]
    lines += [f"SYSTEM {quote(system)}"] if system is not None else []
    lines += [f"PARAMETER {name} {quote(_text(value))}" for name, value in parameters]
    lines += [f"MESSAGE {role} {quote(content)}" for role, content in messages]
    lines += [f"LICENSE {quote(text)}" for text in license_texts]
    return "\n".join(lines) + "\n"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
