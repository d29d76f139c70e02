"""The Responses API's items, both ways: input items (a previous response's too) read into the chat
messages of the seam (ChatParams), and a generation written as output items and a response object.
Every dialect meets the engine, and the remotes, as a chat: a Responses request is one too."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from appliance.backend import Finished, TokenLogprob, ToolCall, Usage
from appliance.errors import InvalidRequest
from server.openai_payloads import chat_logprob
from server.responses_schemas import ResponsesRequest

_ROLES = ("system", "developer", "user", "assistant")
_TEXT_PARTS = ("input_text", "output_text", "text")


def new_id(prefix: str) -> str:
    """An id of OpenAI's form for a response (``resp``) or an output item (``msg``, ``fc``, ``rs``)."""
    return f"{prefix}_{uuid.uuid4().hex}"


def request_items(body: ResponsesRequest) -> list[dict[str, Any]]:
    """The request's ``input`` as a list of item dicts (a string is one user message)."""
    if body.input is None:
        return []
    if isinstance(body.input, str):
        return [{"type": "message", "role": "user", "content": body.input}]
    return [item.model_dump(exclude_none=True) for item in body.input]


def _part_text(part: dict[str, Any], at: str) -> str:
    if part.get("type") not in (*_TEXT_PARTS, "reasoning_text", "summary_text", "refusal"):
        raise InvalidRequest(f"{at}: parts of type {part.get('type')!r} are not supported here (text only)",
                             param=at)  # fmt: skip
    return str(part.get("text") or part.get("refusal") or "")


def _text(parts: Any, where: str) -> str:
    """The text of a string, or of a list of text parts (a tool's output, a reasoning item's content)."""
    if isinstance(parts, str):
        return parts
    return "".join(_part_text(part, f"{where}.{index}") for index, part in enumerate(parts or []))


def _content(parts: Any, where: str) -> str | list[dict[str, Any]]:
    """A message's content on the seam: its text, or its text and ``image_url`` parts when it has images."""
    if isinstance(parts, str) or parts is None:
        return parts or ""
    out: list[dict[str, Any]] = []
    for index, part in enumerate(parts):
        at = f"{where}.{index}"
        if part.get("type") != "input_image":
            out.append({"type": "text", "text": _part_text(part, at)})
        elif isinstance(part.get("image_url"), str):
            out.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
        else:
            message = f"{at}: an input_image needs an image_url (file_id is not supported)"
            raise InvalidRequest(message, param=at)
    if all(part["type"] == "text" for part in out):
        return "".join(part["text"] for part in out)
    return out


def chat_messages(
    items: Sequence[dict[str, Any]], instructions: str | None, where: Sequence[str]
) -> list[dict[str, Any]]:
    """``items`` as the seam's chat messages, after ``instructions`` as a system message. An assistant's
    message, function calls and the reasoning before them become one assistant turn (content,
    ``tool_calls``, ``reasoning_content``); a call's output a ``tool`` message. ``where[i]`` names item
    i in errors. Items this daemon cannot serve are a 400."""
    out: list[dict[str, Any]] = [{"role": "system", "content": instructions}] if instructions else []
    thoughts: list[str] = []  # reasoning items' text, for the assistant turn that follows them

    def assistant_turn(new: bool) -> dict[str, Any]:
        if new or not out or out[-1]["role"] != "assistant":
            out.append({"role": "assistant", "content": ""})
        if thoughts:
            out[-1]["reasoning_content"] = "".join(thoughts)
            thoughts.clear()
        return out[-1]

    for item, at in zip(items, where, strict=True):
        kind = item.get("type") or "message"
        if kind == "message":
            role = item.get("role")
            if role not in _ROLES:
                raise InvalidRequest(f"{at}: a message needs a role: {', '.join(_ROLES)}", param=f"{at}.role")
            content = _content(item.get("content"), f"{at}.content")
            if role == "assistant":
                assistant_turn(new=True)["content"] = content
            else:
                # Templates know "system"; OpenAI's "developer" role means the same to them.
                out.append({"role": "system" if role == "developer" else role, "content": content})
        elif kind == "function_call":
            if not item.get("name") or not item.get("call_id"):
                raise InvalidRequest(f"{at}: a function_call needs a name and a call_id", param=at)
            function = {"name": item["name"], "arguments": item.get("arguments") or "{}"}
            call = {"id": item["call_id"], "type": "function", "function": function}
            assistant_turn(new=False).setdefault("tool_calls", []).append(call)
        elif kind == "function_call_output":
            if not item.get("call_id") or item.get("output") is None:
                raise InvalidRequest(f"{at}: a function_call_output needs a call_id and an output", param=at)
            out.append({"role": "tool", "tool_call_id": item["call_id"],
                        "content": _text(item["output"], f"{at}.output")})  # fmt: skip
        elif kind == "reasoning":
            # Thoughts come back as their text; an encrypted_content alone is another server's: unreadable.
            thoughts.append(_text(item.get("content") or item.get("summary") or [], f"{at}.content"))
        else:
            raise InvalidRequest(
                f"{at}: items of type {kind!r} are not supported here (messages, function_call, "
                "function_call_output, reasoning)",
                param=f"{at}.type",
            )
    return out


