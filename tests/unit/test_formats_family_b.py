"""Model families' native tool-call and thinking formats (DeepSeek R1 and V3.1, gpt-oss, Functionary,
Granite): replies as the models write them (from llama.cpp's tests/test-chat.cpp and the model cards)
read whole and streamed at every split, each family recognised from its real template, the template
rendered with tools and an earlier call, and the call grammars accepted by our checker and by
llama.cpp's own parser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from appliance.engine.chat_template import ChatTemplate
from appliance.engine.formats import (
    ChatFormat,
    DeepSeekFormat,
    FunctionaryV31Format,
    FunctionaryV32Format,
    GptOssFormat,
    GraniteFormat,
    detect,
)
from appliance.engine.gbnf import check_gbnf
from tests.format_streams import check_every_split, stream
from tests.grammar_text import allowed_by_llama_cpp
from tests.llama_grammars import built_by_llama_cpp

TEMPLATES = Path(__file__).parent.parent / "fixtures" / "templates"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "where": {
                    "type": "object",
                    "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
                },
            },
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}},
    },
}
# Arguments with a nested object, escaped quotes and non-ASCII text, as a model writes them.
NESTED = '{"city": "Saint-\\"Malo\\" été", "where": {"lat": 48.6, "lon": -2.0}}'


def calls(parsed: Any) -> list[tuple[str, Any]]:
    """The parsed calls as (name, arguments decoded): arguments must be whole JSON."""
    return [(c.name, json.loads(c.arguments)) for c in parsed.calls]


def fixture(name: str) -> str:
    return (TEMPLATES / name).read_text()


def rendered(fmt: ChatFormat, source: str, variables: dict[str, Any] | None = None) -> str:
    """A conversation with an earlier call and its result, rendered by the family's real template as
    the engine will render it (tools to the template, or their instructions in the system message)."""
    tools = [WEATHER, TIME]
    system = "You are helpful."
    if not fmt.native_tools:
        system += "\n" + (fmt.tool_instructions(tools, "auto") or "")
    earlier = {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": NESTED}}
        ],
    }
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": "Weather in Saint-Malo?"},
        fmt.history_calls(earlier),
        {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": '{"sky": "clear"}'},
        {"role": "user", "content": "And the time?"},
    ]
    template = ChatTemplate(source, bos_token="<s>", eos_token="</s>")
    listed = fmt.template_tools(tools) if fmt.native_tools else None
    return template.render(messages, tools=listed, variables=variables)


# DeepSeek R1: llama.cpp's recorded reply (tests/test-chat.cpp), the output starting inside the
# thoughts the template opened.
R1_REPLY = (
    "The user wants the weather.\n</think>\n\nLet me check."
    "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
    + NESTED
    + "\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n"
    '{"zone": "CET"}```<｜tool▁call▁end｜><｜tool▁calls▁end｜>'
)


def test_deepseek_r1_thoughts_words_and_two_calls_stream_at_every_split() -> None:
    whole = check_every_split(DeepSeekFormat(), R1_REPLY, thinking=True)
    assert whole.reasoning == "The user wants the weather."
    assert whole.content == "Let me check."
    assert calls(whole) == [("get_weather", json.loads(NESTED)), ("get_time", {"zone": "CET"})]


def test_deepseek_r1_reply_without_a_call_and_llama_cpps_recorded_call() -> None:
    fmt = DeepSeekFormat()
    plain = check_every_split(fmt, "I'm\nthinking</think>Hello, world!\nWhat's up?", thinking=True)
    assert (plain.reasoning, plain.content, plain.calls) == ("I'm\nthinking", "Hello, world!\nWhat's up?", [])
    recorded = (
        "</think><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>special_function\n"
        '```json\n{"arg1": 1}```<｜tool▁call▁end｜><｜tool▁calls▁end｜>'
    )
    whole = check_every_split(fmt, recorded, thinking=True)
    assert calls(whole) == [("special_function", {"arg1": 1})] and whole.content == ""
    assert check_every_split(fmt, "a <｜tool is not a call").content == "a <｜tool is not a call"


def test_deepseek_calls_that_begin_inside_the_opened_thoughts_end_them() -> None:
    # What a grammar forcing the calls from the first token makes, or a distill skipping </think>.
    output = "Need the weather." + R1_REPLY[R1_REPLY.index("<｜tool▁calls▁begin｜>") :]
    whole = check_every_split(DeepSeekFormat(), output, thinking=True)
    assert (whole.reasoning, whole.content) == ("Need the weather.", "")
    assert [c.name for c in whole.calls] == ["get_weather", "get_time"]
    # Without tools the same text is all thoughts, as the model wrote it.
    assert check_every_split(DeepSeekFormat(), output, thinking=True, tools=False).reasoning == output


def test_deepseek_r1_reply_cut_mid_call_keeps_what_was_written() -> None:
    output = (
        '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{"city": "Pa'
    )
    got = stream(DeepSeekFormat(), output, [output], cut=True)
    assert got.calls == [("get_weather", '{"city": "Pa')]


def test_deepseek_v31_calls_after_thoughts_and_words() -> None:
    fmt = DeepSeekFormat(v31=True)
    # llama.cpp's recorded V3.1 reply with reasoning, content and two calls
    output = (
        "REASONING</think>CONTENT<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>"
        '{"zone": "Europe/Paris"}<｜tool▁call▁end｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>'
        + NESTED
        + "<｜tool▁call▁end｜><｜tool▁calls▁end｜>"
    )
    whole = check_every_split(fmt, output, thinking=True)
    assert (whole.reasoning, whole.content) == ("REASONING", "CONTENT")
    assert calls(whole) == [("get_time", {"zone": "Europe/Paris"}), ("get_weather", json.loads(NESTED))]
    no_thinking = check_every_split(fmt, "CONTENT")  # the prompt closed the thoughts: <think></think>
    assert (no_thinking.reasoning, no_thinking.content) == ("", "CONTENT")


@pytest.mark.parametrize(
    ("template", "name", "native"),
    [
        ("deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja", "deepseek-r1", False),
        ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", "deepseek-r1", False),
        ("llama-cpp-deepseek-r1.jinja", "deepseek-r1", True),
        ("deepseek-ai-DeepSeek-V3.1.jinja", "deepseek-v3.1", False),
    ],
)
def test_deepseek_templates_are_recognised_and_render_calls(template: str, name: str, native: bool) -> None:
    source = fixture(template)
    fmt = detect(source)
    assert (fmt.name, fmt.native_tools, fmt.thinking is not None) == (name, native, True)
    prompt = rendered(fmt, source)
    assert "get_time" in prompt  # the tools are listed, by the template or the instructions
    assert "<｜tool▁call▁begin｜>" in prompt and "get_weather" in prompt and "Saint-" in prompt
    assert '{"sky": "clear"}' in prompt


@pytest.mark.parametrize(
    "template",
    [
        "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja",
        "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
        "llama-cpp-deepseek-r1.jinja",
        "deepseek-ai-DeepSeek-V3.1.jinja",
    ],
)
def test_deepseek_earlier_turn_with_words_and_a_call_keeps_both(template: str) -> None:
    source = fixture(template)
    fmt = detect(source)
    earlier = {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}],
    }
    messages = [{"role": "user", "content": "Time?"}, fmt.history_calls(earlier)]
    messages.append({"role": "tool", "tool_call_id": "c", "content": "noon"})
    prompt = ChatTemplate(source, bos_token="", eos_token="").render(messages)
    assert "Let me check." in prompt and "get_time" in prompt and "noon" in prompt


# gpt-oss: the harmony replies of llama.cpp's tests and OpenAI's harmony guide.
OSS_THOUGHT = "<|channel|>analysis<|message|>I'm\nthinking<|end|>"


def test_gpt_oss_thoughts_then_final_answer_stream_at_every_split() -> None:
    output = OSS_THOUGHT + "<|start|>assistant<|channel|>final<|message|>Hello, world!\nWhat's up? été"
    whole = check_every_split(GptOssFormat(), output + "<|return|>", tools=False)
    assert (whole.reasoning, whole.content, whole.calls) == (
        "I'm\nthinking",
        "Hello, world!\nWhat's up? été",
        [],
    )
    assert check_every_split(GptOssFormat(), output).content == "Hello, world!\nWhat's up? été"


@pytest.mark.parametrize(
    "header",
    [
        "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>",
        "<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>",
        "<|start|>assistant<|channel|>analysis to=functions.get_weather<|message|>",
    ],
    ids=["in-channel", "in-role", "analysis-channel"],
)
def test_gpt_oss_call_after_thoughts_and_a_preamble(header: str) -> None:
    preamble = "<|start|>assistant<|channel|>commentary<|message|>Checking the weather.<|end|>"
    whole = check_every_split(GptOssFormat(), OSS_THOUGHT + preamble + header + NESTED + "<|call|>")
    assert (whole.reasoning, whole.content) == ("I'm\nthinking", "Checking the weather.")
    assert calls(whole) == [("get_weather", json.loads(NESTED))]


def test_gpt_oss_call_right_after_the_prompts_assistant_header_and_two_thoughts() -> None:
    fmt = GptOssFormat()
    first = check_every_split(fmt, ' to=functions.special_function<|channel|>analysis<|message|>{"arg1": 1}')
    assert calls(first) == [("special_function", {"arg1": 1})]
    output = (
        OSS_THOUGHT + "<|start|>assistant" + OSS_THOUGHT + "<|start|>assistant<|channel|>final<|message|>ok"
    )
    assert check_every_split(fmt, output).reasoning == "I'm\nthinking\n\nI'm\nthinking"


def test_gpt_oss_built_in_tool_messages_and_plain_words() -> None:
    fmt = GptOssFormat()
    builtin = OSS_THOUGHT + "<|start|>assistant to=container.exec<|channel|>commentary<|message|>ls"
    whole = check_every_split(fmt, builtin)
    assert (whole.content, whole.calls) == ("", [])
    # A model that writes no harmony at all: its words are the answer.
    assert check_every_split(fmt, "Just words, to= nobody <b>").content == "Just words, to= nobody <b>"


def test_gpt_oss_template_renders_tools_effort_thoughts_and_an_earlier_call() -> None:
    source = fixture("openai-gpt-oss-120b.jinja")
    fmt = detect(source)
    assert (fmt.name, fmt.native_tools) == ("gpt-oss", True)
    prompt = rendered(fmt, source, {"reasoning_effort": "high"})
    assert "Reasoning: high" in prompt and "type get_time" in prompt
    assert "<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>" in prompt
    assert prompt.endswith("<|start|>assistant")
    earlier = {
        "role": "assistant",
        "content": None,
        "reasoning_content": "Look it up.",
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}],
    }
    ready = fmt.history_calls(earlier)
    assert (ready["thinking"], ready["content"]) == ("Look it up.", "")
    template = ChatTemplate(source, bos_token="<s>", eos_token="</s>")
    text = template.render([{"role": "user", "content": "Time?"}, ready], tools=fmt.template_tools([TIME]))
    assert "<|channel|>analysis<|message|>Look it up.<|end|>" in text


# Functionary: llama.cpp's recorded replies and the layouts of MeetKai's model cards.
def test_functionary_v31_words_then_two_calls_and_the_python_tag() -> None:
    fmt = FunctionaryV31Format()
    recorded = check_every_split(fmt, '<function=special_function>{"arg1": 1}</function>')
    assert calls(recorded) == [("special_function", {"arg1": 1})] and recorded.content == ""
    time_call = '<function=get_time>{"zone": "CET"}</function>'
    output = f"Let me look.<function=get_weather>{NESTED}</function>{time_call}"
    whole = check_every_split(fmt, output)
    assert whole.content == "Let me look."
    assert calls(whole) == [("get_weather", json.loads(NESTED)), ("get_time", {"zone": "CET"})]
    code = check_every_split(fmt, 'Running it.<|python_tag|>print("été")\nx = 1 < 2')
    assert code.content == "Running it." and calls(code) == [("python", {"code": 'print("été")\nx = 1 < 2'})]
    plain = check_every_split(fmt, "Hello, world!\nWhat's up? <b>a < b</b>")
    assert (plain.content, plain.calls) == ("Hello, world!\nWhat's up? <b>a < b</b>", [])


def test_functionary_v32_recipients_words_and_calls() -> None:
    fmt = FunctionaryV32Format()
    plain = check_every_split(fmt, "all\nHello, world!\nWhat's up?", tools=False)
    assert (plain.content, plain.calls) == ("Hello, world!\nWhat's up?", [])
    recorded = check_every_split(fmt, 'special_function\n{"arg1": 1}')
    assert calls(recorded) == [("special_function", {"arg1": 1})]
    output = f'all\nLet me look.>>>get_weather\n{NESTED}>>>get_time\n{{"zone": "CET"}}'
    whole = check_every_split(fmt, output)
    assert whole.content == "Let me look."
    assert calls(whole) == [("get_weather", json.loads(NESTED)), ("get_time", {"zone": "CET"})]
    code = check_every_split(fmt, "python\nprint(1 >> 2)\n")
    assert calls(code) == [("python", {"code": "print(1 >> 2)\n"})]
    # Words without a recipient (a model that forgets the layout) are still words.
    assert check_every_split(fmt, "Sure thing.\nBye").content == "Sure thing.\nBye"
    assert check_every_split(fmt, "get_time\n>>>all\nok").calls[0].arguments == "{}"


@pytest.mark.parametrize(
    ("template", "name"),
    [
        ("meetkai-functionary-medium-v3.1.jinja", "functionary-v3.1"),
        ("meetkai-functionary-medium-v3.2.jinja", "functionary-v3.2"),
    ],
)
def test_functionary_templates_are_recognised_and_render_calls(template: str, name: str) -> None:
    source = fixture(template)
    fmt = detect(source)
    assert (fmt.name, fmt.native_tools, fmt.thinking) == (name, True, None)
    prompt = rendered(fmt, source)
    assert "get_time" in prompt and '{"sky": "clear"}' in prompt
    call = "<function=get_weather>" if name.endswith("3.1") else ">>>get_weather\n"
    assert call + NESTED in prompt


def test_qwen3_coders_function_tags_are_not_functionary() -> None:
    assert not detect(fixture("Qwen3-Coder.jinja")).name.startswith("functionary")


# Granite: 3.3's list after <|tool_call|> (its model card) and its thinking mode's wrapper; 4.0 is Hermes.
def test_granite33_words_then_a_list_of_two_calls() -> None:
    fmt = GraniteFormat()
    listed = f'[{{"name": "get_weather", "arguments": {NESTED}}}, {{"name": "get_time", "arguments": {{}}}}]'
    whole = check_every_split(fmt, "Let me look.<|tool_call|>" + listed)
    assert whole.content == "Let me look."
    assert calls(whole) == [("get_weather", json.loads(NESTED)), ("get_time", {})]
    card = '<|tool_call|>[{"name": "get_current_weather", "arguments": {"location": "Boston, MA"}}]'
    assert calls(check_every_split(fmt, card)) == [("get_current_weather", {"location": "Boston, MA"})]
    lone = check_every_split(fmt, '<|tool_call|>{"name": "get_time", "arguments": {"zone": "été"}}')
    assert calls(lone) == [("get_time", {"zone": "été"})]


def test_granite33_thoughts_and_the_response_wrapper() -> None:
    fmt = GraniteFormat()
    output = "<think>I'm\nthinking</think><response>Hello, world!\nWhat's up? <b>été</b></response>"
    for tools in (True, False):
        whole = check_every_split(fmt, output, tools=tools)
        assert (whole.reasoning, whole.content) == ("I'm\nthinking", "Hello, world!\nWhat's up? <b>été</b>")
    recorded = check_every_split(fmt, "<think>I'm\nthinking</think>Hello, world!\nWhat's up?")
    assert (recorded.reasoning, recorded.content) == ("I'm\nthinking", "Hello, world!\nWhat's up?")
    assert check_every_split(fmt, "<resp is not a tag").content == "<resp is not a tag"


def test_granite_templates_render_calls_and_40_is_hermes() -> None:
    source = fixture("ibm-granite-granite-3.3-2B-Instruct.jinja")
    fmt = detect(source)
    assert (fmt.name, fmt.native_tools) == ("granite", True)
    prompt = rendered(fmt, source)
    assert '"name": "get_time"' in prompt and '{"sky": "clear"}' in prompt
    assert f'<|tool_call|>[{{"name": "get_weather", "arguments": {NESTED}}}]' in prompt
    thinking = ChatTemplate(source, bos_token="", eos_token="").render(
        [{"role": "user", "content": "Hi"}], variables={"thinking": True}
    )
    assert "<response></response>" in thinking
    granite4 = fixture("ibm-granite-granite-4.0.jinja")
    fmt4 = detect(granite4)
    assert (fmt4.name, fmt4.thinking) == ("hermes", None)
    assert '<tool_call>\n{"name": "get_weather", "arguments": ' + NESTED in rendered(fmt4, granite4)
    recorded = '<tool_call>\n{"name": "special_function", "arguments": {"arg1": 1}}\n</tool_call>'
    assert calls(check_every_split(fmt4, recorded)) == [("special_function", {"arg1": 1})]


@pytest.mark.parametrize(
    ("template", "thinking", "effort", "ending"),
    [
        # R1 thinks by default: the prompt leaves the thoughts open (llama.cpp's copy of the Qwen
        # distill's template closes them unless enable_thinking).
        ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", None, None, "<｜Assistant｜><think>\n"),
        ("deepseek-ai-DeepSeek-V3.1.jinja", None, None, "<｜Assistant｜><think></think>"),
        ("deepseek-ai-DeepSeek-V3.1.jinja", True, None, "<｜Assistant｜><think>"),
        ("openai-gpt-oss-120b.jinja", None, "high", "Reasoning: high"),
        ("openai-gpt-oss-120b.jinja", False, None, "Reasoning: low"),
        ("openai-gpt-oss-120b.jinja", None, None, "Reasoning: medium"),
        ("ibm-granite-granite-3.3-2B-Instruct.jinja", True, None, "<think></think>"),
    ],
)
def test_thinking_and_effort_reach_the_template(
    template: str, thinking: bool | None, effort: str | None, ending: str
) -> None:
    source = fixture(template)
    variables = detect(source).template_variables(thinking=thinking, effort=effort)
    prompt = ChatTemplate(source, bos_token="", eos_token="").render(
        [{"role": "user", "content": "Hi"}], variables=variables
    )
    assert prompt.endswith(ending) if ending.startswith("<｜") else ending in prompt


# Every family's grammar, for a choice of auto, required or one named tool.
FAMILIES: list[ChatFormat] = [
    DeepSeekFormat(),
    DeepSeekFormat(v31=True),
    GptOssFormat(),
    FunctionaryV31Format(),
    FunctionaryV32Format(),
    GraniteFormat(),
]
R1_CALLS = R1_REPLY[R1_REPLY.index("<｜tool▁calls▁begin｜>") :]
V31_CALL = (
    "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{}"
    + "<｜tool▁call▁end｜><｜tool▁calls▁end｜>"
)
OSS_CALL = "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>" + NESTED
# (format, choice, parallel, text the grammar must let the model write: from the trigger on when lazy)
MATCHES: list[tuple[ChatFormat, str, bool, str]] = [
    (DeepSeekFormat(), "auto", True, R1_CALLS),
    (
        DeepSeekFormat(),
        "get_weather",
        False,
        R1_CALLS.split("\n<｜tool▁call▁begin｜>")[0] + "<｜tool▁calls▁end｜>",
    ),
    (DeepSeekFormat(v31=True), "required", False, V31_CALL),
    (DeepSeekFormat(), "required", True, "The user wants it.\n</think>\n\n" + R1_CALLS),
    (GptOssFormat(), "auto", False, " to=functions.get_weather <|constrain|>json<|message|>" + NESTED),
    (GptOssFormat(), "required", False, OSS_THOUGHT + "<|start|>assistant" + OSS_CALL),
    (
        GptOssFormat(),
        "get_time",
        False,
        ' to=functions.get_time<|channel|>commentary json<|message|>{"zone": "x"}',
    ),
]


def grammars() -> list[tuple[str, str, Any]]:
    return [
        (fmt.name, choice, fmt.grammar([WEATHER, TIME], choice, parallel=parallel))
        for fmt in FAMILIES
        for choice in ("auto", "required", "get_time")
        for parallel in (True, False)
    ]


def test_call_grammars_pass_our_checker_and_llama_cpp() -> None:
    made = grammars()
    for name, choice, grammar in made:
        assert grammar is not None, name
        check_gbnf(grammar.gbnf)
        assert bool(grammar.triggers) == (choice == "auto"), (name, choice)
        assert "get_time" in grammar.gbnf and ("get_weather" in grammar.gbnf) == (choice != "get_time")
    assert all(built_by_llama_cpp([g.gbnf for *_, g in made]))


def test_call_grammars_let_the_model_write_its_real_calls_and_no_other_tool() -> None:
    cases = []
    for fmt, choice, parallel, text in MATCHES:
        grammar = fmt.grammar([WEATHER, TIME], choice, parallel=parallel)
        assert grammar is not None
        assert not grammar.triggers or text.startswith(grammar.triggers), (fmt.name, choice)
        unknown = text.replace("get_", "got_")  # a tool nobody offered
        cases += [(grammar.gbnf, text), (grammar.gbnf, unknown)]
    matched = allowed_by_llama_cpp(cases)
    assert matched == [True, False] * len(MATCHES), [(f.name, c) for f, c, *_ in MATCHES]
