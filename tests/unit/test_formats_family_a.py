"""Model families with tool-call formats of their own (Qwen3-Coder's XML-style parameters, Llama 3.x,
Mistral, Command R7B): real replies, as the models' cards and llama.cpp's tests/test-chat.cpp record
them, read whole and streamed at every split (tests/format_streams.py); each family recognised from its
real template (tests/fixtures/templates); its grammar built by llama.cpp and letting the model write
the family's real calls (and nothing else); its template rendering tools and an earlier call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from appliance.engine.chat_template import ChatTemplate
from appliance.engine.formats import CommandR7BFormat, Llama3Format, MistralFormat, Qwen3CoderFormat, detect
from appliance.engine.formats.base import ChatFormat
from appliance.engine.formats.mistral import mistral_id
from appliance.engine.gbnf import check_gbnf
from tests.format_streams import check_every_split, stream
from tests.grammar_text import allowed_by_llama_cpp

TEMPLATES = Path(__file__).parent.parent / "fixtures" / "templates"

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["c", "f"]},
            },
            "required": ["city"],
        },
    },
}
RUN = {
    "type": "function",
    "function": {
        "name": "run",
        "description": "Run Python code.",
        "parameters": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "options": {
                    "type": "object",
                    "properties": {"timeout_s": {"type": "number"}, "env": {"type": "object"}},
                },
            },
            "required": ["code"],
        },
    },
}
TOOLS = [WEATHER, RUN]


def calls(parsed: Any) -> list[tuple[str, Any]]:
    """The parsed calls with their arguments decoded (each must be whole JSON)."""
    return [(c.name, json.loads(c.arguments)) for c in parsed.calls]


def history(call_id: str = "call_1") -> list[dict[str, Any]]:
    """A conversation with an earlier call (OpenAI shape) and its result."""
    return [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris", "days": 2}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": '{"temp_c": 21}'},
    ]


def rendered(fmt: ChatFormat, template: str, messages: list[dict[str, Any]]) -> str:
    """``messages`` through the real ``template``, the assistant turns with calls made ready by
    ``fmt`` as the engine does."""
    ready = [fmt.history_calls(m) if m.get("tool_calls") else m for m in messages]
    chat = ChatTemplate((TEMPLATES / template).read_text(), bos_token="<s>", eos_token="</s>")
    return chat.render(ready, tools=TOOLS)


def grammars(fmt: ChatFormat, *, parallel: bool = True) -> dict[str, str]:
    """The family's grammar for auto, required and a named tool, each checked by our GBNF checker."""
    out = {}
    for choice in ("auto", "required", "get_weather"):
        grammar = fmt.grammar(TOOLS, choice, parallel=parallel)
        assert grammar is not None
        check_gbnf(grammar.gbnf)
        assert bool(grammar.triggers) == (choice == "auto")
        out[choice] = grammar.gbnf
    return out


# --- Qwen3-Coder -------------------------------------------------------------------------------

QWEN_CODER = Qwen3CoderFormat().for_tools(TOOLS)
CODER_CALL = (
    "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>"
)
CODER_RUN = (
    "<tool_call>\n<function=run>\n<parameter=code>\n"
    'def hello():\n    print("Hello, wörld! 格")\n\nhello()\n'
    "</parameter>\n<parameter=options>\n"
    '{"timeout_s": 2.5, "env": {"LANG": "C", "Q": "say \\"hi\\""}}\n'
    "</parameter>\n</function>\n</tool_call>"
)


def test_qwen3_coder_call_streams_at_every_split() -> None:
    whole = check_every_split(QWEN_CODER, CODER_CALL)
    assert whole.content == "" and calls(whole) == [("get_weather", {"city": "Paris"})]


def test_qwen3_coder_values_are_typed_by_the_tool_schema() -> None:
    output = (
        "Let me call it.\n<tool_call>\n<function=get_weather>\n<parameter=city>\n1984\n</parameter>\n"
        "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>"
    )
    whole = check_every_split(QWEN_CODER, output)
    assert whole.content == "Let me call it.\n"
    # city is a string parameter: "1984" stays text; days is an integer.
    assert calls(whole) == [("get_weather", {"city": "1984", "days": 3})]


