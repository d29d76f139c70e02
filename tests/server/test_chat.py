"""Chat completions against the real daemon, through the official openai client and raw HTTP."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from appliance.bench.load import edit_prompt
from tests import web
from tests.server.conftest import MODEL_ID, NO_EOS_BIAS, Daemon, error_shape_ok

HELLO = [{"role": "user", "content": "Tell me about the sea."}]


def test_models_lists_the_default_model(client: openai.OpenAI, daemon: Daemon) -> None:
    ids = [m.id for m in client.models.list().data]
    assert ids == [MODEL_ID]
    card = web.get(f"{daemon.v1}/models/{MODEL_ID}").json()
    assert card["id"] == MODEL_ID and card["object"] == "model" and card["state"] == "ready"


def test_health_and_backend_header(daemon: Daemon) -> None:
    response = web.get(f"{daemon.url}/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.headers["x-appliance-backend"] == "local"


def test_chat_answers_with_exact_usage(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL_ID, messages=HELLO, max_tokens=12, temperature=0, logprobs=True
    )
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and reply.model == MODEL_ID
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage is not None
    # One logprob entry per generated token: the completion count is exact.
    assert choice.logprobs is not None and choice.logprobs.content is not None
    assert reply.usage.completion_tokens == len(choice.logprobs.content)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    # Rendered through SmolLM2's template: its default system prompt is part of the prompt.
    longer = client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "Tell me about the sea. Tell me about the sea."}],
        max_tokens=1,
        temperature=0,
    )
    assert longer.usage is not None and longer.usage.prompt_tokens > reply.usage.prompt_tokens > 20


def test_max_tokens_and_max_completion_tokens(client: openai.OpenAI) -> None:
    for kwargs in ({"max_tokens": 5}, {"max_completion_tokens": 5}):
        reply = client.chat.completions.create(
            model=MODEL_ID,
            messages=HELLO,
            logit_bias=NO_EOS_BIAS,
            **kwargs,  # type: ignore[arg-type]
        )
        assert reply.usage is not None and reply.usage.completion_tokens == 5
        assert reply.choices[0].finish_reason == "length"


def test_ignore_eos_generates_exactly_max_tokens(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "Say OK."}],
        max_tokens=40,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert reply.usage is not None and reply.usage.completion_tokens == 40
    assert reply.choices[0].finish_reason == "length"


def test_a_request_sets_its_guess_length_as_llama_server_does(client: openai.OpenAI) -> None:
    """`speculative.n_max` (0: no guessing for this request) gives the same greedy reply; out of range is a
    400 naming it (tests/unit/test_speculation.py checks the guessing itself)."""
    ask = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Repeat: one two one two"}],
           "max_tokens": 24, "temperature": 0}  # fmt: skip
    replies = {
        client.chat.completions.create(**ask, extra_body=extra).choices[0].message.content  # type: ignore[call-overload]
        for extra in ({}, {"speculative.n_max": 0}, {"speculative.n_max": 4})
    }
    assert len(replies) == 1
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(**ask, extra_body={"speculative.n_max": 65})  # type: ignore[call-overload]
    assert "speculative.n_max" in str(refused.value)


def test_temperature_zero_is_deterministic(client: openai.OpenAI) -> None:
    texts = {
        client.chat.completions.create(model=MODEL_ID, messages=HELLO, max_tokens=16, temperature=0)
        .choices[0]
        .message.content
        for _ in range(2)
    }
    assert len(texts) == 1


def test_seed_makes_sampling_repeatable(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str | None:
        return (
            client.chat.completions.create(
                model=MODEL_ID, messages=HELLO, max_tokens=24, temperature=1.2, top_p=1, seed=seed
            )
            .choices[0]
            .message.content
        )

    assert sample(1234) == sample(1234)
    assert len({sample(s) for s in range(4)}) > 1


def test_a_seed_makes_a_greedy_reply_repeatable_though_the_daemon_guesses(client: openai.OpenAI) -> None:
    """The daemon guesses tokens by default (prompt lookup). Guesses change the shape of llama.cpp's steps,
    with it its logits slightly, and their lengths follow measured step times: the same greedy request
    could end otherwise from one time to the next where two tokens are nearly tied. With a seed the
    request runs without guesses, and its reply is the same each time."""
    ask = {"model": MODEL_ID, "messages": [{"role": "user", "content": edit_prompt()}], "temperature": 0}
    texts = {
        client.chat.completions.create(**ask, max_tokens=160, seed=7, extra_body={"ignore_eos": True})  # type: ignore[call-overload]
        .choices[0]
        .message.content
        for _ in range(3)  # the first reads the prompt; the next would reuse it
    }
    assert len(texts) == 1


def test_sampling_options_are_accepted(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL_ID,
        messages=HELLO,
        max_tokens=4,
        temperature=0.7,
        top_p=0.9,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        extra_body={"top_k": 20, "min_p": 0.1, "repeat_penalty": 1.1},
    )
    assert reply.choices[0].message.content is not None


def test_images_are_refused_here_in_every_dialect(daemon: Daemon) -> None:
    """The models here read text only: an image is a 400 in the route's shape, whichever way it comes
    (with a remote that reads images, it would go there: tests/remotes/test_dialects_remote.py)."""
    pixel = "iVBORw0KGgo="
    asks = {
        "/v1/chat/completions": {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{pixel}"}}]}]},
        "/api/chat": {"model": MODEL_ID, "messages": [{"role": "user", "content": "hi", "images": [pixel]}]},
        "/api/generate": {"model": MODEL_ID, "prompt": "hi", "images": [pixel]},
        "/v1/messages": {"model": MODEL_ID, "max_tokens": 4, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": pixel}}]}]},
    }  # fmt: skip
    for route, body in asks.items():
        answer = web.post(f"{daemon.url}{route}", json=body, timeout=60)
        assert answer.status_code == 400 and error_shape_ok(route, answer), (route, answer.text)
        assert "images are not supported" in answer.text, answer.text
    audio = {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}
    refused = web.post(f"{daemon.url}/v1/chat/completions", json=audio, timeout=60)
    assert refused.status_code == 400 and "input_audio" in refused.text, refused.text


def test_stop_strings_cut_the_output(client: openai.OpenAI) -> None:
    full = (
        client.chat.completions.create(
            model=MODEL_ID, messages=HELLO, max_tokens=40, temperature=0, logit_bias=NO_EOS_BIAS
        )
        .choices[0]
        .message.content
    )
    assert full
    words = full.split()
    stop_word = words[len(words) // 2]
    expected = full[: full.index(stop_word)]
    for stop in (stop_word, [stop_word, "zzzz-never"]):
        reply = client.chat.completions.create(
            model=MODEL_ID, messages=HELLO, max_tokens=40, temperature=0, logit_bias=NO_EOS_BIAS, stop=stop
        )
        assert reply.choices[0].message.content == expected
        assert reply.choices[0].finish_reason == "stop"


def test_top_logprobs(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL_ID,
        messages=HELLO,
        max_tokens=4,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        logit_bias=NO_EOS_BIAS,
    )
    content = reply.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == 4
    for entry in content:
        assert entry.logprob <= 0
        assert len(entry.top_logprobs) == 3
        values = [t.logprob for t in entry.top_logprobs]
        assert values == sorted(values, reverse=True)
        # Greedy: the chosen token is the most likely one.
        assert entry.token == entry.top_logprobs[0].token
        assert bytes(entry.bytes or []).decode() == entry.token


def test_unknown_fields_are_accepted(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL_ID, messages=HELLO, max_tokens=2, extra_body={"some_new_openai_field": {"x": 1}}
    )
    assert reply.choices[0].message.content is not None


def test_roles_and_content_parts(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL_ID,
        max_tokens=4,
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": " there"}]},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Bye"},
        ],
    )
    assert reply.choices[0].message.content is not None


def test_json_object(client: openai.OpenAI) -> None:
    # A free-form object may loop in a 135M model until max_tokens: seeds are tried until one ends, and
    # every reply is an object so far, the one that ends a whole one.
    finished = 0
    for seed in range(4):
        reply = client.chat.completions.create(
            model=MODEL_ID,
            messages=[{"role": "user", "content": "Describe a cat as JSON."}],
            response_format={"type": "json_object"},
            max_tokens=200,
            seed=seed,
        )
        content = reply.choices[0].message.content or ""
        assert content.lstrip().startswith("{")
        if reply.choices[0].finish_reason == "stop":
            finished += 1
            assert isinstance(json.loads(content), dict)
            break
    assert finished == 1


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "maxItems": 3},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_json_schema_is_enforced(client: openai.OpenAI, seed: int) -> None:
    reply = client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "Invent a person."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}},
        max_tokens=150,
        temperature=1.0,
        seed=seed,
    )
    assert reply.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(reply.choices[0].message.content or ""), PERSON)


UNLIKELY = {
    "type": "object",
    "properties": {
        "code": {"type": "string", "enum": ["xq-17", "zz-99"]},
        "n": {"type": "integer", "minimum": 0, "maximum": 99},
    },
    "required": ["code", "n"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(("temperature", "seed"), [(0.0, None), (2.0, 1), (2.0, 2)])
def test_json_schema_holds_where_the_model_would_write_something_else(
    client: openai.OpenAI, temperature: float, seed: int | None
) -> None:
    """The grammar checks each sampled token and resamples under the grammar when it rejects one:
    with values the model would never write, and a hot temperature, most tokens are rejected."""
    reply = client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "Write a poem about the sea."}],
        response_format={"type": "json_schema", "json_schema": {"name": "code", "schema": UNLIKELY}},
        max_tokens=60,
        temperature=temperature,
        seed=seed,
    )
    assert reply.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(reply.choices[0].message.content or ""), UNLIKELY)


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city", "unit"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def _calls(reply: openai.types.chat.ChatCompletion) -> list[tuple[str, dict[str, object]]]:
    calls = reply.choices[0].message.tool_calls or []
    return [(c.function.name, json.loads(c.function.arguments)) for c in calls]  # type: ignore[union-attr]


def test_tool_choice_required(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL_ID,
        messages=ASK,
        tools=[WEATHER, TIME],
        tool_choice="required",
        max_tokens=120,
        temperature=0,  # type: ignore[list-item]
    )
    assert reply.choices[0].finish_reason == "tool_calls"
    calls = _calls(reply)
    assert calls
    for name, arguments in calls:
        schema = {"get_weather": WEATHER, "get_time": TIME}[name]["function"]["parameters"]  # type: ignore[index]
        jsonschema.validate(arguments, schema)
    first = reply.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert first.id.startswith("call_") and first.type == "function"


def test_tool_choice_named(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL_ID,
        messages=ASK,
        tools=[WEATHER, TIME],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        parallel_tool_calls=False,
        max_tokens=120,
        temperature=0,
    )
    calls = _calls(reply)
    assert [name for name, _ in calls] == ["get_time"]
    jsonschema.validate(calls[0][1], TIME["function"]["parameters"])  # type: ignore[index]


def test_tool_choice_none_and_auto(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(
        model=MODEL_ID,
        messages=ASK,
        tools=[WEATHER],
        tool_choice="none",
        max_tokens=8,  # type: ignore[list-item]
    )
    assert not plain.choices[0].message.tool_calls and plain.choices[0].message.content
    auto = client.chat.completions.create(
        model=MODEL_ID,
        messages=ASK,
        tools=[WEATHER],
        max_tokens=120,
        temperature=0,  # type: ignore[list-item]
    )
    message = auto.choices[0].message
    assert message.tool_calls or message.content
    if message.tool_calls:
        assert auto.choices[0].finish_reason == "tool_calls"


def test_tool_results_in_history(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL_ID,
        max_tokens=16,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[
            *ASK,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "c"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 18}'},
        ],
    )
    assert reply.choices[0].message.content or reply.choices[0].message.tool_calls


def test_streamed_tool_calls(client: openai.OpenAI) -> None:
    # The client's own accumulation of the streamed pieces (id and name first, then argument fragments).
    with client.chat.completions.stream(
        model=MODEL_ID,
        messages=ASK,
        tools=[WEATHER],
        tool_choice="required",
        max_tokens=120,
        temperature=0,
    ) as stream:
        choice = stream.get_final_completion().choices[0]
    calls = choice.message.tool_calls or []
    assert choice.finish_reason == "tool_calls"
    assert calls and calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    json.loads(calls[0].function.arguments)  # type: ignore[union-attr]


def test_prefix_reuse_reports_cached_tokens(client: openai.OpenAI) -> None:
    system = {"role": "system", "content": "You are a terse assistant that answers about oceans. " * 4}
    first = client.chat.completions.create(
        model=MODEL_ID, messages=[system, {"role": "user", "content": "Hi"}], max_tokens=2, temperature=0
    )
    second = client.chat.completions.create(
        model=MODEL_ID, messages=[system, {"role": "user", "content": "Hello"}], max_tokens=2, temperature=0
    )
    assert first.usage is not None and second.usage is not None
    cached = second.usage.prompt_tokens_details.cached_tokens  # type: ignore[union-attr]
    assert cached is not None and 40 < cached < second.usage.prompt_tokens
