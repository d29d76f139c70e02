"""An Anthropic Messages request as the core's ChatParams: content blocks as OpenAI-shaped messages, tools
and ``tool_choice``, ``thinking`` and ``output_config`` (effort, structured output), sampling and stop
sequences. ``/v1/messages`` and ``/v1/messages/count_tokens`` translate through the same function, so a
count is the prompt the request would be given."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from appliance import model_defaults
from appliance.backend import ChatParams, Effort, Reasoning
from appliance.config import PerModelSettings
from appliance.errors import InvalidRequest
from server.anthropic_schemas import AnthropicBlock, AnthropicPrompt, AnthropicRequest

# Anthropic's efforts above "high" have no counterpart in the chat templates here.
_EFFORTS: dict[str, Effort] = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high",
                               "max": "high"}  # fmt: skip


def _text(content: str | list[AnthropicBlock] | None, where: str) -> str:
    """The text of a string or of a list of text blocks."""
    if content is None or isinstance(content, str):
        return content or ""
    for block in content:
        if block.type != "text":
            raise InvalidRequest(f"{where}: {block.type} blocks are not supported here (text only)")
    return "".join(block.text or "" for block in content)


def _image_url(block: AnthropicBlock, where: str) -> str:
    """An image block's source as an image URL: a data URL for base64 data, or the URL as it is."""
    source = block.source or {}
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        return f"data:{source.get('media_type') or 'image/png'};base64,{source['data']}"
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return str(source["url"])
    raise InvalidRequest(f"{where}: an image block needs a source of type base64 (with data) or url")


def _document_text(block: AnthropicBlock, where: str) -> str:
    """A plain-text document's text (its title first); PDFs and other sources need a model that reads
    them, which nothing here is."""
    source = block.source or {}
    if source.get("type") == "text" and isinstance(source.get("data"), str):
        text = str(source["data"])
    elif source.get("type") == "content" and isinstance(source.get("content"), str):
        text = str(source["content"])
    elif source.get("type") == "content" and isinstance(source.get("content"), list):
        blocks = source["content"]
        if not all(isinstance(b, dict) and b.get("type") == "text" for b in blocks):
            raise InvalidRequest(f"{where}: a document's content blocks are text only here")
        text = "".join(str(b.get("text") or "") for b in blocks)
    else:
        kind = source.get("media_type") or source.get("type") or "this"
        raise InvalidRequest(
            f"{where}: {kind} documents are not supported yet (no model here reads them): send the "
            "document's text, in a text block or a document of source type text"
        )
    return f"{block.title}\n\n{text}" if block.title else text