def test_qwen3_coder_multiline_code_nested_objects_quotes_and_non_ascii() -> None:
    whole = check_every_split(QWEN_CODER, CODER_RUN)
    assert calls(whole) == [
        (
            "run",
            {
                "code": 'def hello():\n    print("Hello, wörld! 格")\n\nhello()',
                "options": {"timeout_s": 2.5, "env": {"LANG": "C", "Q": 'say "hi"'}},
            },
        )
    ]


def test_qwen3_coder_two_calls_after_words() -> None:
    output = "I'll check both.\n" + CODER_CALL + "\n" + CODER_CALL.replace("Paris", "Saint-Malo")
    whole = check_every_split(QWEN_CODER, output)
    assert whole.content == "I'll check both.\n"
    assert calls(whole) == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Saint-Malo"})]


def test_qwen3_coder_arguments_grow_one_completed_parameter_at_a_time() -> None:
    head = "<tool_call>\n<function=get_weather>\n<parameter=city>\nPar"
    assert stream(QWEN_CODER, head, [head], cut=True).calls == [("get_weather", "{")]
    more = head + "is\n</parameter>\n<parameter=days>\n2"
    assert stream(QWEN_CODER, more, [more], cut=True).calls == [("get_weather", '{"city": "Paris"')]


def test_qwen3_coder_reply_without_a_call_and_a_thinking_variant() -> None:
    assert check_every_split(QWEN_CODER, "Hello <tool is not a call>").content == "Hello <tool is not a call>"
    thinking = Qwen3CoderFormat(thinks=True).for_tools(TOOLS)
    whole = check_every_split(thinking, "Paris, then.\n</think>\n\n" + CODER_CALL, thinking=True)
    assert whole.reasoning == "Paris, then." and calls(whole) == [("get_weather", {"city": "Paris"})]


def test_qwen3_coder_without_schemas_reads_json_looking_values_as_json() -> None:
    output = CODER_CALL.replace("Paris", "[1, 2]")
    assert calls(check_every_split(Qwen3CoderFormat(), output)) == [("get_weather", {"city": [1, 2]})]


def test_qwen3_coder_template_is_recognised_before_hermes() -> None:
    fmt = detect((TEMPLATES / "Qwen3-Coder.jinja").read_text())
    assert isinstance(fmt, Qwen3CoderFormat) and fmt.thinking is None and fmt.native_tools
    assert detect((TEMPLATES / "Qwen-Qwen3-0.6B.jinja").read_text()).name == "hermes"


def test_qwen3_coder_template_renders_tools_and_an_earlier_call() -> None:
    prompt = rendered(QWEN_CODER, "Qwen3-Coder.jinja", history())
    assert "<name>get_weather</name>" in prompt and "<name>run</name>" in prompt
    assert "<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n<parameter=days>\n2\n" in prompt
    assert '<tool_response>\n{"temp_c": 21}\n</tool_response>' in prompt


def with_days(days: str) -> str:
    days_parameter = f"<parameter=days>\n{days}\n</parameter>\n"
    return CODER_CALL.replace("</function>", days_parameter + "</function>")


def test_qwen3_coder_grammars_let_llama_cpp_write_real_calls_only() -> None:
    made = grammars(QWEN_CODER)
    single = QWEN_CODER.grammar(TOOLS, "auto", parallel=False)
    assert single is not None
    two = CODER_CALL + "\n" + CODER_CALL
    cases = [
        (made["auto"], CODER_CALL),
        (made["auto"], CODER_RUN),
        (made["auto"], two),
        (made["required"], CODER_RUN),
        (made["get_weather"], with_days("3")),
        # refused: a named tool other than the one asked for, a day count that is not an integer,
        # a missing required parameter, and a second call where only one may be made
        (made["get_weather"], CODER_RUN),
        (made["auto"], with_days("soon")),
        (made["auto"], "<tool_call>\n<function=run>\n</function>\n</tool_call>"),
        (single.gbnf, two),
    ]
    assert allowed_by_llama_cpp(cases) == [True] * 5 + [False] * 4


