"""What to reinstall when the llama.cpp build cannot use a GPU the machine has: llama-cpp-python rebuilt
from source with that GPU's backend (CMAKE_ARGS), for CUDA only the architectures present (a build
for every architecture takes hours on a small machine, one takes minutes)."""

from __future__ import annotations

import re
from importlib import metadata

from appliance.hardware.profile import GpuInfo, HardwareProfile

PACKAGE = "llama-cpp-python"


def pinned_requirement() -> str:
    """``llama-cpp-python==VERSION`` as llm-appliance pins it (its metadata), else as installed, else
    the bare name."""
    try:
        for requirement in metadata.requires("llm-appliance") or ():
            if re.match(rf"{PACKAGE}\s*==", requirement):
                return requirement.split(";")[0].replace(" ", "")
    except metadata.PackageNotFoundError:
        pass
    try:
        return f"{PACKAGE}=={metadata.version(PACKAGE)}"
    except metadata.PackageNotFoundError:
        return PACKAGE


def cuda_architecture(compute_capability: str) -> str:
    """CMake's CUDA architecture for NVML's compute capability: "9.0" -> "90", "12.0" -> "120"."""
    major, _, minor = compute_capability.partition(".")
    return f"{int(major)}{int(minor or 0)}"


def cmake_args(gpus: list[GpuInfo]) -> str | None:
    """The CMAKE_ARGS of a build that can use ``gpus`` (all of one backend), or None where we know none."""
    backend = gpus[0].backend
    if backend == "cuda":
        known = sorted(
            {cuda_architecture(g.compute_capability) for g in gpus if g.compute_capability}, key=int
        )
        # Without a compute capability CMake's "native" asks the GPU itself at build time.
        architectures = ";".join(known) or "native"
        return f"-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES={architectures}"
    if backend == "metal":
        return "-DGGML_METAL=on"
    return None


def rebuild_advice(profile: HardwareProfile, python: str, requirement: str) -> list[str]:
    """The warning and the exact reinstall command per backend whose GPUs the build cannot use; [] when
    it uses them all. ``python`` is the interpreter of the environment to reinstall into."""
    unused = [g for g in profile.gpus if g not in profile.usable_gpus]
    lines = []
    for backend in dict.fromkeys(g.backend for g in unused):
        gpus = [g for g in unused if g.backend == backend]
        names = ", ".join(dict.fromkeys(g.name for g in gpus))
        args = cmake_args(gpus)
        lines.append(f"Warning: the installed llama.cpp build cannot use the {backend} GPU ({names}).")
        if args is None:
            lines.append("  Rebuild llama-cpp-python with that backend: see docs/INSTALL.md.")
            continue
        needs = " (needs the CUDA toolkit: nvcc on PATH)" if backend == "cuda" else ""
        lines.append(f"  Rebuild it for this GPU{needs}:")
        lines.append(
            f'  CMAKE_ARGS="{args}" {python} -m pip install --force-reinstall --no-cache-dir --no-deps '
            f"{requirement}"
        )
    return lines
