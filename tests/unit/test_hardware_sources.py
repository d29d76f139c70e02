"""appliance.hardware's sources one by one: cgroups, CPUs, NVML, Metal, boards, llama.cpp's registry.

Tables over small inputs in the sources' own formats; NVML and Metal answer through fakes built from
recorded values (tests/fixtures/hardware/). Whole machines are in test_hardware_machines.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from appliance.hardware.board import detect_board, parse_board_model
from appliance.hardware.cpu import arm_core_name, cpu_from_sysctl
from appliance.hardware.detect import merge_gpus
from appliance.hardware.memory import CgroupMemory, cgroup_memory, memory_info
from appliance.hardware.metal import detect_metal, metal_working_set_bytes
from appliance.hardware.nvidia import detect_nvidia
from appliance.hardware.offload import BackendDevice, detect_backend_devices, detect_offload, offload_info
from appliance.hardware.profile import GpuInfo, OffloadInfo
from appliance.hardware.sysctl import read_sysctl
from tests.hardware_profiles import FIXTURES, FakeNvml

ROOT = Path(__file__).resolve().parents[2]
GIB = 1 << 30


# -- memory: cgroups ----------------------------------------------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


V2_NESTED = "0::/system.slice/appliance.service\n"
V1_NESTED = "12:memory:/docker/abc\n11:cpu,cpuacct:/docker/abc\n0::/\n"

# (files under the cgroup root, /proc/self/cgroup, expected)
CGROUP_CASES = [
    pytest.param(
        {
            "memory.max": "1073741824",
            "memory.current": "536870912",
            "memory.stat": "anon 1\ninactive_file 0\n",
        },
        "0::/\n",
        CgroupMemory(GIB, GIB // 2),
        id="v2-root",
    ),
    pytest.param(
        {
            "memory.max": "1073741824",
            "memory.current": "805306368",
            "memory.stat": "active_file 1\ninactive_file 268435456\nfile 268435457\n",
        },
        "0::/\n",
        CgroupMemory(GIB, GIB // 2),
        id="v2-inactive-file-is-reclaimable",
    ),
    pytest.param(
        {
            "system.slice/memory.max": "4294967296",
            "system.slice/memory.current": "3758096384",
            "system.slice/appliance.service/memory.max": "max",
            "system.slice/appliance.service/memory.current": "1000",
        },
        V2_NESTED,
        CgroupMemory(4 * GIB, GIB // 2),
        id="v2-limit-on-a-parent",
    ),
    pytest.param(
        {
            "system.slice/memory.max": "8589934592",
            "system.slice/memory.current": "7516192768",
            "system.slice/appliance.service/memory.max": "2147483648",
            "system.slice/appliance.service/memory.current": "1073741824",
        },
        V2_NESTED,
        CgroupMemory(2 * GIB, GIB),  # the parent has 1 GiB left too: the tightest room wins
        id="v2-both-levels",
    ),
    pytest.param(
        {
            "system.slice/memory.max": "8589934592",
            "system.slice/memory.current": "8053063680",
            "system.slice/appliance.service/memory.max": "2147483648",
            "system.slice/appliance.service/memory.current": "0",
        },
        V2_NESTED,
        CgroupMemory(2 * GIB, GIB // 2),  # a sibling filled the parent
        id="v2-parent-fuller",
    ),
    pytest.param({"memory.max": "2147483648"}, "0::/\n", CgroupMemory(2 * GIB, 2 * GIB), id="v2-no-usage"),
    pytest.param(
        {"memory.max": "1073741824", "memory.current": "2147483648"},
        "0::/\n",
        CgroupMemory(GIB, 0),
        id="v2-over-limit",
    ),
    pytest.param(
        {
            "memory/docker/abc/memory.limit_in_bytes": "2147483648",
            "memory/docker/abc/memory.usage_in_bytes": "1610612736",
            "memory/docker/abc/memory.stat": "inactive_file 1\ntotal_inactive_file 536870912\n",
        },
        V1_NESTED,
        CgroupMemory(2 * GIB, GIB),
        id="v1-nested",
    ),
    pytest.param(
        {
            "memory/memory.limit_in_bytes": "2147483648",
            "memory/memory.usage_in_bytes": "1073741824",
        },
        V1_NESTED,  # the container's own group mounted as the root: the host's path is not there
        CgroupMemory(2 * GIB, GIB),
        id="v1-namespaced",
    ),
    pytest.param(
        {"memory/memory.limit_in_bytes": "9223372036854771712", "memory/memory.usage_in_bytes": "1"},
        V1_NESTED,
        None,
        id="v1-unlimited",
    ),
    pytest.param({"memory.max": "max"}, "0::/../../etc\n", None, id="path-escaping-the-root"),
    pytest.param({}, "0::/\n", None, id="no-cgroup-files"),
]


@pytest.mark.parametrize(("files", "self_cgroup", "expected"), CGROUP_CASES)
def test_cgroup_memory(
    files: dict[str, str], self_cgroup: str, expected: CgroupMemory | None, tmp_path: Path
) -> None:
    root = _tree(tmp_path / "cgroup", files)
    own = tmp_path / "self_cgroup"
    own.write_text(self_cgroup)
    assert cgroup_memory(root, own) == expected


def test_cgroup_memory_without_proc_self_cgroup_reads_the_root(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"memory.max": "1073741824", "memory.current": "0"})
    assert cgroup_memory(root, tmp_path / "missing") == CgroupMemory(GIB, GIB)


@pytest.mark.parametrize(
    ("host_available", "cgroup", "expected"),
    [
        (8 * GIB, None, 8 * GIB),
        (8 * GIB, CgroupMemory(2 * GIB, GIB), GIB),
        (GIB // 2, CgroupMemory(2 * GIB, GIB), GIB // 2),  # the host is the tighter one
    ],
)
def test_memory_info(host_available: int, cgroup: CgroupMemory | None, expected: int) -> None:
    info = memory_info(16 * GIB, host_available, cgroup)
    assert (info.total_bytes, info.available_bytes) == (16 * GIB, expected)
    assert info.limit_bytes == (cgroup.limit_bytes if cgroup else None)


# -- CPU on macOS and ARM -----------------------------------------------------------------------------


def test_cpu_from_sysctl_on_an_intel_mac() -> None:
    values = {
        "machdep.cpu.brand_string": "Intel(R) Core(TM) i9-9880H CPU @ 2.30GHz",
        "hw.physicalcpu": "8",
        "hw.logicalcpu": "16",
        "machdep.cpu.features": "FPU VME DE SSE SSE2 AVX1.0 RDRAND F16C FMA",
        "machdep.cpu.leaf7_features": "RDWRFSGS TSC_THREAD_OFFSET SGX BMI1 AVX2 SMEP BMI2",
    }
    cpu = cpu_from_sysctl(values.get, "x86_64")
    assert (cpu.cores_physical, cpu.cores_logical) == (8, 16)
    assert cpu.features == ("avx", "avx2", "f16c", "fma")


def test_cpu_from_sysctl_with_nothing_readable() -> None:
    cpu = cpu_from_sysctl(lambda _key: None, "arm64")
    assert (cpu.model, cpu.cores_physical, cpu.cores_logical, cpu.features) == ("arm64", 1, 1, ())


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("CPU implementer\t: 0x41\nCPU part\t: 0xd0b\n", "Cortex-A76"),
        ("CPU implementer\t: 0x41\nCPU part\t: 0xd03\n\nCPU part\t: 0xd03\n", "Cortex-A53"),
        ("CPU implementer\t: 0x41\nCPU part\t: 0xd05\nCPU part\t: 0xd0b\n", "Cortex-A55 + Cortex-A76"),
        ("CPU implementer\t: 0x61\nCPU part\t: 0x022\n", ""),  # Apple cores under Asahi Linux
        ("CPU implementer\t: 0x41\nCPU part\t: 0xfff\n", ""),
        ("", ""),
    ],
)
def test_arm_core_name(text: str, name: str) -> None:
    assert arm_core_name(text) == name


# -- NVIDIA -------------------------------------------------------------------------------------------


def _recorded_nvml(name: str = "rtx4090-box") -> dict[str, Any]:
    recorded: dict[str, Any] = json.loads((FIXTURES / name / "nvml.json").read_text())
    return recorded


def test_detect_nvidia_from_recorded_nvml() -> None:
    nvml = FakeNvml(_recorded_nvml())
    assert detect_nvidia(nvml) == (
        GpuInfo(0, "cuda", "NVIDIA GeForce RTX 4090", 25757220864, 25145049088, "8.9", "550.127.05"),
    )
    assert not nvml.initialised  # shut down again


class _NoDriver(FakeNvml):
    def nvmlInit(self) -> None:
        raise self.NVMLError("Driver Not Loaded")


class _OldPynvml(FakeNvml):
    """pynvml before 11.515 returned bytes."""

    def nvmlSystemGetDriverVersion(self) -> Any:
        return super().nvmlSystemGetDriverVersion().encode()

    def nvmlDeviceGetName(self, handle: dict[str, Any]) -> Any:
        return super().nvmlDeviceGetName(handle).encode()


class _OneGpuLost(FakeNvml):
    def nvmlDeviceGetMemoryInfo(self, handle: dict[str, Any]) -> Any:
        if handle["name"] == "lost":
            raise self.NVMLError("GPU is lost")
        return super().nvmlDeviceGetMemoryInfo(handle)


class _NoComputeCapability(FakeNvml):
    def nvmlDeviceGetCudaComputeCapability(self, handle: dict[str, Any]) -> tuple[int, int]:
        raise self.NVMLError("Not Supported")


def test_detect_nvidia_without_a_driver_is_empty() -> None:
    assert detect_nvidia(_NoDriver(_recorded_nvml())) == ()


def test_detect_nvidia_without_pynvml_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml now raises ImportError
    assert detect_nvidia() == ()


def test_detect_nvidia_decodes_old_pynvml_bytes() -> None:
    (gpu,) = detect_nvidia(_OldPynvml(_recorded_nvml()))
    assert (gpu.name, gpu.driver) == ("NVIDIA GeForce RTX 4090", "550.127.05")


def test_detect_nvidia_keeps_the_gpus_that_answer() -> None:
    recorded = _recorded_nvml()
    good = recorded["devices"][0]
    recorded["devices"] = [{**good, "name": "lost"}, good]
    assert [(g.index, g.name) for g in detect_nvidia(_OneGpuLost(recorded))] == [
        (1, "NVIDIA GeForce RTX 4090")
    ]


def test_detect_nvidia_without_compute_capability() -> None:
    (gpu,) = detect_nvidia(_NoComputeCapability(_recorded_nvml()))
    assert gpu.compute_capability is None and gpu.total_bytes == 25757220864


def test_detect_nvidia_on_this_machine_never_raises() -> None:
    assert all(g.backend == "cuda" for g in detect_nvidia())


# -- Apple Metal --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("memsize", "wired_limit_mb", "budget"),
    [
        # recommendedMaxWorkingSetSize as llama.cpp logs it on real machines (MB = 10^6 bytes)
        (16 * GIB, 0, 11453251584),  # "11453.25 MB"
        (32 * GIB, 0, 22906503168),  # "22906.50 MB"
        (36 * GIB, 0, 28991029248),  # "28991.03 MB"
        (64 * GIB, 0, 51539607552),  # "51539.61 MB"
        (16 * GIB, 14336, 14336 << 20),  # sudo sysctl iogpu.wired_limit_mb=14336
        (8 * GIB, 99999, 8 * GIB),
    ],
)
def test_metal_working_set_bytes(memsize: int, wired_limit_mb: int, budget: int) -> None:
    assert metal_working_set_bytes(memsize, wired_limit_mb) == budget


def test_detect_metal_on_an_m2() -> None:
    values = json.loads((FIXTURES / "m2-16gb" / "sysctl.json").read_text())
    assert detect_metal(values.get) == GpuInfo(
        0, "metal", "Apple M2", 11453251584, 11453251584, unified_memory=True
    )


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({}, id="not-a-mac"),
        pytest.param(
            {"hw.memsize": "17179869184", "machdep.cpu.brand_string": "Intel(R) Core(TM) i7"}, id="intel"
        ),
        pytest.param({"hw.memsize": "garbage", "hw.optional.arm64": "1"}, id="garbage"),
    ],
)
def test_detect_metal_elsewhere_is_none(values: dict[str, str]) -> None:
    assert detect_metal(values.get) is None


def test_sysctl_and_metal_are_absent_off_macos() -> None:
    if sys.platform == "darwin":
        pytest.skip("this is a Mac")
    assert read_sysctl("hw.memsize") is None
    assert detect_metal() is None


# -- boards -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        (b"Raspberry Pi 5 Model B Rev 1.0\x00", "Raspberry Pi 5 Model B Rev 1.0"),
        (b"Raspberry Pi 4 Model B Rev 1.4\x00", "Raspberry Pi 4 Model B Rev 1.4"),
        (b"NVIDIA Jetson Orin Nano Developer Kit\x00", "NVIDIA Jetson Orin Nano Developer Kit"),
        (b"Orange Pi 5\x00", "Orange Pi 5"),
        (b"no terminator", "no terminator"),
        (b"\x00", None),
        (b"", None),
    ],
)
def test_parse_board_model(raw: bytes, name: str | None) -> None:
    assert parse_board_model(raw) == name


def test_detect_board(tmp_path: Path) -> None:
    (tmp_path / "model").write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    assert detect_board(tmp_path / "model") == "Raspberry Pi 5 Model B Rev 1.0"
    assert detect_board(tmp_path / "absent") is None


# -- llama.cpp's backend registry ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "backend", "index"),
    [
        ("CUDA0", "cuda", 0),
        ("CUDA1", "cuda", 1),
        ("MTL0", "metal", 0),
        ("Metal", "metal", 0),  # older llama.cpp
        ("Vulkan1", "vulkan", 1),
        ("ROCm0", "rocm", 0),
        ("SYCL0", "sycl", 0),
        ("GPUOpenCL", "opencl", 0),
        ("RPC[192.168.1.20:50052]", "rpc", 0),
        ("CPU", "cpu", 0),
        ("BLAS", "blas", 0),
    ],
)
def test_backend_device_names(name: str, backend: str, index: int) -> None:
    device = BackendDevice(name, "", "gpu", 0, 0)
    assert (device.backend, device.index) == (backend, index)


CPU_DEVICE = ("CPU", "AMD Ryzen 9 7950X 16-Core Processor", "cpu", 64 * GIB, 64 * GIB)


@pytest.mark.parametrize(
    ("devices", "expected"),
    [
        ([CPU_DEVICE], OffloadInfo(False)),
        ([("BLAS", "OpenBLAS", "accel", 0, 0), CPU_DEVICE], OffloadInfo(False)),
        ([("AMX", "AMX", "accel", 0, 0), CPU_DEVICE], OffloadInfo(False)),
        (
            [("CUDA0", "A", "gpu", 1, 2), ("CUDA1", "B", "gpu", 1, 2), CPU_DEVICE],
            OffloadInfo(True, ("cuda",)),
        ),
        (
            [("Vulkan0", "Intel(R) Iris(R) Xe Graphics", "igpu", 1, 2), CPU_DEVICE],
            OffloadInfo(True, ("vulkan",)),
        ),
        ([("CUDA0", "A", "gpu", 1, 2), ("Vulkan0", "A", "gpu", 1, 2)], OffloadInfo(True, ("cuda", "vulkan"))),
        ([], OffloadInfo(False)),
    ],
)
def test_offload_info(devices: list[tuple[str, str, str, int, int]], expected: OffloadInfo) -> None:
    assert offload_info(BackendDevice(*d) for d in devices) == expected


def test_backend_devices_of_the_installed_build() -> None:
    from appliance.engine.runtime import backend_devices

    devices = [BackendDevice(*d) for d in backend_devices()]
    assert any(d.type == "cpu" for d in devices)
    for device in devices:
        assert device.type in ("cpu", "gpu", "igpu", "accel")
        assert device.name and device.free_bytes >= 0
        assert device.type != "cpu" or device.total_bytes > 0


def test_an_unreadable_registry_is_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    from appliance.engine import runtime

    def broken() -> list[tuple[str, str, str, int, int]]:
        raise AttributeError("undefined symbol: ggml_backend_dev_count")

    monkeypatch.setattr(runtime, "backend_devices", broken)
    assert detect_backend_devices() is None


def test_detect_offload_falls_back_to_llama_supports_gpu_offload() -> None:
    from appliance.engine.runtime import supports_gpu_offload

    assert detect_offload(None) == OffloadInfo(supports_gpu_offload())


# -- one record per GPU -------------------------------------------------------------------------------

RTX_NVML = GpuInfo(0, "cuda", "NVIDIA GeForce RTX 4090", 25757220864, 25145049088, "8.9", "550.127.05")
RTX_LLAMA = GpuInfo(0, "cuda", "NVIDIA GeForce RTX 4090", 25756696576, 24261951488)
M2_ESTIMATE = GpuInfo(0, "metal", "Apple M2", 11453251584, 11453251584, unified_memory=True)
M2_LLAMA = GpuInfo(0, "metal", "Apple M2", 12 * GIB, 11 * GIB, unified_memory=True)
RADEON = GpuInfo(0, "vulkan", "AMD Radeon RX 7900 XTX (RADV NAVI31)", 24 * GIB, 23 * GIB)


@pytest.mark.parametrize(
    ("system", "llama", "expected"),
    [
        pytest.param([RTX_NVML], [RTX_LLAMA], [RTX_NVML], id="cuda-build-keeps-nvml"),
        pytest.param([RTX_NVML], [], [RTX_NVML], id="cpu-build-still-lists-the-gpu"),
        pytest.param([], [RTX_LLAMA], [RTX_LLAMA], id="no-nvml"),
        pytest.param(
            [RTX_NVML],
            [GpuInfo(0, "vulkan", "NVIDIA GeForce RTX 4090", 24 * GIB, 23 * GIB)],
            [GpuInfo(0, "vulkan", "NVIDIA GeForce RTX 4090", 25757220864, 25145049088, "8.9", "550.127.05")],
            id="vulkan-build-on-nvidia",
        ),
        pytest.param(
            [RTX_NVML],
            [GpuInfo(0, "cuda", "NVIDIA GeForce RTX 4090 D", 1, 1)],
            [RTX_NVML],
            id="paired-by-order-when-names-differ",
        ),
        pytest.param(
            [RTX_NVML, GpuInfo(1, "cuda", "NVIDIA GeForce RTX 4090", 25757220864, 1, "8.9", "550.127.05")],
            [RTX_LLAMA, GpuInfo(1, "cuda", "NVIDIA GeForce RTX 4090", 25756696576, 2)],
            [RTX_NVML, GpuInfo(1, "cuda", "NVIDIA GeForce RTX 4090", 25757220864, 1, "8.9", "550.127.05")],
            id="two-identical-gpus",
        ),
        pytest.param(
            [M2_ESTIMATE],
            [M2_LLAMA],
            [GpuInfo(0, "metal", "Apple M2", 12 * GIB, 11 * GIB, unified_memory=True)],
            id="metal-takes-metal's-figures",
        ),
        pytest.param([RTX_NVML], [RADEON], [RTX_NVML, RADEON], id="gpus-only-llama-sees-come-last"),
    ],
)
def test_merge_gpus(system: list[GpuInfo], llama: list[GpuInfo], expected: list[GpuInfo]) -> None:
    assert merge_gpus(system, llama) == tuple(expected)