# --- Llama 3.x ---------------------------------------------------------------------------------

LLAMA = Llama3Format()
LLAMA_TEMPLATES = [
    "meta-llama-Llama-3.1-8B-Instruct.jinja",
    "meta-llama-Llama-3.2-3B-Instruct.jinja",
    "meta-llama-Llama-3.3-70B-Instruct.jinja",
]
# As Meta's Llama 3.1 prompt-format docs show them: a JSON call, a builtin tool's call ending the
# message with <|eom_id|>.
LLAMA_CALL = '{"name": "get_weather", "parameters": {"city": "Saint-\\"Malo\\" ☀", "days": 2}}'
LLAMA_BUILTIN = '<|python_tag|>brave_search.call(query="current weather in Menlo Park, California")<|eom_id|>'


def test_llama3_json_call_is_the_whole_reply() -> None:
    whole = check_every_split(LLAMA, LLAMA_CALL)
    assert whole.content == ""
    assert calls(whole) == [("get_weather", {"city": 'Saint-"Malo" ☀', "days": 2})]
    nested = '\n{"name": "run", "parameters": {"code": "x", "options": {"env": {"A": "b"}}}}'
    assert calls(check_every_split(LLAMA, nested)) == [("run", {"code": "x", "options": {"env": {"A": "b"}}})]


def test_llama3_python_tag_call_after_words() -> None:
    whole = check_every_split(LLAMA, "Let me look.<|python_tag|>" + LLAMA_CALL + "<|eom_id|>")
    assert whole.content == "Let me look."
    assert calls(whole) == [("get_weather", {"city": 'Saint-"Malo" ☀', "days": 2})]


def test_llama3_builtin_tools_in_python_syntax() -> None:
    whole = check_every_split(LLAMA, LLAMA_BUILTIN)
    assert calls(whole) == [("brave_search", {"query": "current weather in Menlo Park, California"})]
    wolfram = '<|python_tag|>wolfram_alpha.call(query="solve x^3 - 4x^2 + 6x - 24 = 0 (it\'s «cubic»)")'
    assert calls(check_every_split(LLAMA, wolfram)) == [
        ("wolfram_alpha", {"query": "solve x^3 - 4x^2 + 6x - 24 = 0 (it's «cubic»)"})
    ]
    code = "<|python_tag|>import math\nprint(math.sqrt(16))<|eom_id|>"
    assert calls(check_every_split(LLAMA, code)) == [
        ("python", {"code": "import math\nprint(math.sqrt(16))"})
    ]


def test_llama3_replies_without_a_call() -> None:
    assert check_every_split(LLAMA, "Hello, world!\nWhat's up?").content == "Hello, world!\nWhat's up?"
    answer = '  {"name": "Bob", "age": 3}'  # JSON with a name, but no parameters: an answer
    whole = check_every_split(LLAMA, answer)
    assert whole.content == answer and not whole.calls
    assert check_every_split(LLAMA, "a <|python").content == "a <|python"
    assert check_every_split(LLAMA, "Is " + answer + " one?").content == "Is " + answer + " one?"


def test_llama3_json_call_after_words_where_the_grammar_triggers() -> None:
    whole = check_every_split(LLAMA, "I'll check.\n" + LLAMA_CALL)
    assert whole.content == "I'll check.\n" and calls(whole)[0][0] == "get_weather"


@pytest.mark.parametrize("template", LLAMA_TEMPLATES)
def test_llama3_templates_are_recognised_and_render_tools_and_an_earlier_call(template: str) -> None:
    source = (TEMPLATES / template).read_text()
    assert detect(source).name == "llama3"
    prompt = rendered(LLAMA, template, history())
    assert '"name": "get_weather"' in prompt and '"name": "run"' in prompt
    assert '{"name": "get_weather", "parameters": {"city": "Paris", "days": 2}}' in prompt
    # The result goes in an ipython turn (3.1 and 3.3 write a string result through tojson: quoted).
    assert "temp_c" in prompt.split("ipython<|end_header_id|>\n\n")[-1]


