"""`appliance hw [--json]`: the detected hardware."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from appliance.cli.common import settings, show, shows
from appliance.hardware.rebuild import pinned_requirement, rebuild_advice

if TYPE_CHECKING:
    from appliance.hardware.profile import HardwareProfile


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser,
             budget_flags: argparse.ArgumentParser) -> None:  # fmt: skip
    """Add `hw`."""
    command = shows(
        commands,
        common,
        "hw",
        "show the detected hardware",
        "Show what was detected: CPU, memory (and a container's limit), GPUs, and what the installed "
        "llama.cpp build can offload to.",
    )
    command.set_defaults(run=run)


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"


def hw_summary(profile: HardwareProfile) -> list[str]:
    """`appliance hw`'s lines."""
    cpu, memory = profile.cpu, profile.memory
    features = " ".join(cpu.features) or "no SIMD extensions llama.cpp uses"
    lines = [
        f"CPU      {cpu.model} ({cpu.arch}, {cpu.cores_physical} cores, {cpu.cores_logical} threads; "
        f"{features})",
        f"Memory   {_gib(memory.total_bytes)} total, {_gib(memory.available_bytes)} available"
        + (f" (cgroup limit {_gib(memory.limit_bytes)})" if memory.limit_bytes is not None else ""),
    ]
    for gpu in profile.gpus:
        details = [gpu.backend]
        if gpu.compute_capability:
            details.append(f"compute {gpu.compute_capability}")
        if gpu.driver:
            details.append(f"driver {gpu.driver}")
        if gpu.unified_memory:
            details.append("unified memory")
        if gpu.device:
            details.append(f"llama.cpp {gpu.device}")
        lines.append(
            f"GPU {gpu.index}    {gpu.name}: {_gib(gpu.free_bytes)} free of {_gib(gpu.total_bytes)} "
            f"({', '.join(details)})"
        )
    if profile.offload.supported:
        backends = ", ".join(profile.offload.backends) or "a GPU backend"
        lines.append(f"Offload  {backends} (the installed llama.cpp build)")
    else:
        lines.append("Offload  none: the installed llama.cpp build runs on the CPU only")
    if profile.board:
        lines.append(f"Board    {profile.board}")
    lines.append(f"OS       {profile.os}")
    return lines


def run(args: argparse.Namespace) -> int:
    """Print the hardware; the exit status."""
    from appliance.hardware.detect import detect_hardware

    settings(args)  # a broken --config is reported here as for every command
    profile = detect_hardware()
    show(profile.to_json(), as_json=args.json, text=lambda: "\n".join(hw_summary(profile)))
    advice = rebuild_advice(profile, sys.executable, pinned_requirement())
    if advice:  # on stderr: --json's stdout stays the profile alone
        print("\n".join(advice), file=sys.stderr)
    return 0
