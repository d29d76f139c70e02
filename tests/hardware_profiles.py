"""Hardware profiles of real kinds of machines, built from recorded source outputs by the real parsers.

Each directory under tests/fixtures/hardware/ holds what one machine's sources said (see its README.md
and record.py); ``profile(name)`` runs ``appliance.hardware``'s own parsing and assembling code over it,
so a test of the planner sees exactly what detection would produce on that machine.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from appliance.hardware.board import detect_board
from appliance.hardware.cpu import cpu_from_cpuinfo, cpu_from_sysctl, performance_cores, read_cpu_ratings
from appliance.hardware.detect import assemble
from appliance.hardware.memory import cgroup_memory, memory_info
from appliance.hardware.metal import detect_metal
from appliance.hardware.nvidia import detect_nvidia
from appliance.hardware.offload import BackendDevice
from appliance.hardware.profile import HardwareProfile

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "hardware"

# The five machines the planner's table covers (reconstructed from published outputs of such machines).
MACHINES = ("rtx4090-box", "laptop-8gb", "m2-16gb", "rpi5-8gb", "container-2gb")
# Small boards (reconstructed likewise; README.md says from what): Raspberry Pi 4 and 5 with 4 and 8 GB,
# and an RK3588 board with 4 big and 4 LITTLE cores.
BOARDS = ("rpi4-4gb", "rpi4-8gb", "rpi5-4gb", "rpi5-8gb", "orangepi5plus-8gb")
# Recorded by tests/fixtures/hardware/record.py on machines we ran on.
RECORDED = ("h100-device", "epyc-vm-cgroup-v1")
# Machines with several GPUs, for the layer split (reconstructed, as MACHINES).
MULTI_GPU = ("dual-rtx3090", "rtx3060-rtx3090", "quad-a100-40gb")


class FakeNvml:
    """Stands in for the ``pynvml`` module, answering from a recorded nvml.json."""

    class NVMLError(Exception):
        pass

    def __init__(self, recorded: dict[str, Any]) -> None:
        self._recorded = recorded
        self.initialised = False

    def nvmlInit(self) -> None:
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False

    def nvmlSystemGetDriverVersion(self) -> str:
        return str(self._recorded["driver_version"])

    def nvmlDeviceGetCount(self) -> int:
        return len(self._recorded["devices"])

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict[str, Any]:
        device: dict[str, Any] = self._recorded["devices"][index]
        return device

    def nvmlDeviceGetName(self, handle: dict[str, Any]) -> str:
        return str(handle["name"])

    def nvmlDeviceGetMemoryInfo(self, handle: dict[str, Any]) -> SimpleNamespace:
        return SimpleNamespace(**handle["memory"])

    def nvmlDeviceGetCudaComputeCapability(self, handle: dict[str, Any]) -> tuple[int, int]:
        major, minor = handle["cuda_compute_capability"]
        return int(major), int(minor)


def _json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _sysctl(directory: Path) -> Any:
    values: dict[str, str] = _json(directory / "sysctl.json") or {}
    return values.get


@cache
def profile(name: str) -> HardwareProfile:
    """The HardwareProfile that detection builds on the machine recorded in fixtures/hardware/``name``."""
    directory = FIXTURES / name
    host = _json(directory / "host.json")
    if host is None:
        raise KeyError(f"no recorded machine {name!r} under {FIXTURES}")
    cores = host["cpu_count"]
    if host["system"] == "Darwin":
        cpu = cpu_from_sysctl(_sysctl(directory), host["machine"])
    else:
        cpuinfo = (directory / "cpuinfo.txt").read_text()
        performance = performance_cores(read_cpu_ratings(directory / "cpu"))
        cpu = cpu_from_cpuinfo(cpuinfo, host["machine"], cores["physical"], cores["logical"], performance)
    vm = host["virtual_memory"]
    cgroup = cgroup_memory(directory / "cgroup", directory / "proc_self_cgroup.txt")
    nvml = _json(directory / "nvml.json")
    return assemble(
        cpu,
        memory_info(vm["total"], vm["available"], cgroup),
        nvidia=detect_nvidia(FakeNvml(nvml)) if nvml is not None else (),
        metal=detect_metal(_sysctl(directory)),
        devices=tuple(BackendDevice(*d) for d in _json(directory / "ggml_devices.json") or ()),
        board=detect_board(directory / "device-tree-model"),
        os=f"{host['system']} {host['release']}",
    )
