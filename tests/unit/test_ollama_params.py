"""server.ollama_params and /api/embed's dimensions: Ollama's request fields in the core's terms."""

from __future__ import annotations

import logging
import math

import pytest

from appliance.config import PerModelSettings
from appliance.errors import InvalidRequest
from appliance.manager import FOREVER
from server import ollama_params
from server.compat_schemas import OllamaOptions
from server.ollama_routes import _shortened


@pytest.mark.parametrize(
    ("given", "seconds"),
    [(None, None), (0, 0.0), ("0", 0.0), ("5m", 300.0), ("1h30m", 5400.0), (90, 90.0), (-1, FOREVER),
     ("-1m", FOREVER), ("99999999999h", FOREVER)],
)  # fmt: skip
def test_keep_alive(given: str | int | None, seconds: float | None) -> None:
    assert ollama_params.keep_alive(given) == seconds


def test_a_bad_keep_alive_is_a_400_naming_it() -> None:
    with pytest.raises(InvalidRequest, match="keep_alive: not a duration"):
        ollama_params.keep_alive("soon")


@pytest.mark.parametrize(
    ("logprobs", "top", "expected"), [(None, None, None), (False, 0, None), (True, None, 0), (True, 5, 5)]
)
def test_top_logprobs(logprobs: bool | None, top: int | None, expected: int | None) -> None:
    assert ollama_params.top_logprobs(logprobs, top) == expected


@pytest.mark.parametrize(("logprobs", "top"), [(True, 21), (True, -1), (None, 2)])
def test_top_logprobs_out_of_bounds_or_alone_are_400s(logprobs: bool | None, top: int) -> None:
    with pytest.raises(InvalidRequest, match="top_logprobs"):
        ollama_params.top_logprobs(logprobs, top)


def test_options_the_engine_lacks_are_named_in_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    options = OllamaOptions.model_validate({"temperature": 0.5, "num_gpu": 2, "tfs_z": 1.0, "mirostat": 2})
    with caplog.at_level(logging.WARNING, logger="server.ollama_params"):
        sampling, *_ = ollama_params.options(options, PerModelSettings(), "/api/chat")
    assert sampling.temperature == 0.5
    (record,) = caplog.records
    assert record.getMessage() == (
        "/api/chat: ignoring options num_gpu (load settings: the planner's); "
        "mirostat, tfs_z (not in this engine's sampler)"
    )
    caplog.clear()
    ollama_params.options(OllamaOptions(temperature=0), PerModelSettings(), "/api/chat")
    assert not caplog.records


def test_dimensions_cut_and_normalise_again() -> None:
    vectors = [[0.6, 0.8, 0.0], [1.0, 0.0, 0.0]]
    assert _shortened(vectors, None) is vectors
    cut = _shortened(vectors, 1)
    assert cut == [[1.0], [1.0]]
    assert math.isclose(sum(x * x for x in _shortened([[0.5, 0.5, 0.5, 0.5]], 3)[0]), 1.0)
    with pytest.raises(InvalidRequest, match="dimensions 4 is more than the model's 3"):
        _shortened(vectors, 4)
