"""`appliance hw` warns when the llama.cpp build cannot use a GPU the machine has, and prints the exact
reinstall command for it: machines from recorded NVML and ggml data (tests/fixtures/hardware)."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from appliance import cli
from appliance.hardware import detect as detect_module
from appliance.hardware.profile import HardwareProfile, OffloadInfo
from appliance.hardware.rebuild import cuda_architecture, pinned_requirement, rebuild_advice
from tests.hardware_profiles import profile

PIP = "--force-reinstall --no-cache-dir --no-deps llama-cpp-python==0.3.36"


def _cpu_build(machine: HardwareProfile) -> HardwareProfile:
    """The same machine with a CPU-only build of llama-cpp-python (pip's default wheel build)."""
    return dataclasses.replace(machine, offload=OffloadInfo(False))


@pytest.mark.parametrize(("capability", "architecture"), [("9.0", "90"), ("8.9", "89"), ("8.6", "86"),
                                                          ("12.0", "120"), ("7.5", "75")])  # fmt: skip
def test_cuda_architecture(capability: str, architecture: str) -> None:
    assert cuda_architecture(capability) == architecture


def test_pinned_requirement_is_pyprojects_pin() -> None:
    assert pinned_requirement() == "llama-cpp-python==0.3.36"


def test_h100_with_a_cpu_build() -> None:
    # Recorded on the lent H100 machine, where no CUDA build was installed.
    assert rebuild_advice(profile("h100-device"), "/venv/bin/python", "llama-cpp-python==0.3.36") == [
        "Warning: the installed llama.cpp build cannot use the cuda GPU (NVIDIA H100 80GB HBM3).",
        "  Rebuild it for this GPU (needs the CUDA toolkit: nvcc on PATH):",
        f'  CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90" /venv/bin/python -m pip install {PIP}',
    ]


def test_rtx4090_with_a_cpu_build_and_with_cuda() -> None:
    machine = profile("rtx4090-box")
    assert rebuild_advice(machine, "python", "llama-cpp-python==0.3.36") == []  # its build has CUDA
    advice = rebuild_advice(_cpu_build(machine), "python", "llama-cpp-python==0.3.36")
    assert (
        advice[-1]
        == f'  CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=89" python -m pip install {PIP}'
    )


def test_two_architectures_build_both() -> None:
    h100, rtx = profile("h100-device").gpus[0], profile("rtx4090-box").gpus[0]
    machine = dataclasses.replace(profile("h100-device"), gpus=(h100, dataclasses.replace(rtx, index=1)))
    advice = rebuild_advice(machine, "python", "llama-cpp-python==0.3.36")
    assert "(NVIDIA H100 80GB HBM3, NVIDIA GeForce RTX 4090)" in advice[0]
    assert '"-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=89;90"' in advice[-1]


def test_apple_silicon_without_metal() -> None:
    machine = profile("m2-16gb")
    assert rebuild_advice(machine, "python", "llama-cpp-python==0.3.36") == []
    advice = rebuild_advice(_cpu_build(machine), "python", "llama-cpp-python==0.3.36")
    assert advice[0] == "Warning: the installed llama.cpp build cannot use the metal GPU (Apple M2)."
    assert advice[-1] == f'  CMAKE_ARGS="-DGGML_METAL=on" python -m pip install {PIP}'


@pytest.mark.parametrize("machine", ["laptop-8gb", "rpi5-8gb", "container-2gb", "epyc-vm-cgroup-v1"])
def test_no_gpu_no_warning(machine: str) -> None:
    assert rebuild_advice(profile(machine), "python", "llama-cpp-python==0.3.36") == []


def test_appliance_hw_prints_the_command_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(detect_module, "detect_hardware", lambda: profile("h100-device"))
    assert cli.main(["hw", "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("{")  # the JSON alone on stdout
    assert captured.err.splitlines()[-1] == (
        f'  CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90" {sys.executable} -m pip install {PIP}'
    )
