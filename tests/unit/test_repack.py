"""Weight repacking (llama.cpp's extra buffer types): on by default, off where the build's AMX kernels
would run (they crash at the first prompt on some Sapphire Rapids machines: this suite's own daemon did),
and settable either way."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from appliance.config import ModelSettings, Settings
from appliance.engine import llama_params, runtime
from appliance.engine.llama_params import model_params
from appliance.engine.params import LoadOptions
from appliance.planner.plan import plan
from appliance.planning import load_options
from tests.hardware_profiles import profile
from tests.unit.test_planner import all_quants

AVX2_BUILD = (
    "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 |"
)
# llama_print_system_info() of a native build on a Xeon with AMX (this development machine, 2026-12-04)
AMX_BUILD = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
    "AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | "
    "OPENMP = 1 | REPACK = 1 |"
)


@pytest.fixture
def build(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The system info string the engine sees (set ``build[0]``); the decision is made afresh."""
    info = [AVX2_BUILD]
    monkeypatch.setattr(runtime, "system_info", lambda: info[0])
    runtime.repacks_by_default.cache_clear()
    yield info
    runtime.repacks_by_default.cache_clear()


def test_repacked_by_default_without_amx(build: list[str]) -> None:
    assert model_params(LoadOptions()).use_extra_bufts is True


def test_not_repacked_where_amx_kernels_would_run(build: list[str], caplog: pytest.LogCaptureFixture) -> None:
    build[0] = AMX_BUILD
    with caplog.at_level(logging.WARNING):
        assert model_params(LoadOptions()).use_extra_bufts is False
    assert "AMX kernels crash on this CPU" in caplog.text and "model.cpu_repack" in caplog.text


def test_no_word_about_amx_when_every_layer_is_on_a_gpu(
    build: list[str], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GPU box with an AMX Xeon (the lent H200's): a full offload leaves no weight for the CPU's kernels,
    so the plan and the load say nothing about them; a partial one still turns repacking off."""
    build[0] = AMX_BUILD
    monkeypatch.setattr(llama_params, "split_arguments", lambda options: {})  # no CUDA0 on this machine
    with caplog.at_level(logging.WARNING):
        assert model_params(LoadOptions(n_gpu_layers=-1, devices=("CUDA0",))).use_extra_bufts is True
    assert "AMX" not in caplog.text
    with caplog.at_level(logging.WARNING):
        assert model_params(LoadOptions(n_gpu_layers=10, devices=("CUDA0",))).use_extra_bufts is False
    assert "AMX kernels crash on this CPU" in caplog.text


@pytest.mark.parametrize("info", [AVX2_BUILD, AMX_BUILD])
@pytest.mark.parametrize("repack", [True, False])
def test_the_setting_wins(build: list[str], info: str, repack: bool) -> None:
    build[0] = info
    assert model_params(LoadOptions(repack=repack)).use_extra_bufts is repack


def test_the_setting_reaches_the_load_options(monkeypatch: pytest.MonkeyPatch) -> None:
    hw = profile("rpi5-8gb")
    chosen = plan(all_quants("1b"), hw)
    assert load_options(chosen, hw, ModelSettings()).repack is None
    monkeypatch.setenv("APPLIANCE_MODEL__CPU_REPACK", "false")
    assert load_options(chosen, hw, Settings().model).repack is False
