"""Model families' chat formats: how each writes tool calls and thoughts, recognised from its chat
template (llama.cpp's common/chat.cpp is the reference for what each family writes)."""

from __future__ import annotations

from appliance.engine.formats.base import ChatFormat, Thinking
from appliance.engine.formats.command_r import CommandR7BFormat, is_command_r7b
from appliance.engine.formats.deepseek import DeepSeekFormat, is_deepseek
from appliance.engine.formats.functionary import (
    FunctionaryV31Format,
    FunctionaryV32Format,
    is_functionary_v31,
    is_functionary_v32,
)
from appliance.engine.formats.generic import GenericFormat
from appliance.engine.formats.gpt_oss import GptOssFormat
from appliance.engine.formats.granite import GraniteFormat, is_granite3
from appliance.engine.formats.hermes import HermesFormat
from appliance.engine.formats.llama3 import Llama3Format, is_llama3
from appliance.engine.formats.mistral import MistralFormat, mistral_style
from appliance.engine.formats.qwen3_coder import Qwen3CoderFormat


def detect(source: str | None) -> ChatFormat:
    """The format of the model whose chat template is ``source`` (None: the model has none)."""
    text = source or ""
    thinks = "<think>" in text
    if "<|channel|>" in text:  # harmony's channels: gpt-oss
        return GptOssFormat()
    if is_functionary_v32(text):
        return FunctionaryV32Format()
    if is_functionary_v31(text) and "<tool_call>" not in text:
        return FunctionaryV31Format()
    if is_granite3(text):
        return GraniteFormat()
    if is_deepseek(text):
        return DeepSeekFormat(text, v31="```json" not in text)
    if "<tool_call>" in text and "<function=" in text and "<parameter=" in text:
        return Qwen3CoderFormat(thinks=thinks)
    if is_llama3(text):
        return Llama3Format()
    if is_command_r7b(text):
        return CommandR7BFormat()
    mistral = mistral_style(text)
    if mistral is not None:
        return mistral
    if "<tool_call>" in text:
        return HermesFormat(thinks=thinks)
    fmt = GenericFormat()
    if thinks:
        fmt.thinking = Thinking("<think>", "</think>")
    return fmt


__all__ = [
    "ChatFormat",
    "CommandR7BFormat",
    "DeepSeekFormat",
    "FunctionaryV31Format",
    "FunctionaryV32Format",
    "GenericFormat",
    "GptOssFormat",
    "GraniteFormat",
    "HermesFormat",
    "Llama3Format",
    "MistralFormat",
    "Qwen3CoderFormat",
    "detect",
]