def messages(body: AnthropicPrompt) -> list[dict[str, Any]]:
    """The request's system prompt (with its system messages) and messages as OpenAI-shaped messages:
    tool uses as tool calls, tool results as "tool" messages, images as image_url parts (for a model that
    reads them: the local engine refuses them, a remote with vision takes them), a previous turn's
    thinking as reasoning_content."""
    out: list[dict[str, Any]] = []
    # System messages among the others (Claude Code sends them) join the system prompt: many chat
    # templates take a system message only first.
    system = [_text(body.system, "system")] if body.system else []
    system += [_text(m.content, f"messages.{i}") for i, m in enumerate(body.messages) if m.role == "system"]
    if system:
        out.append({"role": "system", "content": "\n\n".join(system)})
    for index, message in enumerate(body.messages):
        where = f"messages.{index}"
        content = message.content
        if message.role == "system":
            continue
        blocks = [AnthropicBlock(type="text", text=content)] if isinstance(content, str) else content
        text: list[str] = []
        parts: list[dict[str, Any]] = []  # text and images, in order, when there are images
        thoughts: list[str] = []
        calls: list[dict[str, Any]] = []
        for block in blocks:
            if block.type in ("text", "document"):
                piece = (block.text or "") if block.type == "text" else _document_text(block, where)
                text.append(piece)
                parts.append({"type": "text", "text": piece})
            elif block.type == "image" and message.role == "user":
                parts.append({"type": "image_url", "image_url": {"url": _image_url(block, where)}})
            elif block.type == "thinking" and message.role == "assistant":  # a previous turn's thinking
                thoughts.append(block.thinking or "")
            elif block.type == "redacted_thinking" and message.role == "assistant":
                continue  # encrypted by Anthropic for its own models: nothing here can read it
            elif block.type == "tool_use" and message.role == "assistant":
                if not block.name:
                    raise InvalidRequest(f"{where}: a tool_use block needs a name")
                arguments = json.dumps(block.input or {})
                calls.append({"id": block.id, "type": "function",
                              "function": {"name": block.name, "arguments": arguments}})  # fmt: skip
            elif block.type == "tool_result" and message.role == "user":
                out.append({"role": "tool", "tool_call_id": block.tool_use_id,
                            "content": _text(block.content, f"{where}.tool_result")})  # fmt: skip
            else:
                raise InvalidRequest(
                    f"{where}: {block.type} blocks are not supported in a {message.role} message here"
                )
        images = any(part["type"] == "image_url" for part in parts)
        if text or calls or images or message.role == "assistant":
            item: dict[str, Any] = {"role": message.role, "content": parts if images else "".join(text)}
            if calls:
                item["tool_calls"] = calls
            if thoughts:
                item["reasoning_content"] = "".join(thoughts)
            out.append(item)
    return out


def _tools(body: AnthropicPrompt) -> tuple[list[dict[str, Any]], Any, bool]:
    """The tools in OpenAI's shape, the tool choice in OpenAI's terms, and whether calls may come
    several at once (only when the client says ``disable_parallel_tool_use: false``: a small model asked
    for a list of calls tends to repeat one)."""
    tools = []
    for index, tool in enumerate(body.tools or []):
        if tool.type not in (None, "custom"):
            raise InvalidRequest(
                f"tools.{index}: {tool.type} is one of Anthropic's server tools, which run on Anthropic's "
                "side; only client tools (name, description, input_schema) are served here",
                param=f"tools.{index}.type",
            )
        tools.append({"type": "function", "function": {
            "name": tool.name, "description": tool.description or "",
            "parameters": tool.input_schema or {"type": "object"}}})  # fmt: skip
    choice = body.tool_choice
    parallel = choice is not None and choice.disable_parallel_tool_use is False
    kind = choice.type if choice is not None else "auto"
    if kind == "any":
        return tools, "required", parallel
    if kind == "tool":
        assert choice is not None and choice.name  # the schema asks for it
        return tools, {"type": "function", "function": {"name": choice.name}}, parallel
    return tools, kind, parallel  # "auto" or "none"


def _reasoning(body: AnthropicPrompt) -> Reasoning:
    config = body.output_config
    effort = _EFFORTS[config.effort] if config is not None and config.effort else None
    thinking = body.thinking
    if thinking is None:
        return Reasoning(effort=effort)
    if thinking.type == "disabled":
        return Reasoning(enabled=False)
    return Reasoning(enabled=True, effort=effort, budget_tokens=thinking.budget_tokens)


def chat_params(body: AnthropicPrompt, defaults: PerModelSettings) -> ChatParams:
    """``body`` in the core's terms; a count_tokens body (no max_tokens, no sampling) gives the same
    messages, tools and switches as the message request it counts for."""
    tools, choice, parallel = _tools(body)
    params = ChatParams(messages=messages(body), tools=tools, tool_choice=choice,
                        parallel_tool_calls=parallel, reasoning=_reasoning(body),
                        json_schema=body.output_schema, grammar=body.grammar)  # fmt: skip
    if not isinstance(body, AnthropicRequest):
        return params
    asked = {k: getattr(body, k) for k in ("temperature", "top_p", "top_k")}
    return replace(params, sampling=model_defaults.sampling(asked, defaults), max_tokens=body.max_tokens,
                   stop=tuple(body.stop_sequences or ()))  # fmt: skip
