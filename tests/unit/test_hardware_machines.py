"""Whole machines, from recorded source outputs (tests/fixtures/hardware/), and `appliance hw` itself.

The profiles are built by the real parsers (tests/hardware_profiles.py), as detection builds them on
those machines; the planner's table tests reuse them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from appliance import cli
from appliance.hardware import detect as detect_module
from appliance.hardware.detect import detect_hardware
from appliance.hardware.memory import memory_info
from appliance.hardware.profile import GpuInfo, HardwareProfile, OffloadInfo
from tests.hardware_profiles import BOARDS, FIXTURES, MACHINES, MULTI_GPU, RECORDED, profile

ROOT = Path(__file__).resolve().parents[2]
GIB = 1 << 30


# -- the machines -------------------------------------------------------------------------------------


def test_every_machine_has_a_fixture() -> None:
    expected = set(MACHINES) | set(RECORDED) | set(MULTI_GPU) | set(BOARDS)
    assert {p.name for p in FIXTURES.iterdir() if p.is_dir()} == expected


def test_rtx4090_box() -> None:
    hw = profile("rtx4090-box")
    assert hw.cpu.model == "AMD Ryzen 9 7950X 16-Core Processor"
    assert (hw.cpu.arch, hw.cpu.cores_physical, hw.cpu.cores_logical) == ("x86_64", 16, 32)
    assert {"avx2", "avx512f", "avx512_vnni", "f16c", "fma"} <= set(hw.cpu.features)
    assert "avx_vnni" not in hw.cpu.features  # Zen 4 has AVX-512 VNNI, not the VEX form
    assert hw.memory.limit_bytes is None  # a systemd session: cgroups all the way up, none limited
    # NVML's record wins over llama.cpp's for the same GPU: richer, and free before our CUDA context.
    assert hw.gpus == (
        GpuInfo(
            0,
            "cuda",
            "NVIDIA GeForce RTX 4090",
            25757220864,
            25145049088,
            "8.9",
            "550.127.05",
            device="CUDA0",
        ),
    )
    assert hw.offload == OffloadInfo(True, ("cuda",))
    assert hw.usable_gpus == hw.gpus
    assert (hw.board, hw.os) == (None, "Linux 6.8.0-49-generic")


def test_laptop_8gb() -> None:
    hw = profile("laptop-8gb")
    assert hw.cpu.model == "Intel(R) Core(TM) i5-8250U CPU @ 1.60GHz"
    assert hw.cpu.features == ("avx", "avx2", "f16c", "fma")
    assert 7 * GIB < hw.memory.total_bytes < 8 * GIB  # 8 GB less what the iGPU takes
    assert hw.memory.limit_bytes is None
    assert (hw.gpus, hw.offload, hw.usable_gpus) == ((), OffloadInfo(False), ())


def test_m2_16gb() -> None:
    hw = profile("m2-16gb")
    assert (hw.cpu.model, hw.cpu.arch, hw.cpu.cores_physical) == ("Apple M2", "arm64", 8)
    assert hw.cpu.features == ("neon", "dotprod", "i8mm")
    assert hw.memory == memory_info(16 * GIB, 6954156032, None)
    (gpu,) = hw.gpus
    assert (gpu.backend, gpu.name, gpu.unified_memory) == ("metal", "Apple M2", True)
    assert gpu.total_bytes == gpu.free_bytes == 11453251584  # Metal's recommendedMaxWorkingSetSize
    # The Accelerate BLAS device speeds up the CPU; it holds no layers, so it is no offload backend.
    assert hw.offload == OffloadInfo(True, ("metal",))
    assert hw.usable_gpus == hw.gpus
    assert hw.os.startswith("Darwin ")


def test_rpi5_8gb() -> None:
    hw = profile("rpi5-8gb")
    assert hw.board == "Raspberry Pi 5 Model B Rev 1.0"
    assert (hw.cpu.model, hw.cpu.arch, hw.cpu.cores_physical) == ("Cortex-A76", "aarch64", 4)
    assert hw.cpu.features == ("neon", "dotprod")
    assert (hw.gpus, hw.offload.supported) == ((), False)


def test_container_2gb() -> None:
    hw = profile("container-2gb")
    assert hw.memory.limit_bytes == 2 * GIB
    assert hw.memory.total_bytes > 30 * GIB  # the host's, which the container must not plan with
    # limit - (memory.current - inactive_file): the model file's page cache is reclaimable.
    assert hw.memory.available_bytes == 2147483648 - (1509949440 - 1191182336)
    assert hw.memory.available_bytes > 2147483648 - 1509949440
    assert "avx_vnni" in hw.cpu.features and "avx512f" not in hw.cpu.features
    assert hw.offload == OffloadInfo(False)


def test_recorded_h100_device() -> None:
    hw = profile("h100-device")
    (gpu,) = hw.gpus
    assert (gpu.name, gpu.backend, gpu.compute_capability) == ("NVIDIA H100 80GB HBM3", "cuda", "9.0")
    assert gpu.total_bytes > 79 * GIB and gpu.driver
    assert hw.usable_gpus == ()  # recorded without a CUDA build of llama.cpp
    assert hw.memory.limit_bytes == 128 * GIB  # set on a parent cgroup, not the process's own
    assert "amx_int8" in hw.cpu.features


def test_recorded_cgroup_v1_vm() -> None:
    hw = profile("epyc-vm-cgroup-v1")
    assert hw.memory.limit_bytes is None  # v1's "no limit" is a huge number, on a nested path
    assert (
        hw.memory.available_bytes
        == json.loads((FIXTURES / "epyc-vm-cgroup-v1/host.json").read_text())["virtual_memory"]["available"]
    )


# -- hw JSON ------------------------------------------------------------------------------------------

CPU_KEYS = {"model": str, "arch": str, "cores_physical": int, "cores_logical": int, "features": list}
MEMORY_KEYS = {"total_bytes": int, "available_bytes": int, "limit_bytes": (int, type(None))}
GPU_KEYS = {"index": int, "backend": str, "name": str, "total_bytes": int, "free_bytes": int}


def check_hw_json(data: dict[str, Any]) -> None:
    """``data`` has INTERFACES.md's hw JSON keys, with their types."""
    assert {"cpu", "memory", "gpus", "offload", "board", "os"} <= set(data)
    for section, keys in (("cpu", CPU_KEYS), ("memory", MEMORY_KEYS)):
        for key, kind in keys.items():
            assert isinstance(data[section][key], kind), (section, key)
    assert all(isinstance(f, str) for f in data["cpu"]["features"])
    assert isinstance(data["gpus"], list)
    for gpu in data["gpus"]:
        for key, kind in GPU_KEYS.items():
            assert isinstance(gpu[key], kind), ("gpu", key)
    assert isinstance(data["offload"]["supported"], bool)
    assert all(isinstance(b, str) and b == b.lower() for b in data["offload"]["backends"])
    assert data["board"] is None or isinstance(data["board"], str)
    assert isinstance(data["os"], str) and data["os"]


