"""`[models."ID"]`: the config's checks of aliases, and the merge of a model's defaults into a request
(appliance.model_defaults)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from appliance import model_defaults
from appliance.backend import ChatParams, CompletionParams, Reasoning, SamplingParams
from appliance.cli import main
from appliance.config import PerModelSettings, Settings

BAD_ALIASES = [
    ({"a": {"aliases": ["x"]}, "b": {"aliases": ["x"]}}, "alias 'x' names two models: a and b"),
    ({"a": {"aliases": ["b"]}, "b": {}}, "alias 'b' of a is the id of another model"),
    ({"a": {"aliases": [" "]}}, "an alias cannot be empty"),
]


@pytest.mark.parametrize(("models", "message"), BAD_ALIASES)
def test_aliases_that_clash_are_a_config_error(models: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(models=models)


def test_a_clash_is_one_line_from_the_cli(appliance_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (appliance_home / "config.toml").write_text(
        '[models."a"]\naliases = ["gpt-4o-mini"]\n[models."b"]\naliases = ["gpt-4o-mini"]\n'
    )
    assert main(["config", "show"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["appliance: invalid setting models: alias 'gpt-4o-mini' names two models: a and b"]


def test_an_alias_names_its_model_and_other_names_stand_for_themselves() -> None:
    settings = Settings(models={"a": PerModelSettings(aliases=["gpt-4o-mini", "a"]), "b": PerModelSettings()})
    assert settings.model_id_of("gpt-4o-mini") == "a"
    assert settings.model_id_of("a") == "a"
    assert settings.model_id_of("elsewhere") == "elsewhere"


MERGES = [
    ({}, {}, SamplingParams()),
    ({"temperature": 0.0, "seed": 7}, {}, SamplingParams(temperature=0.0, seed=7)),
    ({"temperature": 0.0}, {"temperature": 1.2, "top_k": 5}, SamplingParams(temperature=1.2, top_k=5)),
    ({"top_p": 0.5, "min_p": 0.1}, {"top_p": None}, SamplingParams(top_p=0.5, min_p=0.1)),
    ({"repeat_penalty": 1.3}, {"ignore_eos": True}, SamplingParams(repeat_penalty=1.3, ignore_eos=True)),
]


@pytest.mark.parametrize(("defaults", "asked", "expected"), MERGES)
def test_a_requests_own_sampling_wins_over_the_models_defaults(
    defaults: dict[str, Any], asked: dict[str, Any], expected: SamplingParams
) -> None:
    assert model_defaults.sampling(asked, PerModelSettings(**defaults)) == expected


USER = {"role": "user", "content": "Hi"}


@pytest.mark.parametrize(
    ("messages", "expected_first"),
    [
        ([USER], {"role": "system", "content": "Be a pirate."}),
        ([{"role": "system", "content": "Mine."}, USER], {"role": "system", "content": "Mine."}),
        ([{"role": "developer", "content": "Mine."}, USER], {"role": "developer", "content": "Mine."}),
    ],
)
def test_the_system_prompt_goes_only_to_a_chat_without_one(
    messages: list[dict[str, Any]], expected_first: dict[str, Any]
) -> None:
    chat = model_defaults.applied(ChatParams(messages=messages), PerModelSettings(system="Be a pirate."))
    assert isinstance(chat, ChatParams)
    assert chat.messages[0] == expected_first and chat.messages[-1] == USER


def test_no_system_prompt_and_raw_completions_stay_as_they_are() -> None:
    chat = ChatParams(messages=[USER])
    assert model_defaults.applied(chat, PerModelSettings()) is chat
    raw = CompletionParams(prompt="Once")
    assert model_defaults.applied(raw, PerModelSettings(system="Be a pirate.")) is raw


def test_a_models_own_context_and_slots_are_what_the_planner_sees_for_it() -> None:
    settings = Settings(model={"n_ctx": 4096}, models={"a": PerModelSettings(n_ctx=1024, n_parallel=2)})
    own = settings.for_model("a")
    assert (own.model.n_ctx, own.model.n_parallel) == (1024, 2)
    assert settings.for_model("b") is settings
    assert settings.model.n_ctx == 4096  # the running settings are not changed


def test_a_tagged_model_takes_the_table_of_its_id_then_of_its_bare_name() -> None:
    settings = Settings(models={"m": {"temperature": 0.1}, "m:q8_0": {"temperature": 0.2}})
    assert settings.per_model("m:q8_0", "m").temperature == 0.2
    assert settings.per_model("m:q4_k_m", "m").temperature == 0.1
    assert settings.per_model("other") == PerModelSettings()
    assert settings.for_model("m:q4_k_m", "m") is settings  # no context or slots of its own


def test_stop_context_message_turns_and_reasoning_fill_in_what_a_request_leaves_out() -> None:
    defaults = PerModelSettings(system="Be a pirate.", stop=["Arr"], num_ctx=512, reasoning="high",
                                messages=[{"role": "user", "content": "Ahoy"},
                                          {"role": "assistant", "content": "Arr"}])  # fmt: skip
    chat = model_defaults.applied(ChatParams(messages=[USER]), defaults)
    assert isinstance(chat, ChatParams)
    assert [m["content"] for m in chat.messages] == ["Be a pirate.", "Ahoy", "Arr", "Hi"]
    assert (chat.stop, chat.context_tokens) == (("Arr",), 512)
    assert chat.reasoning == Reasoning(enabled=True, effort="high")
    own = ChatParams(messages=[{"role": "system", "content": "Mine."}, USER], stop=("x",), context_tokens=64,
                     reasoning=Reasoning(enabled=False))  # fmt: skip
    chat = model_defaults.applied(own, defaults)
    assert isinstance(chat, ChatParams)
    assert [m["content"] for m in chat.messages] == ["Mine.", "Ahoy", "Arr", "Hi"]
    assert (chat.stop, chat.context_tokens, chat.reasoning) == (("x",), 64, Reasoning(enabled=False))
    raw = model_defaults.applied(CompletionParams(prompt="Once"), defaults)
    assert (raw.stop, raw.context_tokens) == (("Arr",), 512)
    off = model_defaults.applied(ChatParams(messages=[USER]), PerModelSettings(reasoning=False))
    assert isinstance(off, ChatParams) and off.reasoning == Reasoning(enabled=False)