def test_functionary_and_hermes_on_llama_are_not_llama3() -> None:
    others = ["meetkai-functionary-medium-v3.1.jinja", "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja"]
    for template in others:
        assert detect((TEMPLATES / template).read_text()).name != "llama3"


def test_llama3_grammars_let_llama_cpp_write_real_calls_only() -> None:
    made = grammars(LLAMA)
    weather = '{"name": "get_weather", "parameters": {"city": "Paris"}}'
    cases = [
        (made["auto"], weather),
        (made["auto"], "<|python_tag|>" + weather),
        (made["required"], '{"name": "run", "parameters": {"code": "1", "options": {"timeout_s": 1}}}'),
        (made["get_weather"], LLAMA_CALL),
        # refused: another tool than the one named, a missing required parameter, two calls
        (made["get_weather"], '{"name": "run", "parameters": {"code": "1"}}'),
        (made["auto"], '{"name": "get_weather", "parameters": {"days": 1}}'),
        (made["auto"], weather + weather),
    ]
    assert allowed_by_llama_cpp(cases) == [True] * 4 + [False] * 3


# --- Mistral Nemo, Mistral Small 3.2, Devstral -------------------------------------------------

NEMO = MistralFormat()
SMALL = MistralFormat(args=True)
DEVSTRAL = MistralFormat(args=True, call_ids=False)
NEMO_CALL = '{"name": "get_weather", "arguments": {"city": "Zürich \\"ZH\\"", "days": 1}, "id": "a1B2c3D4e"}'
NEMO_RUN = '{"name": "run", "arguments": {"code": "x", "options": {"env": {"A": "b"}}}, "id": "000000002"}'


def test_nemo_json_list_of_calls_keeps_their_ids() -> None:
    whole = check_every_split(NEMO, f"[TOOL_CALLS][{NEMO_CALL}, {NEMO_RUN}]")
    assert whole.content == ""
    assert calls(whole) == [
        ("get_weather", {"city": 'Zürich "ZH"', "days": 1}),
        ("run", {"code": "x", "options": {"env": {"A": "b"}}}),
    ]
    assert [c.id for c in whole.calls] == ["a1B2c3D4e", "000000002"]
    got = stream(NEMO, f"[TOOL_CALLS][{NEMO_CALL}]", list(f"[TOOL_CALLS][{NEMO_CALL}]"))
    assert [c.id for c in got.finished] == ["a1B2c3D4e"]  # the id written after the arguments


def test_small_3_2_calls_with_call_ids_after_words() -> None:
    output = (
        'Checking.[TOOL_CALLS]get_weather[CALL_ID]000000001[ARGS]{"city": "東京", "days": 3}'
        '[TOOL_CALLS]run[CALL_ID]000000002[ARGS]{"code": "print(\'a\\\\tb\')", "options": {"env": {}}}'
    )
    whole = check_every_split(SMALL, output)
    assert whole.content == "Checking."
    assert calls(whole) == [
        ("get_weather", {"city": "東京", "days": 3}),
        ("run", {"code": "print('a\\tb')", "options": {"env": {}}}),
    ]
    got = stream(SMALL, output, [output])
    assert [c.id for c in got.finished] == ["000000001", "000000002"]


def test_devstral_calls_without_ids_and_replies_without_calls() -> None:
    output = 'Hello, world!\nWhat\'s up?[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}'
    whole = check_every_split(DEVSTRAL, output)
    assert whole.content == "Hello, world!\nWhat's up?"
    assert calls(whole) == [("get_weather", {"city": "Paris"})] and whole.calls[0].id is None
    for fmt in (NEMO, SMALL, DEVSTRAL):
        assert check_every_split(fmt, "No [TOOL] here [1, 2]").content == "No [TOOL] here [1, 2]"