def text_part(text: str, logprobs: Sequence[TokenLogprob] | None) -> dict[str, Any]:
    """An ``output_text`` part; its ``logprobs`` when they were asked for (``include``)."""
    part: dict[str, Any] = {"type": "output_text", "text": text, "annotations": []}
    if logprobs is not None:
        part["logprobs"] = [chat_logprob(lp) for lp in logprobs]
    return part


def message_item(item_id: str, parts: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": parts}


def reasoning_item(item_id: str, thoughts: str, status: str) -> dict[str, Any]:
    """The model's thoughts, whole in ``content`` (``reasoning_text``); no summary is written here."""
    content = [{"type": "reasoning_text", "text": thoughts}] if thoughts else []
    return {"id": item_id, "type": "reasoning", "status": status, "summary": [], "content": content}


def call_item(item_id: str, call: ToolCall, status: str, namespaces: Mapping[str, str]) -> dict[str, Any]:
    """A ``function_call`` item; one to a function of a namespace tool names it (``namespaces``: a
    function's name -> its namespace)."""
    item = {"id": item_id, "type": "function_call", "status": status, "call_id": call.id,
            "name": call.name, "arguments": call.arguments}  # fmt: skip
    if call.name in namespaces:
        item["namespace"] = namespaces[call.name]
    return item


def output_items(
    text: str,
    thoughts: str,
    finished: Finished,
    logprobs: Sequence[TokenLogprob] | None,
    namespaces: Mapping[str, str],
) -> list[dict[str, Any]]:
    """A whole generation's output: its reasoning, its message (text, or an empty one when nothing else
    came), then one function_call item per call."""
    status = "incomplete" if finished.finish_reason == "length" else "completed"
    items = [reasoning_item(new_id("rs"), thoughts, status)] if thoughts else []
    if text or not finished.tool_calls:
        items.append(message_item(new_id("msg"), [text_part(text, logprobs)], status))
    items.extend(call_item(new_id("fc"), call, status, namespaces) for call in finished.tool_calls)
    return items


def usage_body(usage: Usage) -> dict[str, Any]:
    """OpenAI's Responses usage. Thoughts are counted in ``output_tokens``, not apart (reasoning_tokens 0)."""
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


@dataclass(frozen=True)
class Echo:
    """What a response object repeats of its request, and who it is."""

    id: str
    created_at: int
    model: str
    body: ResponsesRequest
    temperature: float
    top_p: float


def response_object(
    echo: Echo,
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The response object, as OpenAI writes it: ``status`` "in_progress", "completed", "incomplete"
    (cut by max_output_tokens) or "failed" (with ``error``)."""
    body = echo.body
    fmt = body.text.format if body.text and body.text.format else None
    effort = body.reasoning.effort if body.reasoning else None
    return {
        "id": echo.id, "object": "response", "created_at": echo.created_at, "status": status,
        "background": False, "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.instructions, "max_output_tokens": body.max_output_tokens,
        "max_tool_calls": body.max_tool_calls, "model": echo.model, "output": output,
        "parallel_tool_calls": body.parallel_tool_calls, "previous_response_id": body.previous_response_id,
        "reasoning": {"effort": effort, "summary": None}, "store": body.store,
        "temperature": echo.temperature, "top_p": echo.top_p,
        "text": {"format": fmt.model_dump(by_alias=True, exclude_none=True) if fmt else {"type": "text"}},
        "tool_choice": body.tool_choice or "auto",
        "tools": [tool.model_dump(exclude_none=True) for tool in body.tools or []],
        "top_logprobs": body.top_logprobs, "truncation": "disabled",
        "usage": usage_body(usage) if usage is not None else None,
        "user": body.user, "metadata": body.metadata or {},
        "completed_at": int(time.time()) if status == "completed" else None,
    }  # fmt: skip