@pytest.mark.parametrize("name", sorted(set(MACHINES + RECORDED + BOARDS)))
def test_profile_json_has_the_documented_shape(name: str) -> None:
    data = json.loads(json.dumps(profile(name).to_json()))
    check_hw_json(data)


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_appliance_hw_json_on_this_machine() -> None:
    result = _run_cli("hw", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    check_hw_json(data)
    assert data["cpu"]["cores_logical"] >= data["cpu"]["cores_physical"] >= 1
    assert 0 < data["memory"]["available_bytes"] <= data["memory"]["total_bytes"]


def test_appliance_hw_prints_a_summary() -> None:
    result = _run_cli("hw")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert 3 <= len(lines) <= 12
    assert [lines[0].split()[0], lines[1].split()[0], lines[-1].split()[0]] == ["CPU", "Memory", "OS"]
    assert sum(line.startswith("Offload  ") for line in lines) == 1


def test_appliance_hw_with_a_missing_config_is_a_user_error(tmp_path: Path) -> None:
    result = _run_cli("hw", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("rtx4090-box", "GPU 0    NVIDIA GeForce RTX 4090: 23.4 GiB free of 24.0 GiB (cuda, compute 8.9"),
        ("m2-16gb", "GPU 0    Apple M2: 10.7 GiB free of 10.7 GiB (metal, unified memory, llama.cpp MTL0)"),
        ("container-2gb", "Memory   31.1 GiB total, 1.7 GiB available (cgroup limit 2.0 GiB)"),
        ("rpi5-8gb", "Board    Raspberry Pi 5 Model B Rev 1.0"),
        ("laptop-8gb", "Offload  none: the installed llama.cpp build runs on the CPU only"),
        ("rtx4090-box", "Offload  cuda (the installed llama.cpp build)"),
        ("h100-device", "Offload  none: the installed llama.cpp build runs on the CPU only"),
    ],
)
def test_hw_summary(
    name: str, expected: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(detect_module, "detect_hardware", lambda: profile(name))
    assert cli.main(["hw"]) == 0
    assert any(line.startswith(expected) for line in capsys.readouterr().out.splitlines())


def test_hw_json_prints_the_profile(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(detect_module, "detect_hardware", lambda: profile("m2-16gb"))
    assert cli.main(["hw", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == profile("m2-16gb").to_json()


def test_detect_hardware_here() -> None:
    hw = detect_hardware()
    assert isinstance(hw, HardwareProfile)
    assert hw.cpu.cores_logical >= 1 and hw.memory.total_bytes > 0
    assert set(hw.usable_gpus) <= set(hw.gpus)


def test_importing_detection_loads_neither_llama_cpp_nor_nvml() -> None:
    code = "import sys, appliance.hardware.detect; print(sorted({'llama_cpp', 'pynvml'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