@pytest.mark.parametrize(
    ("template", "fmt"),
    [
        ("mistralai-Mistral-Nemo-Instruct-2407.jinja", NEMO),
        ("Mistral-Small-3.2-24B-Instruct-2506.jinja", SMALL),
        ("unsloth-mistral-Devstral-Small-2507.jinja", DEVSTRAL),
    ],
)
def test_mistral_templates_are_recognised_and_take_any_call_id(template: str, fmt: MistralFormat) -> None:
    found = detect((TEMPLATES / template).read_text())
    assert isinstance(found, MistralFormat) and (found.args, found.call_ids) == (fmt.args, fmt.call_ids)
    # An OpenAI client sends back the ids the appliance gave (call_ + 24 hex digits): the templates
    # refuse any id but 9 letters and digits, so the call and its result get the same such id.
    messages = history("call_0123456789abcdef01234567")
    messages = [fmt.history_result(m) if m["role"] == "tool" else m for m in messages]
    prompt = rendered(fmt, template, messages)
    assert '"name": "get_weather"' in prompt and '"name": "run"' in prompt
    assert "temp_c" in prompt
    if fmt is not DEVSTRAL:
        short = mistral_id("call_0123456789abcdef01234567")
        assert len(short) == 9 and short.isalnum() and prompt.count(short) == 2
    assert mistral_id("a1B2c3D4e") == "a1B2c3D4e"


def test_mistral_grammars_let_llama_cpp_write_real_calls_only() -> None:
    nemo, small, devstral = grammars(NEMO), grammars(SMALL), grammars(DEVSTRAL)
    small_call = '[TOOL_CALLS]get_weather[CALL_ID]000000001[ARGS]{"city": "Paris"}'
    devstral_call = '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}'
    cases = [
        (nemo["auto"], f"[TOOL_CALLS][{NEMO_CALL}, {NEMO_RUN}]"),
        (nemo["get_weather"], f"[TOOL_CALLS][{NEMO_CALL}]"),
        (small["auto"], small_call + small_call.replace("001", "002")),
        (small["required"], small_call),
        (devstral["get_weather"], devstral_call),
        # refused: an id of 8 characters, a call without its id, a wrong tool, a missing parameter
        (nemo["auto"], f"[TOOL_CALLS][{NEMO_CALL.replace('a1B2c3D4e', 'a1B2c3D4')}]"),
        (small["auto"], devstral_call),
        (devstral["get_weather"], '[TOOL_CALLS]run[ARGS]{"code": "1"}'),
        (devstral["auto"], "[TOOL_CALLS]get_weather[ARGS]{}"),
    ]
    assert allowed_by_llama_cpp(cases) == [True] * 5 + [False] * 4


def test_ministral_3_reasoning_thinks_between_think_tags() -> None:
    fmt = detect((TEMPLATES / "mistralai-Ministral-3-14B-Reasoning-2512.jinja").read_text())
    assert isinstance(fmt, MistralFormat) and fmt.args and not fmt.call_ids and fmt.thinking is not None
    words = check_every_split(fmt, "[THINK]I'm\nthinking[/THINK]Hello, world!\nWhat's up?")
    assert (words.reasoning, words.content) == ("I'm\nthinking", "Hello, world!\nWhat's up?")
    # From llama.cpp's tests: a call marker inside the thoughts is a thought.
    output = (
        '[THINK]Let me think about [TOOL_CALLS]get_weather[ARGS]{"city":"x"} and more[/THINK]'
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}'
    )
    whole = check_every_split(fmt, output)
    assert whole.reasoning == 'Let me think about [TOOL_CALLS]get_weather[ARGS]{"city":"x"} and more'
    assert whole.content == "" and calls(whole) == [("get_weather", {"city": "Paris"})]


# --- Command R7B -------------------------------------------------------------------------------

R7B = CommandR7BFormat()
R7B_TEMPLATE = "CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja"
# llama.cpp's recorded replies (tests/test-chat.cpp), with the template's own layout of the list.
R7B_CALLS = (
    "<|START_THINKING|>I'm\nthinking<|END_THINKING|><|START_ACTION|>[\n"
    '    {"tool_call_id": "0", "tool_name": "get_weather", '
    '"parameters": {"city": "Kraków \\"PL\\"", "days": 1}},\n'
    '    {"tool_call_id": "1", "tool_name": "run", '
    '"parameters": {"code": "x", "options": {"env": {"A": "b"}}}}\n'
    "]<|END_ACTION|>"
)


def test_command_r7b_thoughts_and_two_calls() -> None:
    whole = check_every_split(R7B, R7B_CALLS)
    assert whole.reasoning == "I'm\nthinking" and whole.content == ""
    assert calls(whole) == [
        ("get_weather", {"city": 'Kraków "PL"', "days": 1}),
        ("run", {"code": "x", "options": {"env": {"A": "b"}}}),
    ]
    assert [c.id for c in whole.calls] == [None, None]  # the turn's indexes: the reader makes ids
    one = R7B_CALLS.replace("<|START_THINKING|>I'm\nthinking", "<|START_THINKING|>").split(",\n    {")[0]
    assert calls(check_every_split(R7B, one + "\n]<|END_ACTION|>"))[0][0] == "get_weather"


def test_command_r7b_response_is_the_content() -> None:
    output = "<|START_THINKING|>I'm\nthinking<|END_THINKING|>"
    for tools in (True, False):  # a chat without tools: the answer's markers do not show either
        whole = check_every_split(
            R7B, output + "<|START_RESPONSE|>Hello, world!\nWhat's up?<|END_RESPONSE|>", tools=tools
        )
        assert (whole.reasoning, whole.content, whole.calls) == (
            "I'm\nthinking",
            "Hello, world!\nWhat's up?",
            [],
        )
    assert check_every_split(R7B, "Plain words, <|no block|>").content == "Plain words, <|no block|>"


def test_command_r7b_reply_cut_mid_call_keeps_what_was_written() -> None:
    output = R7B_CALLS.split('"parameters": ')[0]
    assert stream(R7B, output, [output], cut=True).calls == [("get_weather", "")]


def test_command_r7b_template_is_recognised_and_renders_tools_and_an_earlier_call() -> None:
    assert isinstance(detect((TEMPLATES / R7B_TEMPLATE).read_text()), CommandR7BFormat)
    messages = history()
    messages[2]["reasoning_content"] = "I will look it up."
    prompt = rendered(R7B, R7B_TEMPLATE, messages)
    assert '"name": "get_weather"' in prompt and '"name": "run"' in prompt
    assert "<|START_THINKING|>I will look it up.<|END_THINKING|><|START_ACTION|>" in prompt
    assert '"tool_name": "get_weather", "parameters": {"city": "Paris", "days": 2}' in prompt
    assert "temp_c" in prompt.split("<|START_TOOL_RESULT|>")[-1]


def test_command_r7b_grammars_let_llama_cpp_write_real_calls_only() -> None:
    made = grammars(R7B)
    single = R7B.grammar(TOOLS, "auto", parallel=False)
    assert single is not None
    action = R7B_CALLS.split("<|END_THINKING|>")[1]
    weather = action.split(",\n    {")[0] + "\n]<|END_ACTION|>"
    cases = [
        (made["auto"], action),
        (made["required"], R7B_CALLS),  # thoughts first, then the calls
        (made["required"], action),
        (made["get_weather"], weather),
        # refused: another tool than the one named, two calls where one may be made, no list
        (made["get_weather"], action),
        (single.gbnf, action),
        (made["auto"], action.replace("[\n", "").replace("\n]", "")),
    ]
    assert allowed_by_llama_cpp(cases) == [True] * 4 + [False] * 3


def test_qwen3_coder_first_call_without_its_tool_call_tag() -> None:
    bare = CODER_CALL.removeprefix("<tool_call>\n")
    # As llama.cpp's tests record it: the first call opened by <function=NAME> alone.
    whole = check_every_split(QWEN_CODER, "Let me call it.\n" + bare + "\n" + CODER_RUN)
    assert whole.content == "Let me call it.\n"
    assert [name for name, _ in calls(whole)] == ["get_weather", "run"]
    code = "#include <functional>\n<function=other> is no tool of ours"
    assert check_every_split(QWEN_CODER, code).content == code
    grammar = QWEN_CODER.grammar(TOOLS, "auto", parallel=True)
    assert grammar is not None and "<function=get_weather>" in grammar.triggers
    assert allowed_by_llama_cpp([(grammar.gbnf, bare + "\n" + CODER_RUN), (grammar.gbnf, bare + bare)]) == [
        True,
        False,  # only the first call may leave its tag out
    ]
